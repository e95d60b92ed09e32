// VM pools, end to end under TCG: a real daemon (`tarn pool serve`) whose template
// asks for VM isolation keeps microVMs booted with the container parked in the guest;
// claims go through `tarn pool run`, as for a process pool.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "cgroups/cgroups.hpp"
#include "../integration/harness.hpp"
#include "../integration/profiles.hpp"

using namespace tarn::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string vm_dir() {
    return TARN_VM_DIR;
}

// A daemon with one VM pool "v" on a private socket and cgroup parent.
class VmPool : public ::testing::Test {
protected:
    void SetUp() override {
        REQUIRE_ROOT();
        if (vm_dir().empty() || !path_exists(vm_dir() + "/initrd.cpio"))
            GTEST_SKIP() << "TARN_VM_DIR has no vmlinux and initrd.cpio (run tests/vm/setup.sh)";
        sock = tmpl.scratch("run") + "/pool.sock";
        cgparent = "/tarn-vm-pool-test-" + std::to_string(::getpid());
        log_path = tmpl.scratch("log") + "/daemon.log";
        cfg_path = tmpl.dir() + "/pool.json";
        // As containerd passes them: the annotations ask for the VM (TCG: these tests are
        // about the pool, not the accelerator).
        tmpl.config["annotations"]["tarn.isolation"] = "vm";
        tmpl.config["annotations"]["tarn.vm.accel"] = "tcg";
        tmpl.config["annotations"]["tarn.vm.kernel"] = vm_dir() + "/vmlinux";
        tmpl.config["annotations"]["tarn.vm.initrd"] = vm_dir() + "/initrd.cpio";
        tmpl.cmd("true");
    }
    void TearDown() override {
        if (daemon && daemon->pid > 0) {
            pool({"stop", "--now"});
            if (daemon->wait(30000ms) < 0) daemon->kill(SIGKILL);
        }
        // Whatever a failed test left: the pool's processes and cgroups.
        auto top = tarn::cgroups::open(cgparent, tarn::cgroups::detect());
        if (top->exists()) {
            top->kill_all(SIGKILL);
            eventually([&] { return top->pids().empty(); }, 10000ms);
            sh("find /sys/fs/cgroup -depth -type d -path '*" + cgparent + "*' -exec rmdir {} + 2>/dev/null");
        }
    }

    json config(unsigned min_idle, unsigned max_total) const {
        json p = {{"name", "v"},           {"bundle", tmpl.dir()}, {"minIdle", min_idle},
                  {"maxTotal", max_total}, {"sizing", "fixed"},    {"vmRefill", refill}};
        return {{"socket", sock}, {"cgroupParent", cgparent}, {"pools", json::array({p})}};
    }

    // Starts the daemon; returns once it serves (its first VM booted).
    void serve(unsigned min_idle, unsigned max_total) {
        tmpl.write();
        write_text(cfg_path, config(min_idle, max_total).dump(2));
        daemon = std::make_unique<Background>(
            std::vector<std::string>{TARN_BINARY, "--debug", "pool", "serve", "--config", cfg_path}, log_path);
        bool up = eventually(
            [&] {
                if (::waitpid(daemon->pid, nullptr, WNOHANG) == daemon->pid) {
                    daemon->pid = -1;
                    return true;
                }
                return pool({"status", "--json"}).code == 0;
            },
            90000ms);
        ASSERT_TRUE(up && daemon->pid > 0) << "daemon did not come up:\n" << read_text(log_path);
    }

    Result pool(std::vector<std::string> args, const std::string& input = "") const {
        args.insert(args.begin() + 1, {"--socket", sock});
        args.insert(args.begin(), "pool");
        return tarn::test::tarn(args, tmpl.root(), ".", input);
    }
    Result run(const std::string& script, const std::string& input = "") const {
        return pool({"run", "v", "--", "sh", "-c", script}, input);
    }
    json status() const {
        Result r = pool({"status", "--json"});
        EXPECT_EQ(r.code, 0) << r.err;
        return r.code == 0 ? json::parse(r.out)["pools"][0] : json::object();
    }
    // Waits until `n` VMs are idle.
    bool idle(unsigned n) const {
        return eventually([&] { return status().value("idle", 0u) >= n; }, 90000ms);
    }
    // QEMU processes of this pool's VMs (-name tarn-vm:v-<daemon pid>-N).
    std::vector<pid_t> qemus() const { return processes_matching("tarn-vm:v-"); }
    std::vector<pid_t> virtiofsds() const { return processes_matching(sock + ".vm/"); }

    Bundle tmpl;
    std::string refill = "restore";  // how VMs are made: from a snapshot, or booted
    std::string sock, cgparent, log_path, cfg_path;
    std::unique_ptr<Background> daemon;
};

TEST_F(VmPool, ServesClaimsInTheGuestKernelOneVmEach) {
    // A writable root: each VM writes to an overlay of its own.
    tmpl.config["root"]["readonly"] = false;
    serve(2, 3);
    ASSERT_TRUE(idle(2)) << read_text(log_path);
    json st = status();
    EXPECT_EQ(st.value("kind", ""), "vm");
    // Restored from the template's snapshot, not booted.
    EXPECT_NE(read_text(log_path).find("restored from"), std::string::npos) << read_text(log_path);

    std::string host_kernel = sh("uname -r").out;
    std::string guest_kernel = read_text(vm_dir() + "/kernel-version");
    Result r = run(
        "uname -r; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; "
        "echo; cat; echo to-stderr >&2; echo one > /marker; exit 7",
        "from-stdin\n");
    ASSERT_EQ(r.code, 7) << r.out << r.err << read_text(log_path);
    std::istringstream lines(r.out);
    std::string kernel1, boot1, rng1, in1;
    std::getline(lines, kernel1);
    std::getline(lines, boot1);
    std::getline(lines, rng1);
    std::getline(lines, in1);
    // The workload ran in the guest's kernel, not the host's.
    EXPECT_NE(kernel1 + "\n", host_kernel);
    if (!guest_kernel.empty()) {
        EXPECT_NE(guest_kernel.find(kernel1), std::string::npos) << guest_kernel;
    }
    EXPECT_EQ(in1, "from-stdin");
    EXPECT_NE(r.err.find("to-stderr"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("to-stderr"), std::string::npos);

    // The second claim gets another VM: its own boot, its own entropy, and nothing the
    // first one wrote.
    Result r2 = run(
        "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "
        "test -e /marker && echo marker-seen; exit 0");
    ASSERT_EQ(r2.code, 0) << r2.err << read_text(log_path);
    std::istringstream lines2(r2.out);
    std::string boot2, rng2;
    std::getline(lines2, boot2);
    std::getline(lines2, rng2);
    EXPECT_NE(boot1, boot2) << "two claims ran in the same VM";
    EXPECT_EQ(rng1.size(), 32u);
    EXPECT_NE(rng1, rng2) << "two VMs gave the same random bytes";
    EXPECT_EQ(r2.out.find("marker-seen"), std::string::npos) << "the second VM saw the first one's write";
    // The template's root on the host is untouched.
    std::string rootfs = tmpl.config["root"]["path"].get<std::string>();
    if (rootfs[0] != '/') rootfs = tmpl.dir() + "/" + rootfs;
    EXPECT_FALSE(path_exists(rootfs + "/marker"));

    // A missing program: the claim fails with the guest's reason.
    Result r4 = pool({"run", "v", "--", "/no/such/program"});
    EXPECT_NE(r4.code, 0);
    EXPECT_NE(r4.err.find("/no/such/program"), std::string::npos) << r4.err;
    // A host bind cannot join a booted VM: refused by name.
    Result r5 = pool({"run", "--bind", "/tmp:/mnt", "v", "--", "true"});
    EXPECT_NE(r5.code, 0);
    EXPECT_NE(r5.err.find("binds"), std::string::npos) << r5.err;

    st = status();
    EXPECT_GE(st.value("hits", 0u), 2u);
    // Every VM is used once: as many QEMUs as the pool holds, no more.
    EXPECT_TRUE(eventually([&] { return qemus().size() <= status().value("total", 0u); }, 10000ms));

    // Stopped, the daemon leaves nothing: no VM, no snapshot or VM file, no cgroup.
    ASSERT_EQ(pool({"stop"}).code, 0);
    EXPECT_EQ(daemon->wait(30000ms), 0) << read_text(log_path);
    EXPECT_TRUE(qemus().empty());
    EXPECT_FALSE(path_exists(sock + ".vm")) << "the VM directory (snapshot) is left";
    EXPECT_FALSE(tarn::cgroups::open(cgparent, tarn::cgroups::detect())->exists()) << "the pool cgroup is left";
}

// What a Kubernetes pod with RuntimeDefault sends (noNewPrivileges false, uid 1000,
// the default capabilities, the default seccomp profile): the guest's parked init
// loads the filter at claim time, as a process sandbox's does.
TEST_F(VmPool, RuntimeDefaultSeccompWithoutNoNewPrivilegesHoldsInTheGuestWorkload) {
    tmpl.config["process"]["noNewPrivileges"] = false;
    tmpl.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    tarn::test::set_capabilities(tmpl.config["process"], tarn::test::docker_default_caps());
    tmpl.config["linux"]["seccomp"] = tarn::test::runtime_default_profile();
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    Result r = run("grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; id -u");
    EXPECT_EQ(r.code, 0) << r.err << read_text(log_path);
    EXPECT_EQ(r.out, "CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n1000\n");
}

TEST_F(VmPool, EveryVmIsChargedToItsSandboxCgroupUnderThePool) {
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    std::vector<pid_t> q = qemus();
    ASSERT_FALSE(q.empty());
    auto mode = tarn::cgroups::detect();
    for (pid_t pid : q) {
        std::string cg = read_text("/proc/" + std::to_string(pid) + "/cgroup");
        EXPECT_NE(cg.find(cgparent + "/v/v-"), std::string::npos) << "QEMU " << pid << " is outside the pool:\n" << cg;
    }
    for (pid_t pid : virtiofsds()) {
        std::string cg = read_text("/proc/" + std::to_string(pid) + "/cgroup");
        EXPECT_NE(cg.find(cgparent + "/v/v-"), std::string::npos) << "virtiofsd " << pid << " is outside the pool";
    }
    // The budget sees the guest: the pool's memory use includes the VM's.
    auto top = tarn::cgroups::open(cgparent + "/v", mode);
    EXPECT_GT(top->stats().memory.usage.usage, 32ull << 20);
}

TEST_F(VmPool, KilledDaemonLeavesNoVmAndARestartServes) {
    // Booted VMs (virtio-fs root where virtiofsd is found): the other refill.
    refill = "boot";
    serve(2, 3);
    ASSERT_TRUE(idle(2)) << read_text(log_path);
    // One busy, the other idle.
    auto busy = std::make_unique<Background>(
        std::vector<std::string>{TARN_BINARY, "pool", "run", "--socket", sock, "v", "--", "sleep", "300"},
        tmpl.scratch("log") + "/busy.out");
    ASSERT_TRUE(eventually([&] { return status().value("allocated", 0u) == 1; }, 30000ms));
    ASSERT_FALSE(qemus().empty());
    daemon->kill(SIGKILL);
    daemon->wait();
    // QEMU and virtiofsd go with their monitors, which go with the daemon.
    EXPECT_TRUE(eventually([&] { return qemus().empty() && virtiofsds().empty(); }, 10000ms))
        << "left: " << qemus().size() << " QEMU, " << virtiofsds().size() << " virtiofsd";
    EXPECT_NE(busy->wait(10000ms), 0) << "the client of a killed daemon must not see success";

    // A new daemon removes what is left (cgroups, files) and serves.
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    Result r = run("echo again");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "again\n");
}

TEST_F(VmPool, AClaimWhoseVmDiedIsServedByAnother) {
    serve(2, 3);
    ASSERT_TRUE(idle(2)) << read_text(log_path);
    std::vector<pid_t> q = qemus();
    ASSERT_EQ(q.size(), 2u);
    // One VM dies while idle (its QEMU killed): the pool notices, counts it lost and
    // hands the claim to the other one.
    ::kill(q[0], SIGKILL);
    Result r = run("echo served");
    EXPECT_EQ(r.code, 0) << r.err << read_text(log_path);
    EXPECT_EQ(r.out, "served\n");
    EXPECT_TRUE(eventually([&] { return status().value("lost", 0u) == 1; }, 10000ms)) << status().dump();
}

TEST_F(VmPool, ATemplateWhoseKernelIsMissingFailsTheDaemonNamingIt) {
    tmpl.config["annotations"]["tarn.vm.kernel"] = tmpl.dir() + "/no-vmlinux";
    tmpl.write();
    write_text(cfg_path, config(1, 2).dump(2));
    Result r = tarn::test::tarn({"pool", "serve", "--config", cfg_path}, tmpl.root());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("no-vmlinux"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(sock));
    EXPECT_TRUE(qemus().empty());
}

// The OCI path (what containerd's shim runs): `tarn run`/`create` of a VM-isolated
// bundle annotated with the pool borrows a booted VM. The bundle keeps its own root
// (containerd mounts one per container) and bind mounts, attached to the VM's staging
// share at create; the container's monitor is the caller's child, and delete leaves
// nothing of the VM.
class VmPoolOci : public VmPool {
protected:
    void SetUp() override {
        VmPool::SetUp();
        if (IsSkipped()) return;
        // A root of its own, unlike the template's: the shared busybox tree, copied.
        std::string link = own.dir() + "/rootfs";
        shared = sh("readlink -f " + link).out;
        while (!shared.empty() && shared.back() == '\n') shared.pop_back();
        ASSERT_EQ(sh("rm " + link + " && cp -a " + shared + " " + link + " && echo own-root > " + link + "/own-marker").code,
                  0);
        rootfs = link;
        own.config["root"] = {{"path", "rootfs"}, {"readonly", false}};
        for (const char* k : {"tarn.isolation", "tarn.vm.accel", "tarn.vm.kernel", "tarn.vm.initrd"})
            own.config["annotations"][k] = tmpl.config["annotations"][k];
        own.config["annotations"]["tarn.pool"] = "v";
        own.config["annotations"]["tarn.pool.socket"] = sock;
        // A read-only bind of a host directory, as CRI binds /etc/hosts and volumes.
        std::string data = own.scratch("data");
        write_text(data + "/in", "from-the-host\n");
        own.config["mounts"].push_back(
            {{"destination", "/data"}, {"type", "bind"}, {"source", data}, {"options", {"rbind", "ro"}}});
    }
    // The pool VM named in create's debug log ("from pool v (VM v-...)").
    static std::string lent_vm(const std::string& log) {
        size_t at = log.find("from pool v (VM ");
        if (at == std::string::npos) return "";
        at += 16;
        return log.substr(at, log.find(')', at) - at);
    }
    bool vm_gone(const std::string& name) const {
        return processes_matching("tarn-vm:" + name + " ").empty() && !path_exists(sock + ".vm/" + name);
    }
    Bundle own;
    std::string rootfs, shared;
};

TEST_F(VmPoolOci, RunBorrowsAVmThatRunsTheBundlesOwnRootAndBinds) {
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    std::string guest_kernel = read_text(vm_dir() + "/kernel-version");
    own.cmd("cat /own-marker /data/in; uname -r; echo written > /written; "
            "echo x > /data/x 2>/dev/null && echo data-writable; exit 3");
    Result r = own.tarn({"--debug", "run", "oci1"});
    ASSERT_EQ(r.code, 3) << r.out << r.err << read_text(log_path);
    std::string vm = lent_vm(r.err);
    ASSERT_FALSE(vm.empty()) << "not from the pool:\n" << r.err;
    EXPECT_NE(r.out.find("own-root\nfrom-the-host\n"), std::string::npos) << r.out;
    // The guest's kernel, not the host's.
    EXPECT_EQ(r.out.find(sh("uname -r").out), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("data-writable"), std::string::npos) << "a read-only bind was writable";
    // The bundle's own root got the write; the template's did not.
    EXPECT_EQ(read_text(rootfs + "/written"), "written\n");
    EXPECT_FALSE(path_exists(shared + "/written"));
    json st = status();
    EXPECT_EQ(st.value("leases", 0u), 1u) << st.dump();
    // The lent VM is gone with the container: its QEMU, its directory.
    EXPECT_TRUE(eventually([&] { return vm_gone(vm); }, 10000ms)) << vm;
    // The pool refills and serves claims as before.
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    Result c = run("echo claim");
    EXPECT_EQ(c.code, 0) << c.err;
    EXPECT_EQ(c.out, "claim\n");
}

TEST_F(VmPoolOci, CreateStartKillDeleteOfABorrowedVm) {
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    own.cmd("echo started > /started; exec sleep 300");
    Result r = own.tarn({"--debug", "create", "--bundle", own.dir(), "oci2"});
    ASSERT_EQ(r.code, 0) << r.err << read_text(log_path);
    std::string vm = lent_vm(r.err);
    ASSERT_FALSE(vm.empty()) << "not from the pool:\n" << r.err;
    json state = json::parse(own.tarn({"state", "oci2"}).out);
    EXPECT_EQ(state.value("status", ""), "created");
    EXPECT_FALSE(path_exists(rootfs + "/started")) << "the workload ran before start";
    // The daemon no longer holds the VM: stopping it leaves the container running.
    ASSERT_EQ(pool({"stop"}).code, 0);
    EXPECT_EQ(daemon->wait(30000ms), 0) << read_text(log_path);
    daemon.reset();
    ASSERT_EQ(own.tarn({"start", "oci2"}).code, 0);
    EXPECT_TRUE(eventually([&] { return path_exists(rootfs + "/started"); }, 10000ms));
    state = json::parse(own.tarn({"state", "oci2"}).out);
    EXPECT_EQ(state.value("status", ""), "running");
    // The container's pid is its monitor, the caller's child's descendant: kill reaches it.
    ASSERT_EQ(own.tarn({"kill", "oci2", "KILL"}).code, 0);
    EXPECT_TRUE(eventually([&] { return json::parse(own.tarn({"state", "oci2"}).out).value("status", "") == "stopped"; },
                           10000ms));
    ASSERT_EQ(own.tarn({"delete", "oci2"}).code, 0);
    EXPECT_TRUE(eventually([&] { return vm_gone(vm); }, 10000ms)) << vm;
    EXPECT_FALSE(tarn::cgroups::open(cgparent + "/v/" + vm, tarn::cgroups::detect())->exists());
}

// What a Kubernetes pod with RuntimeDefault sends through containerd (uid 1000,
// noNewPrivileges false, the default capabilities and seccomp profile), on a
// borrowed VM: the bundle's own process settings hold in the guest.
TEST_F(VmPoolOci, ARuntimeDefaultPodConfigHoldsOnABorrowedVm) {
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    own.config["process"]["noNewPrivileges"] = false;
    own.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    tarn::test::set_capabilities(own.config["process"], tarn::test::docker_default_caps());
    own.config["linux"]["seccomp"] = tarn::test::runtime_default_profile();
    own.cmd("grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; id -u; cat /own-marker");
    Result r = own.tarn({"--debug", "run", "oci4"});
    EXPECT_EQ(r.code, 0) << r.err << read_text(log_path);
    EXPECT_FALSE(lent_vm(r.err).empty()) << "not from the pool:\n" << r.err;
    EXPECT_EQ(r.out, "CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n1000\nown-root\n");
}

TEST_F(VmPoolOci, ABundleWhoseVmDiffersStartsColdSayingWhy) {
    serve(1, 2);
    ASSERT_TRUE(idle(1)) << read_text(log_path);
    // More memory than the pool's VMs have: a VM of its own, booted.
    own.config["linux"]["resources"]["memory"]["limit"] = 200 << 20;
    own.cmd("echo cold");
    Result r = own.tarn({"--debug", "run", "oci3"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "cold\n");
    EXPECT_NE(r.err.find("cold start, not from pool v: pool v: the bundle's VM differs from the pool's in memoryMib"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(status().value("leases", 0u), 0u);
}

}  // namespace
