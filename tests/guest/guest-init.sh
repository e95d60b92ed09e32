#!/bin/sh
# pid 1 of the cgroup v2 test guest (run.sh puts it in the initramfs as /init2, after
# stage 1 has moved the root onto a tmpfs). Mounts the basics and the host's shares, runs
# v2-tests.sh, reports the result as a marker line on the console and powers off.
# Exiting would panic the kernel, so every path ends in poweroff.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source=/dev/null
. /etc/guest.conf   # SRC, BUILD, GUEST_CMD: written by run.sh

finish() {
    echo "TARN-GUEST-RESULT: $1"
    sync
    poweroff -f
    sleep 5
    echo o > /proc/sysrq-trigger
}

mount -t proc -o nosuid,nodev,noexec proc /proc
echo "TARN-GUEST-BOOTED uptime $(cut -d' ' -f1 /proc/uptime)"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# What a systemd host has: the unified hierarchy alone, with nsdelegate. The root's
# cgroup.subtree_control is left empty: enabling controllers down to a container's cgroup
# is the runtime's job, and the tests check that it does.
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup ||
    finish "0 passed, 1 failed (cannot mount cgroup2)"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
hostname tarn-guest

# Load the modules in dependency order; brd is left to the test that needs a block
# device (it takes parameters).
while read -r m; do
    [ "$m" = brd.ko ] && continue
    insmod "/lib/modules/$m" || echo "guest: insmod $m failed"
done < /lib/modules/order

# virtio_mmio finds microvm's transports through ACPI; the 9p devices on them may show up
# a moment after the modules load.
n=0
until [ -e /sys/bus/virtio/drivers/9pnet_virtio/virtio1 ] || [ $n -ge 50 ]; do
    sleep 0.1; n=$((n + 1))
done
if ! [ -e /sys/bus/virtio/drivers/9pnet_virtio/virtio1 ]; then
    echo "guest: the 9p devices did not appear; virtio devices:"
    ls -l /sys/bus/virtio/devices/ /sys/bus/platform/devices/ 2>&1
    cat /proc/cmdline
fi

mkdir -p "$BUILD" "$SRC"
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro" host0 "$BUILD" || finish "0 passed, 1 failed (cannot mount the build dir)"
mount -t 9p -o "$opts,ro" host1 "$SRC" || finish "0 passed, 1 failed (cannot mount the source tree)"

# Run tarn from the guest's tmpfs: one copy over 9p instead of page faults over it on
# every exec.
mkdir -p /usr/local/bin
cp "$BUILD/runtime/tarn" /usr/local/bin/tarn || finish "0 passed, 1 failed (cannot copy tarn)"

export TARN_GUEST_MODULES=/lib/modules TARN_SOURCE_DIR="$SRC"
echo "TARN-GUEST-TESTS-START uptime $(cut -d' ' -f1 /proc/uptime)"
if [ -n "$GUEST_CMD" ]; then
    sh -c "$GUEST_CMD" 2>&1
    rc=$?
    echo "guest command exited $rc"
    if [ $rc -eq 0 ]; then finish "1 passed, 0 failed (TARN_GUEST_CMD)"; fi
    finish "0 passed, 1 failed (TARN_GUEST_CMD exited $rc)"
fi
# The summary line the test script prints last is what the host reads: keep a copy.
sh "$SRC/tests/guest/v2-tests.sh" /usr/local/bin/tarn 2>&1 | tee /tmp/v2-tests.out
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/v2-tests.out | tail -n 1)
echo "guest: tests done at uptime $(cut -d' ' -f1 /proc/uptime)"
[ -n "$summary" ] || summary="0 passed, 1 failed (v2-tests.sh ended without its summary line)"
finish "$summary"
