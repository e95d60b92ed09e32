#!/bin/sh
# The cold-start comparison of bench/start.sh, run inside the pure cgroup v2 guest
# (tests/guest/run.sh --systemd: the host's / read-only as the guest's root, so the
# host's crun, runc, hyperfine and busybox are there; crun runs unwrapped, since the
# guest has no hybrid cgroup mount for it to refuse). bench/start.sh --guest boots
# the guest with this script as TARN_GUEST_CMD and reads its marker lines off the
# serial console:
#
#   TARN-BENCH-ROW NAME|MEAN_S|STDDEV_S
#   TARN-BENCH-PHASES clone=... total=...
#
#   bench/guest-start.sh TARN    (GUEST_RUNS hyperfine runs each, default 20)
set -eu
tarn=$1
runs=${GUEST_RUNS:-20}
src=$(cd "$(dirname "$0")/.." && pwd)
for b in crun runc hyperfine jq; do
    command -v "$b" >/dev/null || { echo "guest-start: no $b in the guest (install it on the host)"; exit 1; }
done
work=$(mktemp -d /tmp/tarn-guest-bench-XXXXXX)
sh "$src/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
# Debian 12's crun knows runtime-spec versions up to 1.1: declare one all three accept.
sed -i 's/"ociVersion": "[^"]*"/"ociVersion": "1.0.2"/' "$work/bundle/config.json"
echo "guest-start: cgroup $(stat -fc %T /sys/fs/cgroup), $(nproc) cpus, $runs runs each"
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/start.json" \
    -n tarn "$tarn --root $work/tarn run --bundle $work/bundle bench-tarn" \
    -n crun "crun --root $work/crun run --bundle $work/bundle bench-crun" \
    -n runc "runc --root $work/runc run --bundle $work/bundle bench-runc" \
    -n "fork+exec /bin/true" "$work/bundle/rootfs/bin/true" >/dev/null
jq -r '.results[] | "TARN-BENCH-ROW \(.command)|\(.mean)|\(.stddev)"' "$work/start.json"
echo "TARN-BENCH-PHASES $("$tarn" --root "$work/tarn" --debug run --bundle "$work/bundle" bench-phases 2>&1 |
    sed -n 's/.*phases: //p')"
rm -rf "$work"
