#!/usr/bin/env bash
# Builds Traefik (not a Debian package) from its Go module at a pinned
# version, once, into the testbed's cache: the e2e tests bind it into the
# hosts at /usr/local/bin/traefik. Quiet when it is there already.
#   tools/traefik.sh [CACHE_DIR]   (default /var/cache/rollout-testbed)
# It prints the binary's path.
set -euo pipefail
version=v3.6.12
cache=${1:-/var/cache/rollout-testbed}
bin=$cache/traefik-$version
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
go=${GO:-go}
echo "traefik.sh: building Traefik $version from its module (once; about 10 minutes on 2 cores)" >&2
t0=$SECONDS
dir=$("$go" mod download -json "github.com/traefik/traefik/v3@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $dir ]] || { echo "traefik.sh: go mod download gave no directory" >&2; exit 1; }
src=$(mktemp -d)
trap 'chmod -R u+w "$src"; rm -rf "$src"' EXIT
cp -r "$dir/." "$src"
chmod -R u+w "$src"
# Its go.mod has replace directives: built as the main module, in its tree.
(cd "$src" && GOFLAGS=-mod=mod "$go" build -trimpath -ldflags "-s -w" -o "$bin.tmp" ./cmd/traefik)
mv -f "$bin.tmp" "$bin"
echo "traefik.sh: built $bin in $((SECONDS - t0))s" >&2
echo "$bin"
