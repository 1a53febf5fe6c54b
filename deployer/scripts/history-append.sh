#!/bin/sh
# history-append: append stdin (one JSON line) to the deploy history.
#
# usage: history-append.sh FILE
set -eu
mkdir -p -- "$(dirname -- "$1")"
cat >>"$1"
