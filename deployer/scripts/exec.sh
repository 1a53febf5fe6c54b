#!/bin/sh
# exec: run a user's command once (rollout exec) as the app's user, in DIR
# (a release's directory, else the app's), with the app's env as its
# instances get it (setup.env_file, then the release's .rollout/env),
# through a transient systemd service named UNIT, so that exec-stop can
# stop it when the caller goes away. MODE "pipe" gives the service this
# script's stdin, stdout and stderr; "tty" a terminal of its own
# (systemd-run --pty, which passes on the window's size); "check" runs
# nothing: it says whether the command could be run.
#
# usage: exec.sh DIR RELEASE USER GROUP ENV_FILE UNIT MODE COMMAND [ARG]...
# exit:  with pipe or tty, the command's own status (127: not found, as a
#        shell says it); with check, 0 or EX_NO_RELEASE when DIR is not
#        there.
set -eu
readonly EX_NO_RELEASE=75
dir=$1 id=$2 user=$3 group=$4 envfile=$5 unit=$6 mode=$7
shift 7
if [ ! -d "$dir" ]; then
  echo "rollout: $dir is not on this host" >&2
  exit "$EX_NO_RELEASE"
fi
relenv=/dev/null
[ -z "$id" ] || relenv=$dir/.rollout/env
case $mode in
check) exit 0 ;;
tty) io=--pty ;;
*) io=--pipe ;;
esac
# systemd replaces $NAME and ${NAME} in a service's command line; "$$" is
# its "$": each argument reaches the command as it was given.
for a do
  shift
  e=$(printf '%sx' "$a" | sed 's/\$/$$/g')
  set -- "$@" "${e%x}"
done
exec systemd-run --quiet --wait "$io" --collect --service-type=exec --unit="$unit" \
  -p User="$user" -p Group="$group" -p WorkingDirectory="$dir" \
  -p EnvironmentFile=-"$envfile" -p EnvironmentFile=-"$relenv" \
  -p TimeoutStopSec=10s -E ROLLOUT_RELEASE="$id" \
  -- /bin/sh -c 'exec "$@"' sh "$@"
