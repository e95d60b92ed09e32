#!/usr/bin/env bash
# The warm pool against cold starts, on /bin/true with one busybox bundle:
#
#   1. latency, one hyperfine run: `tarn pool run` (a sandbox from the pool) vs
#      `tarn run` (cold) vs crun vs runc vs a plain fork+exec of /bin/true;
#   2. sustained rate: 8 concurrent clients starting and finishing sandboxes;
#   3. idle cost: PSS of a parked sandbox.
#
# Both 1 and 2 are run twice: through `tarn pool run` (a CLI process per request) and
# through the C++ client library (tarn-pool-bench: one process making the requests,
# as a platform would), and the CPU each part costs per sandbox is measured with
# cgroup CPU accounting (daemon and spawners, sandboxes, clients).
#
# Writes bench/results/pool.md and bench/results/pool-cdf.svg (latency CDF).
#
#   bench/pool.sh [BUILD_DIR]    (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
lib_bench=$build/bench/tarn-pool-bench
[ -x "$tarn" ] && [ -x "$lib_bench" ] || { echo "no tarn or tarn-pool-bench in $build: build first" >&2; exit 1; }

. "$here/lib.sh"
ensure_packages runc crun hyperfine busybox-static jq python3

work=$(mktemp -d /tmp/tarn-bench-pool-XXXXXX)
sock=$work/pool.sock
# CPU accounting: the daemon (and its spawners) and the clients each get a cgroup;
# the sandboxes are all under the pool's parent.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    acct_dir() { echo "/sys/fs/cgroup/$1"; }
    cpu_us() { awk '/^usage_usec/ { print $2 }' "$(acct_dir "$1")/cpu.stat"; }
else
    acct_dir() { echo "/sys/fs/cgroup/cpuacct/$1"; }
    cpu_us() { echo $(($(cat "$(acct_dir "$1")/cpuacct.usage") / 1000)); }
fi
mkdir -p "$(acct_dir tarn-bench-daemon)" "$(acct_dir tarn-bench-clients)"
in_acct() { local g=$1; shift; (echo "$BASHPID" >"$(acct_dir "$g")/cgroup.procs" && exec "$@"); }
cleanup() {
    "$tarn" pool stop --now --socket "$sock" 2>/dev/null || true
    rmdir "$(acct_dir tarn-bench-daemon)" "$(acct_dir tarn-bench-clients)" 2>/dev/null || true
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
in_acct tarn-bench-daemon "$tarn" --debug pool serve --config "$work/pool.json" >"$work/daemon.log" 2>&1 &
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
# The same through the client library, with a posix_spawn+waitpid of the same
# busybox binary from the same process as the baseline.
wait_idle
"$lib_bench" --socket "$sock" --pool bench --runs "$runs" --pause-ms 30 \
    --host-cmd "$work/bundle/rootfs/bin/true" -- /bin/true >"$work/lib-lat.json"

# --- 2. sustained rate ------------------------------------------------------------
total=${RATE_RUNS:-600}
# CPU per sandbox of each part over a run: "daemon sandboxes clients" in µs.
cpu_split() {
    local d=$(cpu_us tarn-bench-daemon) s=$(cpu_us tarn-bench-pool) c=$(cpu_us tarn-bench-clients)
    "$@"
    sleep 1  # the refill after the last claim belongs to the run
    awk -v n="$total" -v d="$d" -v s="$s" -v c="$c" -v d1="$(cpu_us tarn-bench-daemon)" \
        -v s1="$(cpu_us tarn-bench-pool)" -v c1="$(cpu_us tarn-bench-clients)" \
        'BEGIN { printf "%.2f %.2f %.2f", (d1 - d) / n / 1000, (s1 - s) / n / 1000, (c1 - c) / n / 1000 }'
}
cli_rate_run() {
    local start end
    start=$(date +%s.%N)
    seq "$total" | in_acct tarn-bench-clients xargs -P 8 -I{} "$tarn" pool run --wait 60000 --socket "$sock" bench -- /bin/true
    end=$(date +%s.%N)
    awk -v n="$total" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }' >"$work/cli-rate"
}
lib_rate_run() {
    in_acct tarn-bench-clients "$lib_bench" --socket "$sock" --pool bench --runs "$total" --clients 8 -- /bin/true \
        >"$work/lib-rate.json"
}
wait_idle
cli_cpu=$(cpu_split cli_rate_run)
pool_rate=$(cat "$work/cli-rate")
stats_after_cli_rate=$("$tarn" pool status --json --socket "$sock")
wait_idle
lib_cpu=$(cpu_split lib_rate_run)
lib_rate=$(jq '.ratePerSec | round' "$work/lib-rate.json")
cold_total=$((total / 4))
start=$(date +%s.%N)
seq "$cold_total" | xargs -P 8 -I{} "$tarn" --root "$work/tarn-rate" run --bundle "$work/bundle" cold-{}
end=$(date +%s.%N)
cold_rate=$(awk -v n="$cold_total" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')

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
claim_p50=$(jq '.pools[0].claimLatencyMs.p50' <<<"$stats_after_cli_rate")
claim_p99=$(jq '.pools[0].claimLatencyMs.p99' <<<"$stats_after_cli_rate")
lib_mean=$(jq '.latencyMs.mean' "$work/lib-lat.json"); lib_fe=$(jq '.forkExecMs.mean' "$work/lib-lat.json")
lib_claim=$(jq '.claimMs.p50' "$work/lib-lat.json")
lib_rate_claim_p50=$(jq '.claimMs.p50' "$work/lib-rate.json")
plain() { awk -v v="$1" 'BEGIN { printf "%.2f", v }'; }
cpu_row() { read -r d s c <<<"$2"; echo "| $1 | $d | $s | $c | $(awk -v d="$d" -v s="$s" -v c="$c" 'BEGIN { printf "%.2f", d + s + c }') |"; }
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
    echo
    echo "Through the client library (\`tarn-pool-bench\`, $runs sequential requests from one"
    echo "process, 30 ms apart), against a posix_spawn+waitpid of the same busybox \`true\` from"
    echo "the same process:"
    echo
    echo "| | mean (ms) | ratio |"
    echo "| --- | ---: | ---: |"
    echo "| pool, client library (request → exit report) | $(plain "$lib_mean") | 1.000 |"
    echo "| fork+exec, same process | $(plain "$lib_fe") | $(ratio "$lib_mean" "$lib_fe") |"
    echo "| crun (hyperfine, above) | $(ms "$c") | $(ratio "$lib_mean" "$(awk -v c="$c" 'BEGIN { print c * 1000 }')") |"
    echo
    echo "The daemon's claim latency (request → workload exec'd) in that run: p50 $(plain "$lib_claim") ms."
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
    echo "| tarn pool run, a CLI process per request ($total runs) | $pool_rate |"
    echo "| client library, 8 threads of one process ($total runs) | $lib_rate |"
    echo "| tarn run, cold ($cold_total runs) | $cold_rate |"
    echo
    echo "Target: ≥ 300/s. Claim latency p50 in the library run (queueing included): $(plain "$lib_rate_claim_p50") ms."
    echo
    echo "CPU per sandbox (ms), from cgroup CPU accounting over each rate run: the daemon"
    echo "and its spawners (cloning, cgroups, teardown), the sandboxes (setup inside the"
    echo "new namespaces, the claim, the workload's exec and exit) and the clients. Kernel"
    echo "work done in kernel threads (network namespace cleanup) is not in any of them."
    echo
    echo "| run | daemon+spawners | sandboxes | clients | total |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    cpu_row "tarn pool run" "$cli_cpu"
    cpu_row "client library" "$lib_cpu"
    echo
    echo "Pool status after the rate runs:"
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
