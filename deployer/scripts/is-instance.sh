#!/bin/sh
# is-instance: print whether a unit is running (or trying to) and whether it
# is enabled, as "ACTIVE ENABLED" (systemctl's words, "unknown" if absent).
#
# usage: is-instance.sh UNIT
set -eu
active=$(systemctl is-active -- "$1" 2>/dev/null) || true
enabled=$(systemctl is-enabled -- "$1" 2>/dev/null) || true
echo "${active:-unknown} ${enabled:-unknown}"
