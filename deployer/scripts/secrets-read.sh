#!/bin/sh
# secrets-read: print the release current names on its first line, then
# that release's secrets.age (encrypted: only the holder of an identity
# can read it), if it has one.
#
# usage: secrets-read.sh ROOT
set -eu
root=$1
cur=$(readlink -- "$root/current" 2>/dev/null || true)
cur=${cur#releases/}
printf '%s\n' "$cur"
if [ -n "$cur" ] && [ -f "$root/releases/$cur/.rollout/secrets.age" ]; then
  cat -- "$root/releases/$cur/.rollout/secrets.age"
fi
