#!/bin/sh
# release-state: read the release layout under ROOT, changing nothing: the
# release directories, the release log, where current points, and for each
# instance the release its link names, the directory its process runs in
# (readlink /proc/MAINPID/cwd) and the unit's WorkingDirectory. Each part
# follows a section line "@@rollout@@ NAME"; an instance is one line
# "PORT LINK CWD WORKDIR", "-" for what is not there.
#
# usage: release-state.sh ROOT [PORT UNIT]...
set -eu
root=$1
shift
echo "@@rollout@@ releases"
if [ -d "$root/releases" ]; then
  for d in "$root"/releases/*; do
    [ -d "$d" ] && [ ! -L "$d" ] && basename -- "$d"
  done
fi
echo "@@rollout@@ log"
[ ! -f "$root/.rollout/releases.jsonl" ] || tail -n 1000 -- "$root/.rollout/releases.jsonl"
echo "@@rollout@@ current"
readlink -- "$root/current" || true
echo "@@rollout@@ instances"
while [ "$#" -ge 2 ]; do
  port=$1 unit=$2
  shift 2
  link=$(readlink -- "$root/instances/$port" || true)
  pid=$(systemctl show -p MainPID --value -- "$unit" 2>/dev/null || echo 0)
  cwd=
  [ "${pid:-0}" -gt 0 ] 2>/dev/null && cwd=$(readlink -- "/proc/$pid/cwd" || true)
  wd=$(systemctl show -p WorkingDirectory --value -- "$unit" 2>/dev/null || true)
  echo "$port ${link:--} ${cwd:--} ${wd:--}"
done
