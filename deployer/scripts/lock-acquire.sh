#!/bin/sh
# lock-acquire: take the app's deploy lock, or say who holds it. The lock is
# a directory (mkdir is atomic) holding the holder's info (stdin); its
# modification time is the holder's last refresh. With BREAK_STALE "true", a
# lock not refreshed for more than STALE_SECONDS is moved aside and taken;
# so is a lock whose info holds TAKE_OVER (the token of a holder known to be
# dead), whatever its age.
#
# usage: lock-acquire.sh DIR STALE_SECONDS BREAK_STALE [TAKE_OVER]
# prints: "acquired"; or "took-over AGE_SECONDS", the previous holder's
#         info, then "acquired"; or "held AGE_SECONDS" then the holder's info
set -eu
d=$1
stale=$2
break_stale=$3
take_over=${4:-}
mkdir -p -- "$d"
take() {
  mkdir -- "$d/lock" 2>/dev/null || return 1
  cat >"$d/lock/info"
  echo acquired
  exit 0
}
take || true
age=$(($(date +%s) - $(stat -c %Y -- "$d/lock" 2>/dev/null || date +%s)))
dead=false
if [ -n "$take_over" ] && grep -qF -- "$take_over" "$d/lock/info" 2>/dev/null; then
  dead=true
fi
if { [ "$break_stale" = true ] && [ "$age" -gt "$stale" ]; } || [ "$dead" = true ]; then
  prev=$(cat -- "$d/lock/info" 2>/dev/null || true)
  if mv -- "$d/lock" "$d/lock.broken.$$" 2>/dev/null; then
    rm -rf -- "$d/lock.broken.$$"
    echo "took-over $age"
    printf '%s\n' "$prev"
    take || true
  fi
fi
echo "held $age"
cat -- "$d/lock/info" 2>/dev/null || true
