#!/usr/bin/env bash
# Boots Debian 12's kernel under QEMU (TCG, microvm) with pure cgroup v2 and runs
# tests/guest/v2-tests.sh inside it against the real tarn binary.
#
#   tests/guest/run.sh [--systemd] BUILD_DIR
#
# --systemd: the guest's pid 1 is this host's systemd instead (the host's / is shared
# read-only as the guest's root, with tmpfs on /run, /tmp and /var), and the checks are
# tests/guest/systemd-tests.sh, run from a unit, against the systemd cgroup driver.
#
# BUILD_DIR holds the static tarn at BUILD_DIR/runtime/tarn. It and the source tree are
# shared into the guest read-only over virtio-9p, mounted at the same paths as here.
# Exits 0 only if the guest reports that every check passed.
#
# Environment:
#   TARN_GUEST_CACHE    kernel, modules and initramfs cache (default BUILD_DIR/guest-cache)
#   TARN_GUEST_TIMEOUT  hard limit for the whole guest run, seconds (default 600)
#   TARN_GUEST_CMD      a shell command to run in the guest instead of v2-tests.sh (for
#                       poking around: e.g. TARN_GUEST_CMD='ls /sys/fs/cgroup')
#   TARN_GUEST_SMP, TARN_GUEST_MEM   guest cpus (default 2) and memory in MiB (default 1024)
set -euo pipefail

suite=v2
if [ "${1:-}" = --systemd ]; then suite=systemd; shift; fi
[ $# -eq 1 ] || { echo "usage: $0 [--systemd] BUILD_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd)
cache=${TARN_GUEST_CACHE:-$build/guest-cache}
limit=${TARN_GUEST_TIMEOUT:-600}
smp=${TARN_GUEST_SMP:-2}
mem=${TARN_GUEST_MEM:-1024}

now() { echo "${EPOCHREALTIME/,/.}"; }
t_start=$(now)

[ -x "$build/runtime/tarn" ] || { echo "$0: no tarn binary at $build/runtime/tarn" >&2; exit 1; }
"$here/prepare.sh" "$cache" >/dev/null
kernel=$cache/vmlinux
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# --- initramfs ---------------------------------------------------------------------------
# Rebuilt on every run: it is small (busybox + a few modules, ~3 MB, left uncompressed so
# the TCG guest does not spend time inflating it) and carries this run's paths.
busybox=/bin/busybox
# A dynamic busybox names its loader (PT_INTERP); the one from busybox-static does not.
if LC_ALL=C grep -q '/lib64/ld-linux' "$busybox"; then
    echo "$0: $busybox is not a static busybox: apt-get install busybox-static" >&2; exit 1
fi
stage=$(mktemp -d "$cache/initramfs.XXXXXX")
fifo=""
qpid=""
cleanup() {
    if [ -n "$qpid" ]; then kill -KILL "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
    rm -rf "$stage"
    [ -n "$fifo" ] && rm -f "$fifo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,newroot,lib/modules,etc}
cp "$busybox" "$stage/bin/busybox"     # stage 1 makes the applet links
cp "$cache"/modules/*.ko "$cache/modules/order" "$stage/lib/modules/"
mknod -m 600 "$stage/dev/console" c 5 1
{
    printf 'SRC=%q\nBUILD=%q\n' "$src" "$build"
    printf 'GUEST_CMD=%q\n' "${TARN_GUEST_CMD:-}"
} > "$stage/etc/guest.conf"
if [ $suite = systemd ]; then
    [ -x /lib/systemd/systemd ] || { echo "$0: --systemd needs systemd installed here (/lib/systemd/systemd)" >&2; exit 1; }
    cp "$here/systemd-stage1.sh" "$stage/init"
    cp "$here/systemd-guest.sh" "$stage/guest.sh"
    chmod 755 "$stage/init" "$stage/guest.sh"
else

# Stage 1 moves everything onto a tmpfs and switch_roots into it: pivot_root(2) refuses
# to move the initial rootfs, so a runtime could not pivot_root in a guest left on it.
cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs -o mode=0755 tmpfs /newroot
cp -a /bin /sbin /usr /lib /etc /init2 /newroot/
mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp /newroot/run /newroot/root
mount --move /dev /newroot/dev
exec switch_root /newroot /init2
echo "guest: switch_root failed"
INIT
cat "$here/guest-init.sh" > "$stage/init2"
chmod 755 "$stage/init" "$stage/init2"
fi
initrd=$cache/initrd.cpio
[ $suite = systemd ] && initrd=$cache/initrd-systemd.cpio
(cd "$stage" && find . -mindepth 1 | cpio --quiet -o -H newc) > "$initrd.tmp"
mv "$initrd.tmp" "$initrd"

# --- boot --------------------------------------------------------------------------------
# The guest's TSC calibration is unreliable under TCG: without tsc_early_khz a microvm
# guest sometimes hangs at "Marking TSC unstable". Tell it the host's rate. microvm has no
# PCI bus (its virtio-mmio devices are found through ACPI, so ACPI stays on): pci=off.
khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo 2>/dev/null || true)
[ -n "$khz" ] || khz=$(lscpu 2>/dev/null | awk -F: '/MHz/ { printf "%d", $2 * 1000; exit }' || true)
append="console=ttyS0 panic=-1 quiet cryptomgr.notests tsc=reliable no_timer_check"
append+=" mitigations=off 8250.nr_uarts=1 random.trust_cpu=on pci=off"
[ -n "$khz" ] && [ "$khz" -gt 0 ] && append+=" tsc_early_khz=$khz"

# The systemd guest's root: this host's file system, read-only (multidevs=remap: it spans
# several file systems, whose inode numbers must not collide in the guest).
extra=()
[ $suite = systemd ] && extra=(-fsdev "local,id=fs2,path=/,security_model=none,readonly=on,multidevs=remap"
                              -device virtio-9p-device,fsdev=fs2,mount_tag=hostroot)

log=$cache/serial.log
[ $suite = systemd ] && log=$cache/serial-systemd.log
fifo=$(mktemp -u "$cache/serial.XXXXXX")
mkfifo "$fifo"
t_qemu=$(now)
qemu-system-x86_64 -accel tcg -M microvm -cpu qemu64 -smp "$smp" -m "$mem" \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$kernel" -initrd "$initrd" -append "$append" \
    -fsdev "local,id=fs0,path=$build,security_model=none,readonly=on" \
    -device virtio-9p-device,fsdev=fs0,mount_tag=host0 \
    -fsdev "local,id=fs1,path=$src,security_model=none,readonly=on" \
    -device virtio-9p-device,fsdev=fs1,mount_tag=host1 \
    "${extra[@]}" </dev/null >"$fifo" 2>&1 &
qpid=$!

# Read the console until QEMU exits or the deadline passes; note when the markers appear.
deadline=$(awk -v t="$t_qemu" -v l="$limit" 'BEGIN { printf "%.3f", t + l }')
t_booted="" t_tests="" t_result="" result="" timed_out=0
: > "$log"
exec 3<"$fifo"
while :; do
    left=$(awk -v d="$deadline" -v n="$(now)" 'BEGIN { l = d - n; printf "%.3f", (l > 0 ? l : 0) }')
    if [ "$left" = 0.000 ]; then timed_out=1; break; fi
    line=""
    if IFS= read -r -t "$left" line <&3; then :
    else
        rc=$?
        if [ $rc -gt 128 ]; then timed_out=1; break; fi   # read timed out
        [ -z "$line" ] && break                          # EOF: QEMU is gone
    fi
    line=${line%$'\r'}
    printf '%s\n' "$line" >> "$log"
    printf 'guest| %s\n' "$line"
    case "$line" in
        *TARN-GUEST-BOOTED*) t_booted=$(now) ;;
        *TARN-GUEST-TESTS-START*) t_tests=$(now) ;;
        *TARN-GUEST-RESULT:*)
            t_result=$(now)
            result=$(printf '%s\n' "$line" | sed -n 's/.*TARN-GUEST-RESULT: *\([0-9][0-9]* passed, [0-9][0-9]* failed\).*/\1/p')
            ;;
    esac
done
exec 3<&-
if [ $timed_out -eq 1 ]; then
    echo "guest: timed out after ${limit}s; killing QEMU" >&2
    kill -KILL "$qpid" 2>/dev/null || true
fi
qrc=0
wait "$qpid" 2>/dev/null || qrc=$?
qpid=""
t_end=$(now)

secs() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.1f", b - a }'; }
echo "guest: kernel $(cat "$cache/kernel-version"), $smp cpus, ${mem} MiB, TCG; console log: $log"
echo "guest: prepare+initramfs $(secs "$t_start" "$t_qemu") s, boot to init $(secs "$t_qemu" "$t_booted") s," \
     "setup $(secs "$t_booted" "$t_tests") s, tests $(secs "$t_tests" "$t_result") s," \
     "power-off $(secs "$t_result" "$t_end") s, QEMU total $(secs "$t_qemu" "$t_end") s"

if [ -z "$result" ]; then
    echo "guest: no TARN-GUEST-RESULT line (QEMU exit status $qrc)" >&2
    exit 1
fi
echo "guest result: $result"
passed=${result%% passed*}
failed=${result#*passed, }; failed=${failed%% failed*}
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
