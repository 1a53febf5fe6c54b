#!/bin/sh
# lock-acquire: take the app's deploy lock, or say who holds it. The lock is
# a directory (mkdir is atomic) holding the holder's info (stdin); its
# modification time is the holder's last refresh. With BREAK_STALE "true", a
# lock not refreshed for more than STALE_SECONDS is moved aside and taken.
#
# usage: lock-acquire.sh DIR STALE_SECONDS BREAK_STALE
# prints: "acquired", or "held AGE_SECONDS" then the holder's info
set -eu
d=$1
stale=$2
break_stale=$3
mkdir -p -- "$d"
take() {
  mkdir -- "$d/lock" 2>/dev/null || return 1
  cat >"$d/lock/info"
  echo acquired
  exit 0
}
take || true
age=$(($(date +%s) - $(stat -c %Y -- "$d/lock" 2>/dev/null || date +%s)))
if [ "$break_stale" = true ] && [ "$age" -gt "$stale" ]; then
  mv -- "$d/lock" "$d/lock.broken.$$" 2>/dev/null && rm -rf -- "$d/lock.broken.$$"
  take || true
fi
echo "held $age"
cat -- "$d/lock/info" 2>/dev/null || true
