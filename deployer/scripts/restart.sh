#!/bin/sh
# restart: restart one instance, noting first where its output starts (the
# host's clock in microseconds and the sizes of its log files) and its
# state, clearing a failed state and systemd's start-rate counter; then
# print its state again. Each part follows a section line "@@rollout@@ NAME".
# With a RELEASE (release: set), the instance's link ROOT/instances/PORT is
# first pointed at releases/RELEASE (a new link renamed over the old one),
# so that it restarts on that release: EX_NO_RELEASE when it is not there.
#
# usage: restart.sh UNIT PROPERTIES ROOT PORT RELEASE [LOG_FILE...]
#        (ROOT, PORT and RELEASE empty: no switch)
set -eu
readonly EX_NO_RELEASE=75
unit=$1
props=$2
root=$3
port=$4
release=$5
shift 5
if [ -n "$release" ]; then
  if [ ! -d "$root/releases/$release" ]; then
    echo "release $release is not in $root/releases" >&2
    exit "$EX_NO_RELEASE"
  fi
  ln -sfn -- "../releases/$release" "$root/instances/.$port.tmp"
  mv -T -- "$root/instances/.$port.tmp" "$root/instances/$port"
fi
echo "@@rollout@@ clock"
date +%s%6N
echo "@@rollout@@ sizes"
[ "$#" -eq 0 ] || stat -c '%s %n' -- "$@" 2>/dev/null || true
echo "@@rollout@@ before"
systemctl show -p "$props" -- "$unit"
systemctl reset-failed -- "$unit" 2>/dev/null || true
systemctl restart -- "$unit"
echo "@@rollout@@ after"
systemctl show -p "$props" -- "$unit"
