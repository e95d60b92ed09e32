// The v1/hybrid fallback against the real kernel: limits read back from cgroupfs,
// a fork loop stopped by pids.max, a memory hog OOM-killed, freeze/thaw, kill_all,
// destroy. Runs only as root on a host whose /sys/fs/cgroup/memory is a v1
// hierarchy (skipped elsewhere); every test cleans up its cgroups even on failure.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "cgroups/detail.hpp"

using namespace tarn;
using namespace tarn::cgroups;
using namespace std::chrono_literals;

namespace {

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string cgfile(const std::string& hierarchy, const std::string& path, const std::string& file) {
    return trim(read_file("/sys/fs/cgroup/" + hierarchy + path + "/" + file));
}

bool is_dir(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Polls until `pred` holds or `limit` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

// A forked child that waits on a pipe before running `body` (so the parent can
// put it in the cgroup first) and _exits with its result.
class Child {
public:
    explicit Child(const std::function<int()>& body) {
        if (::pipe2(go_, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork");
        if (pid_ == 0) {
            ::close(go_[1]);
            char c;
            if (::read(go_[0], &c, 1) != 1) ::_exit(120);
            ::_exit(body());
        }
        ::close(go_[0]);
    }
    ~Child() {
        if (go_[1] >= 0) ::close(go_[1]);
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    pid_t pid() const { return pid_; }
    void go() {
        char c = 'g';
        ASSERT_EQ(::write(go_[1], &c, 1), 1);
        ::close(go_[1]);
        go_[1] = -1;
    }
    int wait() {
        int status = 0;
        EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
        reaped_ = true;
        return status;
    }

private:
    int go_[2] = {-1, -1};
    pid_t pid_ = -1;
    bool reaped_ = false;
};

class CgroupHost : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        struct statfs fs;
        if (::statfs("/sys/fs/cgroup/memory", &fs) != 0 || fs.f_type != CGROUP_SUPER_MAGIC)
            GTEST_SKIP() << "needs a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory";
        mode_ = detect();
        static int counter = 0;
        path_ = "/tarn-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
        mgr_ = cgroups::open(path_, mode_);
        // Grandchildren of the tests are re-parented here and reaped in TearDown.
        ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    }

    void TearDown() override {
        if (!mgr_) return;
        for (auto* m : {mgr_.get(), extra_.get()}) {
            if (!m) continue;
            try {
                if (m->exists()) {
                    if (m->frozen()) m->thaw();
                    m->kill_all(SIGKILL);
                    eventually([&] { return m->pids().empty(); });
                }
            } catch (const std::exception& e) {
                ADD_FAILURE() << "cleanup: " << e.what();
            }
        }
        reap();
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
        for (auto* m : {extra_.get(), mgr_.get()}) {
            if (!m) continue;
            try {
                m->destroy();
            } catch (const std::exception& e) {
                ADD_FAILURE() << "cleanup: " << e.what();
            }
        }
    }

    static void reap() {
        auto deadline = std::chrono::steady_clock::now() + 2s;
        for (;;) {
            pid_t p = ::waitpid(-1, nullptr, WNOHANG);
            if (p < 0) return;  // ECHILD: nothing left
            if (p == 0) {
                if (std::chrono::steady_clock::now() >= deadline) return;
                std::this_thread::sleep_for(2ms);
            }
        }
    }

    // memory limit == memory+swap limit: no swap at all.
    static oci::Resources limits(int64_t memory, int64_t pids) {
        oci::Resources r;
        r.memory = oci::Memory{};
        r.memory->limit = memory;
        r.memory->swap = memory;
        r.pids = oci::Pids{pids};
        return r;
    }

    Mode mode_ = Mode::legacy;
    std::string path_;
    std::unique_ptr<Manager> mgr_;
    std::unique_ptr<Manager> extra_;  // a second cgroup a test may make, cleaned up too
};

}  // namespace

TEST_F(CgroupHost, DetectSeesV1Controllers) {
    EXPECT_NE(mode_, Mode::unified);
    if (is_dir("/sys/fs/cgroup/unified")) {
        EXPECT_EQ(mode_, Mode::hybrid);
    }
}

TEST_F(CgroupHost, CreateApplyAndReadBack) {
    oci::Resources r = limits(16 << 20, 8);
    r.cpu = oci::Cpu{};
    r.cpu->shares = 512;
    r.cpu->quota = 50000;
    r.cpu->period = 100000;
    r.cpu->cpus = "0";
    mgr_->create(r);
    for (const auto& d : mgr_->directories()) EXPECT_TRUE(is_dir(d)) << d;
    mgr_->apply(r);
    EXPECT_EQ(cgfile("memory", path_, "memory.limit_in_bytes"), "16777216");
    EXPECT_EQ(cgfile("memory", path_, "memory.memsw.limit_in_bytes"), "16777216");
    EXPECT_EQ(cgfile("pids", path_, "pids.max"), "8");
    EXPECT_EQ(cgfile("cpu", path_, "cpu.shares"), "512");
    EXPECT_EQ(cgfile("cpu", path_, "cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(cgfile("cpu", path_, "cpu.cfs_period_us"), "100000");
    EXPECT_EQ(cgfile("cpuset", path_, "cpuset.cpus"), "0");
    EXPECT_FALSE(cgfile("cpuset", path_, "cpuset.mems").empty());  // copied from the parent

    // Raising both limits: the kernel refuses memory.limit_in_bytes above the old
    // memory+swap limit, so this only works because the limit is retried.
    mgr_->apply(limits(64 << 20, 16));
    EXPECT_EQ(cgfile("memory", path_, "memory.limit_in_bytes"), "67108864");
    EXPECT_EQ(cgfile("memory", path_, "memory.memsw.limit_in_bytes"), "67108864");
    // And lowering them again.
    mgr_->apply(limits(8 << 20, 16));
    EXPECT_EQ(cgfile("memory", path_, "memory.limit_in_bytes"), "8388608");
    EXPECT_EQ(cgfile("memory", path_, "memory.memsw.limit_in_bytes"), "8388608");
}

TEST_F(CgroupHost, KernelRefusalNamesFileValueAndField) {
    mgr_->create();
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->cpus = "4095";  // no such cpu
    try {
        mgr_->apply(r);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        // EINVAL or ERANGE depending on the kernel's NR_CPUS.
        std::string want = "cgroup /sys/fs/cgroup/cpuset" + path_ +
                           ": write cpuset.cpus \"4095\" (linux.resources.cpu.cpus): ";
        EXPECT_EQ(std::string(e.what()).substr(0, want.size()), want) << e.what();
        EXPECT_TRUE(e.code() == EINVAL || e.code() == ERANGE) << e.code();
    }
}

TEST_F(CgroupHost, ProcessJoinsEveryHierarchy) {
    mgr_->create();
    Child child([] {
        ::pause();
        return 0;
    });
    mgr_->add_process(child.pid());
    EXPECT_EQ(mgr_->pids(), std::vector<pid_t>{child.pid()});
    std::string cg = read_file("/proc/" + std::to_string(child.pid()) + "/cgroup");
    for (const char* ctrl : {":memory:", ":pids:", ":cpu:", ":freezer:", ":name=systemd:"}) {
        EXPECT_NE(cg.find(std::string(ctrl) + path_ + "\n"), std::string::npos) << ctrl << " in\n" << cg;
    }
    if (mode_ == Mode::hybrid) {
        EXPECT_NE(cg.find("0::" + path_ + "\n"), std::string::npos) << cg;
    }
}

TEST_F(CgroupHost, ForkLoopStopsAtPidsMax) {
    oci::Resources r;
    r.pids = oci::Pids{8};
    mgr_->create(r);
    mgr_->apply(r);
    Child child([] {
        // Forks until the kernel says no (bounded), then cleans up its children and
        // reports how many it got; 100+errno if the failure was not pids.max's EAGAIN.
        pid_t kids[64];
        int n = 0, err = 0;
        while (n < 64) {
            pid_t p = ::fork();
            if (p < 0) {
                err = errno;
                break;
            }
            if (p == 0) {
                ::pause();
                ::_exit(0);
            }
            kids[n++] = p;
        }
        for (int i = 0; i < n; ++i) ::kill(kids[i], SIGKILL);
        for (int i = 0; i < n; ++i) ::waitpid(kids[i], nullptr, 0);
        return err == EAGAIN ? n : 100 + err;
    });
    mgr_->add_process(child.pid());
    child.go();
    int status = child.wait();
    ASSERT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 7) << "the child itself is the 8th task";
    auto events = detail::parse_flat_keyed(read_file("/sys/fs/cgroup/pids" + path_ + "/pids.events"));
    EXPECT_GE(events["max"], 1u);
    EXPECT_EQ(mgr_->stats().pids.limit, 8u);
}

TEST_F(CgroupHost, MemoryHogIsOomKilled) {
    oci::Resources r = limits(16 << 20, 32);
    mgr_->create(r);
    mgr_->apply(r);
    uint64_t before = mgr_->oom_kill_count();
    Child child([] {
        const size_t size = 64 << 20;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        for (size_t i = 0; i < size; i += 4096) static_cast<volatile char*>(p)[i] = 1;
        return 0;  // survived: the limit did not hold
    });
    mgr_->add_process(child.pid());
    child.go();
    int status = child.wait();
    ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    EXPECT_EQ(mgr_->oom_kill_count(), before + 1);
    Stats s = mgr_->stats();
    EXPECT_EQ(s.memory.oom_kill, before + 1);
    EXPECT_EQ(s.memory.usage.limit, 16u << 20);
    // (failcnt is not asserted: recent kernels leave it at 0 in this setup.)
    EXPECT_GE(s.memory.usage.max_usage, 8u << 20);
}

TEST_F(CgroupHost, FreezeAndThaw) {
    mgr_->create();
    auto* counter = static_cast<std::atomic<uint64_t>*>(
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(counter, MAP_FAILED);
    new (counter) std::atomic<uint64_t>(0);
    Child child([counter] {
        for (;;) counter->fetch_add(1, std::memory_order_relaxed);
        return 0;
    });
    mgr_->add_process(child.pid());
    child.go();
    ASSERT_TRUE(eventually([&] { return counter->load() > 0; }));

    mgr_->freeze();
    EXPECT_TRUE(mgr_->frozen());
    EXPECT_EQ(cgfile("freezer", path_, "freezer.state"), "FROZEN");
    uint64_t at_freeze = counter->load();
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(counter->load(), at_freeze);

    mgr_->thaw();
    EXPECT_FALSE(mgr_->frozen());
    EXPECT_EQ(cgfile("freezer", path_, "freezer.state"), "THAWED");
    EXPECT_TRUE(eventually([&] { return counter->load() > at_freeze; }));
    ::munmap(counter, 4096);
}

TEST_F(CgroupHost, KillAllReachesGrandchildren) {
    mgr_->create();
    Child child([] {
        for (int i = 0; i < 3; ++i)
            if (::fork() == 0) {
                ::pause();
                ::_exit(0);
            }
        ::pause();
        return 0;
    });
    mgr_->add_process(child.pid());
    child.go();
    ASSERT_TRUE(eventually([&] { return mgr_->pids().size() == 4; })) << mgr_->pids().size();
    auto pids = mgr_->pids();
    EXPECT_TRUE(std::find(pids.begin(), pids.end(), child.pid()) != pids.end());

    mgr_->kill_all(SIGKILL);
    int status = child.wait();
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    reap();
    EXPECT_TRUE(eventually([&] { return mgr_->pids().empty(); }));
    EXPECT_FALSE(mgr_->frozen());  // thawed again after the signals
}

TEST_F(CgroupHost, KillAllWithOtherSignalsKeepsAPausedCgroupPaused) {
    mgr_->create();
    Child child([] {
        ::pause();
        return 0;
    });
    mgr_->add_process(child.pid());
    child.go();
    mgr_->freeze();
    mgr_->kill_all(SIGTERM);
    EXPECT_TRUE(mgr_->frozen());
    mgr_->thaw();
    int status = child.wait();
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

TEST_F(CgroupHost, DestroyRemovesEveryDirectoryIncludingTheWorkloadsOwn) {
    mgr_->create();
    auto dirs = mgr_->directories();
    ASSERT_GE(dirs.size(), 8u);
    // A nested cgroup made by the workload, in two hierarchies.
    ASSERT_EQ(::mkdir(("/sys/fs/cgroup/memory" + path_ + "/inner").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(("/sys/fs/cgroup/pids" + path_ + "/inner").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(("/sys/fs/cgroup/pids" + path_ + "/inner/deeper").c_str(), 0755), 0);
    mgr_->destroy();
    for (const auto& d : dirs) EXPECT_FALSE(is_dir(d)) << d;
    EXPECT_FALSE(mgr_->exists());
    mgr_->destroy();  // gone already: fine
}

TEST_F(CgroupHost, DeviceRulesAreWritten) {
    mgr_->create();
    oci::Resources r;
    r.devices = {oci::DeviceCgroupRule{false, "a", std::nullopt, std::nullopt, "rwm"},
                 oci::DeviceCgroupRule{true, "c", 4, 64, "rw"}};
    mgr_->apply(r);
    std::string list = read_file("/sys/fs/cgroup/devices" + path_ + "/devices.list");
    EXPECT_EQ(list.find("a *:* rwm"), std::string::npos) << list;
    EXPECT_NE(list.find("c 4:64 rw\n"), std::string::npos) << list;
    EXPECT_NE(list.find("c 1:3 rwm\n"), std::string::npos) << list;  // a default device
    EXPECT_NE(list.find("c 136:* rwm\n"), std::string::npos) << list;
}

TEST_F(CgroupHost, HybridHugetlbGoesToTheUnifiedHierarchy) {
    if (mode_ != Mode::hybrid || !detail::exists("/sys/fs/cgroup/unified", "cgroup.controllers") ||
        read_file("/sys/fs/cgroup/unified/cgroup.controllers").find("hugetlb") == std::string::npos ||
        is_dir("/sys/fs/cgroup/hugetlb"))
        GTEST_SKIP() << "needs hugetlb only in the cgroup2 hierarchy of a hybrid host";
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 4 << 21}};
    mgr_->create(r);
    mgr_->apply(r);
    EXPECT_EQ(cgfile("unified", path_, "hugetlb.2MB.max"), "8388608");
    Stats s = mgr_->stats();
    ASSERT_EQ(s.hugetlb.count("2MB"), 1u);
    EXPECT_EQ(s.hugetlb["2MB"].limit, 8388608u);
}

TEST_F(CgroupHost, StatsAfterWork) {
    mgr_->create();
    Child child([] {
        // 50 ms of CPU, not of wall time: on a busy machine the child gets less.
        volatile uint64_t x = 0;
        timespec cpu{};
        do {
            for (int i = 0; i < 100000; ++i) x = x + 1;
            ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
        } while (cpu.tv_sec == 0 && cpu.tv_nsec < 50'000'000);
        void* p = ::mmap(nullptr, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        std::memset(p, 1, 4 << 20);
        ::pause();
        return 0;
    });
    mgr_->add_process(child.pid());
    child.go();
    ASSERT_TRUE(eventually([&] { return mgr_->stats().cpu.total_ns >= 40'000'000; }));
    ASSERT_TRUE(eventually([&] { return mgr_->stats().memory.usage.usage >= (4u << 20); }));
    Stats s = mgr_->stats();
    EXPECT_EQ(s.pids.current, 1u);
    EXPECT_GT(s.cpu.user_ns + s.cpu.kernel_ns, 0u);
    EXPECT_FALSE(s.cpu.percpu_ns.empty());
    auto j = to_runc_json(s, "c1");
    EXPECT_EQ(j["data"]["pids"]["current"], 1u);
    EXPECT_GE(j["data"]["memory"]["usage"]["usage"].get<uint64_t>(), 4u << 20);
}

TEST_F(CgroupHost, ResourcePoolNestsSandboxesAndDestroysThemFirst) {
    mgr_.reset();  // the pool manages its own cgroups
    PoolBudget b;
    b.memory_max = 64 << 20;
    b.pids_max = 32;
    b.cpu_weight = 200;
    auto pool = ResourcePool::create(path_, b, mode_);
    extra_ = cgroups::open(path_, mode_);  // TearDown cleans up whatever is left
    mgr_ = cgroups::open(path_ + "/a", mode_);
    EXPECT_EQ(cgfile("memory", path_, "memory.limit_in_bytes"), "67108864");
    EXPECT_EQ(cgfile("pids", path_, "pids.max"), "32");
    EXPECT_EQ(cgfile("cpu", path_, "cpu.shares"), "2048");

    oci::Resources small;
    small.pids = oci::Pids{4};
    auto a = pool.create_sandbox("a", small);
    auto b2 = pool.create_sandbox("b");
    EXPECT_EQ(cgfile("pids", path_ + "/a", "pids.max"), "4");
    EXPECT_EQ(pool.sandboxes(), (std::vector<std::string>{"a", "b"}));
    EXPECT_FALSE(cgfile("cpuset", path_ + "/b", "cpuset.cpus").empty());

    Child child([] {
        ::pause();
        return 0;
    });
    a->add_process(child.pid());
    EXPECT_EQ(cgfile("pids", path_, "pids.current"), "1");  // counted against the pool too
    a->kill_all(SIGKILL);
    child.wait();
    ASSERT_TRUE(eventually([&] { return a->pids().empty(); }));

    pool.destroy();
    for (const auto& d : extra_->directories()) EXPECT_FALSE(is_dir(d)) << d;
}

// The warm pool's reuse of a used sandbox's cgroup: only when nothing is left in it
// (an unreaped task included) and it never saw an OOM kill; the limits a claim set
// go back to the template's and the peaks to zero.
TEST_F(CgroupHost, ARecycledSandboxCgroupHasTheTemplatesLimitsAndFreshCounters) {
    mgr_.reset();
    auto pool = ResourcePool::create(path_, PoolBudget{}, mode_);
    extra_ = cgroups::open(path_, mode_);
    mgr_ = cgroups::open(path_ + "/s", mode_);
    oci::Resources tmpl;
    tmpl.pids = oci::Pids{50};
    auto sb = pool.create_sandbox("s", tmpl);
    EXPECT_TRUE(sb->vacant());
    sb->apply(limits(64 << 20, 7));  // what a claim with --memory and --pids writes
    EXPECT_EQ(cgfile("pids", path_ + "/s", "pids.max"), "7");

    Child child([] {
        const size_t size = 16 << 20;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        for (size_t i = 0; i < size; i += 4096) static_cast<volatile char*>(p)[i] = 1;
        return 0;
    });
    sb->add_process(child.pid());
    child.go();
    // Exited but not reaped: still counted, so not vacant.
    ASSERT_TRUE(eventually([&] {
        return read_file("/proc/" + std::to_string(child.pid()) + "/stat").find(") Z") != std::string::npos;
    }));
    EXPECT_TRUE(sb->pids().empty());
    EXPECT_FALSE(sb->vacant());
    EXPECT_FALSE(pool.recycle_sandbox("s", tmpl));
    EXPECT_EQ(cgfile("pids", path_ + "/s", "pids.max"), "7");
    EXPECT_EQ(child.wait(), 0);
    uint64_t peak = std::stoull(cgfile("memory", path_ + "/s", "memory.max_usage_in_bytes"));
    EXPECT_GE(peak, 16u << 20);

    ASSERT_TRUE(pool.recycle_sandbox("s", tmpl));
    EXPECT_EQ(cgfile("pids", path_ + "/s", "pids.max"), "50");
    EXPECT_GT(std::stoull(cgfile("memory", path_ + "/s", "memory.limit_in_bytes")), uint64_t{1} << 60);
    EXPECT_LT(std::stoull(cgfile("memory", path_ + "/s", "memory.max_usage_in_bytes")), peak / 2);
    EXPECT_EQ(cgfile("memory", path_ + "/s", "memory.failcnt"), "0");
    EXPECT_EQ(cgfile("cpuacct", path_ + "/s", "cpuacct.usage"), "0");

    // A cgroup below it, or a freeze, keeps it from being reused.
    auto below = cgroups::open(path_ + "/s/x", mode_);
    below->create();
    EXPECT_FALSE(sb->vacant());
    below->destroy();
    EXPECT_TRUE(sb->vacant());
    sb->freeze();
    EXPECT_FALSE(sb->vacant());
    sb->thaw();
    EXPECT_TRUE(sb->vacant());
}

// An OOM kill stays counted in the cgroup: reused, the next sandbox would be taken
// for killed by the budget (the pool's make failure reads that count).
TEST_F(CgroupHost, ASandboxCgroupThatSawAnOomKillIsNeverRecycled) {
    mgr_.reset();
    auto pool = ResourcePool::create(path_, PoolBudget{}, mode_);
    extra_ = cgroups::open(path_, mode_);
    mgr_ = cgroups::open(path_ + "/s", mode_);
    oci::Resources r = limits(16 << 20, 32);
    auto sb = pool.create_sandbox("s", r);
    Child child([] {
        const size_t size = 64 << 20;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        for (size_t i = 0; i < size; i += 4096) static_cast<volatile char*>(p)[i] = 1;
        return 0;
    });
    sb->add_process(child.pid());
    child.go();
    int status = child.wait();
    ASSERT_TRUE(WIFSIGNALED(status));
    EXPECT_EQ(sb->oom_kill_count(), 1u);
    EXPECT_TRUE(sb->pids().empty());
    EXPECT_FALSE(sb->vacant());
    EXPECT_FALSE(pool.recycle_sandbox("s", r));
}
