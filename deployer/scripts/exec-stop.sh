#!/bin/sh
# exec-stop: stop what rollout exec started as UNIT, when the caller went
# away (Ctrl-C, SIGTERM): systemd sends it SIGTERM, then SIGKILL after the
# unit's 10s. A unit that already ended is not an error.
#
# usage: exec-stop.sh UNIT
set -eu
if systemctl is-active --quiet -- "$1"; then
  systemctl stop -- "$1"
fi
