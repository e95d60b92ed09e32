#!/usr/bin/env bash
# End-to-end: a real containerd 1.6 (Debian's `containerd` package) drives the
# runtime under test through its io.containerd.runc.v2 shim, exactly as it drives
# runc.
#
#   tests/containerd/e2e.sh RUNTIME_BINARY        (as root)
#
# RUNTIME_BINARY is tarn; `e2e.sh /usr/sbin/runc` runs the same checks against runc
# for comparison. containerd runs in a private mount namespace with a scratch dir
# bind-mounted on /run (1.6 hardcodes /run/containerd for shim sockets and fifos),
# with its own root, state, socket and config.toml; `ctr` runs in that namespace.
# Each check prints `ok - NAME` or `not ok - NAME` plus `#` detail lines; the last
# line is `N passed, M failed[, K skipped]`; exit status 0 only when M is 0.
#
# Environment: E2E_KEEP=1 keeps the scratch dir (its containerd.log, bundles) for
# debugging; E2E_CTR_TIMEOUT bounds each ctr call (default 60 s); E2E_RESTRICT_OOM=
# true|false overrides the CRI restrict_oom_score_adj setting (default: true exactly
# when this process lacks CAP_SYS_RESOURCE); E2E_VM_DIR (vmlinux and initrd.cpio from
# `tarn vm setup`) adds the VM isolation mode checks (h).
set -u
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if [ $# -ne 1 ]; then
    echo "usage: $0 RUNTIME_BINARY" >&2
    exit 2
fi
TARN=$(readlink -f -- "$1")
HERE=$(cd -- "$(dirname -- "$0")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
CTR_TIMEOUT=${E2E_CTR_TIMEOUT:-60}

PASS=0 FAIL=0 SKIP=0
DONE=0
S=""        # scratch dir
CPID=""     # containerd's pid (our child)
MNTS=()     # mount namespaces of the containerds we started
PIDS=()     # "pid starttime" of every container process seen
CGROUPS=()  # cgroupsPath of every task seen
SNAP=overlayfs

pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
skip() { SKIP=$((SKIP + 1)); echo "ok - $1 # SKIP ${2:-}"; }
fail() {
    local name=$1
    shift
    FAIL=$((FAIL + 1))
    echo "not ok - $name"
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed -e 's/^/#   /'
    done
}
# check NAME CONDITION-RESULT DETAILS...: CONDITION-RESULT is 0 for pass.
check() {
    local name=$1 good=$2
    shift 2
    if [ "$good" = 0 ]; then pass "$name"; else fail "$name" "$@"; fi
}
note() { echo "# $*"; }

tmo() { timeout -k 5 "$@"; }
# ctr in containerd's mount namespace (its fifos live under the private /run).
ctr_() { tmo "$CTR_TIMEOUT" nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" "$@"; }
# run CMD...: OUT gets stdout+stderr, RC the exit status.
run() {
    OUT=$("$@" 2>&1)
    RC=$?
}
# A command line for `script -c`, which runs it through a shell.
quoted() { printf '%q ' "$@"; }

alive() {
    local st
    st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}
starttime() { sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
# still_alive PID STARTTIME: the same process (not a reused pid) still runs.
still_alive() { alive "$1" && [ "$(starttime "$1")" = "$2" ]; }

task_field() { # task_field NS ID COLUMN(2=pid,3=status)
    ctr_ -n "$1" task ls 2>/dev/null | awk -v id="$2" -v c="$3" '$1 == id { print $c }'
}
# wait_status NS ID STATUS [TRIES of 0.2 s]: counted tries, not a deadline: the
# clock here can jump forward.
wait_status() {
    local i
    for i in $(seq "${4:-150}"); do
        [ "$(task_field "$1" "$2" 3)" = "$3" ] && return 0
        sleep 0.2
    done
    return 1
}
bundle_of() { echo "$S/state/io.containerd.runtime.v2.task/$1/$2"; }
# track NS ID: remember the task's processes and cgroup for the leftover checks.
track() {
    local pid cg p
    for p in $(ctr_ -n "$1" task ps "$2" 2>/dev/null | awk 'NR > 1 { print $1 }') \
        "$(task_field "$1" "$2" 2)"; do
        [ -n "$p" ] && [ "$p" != 0 ] && alive "$p" && PIDS+=("$p $(starttime "$p")")
    done
    cg=$(grep -o '"cgroupsPath": *"[^"]*"' "$(bundle_of "$1" "$2")/config.json" 2>/dev/null |
        sed -e 's/.*: *"//' -e 's/"$//')
    [ -n "$cg" ] && CGROUPS+=("$cg")
    return 0
}

# --- prerequisites ------------------------------------------------------------

install_prereqs() {
    local pkgs=()
    { command -v containerd && command -v ctr && command -v containerd-shim-runc-v2; } \
        >/dev/null || pkgs+=(containerd)
    [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] ||
        pkgs+=(busybox-static)
    command -v script >/dev/null || pkgs+=(bsdutils)
    { command -v unshare && command -v nsenter; } >/dev/null || pkgs+=(util-linux)
    /usr/bin/python3 -c 'import grpc' 2>/dev/null || pkgs+=(python3-grpcio)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    note "installing ${pkgs[*]}"
    tmo 600 apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
        { tmo 300 apt-get update >/dev/null 2>&1 &&
            tmo 600 apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; } ||
        note "apt-get install ${pkgs[*]} failed"
}

# An OCI image layout tarball of the busybox rootfs, written by hand: one layer, two
# image configs (two names) sharing it. docker.io/tarn/busybox:e2e runs a command
# that relies on the image's PATH; :pause sleeps forever (the CRI sandbox image).
build_image() {
    local d=$S/image lh lsz ch csz mh msz index="" name cmd
    mkdir -p "$d/blobs/sha256"
    blob() { # blob FILE -> prints its digest hex, moves it into blobs/
        local h
        h=$(sha256sum "$1" | cut -d' ' -f1)
        mv "$1" "$d/blobs/sha256/$h"
        echo "$h"
    }
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 \
        -C "$ROOTFS" -cf "$d/layer.tar" . || return 1
    lsz=$(stat -c %s "$d/layer.tar")
    lh=$(blob "$d/layer.tar")
    for name in e2e pause; do
        if [ "$name" = e2e ]; then
            cmd='"sh","-c","echo from-image-cmd; grep -o \"^[^ ]* / [^ ]*\" /proc/mounts"'
        else
            cmd='"/bin/sleep","infinity"'
        fi
        printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":[%s],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tarn tests/containerd/e2e.sh"}]}' \
            "$cmd" "$lh" >"$d/config.json"
        csz=$(stat -c %s "$d/config.json")
        ch=$(blob "$d/config.json")
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
            "$ch" "$csz" "$lh" "$lsz" >"$d/manifest.json"
        msz=$(stat -c %s "$d/manifest.json")
        mh=$(blob "$d/manifest.json")
        index="$index${index:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mh\",\"size\":$msz,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"docker.io/tarn/busybox:$name\",\"org.opencontainers.image.ref.name\":\"$name\"}}"
    done
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
        "$index" >"$d/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
    tar -C "$d" -cf "$S/busybox-oci.tar" oci-layout index.json blobs
}

# The tarn runtime entry, as a user puts it in /etc/containerd/config.toml.
runtime_entry() {
    cat <<EOF
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tarn]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tarn.options]
    BinaryName = "$TARN"
EOF
}

write_configs() {
    local common
    common="version = 2
root = \"$S/root\"
state = \"$S/state\"
[grpc]
  address = \"$S/containerd.sock\"
[ttrpc]
  address = \"$S/containerd.sock.ttrpc\"
[debug]
  level = \"debug\"
[plugins.\"io.containerd.internal.v1.opt\"]
  path = \"$S/opt\""
    # Phase 1: no CRI (fast startup); ctr selects the binary with --runc-binary.
    {
        echo 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
        echo "$common"
    } >"$S/config.toml"
    # Phase 2: CRI on, with the tarn runtime handler; the kubelet's path.
    {
        echo "$common"
        cat <<EOF
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/tarn/busybox:pause"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  restrict_oom_score_adj = $RESTRICT_OOM
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$S/cni/bin"
    conf_dir = "$S/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAP"
    default_runtime_name = "tarn"
EOF
        runtime_entry
    } >"$S/config-cri.toml"
}

start_containerd() { # start_containerd CONFIG
    local i
    echo "=== containerd --config $1" >>"$S/containerd.log"
    # setsid: a ^C to the test reaches the trap, not containerd directly.
    setsid unshare -m --propagation private \
        sh -c 'mount --bind "$1" /run && exec containerd --config "$2"' sh "$S/run" "$1" \
        >>"$S/containerd.log" 2>&1 </dev/null &
    CPID=$!
    for i in $(seq 150); do
        if [ "$(cat "/proc/$CPID/comm" 2>/dev/null)" = containerd ] && [ -S "$S/containerd.sock" ] &&
            tmo 10 nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" version >/dev/null 2>&1; then
            MNTS+=("$(readlink "/proc/$CPID/ns/mnt")")
            return 0
        fi
        alive "$CPID" || break
        sleep 0.2
    done
    return 1
}

# Deletes every task and container through ctr, as a user would.
remove_all_tasks() {
    local ns id
    for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
        for id in $(ctr_ -n "$ns" task ls -q 2>/dev/null); do
            if [ "$(task_field "$ns" "$id" 3)" != STOPPED ]; then
                ctr_ -n "$ns" task resume "$id" >/dev/null 2>&1
                ctr_ -n "$ns" task kill -a -s SIGKILL "$id" >/dev/null 2>&1
                wait_status "$ns" "$id" STOPPED 50
            fi
            ctr_ -n "$ns" task rm "$id" >/dev/null 2>&1 || ctr_ -n "$ns" task rm -f "$id" >/dev/null 2>&1
        done
        for id in $(ctr_ -n "$ns" containers ls -q 2>/dev/null); do
            ctr_ -n "$ns" containers rm "$id" >/dev/null 2>&1
        done
    done
}

stop_containerd() {
    local i
    [ -n "$CPID" ] || return 0
    if alive "$CPID"; then
        remove_all_tasks
        kill -TERM "$CPID" 2>/dev/null
        for i in $(seq 75); do alive "$CPID" || break; sleep 0.2; done
        alive "$CPID" && kill -KILL "$CPID" 2>/dev/null
    fi
    wait "$CPID" 2>/dev/null
    CPID=""
}

# Processes we started that are still there: containerd, shims (anything in the
# private mount namespaces or naming the scratch dir), container processes.
leftover_pids() {
    local p pid m i
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
        alive "$pid" || continue
        m=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
        for i in "${MNTS[@]}"; do
            [ "$m" = "$i" ] && { echo "$pid"; continue 2; }
        done
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$S/"; then echo "$pid"; fi
    done
    for i in "${PIDS[@]}"; do
        # shellcheck disable=SC2086
        still_alive $i && echo "${i%% *}"
    done
}

cgroup_roots() {
    local d
    for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
        [ -f "$d/cgroup.procs" ] && echo "$d"
    done
}
leftover_cgroups() {
    local r cg
    for cg in "${CGROUPS[@]}"; do
        for r in $(cgroup_roots); do
            [ -d "$r$cg" ] && echo "$r$cg"
        done
    done | sort -u
}

scratch_mounts() { grep -F " $S" /proc/self/mountinfo | cut -d' ' -f5; }

# Everything, forcibly, for whatever the graceful path left; quiet and idempotent.
force_cleanup() {
    local p i r m
    [ -n "$CPID" ] && { kill -KILL "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null; CPID=""; }
    for i in 1 2 3; do
        p=$(leftover_pids | sort -u)
        [ -z "$p" ] && break
        # shellcheck disable=SC2086
        kill -KILL $p 2>/dev/null
        sleep 0.5
    done
    for p in $(leftover_cgroups | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-); do
        [ -f "$p/freezer.state" ] && echo THAWED >"$p/freezer.state" 2>/dev/null
        rmdir "$p" 2>/dev/null
    done
    # The parents runc-style runtimes create (/default, /k8s.io), if we made them.
    for m in default k8s.io; do
        case " $PARENTS_BEFORE " in *" $m "*) continue ;; esac
        for r in $(cgroup_roots); do rmdir "$r/$m" 2>/dev/null; done
    done
    for m in $(scratch_mounts | sort -r); do umount -l "$m" 2>/dev/null; done
    if [ -n "$S" ] && [ -d "$S" ] && [ "${E2E_KEEP:-0}" != 1 ] && [ -z "$(scratch_mounts)" ]; then
        rm -rf --one-file-system "$S"
    fi
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$DONE" != 1 ]; then
        fail "the script stopped before the end (status $rc)"
        stop_containerd
    fi
    force_cleanup
    if [ "$SKIP" -gt 0 ]; then
        echo "$PASS passed, $FAIL failed, $SKIP skipped"
    else
        echo "$PASS passed, $FAIL failed"
    fi
    [ "$FAIL" -eq 0 ]
    exit $?
}

# --- setup --------------------------------------------------------------------

if [ "$(id -u)" != 0 ]; then
    fail "runs as root" "containerd and the runtime need root"
    echo "$PASS passed, $FAIL failed"
    exit 1
fi
if [ ! -x "$TARN" ]; then
    fail "runtime binary $1 is executable"
    echo "$PASS passed, $FAIL failed"
    exit 1
fi
T0=$(date +%s)
# CRI sandboxes ask for oomScoreAdj -998; lowering it needs CAP_SYS_RESOURCE (bit 24),
# which some hosts (this CI's VM among them) do not give even to root. There
# containerd must clamp it with restrict_oom_score_adj, as the README says.
capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
if (((0x$capeff >> 24) & 1)); then RESTRICT_OOM=false; else RESTRICT_OOM=true; fi
RESTRICT_OOM=${E2E_RESTRICT_OOM:-$RESTRICT_OOM}
install_prereqs
# Known host paths a stray containerd would use; none may appear because of us.
DEFAULT_PATHS="/run/containerd /var/lib/containerd /opt/containerd /var/run/containerd"
DEFAULT_BEFORE=$(for p in $DEFAULT_PATHS; do [ -e "$p" ] && echo "$p"; done)
RUN_BEFORE=$(ls -A /run)
PARENTS_BEFORE=$(for m in default k8s.io; do
    for r in $(cgroup_roots); do [ -d "$r/$m" ] && { echo "$m"; break; }; done
done)

S=$(mktemp -d /tmp/tarn-ctrd.XXXXXX) || exit 1
chmod 711 "$S"
trap finish EXIT
trap 'exit 130' INT TERM
TAG=$(basename "$S" | sed -e 's/.*\.//' | tr 'A-Z' 'a-z')
mkdir -p "$S/run" "$S/root" "$S/state" "$S/opt" "$S/cni/bin" "$S/cni/conf" "$S/pods"
note "runtime under test: $TARN"
note "scratch dir: $S"

for tool in containerd ctr containerd-shim-runc-v2 script unshare nsenter; do
    command -v "$tool" >/dev/null || { fail "prerequisite $tool is installed"; exit 1; }
done
note "$(containerd --version)"

run "$REPO/bundles/busybox-bundle.sh" "$S/bundle" "$TARN"
ROOTFS=$S/bundle/rootfs
if [ "$RC" -ne 0 ] || [ ! -x "$ROOTFS/bin/busybox" ]; then
    fail "busybox rootfs builds (bundles/busybox-bundle.sh)" "$OUT"
    exit 1
fi
build_image || { fail "OCI image tarball builds" "see $S/image"; exit 1; }
write_configs

if ! start_containerd "$S/config.toml"; then
    fail "containerd starts on a private socket" "$(tail -n 20 "$S/containerd.log")"
    exit 1
fi
pass "containerd starts in a private mount namespace on $S/containerd.sock"

RB=(--runc-binary "$TARN")

# --- (a) ctr run: output, stdin and exit codes ----------------------------------

id=a-hello-$TAG
run ctr_ run --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/echo hello
check "a: ctr run --rm --rootfs prints hello" "$([ "$RC" = 0 ] && [ "$OUT" = hello ]; echo $?)" \
    "exit $RC, output:" "$OUT"

id=a-exit3-$TAG
run ctr_ run --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/sh -c 'exit 3'
check "a: exit code 3 comes through ctr run" "$([ "$RC" = 3 ]; echo $?)" "exit $RC, output:" "$OUT"

id=a-stdin-$TAG
OUT=$(printf 'abcdef' | ctr_ run --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/head -c 3 2>&1)
RC=$?
check "a: stdin reaches the container (head -c 3)" "$([ "$RC" = 0 ] && [ "$OUT" = abc ]; echo $?)" \
    "exit $RC, output:" "$OUT"

id=a-kill-$TAG
# No `timeout` around this ctr: its own SIGKILL would also give 137. A counted wait
# instead, and a hang is reported as such.
nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" run --rm "${RB[@]}" --rootfs "$ROOTFS" \
    "$id" /bin/sleep infinity >"$S/a-kill.out" 2>&1 &
kpid=$!
if wait_status default "$id" RUNNING; then
    track default "$id"
    run ctr_ task kill -s SIGKILL "$id"
    for i in $(seq 300); do alive "$kpid" || break; sleep 0.2; done
    if alive "$kpid"; then
        kill -KILL "$kpid" 2>/dev/null
        wait "$kpid" 2>/dev/null
        fail "a: a task killed with ctr task kill -s SIGKILL exits 137" \
            "ctr run did not return after the kill (ctr task kill exit $RC: $OUT)"
    else
        wait "$kpid"
        RC=$?
        check "a: a task killed with ctr task kill -s SIGKILL exits 137" "$([ "$RC" = 137 ]; echo $?)" \
            "ctr run exit $RC, output:" "$(cat "$S/a-kill.out")"
    fi
else
    kill -KILL "$kpid" 2>/dev/null
    wait "$kpid" 2>/dev/null
    fail "a: a task killed with ctr task kill -s SIGKILL exits 137" "task never RUNNING:" \
        "$(cat "$S/a-kill.out")"
fi

id=a-env-$TAG
run ctr_ run --rm --env X=from-env --cwd /tmp "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/sh -c 'echo "$X $(pwd)"'
check "a: ctr run --env X=... --cwd /tmp: environment and cwd are applied" \
    "$([ "$RC" = 0 ] && [ "$OUT" = "from-env /tmp" ]; echo $?)" "exit $RC, output:" "$OUT"

id=a-ro-$TAG
run ctr_ run --rm --read-only "${RB[@]}" --rootfs "$ROOTFS" "$id" \
    /bin/sh -c 'if touch /e2e-ro-probe 2>/dev/null; then rm -f /e2e-ro-probe; echo writable; else echo read-only; fi'
check "a: ctr run --read-only gives a read-only rootfs" \
    "$([ "$RC" = 0 ] && [ "$OUT" = read-only ]; echo $?)" "exit $RC, output:" "$OUT"
rm -f "$ROOTFS/e2e-ro-probe"

id=a-seccomp-$TAG
run ctr_ run --rm --seccomp "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/grep '^Seccomp:' /proc/self/status
check "a: ctr run --seccomp applies containerd's default profile (Seccomp: 2)" \
    "$([ "$RC" = 0 ] && printf '%s' "$OUT" | grep -q '^Seccomp:[[:space:]]*2'; echo $?)" "exit $RC, output:" "$OUT"

id=a-priv-$TAG
host_capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
run ctr_ run --rm --privileged "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/grep '^CapEff:' /proc/self/status
check "a: ctr run --privileged gets every capability containerd has ($host_capeff)" \
    "$([ "$RC" = 0 ] && printf '%s' "$OUT" | grep -q "^CapEff:[[:space:]]*$host_capeff"; echo $?)" \
    "exit $RC, output:" "$OUT"

id=a-nopivot-$TAG
run ctr_ run --rm --no-pivot "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/echo no-pivot
check "a: ctr run --no-pivot (create --no-pivot) runs" "$([ "$RC" = 0 ] && [ "$OUT" = no-pivot ]; echo $?)" \
    "exit $RC, output:" "$OUT"

id=a-memory-$TAG
limit=$((64 * 1024 * 1024))
run ctr_ run -d --memory-limit "$limit" "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/sleep infinity
wait_status default "$id" RUNNING
track default "$id"
cg=${CGROUPS[${#CGROUPS[@]} - 1]:-}
got=$(cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>/dev/null ||
    cat "/sys/fs/cgroup$cg/memory.max" 2>/dev/null)
check "a: ctr run --memory-limit reaches the task's cgroup ($limit bytes)" \
    "$([ "$RC" = 0 ] && [ -n "$cg" ] && [ "$got" = "$limit" ]; echo $?)" \
    "exit $RC, cgroupsPath '$cg', limit read: '$got', output:" "$OUT"
ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1
wait_status default "$id" STOPPED
ctr_ task rm "$id" >/dev/null 2>&1
ctr_ containers rm "$id" >/dev/null 2>&1

# --- (b) a terminal -------------------------------------------------------------

id=b-tty-$TAG
run tmo 90 script -qec "$(quoted nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" \
    run -t --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/tty)" /dev/null </dev/null
pts=$(printf '%s' "$OUT" | tr -d '\r' | grep -o '/dev/pts/[0-9]*' | head -n 1)
check "b: ctr run -t gives the container a tty (tty prints /dev/pts/0)" \
    "$([ "$RC" = 0 ] && [ "$pts" = /dev/pts/0 ]; echo $?)" "exit $RC, output:" "$OUT"

id=b-exit-$TAG
run tmo 90 script -qec "$(quoted nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" \
    run -t --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/sh -c 'exit 4')" /dev/null </dev/null
check "b: exit code 4 comes through ctr run -t" "$([ "$RC" = 4 ]; echo $?)" "exit $RC, output:" "$OUT"

# --- (c) a long-running task ------------------------------------------------------

C=c-long-$TAG
run ctr_ run -d "${RB[@]}" --rootfs "$ROOTFS" "$C" /bin/sh -c 'trap "exit 42" TERM; /bin/sleep infinity & wait'
if [ "$RC" = 0 ] && wait_status default "$C" RUNNING; then
    track default "$C"
    pid=$(task_field default "$C" 2)
    pidfile=$(bundle_of default "$C")/init.pid
    content=$(cat "$pidfile" 2>/dev/null)
    check "c: ctr run -d: task RUNNING, init.pid is the bare decimal pid" \
        "$([ -n "$pid" ] && [ "$content" = "$pid" ] && [ "$(stat -c %s "$pidfile")" = "${#pid}" ]; echo $?)" \
        "task pid '$pid', init.pid:" "$(od -c "$pidfile" 2>&1 | head -n 3)"
else
    fail "c: ctr run -d: task RUNNING, init.pid is the bare decimal pid" "exit $RC, output:" "$OUT" \
        "$(ctr_ task ls 2>&1)"
fi

run ctr_ task exec --exec-id x1 "$C" /bin/sh -c 'echo exec-ok; exit 5'
check "c: ctr task exec runs a command in the task (output, exit code 5)" \
    "$([ "$RC" = 5 ] && [ "$OUT" = exec-ok ]; echo $?)" "exit $RC, output:" "$OUT"

run ctr_ task exec --exec-id xu --user 65534 --cwd /tmp "$C" /bin/sh -c 'echo "$(id -u) $(pwd)"'
check "c: ctr task exec --user 65534 --cwd /tmp: the process.json user and cwd are applied" \
    "$([ "$RC" = 0 ] && [ "$OUT" = "65534 /tmp" ]; echo $?)" "exit $RC, output:" "$OUT"

run tmo 90 script -qec "$(quoted nsenter -m -t "$CPID" ctr --address "$S/containerd.sock" \
    task exec -t --exec-id xt "$C" /bin/tty)" /dev/null </dev/null
pts=$(printf '%s' "$OUT" | tr -d '\r' | grep -o '/dev/pts/[0-9]*' | head -n 1)
check "c: ctr task exec -t gives the process a tty" "$([ "$RC" = 0 ] && [ -n "$pts" ]; echo $?)" \
    "exit $RC, output:" "$OUT"

run ctr_ task exec -d --exec-id bg "$C" /bin/sleep infinity
sleep 0.5
run ctr_ task ps "$C"
track default "$C"
npids=$(printf '%s\n' "$OUT" | awk 'NR > 1 && $1 ~ /^[0-9]+$/' | wc -l)
check "c: ctr task ps lists the init and the exec'd process" \
    "$([ "$RC" = 0 ] && [ "$npids" -ge 2 ] && printf '%s\n' "$OUT" | grep -q "^$pid "; echo $?)" \
    "exit $RC, init pid $pid, output:" "$OUT"

run ctr_ task pause "$C"
st=$(task_field default "$C" 3)
check "c: ctr task pause freezes the task (PAUSED)" "$([ "$RC" = 0 ] && [ "$st" = PAUSED ]; echo $?)" \
    "exit $RC, status $st, output:" "$OUT"
run ctr_ task resume "$C"
st=$(task_field default "$C" 3)
RC2=$RC OUT2=$OUT
run ctr_ task exec --exec-id x2 "$C" /bin/echo after-resume
check "c: ctr task resume thaws it (RUNNING, exec works)" \
    "$([ "$RC2" = 0 ] && [ "$st" = RUNNING ] && [ "$OUT" = after-resume ]; echo $?)" \
    "resume exit $RC2, status $st, output:" "$OUT2" "exec after resume: exit $RC:" "$OUT"

run ctr_ task metrics "$C"
cgpath=$(grep -o '"cgroupsPath": *"[^"]*"' "$(bundle_of default "$C")/config.json" 2>/dev/null |
    sed -e 's/.*: *"//' -e 's/"$//')
memcg=$(grep -E '^[0-9]+:([^:]*,)?memory(,[^:]*)?:' "/proc/$pid/cgroup" 2>/dev/null | cut -d: -f3)
[ -z "$memcg" ] && memcg=$(grep '^0::' "/proc/$pid/cgroup" 2>/dev/null | cut -d: -f3)
check "c: ctr task metrics reads the task's own cgroup ($cgpath)" \
    "$([ "$RC" = 0 ] && [ -n "$cgpath" ] && [ "$memcg" = "$cgpath" ]; echo $?)" \
    "metrics exit $RC; the shim reads the cgroup of the init pid $pid, which is '$memcg'," \
    "config.json linux.cgroupsPath is '$cgpath'; /proc/$pid/cgroup:" \
    "$(cat "/proc/$pid/cgroup" 2>&1)" "metrics output:" "$OUT"

run ctr_ task kill "$C"
if [ "$RC" = 0 ] && wait_status default "$C" STOPPED; then ok_kill=0; else ok_kill=1; fi
check "c: ctr task kill (SIGTERM) stops the task" "$ok_kill" "exit $RC, output:" "$OUT" \
    "$(ctr_ task ls 2>&1)"
run ctr_ task delete "$C"
left=$(ctr_ task ls -q 2>/dev/null | grep -cx "$C")
check "c: ctr task delete removes the task and the runtime's state (exit code 42 seen)" \
    "$([ "$RC" = 0 ] && [ "$left" = 0 ] && [ ! -e "$S/run/containerd/runc/default/$C" ] &&
        [ ! -e "$(bundle_of default "$C")" ] && printf '%s' "$OUT" | grep -q 'exit code 42'; echo $?)" \
    "exit $RC, still listed: $left, output:" "$OUT" "runtime state: $(ls "$S/run/containerd/runc/default" 2>&1)"
ctr_ containers rm "$C" >/dev/null 2>&1

C2=c-killall-$TAG
run ctr_ run -d "${RB[@]}" --rootfs "$ROOTFS" "$C2" /bin/sh -c '/bin/sleep infinity & wait'
wait_status default "$C2" RUNNING
ctr_ task exec -d --exec-id bg "$C2" /bin/sleep infinity >/dev/null 2>&1
sleep 0.5
before=$(ctr_ task ps "$C2" 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1 }')
track default "$C2"
run ctr_ task kill -a -s SIGKILL "$C2"
wait_status default "$C2" STOPPED
sleep 0.5
still=""
for p in $before; do alive "$p" && still="$still $p"; done
check "c: ctr task kill -a (kill --all) kills every process of the task" \
    "$([ "$RC" = 0 ] && [ -n "$before" ] && [ -z "$still" ]; echo $?)" \
    "exit $RC, pids before: $(echo $before), still alive:$still, output:" "$OUT"

run ctr_ task kill "$C2"
check "c: ctr task kill of an exited task gives NotFound (the shim matches 'container not running')" \
    "$(printf '%s' "$OUT" | grep -q 'not found'; echo $?)" "exit $RC, output:" "$OUT"

run ctr_ task rm -f "$C2"
left=$(ctr_ task ls -q 2>/dev/null | grep -cx "$C2")
check "c: ctr task rm -f (kill --all, then delete) of an exited task succeeds" \
    "$([ "$RC" = 0 ] && [ "$left" = 0 ] && [ ! -e "$S/run/containerd/runc/default/$C2" ]; echo $?)" \
    "exit $RC, still listed: $left, output:" "$OUT"
ctr_ task rm "$C2" >/dev/null 2>&1
ctr_ containers rm "$C2" >/dev/null 2>&1

# --- (d) an OCI image, by reference -----------------------------------------------

run ctr_ image import "$S/busybox-oci.tar"
if [ "$RC" != 0 ]; then
    note "import with overlayfs failed: $OUT"
    SNAP=native
    run ctr_ image import --snapshotter native "$S/busybox-oci.tar"
fi
names=$(ctr_ image ls -q 2>/dev/null)
check "d: ctr image import of the hand-built OCI layout tarball (snapshotter $SNAP)" \
    "$([ "$RC" = 0 ] && printf '%s\n' "$names" | grep -qx docker.io/tarn/busybox:e2e; echo $?)" \
    "exit $RC, output:" "$OUT" "images:" "$names"
write_configs # the CRI phase uses the snapshotter that worked

id=d-image-$TAG
run ctr_ run --rm --snapshotter "$SNAP" "${RB[@]}" docker.io/tarn/busybox:e2e "$id"
want_root=overlay
[ "$SNAP" = native ] && want_root=""
check "d: ctr run by image reference runs the image's Cmd with its PATH on a $SNAP rootfs" \
    "$([ "$RC" = 0 ] && printf '%s\n' "$OUT" | grep -qx from-image-cmd &&
        printf '%s\n' "$OUT" | grep -q " / $want_root"; echo $?)" "exit $RC, output:" "$OUT"

id=d-exit-$TAG
run ctr_ run --rm --snapshotter "$SNAP" "${RB[@]}" docker.io/tarn/busybox:e2e "$id" sh -c 'exit 9'
check "d: exit code 9 from an image-based container" "$([ "$RC" = 9 ]; echo $?)" "exit $RC, output:" "$OUT"

# --- (e) failures show the runtime's own error text ---------------------------------

no_leftover() { # no_leftover ID: nothing of a failed create stays behind
    [ -z "$(ctr_ containers ls -q 2>/dev/null | grep -x "$1")" ] &&
        [ -z "$(ctr_ task ls -q 2>/dev/null | grep -x "$1")" ] &&
        [ ! -e "$S/run/containerd/runc/default/$1" ] && [ ! -e "$(bundle_of default "$1")" ]
}
id=e-mount-$TAG
run ctr_ run --rm "${RB[@]}" --mount type=bind,src=/no/such,dst=/x,options=rbind --rootfs "$ROOTFS" "$id" /bin/true
check "e: a failed create (bind mount of /no/such) shows the runtime's error in ctr's output" \
    "$([ "$RC" != 0 ] && printf '%s' "$OUT" | grep -q 'OCI runtime create failed.*/no/such'; echo $?)" \
    "exit $RC, output:" "$OUT"
note "ctr said: $(printf '%s' "$OUT" | grep 'OCI runtime' | head -n 1)"
check "e: the failed create leaves no container, task, bundle or runtime state" \
    "$(no_leftover "$id"; echo $?)" "containers: $(ctr_ containers ls -q 2>&1)" \
    "runtime state: $(ls -A "$S/run/containerd/runc/default" 2>&1)"

id=e-exec-$TAG
run ctr_ run --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /no/such/binary
check "e: a missing executable is reported with its path" \
    "$([ "$RC" != 0 ] && printf '%s' "$OUT" | grep -q 'OCI runtime create failed.*/no/such/binary'; echo $?)" \
    "exit $RC, output:" "$OUT"
note "ctr said: $(printf '%s' "$OUT" | grep 'OCI runtime' | head -n 1)"
check "e: ... and leaves nothing behind" "$(no_leftover "$id"; echo $?)" \
    "containers: $(ctr_ containers ls -q 2>&1)" "runtime state: $(ls -A "$S/run/containerd/runc/default" 2>&1)"

# --- (i) seccomp without noNewPrivileges; a start that fails ----------------------
# What a Kubernetes RuntimeDefault pod sends: containerd's default profile with
# noNewPrivileges off (--allow-new-privs) and the default capabilities, which lack
# CAP_SYS_ADMIN; the kernel loads such a filter only for a process that has it.
id=i-seccomp-nnp-$TAG
run ctr_ run --rm --seccomp --allow-new-privs "${RB[@]}" --rootfs "$ROOTFS" "$id" \
    /bin/grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status
check "i: ctr run --seccomp --allow-new-privs runs the workload filtered, with the default capabilities" \
    "$([ "$RC" = 0 ] && printf '%s' "$OUT" | grep -q '^Seccomp:[[:space:]]*2' &&
        printf '%s' "$OUT" | grep -q '^NoNewPrivs:[[:space:]]*0' &&
        printf '%s' "$OUT" | grep -q '^CapEff:[[:space:]]*00000000a80425fb'; echo $?)" "exit $RC, output:" "$OUT"

# The workload cannot start after create succeeded: a file that exists (create checks
# that) but is not executable. The shim's start must fail with the init's own words.
id=i-start-fails-$TAG
printf 'not a program\n' > "$ROOTFS/e2e-not-exec"
chmod 0644 "$ROOTFS/e2e-not-exec"
run ctr_ run --rm "${RB[@]}" --rootfs "$ROOTFS" "$id" /e2e-not-exec
rm -f "$ROOTFS/e2e-not-exec"
check "i: a workload that cannot be executed fails ctr run with the exec error" \
    "$([ "$RC" != 0 ] && printf '%s' "$OUT" | grep -q 'e2e-not-exec.*permission denied'; echo $?)" \
    "exit $RC, output:" "$OUT"
note "ctr said: $(printf '%s' "$OUT" | grep -i 'failed' | head -n 1)"
ctr_ task delete -f "$id" >/dev/null 2>&1 || true
ctr_ containers delete "$id" >/dev/null 2>&1 || true
check "i: ... and leaves nothing behind" "$(no_leftover "$id"; echo $?)" \
    "containers: $(ctr_ containers ls -q 2>&1)" "runtime state: $(ls -A "$S/run/containerd/runc/default" 2>&1)"

# --- (h) VM isolation mode through the shim ------------------------------------------
# E2E_VM_DIR holds vmlinux and initrd.cpio (tests/vm/setup.sh); the bundle asks for a VM
# with annotations, which is all a containerd user can pass to the runtime.

if [ -n "${E2E_VM_DIR:-}" ] && [ -s "$E2E_VM_DIR/initrd.cpio" ] && [ -s "$E2E_VM_DIR/vmlinux" ]; then
    VM=(--annotation tarn.isolation=vm --annotation "tarn.vm.kernel=$E2E_VM_DIR/vmlinux"
        --annotation "tarn.vm.initrd=$E2E_VM_DIR/initrd.cpio")
    id=h-vm-$TAG
    run ctr_ run --rm "${RB[@]}" "${VM[@]}" --rootfs "$ROOTFS" "$id" /bin/sh -c 'uname -r; exit 5'
    check "h: ctr run with annotation tarn.isolation=vm runs in the guest's kernel, exit code 5 comes back" \
        "$([ "$RC" = 5 ] && [ -n "$OUT" ] && [ "$OUT" != "$(uname -r)" ]; echo $?)" \
        "exit $RC, output (host kernel $(uname -r)):" "$OUT"
    id=h-vm-stdin-$TAG
    OUT=$(printf 'abcdef' | ctr_ run --rm "${RB[@]}" "${VM[@]}" --rootfs "$ROOTFS" "$id" /bin/head -c 3 2>&1)
    RC=$?
    check "h: stdin reaches a VM-mode container (head -c 3)" "$([ "$RC" = 0 ] && [ "$OUT" = abc ]; echo $?)" \
        "exit $RC, output:" "$OUT"
    id=h-vm-exec-$TAG
    run ctr_ run -d "${RB[@]}" "${VM[@]}" --rootfs "$ROOTFS" "$id" /bin/sleep 600
    run ctr_ task exec --exec-id e1 "$id" /bin/sh -c 'uname -r; exit 6'
    check "h: ctr task exec in a VM-mode task runs in the guest (exit code 6)" \
        "$([ "$RC" = 6 ] && [ -n "$OUT" ] && [ "$OUT" != "$(uname -r)" ]; echo $?)" "exit $RC, output:" "$OUT"
    run ctr_ task kill -s SIGKILL "$id"
    for _ in $(seq 1 100); do
        ctr_ task ls 2>/dev/null | grep -q "^$id .*STOPPED" && break
        sleep 0.1
    done
    run ctr_ task rm "$id"
    rc_rm=$RC
    run ctr_ container rm "$id"
    check "h: ctr task kill + rm of a VM-mode task" "$([ "$rc_rm" = 0 ] && [ "$RC" = 0 ]; echo $?)" \
        "task rm exit $rc_rm, container rm: exit $RC $OUT"
    check "h: no QEMU is left after the VM-mode tasks" "$(pgrep -f "tarn-vm:h-vm-" >/dev/null; [ $? = 1 ]; echo $?)" \
        "$(pgrep -af "tarn-vm:h-vm-")"
else
    skip "h: VM isolation mode through containerd" "E2E_VM_DIR has no vmlinux and initrd.cpio"
fi

# --- (f) the config.toml runtime entry ----------------------------------------------

id=f-explicit-$TAG
run ctr_ run --rm --runtime io.containerd.runc.v2 "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/echo via-runc-v2
check "f: ctr run --runtime io.containerd.runc.v2 --runc-binary (what ctr 1.6 offers)" \
    "$([ "$RC" = 0 ] && [ "$OUT" = via-runc-v2 ]; echo $?)" "exit $RC, output:" "$OUT"

# ctr 1.6 never reads the CRI runtimes table (its --runtime-config-path is only for
# non-runc shims); the CRI plugin does. So restart containerd with CRI on and drive
# the kubelet's calls with runtime_handler "tarn".
stop_containerd
run containerd --config "$S/config-cri.toml" config dump
check "f: containerd parses the tarn runtime entry (config dump shows BinaryName)" \
    "$([ "$RC" = 0 ] && printf '%s\n' "$OUT" | grep -A20 'containerd.runtimes.tarn\]' | grep -q 'runtime_type = "io.containerd.runc.v2"' &&
        printf '%s\n' "$OUT" | grep -q "BinaryName = \"$TARN\""; echo $?)" \
    "exit $RC, output:" "$(printf '%s\n' "$OUT" | grep -A8 'runtimes.tarn' | head -n 20)"

if start_containerd "$S/config-cri.toml"; then
    pass "f: containerd restarts with the CRI plugin and the tarn runtime entry"
    expect_oom=-998
    [ "$RESTRICT_OOM" = true ] && expect_oom=$(cat "/proc/$CPID/oom_score_adj")
    note "restrict_oom_score_adj = $RESTRICT_OOM (CAP_SYS_RESOURCE $([ "$RESTRICT_OOM" = true ] && echo missing || echo present))"
    run ctr_ -n k8s.io image import ${SNAP:+--snapshotter "$SNAP"} "$S/busybox-oci.tar"
    [ "$RC" = 0 ] || fail "f: image import into the k8s.io namespace" "$OUT"
    if /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
        run tmo 600 /usr/bin/python3 "$HERE/cri_check.py" --socket "$S/containerd.sock" --handler tarn \
            --binary "$TARN" --image docker.io/tarn/busybox:e2e --state-dir "$S/state" \
            --log-dir "$S/pods" --tag "$TAG" --expect-oom "$expect_oom"
        while IFS= read -r line; do
            case $line in
            "ok - "*) PASS=$((PASS + 1)); echo "$line" ;;
            "not ok - "*) FAIL=$((FAIL + 1)); echo "$line" ;;
            "# cgroup "*) CGROUPS+=("${line#\# cgroup }") ;;
            "# pid "*) PIDS+=("${line#\# pid }") ;;
            *) echo "$line" ;;
            esac
        done <<<"$OUT"
        printf '%s\n' "$OUT" | grep -q '^ok - \|^not ok - ' ||
            fail "f: the CRI checks ran" "exit $RC, output:" "$OUT"
    else
        skip "f: CRI checks" "python3-grpcio is not installed"
    fi
else
    fail "f: containerd restarts with the CRI plugin and the tarn runtime entry" \
        "$(tail -n 20 "$S/containerd.log")"
fi

# --- (h) the warm pool, through an OCI annotation ------------------------------------

# The pool's template is the config containerd itself generates for `ctr run
# --rootfs` (so bundles from containerd match it), on the same rootfs. A bundle
# annotated tarn.pool=NAME is then started from that pool by the `tarn create` the
# shim runs; nothing in containerd changes.
P=h-probe-$TAG
POOLSOCK=$S/pool.sock
POOLCG=/tarn-e2e-pool-$TAG
run ctr_ run -d "${RB[@]}" --rootfs "$ROOTFS" "$P" /bin/sleep infinity
if [ "$RC" = 0 ] && wait_status default "$P" RUNNING; then
    track default "$P"
    mkdir -p "$S/pool-tmpl"
    /usr/bin/python3 - "$(bundle_of default "$P")/config.json" "$S/pool-tmpl/config.json" "$ROOTFS" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["root"] = {"path": sys.argv[3], "readonly": False}
c.pop("annotations", None)
json.dump(c, open(sys.argv[2], "w"))
PY
    VMPOOL=
    if [ -n "${VM:-}" ]; then
        # A VM pool too, from the same template asking for a VM as the bundles will.
        mkdir -p "$S/pool-tmpl-vm"
        /usr/bin/python3 - "$S/pool-tmpl/config.json" "$S/pool-tmpl-vm/config.json" "$E2E_VM_DIR" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
d = sys.argv[3]
c["annotations"] = {"tarn.isolation": "vm", "tarn.vm.kernel": d + "/vmlinux", "tarn.vm.initrd": d + "/initrd.cpio"}
json.dump(c, open(sys.argv[2], "w"))
PY
        VMPOOL=$(printf ', {"name": "e2evm", "bundle": "%s", "minIdle": 1, "maxTotal": 2}' "$S/pool-tmpl-vm")
    fi
    printf '{"socket": "%s", "cgroupParent": "%s", "pools": [{"name": "e2e", "bundle": "%s", "minIdle": 2, "maxTotal": 4}%s]}\n' \
        "$POOLSOCK" "$POOLCG" "$S/pool-tmpl" "$VMPOOL" >"$S/pool.json"
    "$TARN" pool serve --config "$S/pool.json" >"$S/pool.log" 2>&1 &
    POOLPID=$!
    # A VM pool's daemon serves once its template's snapshot is made and a VM is up.
    for _ in $(seq 600); do "$TARN" pool status --socket "$POOLSOCK" >/dev/null 2>&1 && break; sleep 0.1; done
fi
ctr_ task kill -s SIGKILL "$P" >/dev/null 2>&1
wait_status default "$P" STOPPED 50
ctr_ task rm "$P" >/dev/null 2>&1
ctr_ containers rm "$P" >/dev/null 2>&1

if [ -n "${POOLPID:-}" ] && "$TARN" pool status --socket "$POOLSOCK" >/dev/null 2>&1; then
    pass "h: a pool daemon serves a template made from containerd's own config"
    id=h-warm-$TAG
    run ctr_ run --rm "${RB[@]}" --annotation tarn.pool=e2e --annotation "tarn.pool.socket=$POOLSOCK" \
        --rootfs "$ROOTFS" "$id" /bin/sh -c 'echo warm; exit 6'
    leases=$("$TARN" pool status --json --socket "$POOLSOCK" | /usr/bin/python3 -c \
        'import json,sys; print(json.load(sys.stdin)["pools"][0]["leases"])')
    check "h: ctr run --annotation tarn.pool=e2e starts from the pool (output, exit code 6, 1 lease)" \
        "$([ "$RC" = 6 ] && [ "$OUT" = warm ] && [ "$leases" = 1 ]; echo $?)" \
        "exit $RC, leases $leases, output:" "$OUT" "pool daemon log:" "$(tail -n 5 "$S/pool.log")"
    id=h-cold-$TAG
    run ctr_ run --rm "${RB[@]}" --annotation tarn.pool=e2e --annotation "tarn.pool.socket=$POOLSOCK" \
        --memory-limit 67108864 --rootfs "$ROOTFS" "$id" /bin/echo cold
    leases=$("$TARN" pool status --json --socket "$POOLSOCK" | /usr/bin/python3 -c \
        'import json,sys; print(json.load(sys.stdin)["pools"][0]["leases"])')
    check "h: a bundle whose resources differ from the template starts cold, as without the pool" \
        "$([ "$RC" = 0 ] && [ "$OUT" = cold ] && [ "$leases" = 1 ]; echo $?)" "exit $RC, leases $leases, output:" "$OUT"
    if [ -n "$VMPOOL" ]; then
        # The OCI path of a VM pool: the shim's `tarn create` borrows a booted VM, which
        # runs the bundle on containerd's rootfs; exec and kill work as for any VM task.
        pool_field() {
            "$TARN" pool status --json --socket "$POOLSOCK" | /usr/bin/python3 -c \
                'import json,sys; print([p for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]][0][sys.argv[2]])' \
                "$1" "$2"
        }
        wait_idle() { for _ in $(seq 300); do [ "$(pool_field e2evm idle)" -ge 1 ] && return 0; sleep 0.1; done; return 1; }
        wait_idle
        id=h-warm-vm-$TAG
        run ctr_ run --rm "${RB[@]}" "${VM[@]}" --annotation tarn.pool=e2evm --annotation "tarn.pool.socket=$POOLSOCK" \
            --rootfs "$ROOTFS" "$id" /bin/sh -c 'uname -r; exit 7'
        leases=$(pool_field e2evm leases)
        check "h: ctr run --annotation tarn.pool=e2evm of a VM bundle borrows a pool VM (guest kernel, exit code 7, 1 lease)" \
            "$([ "$RC" = 7 ] && [ -n "$OUT" ] && [ "$OUT" != "$(uname -r)" ] && [ "$leases" = 1 ]; echo $?)" \
            "exit $RC, leases $leases, output (host kernel $(uname -r)):" "$OUT" "pool daemon log:" "$(tail -n 5 "$S/pool.log")"
        wait_idle
        id=h-warm-vm-exec-$TAG
        run ctr_ run -d "${RB[@]}" "${VM[@]}" --annotation tarn.pool=e2evm --annotation "tarn.pool.socket=$POOLSOCK" \
            --rootfs "$ROOTFS" "$id" /bin/sleep 600
        run ctr_ task exec --exec-id e1 "$id" /bin/sh -c 'uname -r; exit 8'
        leases=$(pool_field e2evm leases)
        check "h: ctr task exec in a task on a borrowed VM runs in the guest (exit code 8, 2 leases)" \
            "$([ "$RC" = 8 ] && [ -n "$OUT" ] && [ "$OUT" != "$(uname -r)" ] && [ "$leases" = 2 ]; echo $?)" \
            "exit $RC, leases $leases, output:" "$OUT"
        run ctr_ task kill -s SIGKILL "$id"
        wait_status default "$id" STOPPED 100
        run ctr_ task rm "$id"
        rc_rm=$RC
        run ctr_ container rm "$id"
        check "h: ctr task kill + rm of a task on a borrowed VM" "$([ "$rc_rm" = 0 ] && [ "$RC" = 0 ]; echo $?)" \
            "task rm exit $rc_rm, container rm: exit $RC $OUT"
    fi
    "$TARN" pool stop --now --socket "$POOLSOCK" >/dev/null 2>&1
    wait "$POOLPID" 2>/dev/null
    if [ -n "$VMPOOL" ]; then
        check "h: no QEMU of the VM pool is left" "$(pgrep -f "tarn-vm:e2evm-" >/dev/null; [ $? = 1 ]; echo $?)" \
            "$(pgrep -af "tarn-vm:e2evm-")"
    fi
    left=$(for r in $(cgroup_roots); do [ -d "$r$POOLCG" ] && echo "$r$POOLCG"; done)
    check "h: after the containers and the daemon, no pool cgroup is left" "$([ -z "$left" ]; echo $?)" "$left"
else
    fail "h: a pool daemon serves a template made from containerd's own config" "$(cat "$S/pool.log" 2>/dev/null)"
    [ -n "${POOLPID:-}" ] && kill -9 "$POOLPID" 2>/dev/null
fi

# --- (p) mount propagation of a bind volume (self-contained) -------------------------
# A tmpfs marked shared in containerd's mount namespace (where the shim runs the
# runtime) is bound into a task with `rbind:rshared`. The task sees a mount made under
# the source beforehand; whether its own mount under the volume reaches the source
# depends on rootfsPropagation: unset (rslave) no, rshared yes (Kubernetes
# Bidirectional), when this ctr can ask for it.
ctr_ns() { nsenter -m -t "$CPID" "$@"; }
PSRC=$S/prop-src
mkdir -p "$PSRC"
if ctr_ns sh -c "mount -t tmpfs tmpfs '$PSRC' && mount --make-shared '$PSRC' &&
                 mkdir '$PSRC/h' && mount -t tmpfs tmpfs '$PSRC/h' && echo host > '$PSRC/h/f'"; then
    PVOL="type=bind,src=$PSRC,dst=/vol,options=rbind:rshared"
    PCMD='cat /vol/h/f; mkdir -p /vol/c-$0 && mount -t tmpfs tmpfs /vol/c-$0 && echo inside > /vol/c-$0/f'
    id=p-slave-$TAG
    run ctr_ run --rm --privileged --mount "$PVOL" "${RB[@]}" --rootfs "$ROOTFS" "$id" /bin/sh -c "$PCMD" slave
    check "p: an rbind:rshared volume shows a mount made on the host under its shared source" \
        "$([ "$RC" = 0 ] && [ "$OUT" = host ]; echo $?)" "exit $RC, output:" "$OUT"
    check "p: ... and with rootfsPropagation unset (rslave) the task's own mount stays inside" \
        "$(ctr_ns test ! -e "$PSRC/c-slave/f"; echo $?)" "$(ctr_ns ls -la "$PSRC/c-slave" 2>&1)"
    if ctr_ run --help 2>&1 | grep -q -- '--rootfs-propagation'; then
        id=p-shared-$TAG
        run ctr_ run --rm --privileged --rootfs-propagation rshared --mount "$PVOL" "${RB[@]}" \
            --rootfs "$ROOTFS" "$id" /bin/sh -c "$PCMD" shared
        check "p: with rootfsPropagation rshared the task's mount under the volume appears on the host" \
            "$([ "$RC" = 0 ] && [ "$(ctr_ns cat "$PSRC/c-shared/f" 2>&1)" = inside ]; echo $?)" \
            "exit $RC, output:" "$OUT"
    else
        skip "p: rootfsPropagation rshared (Bidirectional) through ctr" "this ctr has no --rootfs-propagation"
    fi
    ctr_ns umount -R "$PSRC"
else
    fail "p: a shared tmpfs can be made in containerd's mount namespace"
fi

# --- (g) after stopping containerd, nothing is left ---------------------------------

if [ "$FAIL" -gt 0 ]; then
    note "containerd.log (last lines, errors):"
    grep -E 'level=(error|warning)' "$S/containerd.log" | tail -n 15 | sed -e 's/^/#   /'
fi
stop_containerd
sleep 0.5
left=$(leftover_pids | sort -u)
details=()
for p in $left; do details+=("$p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"); done
check "g: no containerd, shim or container process is left" "$([ -z "$left" ]; echo $?)" "${details[@]}"
m=$(scratch_mounts)
check "g: no mount under the scratch dir" "$([ -z "$m" ]; echo $?)" "$m"
cgs=$(leftover_cgroups)
check "g: no cgroup of any task is left" "$([ -z "$cgs" ]; echo $?)" "$cgs"
run_new=$(comm -13 <(printf '%s\n' "$RUN_BEFORE" | sort) <(ls -A /run | sort))
default_new=$(comm -13 <(printf '%s\n' "$DEFAULT_BEFORE" | sort) \
    <(for p in $DEFAULT_PATHS; do [ -e "$p" ] && echo "$p"; done | sort))
check "g: nothing new in /run or at containerd's default host paths" \
    "$([ -z "$run_new" ] && [ -z "$default_new" ]; echo $?)" "new in /run: $run_new" "new: $default_new"
force_cleanup
if [ "${E2E_KEEP:-0}" = 1 ]; then
    skip "g: the scratch dir is removed" "E2E_KEEP=1 keeps $S"
else
    check "g: the scratch dir is removed" "$([ ! -e "$S" ]; echo $?)" "$(ls -A "$S" 2>&1 | head -n 5)"
fi
note "run time: $(($(date +%s) - T0)) s"
DONE=1
exit 0
