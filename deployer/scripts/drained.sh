#!/bin/sh
# drained: read or replace the app's instances drained by hand (rollout
# drain), a JSON list in FILE; a missing file is an empty list. A write
# replaces the file at once (rename), so a reader never sees half of it.
#
# usage: drained.sh FILE read
#        drained.sh FILE write    (the new list on stdin)
set -eu
file=$1
case $2 in
read)
  [ ! -e "$file" ] || cat -- "$file"
  ;;
write)
  mkdir -p -- "$(dirname -- "$file")"
  cat >"$file.tmp"
  # rollout sends one JSON list (or null) and a newline: a write cut
  # short (a lost connection) is refused, and the list stays as it was.
  case "$(head -n 1 -- "$file.tmp" | cut -c 1)$(tail -c 2 -- "$file.tmp")" in
  '[]' | nl) ;;
  *)
    rm -f -- "$file.tmp"
    echo "drained: the new list is not a whole JSON list; $file is unchanged" >&2
    exit 1
    ;;
  esac
  mv -f -- "$file.tmp" "$file"
  ;;
*)
  echo "drained: unknown operation '$2'" >&2
  exit 1
  ;;
esac
