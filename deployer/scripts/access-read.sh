#!/bin/sh
# access-read: what a bake watches on a host: the access log's new lines,
# the instances' restarts and their journal's errors.
#
# usage: access-read.sh FILE INODE OFFSET MAX SINCE UNIT...
#   FILE    the Nginx access log
#   INODE   FILE's inode when last read ("" on the first read; "-" when
#           FILE was missing then)
#   OFFSET  where the last read stopped (-1: at the end: read nothing)
#   MAX     the most bytes to print from the log
#   SINCE   the host's clock (epoch seconds) the journal is read from (0: not)
# output: sections (@@rollout@@ NAME):
#   pos       "INODE SIZE FROM NOW": FILE's inode and size, the offset its
#             bytes below start at, and the host's clock; INODE "-" when
#             FILE is missing after a first read (rotated, not yet
#             reopened by Nginx)
#   restarts  systemctl show -p Id,NRestarts of each unit
#   errors    the units' journal lines at priority err since SINCE (the last 20)
#   rotated   when FILE is no longer INODE (logrotate moved it), the rest
#             of the old file from OFFSET, if it is FILE.1
#   log       FILE's bytes from FROM, at most MAX
# exit:  0; EX_LOG_UNREADABLE when FILE cannot be read
set -eu
readonly EX_LOG_UNREADABLE=76
file=$1 ino=$2 off=$3 max=$4 since=$5
shift 5
now_ino=- size=0 rotated=
# One stat: logrotate may move FILE at any moment.
if info=$(stat -c '%i %s' -- "$file" 2>/dev/null) && [ -r "$file" ]; then
  now_ino=${info% *} size=${info#* }
elif [ -z "$ino" ] || [ "$off" -lt 0 ]; then
  echo "cannot read the access log $file (missing, or not readable by this user)" >&2
  exit "$EX_LOG_UNREADABLE"
fi
if [ "$off" -lt 0 ]; then
  off=$size
elif [ "$ino" = - ]; then
  off=0 # missing at the last read: the new file from its start
elif [ -n "$ino" ] && [ "$ino" != "$now_ino" ]; then
  rotated=$off
  off=0
elif [ "$size" -lt "$off" ]; then
  off=0 # truncated in place (copytruncate)
fi
echo "@@rollout@@ pos"
echo "$now_ino $size $off $(date +%s)"
echo "@@rollout@@ restarts"
if [ $# -gt 0 ]; then
  systemctl show -p Id,NRestarts -- "$@"
fi
echo "@@rollout@@ errors"
if [ "$since" != 0 ] && [ $# -gt 0 ]; then
  for unit; do
    shift
    set -- "$@" -u "$unit"
  done
  journalctl -q --no-pager -o short-iso -p err --since "@$since" "$@" 2>/dev/null | tail -n 20 || true
fi
if [ -n "$rotated" ] && [ -r "$file.1" ] && [ "$(stat -c %i -- "$file.1")" = "$ino" ]; then
  echo "@@rollout@@ rotated"
  tail -c "+$((rotated + 1))" -- "$file.1" | head -c "$max"
  echo
fi
echo "@@rollout@@ log"
# Only from the file stat saw: one moved away since is read next time,
# as the rotated one.
if [ "$now_ino" != - ]; then
  { [ "$(stat -L -c %i /dev/stdin)" = "$now_ino" ] && tail -c "+$((off + 1))" | head -c "$max"; } <"$file" 2>/dev/null || true
fi
