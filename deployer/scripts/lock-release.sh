#!/bin/sh
# lock-release: remove the deploy lock if it is held with TOKEN, or whoever
# holds it when TOKEN is empty (rollout lock release).
#
# usage: lock-release.sh DIR TOKEN
set -eu
d=$1
[ -d "$d/lock" ] || exit 0
if [ -n "$2" ]; then
  grep -qF -- "$2" "$d/lock/info" 2>/dev/null || exit 0
fi
mv -- "$d/lock" "$d/lock.released.$$" && rm -rf -- "$d/lock.released.$$"
