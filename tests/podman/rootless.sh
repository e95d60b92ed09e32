#!/usr/bin/env bash
# Rootless podman (Debian's podman 4.3) driving the runtime under test, as a user of a
# developer's laptop or a CI runner would: a user made here, with /etc/subuid ranges,
# storage in its home, a busybox image imported from a tarball, `--network none`.
# Every check runs with tarn and again with runc under the same podman, and any
# difference is reported (runc is the reference; a difference in tarn's disfavour fails).
#
#   tests/podman/rootless.sh TARN          (as root)
#
# Each check prints `ok - NAME` or `not ok - NAME` with `#` detail lines; the last line
# is `N passed, M failed[, K skipped]`; exit 0 only when M is 0; 77 (skip) when podman
# cannot be installed.
set -u
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

[ $# -eq 1 ] || { echo "usage: $0 TARN" >&2; exit 2; }
TARN_SRC=$(readlink -f -- "$1")
HERE=$(cd -- "$(dirname -- "$0")" && pwd)
REPO=$(cd -- "$HERE/../.." && pwd)
U=tarn-podman

PASS=0 FAIL=0 SKIP=0
pass() { PASS=$((PASS + 1)); echo "ok - $1"; }
skip() { SKIP=$((SKIP + 1)); echo "ok - $1 # SKIP ${2:-}"; }
fail() {
    FAIL=$((FAIL + 1))
    echo "not ok - $1"
    shift
    printf '%s\n' "$@" | sed -e 's/^/#   /'
}

pkgs=()
for p in podman uidmap runc slirp4netns catatonit; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "# installing ${pkgs[*]}"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >/dev/null 2>&1 ||
        { echo "skip: cannot install ${pkgs[*]}"; exit 77; }
fi

S=""
cleanup() {
    # podman leaves a pause process holding its user namespace; the user goes with it.
    pkill -KILL -u "$U" 2>/dev/null && sleep 0.2
    userdel -r "$U" >/dev/null 2>&1
    [ -z "$S" ] || rm -rf "$S"
}
trap cleanup EXIT
cleanup  # a user left by an earlier run that was killed
S=$(mktemp -d /tmp/tarn-podman.XXXXXX)
chmod 755 "$S"
useradd --create-home --shell /bin/sh "$U" || { echo "skip: useradd failed"; exit 77; }
grep -q "^$U:" /etc/subuid || echo "$U:3000000:65536" >>/etc/subuid
grep -q "^$U:" /etc/subgid || echo "$U:3000000:65536" >>/etc/subgid
UID_=$(id -u "$U")
# What the user may execute: a copy of tarn (the build may sit under a home only root reads).
cp "$TARN_SRC" "$S/tarn"
chmod 755 "$S/tarn"
mkdir -m 700 "$S/xdg" && chown "$U:" "$S/xdg"
rootfs=$(mktemp -d "$S/rootfs.XXXXXX")
sh "$REPO/bundles/busybox-bundle.sh" "$rootfs" "$S/tarn" >/dev/null 2>&1 || { echo "skip: busybox bundle"; exit 77; }
tar -C "$rootfs/rootfs" -cf "$S/busybox.tar" .
chmod 644 "$S/busybox.tar"

# as_user CMD: runs CMD (a shell line) as the user, in its login environment.
as_user() {
    timeout -k 5 120 setpriv --reuid "$UID_" --regid "$(id -g "$U")" --init-groups \
        env -i HOME="/home/$U" USER="$U" LOGNAME="$U" XDG_RUNTIME_DIR="$S/xdg" PATH="$PATH" \
        sh -c "cd ~ && $1" 2>&1
}
OUT=$(as_user "podman import $S/busybox.tar localhost/busybox")
[ $? = 0 ] || { fail "podman import of the busybox tarball" "$OUT"; echo "$PASS passed, $FAIL failed"; exit 1; }
as_user "mkdir -p vol && echo from-host > vol/f" >/dev/null

# pr RUNTIME ARGS...: `podman --runtime RUNTIME ARGS` as the user; OUT and RC.
pr() {
    local rt=$1
    shift
    OUT=$(as_user "podman --runtime $rt $*")
    RC=$?
}

# compare NAME EXPECTED-RC GREP-PATTERN PODMAN-ARGS...: runs with tarn and runc; tarn
# must exit EXPECTED-RC with output matching the pattern; runc's result is reported
# beside it when it differs.
compare() {
    local name=$1 want_rc=$2 pattern=$3
    shift 3
    pr "$S/tarn" "$@"
    local t_rc=$RC t_out=$OUT
    pr /usr/sbin/runc "$@"
    local r_rc=$RC r_out=$OUT
    if [ "$t_rc" = "$want_rc" ] && printf '%s' "$t_out" | grep -Eq -- "$pattern"; then
        pass "$name"
    else
        fail "$name" "tarn: exit $t_rc, output:" "$t_out" "runc: exit $r_rc, output:" "$r_out"
        return
    fi
    if [ "$r_rc" != "$t_rc" ] || ! printf '%s' "$r_out" | grep -Eq -- "$pattern"; then
        echo "# differs from runc (exit $r_rc): $(printf '%s' "$r_out" | tr '\n' ' ' | cut -c1-300)"
    fi
}

N="--network none localhost/busybox"
compare "run --rm: output and exit code 3" 3 '^hello$' run --rm $N sh -c "'echo hello; exit 3'"
compare "root in the container is the user on the host" 0 "0 +$UID_ +1" run --rm $N cat /proc/self/uid_map
compare "--user 1000:1000" 0 'uid=1000.*gid=1000' run --rm --user 1000:1000 $N id
compare "-v HOSTDIR:/vol" 0 '^from-host$' run --rm -v "/home/$U/vol:/vol" $N cat /vol/f
compare "--read-only: the root refuses writes" 0 'Read-only file system' run --rm --read-only $N sh -c "'touch /x; true'"
compare "default seccomp profile, noNewPrivileges off" 0 'Seccomp:.2' run --rm $N grep -E "'Seccomp:|NoNewPrivs:'" /proc/self/status
compare "a missing executable fails the run" 127 'no-such-binary' run --rm $N /no-such-binary

# run -d, exec, stop, rm (tarn only: the lifecycle through conmon).
pr "$S/tarn" run -d --name life $N sleep 600
rc_run=$RC
pr "$S/tarn" exec life sh -c "'echo in-exec; exit 4'"
rc_exec=$RC out_exec=$OUT
pr "$S/tarn" stop -t 1 life
rc_stop=$RC
pr "$S/tarn" rm life
rc_rm=$RC
if [ "$rc_run" = 0 ] && [ "$rc_exec" = 4 ] && [ "$out_exec" = in-exec ] && [ "$rc_stop" = 0 ] && [ "$rc_rm" = 0 ]; then
    pass "run -d, exec (exit 4), stop, rm"
else
    fail "run -d, exec (exit 4), stop, rm" "run $rc_run, exec $rc_exec ($out_exec), stop $rc_stop, rm $rc_rm"
fi
left=$(ls -A "$S/xdg/tarn" 2>/dev/null)
[ -z "$left" ] && pass "no runtime state is left in \$XDG_RUNTIME_DIR/tarn" || fail "no runtime state is left" "$left"

echo "$PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
