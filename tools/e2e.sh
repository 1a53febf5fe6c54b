#!/usr/bin/env bash
# make e2e: the real-host tests as go test processes (jobs), E2E_WORKERS of
# them at a time, each on a testbed of its own (a slot, see
# e2e/main_test.go). The default is one at a time: on a 2-core machine the
# tests are bound by CPU (1.2 cores busy on average, measured), and two at
# once took as long and starved the load tests (failed requests from
# timeouts); a machine with more cores can run E2E_SHARDS=2 E2E_WORKERS=2.
#   e2e-1 .. e2e-N    the e2e package in N shares on Debian 12 (bookworm)
#   matrix-bullseye   the core tests (TestCore*) on Debian 11
#   matrix-trixie     the core tests on Debian 13
#   testbed           the testbed's own tests
# Each job's lines carry its name; at the end come every test's time,
# slowest first, and the time of each job. It fails when any job failed.
# E2E_SHARDS=N (default 1); E2E_RUN=REGEX runs only those tests.
set -uo pipefail
shards=${E2E_SHARDS:-1}
workers=${E2E_WORKERS:-1}
run=${E2E_RUN:-}
out=build/e2e
rm -rf "$out"
mkdir -p "$out"
t0=$SECONDS

jobs=()
for ((i = 1; i <= shards; i++)); do jobs+=("e2e-$i"); done
jobs+=(matrix-bullseye matrix-trixie testbed)

# job N: run job number N (its slot is N+1) through gotestsum.
job() {
  local n=$1 name=${jobs[$1]} slot=$(($1 + 1))
  local env=(ROLLOUT_E2E_SLOT="$slot") pkg=./e2e/
  case $name in
  e2e-*) env+=(ROLLOUT_E2E_SHARD="${name#e2e-}/$shards") ;;
  matrix-*) env+=(ROLLOUT_E2E_SUITE="${name#matrix-}") ;;
  testbed) pkg=./e2e/testbed/ ;;
  esac
  local args=(-count=1 -timeout 45m)
  [[ -z $run || $name == testbed ]] || args+=(-run "$run")
  local s=$SECONDS
  env "${env[@]}" gotestsum --format testname --jsonfile "$out/$name.json" -- "${args[@]}" "$pkg" 2>&1 | sed -u "s/^/[$name] /"
  local rc=${PIPESTATUS[0]}
  echo "$((SECONDS - s))" >"$out/$name.seconds"
  echo "$rc" >"$out/$name.rc"
}

# take prints the next job's number, or fails when none is left.
take() {
  (
    flock 9
    local n
    n=$(cat "$out/next" 2>/dev/null || echo 0)
    ((n < ${#jobs[@]})) || exit 1
    echo $((n + 1)) >"$out/next"
    echo "$n"
  ) 9>"$out/.lock"
}

worker() {
  local n
  while n=$(take); do job "$n"; done
}

# Traefik (built once from its module, cached) for the hosts, and the test
# binaries, compiled once before the jobs start.
ROLLOUT_TRAEFIK=${ROLLOUT_TRAEFIK:-$(tools/traefik.sh)} || exit 1
export ROLLOUT_TRAEFIK
go test -count=1 -c -o /dev/null ./e2e/ || exit 1
go test -count=1 -c -o /dev/null ./e2e/testbed/ || exit 1

for ((w = 0; w < workers; w++)); do worker & done
wait

echo
echo "e2e: time per test, slowest first:"
for f in "$out"/*.json; do
  gotestsum tool slowest --jsonfile "$f" --threshold 1ms | awk -v job="$(basename "$f" .json)" -f tools/seconds.awk
done | sort -rn -k1,1 | awk '{printf "  %7.1fs  %-16s %s\n", $1, $2, $3}'
echo
echo "e2e: time per job:"
status=0
for name in "${jobs[@]}"; do
  rc=$(cat "$out/$name.rc" 2>/dev/null || echo '?')
  result=ok
  if [[ $rc != 0 ]]; then
    result="FAILED (exit $rc)"
    status=1
  fi
  printf '  %-16s %5ss  %s\n' "$name" "$(cat "$out/$name.seconds" 2>/dev/null || echo '?')" "$result"
done
echo "e2e: $((SECONDS - t0))s in all, $workers jobs at a time"
exit $status
