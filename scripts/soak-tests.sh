#!/usr/bin/env bash
# Soak test (not part of `make test`): the whole suite N times in a row, from a fresh clone of
# the current HEAD, while a CPU hog competes for the cores. A flaky test shows up here long
# before it shows up in CI.
#
#   scripts/soak-tests.sh [N]        N runs, default 5 (or $SOAK_RUNS)
#
# The clone is made once (its first `make test` builds its .venv); before every later run it is
# cleaned back to a fresh checkout (`git clean -fdx`) except for .venv and *.egg-info, so each
# run starts as a fresh clone does, without reinstalling. Every run is `CI=true make test`;
# PYTEST_ARGS from the environment is passed on by the Makefile. The hog is `stress-ng --cpu 2`
# (Debian's stress-ng is installed when missing and apt-get can), else two `yes > /dev/null`.
# One line per run (pass/fail, duration, failed tests), then a summary; exit status 1 when any
# run failed. Logs of every run are kept when something failed (the path is printed).
set -euo pipefail

runs="${1:-${SOAK_RUNS:-5}}"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [RUNS]   (RUNS: a positive integer, default 5)" >&2
  exit 2
fi

repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
head="$(git -C "$repo" rev-parse HEAD)"
work="$(mktemp -d "${TMPDIR:-/tmp}/quantum-soak.XXXXXX")"
clone="$work/clone"
logs="$work/logs"
mkdir -p "$logs"
hog_pids=()
failed_runs=0

stop_hog() {
  local pid
  for pid in "${hog_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${hog_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  hog_pids=()
}

finish() {
  stop_hog
  rm -rf "$clone"
  if ((failed_runs == 0)); then
    rm -rf "$work"
  else
    echo "logs kept in $logs"
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

ensure_stress_ng() {
  command -v stress-ng >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo="sudo"
  fi
  echo "installing Debian package: stress-ng"
  $sudo apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    stress-ng >/dev/null || return 1
  command -v stress-ng >/dev/null 2>&1
}

start_hog() {
  if ensure_stress_ng; then
    stress-ng --cpu 2 --quiet &
    hog_pids+=("$!")
    echo "CPU hog: stress-ng --cpu 2 (pid ${hog_pids[*]})"
  else
    yes >/dev/null &
    hog_pids+=("$!")
    yes >/dev/null &
    hog_pids+=("$!")
    echo "CPU hog: 2 x yes > /dev/null (pids ${hog_pids[*]}; stress-ng not available)"
  fi
}

echo "soak: $runs run(s) of CI=true make test at ${head:0:12} in $clone"
git clone --quiet --no-local "$repo" "$clone"
git -C "$clone" checkout --quiet --detach "$head"

start_hog
all_failed_tests=()
for ((run = 1; run <= runs; run++)); do
  log="$logs/run-$run.log"
  if ((run > 1)); then
    git -C "$clone" clean -fdxq -e .venv -e '*.egg-info'
  fi
  started=$(date +%s)
  if (cd "$clone" && CI=true make test) >"$log" 2>&1; then
    status=pass
  else
    status=FAIL
    failed_runs=$((failed_runs + 1))
  fi
  duration=$(($(date +%s) - started))
  line="run $run/$runs: $status  ${duration}s"
  if [ "$status" = FAIL ]; then
    mapfile -t failed_tests < <(grep -E '^(FAILED|ERROR) ' "$log" | awk '{print $2}' | sort -u || true)
    if ((${#failed_tests[@]})); then
      line+="  ${failed_tests[*]}"
      all_failed_tests+=("${failed_tests[@]}")
    else
      line+="  (no failed test reported: lint, type-check or set-up; see the log)"
    fi
    line+="  [log: $log]"
  fi
  echo "$line"
done
stop_hog

echo "----"
echo "soak summary at ${head:0:12}: $((runs - failed_runs))/$runs run(s) passed"
if ((${#all_failed_tests[@]})); then
  echo "failed tests (runs failed in):"
  printf '%s\n' "${all_failed_tests[@]}" | sort | uniq -c | sort -rn | sed 's/^/  /'
fi
if ((failed_runs > 0)); then
  exit 1
fi
