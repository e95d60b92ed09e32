#!/usr/bin/env bash
# Every benchmark, one after the other, each writing its file under bench/results:
#
#   start.sh --guest   cold start on the host and inside the cgroup v2 guest  start.md
#   pool.sh            the pool against cold starts, latency and rate         pool.md, pool-cdf.svg
#   openloop.sh        the pool under Poisson load, floors and targets        openloop.md, openloop-latency.svg
#   vm.sh              the VM isolation mode (only with VM=1: slow under TCG) vm.md
#
#   bench/all.sh [BUILD_DIR]    (default: build)
#
# Each script's own environment variables apply (RUNS, DURATION, ...); SMOKE=1 makes
# start.sh and openloop.sh short and marks their results as a smoke run. With the
# defaults on a quiet 2-core machine: about 4 min (start, with the guest boot),
# 1 min (pool), 9 min (openloop).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$(dirname "$here")/build}
failed=()
step() {
    echo "== bench/$1" >&2
    local t0=$SECONDS
    bash "$here/$@" || failed+=("$1")
    echo "== bench/$1: $((SECONDS - t0)) s" >&2
}
step start.sh --guest "$build"
step pool.sh "$build"
step openloop.sh "$build"
[ "${VM:-0}" = 1 ] && step vm.sh "$build"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
