#!/usr/bin/env bash
# The warm pool under open-loop load, against its floors, in one run:
#
#   1. floors: fork+exec of /bin/true and `unshare -fpmuin true` (the namespaces
#      alone), latency (hyperfine, beside `tarn pool run` and `tarn run`) and rate
#      with 8 closed-loop workers; the client library against a posix_spawn of the
#      same binary from the same process (tarn-pool-bench);
#   2. capacity: the rate 8 closed-loop workers sustain through the client library
#      on an adaptive pool;
#   3. open loop: Poisson arrivals at 25/50/75/100% of that capacity (tarn-openloop),
#      each point against a fresh daemon: pool with adaptive sizing, pool with fixed
#      sizing (--min-idle FIXED_MIN_IDLE), and cold starts (`tarn run`, a
#      posix_spawn of the CLI per request, so the same work a caller without the
#      pool does). Latency is start→exit: the request's scheduled arrival to its
#      exit status, queueing included; hits and misses are the daemon's counters
#      over the measured window. The floors (fork+exec, unshare) also run at 75% of
#      their own closed-loop rate, for the tail a plain process start has at that load;
#   4. a claim's timeline: sequential `tarn pool run` with TARN_POOL_TIMELINE, and
#      what the daemon logs at debug level about the sandbox that served it.
#
# Writes bench/results/openloop.md and bench/results/openloop-latency.svg.
#
#   bench/openloop.sh [BUILD_DIR]    (default: build)
#
# Environment (durations in seconds):
#   DURATION        measured time of each open-loop point (default 30)
#   WARMUP          load before each point, not recorded (default 5)
#   CAP_DURATION    each closed-loop rate measurement (default 10)
#   RUNS            hyperfine runs and sequential client-library runs (default 100)
#   LOADS           percentages of capacity (default "25 50 75 100")
#   MODES           which of "adaptive fixed cold" to run (default all three)
#   FIXED_MIN_IDLE  the fixed pool's size (default 4); MAX_TOTAL (default 64)
#   MAX_STARTING    the daemon's spawners, sandboxes made at once (default two per
#                   CPU from 2 to 8, as the daemon's own default): with the make time,
#                   what bounds the refill
#   MAX_INFLIGHT    open-loop workers, i.e. requests in flight at most (default 32)
#   TIMELINE_RUNS   sequential claims whose timeline is shown (default 5)
#   SMOKE=1         short everything (a few seconds a step) and mark the results
#                   file as a smoke run
# A full run takes about (3 × LOADS + 2) × (DURATION + WARMUP + ~3) + 4 × CAP_DURATION
# + the hyperfine runs and the cold backlog's drain: about 10 minutes with the defaults.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
loadgen=$build/bench/tarn-openloop
lib_bench=$build/bench/tarn-pool-bench
[ -x "$tarn" ] && [ -x "$loadgen" ] && [ -x "$lib_bench" ] ||
    { echo "no tarn, tarn-openloop or tarn-pool-bench in $build: build first" >&2; exit 1; }

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then d_dur=3 d_warm=2 d_cap=2 d_runs=15; else d_dur=30 d_warm=5 d_cap=10 d_runs=100; fi
duration=${DURATION:-$d_dur}
warmup=${WARMUP:-$d_warm}
cap_duration=${CAP_DURATION:-$d_cap}
runs=${RUNS:-$d_runs}
loads=${LOADS:-25 50 75 100}
modes=${MODES:-adaptive fixed cold}
fixed_idle=${FIXED_MIN_IDLE:-4}
max_total=${MAX_TOTAL:-64}
max_starting=${MAX_STARTING:-$(cpus=$(nproc); n=$((cpus * 2)); [ $n -lt 2 ] && n=2; [ $n -gt 8 ] && n=8; echo $n)}
inflight=${MAX_INFLIGHT:-32}
timeline_runs=${TIMELINE_RUNS:-5}

. "$here/lib.sh"
ensure_packages hyperfine busybox-static jq python3

work=$(mktemp -d /tmp/tarn-bench-openloop-XXXXXX)
sock=$work/pool.sock
out=$work/out
mkdir -p "$out"
daemon=""
stop_daemon() {
    [ -n "$daemon" ] || return 0
    "$tarn" pool stop --now --socket "$sock" >/dev/null 2>&1 || kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    daemon=""
}
cleanup() {
    stop_daemon
    rm -rf "$work"
}
trap cleanup EXIT
sh "$top/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
truebin=$work/bundle/rootfs/bin/true

# A fresh daemon for each measurement, below a cgroup parent of its own (a daemon
# removes every sandbox below its parent when it starts).
start_daemon() {  # SIZING MIN_IDLE
    stop_daemon
    cat >"$work/pool.json" <<EOF
{"socket": "$sock", "cgroupParent": "/tarn-bench-openloop", "maxStarting": $max_starting,
 "pools": [{"name": "bench", "bundle": "$work/bundle", "sizing": "$1", "minIdle": $2, "maxTotal": $max_total}]}
EOF
    "$tarn" --debug pool serve --config "$work/pool.json" >>"$work/daemon.log" 2>&1 &
    daemon=$!
    for _ in $(seq 200); do "$tarn" pool status --socket "$sock" >/dev/null 2>&1 && break; sleep 0.05; done
    for _ in $(seq 200); do
        [ "$("$tarn" pool status --json --socket "$sock" | jq '.pools[0].idle')" -ge "$2" ] && return
        sleep 0.05
    done
}
log() { echo "openloop: $*" >&2; }

# --- 1. floors ----------------------------------------------------------------------
log "floors: hyperfine, $runs runs each"
start_daemon adaptive 2
hyperfine -N --warmup 5 --runs "$runs" --export-json "$out/floor-lat.json" \
    -n "fork+exec /bin/true" "$truebin" \
    -n "unshare -fpmuin true" "unshare -fpmuin $truebin" \
    --prepare "sleep 0.03" -n "tarn pool run" "$tarn pool run --socket $sock bench -- /bin/true" \
    -n "tarn run (cold)" "$tarn --root $work/tarn-lat run --bundle $work/bundle lat" >/dev/null
"$tarn" pool status --json --socket "$sock" >"$out/floor-lat-status.json"
start_daemon adaptive 2
"$lib_bench" --socket "$sock" --pool bench --runs "$runs" --pause-ms 30 --host-cmd "$truebin" -- /bin/true \
    >"$out/lib-lat.json"

closed() {  # NAME MODE ARGS... -- CMD...
    local name=$1; shift
    log "closed loop, 8 workers: $name (${cap_duration}s)"
    "$loadgen" --closed 8 --duration "$cap_duration" --warmup 1 "$@" >"$out/rate-$name.json" ||
        log "$name: some requests failed: $(jq -r .firstError "$out/rate-$name.json")"
}
closed forkexec --mode spawn -- "$truebin"
closed unshare --mode spawn -- unshare -fpmuin "$truebin"
closed cold --mode spawn -- "$tarn" --root "$work/tarn-rate" run --bundle "$work/bundle" rate-{n}
start_daemon adaptive 2
closed pool-cli --mode spawn -- "$tarn" pool run --wait 60000 --socket "$sock" bench -- /bin/true

# --- 2. capacity --------------------------------------------------------------------
start_daemon adaptive 2
closed capacity --mode pool --socket "$sock" --pool bench -- /bin/true
"$tarn" pool status --socket "$sock" >"$out/capacity-status.txt"
capacity=$(jq '.ratePerSec' "$out/rate-capacity.json")
log "capacity: $capacity/s"

# --- 3. open loop -------------------------------------------------------------------
for mode in $modes; do
    for load in $loads; do
        rate=$(awk -v c="$capacity" -v l="$load" 'BEGIN { printf "%.2f", c * l / 100 }')
        log "open loop: $mode at $load% ($rate/s), ${warmup}s + ${duration}s"
        common=(--rate "$rate" --duration "$duration" --warmup "$warmup" --max-inflight "$inflight" --seed "$load")
        case $mode in
            adaptive) start_daemon adaptive 2
                      "$loadgen" --mode pool --socket "$sock" --pool bench "${common[@]}" -- /bin/true ;;
            fixed)    start_daemon fixed "$fixed_idle"
                      "$loadgen" --mode pool --socket "$sock" --pool bench "${common[@]}" -- /bin/true ;;
            cold)     stop_daemon
                      "$loadgen" --mode spawn "${common[@]}" -- \
                          "$tarn" --root "$work/tarn-open" run --bundle "$work/bundle" open-$load-{n} ;;
        esac >"$out/open-$mode-$load.json" || log "$mode $load%: some requests failed"
        [ "$mode" = cold ] || "$tarn" pool status --socket "$sock" >"$out/open-$mode-$load-status.txt"
    done
done

# The floors' own tail at the tail target's load: Poisson arrivals at 75% of each
# floor's closed-loop rate above, the same relative load as the pool's 75% point.
for floor in forkexec unshare; do
    frate=$(jq '.ratePerSec' "$out/rate-$floor.json")
    rate=$(awk -v c="$frate" 'BEGIN { printf "%.2f", c * 0.75 }')
    log "open loop: $floor at 75% of its own rate ($rate/s), ${warmup}s + ${duration}s"
    cmd=("$truebin")
    [ "$floor" = unshare ] && cmd=(unshare -fpmuin "$truebin")
    "$loadgen" --mode spawn --rate "$rate" --duration "$duration" --warmup "$warmup" --max-inflight "$inflight" \
        --seed 75 -- "${cmd[@]}" >"$out/open-floor-$floor.json" || log "$floor 75%: some requests failed"
done

# --- 4. a claim's timeline ----------------------------------------------------------
start_daemon adaptive 2
: >"$out/timeline-cli.txt"
for _ in $(seq "$timeline_runs"); do
    sleep 0.05
    TARN_POOL_TIMELINE=$EPOCHREALTIME "$tarn" --debug pool run --socket "$sock" bench -- /bin/true \
        2>>"$out/timeline-cli.txt"
done
"$loadgen" --mode pool --socket "$sock" --pool bench --timeline "$timeline_runs" -- /bin/true \
    >"$out/timeline-lib.json" 2>"$out/timeline-lib.txt"
grep -o 'ready: .*' "$work/daemon.log" | tail -n 3 >"$out/timeline-daemon.txt" || true
stop_daemon

# --- report -------------------------------------------------------------------------
mkdir -p "$here/results"
MAX_STARTING=$max_starting python3 "$here/openloop_report.py" "$out" "$here/results" \
    "$smoke" "$duration" "$warmup" "$cap_duration" "$runs" "$fixed_idle" "$inflight" "$loads" "$modes" \
    "$(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r)"
cat "$here/results/openloop.md"
