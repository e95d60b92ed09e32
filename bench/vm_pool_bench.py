#!/usr/bin/env python3
"""VM pools against cold VMs, process pools and cold containers, in one run.

start->exit of /bin/true (busybox) measured by the wall clock around each command:
  vm pool       `tarn pool run` on a pool of pre-booted VMs (a claim per run; the
                benchmark waits for an idle VM before each run, so every run is a hit)
  vm pool, OCI  `tarn run` of the bundle annotated tarn.pool (what containerd's shim
                runs): create borrows a pre-booted VM and the bundle's own root is
                attached to it; create, start, exit and delete in one command
  vm cold       `tarn --isolation vm run` of the same bundle (a whole boot)
  process pool  `tarn pool run` on a process pool of the same bundle
  cold          `tarn run` of the same bundle
Then, per pre-booted VM: its idle cost (PSS of the monitor, QEMU and virtiofsd, and
its cgroup's memory use) and its boot CPU (its cgroup's CPU time when it went idle),
and the refill rate: VMs made per second while the pool fills from empty.

  bench/vm-pool.sh [BUILD_DIR]   (RUNS=10 by default; writes bench/results/vm-pool.md
                                  and vm-pool.svg)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
top = os.path.dirname(here)
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(top, "build"))
tarn = os.path.join(build, "runtime", "tarn")
runs = int(os.environ.get("RUNS", "10"))
vmdir = os.path.join(build, "vm")
results = os.path.join(here, "results")


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, capture_output=True, text=True, **kw)


def timed(argv):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    t1 = time.perf_counter()
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr}")
    return (t1 - t0) * 1000


def cgroup_dir(controller, path):
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup" + path
    return f"/sys/fs/cgroup/{controller}{path}"


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Daemon:
    def __init__(self, work, name, bundle, cfg_extra, min_idle, max_total):
        self.sock = os.path.join(work, name + ".sock")
        self.cgparent = f"/tarn-bench-{name}-{os.getpid()}"
        pool = {"name": name, "bundle": bundle, "minIdle": min_idle, "maxTotal": max_total, "sizing": "fixed"}
        pool.update(cfg_extra)
        cfg = {"socket": self.sock, "cgroupParent": self.cgparent, "pools": [pool]}
        self.cfg_path = os.path.join(work, name + ".json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.name = name
        self.log = open(os.path.join(work, name + ".log"), "w")
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen([tarn, "--debug", "pool", "serve", "--config", self.cfg_path],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def status(self):
        p = subprocess.run([tarn, "pool", "status", "--socket", self.sock, "--json"], capture_output=True, text=True)
        return json.loads(p.stdout)["pools"][0] if p.returncode == 0 else None

    def wait_idle(self, n, limit=300):
        end = time.time() + limit
        while time.time() < end:
            st = self.status()
            if st and st["idle"] >= n:
                return st
            if self.proc.poll() is not None:
                sys.exit(f"pool daemon {self.name} exited: see {self.log.name}")
            time.sleep(0.05)
        sys.exit(f"pool {self.name}: {n} idle sandboxes not ready within {limit} s")

    def run(self):
        return timed([tarn, "pool", "run", "--socket", self.sock, self.name, "--", "/bin/true"])

    def stop(self):
        subprocess.run([tarn, "pool", "stop", "--socket", self.sock, "--now"], capture_output=True)
        self.proc.wait(timeout=60)


def cgroup_cpu_s(path):
    for f, scale in ((cgroup_dir("cpuacct", path) + "/cpuacct.usage", 1e-9),):
        try:
            with open(f) as fh:
                return int(fh.read()) * scale
        except OSError:
            pass
    try:
        with open(cgroup_dir("cpu", path) + "/cpu.stat") as fh:
            for line in fh:
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) * 1e-6
    except OSError:
        pass
    return 0.0


def measure_vm_pool(work, vm_bundle, mode, fill=4):
    """A fixed VM pool of `fill` made by `mode` (restore or boot): idle cost, refill
    time and CPU per VM, idle CPU, and `runs` claims of /bin/true."""
    d = Daemon(work, "vm" + mode, vm_bundle, {"vmRefill": mode}, fill, fill + 1)
    d.wait_idle(fill)
    pool_cg = d.cgparent + "/" + d.name
    idle = []
    base_cg = cgroup_dir("pids", pool_cg)
    for name in sorted(os.listdir(base_cg)):
        p = os.path.join(base_cg, name)
        if not os.path.isdir(p):
            continue
        with open(os.path.join(p, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
        mem = 0
        for cand in ("memory.usage_in_bytes", "memory.current"):
            try:
                with open(os.path.join(cgroup_dir("memory", pool_cg + "/" + name), cand)) as f:
                    mem = int(f.read())
                    break
            except OSError:
                pass
        idle.append({"pss_mib": sum(pss_kib(pid) for pid in pids) / 1024, "cgroup_mib": mem / 2**20})
    # What idle VMs cost in CPU (TCG emulates the guest's idle loop and timer ticks).
    c0, t0 = cgroup_cpu_s(pool_cg), time.perf_counter()
    time.sleep(5)
    idle_cpu_pct = (cgroup_cpu_s(pool_cg) - c0) / (time.perf_counter() - t0) / fill * 100
    # Refill: all `fill` claimed at once, then the time and CPU until `fill` are idle again.
    c0 = cgroup_cpu_s(pool_cg)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([tarn, "pool", "run", "--socket", d.sock, d.name, "--", "/bin/true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for _ in range(fill)]
    for p in procs:
        p.wait()
    d.wait_idle(fill)
    refill_s = time.perf_counter() - t0
    refill_cpu = (cgroup_cpu_s(pool_cg) - c0) / fill
    oci = []
    if mode == "restore":
        # The OCI path: a bundle of its own (as containerd gives each container) on the
        # same root, annotated with the pool.
        ob = os.path.join(work, "ocibundle")
        os.makedirs(ob, exist_ok=True)
        if not os.path.exists(os.path.join(ob, "rootfs")):
            os.symlink(os.readlink(os.path.join(vm_bundle, "rootfs")), os.path.join(ob, "rootfs"))
        with open(os.path.join(vm_bundle, "config.json")) as f:
            c = json.load(f)
        c["annotations"].update({"tarn.pool": d.name, "tarn.pool.socket": d.sock})
        with open(os.path.join(ob, "config.json"), "w") as f:
            json.dump(c, f)
        root = os.path.join(work, "state")
        before = d.status()["leases"]
        for i in range(runs):
            d.wait_idle(fill)
            oci.append(timed([tarn, "--root", root, "run", "--bundle", ob, f"oci{i}"]))
        if d.status()["leases"] - before != runs:
            sys.exit(f"OCI path: {d.status()['leases'] - before} of {runs} runs borrowed a VM")
    claims = []
    for _ in range(runs):
        # The pool refilled first: a claim measured alone, as the cold VM start is,
        # not beside a refill's restore competing for the same 2 cores.
        d.wait_idle(fill)
        claims.append(d.run())
    st = d.status()
    d.stop()
    return {"claims": claims, "oci": oci, "status": st, "idle": idle, "idle_cpu_pct": idle_cpu_pct, "refill_s": refill_s,
            "refill_cpu_s": refill_cpu, "fill": fill, "make_ms": st["sizing"]["makeMs"]}


def main():
    if os.geteuid() != 0:
        sys.exit("needs root")
    if not os.path.exists(os.path.join(vmdir, "initrd.cpio")):
        subprocess.run([os.path.join(top, "tests/vm/setup.sh"), tarn,
                        os.environ.get("TARN_GUEST_CACHE", os.path.join(build, "guest-cache")), vmdir], check=True,
                       stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="tarn-bench-vmpool-")
    try:
        bundle = os.path.join(work, "bundle")
        sh("sh", os.path.join(top, "bundles/busybox-bundle.sh"), bundle, tarn, "--", "/bin/true")
        with open(os.path.join(bundle, "config.json")) as f:
            base = json.load(f)
        vm_bundle = os.path.join(work, "vmbundle")
        os.makedirs(vm_bundle)
        os.symlink(os.path.join(bundle, "rootfs"), os.path.join(vm_bundle, "rootfs"))
        vm = json.loads(json.dumps(base))
        vm.setdefault("annotations", {}).update({
            "tarn.isolation": "vm", "tarn.vm.accel": "tcg",
            "tarn.vm.kernel": os.path.join(vmdir, "vmlinux"), "tarn.vm.initrd": os.path.join(vmdir, "initrd.cpio")})
        with open(os.path.join(vm_bundle, "config.json"), "w") as f:
            json.dump(vm, f)
        root = os.path.join(work, "state")
        rows = {}

        measured = {}
        for mode in ("restore", "boot"):
            measured[mode] = measure_vm_pool(work, vm_bundle, mode)
        rows["vm pool"] = measured["restore"]["claims"]
        rows["vm pool (booted VMs)"] = measured["boot"]["claims"]
        rows["vm pool, OCI path"] = measured["restore"]["oci"]
        st = measured["restore"]["status"]
        idle = measured["restore"]["idle"]

        vm_cold = []
        for i in range(max(3, runs // 2)):
            vm_cold.append(timed([tarn, "--root", root, "run", "--bundle", vm_bundle, f"vmcold{i}"]))
        rows["vm cold"] = vm_cold

        pp = Daemon(work, "pp", bundle, {}, 2, 4)
        pp.wait_idle(2)
        proc_pool = []
        for _ in range(runs * 3):
            pp.wait_idle(1)
            proc_pool.append(pp.run())
        pp.stop()
        rows["process pool"] = proc_pool
        cold = [timed([tarn, "--root", root, "run", "--bundle", bundle, f"cold{i}"]) for i in range(runs * 3)]
        rows["cold"] = cold

        med = {k: statistics.median(v) for k, v in rows.items()}
        kernel = open(os.path.join(vmdir, "kernel-version")).read().strip()
        out = []
        out.append(f"# VM pools (" + time.strftime("%Y-%m-%d") + f", {os.cpu_count()} cores, host kernel "
                   f"{os.uname().release}, guest {kernel}, TCG)\n")
        out.append("`bash bench/vm-pool.sh build`: busybox `/bin/true`, start→exit by the wall clock around each "
                   "command; VM pool runs wait for the pool to be full again first (every run a hit, none beside a refill). Only ratios within this run "
                   "mean anything.\n")
        out.append("| mode | runs | median (ms) | min (ms) | cold VM / it |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        order = ("vm pool", "vm pool (booted VMs)", "vm pool, OCI path", "vm cold", "process pool", "cold")
        for k in order:
            out.append(f"| {k} | {len(rows[k])} | {med[k]:.1f} | {min(rows[k]):.1f} | {med['vm cold'] / med[k]:.1f} |")
        ratio = med["vm pool"] / med["vm cold"]
        out.append("")
        out.append(f"VM pool / cold VM start: **{ratio:.3f}** (target ≤ 0.05: "
                   f"{'met' if ratio <= 0.05 else 'missed'}); daemon-side claim latency (request → workload "
                   f"exec'd in the guest) p50 {st['claimLatencyMs']['p50']:.1f} ms, p99 "
                   f"{st['claimLatencyMs']['p99']:.1f} ms. The OCI path (`tarn run` of a bundle annotated with "
                   f"the pool, borrowing a VM): **{med['vm pool, OCI path'] / med['vm cold']:.3f}** of a cold VM start.\n")
        out.append("## Making VMs: restore against boot (256 MiB guest, 1 vCPU)\n")
        spawners = min(8, max(2, 2 * (os.cpu_count() or 1)))
        out.append(f"Per VM, with the pool refilling 4 at once ({spawners} in the making at a time, the daemon's "
                   "default): the daemon's make time "
                   "(start → container parked in the guest), the wall time and the CPU (the VMs' cgroups) of the "
                   "refill divided by 4, the CPU an idle VM burns, and its memory.\n")
        out.append("| refill | make (ms) | refill of 4 (s) | VMs/s | CPU per VM (s) | idle CPU per VM | PSS per idle VM (MiB) | cgroup memory (MiB) |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for mode in ("restore", "boot"):
            m = measured[mode]
            pss = statistics.median(v["pss_mib"] for v in m["idle"]) if m["idle"] else 0
            cgm = statistics.median(v["cgroup_mib"] for v in m["idle"]) if m["idle"] else 0
            out.append(f"| {mode} | {m['make_ms']:.0f} | {m['refill_s']:.2f} | {m['fill'] / m['refill_s']:.2f} | "
                       f"{m['refill_cpu_s']:.2f} | {m['idle_cpu_pct']:.1f}% | {pss:.1f} | {cgm:.1f} |")
        r, b = measured["restore"], measured["boot"]
        out.append("")
        out.append(f"Restore makes a VM {b['make_ms'] / max(r['make_ms'], 1):.1f}× faster than a boot with "
                   f"{b['refill_cpu_s'] / max(r['refill_cpu_s'], 1e-3):.1f}× less CPU. Idle PSS target ≤ 48 MiB: "
                   f"{'met' if statistics.median(v['pss_mib'] for v in r['idle']) <= 48 else 'missed'}.\n")
        out.append("![start→exit by mode](vm-pool.svg)\n")
        os.makedirs(results, exist_ok=True)
        with open(os.path.join(results, "vm-pool.md"), "w") as f:
            f.write("\n".join(out) + "\n")
        # A log-scale bar chart of the medians.
        import math
        w, h, left, bar = 640, 280, 150, 30
        lmax = math.log10(max(med.values()) * 2)
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
               f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
               f'<text x="10" y="18" font-size="14">start→exit of /bin/true, median ms (log scale)</text>']
        for i, k in enumerate(order):
            y = 35 + i * (bar + 10)
            length = max(2, (math.log10(max(med[k], 1)) / lmax) * (w - left - 80))
            svg.append(f'<text x="10" y="{y + 20}">{k}</text>')
            svg.append(f'<rect x="{left}" y="{y}" width="{length:.0f}" height="{bar}" '
                       f'fill="{"#2b7bb9" if k.startswith("vm") else "#8fbc5a"}"/>')
            svg.append(f'<text x="{left + length + 5:.0f}" y="{y + 20}">{med[k]:.1f}</text>')
        svg.append("</svg>")
        with open(os.path.join(results, "vm-pool.svg"), "w") as f:
            f.write("\n".join(svg) + "\n")
        print("\n".join(out))
    finally:
        subprocess.run(["sh", "-c", f"for id in $(ls {work}/state 2>/dev/null); do {tarn} --root {work}/state "
                        f"delete --force $id; done"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


main()
