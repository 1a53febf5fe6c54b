#!/bin/sh
# discover: read what `rollout init` needs from a host, changing nothing:
# who we are and whether sudo -n works, the CPU cores, the template
# instances systemd knows (loaded, and enabled by a .wants link), and the
# whole Nginx config (nginx -T, through sudo -n when not root and sudo
# lets it; else as the user), and the rollout helpers installed (sudo:
# helper) with whether sudo lets the user run each, and memory (what the
# host has available, what each running instance uses). Each part follows a
# section line "@@rollout@@ NAME".
#
# usage: discover.sh
set -eu
echo "@@rollout@@ id"
id -u
id -un
echo "@@rollout@@ sudo"
if [ "$(id -u)" -eq 0 ]; then
  echo root
elif sudo -n true 2>/dev/null; then
  echo yes
else
  echo no
fi
echo "@@rollout@@ cores"
nproc
echo "@@rollout@@ units"
systemctl list-units --all --plain --no-legend --no-pager --type=service -- '*@*.service' 2>/dev/null || true
echo "@@rollout@@ wants"
for f in /etc/systemd/system/*.wants/*@*.service; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  echo "${f##*/}"
done
echo "@@rollout@@ helpers"
for f in /usr/local/lib/rollout/*; do
  [ -f "$f" ] || continue
  if [ "$(id -u)" -eq 0 ] || sudo -n -l -- "$f" >/dev/null 2>&1; then
    echo "${f##*/} allowed"
  else
    echo "${f##*/} refused"
  fi
done
echo "@@rollout@@ memory"
# MemAvailable, and each running template instance's resident memory (the
# VmRSS of its main process; /proc/PID/status is readable by every user).
awk '$1 == "MemAvailable:" { print "available", $2 }' /proc/meminfo 2>/dev/null || true
systemctl list-units --state=active --plain --no-legend --no-pager --type=service -- '*@*.service' 2>/dev/null |
  while read -r unit _; do
    pid=$(systemctl show -p MainPID --value -- "$unit" 2>/dev/null) || continue
    [ "${pid:-0}" -gt 0 ] 2>/dev/null || continue
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
    [ -z "$rss" ] || echo "rss $unit $rss"
  done
echo "@@rollout@@ nginx"
if [ "$(id -u)" -eq 0 ]; then
  nginx -T 2>&1 || echo "@@rollout@@ nginx-failed"
elif sudo -n true 2>/dev/null; then
  sudo -n nginx -T 2>&1 || echo "@@rollout@@ nginx-failed"
else
  nginx -T 2>/dev/null || echo "@@rollout@@ nginx-failed"
fi
