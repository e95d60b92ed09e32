#!/usr/bin/env bash
# The warm pool against cold starts, on /bin/true with one busybox bundle:
#
#   1. latency, one hyperfine run: `tarn pool run` (a sandbox from the pool) vs
#      `tarn run` (cold) vs crun vs runc vs a plain fork+exec of /bin/true;
#   2. sustained rate: 8 concurrent clients starting and finishing sandboxes;
#   3. idle cost: PSS of a parked sandbox.
#
# Writes bench/results/pool.md and bench/results/pool-cdf.svg (latency CDF).
#
#   bench/pool.sh [BUILD_DIR]    (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
[ -x "$tarn" ] || { echo "no tarn at $tarn: build first" >&2; exit 1; }

need=()
for p in runc crun hyperfine busybox-static jq python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/tarn-bench-pool-XXXXXX)
sock=$work/pool.sock
cleanup() {
    "$tarn" pool stop --now --socket "$sock" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
sh "$top/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
# Debian 12's crun knows runtime-spec versions up to 1.1: declare one all accept.
sed -i 's/"ociVersion": "[^"]*"/"ociVersion": "1.0.2"/' "$work/bundle/config.json"

idle=${MIN_IDLE:-8}
cat >"$work/pool.json" <<EOF
{"socket": "$sock", "cgroupParent": "/tarn-bench-pool",
 "pools": [{"name": "bench", "bundle": "$work/bundle", "minIdle": $idle, "maxTotal": 64}]}
EOF
"$tarn" --debug pool serve --config "$work/pool.json" >"$work/daemon.log" 2>&1 &
for _ in $(seq 200); do "$tarn" pool status --socket "$sock" >/dev/null 2>&1 && break; sleep 0.05; done
wait_idle() {
    for _ in $(seq 400); do
        [ "$("$tarn" pool status --json --socket "$sock" | jq '.pools[0].idle')" -ge "$idle" ] && return
        sleep 0.05
    done
}
wait_idle

crun_cmd="crun --root $work/crun run --bundle $work/bundle bench-crun"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && mountpoint -q /sys/fs/cgroup/unified; then
    # crun refuses hybrid cgroup hosts: it runs with the cgroup2 mount hidden.
    crun_cmd="unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun \"\$@\"' sh --root $work/crun run --bundle $work/bundle bench-crun"
fi

# --- 1. latency -------------------------------------------------------------------
# A claim finds an idle sandbox when the pool has had time to refill: the pause
# before each pool run (outside the timing) gives it that; the rate below is the
# saturated case.
runs=${RUNS:-100}
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/lat.json" \
    --prepare "sleep 0.03" -n "tarn pool run" "$tarn pool run --socket $sock bench -- /bin/true" \
    --prepare "true" -n "tarn run (cold)" "$tarn --root $work/tarn run --bundle $work/bundle bench-tarn" \
    --prepare "true" -n "crun" "$crun_cmd" \
    --prepare "true" -n "runc" "runc --root $work/runc run --bundle $work/bundle bench-runc" \
    --prepare "true" -n "fork+exec /bin/true" "$work/bundle/rootfs/bin/true" >/dev/null
stats_after_latency=$("$tarn" pool status --json --socket "$sock")

# --- 2. sustained rate ------------------------------------------------------------
total=${RATE_RUNS:-600}
wait_idle
start=$(date +%s.%N)
seq "$total" | xargs -P 8 -I{} "$tarn" pool run --wait 60000 --socket "$sock" bench -- /bin/true
end=$(date +%s.%N)
pool_rate=$(awk -v n="$total" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
cold_total=$((total / 4))
start=$(date +%s.%N)
seq "$cold_total" | xargs -P 8 -I{} "$tarn" --root "$work/tarn-rate" run --bundle "$work/bundle" cold-{}
end=$(date +%s.%N)
cold_rate=$(awk -v n="$cold_total" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
stats_after_rate=$("$tarn" pool status --json --socket "$sock")

# --- 3. idle cost -----------------------------------------------------------------
wait_idle
pss_kib=0
n=0
for d in /sys/fs/cgroup/pids/tarn-bench-pool/bench/*/ /sys/fs/cgroup/tarn-bench-pool/bench/*/; do
    [ -f "$d/cgroup.procs" ] || continue
    for pid in $(cat "$d/cgroup.procs"); do
        p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        [ -n "$p" ] || continue
        pss_kib=$((pss_kib + p))
        n=$((n + 1))
    done
done
pss_each=$(awk -v t="$pss_kib" -v n="$n" 'BEGIN { printf "%.0f", n ? t / n : 0 }')

# --- report -----------------------------------------------------------------------
mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$work/lat.json"; }
ms() { awk -v v="$1" 'BEGIN { printf "%.2f", v * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
p=$(mean "tarn pool run"); t=$(mean "tarn run (cold)"); c=$(mean crun); r=$(mean runc); f=$(mean "fork+exec /bin/true")
claim_p50=$(jq '.pools[0].claimLatencyMs.p50' <<<"$stats_after_rate")
claim_p99=$(jq '.pools[0].claimLatencyMs.p99' <<<"$stats_after_rate")
mkdir -p "$here/results"
python3 - "$work/lat.json" "$here/results/pool-cdf.svg" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
W, H, L, B = 720, 420, 70, 50
xmax = max(max(r["times"]) for r in res) * 1000 * 1.05
colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">start→exit of /bin/true: latency CDF</text>']
def X(ms): return L + (W - L - 20) * ms / xmax
def Y(q): return H - B - (H - B - 40) * q
out.append(f'<line x1="{L}" y1="{Y(0)}" x2="{W-20}" y2="{Y(0)}" stroke="black"/><line x1="{L}" y1="{Y(0)}" x2="{L}" y2="{Y(1)}" stroke="black"/>')
for i in range(6):
    ms = xmax * i / 5
    out.append(f'<text x="{X(ms)}" y="{Y(0)+18}" text-anchor="middle">{ms:.0f} ms</text>')
for q in (0, 0.5, 0.9, 0.99, 1):
    out.append(f'<text x="{L-6}" y="{Y(q)+4}" text-anchor="end">{q:g}</text><line x1="{L}" y1="{Y(q)}" x2="{W-20}" y2="{Y(q)}" stroke="#ddd"/>')
for k, r in enumerate(res):
    ts = sorted(t * 1000 for t in r["times"])
    pts = " ".join(f"{X(t):.1f},{Y((i + 1) / len(ts)):.1f}" for i, t in enumerate(ts))
    col = colors[k % len(colors)]
    out.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="{pts}"/>')
    out.append(f'<text x="{W-30}" y="{Y(0.05) - 16 * (len(res) - k)}" text-anchor="end" fill="{col}">{r["command"]}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
EOF
{
    echo "# Warm pool vs cold starts ($(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r))"
    echo
    echo "## start→exit of /bin/true, one hyperfine run ($runs runs each)"
    echo
    echo "| command | mean (ms) | pool / it |"
    echo "| --- | ---: | ---: |"
    echo "| tarn pool run | $(ms "$p") | 1.000 |"
    echo "| tarn run (cold) | $(ms "$t") | $(ratio "$p" "$t") |"
    echo "| crun | $(ms "$c") | $(ratio "$p" "$c") |"
    echo "| runc | $(ms "$r") | $(ratio "$p" "$r") |"
    echo "| fork+exec /bin/true | $(ms "$f") | $(ratio "$p" "$f") |"
    echo
    echo "Targets: pool ≤ 1/15 of crun (ratio ≤ 0.067), within 2× of fork+exec (ratio ≤ 2)."
    echo "Pool hits/misses during the latency run: $(jq -r '.pools[0] | "\(.hits)/\(.misses)"' <<<"$stats_after_latency")."
    echo "The \`tarn pool run\` time is the whole client: its own exec, connect, claim, the"
    echo "workload, and the exit report. The daemon's own claim latency (request → exec'd),"
    echo "over the rate run: p50 $claim_p50 ms, p99 $claim_p99 ms."
    echo
    echo "![latency CDF](pool-cdf.svg)"
    echo
    echo "## Sustained rate, 8 concurrent clients"
    echo
    echo "| | sandboxes/s |"
    echo "| --- | ---: |"
    echo "| tarn pool run ($total runs) | $pool_rate |"
    echo "| tarn run, cold ($cold_total runs) | $cold_rate |"
    echo
    echo "Target: ≥ 300/s. Pool status after the rate run:"
    echo
    echo '```'
    "$tarn" pool status --socket "$sock"
    echo '```'
    echo
    echo "## Idle cost"
    echo
    echo "PSS of a parked sandbox: $pss_each KiB (mean of $n; target ≤ 1024 KiB)."
    echo
    echo "One sandbox's setup phases (made ahead of its request, by a spawner):"
    echo
    echo '```'
    "$tarn" --debug pool run --socket "$sock" bench -- /bin/true 2>&1 | sed -n 's/.*claim/claim/p'
    grep -m1 -o 'ready: .*' "$work/daemon.log" || true
    echo '```'
} | tee "$here/results/pool.md"
