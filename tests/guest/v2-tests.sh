#!/bin/sh
# cgroup v2 checks for tarn, against the real kernel: run inside the QEMU guest by
# run.sh, or by hand as root on any host whose cgroups are pure v2:
#
#   sh tests/guest/v2-tests.sh [TARN]
#
# Needs only a static busybox at /bin/busybox and tarn. Prints one `ok - ...`,
# `FAIL - ...` or `skip - ...` line per check (a FAIL is followed by `#` lines saying
# what was seen) and ends with `N passed, M failed`. Containers live under the cgroups
# /tarn-test and /tarn-pool, state under /run/tarn-guest; both are cleaned between checks.
set -u

TARN=${1:-tarn}
command -v "$TARN" >/dev/null 2>&1 || { echo "v2-tests: no tarn at $TARN"; echo "0 passed, 1 failed"; exit 1; }
TARN=$(command -v "$TARN")
SRC=${TARN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
ROOT=/run/tarn-guest
CG=/sys/fs/cgroup
W=${TMPDIR:-/tmp}/tarn-v2-tests
MIB=1048576

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
skip() { skipped=$((skipped + 1)); echo "skip - $*"; }
# note TEXT...: context printed under the next FAIL (reset by every verdict).
notes=""
note() { notes="$notes$*
"; }
verdict() { # verdict RESULT(0=pass) DESCRIPTION
    if [ "$1" -eq 0 ]; then pass "$2"; else
        fail "$2"
        printf '%s' "$notes" | sed -e '/^$/d' -e 's/^/    # /' | head -n 20
    fi
    notes=""
}
# show FILE: note a file's content (or that it is missing).
show() {
    if [ -e "$1" ]; then note "$1: $(tr '\n' ' ' < "$1" | cut -c1-300)"; else note "$1: missing"; fi
}

# tarn with the test root; never let one hung command eat the guest's whole time limit.
t() { timeout 60 "$TARN" --root "$ROOT" "$@"; }

# The value of KEY in a flat "key value" file (memory.events, cpu.stat, ...), 0 if none.
field() { awk -v k="$2" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' "$1" 2>/dev/null || echo 0; }
status_of() { t state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }

# wait_for FILE TEXT [SECONDS]: until FILE contains TEXT.
wait_for() {
    n=0 max=$((${3:-30} * 10))
    while ! grep -q "$2" "$1" 2>/dev/null; do
        n=$((n + 1)); [ $n -ge $max ] && return 1
        sleep 0.1
    done
}
# wait_status ID STATUS [SECONDS]
wait_status() {
    n=0 max=$((${3:-10} * 10))
    while [ "$(status_of "$1")" != "$2" ]; do
        n=$((n + 1)); [ $n -ge $max ] && return 1
        sleep 0.1
    done
}
# wait_gone DIR [SECONDS]: until the cgroup DIR is gone.
wait_gone() {
    n=0 max=$((${2:-5} * 10))
    while [ -e "$1" ]; do
        n=$((n + 1)); [ $n -ge $max ] && return 1
        sleep 0.1
    done
}

# bundle ID CGROUPS_PATH RESOURCES_JSON ARGS_JSON [EXTRA_MOUNTS_JSON]
# Writes $W/ID/config.json: the default `tarn spec` config, not on a terminal, over the
# shared busybox rootfs, with the given cgroupsPath, linux.resources and process.args.
bundle() {
    mkdir -p "$W/$1"
    cat > "$W/$1/config.json" <<EOF
{
  "ociVersion": "1.2.0",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [ $4 ],
    "env": [ "PATH=/usr/sbin:/usr/bin:/sbin:/bin" ],
    "cwd": "/",
    "capabilities": {
      "bounding": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
      "effective": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
      "permitted": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ]
    },
    "noNewPrivileges": true
  },
  "root": { "path": "$W/base/rootfs", "readonly": true },
  "hostname": "$1",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": [ "nosuid", "strictatime", "mode=755", "size=65536k" ] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": [ "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5" ] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": [ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" ] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": [ "nosuid", "noexec", "nodev", "ro" ] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": [ "nosuid", "noexec", "nodev", "relatime", "ro" ] }${5:+,
    $5}
  ],
  "linux": {
    "cgroupsPath": "$2",
    "resources": $3,
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
      { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
    ],
    "maskedPaths": [ "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware" ],
    "readonlyPaths": [ "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" ]
  }
}
EOF
}

# start ID: create + start $W/ID in the background; the container's stdout and stderr
# (and create's) go to $W/ID.out, its init's pid to $W/ID.pid.
start() {
    : > "$W/$1.out"
    if ! t create --bundle "$W/$1" --pid-file "$W/$1.pid" "$1" > "$W/$1.out" 2>&1 < /dev/null; then
        note "tarn create $1 failed: $(tail -n 3 "$W/$1.out" | tr '\n' ' ')"
        return 1
    fi
    if ! t start "$1" > "$W/$1.start" 2>&1; then
        note "tarn start $1 failed: $(tail -n 3 "$W/$1.start" | tr '\n' ' ')"
        return 1
    fi
}
pid_of() { cat "$W/$1.pid" 2>/dev/null; }
# ready ID: the container printed READY (its scripts do once set up); gives up early if
# its init is gone.
ready() {
    n=0
    while ! grep -q READY "$W/$1.out" 2>/dev/null; do
        p=$(pid_of "$1")
        if [ $n -ge 600 ] || { [ -n "$p" ] && [ ! -d "/proc/$p" ]; }; then
            note "$1 never printed READY; its output: $(tail -n 5 "$W/$1.out" | tr '\n' ' ')"
            return 1
        fi
        n=$((n + 1))
        sleep 0.1
    done
}
# run ID: tarn run in the foreground; output in $W/ID.out, exit status in $rc.
run() {
    t run --bundle "$W/$1" "$1" > "$W/$1.out" 2>&1 < /dev/null
    rc=$?
}

# Removes every container and test cgroup, so each check starts clean.
cleanup() {
    for d in "$ROOT"/*; do
        [ -e "$d" ] && t delete --force "${d##*/}" > /dev/null 2>&1
    done
    for top in "$CG/tarn-test" "$CG/tarn-pool"; do
        [ -d "$top" ] || continue
        find "$top" -depth -type d | while read -r d; do
            [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
            n=0
            while ! rmdir "$d" 2>/dev/null && [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
        done
    done
    rm -rf "${ROOT:?}"/* 2>/dev/null
}

echo "# tarn: $TARN ($("$TARN" --version 2>&1 | head -n 1))"
echo "# kernel: $(uname -r), cpus: $(grep -c ^processor /proc/cpuinfo)"

# --- (a) pure cgroup v2 ----------------------------------------------------------------
# CGROUP2_SUPER_MAGIC is 0x63677270; busybox's stat names it UNKNOWN, coreutils cgroup2fs.
fstype=$(stat -fc %T "$CG" 2>/dev/null)
magic=$(stat -fc %t "$CG" 2>/dev/null)
v1=$(awk '$3 == "cgroup" { print $2 }' /proc/mounts | tr '\n' ' ')
note "stat -fc %T $CG: $fstype (type 0x$magic); cgroup v1 mounts: ${v1:-none}"
[ "$fstype" = cgroup2fs ] || [ "$magic" = 63677270 ]
r=$?
[ $r -eq 0 ] && [ -z "$v1" ]
verdict $? "(a) $CG is cgroup2 and no v1 hierarchy is mounted"
if [ $r -ne 0 ]; then
    echo "v2-tests: not a pure cgroup v2 host; nothing else to check"
    echo "$passed passed, $failed failed"
    exit 1
fi
missing=""
for c in cpuset cpu io memory hugetlb pids; do
    grep -qw "$c" "$CG/cgroup.controllers" || missing="$missing $c"
done
show "$CG/cgroup.controllers"
[ -z "$missing" ]
verdict $? "(a) the root offers cpuset cpu io memory hugetlb pids"

# --- the bundle ------------------------------------------------------------------------
cleanup
rm -rf "$W"
mkdir -p "$W" "$ROOT"
if sh "$SRC/bundles/busybox-bundle.sh" "$W/base" "$TARN" > "$W/bundle.log" 2>&1; then
    pass "bundles/busybox-bundle.sh builds a bundle here"
else
    note "$(tail -n 5 "$W/bundle.log")"
    verdict 1 "bundles/busybox-bundle.sh builds a bundle here"
    echo "$passed passed, $failed failed"
    exit 1
fi
# The workloads, as scripts in the rootfs: no quoting inside JSON.
s=$W/base/rootfs/t
mkdir -p "$s"
cat > "$s/cgroup.sh" <<'EOF'
echo "self: $(cat /proc/self/cgroup)"
echo READY
exec sleep 600
EOF
cat > "$s/sleep.sh" <<'EOF'
echo READY
exec sleep 600
EOF
# Command substitution makes sh hold the whole 64 MiB (twice, while it grows); a pipe
# into dd or cat would stream it through a small buffer.
cat > "$s/hog.sh" <<'EOF'
x=$(head -c 64m /dev/zero | tr '\0' a)
echo "survived ${#x}"
EOF
cat > "$s/hog-child.sh" <<'EOF'
sh /t/hog.sh
echo "hog exit $?"
echo READY
exec sleep 600
EOF
cat > "$s/forks.sh" <<'EOF'
i=0
while [ $i -lt 20 ]; do sleep 600 & i=$((i + 1)); done
echo "spawned $i"
EOF
cat > "$s/forks-child.sh" <<'EOF'
sh /t/forks.sh
echo "forks exit $?"
echo READY
exec sleep 600
EOF
cat > "$s/busy.sh" <<'EOF'
while :; do :; done &
sleep 1
kill $!
echo READY
exec sleep 600
EOF
cat > "$s/family.sh" <<'EOF'
sleep 600 &
sleep 600 &
echo READY
wait
EOF
# Fills the container's /dev/shm (a tmpfs in its own mount namespace: the pages are
# charged to its cgroup and cannot be reclaimed without swap).
cat > "$s/shm.sh" <<'EOF'
head -c "$1"m /dev/zero > /dev/shm/fill
echo "fill exit $? size $(wc -c < /dev/shm/fill)"
echo READY
exec sleep 600
EOF

# --- (b) the init lands in linux.cgroupsPath ---------------------------------------------
cleanup
bundle b1 /tarn-test/b1 '{ "memory": { "limit": 268435456 }, "pids": { "limit": 100 } }' '"sh", "/t/cgroup.sh"'
start b1 && ready b1
pid=$(pid_of b1)
show "$W/b1.out"
grep -qx 'self: 0::/' "$W/b1.out"
verdict $? "(b) inside, /proc/self/cgroup is 0::/ (cgroup namespace rooted at the container)"
note "pid $pid"; show "$CG/tarn-test/b1/cgroup.procs"; show "/proc/$pid/cgroup"
[ -n "$pid" ] && [ -d "$CG/tarn-test/b1" ] && grep -qx "$pid" "$CG/tarn-test/b1/cgroup.procs" &&
    grep -qx "0::/tarn-test/b1" "/proc/$pid/cgroup"
verdict $? "(b) outside, $CG/tarn-test/b1 exists and its cgroup.procs holds the init"
show "$CG/tarn-test/b1/memory.max"; show "$CG/tarn-test/b1/pids.max"
[ "$(cat "$CG/tarn-test/b1/memory.max" 2>/dev/null)" = 268435456 ] &&
    [ "$(cat "$CG/tarn-test/b1/pids.max" 2>/dev/null)" = 100 ]
verdict $? "(b) linux.resources are written: memory.max 268435456, pids.max 100"
t delete --force b1 > "$W/b1.delete" 2>&1
r=$?
wait_gone "$CG/tarn-test/b1"
[ $r -eq 0 ] && [ ! -e "$CG/tarn-test/b1" ]
note "delete --force: exit $r $(cat "$W/b1.delete")"
verdict $? "(l) delete --force of a running container removes its cgroup"

# --- (c) memory.max OOM-kills ----------------------------------------------------------
cleanup
bundle c1 /tarn-test/c1 "{ \"memory\": { \"limit\": $((32 * MIB)) } }" '"sh", "/t/hog.sh"'
run c1
note "tarn run exit $rc, output: $(tail -n 3 "$W/c1.out" | tr '\n' ' ')"
[ $rc -eq 137 ] && ! grep -q survived "$W/c1.out"
verdict $? "(c) a 64 MiB hog under memory.limit 32 MiB is OOM-killed: tarn run exits 137"

bundle c2 /tarn-test/c2 "{ \"memory\": { \"limit\": $((32 * MIB)) } }" '"sh", "/t/hog-child.sh"'
start c2 && ready c2
show "$W/c2.out"; show "$CG/tarn-test/c2/memory.events"; show "$CG/tarn-test/c2/memory.max"
grep -q "hog exit 137" "$W/c2.out" && [ "$(field "$CG/tarn-test/c2/memory.events" oom_kill)" -ge 1 ]
verdict $? "(c) the OOM kill is counted: memory.events oom_kill >= 1"

# --- (d) pids.max stops forks ----------------------------------------------------------
cleanup
bundle d1 /tarn-test/d1 '{ "pids": { "limit": 8 } }' '"sh", "/t/forks-child.sh"'
start d1 && ready d1
show "$W/d1.out"
grep -qi "can't fork" "$W/d1.out" && ! grep -q "spawned 20" "$W/d1.out"
verdict $? "(d) with pids.limit 8, forking 20 sleeps fails with \"can't fork\""
show "$CG/tarn-test/d1/pids.max"; show "$CG/tarn-test/d1/pids.events"; show "$CG/tarn-test/d1/pids.current"
[ "$(cat "$CG/tarn-test/d1/pids.max" 2>/dev/null)" = 8 ] &&
    [ "$(field "$CG/tarn-test/d1/pids.events" max)" -ge 1 ] &&
    [ "$(cat "$CG/tarn-test/d1/pids.current" 2>/dev/null || echo 99)" -le 8 ]
verdict $? "(d) pids.max is 8, pids.events max >= 1, pids.current <= 8"

# --- (e) cpu.max throttles ---------------------------------------------------------------
cleanup
bundle e1 /tarn-test/e1 '{ "cpu": { "quota": 10000, "period": 100000 } }' '"sh", "/t/busy.sh"'
start e1 && ready e1
show "$CG/tarn-test/e1/cpu.max"; show "$CG/tarn-test/e1/cpu.stat"
[ "$(cat "$CG/tarn-test/e1/cpu.max" 2>/dev/null)" = "10000 100000" ] &&
    [ "$(field "$CG/tarn-test/e1/cpu.stat" nr_throttled)" -gt 0 ]
verdict $? "(e) cpu.max is \"10000 100000\" and a 1 s busy loop is throttled (cpu.stat nr_throttled > 0)"
if "$TARN" events --help > /dev/null 2>&1; then
    t events --stats e1 > "$W/e1.events" 2>&1
    show "$W/e1.events"
    grep -Eiq '"throttled[a-z_]*": *[1-9]' "$W/e1.events"
    verdict $? "(e) tarn events --stats reports the throttling"
else
    skip "(e) tarn events --stats reports the throttling: no events command yet"
fi

# --- (f) cpuset pins -------------------------------------------------------------------
cleanup
ncpu=$(grep -c ^processor /proc/cpuinfo)
if [ "$ncpu" -ge 2 ]; then
    bundle f1 /tarn-test/f1 '{ "cpu": { "cpus": "1", "mems": "0" } }' \
        '"grep", "-E", "^(Cpus|Mems)_allowed_list", "/proc/self/status"'
    run f1
    note "tarn run exit $rc"; show "$W/f1.out"
    [ $rc -eq 0 ] && grep -Eq '^Cpus_allowed_list:[[:space:]]+1$' "$W/f1.out"
    verdict $? "(f) cpuset cpus \"1\": the init's Cpus_allowed_list is 1"
else
    skip "(f) cpuset cpus \"1\": needs 2 cpus, have $ncpu"
fi

# --- (g) io.max on a real block device ---------------------------------------------------
cleanup
if [ ! -e /sys/block/ram0 ]; then
    if [ -n "${TARN_GUEST_MODULES:-}" ] && [ -e "$TARN_GUEST_MODULES/brd.ko" ]; then
        insmod "$TARN_GUEST_MODULES/brd.ko" rd_nr=1 rd_size=8192 2>/dev/null
    else
        modprobe brd rd_nr=1 rd_size=8192 2>/dev/null
    fi
fi
if [ -e /sys/block/ram0/dev ]; then
    dev=$(cat /sys/block/ram0/dev)
    maj=${dev%:*} min=${dev#*:}
    bundle g1 /tarn-test/g1 "{ \"blockIO\": {
        \"throttleReadBpsDevice\": [ { \"major\": $maj, \"minor\": $min, \"rate\": $MIB } ],
        \"throttleWriteIOPSDevice\": [ { \"major\": $maj, \"minor\": $min, \"rate\": 100 } ] } }" \
        '"sh", "/t/sleep.sh"'
    start g1 && ready g1
    show "$CG/tarn-test/g1/io.max"
    grep "^$dev " "$CG/tarn-test/g1/io.max" 2>/dev/null | grep "rbps=$MIB " | grep -q "wiops=100"
    verdict $? "(g) blockIO throttles for /dev/ram0 ($dev) land in io.max: rbps=$MIB, wiops=100"
else
    skip "(g) io.max: no brd module, so no block device to throttle"
fi

# --- (h) hugetlb -----------------------------------------------------------------------
cleanup
if [ -e /sys/kernel/mm/hugepages/hugepages-2048kB ]; then
    bundle h1 /tarn-test/h1 "{ \"hugepageLimits\": [ { \"pageSize\": \"2MB\", \"limit\": $((4 * MIB)) } ] }" \
        '"sh", "/t/sleep.sh"'
    start h1 && ready h1
    show "$CG/tarn-test/h1/hugetlb.2MB.max"
    [ "$(cat "$CG/tarn-test/h1/hugetlb.2MB.max" 2>/dev/null)" = $((4 * MIB)) ]
    verdict $? "(h) hugepageLimits 2MB -> hugetlb.2MB.max = $((4 * MIB))"
else
    skip "(h) hugetlb: this kernel has no 2 MB huge pages"
fi

# --- (i) freeze, kill --all, update ------------------------------------------------------
cleanup
bundle i1 /tarn-test/i1 '{ "memory": { "limit": 134217728 }, "pids": { "limit": 64 } }' '"sh", "/t/sleep.sh"'
start i1 && ready i1
t pause i1 > "$W/i1.pause" 2>&1
r=$?
wait_for "$CG/tarn-test/i1/cgroup.events" "frozen 1" 5
note "tarn pause: exit $r $(head -n 2 "$W/i1.pause" | tr '\n' ' ')"
show "$CG/tarn-test/i1/cgroup.freeze"; show "$CG/tarn-test/i1/cgroup.events"; note "state: $(status_of i1)"
[ $r -eq 0 ] && [ "$(cat "$CG/tarn-test/i1/cgroup.freeze" 2>/dev/null)" = 1 ] &&
    [ "$(field "$CG/tarn-test/i1/cgroup.events" frozen)" = 1 ] && [ "$(status_of i1)" = paused ]
verdict $? "(i) tarn pause freezes the cgroup (cgroup.freeze 1, frozen 1) and state says paused"
t resume i1 > "$W/i1.resume" 2>&1
r=$?
wait_for "$CG/tarn-test/i1/cgroup.events" "frozen 0" 5
note "tarn resume: exit $r $(head -n 2 "$W/i1.resume" | tr '\n' ' ')"
show "$CG/tarn-test/i1/cgroup.freeze"; show "$CG/tarn-test/i1/cgroup.events"; note "state: $(status_of i1)"
[ $r -eq 0 ] && [ "$(cat "$CG/tarn-test/i1/cgroup.freeze" 2>/dev/null)" = 0 ] &&
    [ "$(field "$CG/tarn-test/i1/cgroup.events" frozen)" = 0 ] && [ "$(status_of i1)" = running ]
verdict $? "(i) tarn resume thaws it (cgroup.freeze 0, frozen 0) and state says running"
echo "{ \"memory\": { \"limit\": $((48 * MIB)) }, \"pids\": { \"limit\": 32 },
       \"cpu\": { \"quota\": 20000, \"period\": 100000 } }" |
    t update --resources - i1 > "$W/i1.update" 2>&1
r=$?
note "tarn update: exit $r $(head -n 2 "$W/i1.update" | tr '\n' ' ')"
show "$CG/tarn-test/i1/memory.max"; show "$CG/tarn-test/i1/pids.max"; show "$CG/tarn-test/i1/cpu.max"
[ $r -eq 0 ] && [ "$(cat "$CG/tarn-test/i1/memory.max" 2>/dev/null)" = $((48 * MIB)) ] &&
    [ "$(cat "$CG/tarn-test/i1/pids.max" 2>/dev/null)" = 32 ] &&
    [ "$(cat "$CG/tarn-test/i1/cpu.max" 2>/dev/null)" = "20000 100000" ]
verdict $? "(i) tarn update --resources - rewrites memory.max, pids.max and cpu.max"

bundle i2 /tarn-test/i2 '{ "pids": { "limit": 64 } }' '"sh", "/t/family.sh"'
start i2 && ready i2
before=$(wc -l < "$CG/tarn-test/i2/cgroup.procs" 2>/dev/null || echo 0)
t kill --all i2 KILL > "$W/i2.kill" 2>&1
r=$?
n=0
while [ -s "$CG/tarn-test/i2/cgroup.procs" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
wait_status i2 stopped 5
note "tarn kill --all: exit $r $(head -n 2 "$W/i2.kill" | tr '\n' ' '); $before processes before"
show "$CG/tarn-test/i2/cgroup.procs"; note "state: $(status_of i2)"
[ $r -eq 0 ] && [ "$before" -ge 3 ] && [ -e "$CG/tarn-test/i2/cgroup.procs" ] &&
    [ ! -s "$CG/tarn-test/i2/cgroup.procs" ] && [ "$(status_of i2)" = stopped ]
verdict $? "(i) tarn kill --all KILL empties the cgroup (init and 2 sleeps) and state says stopped"

# --- (j) a resource pool: two containers under one parent budget --------------------------
# The parent is made the way a pool (or a systemd slice) would: the harness enables the
# memory controller for its own parent only; tarn has to enable what the children need.
cleanup
grep -qw memory "$CG/cgroup.subtree_control" || echo +memory > "$CG/cgroup.subtree_control"
mkdir -p "$CG/tarn-pool"
echo $((64 * MIB)) > "$CG/tarn-pool/memory.max"
bundle ja /tarn-pool/a "{ \"memory\": { \"limit\": $((48 * MIB)) } }" '"sh", "/t/shm.sh", "40"'
bundle jb /tarn-pool/b "{ \"memory\": { \"limit\": $((48 * MIB)) } }" '"sh", "/t/shm.sh", "40"'
start ja && ready ja
pa=$(pid_of ja)
show "$W/ja.out"; show "$CG/tarn-pool/a/cgroup.procs"; show "$CG/tarn-pool/memory.current"
[ -n "$pa" ] && grep -qx "$pa" "$CG/tarn-pool/a/cgroup.procs" 2>/dev/null &&
    grep -q "fill exit 0 size $((40 * MIB))" "$W/ja.out" &&
    [ "$(cat "$CG/tarn-pool/memory.current" 2>/dev/null || echo 0)" -ge $((40 * MIB)) ]
verdict $? "(j) container a runs in /tarn-pool/a and its 40 MiB are charged to the pool"
# b cannot get its 40 MiB while a holds 40 of the pool's 64: the pool's OOM killer
# frees room by killing something in the pool (which one is the kernel's choice).
start jb && ready jb
sleep 0.5
full_a=0 full_b=0
[ -d "/proc/$pa" ] && grep -q "fill exit 0 size $((40 * MIB))" "$W/ja.out" && full_a=1
pb=$(pid_of jb)
[ -n "$pb" ] && [ -d "/proc/$pb" ] && grep -q "fill exit 0 size $((40 * MIB))" "$W/jb.out" && full_b=1
show "$W/jb.out"; show "$CG/tarn-pool/memory.events"; show "$CG/tarn-pool/memory.peak"
note "a alive with 40 MiB: $full_a, b alive with 40 MiB: $full_b"
[ "$(field "$CG/tarn-pool/memory.events" max)" -ge 1 ] &&
    [ "$(cat "$CG/tarn-pool/memory.peak" 2>/dev/null || echo 0)" -le $((64 * MIB)) ] &&
    [ $((full_a + full_b)) -le 1 ]
verdict $? "(j) the pool's 64 MiB bound a+b: memory.events max >= 1, peak <= 64 MiB, not both got 40 MiB"

# --- (k) a failed create leaves nothing behind -------------------------------------------
cleanup
bundle k1 /tarn-test/k1 '{ "pids": { "limit": 16 } }' '"true"' \
    '{ "destination": "/mnt", "type": "bind", "source": "/nonexistent/tarn-guest-missing", "options": [ "rbind" ] }'
t create --bundle "$W/k1" k1 > "$W/k1.out" 2>&1 < /dev/null
r=$?
note "tarn create exit $r: $(head -n 2 "$W/k1.out" | tr '\n' ' ')"
left=""
for f in "$CG/tarn-test/k1" "$ROOT/k1"; do [ -e "$f" ] && left="$left $f"; done
note "left behind:${left:- nothing}"
[ $r -ne 0 ] && [ ! -e "$CG/tarn-test/k1" ] && [ ! -e "$ROOT/k1" ]
verdict $? "(k) create with a missing bind source fails and leaves no cgroup and no state"

# --- (l) delete removes the cgroup -------------------------------------------------------
cleanup
bundle l1 /tarn-test/l1 '{ "pids": { "limit": 16 } }' '"sh", "/t/sleep.sh"'
start l1 && ready l1
existed=0; [ -d "$CG/tarn-test/l1" ] && existed=1
t kill l1 KILL > "$W/l1.kill" 2>&1
wait_status l1 stopped 10
t delete l1 > "$W/l1.delete" 2>&1
r=$?
wait_gone "$CG/tarn-test/l1"
note "cgroup existed while running: $existed; tarn delete exit $r $(head -n 2 "$W/l1.delete" | tr '\n' ' ')"
[ $existed -eq 1 ] && [ $r -eq 0 ] && [ ! -e "$CG/tarn-test/l1" ]
verdict $? "(l) kill + delete of a stopped container removes its cgroup"
bundle l2 /tarn-test/l2 '{ "pids": { "limit": 16 } }' '"true"'
run l2
note "tarn run exit $rc $(head -n 2 "$W/l2.out" | tr '\n' ' ')"
[ $rc -eq 0 ] && [ ! -e "$CG/tarn-test/l2" ] && [ ! -e "$ROOT/l2" ]
verdict $? "(l) tarn run removes the cgroup and the state when the container exits"

# --- (m) linux.resources.devices: the eBPF device filter ----------------------------------
# /dev/kmsg (c 1:11) is bound in from the host and is not a default device. Writing it
# needs no capability (reading it would need CAP_SYSLOG): with "deny all" plus "c 1:11 w"
# the write works, with "c 1:11 r" it gets EPERM; /dev/null stays open (default list).
cleanup
cat > "$s/devices.sh" <<'EOF'
if (echo tarn-guest-m > /dev/kmsg) 2> /dev/shm/err; then echo kmsg-write-ok; else echo kmsg-write-denied; fi
cat /dev/shm/err
if (echo x > /dev/null); then echo null-ok; else echo null-denied; fi
EOF
kmsg='{ "destination": "/dev/kmsg", "type": "bind", "source": "/dev/kmsg", "options": [ "bind" ] }'
devices() { echo '{ "devices": [ { "allow": false, "access": "rwm" }, { "allow": true, "type": "c", "major": 1, "minor": 11, "access": "'"$1"'" } ] }'; }
bundle m1 /tarn-test/m1 "$(devices w)" '"sh", "/t/devices.sh"' "$kmsg"
run m1
note "tarn run exit $rc"; show "$W/m1.out"
[ $rc -eq 0 ] && grep -q kmsg-write-ok "$W/m1.out" && grep -q null-ok "$W/m1.out"
verdict $? "(m) devices [deny all, allow c 1:11 w]: /dev/kmsg takes a write, /dev/null works"
bundle m2 /tarn-test/m2 "$(devices r)" '"sh", "/t/devices.sh"' "$kmsg"
run m2
note "tarn run exit $rc"; show "$W/m2.out"
[ $rc -eq 0 ] && grep -q kmsg-write-denied "$W/m2.out" && grep -q "not permitted" "$W/m2.out" &&
    grep -q null-ok "$W/m2.out"
verdict $? "(m) devices [deny all, allow c 1:11 r]: writing /dev/kmsg gets EPERM, /dev/null works"
bundle m3 /tarn-test/m3 '{ "pids": { "limit": 16 } }' '"sh", "/t/devices.sh"' "$kmsg"
run m3
note "tarn run exit $rc"; show "$W/m3.out"
[ $rc -eq 0 ] && grep -q kmsg-write-ok "$W/m3.out"
verdict $? "(m) without linux.resources.devices there is no filter: /dev/kmsg takes a write"

# --- (o) the cgroup mount without a cgroup namespace ---------------------------------------
# A fresh cgroup2 mount outside a cgroup namespace would be the host's root: the
# container's /sys/fs/cgroup is its own cgroup, bound, with its own limits and nothing
# of the host listed.
cleanup
bundle o1 /tarn-test/o1 '{ "pids": { "limit": 23 } }' '"sh", "-c", "cat /sys/fs/cgroup/pids.max; ls /sys/fs/cgroup | grep -c tarn-test; find /sys/fs/cgroup -mindepth 1 -type d | wc -l"'
sed -i 's/, { "type": "cgroup" }//' "$W/o1/config.json"
run o1
note "tarn run exit $rc: $(tr '\n' ' ' < "$W/o1.out")"
[ $rc -eq 0 ] && [ "$(tr '\n' ' ' < "$W/o1.out")" = "23 0 0 " ]
verdict $? "(o) no cgroup namespace: /sys/fs/cgroup is the container's own cgroup (pids.max 23, no host cgroup listed)"

# --- (n) rootless, with a delegated cgroup subtree --------------------------------------
# What systemd's Delegate=yes gives a user on a pure v2 host: a subtree it owns, with its
# shell inside. tarn, run by that user in a user namespace of its own, makes the
# container's cgroup there and applies the limits; outside it, limits are refused.
cleanup
grep -q '^tarnu:' /etc/passwd 2>/dev/null || echo 'tarnu:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd
grep -q '^tarnu:' /etc/group 2>/dev/null || echo 'tarnu:x:1000:' >> /etc/group
mkdir -p "$CG/tarn-test/deleg/shell"
echo "+pids +memory" > "$CG/tarn-test/cgroup.subtree_control"
chown -R 1000:1000 "$CG/tarn-test/deleg"
mkdir -p "$W/xdg" && chown 1000:1000 "$W/xdg" && chmod 700 "$W/xdg"
maps='"uidMappings": [ { "containerID": 0, "hostID": 1000, "size": 1 } ], "gidMappings": [ { "containerID": 0, "hostID": 1000, "size": 1 } ],'
rootless_bundle() { # ID CGROUPS_PATH RESOURCES ARGS
    bundle "$1" "$2" "$3" "$4"
    # A user namespace mapping the user alone; devpts without gid=5 (not mapped).
    sed -i -e 's/{ "type": "cgroup" }/{ "type": "cgroup" }, { "type": "user" }/' -e 's/, "gid=5"//' \
        -e 's/^\( *"cgroupsPath": .*\)$/\1 '"$maps"'/' "$W/$1/config.json"
    chmod -R a+rX "$W/$1"
}
# as_tarnu CMD: CMD as the user, from inside the delegated subtree.
as_tarnu() {
    sh -c 'echo $$ > '"$CG"'/tarn-test/deleg/shell/cgroup.procs && exec su -s /bin/sh tarnu -c "$0"' \
        "XDG_RUNTIME_DIR=$W/xdg $TARN $1" > "$W/n.out" 2>&1
}
rootless_bundle n1 /tarn-test/deleg/n1 '{ "pids": { "limit": 21 } }' '"sh", "-c", "cat /sys/fs/cgroup/pids.max; id -u"'
as_tarnu "run --bundle $W/n1 n1"
rc=$?
note "tarn run as uid 1000 exit $rc: $(tr '\n' ' ' < "$W/n.out")"
[ $rc -eq 0 ] && [ "$(head -n 2 "$W/n.out" | tr '\n' ' ')" = "21 0 " ] && [ ! -e "$CG/tarn-test/deleg/n1" ] &&
    [ -z "$(ls -A "$W/xdg/tarn" 2>/dev/null)" ]
verdict $? "(n) rootless in a delegated subtree: the container's pids.max is its limit, and nothing is left"
rootless_bundle n2 /tarn-test/n2 '{ "pids": { "limit": 21 } }' '"true"'
as_tarnu "run --bundle $W/n2 n2"
rc=$?
note "tarn run as uid 1000 outside its subtree exit $rc: $(tr '\n' ' ' < "$W/n.out")"
[ $rc -ne 0 ] && grep -q "linux.resources.pids: no cgroup is delegated to uid 1000" "$W/n.out" &&
    [ ! -e "$CG/tarn-test/n2" ]
verdict $? "(n) rootless outside its subtree: limits are refused, naming the field"

# --- (q) the warm pool on pure v2: per-request limits, and reused sandbox cgroups ----------
# A used sandbox's cgroup, once vacant, serves a later sandbox (docs/pool.md, Cgroups
# of used sandboxes): a claim's --memory/--pids must not reach the next workload.
cleanup
bundle q /unused '{ "pids": { "limit": 50 } }' '"true"'
QSOCK=$W/q.sock
printf '{"socket": "%s", "cgroupParent": "/tarn-pool", "pools": [{"name": "q", "bundle": "%s", "minIdle": 1, "maxTotal": 2, "sizing": "fixed"}]}\n' \
    "$QSOCK" "$W/q" > "$W/q.json"
"$TARN" pool serve --config "$W/q.json" > "$W/q.log" 2>&1 &
qpid=$!
n=0
until "$TARN" pool status --socket "$QSOCK" > /dev/null 2>&1 || [ $n -ge 200 ]; do n=$((n + 1)); sleep 0.1; done
qrun() { timeout 30 "$TARN" pool run --socket "$QSOCK" "$@"; }
QREAD='cat /proc/self/cgroup /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max | tr "\n" " "'
q1=$(qrun --memory 48m --pids 9 q -- sh -c "$QREAD" 2>&1)
note "claim with --memory 48m --pids 9: $q1"
[ "$q1" = "0::/ 50331648 9 " ]
verdict $? "(q) a pool claim on v2 runs in its own cgroup (its root) with the request's memory.max and pids.max"
qlast="" qok=0
for i in 1 2 3 4; do
    qlast=$(qrun q -- sh -c "$QREAD" 2>&1)
    [ "$qlast" = "0::/ max 50 " ] || qok=1
    note "claim $i without limits: $qlast"
done
qstatus=$("$TARN" pool status --socket "$QSOCK" --json 2>&1)
qreused=$(printf '%s' "$qstatus" | sed -n 's/.*"reused": *\([0-9]*\).*/\1/p')
note "pool status: $(printf '%s' "$qstatus" | cut -c1-300)"
[ $qok -eq 0 ] && [ "${qreused:-0}" -ge 1 ]
verdict $? "(q) sandboxes in reused cgroups ($qreused reused) have the template's limits back (memory.max max, pids.max 50)"
"$TARN" pool stop --socket "$QSOCK" > /dev/null 2>&1
n=0
while kill -0 "$qpid" 2>/dev/null && [ $n -lt 100 ]; do n=$((n + 1)); sleep 0.1; done
show "$W/q.log"
! kill -0 "$qpid" 2>/dev/null && [ ! -e "$CG/tarn-pool" ] && [ ! -e "$QSOCK" ]
verdict $? "(q) a stopped pool daemon leaves no cgroup (spares included) and no socket"
kill -9 "$qpid" 2>/dev/null

cleanup
[ $skipped -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
