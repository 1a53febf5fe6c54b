#!/bin/sh
# restart: restart one instance, noting first where its output starts (the
# host's clock in microseconds and the sizes of its log files) and its
# state, clearing a failed state and systemd's start-rate counter; then
# print its state again. Each part follows a section line "@@rollout@@ NAME".
#
# usage: restart.sh UNIT PROPERTIES [LOG_FILE...]
set -eu
unit=$1
props=$2
shift 2
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
