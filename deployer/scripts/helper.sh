#!/bin/sh
# The helper (sudo: helper): the one program the deploy user may run as
# root, through /etc/sudoers.d/rollout-APP. rollout setup writes it to
# /usr/local/lib/rollout/APP with this app's values above this part and
# the remote scripts this app's deploys use as its verbs (at the mark in
# the case below). It is called as
#   HELPER ID VERB ARGS...
# where ID names the helper the caller expects (a hash of all of it: a
# helper from another config or rollout version is refused, EX_STALE, and
# rollout setup writes the new one). Each verb takes the arguments its
# script takes, and every one must be this app's: its instances' units in
# its port range, its upstream file and Nginx commands, its release root,
# its lock directory, its log files, release ids and tokens of plain
# characters. Anything else is refused (EX_REFUSED) before anything runs.
# shellcheck disable=SC2154 # the values are set above this part
set -euf
readonly EX_STALE=78
readonly EX_REFUSED=79
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
NL='
'

refuse() {
  printf 'rollout helper for %s: refused: %s; nothing was run\n' "$APP" "$*" >&2
  exit "$EX_REFUSED"
}

# uint: digits only, at most 12 of them.
uint() {
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  [ ${#1} -le 12 ]
}
need_uint() { uint "$2" || refuse "$1 must be a number, got '$2'"; }
# need NAME GOT WANT: a value fixed by the config.
need() { [ "$2" = "$3" ] || refuse "$1 must be '$3', got '$2'"; }
# need_count VERB N OP M: N arguments, OP (-eq, -ge, -le) M.
need_count() { test "$2" "$3" "$4" || refuse "$1: wrong number of arguments ($2)"; }

if [ -n "$PORT_BASE" ]; then
  # instances: auto, one per core of this host (and, with max_surge,
  # PORT_SLOTS 2: as many spare ports after them).
  PORTS=$(seq "$PORT_BASE" $((PORT_BASE + $(nproc) * PORT_SLOTS - 1)) | tr '\n' ' ')
fi
port_ok() {
  uint "$1" || return 1
  case " $PORTS " in *" $1 "*) return 0 ;; esac
  return 1
}
need_port() { port_ok "$1" || refuse "port '$1' is not one of $APP's ($PORTS)"; }
# unit_port UNIT prints the port of one of the app's instances' units.
unit_port() {
  case $1 in "$UNIT_PREFIX"*"$UNIT_SUFFIX") ;; *) return 1 ;; esac
  _p=${1#"$UNIT_PREFIX"}
  _p=${_p%"$UNIT_SUFFIX"}
  port_ok "$_p" && printf '%s' "$_p"
}
need_unit() { unit_port "$1" >/dev/null || refuse "'$1' is not one of $APP's instances (${UNIT_PREFIX}PORT$UNIT_SUFFIX, ports $PORTS)"; }
# worker_ok UNIT: UNIT is NAME@N of a worker NAME:COUNT of WORKERS, N in
# 1..COUNT (auto: the host's cores).
worker_ok() {
  for _w in $WORKERS; do
    _n=${1#"${_w%:*}@"}
    [ "$_n" != "$1" ] || continue
    uint "$_n" || return 1
    case $_n in 0*) return 1 ;; esac # @01 is another unit than @1
    _c=${_w##*:}
    [ "$_c" != auto ] || _c=$(nproc)
    [ "$_n" -ge 1 ] && [ "$_n" -le "$_c" ]
    return
  done
  return 1
}
# need_any_unit UNIT: an instance's unit or a worker's.
need_any_unit() { unit_port "$1" >/dev/null || worker_ok "$1" || refuse "'$1' is neither one of $APP's instances (${UNIT_PREFIX}PORT$UNIT_SUFFIX, ports $PORTS) nor of its workers (${WORKERS:-none})"; }
# A release id or a lock token: plain characters, not starting with a dot.
need_name() {
  case $2 in '' | .* | *[!A-Za-z0-9._-]*) refuse "$1 must be plain letters, digits, . _ -, got '$2'" ;; esac
  [ ${#2} -le 128 ] || refuse "$1 is too long"
}
# The transient unit of a rollout exec: rollout-exec-APP-TOKEN.
need_exec_unit() {
  # TOKEN is 12 hex digits, so that another app whose name starts with
  # this one's and a dash (web and web-api) keeps its own units.
  case ${1#"rollout-exec-$APP-"} in
  "$1" | *[!0-9a-f]*) refuse "'$1' is not one of $APP's exec units (rollout-exec-$APP-TOKEN)" ;;
  ????????????) ;;
  *) refuse "'$1' is not one of $APP's exec units (rollout-exec-$APP-TOKEN, 12 hex digits)" ;;
  esac
}
need_json() {
  case $2 in *"$NL"*) refuse "$1 must be one line" ;; '{'*'}') ;; *) refuse "$1 must be a JSON object" ;; esac
}
# (The functions' own variables start with "_": the verbs below keep
# their arguments in plain ones while they check the rest.)
# A log file of the app: an absolute plain path under one of its log
# directories (read as the app's user, so a link there shows no more
# than the app itself can read).
need_log() {
  case $1 in
  /*) ;;
  *) refuse "log file '$1' is not an absolute path" ;;
  esac
  case $1 in
  *[!A-Za-z0-9._/@+-]* | */../* | */.. | */./* | *//*) refuse "log file '$1' is not a plain path" ;;
  esac
  _ifs=$IFS
  IFS=$NL
  for _dir in $LOG_DIRS; do
    case $1 in "$_dir"/*)
      IFS=$_ifs
      return 0
      ;;
    esac
  done
  IFS=$_ifs
  refuse "log file '$1' is not under $APP's log directories"
}

if [ "$#" -lt 2 ]; then
  refuse "usage: $0 ID VERB ARGS..."
fi
if [ "$1" != "$HELPER_ID" ]; then
  printf 'rollout helper for %s: this host has helper %s, the caller expects %s: run rollout setup to write the helper of this config and rollout version\n' "$APP" "$HELPER_ID" "$1" >&2
  exit "$EX_STALE"
fi
verb=$2
shift 2
case $verb in
preflight)
  need_count preflight $# -ge 2
  if [ -n "$1" ]; then
    need "the nginx test command" "$1" "$NGINX_TEST"
    need "the upstream file" "$2" "$NGINX_UPSTREAM"
    need_count preflight $# -eq 2
  else
    need "the upstream file" "$2" ""
    shift 2
    for u in "$@"; do need_unit "$u"; done
    set -- "" "" "$@"
  fi
  ;;
write-upstream)
  need_count write-upstream $# -ge 5
  need "the upstream file" "$1" "$NGINX_UPSTREAM"
  need "the nginx test command" "$2" "$NGINX_TEST"
  need "the nginx reload command" "$3" "$NGINX_RELOAD"
  need "the nginx pid file" "$4" "$NGINX_PID"
  [ "$5" = - ] || need_uint "the drain timeout" "$5"
  a=$1 b=$2 c=$3 d=$4 e=$5
  shift 5
  for p in "$@"; do need_port "$p"; done
  set -- "$a" "$b" "$c" "$d" "$e" "$@"
  ;;
restart)
  need_count restart $# -ge 5
  need_any_unit "$1"
  need "the unit properties" "$2" "$UNIT_PROPS"
  if [ -n "$3$4$5" ]; then
    need "the release root" "$3" "$RELEASE_ROOT"
    if worker_ok "$1"; then
      need "the worker's link" "$4" "$1"
    else
      need "the instance's port" "$4" "$(unit_port "$1")"
    fi
    need_name "the release" "$5"
  fi
  a=$1 b=$2 c=$3 d=$4 e=$5
  shift 5
  for f in "$@"; do need_log "$f"; done
  set -- "$a" "$b" "$c" "$d" "$e" "$@"
  ;;
app-output)
  need_count app-output $# -ge 3
  need_any_unit "$1"
  need_uint "the number of lines" "$2"
  case $3 in *[!0-9.]*) refuse "since must be seconds, got '$3'" ;; esac
  a=$1 b=$2 c=$3
  shift 3
  [ $(($# % 2)) -eq 0 ] || refuse "app-output: offsets and files go in pairs"
  n=$#
  while [ "$n" -gt 0 ]; do
    need_uint "an offset" "$1"
    need_log "$2"
    set -- "$@" "$1" "$2"
    shift 2
    n=$((n - 2))
  done
  set -- "$a" "$b" "$c" "$@"
  READ_AS=$APP_USER
  export READ_AS
  ;;
lock-acquire)
  need_count lock-acquire $# -ge 3
  need_count lock-acquire $# -le 4
  need "the lock directory" "$1" "$LOCK_DIR"
  need_uint "the stale time" "$2"
  case $3 in true | false) ;; *) refuse "break-stale must be true or false" ;; esac
  [ $# -lt 4 ] || need_name "the token" "$4"
  ;;
lock-refresh | lock-release)
  need_count "$verb" $# -eq 2
  need "the lock directory" "$1" "$LOCK_DIR"
  need_name "the token" "$2"
  ;;
lock-status)
  need_count lock-status $# -eq 1
  need "the lock directory" "$1" "$LOCK_DIR"
  ;;
history-append)
  need_count history-append $# -eq 1
  need "the history file" "$1" "$LOCK_DIR/history.jsonl"
  ;;
drained)
  need_count drained $# -eq 2
  need "the drained list" "$1" "$LOCK_DIR/drained.json"
  case $2 in read | write) ;; *) refuse "drained: unknown operation '$2'" ;; esac
  ;;
history-read)
  need_count history-read $# -eq 2
  need "the history file" "$1" "$LOCK_DIR/history.jsonl"
  need_uint "the number of entries" "$2"
  ;;
release-state)
  need_count release-state $# -ge 1
  need "the release root" "$1" "$RELEASE_ROOT"
  shift
  [ $(($# % 2)) -eq 0 ] || refuse "release-state: ports and units go in pairs"
  n=$#
  while [ "$n" -gt 0 ]; do
    if worker_ok "$1"; then
      need "the worker's link" "$2" "$1"
    else
      need_port "$1"
      need "the unit of port $1" "$2" "$UNIT_PREFIX$1$UNIT_SUFFIX"
    fi
    set -- "$@" "$1" "$2"
    shift 2
    n=$((n - 2))
  done
  set -- "$RELEASE_ROOT" "$@"
  ;;
release-upload)
  need_count release-upload $# -ge 8
  need "the release root" "$1" "$RELEASE_ROOT"
  need_name "the release" "$2"
  case $3 in *[!0-9a-f]*) refuse "the checksum must be hex" ;; esac
  [ ${#3} -eq 64 ] || refuse "the checksum must be a sha256"
  need "the app's user" "$4" "$APP_USER"
  need "the app's group" "$5" "$APP_GROUP"
  need "the prepare timeout" "$6" "$PREPARE_TIMEOUT"
  need "release.prepare" "$7" "$PREPARE"
  need_json "the release's log line" "$8"
  a=$1 b=$2 c=$3 d=$4 e=$5 f=$6 g=$7 h=$8
  shift 8
  need "release.shared" "$(printf '%s\n' "$@")" "$SHARED"
  set -- "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$@"
  ;;
release-switch)
  need_count release-switch $# -eq 3
  need "the release root" "$1" "$RELEASE_ROOT"
  need_port "$2"
  need_name "the release" "$3"
  ;;
release-record)
  need_count release-record $# -ge 3
  need "the release root" "$1" "$RELEASE_ROOT"
  old=$IFS
  IFS=$NL
  for l in $2; do need_json "a release's log line" "$l"; done
  IFS=$old
  [ -z "$3" ] || need_name "the current release" "$3"
  a=$1 b=$2 c=$3
  shift 3
  for id in "$@"; do need_name "a release to remove" "$id"; done
  set -- "$a" "$b" "$c" "$@"
  ;;
release-secrets)
  need_count release-secrets $# -eq 3
  need "the release root" "$1" "$RELEASE_ROOT"
  need_name "the release" "$2"
  need_unit "$3"
  ;;
release-migrate)
  need_count release-migrate $# -eq 7
  need "the release root" "$1" "$RELEASE_ROOT"
  need_name "the release" "$2"
  need "the app's user" "$3" "$APP_USER"
  need "the app's group" "$4" "$APP_GROUP"
  need "the migrate timeout" "$5" "$MIGRATE_TIMEOUT"
  need "setup.env_file" "$6" "$ENV_FILE"
  [ -n "$MIGRATE" ] || refuse "release-migrate: the config of this helper has no release.migrate"
  need "release.migrate" "$7" "$MIGRATE"
  ;;
exec)
  # rollout exec: the user's command runs as the app's user (never root),
  # in one of its releases (or its directory) with its env: what a
  # deploy of any code could run all the same.
  need_count exec $# -ge 8
  if [ -n "$RELEASE_ROOT" ]; then
    need_name "the release" "$2"
    need "the release's directory" "$1" "$RELEASE_ROOT/releases/$2"
  else
    need "the release" "$2" ""
    need "the app's directory" "$1" "$WORK_DIR"
  fi
  need "the app's user" "$3" "$APP_USER"
  need "the app's group" "$4" "$APP_GROUP"
  need "setup.env_file" "$5" "$ENV_FILE"
  need_exec_unit "$6"
  case $7 in check | pipe | tty) ;; *) refuse "exec: unknown mode '$7'" ;; esac
  ;;
exec-stop)
  need_count exec-stop $# -eq 1
  need_exec_unit "$1"
  ;;
secrets-read)
  need_count secrets-read $# -eq 1
  need "the release root" "$1" "$RELEASE_ROOT"
  ;;
haproxy)
  # On a balancer host (lb: with driver haproxy): this app's backend only.
  need_count haproxy $# -ge 4
  [ -n "$HAPROXY_SOCKET" ] || refuse "haproxy: this is not the helper of $APP's HAProxy balancer"
  need "the runtime API's socket" "$1" "$HAPROXY_SOCKET"
  need "the backend" "$2" "$HAPROXY_BACKEND"
  need_uint "the drain timeout" "$3"
  case $4 in
  check | state) need_count "haproxy $4" $# -eq 4 ;;
  apply) ;;
  *) refuse "haproxy: unknown operation '$4'" ;;
  esac
  a=$1 b=$2 c=$3 d=$4
  shift 4
  first=true
  for item in "$@"; do
    case $item in
    pid:*)
      $first || refuse "haproxy: pid:PID comes first"
      need_uint "HAProxy's process" "${item#pid:}"
      ;;
    ready:* | drain:*) need_name "a server" "${item#*:}" ;;
    wake:* | maint:*)
      # Only strategy.max_surge's idle ports are woken or put in maintenance.
      [ "$PORT_SLOTS" = 2 ] || refuse "haproxy: '$item' needs strategy.max_surge"
      need_name "a server" "${item#*:}"
      ;;
    *) refuse "haproxy: '$item' is not ready:, drain:, wake: or maint:SERVER" ;;
    esac
    first=false
  done
  set -- "$a" "$b" "$c" "$d" "$@"
  ;;
access-read)
  need_count access-read $# -ge 5
  need "the access log" "$1" "$ACCESS_LOG"
  case $2 in '' | -) ;; *) need_uint "the inode" "$2" ;; esac
  [ "$3" = -1 ] || need_uint "the offset" "$3"
  need_uint "the read limit" "$4"
  need_uint "since" "$5"
  a=$1 b=$2 c=$3 d=$4 e=$5
  shift 5
  for u in "$@"; do need_unit "$u"; done
  set -- "$a" "$b" "$c" "$d" "$e" "$@"
  ;;
start | stop | enable)
  need_count "$verb" $# -ge 1
  for u in "$@"; do need_unit "$u"; done
  # Only the links in the target's .wants change: no daemon-reload.
  if [ "$verb" = start ]; then
    exec systemctl enable --no-reload --now -- "$@"
  fi
  if [ "$verb" = enable ]; then
    exec systemctl enable --no-reload -- "$@"
  fi
  systemctl disable --no-reload --now -- "$@"
  # Their failures, if they had any, were reported: not left in
  # systemctl --failed.
  systemctl reset-failed -- "$@" 2>/dev/null || true
  exit 0
  ;;
journal)
  # journal LINES FOLLOW(0|1) UNIT [SINCE]
  need_count journal $# -ge 3
  need_count journal $# -le 4
  need_uint "the number of lines" "$1"
  case $2 in 0 | 1) ;; *) refuse "follow must be 0 or 1" ;; esac
  need_any_unit "$3"
  lines=$1 follow=$2 unit=$3
  shift 3
  if [ $# -eq 1 ]; then
    case $1 in '' | *[!A-Za-z0-9\ :.+@-]*) refuse "since '$1' is not a time" ;; esac
    [ ${#1} -le 64 ] || refuse "since is too long"
    set -- --since "$1"
  fi
  [ "$follow" = 0 ] || set -- "$@" -f
  exec journalctl --no-pager -o short-iso -n "$lines" -u "$unit" "$@"
  ;;
tail)
  # tail LINES FOLLOW(0|1) FILE: a log file, as the app's user, quiet
  # when it is missing.
  need_count tail $# -eq 3
  need_uint "the number of lines" "$1"
  case $2 in 0 | 1) ;; *) refuse "follow must be 0 or 1" ;; esac
  need_log "$3"
  if [ "$2" = 1 ]; then
    exec runuser -u "$APP_USER" -- tail -n "$1" -F -- "$3" 2>/dev/null
  fi
  exec runuser -u "$APP_USER" -- tail -n "$1" -- "$3" 2>/dev/null
  ;;
version)
  echo "$HELPER_ID"
  exit 0
  ;;
*)
  refuse "unknown verb '$verb'"
  ;;
esac
# @@scripts@@ rollout setup puts here the scripts of the verbs above.
