#!/bin/sh
# inspect: print every instance's state as systemd sees it, the host's
# monotonic clock and the upstream file, each after a section line
# "@@rollout@@ NAME". It changes nothing and needs no root. An empty
# UPSTREAM_FILE (Nginx on balancer hosts of its own) leaves that section
# empty.
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
[ -z "$upstream_file" ] || cat -- "$upstream_file"
