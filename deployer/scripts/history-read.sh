#!/bin/sh
# history-read: print the last LINES lines of the deploy history, if any.
#
# usage: history-read.sh FILE LINES
set -eu
[ ! -e "$1" ] || tail -n "$2" -- "$1"
