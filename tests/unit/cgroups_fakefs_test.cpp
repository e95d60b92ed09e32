// The managers, pools and stats readers against a fake cgroupfs: a temporary
// directory laid out like /sys/fs/cgroup, with the interface files the kernel
// would show written by the test. No root needed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cgroups/detail.hpp"
#include "error_of.hpp"

using namespace tarn;
using namespace tarn::cgroups;
namespace fs = std::filesystem;

namespace {

class FakeRoot {
public:
    FakeRoot() {
        std::string tmpl = (fs::temp_directory_path() / "tarn-cgfake-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        root_ = tmpl;
    }
    ~FakeRoot() {
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    const std::string& root() const { return root_; }
    std::string path(const std::string& rel) const { return root_ + rel; }

    // Writes a file (making its directory).
    void file(const std::string& rel, const std::string& content) const {
        fs::create_directories(fs::path(path(rel)).parent_path());
        std::ofstream(path(rel)) << content;
    }
    std::string read(const std::string& rel) const {
        std::ifstream in(path(rel));
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    bool exists(const std::string& rel) const { return fs::exists(path(rel)); }

private:
    std::string root_;
};

using test::error_of;

// A v2 root offering the usual controllers.
void v2_root(const FakeRoot& f,
             const std::string& controllers = "cpuset cpu io memory hugetlb pids rdma misc") {
    f.file("/cgroup.controllers", controllers + "\n");
    f.file("/cgroup.subtree_control", "");
}

// The files the kernel shows in a fresh v2 cgroup with memory, cpu and pids.
void v2_cgroup(const FakeRoot& f, const std::string& rel,
               const std::string& controllers = "cpu memory pids") {
    f.file(rel + "/cgroup.controllers", controllers + "\n");
    f.file(rel + "/cgroup.subtree_control", "");
    f.file(rel + "/cgroup.procs", "");
    f.file(rel + "/cgroup.events", "populated 0\nfrozen 0\n");
    f.file(rel + "/cgroup.freeze", "0\n");
    for (const char* file :
         {"memory.max", "memory.swap.max", "memory.low", "cpu.max", "cpu.weight", "pids.max"})
        f.file(rel + "/" + file, "max\n");
}

}  // namespace

// ---- v2 manager -------------------------------------------------------------------------------

TEST(CgroupFakeV2, CreateEnablesControllersTopDown) {
    FakeRoot f;
    v2_root(f, "cpuset cpu io memory pids");
    f.file("/tarn/cgroup.controllers", "cpu memory pids\n");  // what the kernel shows once enabled above
    f.file("/tarn/cgroup.subtree_control", "memory\n");
    auto m = cgroups::open("/tarn/c1", Mode::unified, f.root());
    m->create();
    EXPECT_EQ(f.read("/cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids");
    EXPECT_EQ(f.read("/tarn/cgroup.subtree_control"), "+cpu +pids");  // memory was already on
    EXPECT_TRUE(fs::is_directory(f.path("/tarn/c1")));
    EXPECT_TRUE(m->exists());
    EXPECT_EQ(m->directories(), std::vector<std::string>{f.path("/tarn/c1")});
    EXPECT_EQ(m->path(), "/tarn/c1");
    EXPECT_EQ(m->mode(), Mode::unified);
}

TEST(CgroupFakeV2, CreateFailsForANeededControllerTheKernelLacks) {
    FakeRoot f;
    v2_root(f, "cpu memory pids");
    oci::Resources needs;
    needs.hugepage_limits = {{"2MB", 0}};
    auto m = cgroups::open("/tarn/c1", Mode::unified, f.root());
    EXPECT_EQ(error_of([&] { m->create(needs); }),
              "linux.resources.hugepageLimits: the hugetlb controller is not available in cgroup " +
                  f.root() + " (cgroup.controllers: cpu memory pids)");
    EXPECT_FALSE(f.exists("/tarn"));
}

TEST(CgroupFakeV2, FailedCreateRemovesWhatItMade) {
    FakeRoot f;
    v2_root(f);
    // The kernel would fill /tarn with interface files; a plain mkdir does not, so
    // enabling controllers there fails after /tarn was made.
    auto m = cgroups::open("/tarn/c1", Mode::unified, f.root());
    EXPECT_NE(error_of([&] { m->create(); }).find("cgroup " + f.path("/tarn") + ": open cgroup.controllers"),
              std::string::npos);
    EXPECT_FALSE(f.exists("/tarn"));
}

TEST(CgroupFakeV2, ApplyWritesTheTranslation) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = 1 << 30;
    r.memory->swap = (1 << 30) + (1 << 20);
    r.cpu = oci::Cpu{};
    r.cpu->quota = 50000;
    r.cpu->period = 100000;
    r.cpu->shares = 2048;
    r.pids = oci::Pids{64};
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    m->apply(r);
    EXPECT_EQ(f.read("/c1/memory.max"), "1073741824");
    EXPECT_EQ(f.read("/c1/memory.swap.max"), "1048576");
    EXPECT_EQ(f.read("/c1/cpu.max"), "50000 100000");
    EXPECT_EQ(f.read("/c1/cpu.weight"), "174");
    EXPECT_EQ(f.read("/c1/pids.max"), "64");
    EXPECT_TRUE(m->pending_device_rules().empty());
}

TEST(CgroupFakeV2, ApplyChecksEverythingBeforeWriting) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    oci::Resources r;
    r.pids = oci::Pids{64};
    r.memory = oci::Memory{};
    r.memory->limit = 200;
    r.memory->swap = 100;
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    EXPECT_EQ(error_of([&] { m->apply(r); }),
              "cgroup " + f.path("/c1") +
                  ": linux.resources.memory.swap: must be >= memory.limit (swap 100 < limit 200)");
    EXPECT_EQ(f.read("/c1/memory.max"), "max\n");
    EXPECT_EQ(f.read("/c1/pids.max"), "max\n");
}

TEST(CgroupFakeV2, WriteErrorsNameDirFileValueAndField) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    fs::remove(f.path("/c1/pids.max"));
    fs::create_directory(f.path("/c1/pids.max"));  // opening it for writing fails with EISDIR
    f.file("/c1/cgroup.controllers", "cpu memory pids\n");
    oci::Resources r;
    r.pids = oci::Pids{64};
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    EXPECT_EQ(
        error_of([&] { m->apply(r); }),
        "cgroup " + f.path("/c1") + ": write pids.max \"64\" (linux.resources.pids.limit): is a directory");
}

TEST(CgroupFakeV2, CheckBeforeUpdateRefusesALimitBelowUsage) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    f.file("/c1/memory.current", "5000\n");
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = 4096;
    r.memory->check_before_update = true;
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    EXPECT_EQ(error_of([&] { m->apply(r); }),
              "cgroup " + f.path("/c1") +
                  ": linux.resources.memory.limit: 4096 is not above the current usage (5000 bytes; "
                  "checkBeforeUpdate is set)");
    r.memory->limit = 8192;
    m->apply(r);
    EXPECT_EQ(f.read("/c1/memory.max"), "8192");
}

TEST(CgroupFakeV2, DeviceRulesArePendingNotDropped) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    oci::Resources r;
    r.devices = {oci::DeviceCgroupRule{false, "a", std::nullopt, std::nullopt, "rwm"},
                 oci::DeviceCgroupRule{true, "c", 10, 229, "rwm"}};
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    m->apply(r);
    const auto& p = m->pending_device_rules();
    ASSERT_EQ(p.size(), 2 + default_device_rules().size());
    EXPECT_FALSE(p[0].allow);
    EXPECT_EQ(p[1].major, 10);
    EXPECT_EQ(p.back().minor, 200);  // the defaults follow
    m->apply(oci::Resources{});
    EXPECT_TRUE(m->pending_device_rules().empty());
}

TEST(CgroupFakeV2, AddProcessAndPids) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    m->add_process(4242);
    EXPECT_EQ(f.read("/c1/cgroup.procs"), "4242");
    f.file("/c1/cgroup.procs", "7\n3\n");
    f.file("/c1/sub/cgroup.procs", "11\n");
    f.file("/c1/sub/deeper/cgroup.procs", "5\n");
    EXPECT_EQ(m->pids(), (std::vector<pid_t>{3, 5, 7, 11}));
}

TEST(CgroupFakeV2, FreezeWaitsForCgroupEvents) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    f.file("/c1/cgroup.events", "populated 1\nfrozen 1\n");  // the kernel's answer
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    m->freeze();
    EXPECT_EQ(f.read("/c1/cgroup.freeze"), "1");
    EXPECT_TRUE(m->frozen());
    f.file("/c1/cgroup.events", "populated 1\nfrozen 0\n");
    m->thaw();
    EXPECT_EQ(f.read("/c1/cgroup.freeze"), "0");
    EXPECT_FALSE(m->frozen());
}

TEST(CgroupFakeV2, KillAllUsesCgroupKillForSigkill) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    f.file("/c1/cgroup.kill", "");
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    m->kill_all(SIGKILL);
    EXPECT_EQ(f.read("/c1/cgroup.kill"), "1");
}

TEST(CgroupFakeV2, KillAllOfACgroupThatIsAlreadyGoneIsNotAnError) {
    // systemd removes a scope's cgroup when its last process exits; a SIGKILL that
    // follows finds neither cgroup.kill nor the directory.
    FakeRoot f;
    v2_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    fs::remove_all(f.path("/c1"));
    EXPECT_NO_THROW(m->kill_all(SIGKILL));
}

TEST(CgroupFakeV2, KillAllWithoutCgroupKillSignalsEachProcess) {
    // A kernel before 5.14 has no cgroup.kill: each listed process gets the signal
    // (the fake has no cgroup.freeze either, so the freeze is skipped).
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::pause();
        ::_exit(0);
    }
    FakeRoot f;
    v2_cgroup(f, "/c1");
    f.file("/c1/cgroup.procs", std::to_string(child) + "\n");
    fs::remove(f.path("/c1/cgroup.freeze"));
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    EXPECT_NO_THROW(m->kill_all(SIGKILL));
    int status = 0;
    pid_t got = 0;
    for (int i = 0; i < 200 && got == 0; ++i) {
        got = ::waitpid(child, &status, WNOHANG);
        if (got == 0) ::usleep(10000);
    }
    if (got == 0) {  // not signalled: do not leave it behind
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        ADD_FAILURE() << "the process was not killed";
    } else {
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    }
}

TEST(CgroupFakeV2, OpenV2DirFdIsADirectoryFd) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    int fd = m->open_v2_dir_fd();
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::faccessat(fd, "cgroup.procs", F_OK, 0), 0);
    ::close(fd);
}

TEST(CgroupFakeV2, OomKillCount) {
    FakeRoot f;
    v2_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::unified, f.root());
    EXPECT_EQ(m->oom_kill_count(), 0u);  // no memory.events: no memory controller
    f.file("/c1/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n");
    EXPECT_EQ(m->oom_kill_count(), 1u);
}

TEST(CgroupFakeV2, DestroyRemovesDescendantsBottomUp) {
    FakeRoot f;
    fs::create_directories(f.path("/tarn/c1/a/b"));
    fs::create_directories(f.path("/tarn/c1/c"));
    auto m = cgroups::open("/tarn/c1", Mode::unified, f.root());
    m->destroy();
    EXPECT_FALSE(f.exists("/tarn/c1"));
    EXPECT_TRUE(f.exists("/tarn"));  // the parent stays
    m->destroy();                    // already gone: fine
    EXPECT_FALSE(m->exists());
}

TEST(CgroupFakeV2, OpenRejectsRelativeOrRootPaths) {
    EXPECT_EQ(error_of([] { cgroups::open("tarn/c1", Mode::unified, "/nonexistent"); }),
              "cgroup path \"tarn/c1\": expected an absolute path below the root (see resolve_path)");
    EXPECT_NE(error_of([] { cgroups::open("/", Mode::unified, "/nonexistent"); }), "(no error)");
}

// ---- v1 and hybrid managers ----------------------------------------------------------------------

namespace {

// The layout of this project's build host: separate v1 mounts, cgroup2 with hugetlb.
void v1_root(const FakeRoot& f, bool hybrid) {
    for (const char* h :
         {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"})
        f.file(std::string("/") + h + "/cgroup.procs", "1\n");
    f.file("/cpuset/cpuset.cpus", "0-3\n");
    f.file("/cpuset/cpuset.mems", "0\n");
    if (hybrid) {
        f.file("/unified/cgroup.controllers", "hugetlb\n");
        f.file("/unified/cgroup.subtree_control", "");
    }
}

// A v1 cgroup's files, as the kernel would show them once mkdir'ed.
void v1_cgroup(const FakeRoot& f, const std::string& rel) {
    for (const char* h :
         {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"})
        f.file(std::string("/") + h + rel + "/cgroup.procs", "");
    f.file("/cpuset" + rel + "/cpuset.cpus", "\n");
    f.file("/cpuset" + rel + "/cpuset.mems", "\n");
    f.file("/memory" + rel + "/memory.limit_in_bytes", "9223372036854771712\n");
    f.file("/memory" + rel + "/memory.memsw.limit_in_bytes", "9223372036854771712\n");
    f.file("/memory" + rel + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
    f.file("/pids" + rel + "/pids.max", "max\n");
    f.file("/cpu" + rel + "/cpu.shares", "1024\n");
    f.file("/freezer" + rel + "/freezer.state", "THAWED\n");
    f.file("/devices" + rel + "/devices.allow", "");
    f.file("/devices" + rel + "/devices.deny", "");
}

}  // namespace

TEST(CgroupFakeV1, CreateMakesADirectoryPerHierarchyAndInitialisesCpuset) {
    FakeRoot f;
    v1_root(f, false);
    f.file("/cpuset/tarn/cpuset.cpus", "\n");  // an intermediate level nobody initialised
    f.file("/cpuset/tarn/cpuset.mems", "\n");
    v1_cgroup(f, "/tarn/c1");
    auto m = cgroups::open("/tarn/c1", Mode::legacy, f.root());
    m->create();
    EXPECT_EQ(f.read("/cpuset/tarn/cpuset.cpus"), "0-3");
    EXPECT_EQ(f.read("/cpuset/tarn/cpuset.mems"), "0");
    EXPECT_EQ(f.read("/cpuset/tarn/c1/cpuset.cpus"), "0-3");
    auto dirs = m->directories();
    EXPECT_EQ(dirs.size(), 9u);  // cpu cpuacct cpuset memory devices freezer blkio pids systemd
    for (const auto& d : dirs) EXPECT_TRUE(fs::is_directory(d)) << d;
    EXPECT_EQ(m->open_v2_dir_fd(), -1);
}

TEST(CgroupFakeV1, CreateRefusesAControllerThatIsNotMounted) {
    FakeRoot f;
    v1_root(f, false);
    oci::Resources needs;
    needs.network = oci::Network{};
    needs.network->class_id = 1;
    auto m = cgroups::open("/c1", Mode::legacy, f.root());
    EXPECT_EQ(error_of([&] { m->create(needs); }),
              "linux.resources.network.classID: the net_cls controller is not mounted under " + f.root());
    needs = {};
    needs.unified["memory.high"] = "1";
    EXPECT_EQ(error_of([&] { m->create(needs); }),
              "linux.resources.unified: not supported on a cgroup v1 host (there is no cgroup2 hierarchy)");
    EXPECT_FALSE(f.exists("/memory/c1"));
}

TEST(CgroupFakeV1, ApplyWritesEachControllersDirectory) {
    FakeRoot f;
    v1_root(f, false);
    v1_cgroup(f, "/c1");
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = 16 << 20;
    r.memory->swap = 16 << 20;
    r.pids = oci::Pids{8};
    r.cpu = oci::Cpu{};
    r.cpu->shares = 512;
    r.devices = {oci::DeviceCgroupRule{false, "a", std::nullopt, std::nullopt, "rwm"}};
    auto m = cgroups::open("/c1", Mode::legacy, f.root());
    m->apply(r);
    EXPECT_EQ(f.read("/memory/c1/memory.limit_in_bytes"), "16777216");
    EXPECT_EQ(f.read("/memory/c1/memory.memsw.limit_in_bytes"), "16777216");
    EXPECT_EQ(f.read("/pids/c1/pids.max"), "8");
    EXPECT_EQ(f.read("/cpu/c1/cpu.shares"), "512");
    EXPECT_EQ(f.read("/devices/c1/devices.deny"), "a");
    EXPECT_EQ(f.read("/devices/c1/devices.allow"), "c 10:200 rwm");  // the last default rule
    EXPECT_TRUE(m->pending_device_rules().empty());
}

TEST(CgroupFakeV1, HybridPutsHugetlbInTheUnifiedHierarchy) {
    FakeRoot f;
    v1_root(f, true);
    v1_cgroup(f, "/c1");
    f.file("/unified/c1/cgroup.controllers", "hugetlb\n");
    f.file("/unified/c1/cgroup.procs", "");
    f.file("/unified/c1/hugetlb.2MB.max", "max\n");
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 4 << 21}};
    auto m = cgroups::open("/c1", Mode::hybrid, f.root());
    m->create(r);
    m->apply(r);
    EXPECT_EQ(f.read("/unified/cgroup.subtree_control"), "+hugetlb");
    EXPECT_EQ(f.read("/unified/c1/hugetlb.2MB.max"), "8388608");
    EXPECT_EQ(m->directories().back(), f.path("/unified/c1"));
    m->add_process(99);
    EXPECT_EQ(f.read("/unified/c1/cgroup.procs"), "99");
    EXPECT_EQ(f.read("/memory/c1/cgroup.procs"), "99");
}

TEST(CgroupFakeV1, HybridToleratesAnUnusableUnifiedHierarchyWhenNothingNeedsIt) {
    FakeRoot f;
    v1_root(f, true);
    fs::remove(f.path("/unified/cgroup.subtree_control"));  // enabling there fails
    f.file("/unified/cgroup.controllers", "hugetlb\n");
    v1_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::hybrid, f.root());
    m->create();
    EXPECT_EQ(m->directories().size(), 9u);  // the unified part was dropped
}

TEST(CgroupFakeV1, HybridFailureOnANeededUnifiedPartRollsBackEverything) {
    FakeRoot f;
    f.file("/memory/cgroup.procs", "1\n");
    f.file("/pids/cgroup.procs", "1\n");
    f.file("/unified/cgroup.controllers", "hugetlb\n");  // no cgroup.subtree_control: enabling fails
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 1}};
    auto m = cgroups::open("/c2", Mode::hybrid, f.root());
    EXPECT_EQ(error_of([&] { m->create(r); }),
              "cgroup " + f.path("/unified") + ": open cgroup.subtree_control: no such file or directory");
    EXPECT_FALSE(f.exists("/memory/c2"));
    EXPECT_FALSE(f.exists("/pids/c2"));
    EXPECT_FALSE(f.exists("/unified/c2"));
}

TEST(CgroupFakeV1, FreezerStateAndOomCount) {
    FakeRoot f;
    v1_root(f, false);
    v1_cgroup(f, "/c1");
    auto m = cgroups::open("/c1", Mode::legacy, f.root());
    EXPECT_FALSE(m->frozen());
    m->freeze();
    EXPECT_EQ(f.read("/freezer/c1/freezer.state"), "FROZEN");
    EXPECT_TRUE(m->frozen());
    m->thaw();
    EXPECT_EQ(f.read("/freezer/c1/freezer.state"), "THAWED");
    EXPECT_EQ(m->oom_kill_count(), 3u);
}

TEST(CgroupFakeV1, PidsComeFromThePidsHierarchy) {
    FakeRoot f;
    v1_root(f, false);
    v1_cgroup(f, "/c1");
    f.file("/pids/c1/cgroup.procs", "12\n10\n");
    f.file("/pids/c1/inner/cgroup.procs", "11\n");
    auto m = cgroups::open("/c1", Mode::legacy, f.root());
    EXPECT_EQ(m->pids(), (std::vector<pid_t>{10, 11, 12}));
}

TEST(CgroupFakeV1, CoMountedControllersShareADirectory) {
    FakeRoot f;
    f.file("/cpu,cpuacct/cgroup.procs", "1\n");
    fs::create_directory_symlink("cpu,cpuacct", f.path("/cpu"));
    fs::create_directory_symlink("cpu,cpuacct", f.path("/cpuacct"));
    f.file("/memory/cgroup.procs", "1\n");
    auto m = cgroups::open("/c1", Mode::legacy, f.root());
    m->create();
    EXPECT_EQ(m->directories(), (std::vector<std::string>{f.path("/cpu/c1"), f.path("/memory/c1")}));
    EXPECT_TRUE(fs::is_directory(f.path("/cpu,cpuacct/c1")));
}

TEST(CgroupFakeV1, DestroyRemovesEveryHierarchysDirectory) {
    FakeRoot f;
    v1_root(f, false);
    auto m = cgroups::open("/tarn/c1", Mode::legacy, f.root());
    for (const auto& d : m->directories()) fs::create_directories(d + "/child");
    m->destroy();
    for (const auto& d : m->directories()) EXPECT_FALSE(fs::exists(d)) << d;
}

// ---- pools ------------------------------------------------------------------------------------------

TEST(CgroupFakePool, BudgetLandsOnTheParentAndSandboxesBelowIt) {
    FakeRoot f;
    v2_root(f, "cpu memory pids");
    v2_cgroup(f, "/pool");
    PoolBudget b;
    b.memory_max = 1 << 30;
    b.pids_max = 100;
    b.cpu_quota = 200000;
    b.cpu_period = 100000;
    b.cpu_weight = 50;
    auto pool = ResourcePool::create("/pool", b, Mode::unified, f.root());
    EXPECT_EQ(f.read("/pool/memory.max"), "1073741824");
    EXPECT_EQ(f.read("/pool/pids.max"), "100");
    EXPECT_EQ(f.read("/pool/cpu.max"), "200000 100000");
    EXPECT_EQ(f.read("/pool/cpu.weight"), "50");
    EXPECT_EQ(f.read("/cgroup.subtree_control"), "+cpu +memory +pids");

    auto sb = pool.create_sandbox("s1");
    EXPECT_EQ(sb->path(), "/pool/s1");
    EXPECT_TRUE(fs::is_directory(f.path("/pool/s1")));
    EXPECT_EQ(f.read("/pool/cgroup.subtree_control"), "+cpu +memory +pids");
    EXPECT_EQ(pool.sandboxes(), std::vector<std::string>{"s1"});
    EXPECT_EQ(error_of([&] { pool.create_sandbox("../escape"); }),
              "sandbox name \"../escape\": must be a single path component");

    PoolBudget less;
    less.pids_max = 0;
    pool.set_budget(less);
    EXPECT_EQ(f.read("/pool/pids.max"), "max");
}

TEST(CgroupFakePool, V1BudgetUsesSharesForWeight) {
    FakeRoot f;
    v1_root(f, false);
    v1_cgroup(f, "/pool");
    PoolBudget b;
    b.cpu_weight = 100;
    b.memory_max = 64 << 20;
    auto pool = ResourcePool::create("/pool", b, Mode::legacy, f.root());
    EXPECT_EQ(f.read("/cpu/pool/cpu.shares"), "1024");
    EXPECT_EQ(f.read("/memory/pool/memory.limit_in_bytes"), "67108864");
    EXPECT_EQ(error_of([&] { ResourcePool::open("/missing", Mode::legacy, f.root()); }),
              "resource pool /missing: no such cgroup: no such file or directory");
}

// ---- stats ----------------------------------------------------------------------------------------------

TEST(CgroupFakeStats, V2CountersAndRuncJson) {
    FakeRoot f;
    f.file("/c1/cpu.stat",
           "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec "
           "30\n");
    f.file("/c1/memory.current", "4096\n");
    f.file("/c1/memory.max", "max\n");
    f.file("/c1/memory.peak", "8192\n");
    f.file("/c1/memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n");
    f.file("/c1/memory.stat", "anon 1024\nfile 2048\n");
    f.file("/c1/memory.swap.current", "100\n");
    f.file("/c1/memory.swap.max", "max\n");
    f.file("/c1/pids.current", "3\n");
    f.file("/c1/pids.max", "max\n");
    f.file("/c1/io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
    f.file("/c1/hugetlb.2MB.current", "2097152\n");
    f.file("/c1/hugetlb.2MB.max", "4194304\n");
    f.file("/c1/hugetlb.2MB.events", "max 1\n");
    f.file("/c1/hugetlb.2MB.rsvd.current", "0\n");

    Stats s = detail::read_stats_v2(f.path("/c1"));
    EXPECT_EQ(s.cpu.total_ns, 1500000u);
    EXPECT_EQ(s.cpu.user_ns, 1000000u);
    EXPECT_EQ(s.cpu.kernel_ns, 500000u);
    EXPECT_EQ(s.cpu.throttled_periods, 2u);
    EXPECT_EQ(s.cpu.throttled_ns, 30000u);
    EXPECT_EQ(s.memory.usage.usage, 4096u);
    EXPECT_EQ(s.memory.usage.limit, UINT64_MAX);
    EXPECT_EQ(s.memory.usage.max_usage, 8192u);
    EXPECT_EQ(s.memory.usage.failcnt, 5u);
    EXPECT_EQ(s.memory.oom, 2u);
    EXPECT_EQ(s.memory.oom_kill, 1u);
    EXPECT_EQ(s.memory.cache, 2048u);
    EXPECT_EQ(s.memory.swap.usage, 4196u);  // memory + swap, as v1 reports it
    EXPECT_EQ(s.pids.current, 3u);
    EXPECT_EQ(s.pids.limit, 0u);
    ASSERT_EQ(s.blkio.service_bytes.size(), 2u);
    EXPECT_EQ(s.blkio.service_bytes[1].op, "Write");
    EXPECT_EQ(s.blkio.service_bytes[1].value, 8192u);
    ASSERT_EQ(s.hugetlb.size(), 1u);  // the .rsvd files are not a page size
    EXPECT_EQ(s.hugetlb["2MB"].usage, 2097152u);
    EXPECT_EQ(s.hugetlb["2MB"].failcnt, 1u);

    auto j = to_runc_json(s, "c1");
    EXPECT_EQ(j["type"], "stats");
    EXPECT_EQ(j["id"], "c1");
    const auto& d = j["data"];
    EXPECT_EQ(d["cpu"]["usage"]["total"], 1500000u);
    EXPECT_EQ(d["cpu"]["usage"]["kernel"], 500000u);
    EXPECT_FALSE(d["cpu"]["usage"].contains("percpu"));  // omitempty
    EXPECT_EQ(d["cpu"]["throttling"]["throttledPeriods"], 2u);
    EXPECT_EQ(d["cpu"]["throttling"]["throttledTime"], 30000u);
    EXPECT_EQ(d["memory"]["usage"]["limit"], UINT64_MAX);
    EXPECT_EQ(d["memory"]["usage"]["max"], 8192u);
    EXPECT_EQ(d["memory"]["cache"], 2048u);
    EXPECT_EQ(d["memory"]["raw"]["anon"], 1024u);
    EXPECT_EQ(d["memory"]["kernel"], (nlohmann::json{{"limit", 0}, {"failcnt", 0}}));
    EXPECT_EQ(d["pids"], (nlohmann::json{{"current", 3}}));
    EXPECT_EQ(
        d["blkio"]["ioServiceBytesRecursive"][0],
        (nlohmann::json{{"major", 8}, {"op", "Read"}, {"value", 4096}}));  // minor 0 is omitted, like runc
    EXPECT_EQ(d["blkio"]["ioServicedRecursive"][1]["value"], 2u);
    EXPECT_EQ(d["hugetlb"]["2MB"], (nlohmann::json{{"usage", 2097152}, {"failcnt", 1}}));
    EXPECT_TRUE(d["network_interfaces"].is_null());
    EXPECT_TRUE(d.contains("cpuset"));
}

TEST(CgroupFakeStats, UsageReadsMemoryAndPidsWithTheirLimits) {
    FakeRoot f;
    auto files = [&f](const std::vector<std::pair<std::string, std::string>>& contents) {
        for (const auto& [path, text] : contents) f.file(path, text + "\n");
    };
    files({{"/c1/memory.current", "4096"}, {"/c1/memory.max", "max"}, {"/c1/pids.current", "3"}, {"/c1/pids.max", "64"}});
    Usage u = detail::read_usage_v2(f.path("/c1"));
    EXPECT_EQ(u.memory, 4096u);
    EXPECT_FALSE(u.memory_limit);  // "max"
    EXPECT_EQ(u.pids, 3u);
    EXPECT_EQ(u.pids_limit, 64u);

    // v1's "no limit" is a number near 2^63.
    files({{"/memory/c1/memory.usage_in_bytes", "100"}, {"/memory/c1/memory.limit_in_bytes", "9223372036854771712"},
           {"/pids/c1/pids.current", "4"}, {"/pids/c1/pids.max", "max"}});
    u = detail::read_usage_v1(f.path("/memory/c1"), f.path("/pids/c1"));
    EXPECT_EQ(u.memory, 100u);
    EXPECT_FALSE(u.memory_limit);
    EXPECT_EQ(u.pids, 4u);
    EXPECT_FALSE(u.pids_limit);
    f.file("/memory/c1/memory.limit_in_bytes", "209715200\n");
    u = detail::read_usage_v1(f.path("/memory/c1"), "");  // no pids hierarchy
    EXPECT_EQ(u.memory_limit, 209715200u);
    EXPECT_FALSE(u.pids);
}

TEST(CgroupFakeStats, V1Counters) {
    FakeRoot f;
    f.file("/cpuacct/c1/cpuacct.usage", "3000\n");
    f.file("/cpuacct/c1/cpuacct.usage_percpu", "1000 2000 \n");
    f.file("/cpuacct/c1/cpuacct.usage_user", "2500\n");
    f.file("/cpuacct/c1/cpuacct.usage_sys", "500\n");
    f.file("/cpu/c1/cpu.stat", "nr_periods 4\nnr_throttled 1\nthrottled_time 777\n");
    f.file("/memory/c1/memory.usage_in_bytes", "100\n");
    f.file("/memory/c1/memory.limit_in_bytes", "200\n");
    f.file("/memory/c1/memory.max_usage_in_bytes", "150\n");
    f.file("/memory/c1/memory.failcnt", "7\n");
    f.file("/memory/c1/memory.memsw.usage_in_bytes", "110\n");
    f.file("/memory/c1/memory.stat", "cache 40\nrss 60\n");
    f.file("/memory/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    f.file("/pids/c1/pids.current", "4\n");
    f.file("/pids/c1/pids.max", "8\n");
    f.file("/blkio/c1/blkio.bfq.io_service_bytes_recursive", "Total 0\n");
    f.file("/blkio/c1/blkio.throttle.io_service_bytes_recursive",
           "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n");
    f.file("/unified/c1/hugetlb.2MB.current", "0\n");
    f.file("/unified/c1/hugetlb.2MB.max", "max\n");

    Stats s = detail::read_stats_v1({{"cpuacct", f.path("/cpuacct/c1")},
                                     {"cpu", f.path("/cpu/c1")},
                                     {"memory", f.path("/memory/c1")},
                                     {"pids", f.path("/pids/c1")},
                                     {"blkio", f.path("/blkio/c1")}},
                                    f.path("/unified/c1"));
    EXPECT_EQ(s.cpu.total_ns, 3000u);
    EXPECT_EQ(s.cpu.percpu_ns, (std::vector<uint64_t>{1000, 2000}));
    EXPECT_EQ(s.cpu.user_ns, 2500u);
    EXPECT_EQ(s.cpu.kernel_ns, 500u);
    EXPECT_EQ(s.cpu.throttled_ns, 777u);
    EXPECT_EQ(s.memory.usage.usage, 100u);
    EXPECT_EQ(s.memory.usage.limit, 200u);
    EXPECT_EQ(s.memory.usage.max_usage, 150u);
    EXPECT_EQ(s.memory.usage.failcnt, 7u);
    EXPECT_EQ(s.memory.swap.usage, 110u);
    EXPECT_EQ(s.memory.cache, 40u);
    EXPECT_EQ(s.memory.oom_kill, 2u);
    EXPECT_EQ(s.pids.limit, 8u);
    ASSERT_EQ(s.blkio.service_bytes.size(), 2u);  // the empty BFQ file is skipped
    EXPECT_EQ(s.blkio.service_bytes[0].value, 512u);
    ASSERT_EQ(s.hugetlb.count("2MB"), 1u);
    EXPECT_EQ(s.hugetlb["2MB"].limit, UINT64_MAX);
    auto j = to_runc_json(s, "c1");
    EXPECT_EQ(j["data"]["cpu"]["usage"]["percpu"], (nlohmann::json{1000, 2000}));
    EXPECT_EQ(j["data"]["pids"]["limit"], 8u);
}
