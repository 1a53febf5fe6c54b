#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet
# (one apt-get update and install for all of them); quiet when all are.
set -euo pipefail
missing=()
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "apt-need: ${missing[*]} not installed, and installing needs root" >&2
  exit 1
fi
echo "apt-need: installing ${missing[*]}" >&2
t0=$SECONDS
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "apt-need: installed in $((SECONDS - t0))s" >&2
