#!/usr/bin/env bash
# Where the CPU of a pool sandbox goes at capacity: 8 closed-loop clients claim
# /bin/true through the client library (tarn-openloop) from an adaptive pool while
# `perf record -a -g -e cpu-clock` samples the whole machine (cpu-clock: VMs without
# hardware counters have it). Every sample is put down to a role — the daemon, its
# spawners, sandbox inits before their exec, workloads, the clients, the kernel
# threads that finish the work (kworkers: network namespace cleanup, cgroup css
# offlining; ksoftirqd and rcu: RCU callbacks) — and to the outermost system call
# (or page fault, or kernel thread work item) it was taken in. CPU per claim is the
# samples of those roles over the claims the daemon counted while perf ran. Other
# processes on the machine are listed apart and left out.
#
#   bench/pool-profile.sh [BUILD_DIR] [TARN]   (default: build, BUILD_DIR/runtime/tarn)
#
# Environment: DURATION (seconds sampled, default 8), CLIENTS (default 8),
# MAX_STARTING (spawners, default 2). Prints the tables; writes nothing else.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=${2:-$build/runtime/tarn}
loadgen=$build/bench/tarn-openloop
[ -x "$tarn" ] && [ -x "$loadgen" ] || { echo "no tarn or tarn-openloop in $build: build first" >&2; exit 1; }
duration=${DURATION:-8}
clients=${CLIENTS:-8}
max_starting=${MAX_STARTING:-2}

. "$here/lib.sh"
ensure_packages busybox-static jq python3 linux-perf

work=$(mktemp -d /tmp/tarn-bench-profile-XXXXXX)
sock=$work/pool.sock
daemon=""
cleanup() {
    if [ -n "$daemon" ]; then
        "$tarn" pool stop --now --socket "$sock" >/dev/null 2>&1 || kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
sh "$top/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
cat >"$work/pool.json" <<JSON
{"socket": "$sock", "cgroupParent": "/tarn-bench-profile", "maxStarting": $max_starting,
 "pools": [{"name": "bench", "bundle": "$work/bundle", "minIdle": 2, "maxTotal": 64}]}
JSON
"$tarn" pool serve --config "$work/pool.json" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 200); do "$tarn" pool status --socket "$sock" >/dev/null 2>&1 && break; sleep 0.05; done
claims() { "$tarn" pool status --json --socket "$sock" | jq '.pools[0].claims'; }
# The spawners: the daemon's children named tarn-spawner in its own pid namespace
# (parked sandbox inits are its children too, with that name, in pid namespaces of
# their own: two pids in NSpid).
spawners=$(for p in $(pgrep -P "$daemon" -x tarn-spawner); do
    if [ "$(awk '/^NSpid:/ {print NF - 1}' "/proc/$p/status" 2>/dev/null)" = 1 ]; then echo "$p"; fi
done | paste -sd,)

"$loadgen" --mode pool --socket "$sock" --pool bench --closed "$clients" --duration $((duration + 4)) --warmup 1 \
    -- /bin/true >"$work/rate.json" &
load=$!
sleep 2
c0=$(claims)
perf record -a -g -e cpu-clock -o "$work/perf.data" -- sleep "$duration" 2>"$work/perf.err"
c1=$(claims)
wait "$load"
perf script -i "$work/perf.data" -F comm,pid,ip,sym 2>/dev/null >"$work/perf.txt"
echo "tarn: $tarn; $clients clients, ${duration}s sampled, $((c1 - c0)) claims; $(jq -r '.ratePerSec' "$work/rate.json") claims/s over the whole load"
python3 "$here/pool_profile.py" "$work/perf.txt" --claims $((c1 - c0)) --daemon "$daemon" --spawners "$spawners"
