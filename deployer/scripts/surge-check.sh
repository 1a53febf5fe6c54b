#!/bin/sh
# surge-check: before a surge (strategy.max_surge), what the new instances
# would meet: for each spare PORT, a line "listen PORT SS-LINE" per socket
# listening on it (ss shows the process, "users:((NAME,pid=N,...))", to
# root and to its owner) and "cgroup PID PATH" for each such process;
# "spare UNIT STATE" for each spare port's unit (systemctl is-active); the
# host's available memory, "mem KB"; and for each live UNIT the resident
# memory of its main process, "rss UNIT KB" (0 when it runs none).
#
# usage: surge-check.sh "PORT..." "SPARE_UNIT..." UNIT...
set -eu
for unit in $2; do
  echo "spare $unit $(systemctl is-active -- "$unit" 2>/dev/null || true)"
done
for port in $1; do
  ss -Hltnp "sport = :$port" | while IFS= read -r line; do
    echo "listen $port $line"
    for pid in $(printf '%s\n' "$line" | grep -o 'pid=[0-9]*' | cut -d= -f2); do
      if [ -r "/proc/$pid/cgroup" ]; then
        echo "cgroup $pid $(tail -n 1 "/proc/$pid/cgroup")"
      fi
    done
  done
done
shift 2
awk '$1 == "MemAvailable:" { print "mem", $2 }' /proc/meminfo
for unit in "$@"; do
  pid=$(systemctl show -p MainPID --value -- "$unit" 2>/dev/null) || pid=0
  rss=0
  if [ "${pid:-0}" != 0 ] && [ -r "/proc/$pid/status" ]; then
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")
  fi
  echo "rss $unit ${rss:-0}"
done
