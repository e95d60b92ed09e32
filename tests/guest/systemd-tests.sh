#!/bin/sh
# Checks of tarn's systemd cgroup driver against a real systemd: run by run.sh --systemd
# inside a guest whose pid 1 is systemd, or by hand as root on any host where systemd runs
# with pure cgroup v2:
#
#   sh tests/guest/systemd-tests.sh [TARN]
#
# Prints one `ok - ...` / `FAIL - ...` line per check (a FAIL is followed by `#` lines
# saying what was seen) and ends with `N passed, M failed`. Containers are units named
# tarn-st-*.scope (and box-st-*.scope in tarn-test.slice); state lives under
# /run/tarn-systemd-test.
set -u

TARN=${1:-tarn}
command -v "$TARN" >/dev/null 2>&1 || { echo "systemd-tests: no tarn at $TARN"; echo "0 passed, 1 failed"; exit 1; }
TARN=$(command -v "$TARN")
SRC=${TARN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
ROOT=/run/tarn-systemd-test
CG=/sys/fs/cgroup
W=${TMPDIR:-/tmp}/tarn-systemd-tests
MIB=1048576

passed=0 failed=0
notes=""
note() { notes="$notes$*
"; }
verdict() { # verdict RESULT(0=pass) DESCRIPTION
    if [ "$1" -eq 0 ]; then
        passed=$((passed + 1)); echo "ok - $2 [$(cut -d' ' -f1 /proc/uptime)]"
    else
        failed=$((failed + 1)); echo "FAIL - $2 [$(cut -d' ' -f1 /proc/uptime)]"
        printf '%s' "$notes" | sed -e '/^$/d' -e 's/^/    # /' | head -n 20
    fi
    notes=""
}
show() {
    if [ -e "$1" ]; then note "$1: $(tr '\n' ' ' < "$1" | cut -c1-300)"; else note "$1: missing"; fi
}
t() { timeout 60 "$TARN" --root "$ROOT" --systemd-cgroup "$@"; }
prop() { systemctl show -p "$2" --value "$1" 2>/dev/null; }
active() { systemctl is-active "$1" 2>/dev/null; }

# bundle ID CGROUPS_PATH RESOURCES_JSON ARGS_JSON [NAMESPACES_JSON]
bundle() {
    mkdir -p "$W/$1"
    ns=${5:-}
    [ -n "$ns" ] || ns='[ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" } ]'
    cat > "$W/$1/config.json" <<EOF
{
  "ociVersion": "1.2.0",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [ $4 ],
    "env": [ "PATH=/usr/sbin:/usr/bin:/sbin:/bin" ],
    "cwd": "/",
    "noNewPrivileges": true
  },
  "root": { "path": "$W/base/rootfs", "readonly": true },
  "hostname": "$1",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": [ "nosuid", "mode=755" ] }
  ],
  "linux": {
    "cgroupsPath": "$2",
    "resources": $3,
    "namespaces": $ns
  }
}
EOF
}
# start ID: create + start in the background; output in $W/ID.out, pid in $W/ID.pid.
start() {
    if ! t create --bundle "$W/$1" --pid-file "$W/$1.pid" "$1" > "$W/$1.out" 2>&1 < /dev/null; then
        note "tarn create $1 failed: $(tail -n 3 "$W/$1.out" | tr '\n' ' ')"
        return 1
    fi
    t start "$1" > "$W/$1.start" 2>&1 || { note "tarn start $1: $(cat "$W/$1.start")"; return 1; }
}
ready() {
    n=0
    while ! grep -q READY "$W/$1.out" 2>/dev/null; do
        n=$((n + 1)); [ $n -ge 300 ] && { note "$1 never printed READY: $(tail -n 3 "$W/$1.out")"; return 1; }
        sleep 0.1
    done
}
status_of() { t state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
cleanup() {
    for d in "$ROOT"/*; do
        [ -e "$d" ] && t delete --force "${d##*/}" > /dev/null 2>&1
    done
    rm -rf "${ROOT:?}"/* 2>/dev/null
}

echo "# tarn: $TARN ($("$TARN" --version 2>&1 | head -n 1))"
echo "# systemd: $(systemctl --version | head -n 1), pid 1: $(cat /proc/1/comm)"

# --- systemd is there --------------------------------------------------------------------
features=$("$TARN" features 2>&1)
note "pid 1: $(cat /proc/1/comm); $(echo "$features" | grep -A6 '"cgroup"' | tr -s ' \n' ' ')"
[ "$(cat /proc/1/comm)" = systemd ] && echo "$features" | grep -q '"systemd": true'
verdict $? "systemd is pid 1 and tarn features reports linux.cgroup.systemd true"

rm -rf "$W" "$ROOT"
mkdir -p "$W" "$ROOT"
# A rootfs of busybox and the few applets the checks use: bundles/busybox-bundle.sh links
# all ~400, one exec of the host's ln each, which takes minutes over 9p under TCG.
rootfs=$W/base/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys" "$rootfs/tmp"
if ! cp /bin/busybox "$rootfs/bin/busybox"; then
    verdict 1 "a busybox rootfs (/bin/busybox from busybox-static)"
    echo "$passed passed, $failed failed"
    exit 1
fi
for a in sh cat sleep echo true grep head tr cut id; do ln -s busybox "$rootfs/bin/$a"; done
s=$W/base/rootfs/t
mkdir -p "$s"
cat > "$s/cgroup.sh" <<'EOF'
echo "self: $(cat /proc/self/cgroup)"
echo READY
exec sleep 600
EOF

# Command substitution makes sh hold the whole 64 MiB.
cat > "$s/hog.sh" <<'EOF'
x=$(head -c 64m /dev/zero | tr '\0' a)
echo "survived ${#x}"
EOF

# --- the default path: system.slice:tarn:<id> ----------------------------------------------
# No cgroup namespace, so the container sees its own cgroup's full path.
nons='[ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" } ]'
bundle st-a "" '{ "memory": { "limit": 67108864 }, "pids": { "limit": 32 }, "cpu": { "quota": 20000, "period": 100000, "shares": 2048 } }' \
    '"sh", "/t/cgroup.sh"' "$nons"
dir=$CG/system.slice/tarn-st-a.scope
if start st-a && ready st-a; then
    show "$W/st-a.out"; show "$dir/memory.max"; show "$dir/pids.max"; show "$dir/cpu.max"; show "$dir/cpu.weight"
    pid=$(cat "$W/st-a.pid")
    grep -q "self: 0::/system.slice/tarn-st-a.scope" "$W/st-a.out" &&
        grep -qx "0::/system.slice/tarn-st-a.scope" "/proc/$pid/cgroup"
    verdict $? "empty cgroupsPath: the init runs in system.slice/tarn-<id>.scope (seen inside and from /proc/<pid>/cgroup)"

    note "ActiveState $(active tarn-st-a.scope), Delegate $(prop tarn-st-a.scope Delegate)," \
        "ControlGroup $(prop tarn-st-a.scope ControlGroup)"
    systemctl status --no-pager tarn-st-a.scope > "$W/status.txt" 2>&1
    note "systemctl status: $(head -n 12 "$W/status.txt" | tr -s ' \n' ' ')"
    [ "$(active tarn-st-a.scope)" = active ] && [ "$(prop tarn-st-a.scope Delegate)" = yes ] &&
        [ "$(prop tarn-st-a.scope ControlGroup)" = /system.slice/tarn-st-a.scope ] &&
        grep -q "tarn container st-a" "$W/status.txt" && grep -q "$pid" "$W/status.txt"
    verdict $? "systemctl status shows the scope active, delegated, with the init in it"

    note "MemoryMax $(prop tarn-st-a.scope MemoryMax) TasksMax $(prop tarn-st-a.scope TasksMax)" \
        "CPUQuotaPerSecUSec $(prop tarn-st-a.scope CPUQuotaPerSecUSec) CPUWeight $(prop tarn-st-a.scope CPUWeight)"
    [ "$(cat "$dir/memory.max")" = $((64 * MIB)) ] && [ "$(cat "$dir/pids.max")" = 32 ] &&
        [ "$(cat "$dir/cpu.max")" = "20000 100000" ] && [ "$(cat "$dir/cpu.weight")" = 174 ]
    verdict $? "memory.max, pids.max, cpu.max and cpu.weight are in the scope's cgroup"
    [ "$(prop tarn-st-a.scope MemoryMax)" = $((64 * MIB)) ] && [ "$(prop tarn-st-a.scope TasksMax)" = 32 ] &&
        [ "$(prop tarn-st-a.scope CPUQuotaPerSecUSec)" = 200ms ] && [ "$(prop tarn-st-a.scope CPUWeight)" = 174 ]
    verdict $? "systemd's unit has the same limits as properties (MemoryMax, TasksMax, CPUQuotaPerSecUSec, CPUWeight)"

    # A daemon-reload re-applies unit properties to the cgroup: the limits must survive it.
    systemctl daemon-reload
    show "$dir/memory.max"; show "$dir/pids.max"
    [ "$(cat "$dir/memory.max")" = $((64 * MIB)) ] && [ "$(cat "$dir/pids.max")" = 32 ]
    verdict $? "the limits survive systemctl daemon-reload"

    t update --memory $((96 * MIB)) --pids-limit 48 st-a > "$W/update.out" 2>&1
    note "update: $(cat "$W/update.out")"; show "$dir/memory.max"; show "$dir/pids.max"
    note "MemoryMax $(prop tarn-st-a.scope MemoryMax) TasksMax $(prop tarn-st-a.scope TasksMax)"
    [ "$(cat "$dir/memory.max")" = $((96 * MIB)) ] && [ "$(cat "$dir/pids.max")" = 48 ] &&
        [ "$(prop tarn-st-a.scope MemoryMax)" = $((96 * MIB)) ] && [ "$(prop tarn-st-a.scope TasksMax)" = 48 ]
    verdict $? "update sets the unit's properties and the cgroup files"

    t exec st-a cat /proc/self/cgroup > "$W/exec.out" 2>&1
    show "$W/exec.out"
    grep -qx "0::/system.slice/tarn-st-a.scope" "$W/exec.out"
    verdict $? "exec joins the scope's cgroup"

    t pause st-a && st1=$(status_of st-a) && t resume st-a && st2=$(status_of st-a)
    note "after pause: ${st1:-?}, after resume: ${st2:-?}"
    [ "${st1:-}" = paused ] && [ "${st2:-}" = running ]
    verdict $? "pause and resume work on the unit's cgroup"

    t delete --force st-a > "$W/delete.out" 2>&1
    note "delete: $(cat "$W/delete.out")"
    n=0
    while [ -e "$dir" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    systemctl status tarn-st-a.scope > /dev/null 2>&1
    src=$?
    note "systemctl status exit $src (4: no such unit); $dir exists: $([ -e "$dir" ] && echo yes || echo no)"
    [ $src -eq 4 ] && [ ! -e "$dir" ] && [ ! -e "$ROOT/st-a" ]
    verdict $? "delete --force stops the scope: systemd no longer knows it, its cgroup and state are gone"
else
    verdict 1 "empty cgroupsPath: the container starts"
fi
cleanup

# --- slice:prefix:name with a dashed slice ----------------------------------------------
bundle st-b "tarn-test.slice:box:st-b" '{ "memory": { "limit": 33554432 } }' '"sh", "/t/cgroup.sh"'
dir=$CG/tarn.slice/tarn-test.slice/box-st-b.scope
if start st-b && ready st-b; then
    note "ControlGroup $(prop box-st-b.scope ControlGroup); slice $(prop box-st-b.scope Slice)"; show "$dir/memory.max"
    grep -q "self: 0::/$" "$W/st-b.out" && [ "$(prop box-st-b.scope Slice)" = tarn-test.slice ] &&
        [ "$(cat "$dir/memory.max")" = $((32 * MIB)) ] && [ "$(active tarn-test.slice)" = active ]
    verdict $? "tarn-test.slice:box:<id> is box-<id>.scope in /tarn.slice/tarn-test.slice (cgroup namespace: 0::/ inside)"

    # A second container asking for the same unit fails, and leaves the first alone.
    bundle st-b2 "tarn-test.slice:box:st-b" '{}' '"sh", "/t/cgroup.sh"'
    t create --bundle "$W/st-b2" st-b2 > "$W/st-b2.out" 2>&1
    rc=$?
    note "create exit $rc: $(cat "$W/st-b2.out")"
    [ $rc -ne 0 ] && grep -q "box-st-b.scope" "$W/st-b2.out" && [ ! -e "$ROOT/st-b2" ] &&
        [ "$(active box-st-b.scope)" = active ] && [ "$(status_of st-b)" = running ]
    verdict $? "a create whose unit exists already fails naming it, leaves no state, and the first container runs on"

    t kill --all st-b KILL
    n=0
    while [ "$(status_of st-b)" != stopped ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    t delete st-b > "$W/delete.out" 2>&1
    note "delete: $(cat "$W/delete.out")"
    [ ! -e "$dir" ] && ! systemctl is-active -q box-st-b.scope && [ ! -e "$ROOT/st-b" ]
    verdict $? "kill --all, then delete: the scope and its cgroup are gone"
else
    verdict 1 "tarn-test.slice:box:st-b starts"
fi
cleanup

# --- tarn run: the unit lives as long as the container -------------------------------------
bundle st-c "system.slice:tarn:st-c" '{ "pids": { "limit": 8 } }' '"cat", "/proc/self/cgroup"' \
    '[ { "type": "pid" }, { "type": "uts" }, { "type": "mount" } ]'
t run --bundle "$W/st-c" st-c > "$W/st-c.out" 2>&1 < /dev/null
rc=$?
show "$W/st-c.out"
[ $rc -eq 0 ] && grep -qx "0::/system.slice/tarn-st-c.scope" "$W/st-c.out" && ! systemctl is-active -q tarn-st-c.scope &&
    [ ! -e "$CG/system.slice/tarn-st-c.scope" ] && [ ! -e "$ROOT/st-c" ]
verdict $? "tarn run: the container runs in tarn-st-c.scope; after exit no unit, cgroup or state"

# --- a name ending in .slice: a slice unit, with the init put into it -----------------------
bundle st-g "system.slice:tarn:tarn-stg.slice" '{ "pids": { "limit": 8 } }' '"cat", "/proc/self/cgroup"' \
    '[ { "type": "pid" }, { "type": "uts" }, { "type": "mount" } ]'
t run --bundle "$W/st-g" st-g > "$W/st-g.out" 2>&1 < /dev/null
rc=$?
show "$W/st-g.out"
[ $rc -eq 0 ] && grep -qx "0::/tarn.slice/tarn-stg.slice" "$W/st-g.out" && ! systemctl is-active -q tarn-stg.slice &&
    [ ! -e "$CG/tarn.slice/tarn-stg.slice" ] && [ ! -e "$ROOT/st-g" ]
verdict $? "name tarn-stg.slice: the container runs in the slice /tarn.slice/tarn-stg.slice; stopped after exit"

# --- an OOM-killed container: its scope fails, and delete clears that --------------------
# systemd keeps a scope whose processes were OOM-killed loaded as "failed"; unless delete
# resets it, the next container of that id could not have its unit.
bundle st-h "" '{ "memory": { "limit": 16777216, "swap": 16777216 } }' '"sh", "/t/hog.sh"' \
    '[ { "type": "pid" }, { "type": "uts" }, { "type": "mount" } ]'
t run --bundle "$W/st-h" st-h > "$W/st-h.out" 2>&1 < /dev/null
rc1=$?
t run --bundle "$W/st-h" st-h > "$W/st-h2.out" 2>&1 < /dev/null
rc2=$?
note "first run exit $rc1: $(tail -n 2 "$W/st-h.out" | tr '\n' ' '); second run exit $rc2: $(tail -n 2 "$W/st-h2.out" | tr '\n' ' ')"
note "unit: $(systemctl show -p ActiveState -p Result tarn-st-h.scope 2>&1 | tr '\n' ' ')"
[ $rc1 -eq 137 ] && [ $rc2 -eq 137 ] && ! grep -q "tarn:" "$W/st-h2.out" && [ ! -e "$CG/system.slice/tarn-st-h.scope" ]
verdict $? "an OOM-killed container (exit 137) can run again under the same id: delete resets its failed unit"

# --- errors ------------------------------------------------------------------------------
bundle st-d "/tarn/st-d" '{}' '"true"'
t create --bundle "$W/st-d" st-d > "$W/st-d.out" 2>&1
rc=$?
note "exit $rc: $(cat "$W/st-d.out")"
[ $rc -ne 0 ] && grep -q 'expected "slice:prefix:name"' "$W/st-d.out" && [ ! -e "$ROOT/st-d" ]
verdict $? "a cgroupfs path with --systemd-cgroup is an error naming linux.cgroupsPath, nothing left"

# systemd out of reach: hide its sockets (and the bus) in a private mount namespace.
bundle st-e "" '{}' '"true"'
unshare -m sh -c "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system &&
    mount -t tmpfs tmpfs /run/dbus 2>/dev/null; exec timeout 60 $TARN --root $ROOT --systemd-cgroup create --bundle $W/st-e st-e" \
    > "$W/st-e.out" 2>&1
rc=$?
note "exit $rc: $(cat "$W/st-e.out")"
[ $rc -ne 0 ] && grep -q "cannot reach systemd over D-Bus" "$W/st-e.out" && [ ! -e "$ROOT/st-e" ] &&
    ! systemctl is-active -q tarn-st-e.scope && [ ! -e "$CG/system.slice/tarn-st-e.scope" ]
verdict $? "systemd unreachable: create fails saying so, and leaves no state, unit or cgroup"
unshare -m sh -c "mount -t tmpfs tmpfs /run/systemd && exec timeout 60 $TARN --root $ROOT --systemd-cgroup create --bundle $W/st-e st-e" \
    > "$W/st-e.out" 2>&1
rc=$?
note "exit $rc: $(cat "$W/st-e.out")"
[ $rc -ne 0 ] && grep -q "systemd is not running on this host (no /run/systemd/system)" "$W/st-e.out" &&
    [ ! -e "$ROOT/st-e" ]
verdict $? "no /run/systemd/system: create fails saying systemd is not running, nothing left"

# --- through the system bus ------------------------------------------------------------------
# The checks above reach systemd on its private socket (the guest runs no dbus-daemon); a
# host has the system bus, which needs the match rule and Subscribe for the job signal.
# systemd connects to the bus when it sees dbus.service run, so it is started as a unit
# (run.sh's stage 1 gives dbus.socket and dbus.service DefaultDependencies=no, so that
# this does not pull in sysinit.target and the rest of a boot).
if [ ! -S /run/dbus/system_bus_socket ]; then
    systemctl start dbus.socket dbus.service > "$W/dbus.log" 2>&1
    n=0
    while [ $n -lt 50 ] && ! busctl --system status org.freedesktop.systemd1 > /dev/null 2>&1; do
        sleep 0.1; n=$((n + 1))
    done
fi
if [ -S /run/dbus/system_bus_socket ]; then
    bundle st-f "" '{ "memory": { "limit": 50331648 } }' '"sh", "/t/cgroup.sh"'
    # With the private socket hidden, the bus is the only way in.
    unshare -m sh -c "mount --bind /dev/null /run/systemd/private && exec timeout 60 $TARN --root $ROOT --systemd-cgroup create --bundle $W/st-f --pid-file $W/st-f.pid st-f" \
        > "$W/st-f.out" 2>&1
    rc=$?
    note "create exit $rc: $(cat "$W/st-f.out")"; show "$CG/system.slice/tarn-st-f.scope/memory.max"
    [ $rc -eq 0 ] && [ "$(active tarn-st-f.scope)" = active ] &&
        [ "$(cat "$CG/system.slice/tarn-st-f.scope/memory.max")" = $((48 * MIB)) ]
    verdict $? "over the system bus (private socket hidden): the scope starts with memory.max"
    t delete --force st-f > /dev/null 2>&1
    ! systemctl is-active -q tarn-st-f.scope && [ ! -e "$CG/system.slice/tarn-st-f.scope" ]
    verdict $? "over the system bus: delete --force stops the scope"
else
    note "$(cat "$W/dbus.log" 2>/dev/null)"
    verdict 1 "a system bus to test with (systemctl start dbus.service)"
fi

# --- rootless: an ordinary user's containers in its own systemd user manager ---------------
# The root is read-only, so the user exists through copies of passwd, group and shadow
# (pam_unix's account check wants a shadow entry) bind-mounted over the host's. Its
# manager, user@UID.service, needs the system bus: it asks the system manager to move
# the container's init (started in this service's cgroup) into its own tree.
# Starting a user manager here brings up the host's sysinit.target, whose tmpfiles empty
# /tmp: what these checks use lives under /run.
cleanup
U=4711
UW=/run/tarn-rootless-test
XDG=/run/user/$U
rm -rf "$UW" && mkdir -p "$UW/rootfs/bin" "$UW/rootfs/proc" "$UW/rootfs/sys" "$UW/rootfs/dev" && chmod 755 "$UW"
cp /bin/busybox "$UW/rootfs/bin/busybox"
for a in sh cat sleep echo true cut id; do ln -s busybox "$UW/rootfs/bin/$a"; done
chmod -R a+rX "$UW/rootfs"
for f in passwd group shadow; do cp "/etc/$f" "$UW/$f"; done
echo "tarnu:x:$U:$U::/tmp:/bin/sh" >> "$UW/passwd"
echo "tarnu:x:$U:" >> "$UW/group"
echo "tarnu:*:19000:0:99999:7:::" >> "$UW/shadow"
chmod 640 "$UW/shadow"
for f in passwd group shadow; do mount --bind "$UW/$f" "/etc/$f"; done
[ -S /run/dbus/system_bus_socket ] || systemctl start dbus.socket dbus.service > /dev/null 2>&1
timeout 120 systemctl start "user@$U.service" > "$UW/user-manager.log" 2>&1
umgr=$?
UCG=$CG/user.slice/user-$U.slice/user@$U.service
# as_user CMD...: CMD as the user, with what a login session would set.
as_user() { setpriv --reuid=$U --regid=$U --clear-groups env HOME=/tmp XDG_RUNTIME_DIR=$XDG "$@"; }
tu() { as_user timeout 60 "$TARN" --systemd-cgroup "$@"; }
uprop() { as_user systemctl --user show -p "$2" --value "$1" 2>/dev/null; }
# user_bundle ID CGROUPS_PATH RESOURCES ARGS: a user namespace mapping the user alone.
user_bundle() {
    mkdir -p "$UW/$1"
    printf '%s\n' '{' \
        '  "ociVersion": "1.2.0",' \
        '  "process": { "terminal": false, "user": { "uid": 0, "gid": 0 }, "args": [ '"$4"' ],' \
        '    "env": [ "PATH=/bin" ], "cwd": "/", "noNewPrivileges": true },' \
        '  "root": { "path": "'"$UW"'/rootfs", "readonly": true },' \
        '  "mounts": [' \
        '    { "destination": "/proc", "type": "proc", "source": "proc" },' \
        '    { "destination": "/sys", "type": "none", "source": "/sys", "options": [ "rbind", "nosuid", "noexec", "nodev", "ro" ] }' \
        '  ],' \
        '  "linux": {' \
        '    "cgroupsPath": "'"$2"'",' \
        '    "resources": '"$3"',' \
        '    "uidMappings": [ { "containerID": 0, "hostID": '"$U"', "size": 1 } ],' \
        '    "gidMappings": [ { "containerID": 0, "hostID": '"$U"', "size": 1 } ],' \
        '    "namespaces": [ { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "user" } ]' \
        '  }' \
        '}' > "$UW/$1/config.json"
    chown -R "$U:$U" "$UW/$1"
}
# No cgroup namespace: /proc/self/cgroup is the scope's path from the root, and the
# limit is read from the host's cgroupfs (bound read-only) at that path.
show_limit='"sh", "-c", "c=$(cut -d: -f3 /proc/self/cgroup); echo cgroup $c; echo pids.max $(cat /sys/fs/cgroup$c/pids.max); echo uid $(id -u)"'
if [ $umgr -eq 0 ] && [ -S "$XDG/systemd/private" ]; then
    features=$(as_user "$TARN" features 2>&1)
    note "$(echo "$features" | grep -A6 '"cgroup"' | tr -s ' \n' ' ')"
    echo "$features" | grep -q '"systemd": true' && echo "$features" | grep -q '"systemdUser": true' &&
        echo "$features" | grep -q "scopes in the user's systemd manager"
    verdict $? "rootless: tarn features says systemd and systemdUser with the user manager running"

    user_bundle su-a "" '{ "pids": { "limit": 17 } }' "$show_limit"
    tu run --bundle "$UW/su-a" su-a > "$UW/su-a.out" 2>&1 < /dev/null
    rc=$?
    note "tarn run as uid $U exit $rc: $(tr '\n' ' ' < "$UW/su-a.out")"
    scope=/user.slice/user-$U.slice/user@$U.service/user.slice/tarn-su-a.scope
    [ $rc -eq 0 ] && grep -qx "cgroup $scope" "$UW/su-a.out" && grep -qx "pids.max 17" "$UW/su-a.out" &&
        grep -qx "uid 0" "$UW/su-a.out" && [ ! -e "$CG$scope" ] && [ -z "$(ls -A "$XDG/tarn" 2>/dev/null)" ]
    verdict $? "rootless run (session bus): the init is in user@$U.service/user.slice/tarn-<id>.scope, pids.max 17 applies inside; after exit no scope or state"

    # Created over the session bus, started and deleted through the user manager's
    # private socket (the session bus address leads nowhere).
    user_bundle su-b "user.slice:box:su-b" '{ "pids": { "limit": 23 }, "memory": { "limit": 67108864 } }' \
        '"sh", "-c", "echo READY; exec sleep infinity"'
    dir=$UCG/user.slice/box-su-b.scope
    tu create --bundle "$UW/su-b" --pid-file "$UW/su-b/init.pid" su-b > "$UW/su-b.out" 2>&1 < /dev/null &&
        DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent tu start su-b >> "$UW/su-b.out" 2>&1
    rc=$?
    created=$rc
    pid=$(cat "$UW/su-b/init.pid" 2>/dev/null)
    note "create/start exit $rc: $(tr '\n' ' ' < "$UW/su-b.out")"; show "$dir/pids.max"; show "$dir/memory.max"
    note "unit: Delegate $(uprop box-su-b.scope Delegate) TasksMax $(uprop box-su-b.scope TasksMax)" \
        "MemoryMax $(uprop box-su-b.scope MemoryMax) ControlGroup $(uprop box-su-b.scope ControlGroup)"
    [ $rc -eq 0 ] && [ -n "$pid" ] && grep -qx "0::${dir#"$CG"}" "/proc/$pid/cgroup" &&
        [ "$(cat "$dir/pids.max")" = 23 ] && [ "$(cat "$dir/memory.max")" = $((64 * MIB)) ] &&
        [ "$(uprop box-su-b.scope Delegate)" = yes ] && [ "$(uprop box-su-b.scope TasksMax)" = 23 ] &&
        [ "$(uprop box-su-b.scope ControlGroup)" = "${dir#"$CG"}" ]
    verdict $? "rootless create: box-<id>.scope in the user manager, delegated, pids.max and memory.max set, the unit says so"
    DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent tu delete --force su-b > "$UW/su-b.del" 2>&1
    rc=$?
    n=0
    while [ -e "$dir" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    note "delete exit $rc: $(cat "$UW/su-b.del"); ActiveState $(uprop box-su-b.scope ActiveState)"
    [ $created -eq 0 ] && [ $rc -eq 0 ] && [ ! -e "$dir" ] && [ ! -e "$XDG/tarn/su-b" ] &&
        [ "$(uprop box-su-b.scope ActiveState)" = inactive ]
    verdict $? "rootless delete --force over the user manager's private socket: scope, cgroup and state gone"

    # io is not among what user@.service delegates (pids memory cpu).
    user_bundle su-c "" '{ "blockIO": { "weight": 100 } }' '"true"'
    tu run --bundle "$UW/su-c" su-c > "$UW/su-c.out" 2>&1 < /dev/null
    rc=$?
    note "exit $rc: $(cat "$UW/su-c.out")"
    [ $rc -ne 0 ] && grep -q "linux.resources.blockIO.weight: the io controller is not delegated to the systemd user manager of uid $U" "$UW/su-c.out" &&
        [ ! -e "$UCG/user.slice/tarn-su-c.scope" ] && [ ! -e "$XDG/tarn/su-c" ] &&
        [ "$(uprop tarn-su-c.scope ActiveState)" = inactive ]
    verdict $? "rootless, a limit on a controller the user manager was not delegated: refused naming the field, nothing left"

    # No user manager to reach: the error names what was tried.
    user_bundle su-d "" '{}' '"true"'
    as_user env XDG_RUNTIME_DIR="$UW/no-runtime-dir" timeout 60 "$TARN" --systemd-cgroup run --bundle "$UW/su-d" su-d \
        > "$UW/su-d.out" 2>&1 < /dev/null
    rc=$?
    note "exit $rc: $(cat "$UW/su-d.out")"
    [ $rc -ne 0 ] && grep -q "cannot reach the systemd user manager of uid $U" "$UW/su-d.out" &&
        grep -q "$UW/no-runtime-dir/bus" "$UW/su-d.out" && grep -q "$UW/no-runtime-dir/systemd/private" "$UW/su-d.out" &&
        [ ! -e "$UW/no-runtime-dir/tarn/su-d" ] && [ "$(uprop tarn-su-d.scope ActiveState)" = inactive ]
    verdict $? "rootless, user manager out of reach: create fails naming the sockets it tried, nothing left"
else
    note "systemctl start user@$U.service exit $umgr: $(head -c 600 "$UW/user-manager.log")"
    note "$(systemctl status --no-pager "user@$U.service" 2>&1 | tail -n 8)"
    verdict 1 "a user manager for uid $U (systemctl start user@$U.service)"
fi
systemctl stop "user@$U.service" > /dev/null 2>&1
for f in passwd group shadow; do umount "/etc/$f"; done
rm -rf "$UW"

cleanup
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
