#!/bin/sh
# release-record: append LOG_LINES (if not empty) to the release log, point
# ROOT/current at releases/CURRENT (if not empty; atomically), and remove
# the releases REMOVE, except any that current or an instance link still
# names.
#
# usage: release-record.sh ROOT LOG_LINES CURRENT [REMOVE...]
set -eu
root=$1 line=$2 cur=$3
shift 3
if [ -n "$line" ]; then
  mkdir -p -- "$root/.rollout"
  printf '%s\n' "$line" >>"$root/.rollout/releases.jsonl"
fi
if [ -n "$cur" ]; then
  ln -sfn -- "releases/$cur" "$root/.current.tmp"
  mv -T -- "$root/.current.tmp" "$root/current"
fi
for id in "$@"; do
  used=
  for l in "$root/current" "$root"/instances/*; do
    [ -L "$l" ] || continue
    [ "$(basename -- "$(readlink -- "$l")")" = "$id" ] && used=1
  done
  [ -n "$used" ] || rm -rf -- "${root:?}/releases/$id"
done
