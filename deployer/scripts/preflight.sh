#!/bin/sh
# preflight: check that the host can be deployed to, changing nothing:
# every instance's unit is installed, the Nginx config passes its test
# before any change, and the upstream file is readable.
#
# usage: preflight.sh TEST_COMMAND UPSTREAM_FILE UNIT...
# exit:  0 ready; 1 not ready (the reason on stderr)
set -eu
test_command=$1
upstream_file=$2
shift 2
for u in "$@"; do
  [ "$(systemctl show -p LoadState --value -- "$u")" = loaded ] || {
    echo "unit $u is not installed (systemctl cat $u)" >&2
    exit 1
  }
done
if ! out=$(eval "$test_command" 2>&1); then
  printf 'nginx config test fails before any change:\n%s\n' "$out" >&2
  exit 1
fi
test -r "$upstream_file" || {
  echo "cannot read the upstream file $upstream_file" >&2
  exit 1
}
