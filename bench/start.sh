#!/usr/bin/env bash
# Cold start of /bin/true: tarn vs runc vs crun vs a plain fork+exec, one hyperfine
# run, same bundle. Prints the ratios, the per-phase breakdown of one tarn start,
# and writes bench/results/start.md.
#
# --guest: then the same four side by side inside the pure cgroup v2 guest the tests
# boot (tests/guest/run.sh --systemd, QEMU TCG; bench/guest-start.sh runs there),
# where crun needs no wrapper; the guest's ratios go next to the host's. Under TCG
# absolute times mean nothing, only the ratios do. Takes a few minutes (boot, and
# GUEST_RUNS runs each, default 20).
#
#   bench/start.sh [--guest] [BUILD_DIR]    (default: build)
#
# RUNS: hyperfine runs on the host (default 100). SMOKE=1: 10 runs on the host and 3
# in the guest, and the results file says it is a smoke run.
set -euo pipefail
guest=0
if [ "${1:-}" = --guest ]; then guest=1; shift; fi
smoke=${SMOKE:-0}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
[ -x "$tarn" ] || { echo "no tarn at $tarn: build first" >&2; exit 1; }

. "$here/lib.sh"
ensure_packages runc crun hyperfine busybox-static jq

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
guest_runs=${GUEST_RUNS:-20}
if [ "$smoke" = 1 ]; then runs=${RUNS:-10}; guest_runs=${GUEST_RUNS:-3}; fi
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

phases=$("$tarn" --root "$work/tarn" --debug run --bundle "$work/bundle" bench-phases 2>&1 | sed -n 's/.*phases: //p')

guest_rows=""
guest_phases=""
guest_note=""
if [ $guest = 1 ]; then
    echo "start: booting the cgroup v2 guest (TCG) for the side-by-side run there" >&2
    rc=0
    TARN_GUEST_CMD="GUEST_RUNS=$guest_runs sh $top/bench/guest-start.sh /run/tarn-guest/tarn" \
        "$top/tests/guest/run.sh" --systemd "$build" >"$work/guest.log" 2>&1 || rc=$?
    # name|mean|stddev, one line each; markers may share a line with kernel messages.
    guest_rows=$(sed -n 's/.*TARN-BENCH-ROW //p' "$work/guest.log" | tr -d '\r')
    guest_phases=$(sed -n 's/.*TARN-BENCH-PHASES //p' "$work/guest.log" | tr -d '\r')
    if [ -z "$guest_rows" ]; then
        guest_note="The guest run failed (tests/guest/run.sh exit $rc); its last lines:"
        guest_note+=$'\n\n```\n'"$(tail -n 25 "$work/guest.log")"$'\n```'
    fi
fi
gmean() { awk -F'|' -v n="$1" '$1 == n { print $2 }' <<<"$guest_rows"; }

mkdir -p "$here/results"
{
    echo "# Cold start of /bin/true ($(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r), $runs runs each)"
    echo
    if [ "$smoke" = 1 ]; then
        echo "> **Smoke run** (SMOKE=1: $runs runs on the host, $guest_runs in the guest, on a machine shared with"
        echo "> builds and tests). These numbers only show that the benchmark works; they are not results."
        echo
    fi
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
    echo "$phases"
    echo '```'
    if [ $guest = 1 ]; then
        echo
        echo "## Inside a pure cgroup v2 guest (\`bash bench/start.sh --guest\`)"
        echo
        echo "The same four, one hyperfine run of $guest_runs each, inside the QEMU guest of the cgroup v2"
        echo "tests (\`tests/guest/run.sh --systemd\`: Debian's kernel, the host's / read-only as its root,"
        echo "systemd as pid 1, pure cgroup v2, TCG). There crun runs as it is, without the hybrid-host"
        echo "wrapper. TCG emulates every instruction, so absolute times are meaningless; compare the ratios."
        echo
        if [ -n "$guest_rows" ]; then
            gt=$(gmean tarn)
            echo "| runtime | guest mean (ms) | tarn / it, guest | tarn / it, host (above) |"
            echo "| --- | ---: | ---: | ---: |"
            echo "| tarn | $(ms "$gt") | 1.00 | 1.00 |"
            host_crun=$(ratio "$t" "$c")
            [ -n "$wrap_cost" ] && host_crun="$(ratio "$t" "$cadj") (wrapper subtracted; $(ratio "$t" "$c") with it)"
            echo "| crun | $(ms "$(gmean crun)") | $(ratio "$gt" "$(gmean crun)") | $host_crun |"
            echo "| runc | $(ms "$(gmean runc)") | $(ratio "$gt" "$(gmean runc)") | $(ratio "$t" "$r") |"
            echo "| fork+exec /bin/true | $(ms "$(gmean "fork+exec /bin/true")") | $(ratio "$gt" "$(gmean "fork+exec /bin/true")") | $(ratio "$t" "$f") |"
            echo
            echo "tarn setup phases of one start in the guest:"
            echo
            echo '```'
            echo "$guest_phases"
            echo '```'
        else
            echo "$guest_note"
        fi
    fi
} | tee "$here/results/start.md"
