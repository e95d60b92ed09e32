#!/bin/busybox sh
# Stage 1 of the systemd guest (run.sh --systemd puts it in the initramfs as /init):
# mounts the host's / (shared read-only over virtio-9p) as the new root, tmpfs on /run,
# /tmp and /var (systemd, tarn and the checks write there), the build and source trees at
# their host paths, places the test units under /run/systemd/system and hands over to
# the host's systemd as pid 1.
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "TARN-GUEST-BOOTED uptime $(cut -d' ' -f1 /proc/uptime)"
. /etc/guest.conf   # SRC, BUILD, GUEST_CMD: written by run.sh

fail() {
    echo "TARN-GUEST-RESULT: 0 passed, 1 failed ($1)"
    poweroff -f
    sleep 5
    echo o > /proc/sysrq-trigger
}

while read -r m; do
    [ "$m" = brd.ko ] && continue
    insmod "/lib/modules/$m" || echo "guest: insmod $m failed"
done < /lib/modules/order
n=0
until [ -e /sys/bus/virtio/drivers/9pnet_virtio/virtio2 ] || [ $n -ge 50 ]; do
    sleep 0.1; n=$((n + 1))
done

r=/newroot
opts=trans=virtio,version=9p2000.L,msize=262144
# cache=loose: the root is read-only and nothing changes it during the run; systemd
# reads a few hundred unit files and libraries at boot.
mount -t 9p -o "$opts,ro,cache=loose" hostroot $r || fail "cannot mount the host's / as the root"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $r/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $r/tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $r/var
mkdir -p $r/var/tmp $r/var/log $r/var/lib && chmod 1777 $r/var/tmp
mkdir -p "$r$BUILD"
mount -t 9p -o "$opts,ro" host0 "$r$BUILD" || fail "cannot mount the build dir"
mount -t 9p -o "$opts,ro" host1 "$r$SRC" || fail "cannot mount the source tree"

# The test: a oneshot service (no timeout) pulled in by the target systemd is told to
# reach; no default dependencies, so nothing else of the host's unit set starts.
mkdir -p $r/run/systemd/system $r/run/tarn-guest
cp /etc/guest.conf /guest.sh $r/run/tarn-guest/
cat > $r/run/systemd/system/tarn-test.target <<UNIT
[Unit]
Description=tarn systemd driver checks
DefaultDependencies=no
Requires=tarn-test.service
After=tarn-test.service
UNIT
cat > $r/run/systemd/system/tarn-test.service <<UNIT
[Unit]
Description=tarn systemd driver checks
DefaultDependencies=no
[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh /run/tarn-guest/guest.sh
UNIT

# The bus check starts dbus.service, the rootless check a user's user@UID.service (and
# user-runtime-dir@UID.service for /run/user/UID): only these, not the host's
# sysinit.target (whose tmpfiles would clean /tmp under the running checks).
for u in dbus.service dbus.socket user@.service user-runtime-dir@.service; do
    mkdir -p $r/run/systemd/system/$u.d
    printf '[Unit]\nDefaultDependencies=no\n' > $r/run/systemd/system/$u.d/tarn-test.conf
done

umount /sys /proc
mount --move /dev $r/dev
exec switch_root $r /lib/systemd/systemd --unit=tarn-test.target --log-level=warning --log-target=console \
    --show-status=0
fail "switch_root to systemd failed"
