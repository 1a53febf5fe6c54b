#!/bin/sh
# write-upstream: replace the upstream file, test the Nginx config, reload
# Nginx, and optionally wait for drained instances' requests to finish.
#
# stdin: the SHA-256 (hex) of the content rollout expects the file to have
#        now, on one line, then the new content. If someone else changed the
#        file since rollout read it, nothing is written (EX_CHANGED).
#
# The previous file is kept in .rollout/ beside it (a directory that
# "include dir/*" does not match) and is put back if the config test fails
# (EX_NGINX_TEST). Nginx reloads by SIGHUP to its master (what
# `nginx -s reload` does, without parsing the config a second time) unless
# RELOAD_COMMAND is given.
#
# With PORTs to drain, it then waits until the workers of the old config
# stop taking new requests (EX_OLD_WORKERS after 4s), and until no
# connection to those ports is established (their requests in flight), at
# most DRAIN_TIMEOUT_MS; it prints "drained MS", or "busy MS N" when N
# connections are still open at the timeout.
#
# On a load balancer host of its own, DRAIN_TIMEOUT_MS is "-": it waits for
# the old workers only (the instances are elsewhere). On the app host
# behind it, UPSTREAM_FILE is "": nothing is read, written or reloaded, and
# it only waits for the PORTs' connections (from any balancer).
#
# With RELOAD_COMMAND "true" and no PID_FILE it only replaces the file
# (Traefik watches it; rollout then reads Traefik's API).
#
# usage: write-upstream.sh UPSTREAM_FILE TEST_COMMAND RELOAD_COMMAND PID_FILE DRAIN_TIMEOUT_MS [PORT...]
# exit:  0 written and reloaded; EX_* below
# needs: ss (iproute2); a sleep that takes fractions of a second (GNU
#        coreutils, BusyBox)
set -eu
# ms: milliseconds since boot, from /proc/uptime (hundredths of a second;
# POSIX date has no sub-second field).
ms() {
  read -r up _ </proc/uptime
  cs=${up%.*}${up#*.}
  cs=${cs#"${cs%%[!0]*}"}
  echo $((${cs:-0} * 10))
}
readonly EX_NGINX_TEST=65
readonly EX_OLD_WORKERS=66
readonly EX_CHANGED=67

f=$1
test_command=$2
reload_command=$3
pid_file=$4
drain_timeout_ms=$5
shift 5
# Few processes: under load every fork costs milliseconds.
d=${f%/*}/.rollout
b=${f##*/}

wait_conns() {
  filter=
  for port in "$@"; do
    filter="${filter:+$filter or }sport = :$port"
  done
  conns() { ss -Htn state established "( $filter )"; }
  [ -z "$(conns)" ] && { echo drained 0; exit 0; }
  t=$(ms)
  while :; do
    n=$(conns | wc -l)
    now=$(ms)
    [ "$n" -eq 0 ] && { echo "drained $((now - t))"; exit 0; }
    [ "$((now - t))" -ge "$drain_timeout_ms" ] && { echo "busy $((now - t)) $n"; exit 0; }
    sleep 0.01
  done
}
[ -n "$f" ] || wait_conns "$@"

IFS= read -r want
have=$(sha256sum <"$f")
if [ "${have%% *}" != "$want" ]; then
  echo "$f was changed by someone else since rollout read it" >&2
  exit "$EX_CHANGED"
fi
[ -d "$d" ] || mkdir -p -- "$d"
cp -p -- "$f" "$d/$b.new"
cat >"$d/$b.new"
ln -f -- "$f" "$d/$b.prev"
mv -f -- "$d/$b.new" "$f"
if ! out=$(eval "$test_command" 2>&1); then
  mv -f -- "$d/$b.prev" "$f"
  printf 'nginx config test failed; restored the previous %s\n%s\n' "$f" "$out" >&2
  exit "$EX_NGINX_TEST"
fi
# No PID_FILE (Traefik's file provider: nothing to signal, RELOAD_COMMAND
# "true"): no master, and no PORT may be given.
master=
[ -z "$pid_file" ] || read -r master <"$pid_file"

reload() {
  if [ -n "$reload_command" ]; then
    eval "$reload_command"
  else
    kill -HUP "$master"
  fi
}

if [ "$#" -eq 0 ]; then
  reload
  exit 0
fi

old=
if [ -r "/proc/$master/task/$master/children" ]; then
  read -r old <"/proc/$master/task/$master/children" || true
else
  old=$(ps -o pid= --ppid "$master" || true)
fi
reload
i=0
while :; do
  files=
  for p in $old; do files="$files /proc/$p/cmdline"; done
  # Done when every old worker is shutting down or gone (grep -L lists
  # the others). SC2086: one word per file.
  # shellcheck disable=SC2086,SC2143
  [ -z "$files" ] || [ -z "$(grep -L 'shutting down' $files 2>/dev/null)" ] && break
  i=$((i + 1))
  if [ "$i" -ge 400 ]; then
    echo "nginx workers still on the old config after 4s" >&2
    exit "$EX_OLD_WORKERS"
  fi
  sleep 0.01
done

[ "$drain_timeout_ms" != - ] || { echo drained 0; exit 0; }
wait_conns "$@"
