#!/bin/sh
# release-upload: put a release in place under ROOT/releases/ID. stdin is
# the release as a gzipped tar; it is written to ID.partial.tgz, its
# SHA-256 checked (EX_CHECKSUM), unpacked into ID.partial (EX_SPECIAL
# when it holds a device, fifo or socket file, or .rollout), the shared
# paths linked in (EX_SHARED when one is neither in ROOT/shared nor in the
# release), PREPARE run in it as USER:GROUP with a timeout (EX_PREPARE, its
# output on stderr), then owned root:GROUP, directories 2750, files 0640
# (0750 when executable), renamed to ID, and LOG_LINE appended to the
# release log. On any failure nothing but leftovers of ID.partial is
# touched, and those are removed. One upload runs at a time (an upload
# whose connection was lost may still be running when the controller sends
# it again): the next waits, finds the release in place and reads its
# stdin to the end. Leftovers of earlier interrupted uploads are removed
# first: the caller holds the deploy lock.
#
# usage: release-upload.sh ROOT ID SHA256 USER GROUP TIMEOUT_SECONDS PREPARE LOG_LINE [SHARED...]
# exit:  0 in place; EX_* below
set -eu
readonly EX_CHECKSUM=72
readonly EX_PREPARE=73
readonly EX_SHARED=74
readonly EX_SPECIAL=81

root=$1 id=$2 sum=$3 user=$4 group=$5 timeout=$6 prepare=$7 line=$8
shift 8
rel=$root/releases
part=$rel/$id.partial
home=
cleanup() { rm -rf -- "$part" "$part.tgz" ${home:+"$home"}; }
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
mkdir -p -- "$rel" "$root/shared" "$root/instances" "$root/.rollout"
chmod 0700 -- "$root/.rollout"
exec 9>"$root/.rollout/upload.lock"
flock 9
if [ -d "$rel/$id" ]; then
  cat >/dev/null
  if grep -F "\"sha256\":\"$sum\"" "$root/.rollout/releases.jsonl" 2>/dev/null | grep -qF "\"id\":\"$id\""; then
    exit 0
  fi
  echo "release $id is already in $rel with other content" >&2
  exit "$EX_CHECKSUM"
fi
rm -rf -- "$rel"/*.partial "$rel"/*.partial.tgz

cat >"$part.tgz"
have=$(sha256sum <"$part.tgz")
have=${have%% *}
if [ "$have" != "$sum" ]; then
  echo "the release arrived damaged or cut short: sha256 $have, sent $sum" >&2
  exit "$EX_CHECKSUM"
fi
mkdir -- "$part"
tar -xzf "$part.tgz" -C "$part" --no-same-owner
rm -f -- "$part.tgz"
# Unpacked as root, a release must not hand anyone root: no device, fifo
# or socket files, and no set-user-ID or set-group-ID bits.
special=$(find "$part" ! -type f ! -type d ! -type l -print | head -n 1)
if [ -n "$special" ]; then
  echo "the release holds a device, fifo or socket file, which rollout does not install: ${special#"$part"/}" >&2
  exit "$EX_SPECIAL"
fi
find "$part" -perm /6000 -exec chmod ug-s -- {} +
# .rollout is where the release's secrets go (release-secrets.sh).
if [ -e "$part/.rollout" ] || [ -L "$part/.rollout" ]; then
  echo "the release holds .rollout, where rollout keeps the release's secrets: rename it" >&2
  exit "$EX_SPECIAL"
fi

for s in "$@"; do
  if [ ! -e "$root/shared/$s" ] && [ ! -L "$root/shared/$s" ]; then
    if [ ! -e "$part/$s" ]; then
      echo "release.shared: $s is neither in $root/shared nor in the release: create $root/shared/$s on the host (a file or a directory)" >&2
      exit "$EX_SHARED"
    fi
    mkdir -p -- "$(dirname -- "$root/shared/$s")"
    cp -a -- "$part/$s" "$root/shared/$s"
  fi
  rm -rf -- "${part:?}/$s"
  mkdir -p -- "$(dirname -- "$part/$s")"
  ln -s -- "$root/shared/$s" "$part/$s"
done

if [ -n "$prepare" ]; then
  home=$(mktemp -d)
  chown -R -- "$user:$group" "$part" "$home"
  set +e
  out=$(cd -- "$part" && HOME=$home ROLLOUT_RELEASE=$id timeout -k 5 "$timeout" runuser -u "$user" -g "$group" -- sh -c "$prepare" 2>&1 </dev/null)
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "release.prepare timed out after ${timeout}s" >&2
    else
      echo "release.prepare exited $rc" >&2
    fi
    printf '%s\n' "$out" | tail -n 40 >&2
    exit "$EX_PREPARE"
  fi
fi

chown -R -- "root:$group" "$part"
find "$part" -type d -exec chmod 2750 {} +
find "$part" -type f -perm /111 -exec chmod 0750 {} +
find "$part" -type f ! -perm /111 -exec chmod 0640 {} +
chown -- "root:$group" "$root" "$rel" "$root/instances"
chmod 2750 -- "$root" "$rel" "$root/instances"
rm -rf -- "${rel:?}/$id"
mv -T -- "$part" "$rel/$id"
printf '%s\n' "$line" >>"$root/.rollout/releases.jsonl"
