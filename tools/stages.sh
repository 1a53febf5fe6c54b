#!/usr/bin/env bash
# Runs make targets one after another as the stages of a long job, saying
# which stage runs and how long each took, and ends with the time of each
# (also when a stage fails: the job stops there, with make's exit code).
#   tools/stages.sh TARGET...
set -uo pipefail
names=() times=() results=()
total=$SECONDS
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
summary() {
  echo
  echo "stage      time    result"
  for i in "${!names[@]}"; do
    printf '%-10s %-7s %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
  done
  printf '%-10s %s\n' total "$(fmt $((SECONDS - total)))"
}
n=$#
i=0
for stage in "$@"; do
  i=$((i + 1))
  echo
  echo "==> [$i/$n] make $stage ($(date +%H:%M:%S))"
  t0=$SECONDS
  make --no-print-directory "$stage"
  rc=$?
  names+=("$stage") times+=("$(fmt $((SECONDS - t0)))")
  if ((rc != 0)); then
    results+=("FAILED (exit $rc)")
    summary
    exit "$rc"
  fi
  results+=(ok)
  echo "<== [$i/$n] make $stage: ok in $(fmt $((SECONDS - t0)))"
done
summary
