#!/bin/sh
# host-watch: the alerts and status.json of one app between deploys, run
# by systemd on the host (rollout setup installs it as
# /usr/local/lib/rollout/APP-watch, with the values below it needs before
# this text). Nothing of it stays running.
#
#   stop INSTANCE         ExecStopPost of APP@.service: alert when the
#                         instance stopped with a result other than success
#                         ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS)
#   start-limit INSTANCE  OnFailure= of APP@.service: systemd gave up
#   worker-stop UNIT, worker-start-limit UNIT
#                         the same for a worker's instance (UNIT@N)
#   status                the timer: write status.json (the fields of
#                         rollout status --output json), alert when an
#                         instance or a worker turns bad, and say when it
#                         recovers
#   send FILE             post FILE to the webhook (run by systemd-run, so
#                         that a slow webhook never holds up a stop)
#
# At most one alert per instance per MIN_INTERVAL seconds; the ones held
# back are counted in the next. Nothing is sent while the deploy lock is
# held (a deploy restarts instances on purpose). The webhook URL is read
# from ENV_FILE (root, 0600) and given to curl on stdin, never on a command
# line. A failed post is a line in the journal, never a failed stop.
#
# Set before this text: APP UNIT_PREFIX PORTS SPARE STATE LOCK_STALE
# MIN_INTERVAL ENV_FILE STATUS_FILE UPSTREAM_FILE UPSTREAM SERVER_ADDR
# HEALTH_PATH HEALTH_STATUS HEALTH_TIMEOUT SELF WORKERS (the workers'
# instances, UNIT@N, space-separated)
set -eu
umask 077
mode=${1:-}
w=$STATE/watch
mkdir -p -- "$w"

locked() {
  [ -d "$STATE/lock" ] || return 1
  age=$(($(date +%s) - $(stat -c %Y -- "$STATE/lock" 2>/dev/null || echo 0)))
  [ "$age" -le "$LOCK_STALE" ]
}

# json_string: $1 as a JSON string: \ and " escaped, newlines, tabs and
# carriage returns as spaces, every other control character left out (JSON
# allows none of them raw).
json_string() {
  printf '"%s"' "$(printf '%s' "$1" | tr '\n\t\r' '   ' | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# queue TEXT: post TEXT, detached from the caller.
queue() {
  f=$(mktemp -- "$w/out.XXXXXX") || return 0
  printf '%s' "$1" >"$f"
  systemd-run --no-block --collect --quiet --property=TimeoutStartSec=30 -- "$SELF" send "$f" ||
    echo "rollout watch: could not start the post of an alert" >&2
}

# alert PORT TEXT: queue TEXT unless an alert for PORT went out less than
# MIN_INTERVAL ago (then count it); mark the instance bad either way.
alert() {
  (
    flock 9
    last=0 held=0
    [ -r "$w/$1.last" ] && read -r last held <"$w/$1.last"
    now=$(date +%s)
    echo bad >"$w/$1.state"
    if [ $((now - last)) -lt "$MIN_INTERVAL" ]; then
      echo "$last $((held + 1))" >"$w/$1.last"
      exit 0
    fi
    text=$2
    [ "$held" -gt 0 ] && text="$text ($held more alert(s) for it held back since the last one)"
    echo "$now 0" >"$w/$1.last"
    queue "$text"
  ) 9>"$w/.lock"
}

# recovered PORT TEXT: say TEXT if PORT was bad, and forget its alerts.
recovered() {
  (
    flock 9
    was=ok
    [ -r "$w/$1.state" ] && read -r was <"$w/$1.state"
    [ "$was" = bad ] || exit 0
    echo ok >"$w/$1.state"
    rm -f -- "$w/$1.last"
    queue "$2"
  ) 9>"$w/.lock"
}

host=$(hostname)
case $mode in
stop)
  inst=$2
  [ "${SERVICE_RESULT:-success}" = success ] && exit 0
  locked && exit 0
  alert "$inst" "❌ $UNIT_PREFIX$inst on $host stopped: ${SERVICE_RESULT:-?} (${EXIT_CODE:-?} ${EXIT_STATUS:-?})"
  ;;
start-limit)
  inst=$2
  locked && exit 0
  alert "$inst" "❌ $UNIT_PREFIX$inst on $host failed: systemd hit its start limit and stopped restarting it"
  ;;
worker-stop)
  unit=$2
  [ "${SERVICE_RESULT:-success}" = success ] && exit 0
  locked && exit 0
  alert "$unit" "❌ worker $unit on $host stopped: ${SERVICE_RESULT:-?} (${EXIT_CODE:-?} ${EXIT_STATUS:-?})"
  ;;
worker-start-limit)
  unit=$2
  locked && exit 0
  alert "$unit" "❌ worker $unit on $host failed: systemd hit its start limit and stopped restarting it"
  ;;
send)
  f=$2
  # shellcheck disable=SC1090 # the env file rollout setup writes
  . "$ENV_FILE"
  text=$(cat -- "$f")
  rm -f -- "$f"
  if [ "$FORMAT" = telegram ]; then
    body="{\"chat_id\":$(json_string "$CHAT_ID"),\"text\":$(json_string "$text")}"
  else
    body="{\"text\":$(json_string "$text")}"
  fi
  printf 'url = "%s"\n' "$URL" | curl -sS -o /dev/null --fail --max-time 10 -H 'Content-Type: application/json' --data-binary "$body" -K - ||
    { echo "rollout watch: the webhook post failed" >&2; exit 1; }
  ;;
status)
  servers=$(awk -v up="$UPSTREAM" -v addr="$SERVER_ADDR" '
    $1 == "upstream" && ($2 == up || $2 == up "{") { inb = 1; next }
    inb && /}/ { inb = 0 }
    inb && $1 == "server" { split($2, a, ":"); sub(/;.*/, "", a[2]); if (a[1] == addr) print a[2], ($0 ~ /[ \t]down[ \t;]/ ? "down" : "up") }
  ' "$UPSTREAM_FILE" 2>/dev/null) || true
  listed() { printf '%s\n' "$servers" | grep -q "^$1 "; }
  served() { printf '%s\n' "$servers" | grep -qx "$1 up"; }
  # Each slot's live port: with strategy.max_surge (SPARE, the spare port
  # of each port of PORTS), the spare one when the upstream lists it and
  # not the other, or serves from it and not from the other (as rollout
  # reads it); the slots' other ports are idle ("IDLE:LIVE" in pairs).
  live='' pairs=''
  # shellcheck disable=SC2086 # one word per port
  set -- $SPARE
  for p in $PORTS; do
    s=${1:-}
    [ $# -gt 0 ] && shift
    if [ -n "$s" ] && listed "$s" && { ! listed "$p" || { served "$s" && ! served "$p"; }; }; then
      live="$live $s" pairs="$pairs $p:$s"
    else
      live="$live $p"
      [ -n "$s" ] && pairs="$pairs $s:$p"
    fi
  done
  idle=
  for pr in $pairs; do idle="$idle ${pr%%:*}"; done
  units=
  for p in $live $idle; do units="$units $UNIT_PREFIX$p.service"; done
  for u in $WORKERS; do units="$units $u.service"; done
  # shellcheck disable=SC2086 # one word per unit
  props=$(systemctl show -p Id,ActiveState,SubState,MainPID,ExecMainStartTimestampMonotonic,NRestarts,MemoryCurrent -- $units) || true
  up_us=$(awk '{printf "%.0f", $1 * 1000000}' /proc/uptime) # %d is 32-bit in mawk
  skip_alerts=false
  locked && skip_alerts=true
  out="{\"host\":$(json_string "$host"),\"time\":$(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)"),\"instances\":["
  sep=
  for p in $live $idle; do
    # An idle port's unit is shown only when it runs: a leftover.
    of=
    for pr in $pairs; do [ "${pr%%:*}" = "$p" ] && of=${pr#*:}; done
    # systemctl show separates units by a blank line; Id is anywhere in one.
    block=$(printf '%s\n' "$props" | awk -v id="Id=$UNIT_PREFIX$p.service" 'BEGIN { RS = "" } index("\n" $0 "\n", "\n" id "\n") { print; exit }')
    val() { printf '%s\n' "$block" | sed -n "s/^$1=//p" | head -n 1; }
    active=$(val ActiveState) sub=$(val SubState) pid=$(val MainPID) started=$(val ExecMainStartTimestampMonotonic)
    restarts=$(val NRestarts) mem=$(val MemoryCurrent)
    if [ -n "$of" ]; then
      case $active in '' | inactive | failed) continue ;; esac
    fi
    case $mem in '' | *[!0-9]*) mem=0 ;; esac
    case $restarts in '' | *[!0-9]*) restarts=0 ;; esac
    case $pid in '' | *[!0-9]*) pid=0 ;; esac
    uptime=0
    if [ "$pid" -gt 0 ] && [ -n "$started" ] && [ "$started" -gt 0 ] 2>/dev/null; then
      uptime=$(((up_us - started) * 1000))
    fi
    in_nginx=false
    served "$p" && in_nginx=true
    healthy=false health=
    if [ -n "$of" ]; then
      health="not checked: its slot serves from $of"
    else
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$HEALTH_TIMEOUT" "http://$SERVER_ADDR:$p$HEALTH_PATH" 2>/dev/null) || true
      if [ "$code" = "$HEALTH_STATUS" ]; then
        healthy=true
      elif [ -z "$code" ] || [ "$code" = 000 ]; then
        health="no answer on $SERVER_ADDR:$p"
      else
        health="status $code, want $HEALTH_STATUS"
      fi
    fi
    out="$out$sep{\"port\":$p,\"unit\":$(json_string "$UNIT_PREFIX$p"),\"state\":$(json_string "$active"),\"sub\":$(json_string "$sub"),\"pid\":$pid,\"uptime_ns\":$uptime,\"memory_bytes\":$mem,\"restarts\":$restarts,\"in_nginx\":$in_nginx,\"healthy\":$healthy"
    [ -n "$health" ] && out="$out,\"health\":$(json_string "$health")"
    [ -n "$of" ] && out="$out,\"leftover\":true"
    out="$out}"
    sep=,
    $skip_alerts && continue
    prev=ok
    [ -r "$w/$p.state" ] && read -r prev <"$w/$p.state"
    if [ -n "$of" ]; then
      [ "$prev" = bad ] || alert "$p" "❌ $UNIT_PREFIX$p on $host runs ($active/$sub) but its slot serves from $of (strategy.max_surge): left by an interrupted surge; the next deploy stops it"
    elif [ "$active" = active ] && [ "$in_nginx" = true ] && [ "$healthy" = true ]; then
      recovered "$p" "✅ $UNIT_PREFIX$p on $host is running, in Nginx and healthy again"
    else
      why="$active/$sub"
      [ "$in_nginx" = true ] || why="$why, out of Nginx"
      [ "$healthy" = true ] || why="$why, ${health:-unhealthy}"
      [ "$prev" = bad ] || alert "$p" "❌ $UNIT_PREFIX$p on $host is not serving: $why"
    fi
  done
  out="$out],\"workers\":["
  sep=
  for u in $WORKERS; do
    block=$(printf '%s\n' "$props" | awk -v id="Id=$u.service" 'BEGIN { RS = "" } index("\n" $0 "\n", "\n" id "\n") { print; exit }')
    val() { printf '%s\n' "$block" | sed -n "s/^$1=//p" | head -n 1; }
    active=$(val ActiveState) sub=$(val SubState) pid=$(val MainPID) started=$(val ExecMainStartTimestampMonotonic)
    restarts=$(val NRestarts)
    case $restarts in '' | *[!0-9]*) restarts=0 ;; esac
    case $pid in '' | *[!0-9]*) pid=0 ;; esac
    uptime=0
    if [ "$pid" -gt 0 ] && [ -n "$started" ] && [ "$started" -gt 0 ] 2>/dev/null; then
      uptime=$(((up_us - started) * 1000))
    fi
    out="$out$sep{\"unit\":$(json_string "$u"),\"state\":$(json_string "$active"),\"sub\":$(json_string "$sub"),\"pid\":$pid,\"uptime_ns\":$uptime,\"restarts\":$restarts}"
    sep=,
    $skip_alerts && continue
    if [ "$active" = active ] && [ "$pid" -gt 0 ]; then
      recovered "$u" "✅ worker $u on $host is running again"
    else
      prev=ok
      [ -r "$w/$u.state" ] && read -r prev <"$w/$u.state"
      [ "$prev" = bad ] || alert "$u" "❌ worker $u on $host is not running: $active/$sub"
    fi
  done
  out="$out]}"
  t=$(mktemp -- "$STATUS_FILE.XXXXXX") && printf '{"hosts":[%s]}\n' "$out" >"$t" && chmod 644 -- "$t" && mv -f -- "$t" "$STATUS_FILE"
  ;;
*)
  echo "usage: $0 stop|start-limit INSTANCE | worker-stop|worker-start-limit UNIT | status | send FILE" >&2
  exit 2
  ;;
esac
