#!/bin/sh
# release-migrate: run release.migrate once for release ID, in its
# directory as the app's user, with the app's env as its instances get it
# (setup.env_file, then the release's own .rollout/env: systemd reads both,
# as it does for the units), through a transient systemd service.
#
# usage: release-migrate.sh ROOT ID USER GROUP TIMEOUT_S ENV_FILE COMMAND
# prints: the command's output on stdout; on stderr, last, "migrated", or
#         "already migrated AT" when the release's marker says it ran (a
#         resumed deploy) and nothing ran.
# exit:   0 ran (or had run); EX_NO_RELEASE the release is not on the host;
#         EX_MIGRATE the command failed or timed out (its last lines said
#         on stderr).
# The marker, ROOT/releases/ID/.rollout/migrated, is written only after the
# command exited 0.
set -eu
readonly EX_NO_RELEASE=75 EX_MIGRATE=83
root=$1 id=$2 user=$3 group=$4 timeout=$5 envfile=$6 cmd=$7
dir=$root/releases/$id
if [ ! -d "$dir" ] || [ -L "$dir" ]; then
  echo "release $id is not in $root/releases" >&2
  exit "$EX_NO_RELEASE"
fi
mark=$dir/.rollout/migrated
if [ -f "$mark" ]; then
  echo "already migrated $(cat -- "$mark")" >&2
  exit 0
fi
# systemd replaces $NAME and ${NAME} in a service's command line; "$$" is
# its "$": the shell gets the command as it was given.
cmd=$(printf '%sx' "$cmd" | sed 's/\$/$$/g')
cmd=${cmd%x}
set +e
systemd-run --quiet --wait --pipe --collect --service-type=exec \
  -p User="$user" -p Group="$group" -p WorkingDirectory="$dir" \
  -p EnvironmentFile=-"$envfile" -p EnvironmentFile=-"$dir/.rollout/env" \
  -E ROLLOUT_RELEASE="$id" \
  -- timeout -k 5 "$timeout" /bin/sh -c "$cmd" </dev/null 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "release.migrate timed out after ${timeout}s" >&2
  else
    echo "release.migrate exited $rc" >&2
  fi
  exit "$EX_MIGRATE"
fi
mkdir -p -- "$dir/.rollout"
date -u +%Y-%m-%dT%H:%M:%SZ >"$mark.tmp"
mv -f -- "$mark.tmp" "$mark"
echo migrated >&2
