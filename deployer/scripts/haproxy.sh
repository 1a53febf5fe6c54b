#!/bin/sh
# haproxy: read or change the servers of one HAProxy backend through its
# runtime API (the stats socket, at level admin), with socat. Nothing is
# reloaded.
#
# usage: haproxy.sh SOCKET BACKEND DRAIN_TIMEOUT_MS check
#        haproxy.sh SOCKET BACKEND DRAIN_TIMEOUT_MS state
#        haproxy.sh SOCKET BACKEND DRAIN_TIMEOUT_MS apply ITEM...
# check: socat is installed, the socket answers at level admin and the
#        backend exists; then prints what state prints.
# state: prints "pid PID", PID HAProxy's process (its worker's, in
#        master-worker mode: a reload or a restart changes it), then
#        "show servers state BACKEND".
# apply: an ITEM pid:PID first is the process rollout last read: when
#        HAProxy's is another one (reloaded or restarted since, which
#        forgets the states set through the API), prints "restarted" then
#        what state prints, and changes nothing. Each other ITEM is
#        ready:SERVER or drain:SERVER, or, for strategy.max_surge's idle
#        ports, wake:SERVER (ready it from maintenance) and maint:SERVER
#        (put it in maintenance, waited for as a drain). A server to ready that
#        is in maintenance (an admin state bit of SRV_ADMF_MAINT, 0x23:
#        forced, inherited, address resolution; not 0x04, "disabled" in
#        haproxy.cfg, which stays once the server is readied) is refused
#        before anything changes: someone put it there. Then
#        sets each server's state, and waits until none of the drained ones
#        has a current session, at most DRAIN_TIMEOUT_MS; prints "drained
#        MS", or "busy MS N" with N sessions still open at the timeout,
#        then what state prints.
# exit:  0 done; EX_HAPROXY with HAProxy's own words on stderr;
#        EX_HAPROXY_DOWN when nothing answers at the socket (HAProxy
#        stopped, or between the stop and the start of a restart)
# needs: socat; a sleep that takes fractions of a second (GNU coreutils,
#        BusyBox)
set -eu
# ms: milliseconds since boot, from /proc/uptime (hundredths of a second;
# POSIX date has no sub-second field).
ms() {
  read -r up _ </proc/uptime
  cs=${up%.*}${up#*.}
  cs=${cs#"${cs%%[!0]*}"}
  echo $((${cs:-0} * 10))
}
readonly EX_HAPROXY=77
readonly EX_HAPROXY_DOWN=84
sock=$1
backend=$2
timeout_ms=$3
op=$4
shift 4

fail() {
  printf '%s\n' "$*" >&2
  exit "$EX_HAPROXY"
}
down() {
  printf '%s\n' "$*" >&2
  exit "$EX_HAPROXY_DOWN"
}
api() { printf '%s\n' "$1" | socat -t 5 stdio "unix-connect:$sock"; }
# pid: the process answering on the socket ("show info" has "Pid: N").
pid() {
  info=$(api "show info") || down "$sock does not answer"
  p=$(printf '%s\n' "$info" | awk -F': ' '$1 == "Pid" { print $2; exit }')
  [ -n "$p" ] || fail "show info: HAProxy gives no Pid: $info"
  echo "$p"
}
# state: the pid line, then the backend's servers.
state() {
  out=$(api "show servers state $backend") || down "$sock does not answer"
  case $out in
  1*) printf 'pid %s\n%s\n' "$1" "$out" ;;
  *) fail "show servers state $backend: HAProxy says: $out" ;;
  esac
}


command -v socat >/dev/null 2>&1 || fail "socat is not installed: rollout talks to HAProxy's runtime API with it (apt install socat)"
[ -S "$sock" ] || down "$sock is not a socket: is HAProxy running, with \"stats socket $sock level admin\" in its global section?"

case $op in
check)
  level=$(api "show cli level") || down "$sock does not answer"
  [ "$level" = admin ] || fail "$sock is at level ${level:-unknown}, not admin: rollout drains and readies servers, which needs \"stats socket $sock level admin\""
  ;;
esac
case $op in
check | state)
  now_pid=$(pid)
  state "$now_pid"
  ;;
apply)
  now_pid=$(pid)
  case ${1:-} in
  pid:*)
    if [ "${1#pid:}" != "$now_pid" ]; then
      echo restarted
      state "$now_pid"
      exit 0
    fi
    shift
    ;;
  esac
  case " $* " in
  *" ready:"*) before=$(api "show servers state $backend") || down "$sock does not answer" ;;
  esac
  drained=
  cmds=
  for item in "$@"; do
    s=${item#*:}
    state=${item%%:*}
    case $state in
    ready)
      admin=$(printf '%s\n' "$before" | awk -v s="$s" '
        /^# / { for (i = 2; i <= NF; i++) { if ($i == "srv_name") n = i - 1; if ($i == "srv_admin_state") a = i - 1 }; next }
        n && a && $n == s { print $a; exit }')
      [ -n "$admin" ] || fail "HAProxy has no server $backend/$s"
      [ "$((admin & 35))" -eq 0 ] || fail "server $backend/$s is in maintenance (admin state $admin), put there by someone: rollout never readies it"
      ;;
    wake) state=ready ;;
    drain | maint) drained="$drained $s" ;;
    *) fail "unknown item $item" ;;
    esac
    cmds="${cmds:+$cmds; }set server $backend/$s state $state"
  done
  # One connection for every change: HAProxy runs the commands in order.
  out=$(api "$cmds") || down "$sock does not answer"
  [ -z "$(printf '%s' "$out" | tr -d '[:space:]')" ] || fail "$cmds: HAProxy says: $out"
  # "show stat" is CSV under a "# pxname,svname,...,scur,..." header.
  sessions() {
    api "show stat" | awk -F, -v b="$backend" -v list="$drained " '
      /^# / { sub(/^# /, ""); for (i = 1; i <= NF; i++) { if ($i == "pxname") px = i; if ($i == "svname") sv = i; if ($i == "scur") cur = i }; next }
      px && sv && cur && $px == b && index(list, " " $sv " ") { n += $cur }
      END { print n + 0 }'
  }
  t=$(ms)
  while :; do
    n=0
    [ -z "$drained" ] || n=$(sessions)
    now=$(ms)
    if [ "$n" -eq 0 ]; then
      echo "drained $((now - t))"
      break
    fi
    if [ "$((now - t))" -ge "$timeout_ms" ]; then
      echo "busy $((now - t)) $n"
      break
    fi
    sleep 0.01
  done
  state "$now_pid"
  ;;
*) fail "unknown operation $op" ;;
esac
