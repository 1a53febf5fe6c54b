#!/bin/sh
# inspect: print every instance's state as systemd sees it, the host's
# monotonic clock and the upstream file, each after a section line
# "@@rollout@@ NAME". It changes nothing and needs no root.
#
# usage: inspect.sh PROPERTIES UPSTREAM_FILE UNIT...
set -eu
props=$1
upstream_file=$2
shift 2
echo "@@rollout@@ units"
systemctl show -p "$props" -- "$@"
echo "@@rollout@@ uptime"
cat /proc/uptime
echo "@@rollout@@ upstream"
cat -- "$upstream_file"
