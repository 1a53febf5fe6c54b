#!/bin/sh
# unit-files: print each unit's file (systemctl cat) after a section line
# "@@rollout@@ UNIT", to find where the instances write their output.
#
# usage: unit-files.sh UNIT...
set -eu
for u in "$@"; do
  echo "@@rollout@@ $u"
  systemctl cat -- "$u" 2>/dev/null || true
done
