#!/usr/bin/env python3
"""CPU per pool claim from `perf script -F comm,pid,ip,sym` of a system-wide
cpu-clock recording with call graphs (bench/pool-profile.sh)."""
import argparse
import collections
import re

ROLES = ("spawner", "init", "workload", "daemon", "client", "kworker", "ksoftirqd", "rcu")
# Kernel thread work items worth naming.
WORK = ("cleanup_net", "css_killed_work_fn", "css_free_rwork_fn", "css_release_work_fn", "rcu_do_batch",
        "rcu_core")


def samples(path):
    cur = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur:
                yield cur
            cur = None
        elif line[0] not in " \t":
            head = line.split()
            cur = (" ".join(head[:-1]), head[-1], [])
        elif cur:
            parts = line.split(None, 1)
            cur[2].append(parts[1].strip() if len(parts) > 1 else "?")
    if cur:
        yield cur


def role(comm, pid, daemon, spawners):
    if pid == daemon:
        return "daemon"
    if pid in spawners:
        return "spawner"
    if comm == "tarn-spawner":
        return "init"  # a sandbox init is cloned from a spawner and keeps its name until exec
    if comm == "true":
        return "workload"
    if comm.startswith("tarn-openloop"):
        return "client"
    for k in ("kworker", "ksoftirqd", "rcu"):
        if comm.startswith(k):
            return k
    return "idle" if comm == "swapper" else "other: " + comm


def activity(stack):
    call = None
    for frame in stack:  # innermost first: the last match is the outermost call
        m = re.match(r"__(?:x64|do|se)_sys_(\w+)", frame)
        if m:
            call = m.group(1)
    if call:
        return call
    if "asm_exc_page_fault" in stack:
        return "page fault"
    if "ret_from_fork" in stack or "ret_from_fork_asm" in stack:
        for frame in stack:
            if frame in WORK:
                return frame
        return "kernel thread"
    if any(f.startswith("exit_to_user_mode") for f in stack):
        return "return to user (task work)"
    if stack and stack[0] == "[unknown]":
        return "user"
    return "other"


MOUNT_CALLS = {"mount", "umount", "openat2", "open_tree", "move_mount", "mount_setattr", "fsopen", "fsmount",
               "fsconfig", "pivot_root", "mkdirat", "mknodat", "symlinkat", "unlinkat", "fchownat"}
CGROUP_CALLS = {"mkdir", "rmdir", "openat", "newfstatat", "access", "getdents64", "read", "write", "close"}


def concern(r, act):
    """A coarse grouping of (role, activity) by what the work is for."""
    if act == "clone3" or act == "cleanup_net":
        return "clone3 with new namespaces, and the network namespace's cleanup"
    if act.startswith("css_") or (r == "spawner" and act in CGROUP_CALLS):
        return "cgroups: the spawners' cgroup files and directories, css work in kworkers"
    if r == "init" and act in MOUNT_CALLS:
        return "mounts (init: rootfs, /proc, /dev, /sys, cgroup binds, masks)"
    if r == "spawner" and act.startswith("return to user"):
        return "mount teardown (task work of the mount namespace's last close)"
    if r == "workload" or (r == "init" and act == "execve"):
        return "the workload: execve, its run, its exit"
    if r in ("ksoftirqd", "rcu") or act in ("rcu_do_batch", "rcu_core"):
        return "RCU callbacks"
    if act == "user":
        return "user space (daemon, spawners, inits, clients)"
    if act == "page fault":
        return "page faults (spawners, inits, daemon, clients)"
    return "other: IPC, prctl, exit and wait calls, context switches, unnamed kernel work"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("perf_script")
    ap.add_argument("--claims", type=int, required=True)
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--spawners", required=True, help="comma-separated pids")
    ap.add_argument("--hz", type=float, default=4000, help="perf's sampling frequency (cpu-clock default 4000)")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    spawners = set(a.spawners.split(","))
    by_role, by_both, by_concern, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for comm, pid, stack in samples(a.perf_script):
        total += 1
        r = role(comm, pid, a.daemon, spawners)
        by_role[r] += 1
        if r in ROLES:
            act = activity(stack)
            by_both[(r, act)] += 1
            by_concern[concern(r, act)] += 1
    ms = 1000 / a.hz / max(a.claims, 1)
    pool = sum(by_role[r] for r in ROLES)
    print(f"\nCPU per claim: {pool * ms:.2f} ms ({pool} of {total} samples are the pool's)\n")
    print("| role | ms per claim | share of the pool's CPU |\n| --- | ---: | ---: |")
    for r in ROLES:
        print(f"| {r} | {by_role[r] * ms:.3f} | {100 * by_role[r] / max(pool, 1):.1f}% |")
    print("\n| for | ms per claim | share |\n| --- | ---: | ---: |")
    for c, n in by_concern.most_common():
        print(f"| {c} | {n * ms:.3f} | {100 * n / max(pool, 1):.1f}% |")
    others = [(r, n) for r, n in by_role.items() if r not in ROLES]
    print("\nNot the pool's: " + ", ".join(f"{r} {100 * n / total:.1f}%" for r, n in sorted(others, key=lambda x: -x[1])))
    print(f"\n| role | in | ms per claim | share |\n| --- | --- | ---: | ---: |")
    for (r, act), n in by_both.most_common(a.top):
        print(f"| {r} | {act} | {n * ms:.3f} | {100 * n / max(pool, 1):.1f}% |")


if __name__ == "__main__":
    main()
