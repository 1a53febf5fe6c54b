#!/bin/sh
# release-switch: point an instance's link ROOT/instances/PORT at
# releases/ID, atomically (a new link renamed over the old one). The unit
# runs from that link, so the instance runs ID from its next start.
#
# usage: release-switch.sh ROOT PORT ID
# exit:  0 switched; EX_NO_RELEASE when releases/ID is not on the host
set -eu
readonly EX_NO_RELEASE=75
root=$1 port=$2 id=$3
if [ ! -d "$root/releases/$id" ]; then
  echo "release $id is not in $root/releases" >&2
  exit "$EX_NO_RELEASE"
fi
mkdir -p -- "$root/instances"
ln -sfn -- "../releases/$id" "$root/instances/.$port.tmp"
mv -T -- "$root/instances/.$port.tmp" "$root/instances/$port"
