#!/bin/sh
# release-secrets: store a release's secrets beside it, root's only. stdin
# is an uncompressed tar of two regular files: env (systemd's
# EnvironmentFile= format) and secrets.age (the same values, encrypted
# with age, for `rollout secrets diff`). They go to ROOT/releases/ID/.rollout
# (a root-owned 0700 directory) as root-owned 0600 files, each replaced
# atomically. UNIT, one of the app's instances, must read
# ROOT/instances/PORT/.rollout/env (EX_NO_ENVFILE: its unit file predates
# the secrets: section; nothing is written). Then it prints the current
# release's secrets.age when current is another release that has one.
#
# usage: release-secrets.sh ROOT ID UNIT
# exit:  0 stored; EX_NO_RELEASE, EX_NO_ENVFILE
set -eu
readonly EX_NO_RELEASE=75
readonly EX_NO_ENVFILE=82
root=$1 id=$2 unit=$3
dir=$root/releases/$id
if [ ! -d "$dir" ] || [ -L "$dir" ]; then
  echo "release $id is not in $root/releases" >&2
  exit "$EX_NO_RELEASE"
fi
files=$(systemctl show -p EnvironmentFiles --value -- "$unit")
case $files in
*"$root/instances/"*"/.rollout/env"*) ;;
*)
  echo "$unit does not read the release's secrets ($root/instances/PORT/.rollout/env): its unit file predates the secrets: section; run rollout setup to write it" >&2
  exit "$EX_NO_ENVFILE"
  ;;
esac
umask 077
if [ -L "$dir/.rollout" ] || { [ -e "$dir/.rollout" ] && [ ! -d "$dir/.rollout" ]; }; then
  rm -f -- "$dir/.rollout"
fi
mkdir -p -- "$dir/.rollout"
chown root:root -- "$dir/.rollout"
chmod u=rwx,go=,g-s -- "$dir/.rollout"
tmp=$(mktemp -d "$dir/.rollout/.in.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
tar -xf - -C "$tmp" --no-same-owner --no-same-permissions env secrets.age
for f in env secrets.age; do
  if [ ! -f "$tmp/$f" ] || [ -L "$tmp/$f" ]; then
    echo "the secrets arrived without a regular file $f" >&2
    exit 1
  fi
done
for f in env secrets.age; do
  chown root:root -- "$tmp/$f"
  chmod 0600 -- "$tmp/$f"
  mv -f -- "$tmp/$f" "$dir/.rollout/$f"
done
cur=$(readlink -- "$root/current" 2>/dev/null || true)
cur=${cur#releases/}
if [ -n "$cur" ] && [ "$cur" != "$id" ] && [ -f "$root/releases/$cur/.rollout/secrets.age" ]; then
  cat -- "$root/releases/$cur/.rollout/secrets.age"
fi
