#!/usr/bin/env bash
# The VM mode's KVM path, for real, on a host without /dev/kvm: an outer guest under TCG
# with `-cpu max` (QEMU emulates AMD SVM) loads kvm and kvm_amd and gets /dev/kvm; inside
# it, this build's tarn runs the busybox bundle with --isolation vm, picks KVM by its own
# detection, and the nested microVM boots Debian's kernel with tarn-agent under KVM.
#
#   tests/vm/kvm-nested.sh BUILD_DIR CACHE
#
# BUILD_DIR holds runtime/tarn and vm/{vmlinux,initrd.cpio} (tests/vm/setup.sh); CACHE is
# the guest kernel cache (tests/guest/prepare.sh) with modules/ and modules/kvm/.
#
# The outer guest needs QEMU, which is dynamically linked against a few dozen libraries
# and reads firmware from /usr/share/qemu. Rather than copy that set (and keep the copy
# in step with the host's packages), the host's root is shared read-only over virtio-9p
# and the outer guest chroots into it, with its own proc, sysfs, devtmpfs, cgroup2 and a
# tmpfs on /run for everything written (tarn's state, the bundle). The build and source
# trees are then at the same paths as here.
#
# Exit status: 0 passed, 1 failed, 77 skipped (no kvm modules in CACHE, no svm in the
# outer guest's CPU, kvm_amd refusing to load): the reason is printed as "skip: ...".
# The console log is kept at BUILD_DIR/kvm-nested.log.
#
# Environment: TARN_KVM_NESTED_TIMEOUT  hard limit for the outer guest, seconds (default 600)
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR CACHE" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd)
cache=$(cd "$2" && pwd)
limit=${TARN_KVM_NESTED_TIMEOUT:-600}
tarn=$build/runtime/tarn
vmdir=$build/vm
log=$build/kvm-nested.log

skip() { echo "skip: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ -x "$tarn" ] || fail "no tarn binary at $tarn"
[ -s "$vmdir/vmlinux" ] && [ -s "$vmdir/initrd.cpio" ] || fail "no $vmdir/{vmlinux,initrd.cpio} (tests/vm/setup.sh)"
[ -s "$cache/modules/kvm/order" ] ||
    skip "no kvm modules in $cache/modules/kvm (tests/guest/prepare.sh $cache adds them)"
grep -qx kvm_amd.ko "$cache/modules/kvm/order" ||
    skip "$cache/modules/kvm/order has no kvm_amd.ko (the kernel package lacks it)"
busybox=/bin/busybox
if LC_ALL=C grep -q '/lib64/ld-linux' "$busybox"; then
    fail "$busybox is not a static busybox: apt-get install busybox-static"
fi
command -v qemu-system-x86_64 >/dev/null || fail "no qemu-system-x86_64: apt-get install qemu-system-x86"

now() { echo "${EPOCHREALTIME/,/.}"; }

# What a run killed outright (no trap) left: one run per build directory at a time.
rm -rf "$build"/kvm-nested.??????{,.bundle,.cpio}
stage=$(mktemp -d "$build/kvm-nested.XXXXXX")
initrd=$stage.cpio
qpid=""
cleanup() {
    if [ -n "$qpid" ]; then kill -KILL "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
    rm -rf "$stage" "$stage.bundle" "$initrd"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- the outer guest's initramfs: busybox, virtio + 9p, the kvm set, two scripts ------------
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,host,lib/modules/kvm,etc}
cp "$busybox" "$stage/bin/busybox"
while read -r m; do
    [ "$m" = brd.ko ] || { cp "$cache/modules/$m" "$stage/lib/modules/"; echo "$m"; }
done < "$cache/modules/order" > "$stage/lib/modules/order"
cp "$cache"/modules/kvm/*.ko "$cache/modules/kvm/order" "$stage/lib/modules/kvm/"
mknod -m 600 "$stage/dev/console" c 5 1
printf 'TARN=%q\nVMDIR=%q\nBUNDLE=%q\n' "$tarn" "$vmdir" "$stage.bundle" > "$stage/etc/nested.conf"
# The bundle is made here, where a process start is cheap (the script runs ~400 of them,
# each a few hundred ms under TCG), and copied onto the outer guest's tmpfs in one go.
sh "$src/bundles/busybox-bundle.sh" "$stage.bundle" "$tarn" -- sh -c \
    'echo TARN-NESTED-WORKLOAD; cat /sys/devices/system/clocksource/clocksource0/available_clocksource; exit 7' \
    >/dev/null

# pid 1 of the outer guest. Every line the host looks for starts with "TARN-KVM-"; every
# path ends in a power-off (pid 1 exiting would panic the kernel).
cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
. /etc/nested.conf
end() { echo "TARN-KVM-END"; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }
skip() { echo "TARN-KVM-SKIP: $*"; end; }
fail() { echo "TARN-KVM-FAIL: $*"; end; }
echo "TARN-KVM-BOOTED uptime $(cut -d' ' -f1 /proc/uptime)"

grep -qw svm /proc/cpuinfo ||
    skip "the outer guest's CPU ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')) has no svm flag"
while read -r m; do insmod "/lib/modules/$m" || echo "outer: insmod $m failed"; done < /lib/modules/order
# kvm_amd in dependency order (modules.dep). If it refuses its defaults under the
# emulated SVM, try without nested paging, which is the feature TCG's SVM is most likely
# to lack; the parameters that worked are reported.
while read -r m; do
    [ "$m" = kvm_amd.ko ] && break
    insmod "/lib/modules/kvm/$m" || skip "insmod $m failed: $(dmesg | tail -n 3 | tr '\n' ' ')"
done < /lib/modules/kvm/order
params=""
if ! insmod /lib/modules/kvm/kvm_amd.ko 2>/dev/null; then
    params="npt=0"
    insmod /lib/modules/kvm/kvm_amd.ko $params ||
        skip "kvm_amd does not load, with its defaults or $params: $(dmesg | grep -i -e kvm -e svm | tail -n 3 | tr '\n' ' ')"
fi
[ -c /dev/kvm ] || skip "kvm_amd loaded but there is no /dev/kvm"
echo "TARN-KVM-MODULES: kvm_amd ${params:-(defaults)}, npt=$(cat /sys/module/kvm_amd/parameters/npt)"

n=0
until [ -e /sys/bus/virtio/drivers/9pnet_virtio/virtio0 ] || [ $n -ge 50 ]; do sleep 0.1; n=$((n + 1)); done
# cache=loose: the host's programs and libraries are paged in once, not read over 9p on
# every fault; nothing on this read-only share changes during the run.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=loose,ro hostroot /host ||
    fail "cannot mount the host's root over 9p"
mount -t proc proc /host/proc || fail "cannot mount proc in the chroot"
mount -t sysfs sysfs /host/sys || fail "cannot mount sysfs in the chroot"
mount -t cgroup2 -o nsdelegate cgroup2 /host/sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t devtmpfs devtmpfs /host/dev || fail "cannot mount devtmpfs in the chroot"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "cannot mount a tmpfs on /run"
cp /etc/nested.conf /nested.sh /host/run/
cp -a "/host$BUNDLE" /host/run/bundle || fail "cannot copy the bundle from $BUNDLE"
echo "TARN-KVM-CHROOT uptime $(cut -d' ' -f1 /proc/uptime)"
chroot /host /bin/sh /run/nested.sh
echo "TARN-KVM-DONE $?"
end
INIT

# Runs in the chroot (the host's own programs), with the tmpfs on /run as its scratch space.
cat > "$stage/nested.sh" <<'NESTED'
set -u
. /run/nested.conf
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/run HOME=/run
# The nested boot is slower than a plain TCG one: a longer wait for the agent.
echo '{"timeout_seconds": 300}' > /run/vm.json
echo "TARN-KVM-RUN uptime $(cut -d' ' -f1 /proc/uptime)"
t0=$(date +%s.%N)
"$TARN" --root /run/tarn --debug --log /run/tarn.log --vm-config /run/vm.json --isolation vm \
    --vm-kernel "$VMDIR/vmlinux" --vm-initrd "$VMDIR/initrd.cpio" \
    run --bundle /run/bundle nested </dev/null >/run/out 2>/run/err
rc=$?
t1=$(date +%s.%N)
echo "TARN-KVM-EXIT: $rc wall $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
sed 's/^/TARN-KVM-STDOUT: /' /run/out
sed 's/^/TARN-KVM-STDERR: /' /run/err
grep -e ': vm (' -e ': workload ' -e '/dev/kvm' /run/tarn.log | sed 's/^/TARN-KVM-LOG: /'
left=$(ps -eo args | grep -c '^[q]emu-system' || true)
echo "TARN-KVM-QEMU-LEFT: $left"
NESTED

chmod 755 "$stage/init"
(cd "$stage" && find . -mindepth 1 | cpio --quiet -o -H newc) > "$initrd"

# --- boot ---------------------------------------------------------------------------------
khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo 2>/dev/null || true)
append="console=ttyS0 panic=-1 quiet cryptomgr.notests tsc=reliable no_timer_check"
append+=" mitigations=off 8250.nr_uarts=1 random.trust_cpu=on pci=off"
[ -n "$khz" ] && [ "$khz" -gt 0 ] && append+=" tsc_early_khz=$khz"

t_qemu=$(now)
# 2 GiB: the nested VM's 256 MiB, QEMU's own, and the page cache of the 9p root.
# --pdeathsig: QEMU dies with this script even when it is killed outright (ctest's
# timeout), when no trap runs.
setpriv --pdeathsig KILL qemu-system-x86_64 -name tarn-kvm-nested -accel tcg -M microvm -cpu max -smp 2 -m 2048 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$cache/vmlinux" -initrd "$initrd" -append "$append" \
    -fsdev "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap" \
    -device virtio-9p-device,fsdev=fs0,mount_tag=hostroot \
    </dev/null >"$log" 2>&1 &
qpid=$!
deadline=$(awk -v t="$t_qemu" -v l="$limit" 'BEGIN { printf "%d", t + l }')
timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
    if grep -q 'TARN-KVM-END' "$log"; then
        # Power-off follows at once; do not wait on a guest that fails to.
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
        break
    fi
    if [ "${EPOCHSECONDS}" -ge "$deadline" ]; then timed_out=1; break; fi
    sleep 0.5
done
kill -KILL "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
qpid=""
t_end=$(now)
tr -d '\r' < "$log" > "$log.tmp" && mv "$log.tmp" "$log"
sed 's/^/guest| /' "$log"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "kvm-nested: outer guest (TCG, -cpu max) ran $(secs "$t_qemu" "$t_end") s; console log: $log"
[ $timed_out -eq 0 ] || fail "the outer guest did not finish within ${limit} s"
line() { grep -m1 "$1" "$log" | sed "s/.*$1 *//"; }
if grep -q 'TARN-KVM-SKIP:' "$log"; then skip "$(line 'TARN-KVM-SKIP:')"; fi
if grep -q 'TARN-KVM-FAIL:' "$log"; then fail "$(line 'TARN-KVM-FAIL:')"; fi
grep -q 'TARN-KVM-EXIT:' "$log" || fail "the outer guest did not get to run tarn"

failed=0
check() {   # WHAT CONDITION...
    local what=$1
    shift
    if "$@"; then echo "ok - $what"; else echo "FAIL - $what"; failed=1; fi
}
rc=$(line 'TARN-KVM-EXIT:' | cut -d' ' -f1)
check "tarn picked KVM by its detection (debug log: vm (kvm))" grep -q 'TARN-KVM-LOG: .*: vm (kvm)' "$log"
check "the workload's output reached stdout" grep -q 'TARN-KVM-STDOUT: TARN-NESTED-WORKLOAD' "$log"
check "the nested guest runs on KVM (kvm-clock is a clocksource)" grep -q 'TARN-KVM-STDOUT: .*kvm-clock' "$log"
check "the workload's exit code came back (7, got $rc)" [ "$rc" = 7 ]
check "no QEMU left in the outer guest" grep -q 'TARN-KVM-QEMU-LEFT: 0' "$log"
boot=$(grep -m1 'TARN-KVM-LOG: .*: vm (kvm) qemu start' "$log" |
    awk '{ line = $0; sub(/.*qemu start /, "", line); split(line, f, / ms[,;]? ?[a-z ]*/)
           printf "qemu start %s ms, kernel boot %s ms, agent init %s ms, create %s ms, start %s ms; boot to workload %.1f ms",
                  f[1], f[2], f[3], f[4], f[5], f[1] + f[2] + f[3] + f[4] + f[5] }')
echo "kvm-nested: nested KVM microVM: ${boot:-no timings in the debug log}; tarn run $(line 'TARN-KVM-EXIT:' | cut -d' ' -f3-)"
[ $failed -eq 0 ] || fail "see the checks above"
echo "kvm-nested: passed"
