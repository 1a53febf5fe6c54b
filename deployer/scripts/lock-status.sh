#!/bin/sh
# lock-status: say whether the deploy lock is held, and by whom.
#
# usage: lock-status.sh DIR
# prints: "free", or "held AGE_SECONDS" then the holder's info
set -eu
d=$1
[ -d "$d/lock" ] || { echo free; exit 0; }
echo "held $(($(date +%s) - $(stat -c %Y -- "$d/lock" 2>/dev/null || date +%s)))"
cat -- "$d/lock/info" 2>/dev/null || true
