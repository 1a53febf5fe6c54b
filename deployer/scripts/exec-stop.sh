#!/bin/sh
# exec-stop: stop what rollout exec started as UNIT, when the caller went
# away (Ctrl-C, SIGTERM): systemd sends it SIGTERM, then SIGKILL after the
# unit's 10s. The unit may not be there yet (its systemd-run still on its
# way through sudo): for up to 3 s, it is waited for, and stopped whenever
# it runs. One that never appears, or that already ended, is not an error;
# one still running after that is.
#
# usage: exec-stop.sh UNIT
set -eu
unit=$1
prop() { systemctl show -p "$1" --value -- "$unit" 2>/dev/null || true; }
i=0 stopped=
while [ "$i" -lt 30 ]; do
  case $(prop ActiveState) in
  active | activating | reloading | deactivating)
    systemctl stop -- "$unit" 2>/dev/null || true
    stopped=1
    ;;
  *)
    # Stopped here, or loaded and not running (it ran and ended): done.
    [ -z "$stopped" ] || exit 0
    [ "$(prop LoadState)" != loaded ] || exit 0
    ;;
  esac
  sleep 0.1
  i=$((i + 1))
done
case $(prop ActiveState) in
active | activating | reloading | deactivating)
  echo "exec-stop: $unit still runs" >&2
  exit 1
  ;;
esac
