#!/bin/sh
# preflight: check that the host can be deployed to, changing nothing:
# every instance's unit is installed, the Nginx config passes its test
# before any change, and the upstream file is readable; then print the
# upstream file (for rollout to check the upstream block in it). With
# TEST_COMMAND and UPSTREAM_FILE empty (Nginx runs on balancer hosts of
# its own), only the units are checked.
#
# usage: preflight.sh TEST_COMMAND UPSTREAM_FILE UNIT...
# exit:  0 ready; EX_* below, each with the reason on stderr
set -eu
readonly EX_UNIT_MISSING=69
readonly EX_NGINX_BROKEN=70
readonly EX_UPSTREAM_UNREADABLE=71
test_command=$1
upstream_file=$2
shift 2
for u in "$@"; do
  [ "$(systemctl show -p LoadState --value -- "$u")" = loaded ] || {
    echo "unit $u is not installed (systemctl cat $u)" >&2
    exit "$EX_UNIT_MISSING"
  }
done
[ -n "$test_command" ] || exit 0
if ! out=$(eval "$test_command" 2>&1); then
  printf 'nginx config test fails before any change:\n%s\n' "$out" >&2
  exit "$EX_NGINX_BROKEN"
fi
cat -- "$upstream_file" 2>/dev/null || {
  echo "cannot read the upstream file $upstream_file" >&2
  exit "$EX_UPSTREAM_UNREADABLE"
}
