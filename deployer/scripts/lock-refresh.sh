#!/bin/sh
# lock-refresh: touch the deploy lock if it is still held with TOKEN.
#
# usage: lock-refresh.sh DIR TOKEN
# exit:  0 refreshed; EX_LOCK_LOST someone else holds it now, or nobody
set -eu
readonly EX_LOCK_LOST=68
d=$1
grep -qF -- "$2" "$d/lock/info" 2>/dev/null || {
  echo "the deploy lock is no longer ours" >&2
  exit "$EX_LOCK_LOST"
}
touch -- "$d/lock"
