#!/usr/bin/env bash
# Cold start of /bin/true: tarn vs runc vs crun vs a plain fork+exec, one hyperfine
# run, same bundle. Prints the ratios, the per-phase breakdown of one tarn start,
# and writes bench/results/start.md.
#
#   bench/start.sh [BUILD_DIR]    (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
[ -x "$tarn" ] || { echo "no tarn at $tarn: build first" >&2; exit 1; }

need=()
for p in runc crun hyperfine busybox-static jq; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/tarn-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
sh "$top/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
cd "$work/bundle"
# Debian 12's crun knows runtime-spec versions up to 1.1: declare one all three accept.
sed -i 's/"ociVersion": "[^"]*"/"ociVersion": "1.0.2"/' config.json

# crun refuses hybrid cgroup hosts; on those it runs in a private mount namespace
# with the cgroup2 mount removed. The wrapper's own cost is measured separately.
crun_cmd="crun --root $work/crun run --bundle $work/bundle bench-crun"
wrap_cost=""
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && mountpoint -q /sys/fs/cgroup/unified; then
    crun_cmd="unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun \"\$@\"' sh --root $work/crun run --bundle $work/bundle bench-crun"
    wrap_cost="unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec true'"
fi

runs=${RUNS:-100}
cmds=(
    -n "tarn"  "$tarn --root $work/tarn run --bundle $work/bundle bench-tarn"
    -n "crun"  "$crun_cmd"
    -n "runc"  "runc --root $work/runc run --bundle $work/bundle bench-runc"
    -n "fork+exec /bin/true" "$work/bundle/rootfs/bin/true"
)
[ -n "$wrap_cost" ] && cmds+=(-n "crun hybrid-host wrapper alone" "$wrap_cost")
hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/start.json" "${cmds[@]}" >/dev/null

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$work/start.json"; }
t=$(mean tarn); c=$(mean crun); r=$(mean runc); f=$(mean "fork+exec /bin/true")
w=0; [ -n "$wrap_cost" ] && w=$(mean "crun hybrid-host wrapper alone")
ms() { awk -v v="$1" 'BEGIN { printf "%.2f", v * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cadj=$(awk -v c="$c" -v w="$w" 'BEGIN { print c - w }')

mkdir -p "$here/results"
{
    echo "# Cold start of /bin/true ($(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r), $runs runs each)"
    echo
    echo "| runtime | mean (ms) | tarn / it |"
    echo "| --- | ---: | ---: |"
    echo "| tarn | $(ms "$t") | 1.00 |"
    echo "| crun | $(ms "$c") | $(ratio "$t" "$c") |"
    [ -n "$wrap_cost" ] && echo "| crun without its hybrid-host wrapper | $(ms "$cadj") | $(ratio "$t" "$cadj") |"
    echo "| runc | $(ms "$r") | $(ratio "$t" "$r") |"
    echo "| fork+exec /bin/true | $(ms "$f") | $(ratio "$t" "$f") |"
    echo
    echo "tarn setup phases of one start (\`tarn --debug run\`):"
    echo
    echo '```'
    "$tarn" --root "$work/tarn" --debug run --bundle "$work/bundle" bench-phases 2>&1 | sed -n 's/.*phases: //p'
    echo '```'
} | tee "$here/results/start.md"
