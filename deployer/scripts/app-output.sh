#!/bin/sh
# app-output: print what an instance said since its restart: the last LINES
# lines its log files got past the given byte offsets (from the start of a
# file truncated below its offset by a rotation), then systemd's
# journal lines for its unit since SINCE (seconds since the epoch, with
# microseconds; empty: the last LINES lines).
#
# usage: app-output.sh UNIT LINES SINCE [OFFSET FILE]...
# With READ_AS set (by the helper) the files are read as that user.
set -eu
readf() {
  if [ -n "${READ_AS:-}" ]; then
    runuser -u "$READ_AS" -- "$@"
  else
    "$@"
  fi
}
unit=$1
lines=$2
since=$3
shift 3
while [ "$#" -ge 2 ]; do
  echo "==> $2 <=="
  off=$1
  # A file shorter than its offset was rotated (copytruncate) since: all
  # of it is newer than the restart.
  size=$(stat -c %s -- "$2" 2>/dev/null || echo 0)
  [ "$size" -ge "$off" ] || off=0
  readf tail -c "+$((off + 1))" -- "$2" 2>/dev/null | tail -n "$lines"
  shift 2
done
echo "==> journal <=="
if [ -n "$since" ]; then
  journalctl --no-pager -o short-precise -n "$lines" -u "$unit" --since "@$since"
else
  journalctl --no-pager -o short-precise -n "$lines" -u "$unit"
fi
