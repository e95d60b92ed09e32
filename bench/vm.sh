#!/usr/bin/env bash
# VM isolation mode: create→exit of /bin/true in a microVM, RUNS times (default 5),
# with the breakdown tarn's debug log records for every run:
#   qemu start   QEMU's own start-up and the kernel's first steps (before its clock runs)
#   kernel boot  the guest kernel, up to tarn-agent's first instruction (CLOCK_BOOTTIME)
#   agent init   modules, tmpfs root, mounts, serial line: tarn-agent up to "ready"
#   create       the shared root (virtio-fs or 9p: SHARE=virtiofs|9p chooses, default
#                auto) and its mount, the guest cgroup and spawn_init
#   start        releasing the workload until its exec
#   workload     exec to the exit status on the host
# Prints the medians and writes bench/results/vm.md. KVM when /dev/kvm is usable,
# else TCG (this machine).
#
#   bench/vm.sh [BUILD_DIR]    (default: build; the kernel comes from BUILD_DIR/vm, or
#                               tests/vm/setup.sh puts it there)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build=$(cd "${1:-$top/build}" && pwd)
tarn=$build/runtime/tarn
runs=${RUNS:-5}
[ -x "$tarn" ] || { echo "no tarn at $tarn: build first" >&2; exit 1; }
if [ ! -s "$build/vm/initrd.cpio" ]; then
    "$top/tests/vm/setup.sh" "$tarn" "${TARN_GUEST_CACHE:-$build/guest-cache}" "$build/vm" >/dev/null
fi

work=$(mktemp -d /tmp/tarn-bench-vm-XXXXXX)
trap 'rm -rf "$work"' EXIT
sh "$top/bundles/busybox-bundle.sh" "$work/bundle" "$tarn" -- /bin/true >/dev/null
now() { echo "${EPOCHREALTIME/,/.}"; }
echo "{\"share\": \"${SHARE:-auto}\"}" > "$work/vm.json"

: > "$work/rows"
for i in $(seq 1 "$runs"); do
    log=$work/run$i.log
    t0=$(now)
    "$tarn" --root "$work/state" --debug --log "$log" --vm-config "$work/vm.json" --isolation vm \
        --vm-kernel "$build/vm/vmlinux" \
        --vm-initrd "$build/vm/initrd.cpio" run --bundle "$work/bundle" "bench-vm-$i" </dev/null
    t1=$(now)
    # "create ID: vm (tcg) qemu start 1.0 ms, kernel boot 2.0 ms, agent init ..., start 5.0 ms;
    #  virtiofs root, mounts 3.0 ms; ..."
    # "vm ID: workload 6.0 ms, exit code 0"
    awk -v total="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')" '
        /: vm \((tcg|kvm)\) qemu start/ {
            accel = $0; sub(/.*: vm \(/, "", accel); sub(/\).*/, "", accel)
            line = $0; sub(/.*qemu start /, "", line); split(line, f, / ms[,;]? ?[a-z ]*/)
            q = f[1]; k = f[2]; a = f[3]; c = f[4]; s = f[5]
            root = $0; sub(/ root, mounts.*/, "", root); sub(/.*; /, "", root)
        }
        /: workload [0-9.]+ ms/ { w = $0; sub(/.*: workload /, "", w); sub(/ ms.*/, "", w) }
        END { printf "%s %s %s %s %s %s %s %s %s\n", accel, q, k, a, c, s, w, total, root }' "$log" >> "$work/rows"
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$1" '{ print $c }' "$work/rows" | median; }
accel=$(awk 'NR == 1 { print $1 }' "$work/rows")
root=$(awk 'NR == 1 { print $9 }' "$work/rows")
q=$(col 2) k=$(col 3) a=$(col 4) c=$(col 5) s=$(col 6) w=$(col 7) total=$(col 8)
ready=$(awk -v q="$q" -v k="$k" -v a="$a" 'BEGIN { printf "%.1f", q + k + a }')
to_workload=$(awk -v r="$ready" -v c="$c" -v s="$s" 'BEGIN { printf "%.1f", r + c + s }')

report=$(cat <<EOF2
# VM isolation mode: create→exit of /bin/true

$(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r) host, accelerator **$accel**, kernel
$(cat "$build/vm/kernel-version" 2>/dev/null || echo "from $build/vm"), median of $runs runs of
\`tarn run --isolation vm\` (bench/vm.sh).

| phase | median ms |
| --- | ---: |
| QEMU start (+ the kernel's first steps) | $q |
| kernel boot (to tarn-agent) | $k |
| agent init (modules, mounts, serial) | $a |
| **boot to agent ready** | **$ready** |
| create ($root root, cgroup, spawn_init) | $c |
| start (release to exec) | $s |
| **boot to workload** | **$to_workload** |
| workload (exec to exit status) | $w |
| **tarn run, wall clock** | **$total** |

All runs (accel, qemu, kernel, agent, create, start, workload, total, root):

\`\`\`
$(cat "$work/rows")
\`\`\`
EOF2
)
printf '%s\n' "$report"
mkdir -p "$here/results"
# The nested-KVM section is measured by hand (tests/vm/kvm-nested.sh): kept as it is.
nested=""
[ -f "$here/results/vm.md" ] && nested=$(sed -n '/^## Nested KVM/,$p' "$here/results/vm.md")
{ printf '%s\n' "$report"; [ -n "$nested" ] && printf '\n%s\n' "$nested"; } > "$here/results/vm.md"
