#!/bin/sh
# setup-inspect: what `rollout setup` finds on a host, changing nothing.
# Prints sections "@@rollout@@ NAME":
#   user        "UID GROUP,GROUP..." of USER, or "none"
#   dir PATH    "OWNER:GROUP MODE" (stat %U:%G %a), or "missing"
#   file PATH   "OWNER:GROUP MODE" then the content in base64 on one line,
#               or "missing"
#   enabled     systemctl is-enabled of each UNIT, a line each ("unknown"
#               when it says nothing)
#   watch       with a timer: its is-enabled and is-active, then "curl" or
#               "no-curl"; without: "installed" if any of the watch files
#               exists, else "none"
#   logrotate   with a LOG_TIMER: its is-enabled and is-active, then
#               "logrotate" or "no-logrotate"; without: nothing
#   code        "current" (RELEASE_ROOT/current is a link), "code"
#               (APP_DIR holds files) or "empty"
#
# usage: setup-inspect.sh USER APP_DIR RELEASE_ROOT TIMER LOG_TIMER WATCH_FILE_COUNT
#          WATCH_FILE... DIR_COUNT DIR... FILE_COUNT FILE... UNIT...
#        TIMER "" without a watch: section; LOG_TIMER "" without log
#        rotation; RELEASE_ROOT "" without releases.
set -eu
user=$1 app_dir=$2 release_root=$3 timer=$4 log_timer=$5
shift 5
section() { echo "@@rollout@@ $*"; }

section user
if uid=$(id -u -- "$user" 2>/dev/null); then
  echo "$uid $(id -nG -- "$user" | tr ' ' ,)"
else
  echo none
fi

n=$1
shift
watch_installed=none
while [ "$n" -gt 0 ]; do
  [ -e "$1" ] && watch_installed=installed
  n=$((n - 1))
  shift
done

n=$1
shift
while [ "$n" -gt 0 ]; do
  section dir "$1"
  stat -c '%U:%G %a' -- "$1" 2>/dev/null || echo missing
  n=$((n - 1))
  shift
done

n=$1
shift
while [ "$n" -gt 0 ]; do
  section file "$1"
  if [ -e "$1" ]; then
    stat -c '%U:%G %a' -- "$1"
    base64 -w0 -- "$1"
    echo
  else
    echo missing
  fi
  n=$((n - 1))
  shift
done

section enabled
for u in "$@"; do
  state=$(systemctl is-enabled -- "$u" 2>/dev/null) || true
  echo "${state:-unknown}"
done

section watch
if [ -n "$timer" ]; then
  state=$(systemctl is-enabled -- "$timer" 2>/dev/null) || true
  echo "${state:-unknown}"
  state=$(systemctl is-active -- "$timer" 2>/dev/null) || true
  echo "${state:-unknown}"
  if command -v curl >/dev/null; then echo curl; else echo no-curl; fi
else
  echo "$watch_installed"
fi

section logrotate
if [ -n "$log_timer" ]; then
  state=$(systemctl is-enabled -- "$log_timer" 2>/dev/null) || true
  echo "${state:-unknown}"
  state=$(systemctl is-active -- "$log_timer" 2>/dev/null) || true
  echo "${state:-unknown}"
  if [ -x /usr/sbin/logrotate ]; then echo logrotate; else echo no-logrotate; fi
fi

section code
if [ -n "$release_root" ] && [ -L "$release_root/current" ]; then
  echo current
elif [ -n "$(ls -A -- "$app_dir" 2>/dev/null)" ]; then
  echo code
else
  echo empty
fi
