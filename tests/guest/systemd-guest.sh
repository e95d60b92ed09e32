#!/bin/sh
# The systemd guest's test unit (tests/guest/systemd-stage1.sh installs it): runs
# systemd-tests.sh (or TARN_GUEST_CMD) against the build's tarn, prints the result marker
# line and powers the guest off at once.
. /run/tarn-guest/guest.conf   # SRC, BUILD, GUEST_CMD
export PATH=/run/tarn-guest:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

finish() {
    echo "TARN-GUEST-RESULT: $1"
    sync
    # --force twice: straight to reboot(2); there is nothing to shut down cleanly.
    systemctl poweroff --force --force
    sleep 5
    echo o > /proc/sysrq-trigger
}

echo "TARN-GUEST-TESTS-START uptime $(cut -d' ' -f1 /proc/uptime)"
# Run tarn from the tmpfs: one copy over 9p instead of page faults over it on every exec.
cp "$BUILD/runtime/tarn" /run/tarn-guest/tarn || finish "0 passed, 1 failed (cannot copy tarn)"
export TARN_SOURCE_DIR="$SRC"
if [ -n "$GUEST_CMD" ]; then
    sh -c "$GUEST_CMD" 2>&1
    rc=$?
    echo "guest command exited $rc"
    if [ $rc -eq 0 ]; then finish "1 passed, 0 failed (TARN_GUEST_CMD)"; fi
    finish "0 passed, 1 failed (TARN_GUEST_CMD exited $rc)"
fi
sh "$SRC/tests/guest/systemd-tests.sh" /run/tarn-guest/tarn 2>&1 | tee /run/tarn-guest/tests.out
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /run/tarn-guest/tests.out | tail -n 1)
[ -n "$summary" ] || summary="0 passed, 1 failed (systemd-tests.sh ended without its summary line)"
finish "$summary"
