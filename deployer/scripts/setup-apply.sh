#!/bin/sh
# setup-apply: make the changes `rollout setup` decided on, in order. The
# arguments are a list of actions, each a verb and its values; the
# content of the files written comes on stdin, one after the other, each
# exactly SIZE bytes.
#
#   user NAME                         create a system user without a login
#   join USER GROUP                   add USER to GROUP
#   dir PATH OWNER GROUP MODE         create, or set owner and mode exactly
#   migrate APP_DIR ROOT GROUP ID LOG_LINE N PORT...
#                                     copy APP_DIR's code into release ID
#                                     under ROOT; every PORT's link and
#                                     current name it; LOG_LINE logged
#   links ROOT N NAME...              point each NAME's link under
#                                     ROOT/instances that is not there
#                                     yet where ROOT/current points
#   file PATH OWNER GROUP MODE SIZE KIND
#                                     write SIZE bytes of stdin to PATH
#                                     (KIND 1: an Nginx file, put back if
#                                     nginx -t fails; sudoers: checked with
#                                     visudo -cf, never installed if it
#                                     fails; 0: neither)
#   unwatch TIMER N PATH... N DIR...  stop the timer, remove the watch's
#                                     files and their empty directories
#   daemon-reload
#   nginx TEST_COMMAND PID_FILE RELOAD_COMMAND
#                                     test the Nginx config (the files
#                                     written before it are put back when
#                                     it fails) and reload Nginx
#   enable N UNIT...                  enable units
#   start N UNIT...                   start units
#   enable-now UNIT                   enable and start a unit
#   disable-now N UNIT...             stop and disable units
#
# usage: setup-apply.sh ACTION...
# exit:  0 done; EX_NGINX_TEST: nginx -t failed, the previous files are
#        back; EX_SUDOERS: visudo refused a sudoers file, which is not
#        installed; 2 an unknown action (a bug of rollout's)
set -eu
readonly EX_NGINX_TEST=65
readonly EX_SUDOERS=80
restore=""  # a script putting the Nginx files back
prevs=""    # the copies to remove once nginx -t passed

q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

while [ $# -gt 0 ]; do
  verb=$1
  shift
  case $verb in
  user)
    useradd --system --no-create-home --shell /usr/sbin/nologin --user-group -- "$1"
    shift
    ;;
  join)
    usermod -aG "$2" -- "$1"
    shift 2
    ;;
  dir)
    install -d -o "$2" -g "$3" -m "$4" -- "$1"
    chown "$2:$3" -- "$1"
    # chmod keeps a directory's setgid bit (inherited from a setgid
    # parent) under a numeric mode of 4 digits or fewer: 5 set it exactly.
    mode=$4
    while [ ${#mode} -lt 5 ]; do mode=0$mode; done
    chmod "$mode" -- "$1"
    shift 4
    ;;
  migrate)
    app_dir=$1 root=$2 group=$3 id=$4 line=$5 n=$6
    shift 6
    rel=$root/releases/$id
    rm -rf -- "$rel.partial"
    mkdir -p -- "$rel.partial"
    cp -a -- "$app_dir/." "$rel.partial/"
    chown -R -- "root:$group" "$rel.partial"
    mv -T -- "$rel.partial" "$rel"
    while [ "$n" -gt 0 ]; do
      ln -sfn -- "../releases/$id" "$root/instances/.$1.tmp"
      mv -T -- "$root/instances/.$1.tmp" "$root/instances/$1"
      n=$((n - 1))
      shift
    done
    ln -sfn -- "releases/$id" "$root/.current.tmp"
    mv -T -- "$root/.current.tmp" "$root/current"
    printf '%s\n' "$line" >>"$root/.rollout/releases.jsonl"
    ;;
  links)
    root=$1 n=$2
    shift 2
    cur=$(readlink -- "$root/current")
    while [ "$n" -gt 0 ]; do
      if [ ! -L "$root/instances/$1" ]; then
        ln -sfn -- "../$cur" "$root/instances/.$1.tmp"
        mv -T -- "$root/instances/.$1.tmp" "$root/instances/$1"
      fi
      n=$((n - 1))
      shift
    done
    ;;
  file)
    path=$1 owner=$2 group=$3 mode=$4 size=$5 nginx=$6
    shift 6
    t=$(mktemp -- "$path.rollout.XXXXXX")
    head -c "$size" >"$t"
    chown "$owner:$group" -- "$t"
    chmod "$mode" -- "$t"
    if [ "$nginx" = sudoers ] && ! out=$(visudo -cf "$t" 2>&1); then
      rm -f -- "$t"
      printf 'visudo refuses the new %s; the old one stays (or none):\n%s\n' "$path" "$out" >&2
      exit "$EX_SUDOERS"
    fi
    if [ "$nginx" = 1 ]; then
      if [ -e "$path" ]; then
        cp -p -- "$path" "$path.rollout-prev"
        restore="$restore mv -f -- $(q "$path.rollout-prev") $(q "$path");"
        prevs="$prevs $(q "$path.rollout-prev")"
      else
        restore="$restore rm -f -- $(q "$path");"
      fi
    fi
    mv -f -- "$t" "$path"
    ;;
  unwatch)
    systemctl disable --now -- "$1" 2>/dev/null || true
    shift
    n=$1
    shift
    while [ "$n" -gt 0 ]; do
      rm -f -- "$1"
      n=$((n - 1))
      shift
    done
    n=$1
    shift
    while [ "$n" -gt 0 ]; do
      rmdir -- "$1" 2>/dev/null || true
      n=$((n - 1))
      shift
    done
    ;;
  daemon-reload)
    systemctl daemon-reload
    ;;
  nginx)
    test_command=$1 pid_file=$2 reload_command=$3
    shift 3
    if ! out=$(eval "$test_command" 2>&1); then
      eval "$restore"
      printf 'nginx config test failed; restored the previous files\n%s\n' "$out" >&2
      exit "$EX_NGINX_TEST"
    fi
    [ -z "$prevs" ] || eval "rm -f -- $prevs"
    restore="" prevs=""
    if [ -s "$pid_file" ]; then
      if [ -n "$reload_command" ]; then
        eval "$reload_command"
      else
        kill -HUP "$(cat -- "$pid_file")"
      fi
    fi
    ;;
  enable | start | disable-now)
    n=$1
    shift
    units=""
    while [ "$n" -gt 0 ]; do
      units="$units $(q "$1")"
      n=$((n - 1))
      shift
    done
    case $verb in
    disable-now) eval "systemctl disable --now -- $units" ;;
    *) eval "systemctl $verb -- $units" ;;
    esac
    ;;
  enable-now)
    systemctl enable --now -- "$1"
    shift
    ;;
  *)
    echo "setup-apply: unknown action $verb" >&2
    exit 2
    ;;
  esac
done
