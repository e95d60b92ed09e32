#!/usr/bin/env bash
# VM pools against cold VMs, process pools and cold containers in one run, the idle
# cost and boot CPU of a pre-booted VM, and the refill rate (bench/vm_pool_bench.py).
#
#   bench/vm-pool.sh [BUILD_DIR]    (RUNS=10; writes bench/results/vm-pool.md and .svg)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/vm_pool_bench.py" "${1:-$(dirname "$here")/build}"
