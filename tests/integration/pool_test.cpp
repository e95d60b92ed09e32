// The warm pool, end to end: a real daemon (`tarn pool serve`) on a private socket
// and cgroup parent, real sandboxes, claims through `tarn pool run`.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cgroups/cgroups.hpp"
#include "harness.hpp"
#include "profiles.hpp"
#include "oci/oci.hpp"
#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// The host directory of a cgroup path in the hierarchy that has `controller`.
std::string host_cgroup_dir(const std::string& path, const std::string& controller) {
    if (cgroups::detect() == cgroups::Mode::unified) return "/sys/fs/cgroup" + path;
    return "/sys/fs/cgroup/" + controller + path;
}

// Sandbox cgroup directories of pool `pool_cgroup` (in the pids hierarchy on v1).
std::vector<std::string> sandbox_dirs(const std::string& pool_cgroup) {
    std::vector<std::string> out;
    std::string base = host_cgroup_dir(pool_cgroup, "pids");
    if (DIR* d = ::opendir(base.c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_type == DT_DIR && e->d_name[0] != '.') out.push_back(base + "/" + e->d_name);
        ::closedir(d);
    }
    return out;
}

// The running workload of a pool (a process whose argv[0] is "sh"; parked sandboxes
// are tarn processes): its sandbox's cgroup directory and host pid.
std::pair<std::string, pid_t> running_workload(const std::string& pool_cgroup) {
    for (const std::string& dir : sandbox_dirs(pool_cgroup)) {
        std::istringstream procs(read_text(dir + "/cgroup.procs"));
        std::string pid;
        while (std::getline(procs, pid)) {
            std::string cmd = read_text("/proc/" + pid + "/cmdline");
            if (cmd.rfind("sh", 0) == 0 && cmd.size() > 2 && cmd[2] == '\0') return {dir, std::stoi(pid)};
        }
    }
    return {"", -1};
}

class PoolTest : public ::testing::Test {
protected:
    Bundle tmpl;
    std::string shared, sock, cgparent, cfg_path, log_path;
    std::unique_ptr<Background> daemon;

    void SetUp() override {
        if (!is_root()) GTEST_SKIP() << "needs root";
        shared = tmpl.scratch("shared");
        ::chmod(shared.c_str(), 0777);
        sock = tmpl.dir() + "/pool.sock";
        cgparent = "/tarn-pool-test-" + std::to_string(::getpid());
        cfg_path = tmpl.dir() + "/pool.json";
        log_path = tmpl.dir() + "/daemon.log";
        // The template: the busybox bundle, a writable root (so each sandbox gets its
        // own overlay) and a host directory at /shared to talk through.
        tmpl.config["root"]["readonly"] = false;
        tmpl.config["mounts"].push_back(
            {{"destination", "/shared"}, {"type", "bind"}, {"source", shared}, {"options", {"rbind", "rw"}}});
    }

    void TearDown() override {
        if (daemon && daemon->pid > 0) {
            pool({"stop", "--now"});
            if (daemon->wait(10000ms) < 0) daemon->kill(SIGKILL);
        }
        daemon.reset();
        // Whatever a failing test left: the daemon's own cleanup is under test elsewhere.
        auto top = cgroups::open(cgparent, cgroups::detect());
        if (top->exists()) {
            top->kill_all(SIGKILL);
            eventually([&] { return top->pids().empty(); });
            try {
                top->destroy();
            } catch (const Error&) {
            }
        }
    }

    json config(unsigned min_idle, unsigned max_total, const json& budget = nullptr) {
        json p = {{"name", "p"}, {"bundle", tmpl.dir()}, {"minIdle", min_idle}, {"maxTotal", max_total}};
        if (!budget.is_null()) p["budget"] = budget;
        return {{"socket", sock}, {"cgroupParent", cgparent}, {"pools", json::array({p})}};
    }

    // Starts the daemon and waits until it serves; a daemon that exits instead
    // fails the test with its log.
    void serve(const json& cfg) {
        tmpl.write();
        write_text(cfg_path, cfg.dump(2));
        daemon = std::make_unique<Background>(std::vector<std::string>{TARN_BINARY, "pool", "serve", "--config", cfg_path},
                                              log_path);
        bool up = eventually([&] {
            if (::waitpid(daemon->pid, nullptr, WNOHANG) == daemon->pid) {
                daemon->pid = -1;
                return true;
            }
            return pool({"status", "--json"}).code == 0;
        }, 20000ms);
        ASSERT_TRUE(up && daemon->pid > 0) << "daemon did not come up:\n" << read_text(log_path);
    }

    void serve(unsigned min_idle = 2, unsigned max_total = 4) { serve(config(min_idle, max_total)); }

    // A raw connection to the daemon's socket, receives timing out after 20 s.
    UniqueFd connect_daemon() const {
        UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, sock.c_str());
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
            ADD_FAILURE() << "connect " << sock << ": " << std::strerror(errno);
            return {};
        }
        timeval tv{20, 0};
        ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return s;
    }

    Result pool(std::vector<std::string> args, const std::string& input = "") const {
        args.insert(args.begin() + 1, {"--socket", sock});
        args.insert(args.begin(), "pool");
        return tarn::test::tarn(args, tmpl.root(), ".", input);
    }

    Result run(const std::string& script, std::vector<std::string> flags = {}, const std::string& input = "") const {
        std::vector<std::string> a = {"run"};
        a.insert(a.end(), flags.begin(), flags.end());
        a.insert(a.end(), {"p", "--", "sh", "-c", script});
        return pool(a, input);
    }

    std::unique_ptr<Background> run_bg(const std::string& script, const std::string& name,
                                       std::vector<std::string> flags = {}) const {
        std::vector<std::string> a = {TARN_BINARY, "pool", "run", "--socket", sock};
        a.insert(a.end(), flags.begin(), flags.end());
        a.insert(a.end(), {"p", "--", "sh", "-c", script});
        return std::make_unique<Background>(a, tmpl.dir() + "/" + name + ".out");
    }

    json status() const {
        Result r = pool({"status", "--json"});
        EXPECT_EQ(r.code, 0) << r.err;
        return json::parse(r.out)["pools"][0];
    }

    std::string shared_file(const std::string& name) const { return shared + "/" + name; }
    bool wait_file(const std::string& name) const {
        return eventually([&] { return path_exists(shared_file(name)); }, 20000ms);
    }
};

// Sandbox cgroups a pool accounts for: its sandboxes' and the spare ones it keeps
// for the next sandboxes.
size_t cgroups_in_use(const json& st) {
    return st["total"].get<size_t>() + st["cgroups"]["spare"].get<size_t>();
}

// Waits in the workload until the test creates /shared/<name>.
std::string wait_for(const std::string& name) {
    return "while [ ! -e /shared/" + name + " ]; do sleep 0.02; done";
}

// A daemon starting kills whatever is below its cgroup parent (a crashed daemon's
// leftovers): a second daemon on another socket but the same parent must refuse to
// start rather than kill the first one's sandboxes.
TEST_F(PoolTest, ASecondDaemonOnTheSameCgroupParentRefusesAndLeavesTheFirstAlone) {
    serve(2, 4);
    ASSERT_TRUE(eventually([&] { return status().value("idle", 0u) >= 2; }, 20000ms));
    json cfg = config(1, 2);
    cfg["socket"] = tmpl.dir() + "/second.sock";
    write_text(tmpl.dir() + "/second.json", cfg.dump());
    Result r = tarn::test::tarn({"pool", "serve", "--config", tmpl.dir() + "/second.json"}, tmpl.root());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("cgroup parent " + cgparent + ": another pool daemon serves it"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(tmpl.dir() + "/second.sock"));
    // The first daemon's sandboxes were not touched: none lost, and it serves.
    json st = status();
    EXPECT_EQ(st.value("lost", 0u), 0u) << st.dump();
    Result c = run("echo still");
    EXPECT_EQ(c.code, 0) << c.err;
    EXPECT_EQ(c.out, "still\n");
    EXPECT_EQ(status().value("lost", 0u), 0u);
}

TEST_F(PoolTest, RunsACommandWithItsStdioEnvCwdAndExitCode) {
    serve();
    Result r = run("cat; echo \"$GREETING from $(pwd) as pid $$\"; echo oops >&2; exit 3",
                   {"-e", "GREETING=hello", "--cwd", "/tmp"}, "piped in\n");
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_EQ(r.out, "piped in\nhello from /tmp as pid 1\n");
    EXPECT_EQ(r.err, "oops\n");
    // The template's env stays unless a request overrides it.
    r = run("echo $PATH; echo $TERM", {"-e", "TERM=dumb"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("/bin"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("dumb"), std::string::npos) << r.out;
}

// A Kubernetes RuntimeDefault template (noNewPrivileges false, uid 1000, the default
// capabilities): the sandbox parks privileged and loads the filter at claim time.
TEST_F(PoolTest, RuntimeDefaultSeccompWithoutNoNewPrivilegesHoldsInTheClaimedWorkload) {
    tmpl.config["process"]["noNewPrivileges"] = false;
    tmpl.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    set_capabilities(tmpl.config["process"], docker_default_caps());
    tmpl.config["linux"]["seccomp"] = runtime_default_profile();
    serve();
    // Fields 19 and 41 of its stat: nice 0 and SCHED_OTHER, not the spawners' priority.
    Result r = run("grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; id -u; cut -d' ' -f19,41 /proc/self/stat");
    EXPECT_EQ(r.code, 0) << r.err << read_text(log_path);
    EXPECT_EQ(r.out, "CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t2\n1000\n0 0\n");
}

TEST_F(PoolTest, AUserNamespaceTemplateMappedToAnUnprivilegedHostUidRunsAtNormalPriority) {
    // What rootless-style callers send: the container's root is host uid 100000.
    json map = json::array({{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}});
    tmpl.config["linux"]["namespaces"].push_back({{"type", "user"}});
    tmpl.config["linux"]["uidMappings"] = map;
    tmpl.config["linux"]["gidMappings"] = map;
    tmpl.config["process"]["noNewPrivileges"] = false;
    tmpl.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    serve();
    Result r = run("cat /proc/self/uid_map; id -u; cut -d' ' -f19,41 /proc/self/stat");
    EXPECT_EQ(r.code, 0) << r.err << read_text(log_path);
    std::istringstream out(r.out);
    std::string inside, outside, size, uid, nice, policy;
    out >> inside >> outside >> size >> uid >> nice >> policy;
    EXPECT_EQ(inside + " " + outside, "0 100000") << r.out;
    EXPECT_EQ(uid, "1000") << r.out;
    EXPECT_EQ(nice + " " + policy, "0 0") << r.out;
}

// The daemon's spawners: its children named tarn-spawner in its own pid namespace
// (the sandbox inits it parents have the name too, in namespaces of their own).
std::vector<pid_t> spawners_of(pid_t daemon) {
    std::vector<pid_t> out;
    if (DIR* d = ::opendir("/proc")) {
        while (dirent* e = ::readdir(d)) {
            if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
            std::string stat = read_text(std::string("/proc/") + e->d_name + "/stat");
            size_t close = stat.rfind(')');
            if (close == std::string::npos || stat.find("(tarn-spawner)") == std::string::npos) continue;
            std::istringstream rest(stat.substr(close + 2));
            std::string state;
            pid_t ppid = 0;
            rest >> state >> ppid;
            // "NSpid:\t<pid>" has one pid per pid namespace the process is in.
            std::string status = read_text(std::string("/proc/") + e->d_name + "/status");
            size_t at = status.find("NSpid:");
            if (at == std::string::npos) continue;  // it exited between the two reads
            std::istringstream nspid(status.substr(at, status.find('\n', at) - at));
            std::string word;
            int levels = -1;
            while (nspid >> word) ++levels;
            if (ppid == daemon && levels == 1) out.push_back(std::stoi(e->d_name));
        }
        ::closedir(d);
    }
    return out;
}

// Field 41 of /proc/PID/stat: the scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE).
int sched_policy(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 41 && rest >> field; ++i) {
    }
    return std::stoi(field);
}

TEST_F(PoolTest, SandboxesAreMadeInTheBackgroundButWorkloadsRunAtNormalPriority) {
    serve();
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 2; }, 20000ms));
    // The daemon runs as root here: once the pool is full the spawners are SCHED_IDLE
    // (nice 10), and the sandboxes they make set up at that policy; a claim puts the
    // workload at nice 0.
    for (pid_t sp : spawners_of(daemon->pid)) EXPECT_EQ(sched_policy(sp), SCHED_IDLE) << sp;
    // One made now, with the pool full again, inherited the background policy.
    Result first = run("true");
    EXPECT_EQ(first.code, 0) << first.err;
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 2; }, 20000ms));
    std::vector<pid_t> parked;
    for (const std::string& d : sandbox_dirs(cgparent + "/p")) {
        std::string procs = read_text(d + "/cgroup.procs");
        if (!procs.empty()) parked.push_back(std::stoi(procs));
    }
    ASSERT_EQ(parked.size(), 2u);
    for (pid_t p : parked) {
        errno = 0;
        EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(p)), 10) << p;
    }
    EXPECT_TRUE(sched_policy(parked[0]) == SCHED_IDLE || sched_policy(parked[1]) == SCHED_IDLE);
    // Fields 19 and 41 of /proc/self/stat: the nice value and the policy.
    Result r = run("cut -d' ' -f19,41 /proc/self/stat");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "0 0\n");
}

TEST_F(PoolTest, ThePoolRunningLowOrAClaimWaitingTakesTheSpawnersOffIdleTime) {
    // SCHED_IDLE makes run only on a CPU nothing else wants: once the pool holds fewer
    // ready sandboxes than one make's worth of requests (here: none), or a claim
    // waits, the spawners run at SCHED_OTHER (nice 10), and go back once it is full.
    serve(1, 1);
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }, 20000ms));
    std::vector<pid_t> spawners = spawners_of(daemon->pid);
    ASSERT_FALSE(spawners.empty());
    auto all = [&](int policy, int nice) {
        for (pid_t sp : spawners) {
            errno = 0;
            if (sched_policy(sp) != policy || ::getpriority(PRIO_PROCESS, static_cast<id_t>(sp)) != nice) return false;
        }
        return true;
    };
    EXPECT_TRUE(eventually([&] { return all(SCHED_IDLE, 10); }));
    auto busy = run_bg("echo > /shared/up; " + wait_for("go"), "busy");
    ASSERT_TRUE(wait_file("up")) << busy->output();
    EXPECT_TRUE(eventually([&] { return all(SCHED_OTHER, 10); }, 5000ms));
    auto patient = run_bg("echo second", "patient", {"--wait", "20000"});
    EXPECT_TRUE(eventually([&] { return status()["waiting"] == 1; }, 5000ms)) << status();
    EXPECT_TRUE(all(SCHED_OTHER, 10));
    write_text(shared_file("go"), "");
    EXPECT_EQ(busy->wait(), 0) << busy->output();
    EXPECT_EQ(patient->wait(), 0) << patient->output();
    EXPECT_EQ(patient->output(), "second\n");
    EXPECT_TRUE(eventually([&] { return status()["idle"] == 1 && all(SCHED_IDLE, 10); }, 10000ms)) << status();
}

// What the fds of `pids` point to ("net:[4026...]", "/dev/null", ...).
std::set<std::string> fd_targets(const std::vector<pid_t>& pids) {
    std::set<std::string> out;
    for (pid_t p : pids) {
        std::string dir = "/proc/" + std::to_string(p) + "/fd";
        if (DIR* d = ::opendir(dir.c_str())) {
            while (dirent* e = ::readdir(d)) {
                char buf[256];
                ssize_t n = ::readlinkat(::dirfd(d), e->d_name, buf, sizeof buf);
                if (n > 0) out.insert(std::string(buf, static_cast<size_t>(n)));
            }
            ::closedir(d);
        }
    }
    return out;
}

TEST_F(PoolTest, SpawnersHoldASandboxsMountAndNetworkNamespacesUntilItIsGone) {
    serve(1, 2);
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }, 20000ms));
    std::vector<pid_t> spawners = spawners_of(daemon->pid);
    // The workload's own namespaces, as it sees them; held while it runs, so the
    // exit report does not wait for their teardown, and let go once it is reported.
    auto c = run_bg("(readlink /proc/self/ns/net; readlink /proc/self/ns/mnt) > /shared/ns; echo > /shared/up; " +
                        wait_for("go"),
                    "held");
    ASSERT_TRUE(wait_file("up")) << c->output();
    std::istringstream lines(read_text(shared_file("ns")));
    std::string net, mnt;
    lines >> net >> mnt;
    ASSERT_EQ(net.rfind("net:[", 0), 0u) << net;
    ASSERT_EQ(mnt.rfind("mnt:[", 0), 0u) << mnt;
    std::set<std::string> held = fd_targets(spawners);
    EXPECT_TRUE(held.count(net)) << net;
    EXPECT_TRUE(held.count(mnt)) << mnt;
    write_text(shared_file("go"), "");
    EXPECT_EQ(c->wait(), 0) << c->output();
    EXPECT_TRUE(eventually([&] {
        std::set<std::string> now = fd_targets(spawners);
        return !now.count(net) && !now.count(mnt);
    })) << "a spawner still holds " << net << " or " << mnt;
}

TEST_F(PoolTest, AWorkloadIsInItsSandboxCgroupInEveryHierarchyAndSeesItAsItsRoot) {
    serve();
    auto c = run_bg("cat /proc/self/cgroup > /shared/cg; ls -l /proc/self/fd > /shared/fds; echo > /shared/up; " +
                        wait_for("go"),
                    "cg");
    ASSERT_TRUE(wait_file("up")) << c->output();
    auto [dir, pid] = running_workload(cgparent + "/p");
    ASSERT_GT(pid, 1);
    std::string cg = dir.substr(host_cgroup_dir("", "pids").size());
    // From the host: the sandbox's cgroup in every hierarchy the process is in (on v1
    // the init moved itself into each one; on a hybrid host it was born in the
    // cgroup2 one), none left at the daemon's.
    std::istringstream host(read_text("/proc/" + std::to_string(pid) + "/cgroup"));
    std::string line;
    int lines = 0;
    while (std::getline(host, line)) {
        ++lines;
        std::string path = line.substr(line.find(':', line.find(':') + 1) + 1);
        EXPECT_EQ(path, cg) << line;
    }
    EXPECT_GT(lines, 0);
    // Inside: its own cgroup is the root of its cgroup namespace, and no cgroup file
    // of the host's is open.
    std::istringstream inside(read_text(shared_file("cg")));
    while (std::getline(inside, line)) EXPECT_EQ(line.substr(line.rfind(':') + 1), "/") << line;
    EXPECT_EQ(read_text(shared_file("fds")).find("cgroup"), std::string::npos) << read_text(shared_file("fds"));
    write_text(shared_file("go"), "");
    EXPECT_EQ(c->wait(), 0) << c->output();
}

TEST_F(PoolTest, SignalsReachTheWorkloadAndASignalDeathGives128PlusN) {
    serve();
    // The client forwards SIGTERM; pid 1 with a handler takes it.
    auto c = run_bg("trap 'echo got TERM; exit 0' TERM; echo > /shared/up; while true; do sleep 0.02; done", "term");
    ASSERT_TRUE(wait_file("up"));
    c->kill(SIGTERM);
    EXPECT_EQ(c->wait(), 0) << c->output();
    EXPECT_NE(c->output().find("got TERM"), std::string::npos) << c->output();
    // Killed from the host: the client exits as a shell would, 128 + 9.
    auto k = run_bg("echo > /shared/up2; " + wait_for("never"), "kill");
    ASSERT_TRUE(wait_file("up2"));
    auto [dir, pid] = running_workload(cgparent + "/p");
    ASSERT_GT(pid, 1);
    ::kill(pid, SIGKILL);
    EXPECT_EQ(k->wait(), 137) << k->output();
}

TEST_F(PoolTest, TwoSandboxesSeeNeitherEachOtherNorTheDaemon) {
    serve();
    const std::string probe =
        "for n in pid net ipc uts mnt; do readlink /proc/self/ns/$n; done > /shared/$ID.ns; "
        "echo secret-$ID > /tmp/mark-$ID; ls /proc | grep -c '^[0-9]' > /shared/$ID.procs; hostname > /shared/$ID.host; "
        "echo > /shared/$ID.up; " + wait_for("go") + "; ls /tmp > /shared/$ID.tmp";
    auto a = run_bg(probe, "a", {"-e", "ID=a"});
    auto b = run_bg(probe, "b", {"-e", "ID=b"});
    ASSERT_TRUE(wait_file("a.up") && wait_file("b.up")) << a->output() << b->output();
    write_text(shared_file("go"), "");
    EXPECT_EQ(a->wait(), 0) << a->output();
    EXPECT_EQ(b->wait(), 0) << b->output();

    std::string ns_a = read_text(shared_file("a.ns")), ns_b = read_text(shared_file("b.ns"));
    std::istringstream ia(ns_a), ib(ns_b);
    std::string la, lb;
    std::set<std::string> host;
    for (const char* n : {"pid", "net", "ipc", "uts", "mnt"}) {
        char buf[128] = {};
        ASSERT_GT(::readlink((std::string("/proc/self/ns/") + n).c_str(), buf, sizeof buf - 1), 0);
        host.insert(buf);
    }
    while (std::getline(ia, la) && std::getline(ib, lb)) {
        EXPECT_NE(la, lb) << "both sandboxes share " << la;
        EXPECT_FALSE(host.count(la)) << "sandbox shares the host's " << la;
    }
    // Each sees its own pid 1 (and the few processes of its probe), nothing else.
    EXPECT_LE(std::stoi(read_text(shared_file("a.procs"))), 4);
    EXPECT_LE(std::stoi(read_text(shared_file("b.procs"))), 4);
    // Writes to the shared template root land in each sandbox's own overlay.
    EXPECT_EQ(read_text(shared_file("a.tmp")).find("mark-b"), std::string::npos);
    EXPECT_EQ(read_text(shared_file("b.tmp")).find("mark-a"), std::string::npos);
    EXPECT_NE(read_text(shared_file("a.tmp")).find("mark-a"), std::string::npos);
    EXPECT_FALSE(path_exists(busybox_rootfs() + "/tmp/mark-a")) << "a sandbox wrote into the template";
}

TEST_F(PoolTest, ASandboxIsNeverHandedOutTwiceAndGoesAfterUse) {
    // Without cgroup reuse, every used sandbox's cgroup is removed (the reuse:
    // AUsedSandboxCgroupIsResetForTheNextSandbox).
    json cfg = config(1, 2);
    cfg["pools"][0]["reuseCgroups"] = false;
    serve(cfg);
    std::set<std::string> seen;
    for (int i = 0; i < 4; ++i) {
        Result r = tarn::test::tarn({"--debug", "pool", "run", "--socket", sock, "p", "--", "true"}, tmpl.root());
        ASSERT_EQ(r.code, 0) << r.err;
        auto at = r.err.find("sandbox ");
        ASSERT_NE(at, std::string::npos) << r.err;
        std::string name = r.err.substr(at + 8, r.err.find(' ', at + 8) - at - 8);
        EXPECT_TRUE(seen.insert(name).second) << name << " served twice";
        std::string dir = host_cgroup_dir(cgparent + "/p/" + name, "pids");
        EXPECT_TRUE(eventually([&] { return !path_exists(dir); })) << dir << " still exists after its workload exited";
    }
    json st = status();
    EXPECT_EQ(st["claims"], 4);
    EXPECT_GE(st["made"].get<int>(), 4);
    EXPECT_EQ(st["allocated"], 0);
    EXPECT_LE(st["total"].get<int>(), 2);
}

// Where a symlink points (a namespace's "pid:[4026...]"); empty when it cannot be read.
std::string read_link(const std::string& path) {
    char buf[256] = {};
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// Directories named `path` in any hierarchy (every v1 one and the cgroup2 one).
std::vector<std::string> cgroup_dirs_named(const std::string& path) {
    std::vector<std::string> out;
    if (cgroups::detect() == cgroups::Mode::unified) {
        if (path_exists("/sys/fs/cgroup" + path)) out.push_back("/sys/fs/cgroup" + path);
        return out;
    }
    if (DIR* d = ::opendir("/sys/fs/cgroup")) {
        while (dirent* e = ::readdir(d)) {
            std::string dir = std::string("/sys/fs/cgroup/") + e->d_name + path;
            if (e->d_name[0] != '.' && path_exists(dir)) out.push_back(dir);
        }
        ::closedir(d);
    }
    return out;
}

// A used sandbox's cgroup, once vacant, serves a sandbox made later: with the
// template's limits, not the last claim's, and its peaks from zero; the new
// workload is alone in it and sees it as its root. Stopping removes it.
TEST_F(PoolTest, AUsedSandboxCgroupIsResetForTheNextSandbox) {
    json cfg = config(1, 2);
    cfg["pools"][0]["sizing"] = "fixed";
    serve(cfg);
    bool v2 = cgroups::detect() == cgroups::Mode::unified;
    // Limits of its own, and 24 MiB written to its root (its overlay's tmpfs).
    auto first = run_bg("head -c 25165824 /dev/zero > /tmp/fill; echo > /shared/up; " + wait_for("go"),
                        "first", {"--memory", "48m", "--pids", "9"});
    ASSERT_TRUE(wait_file("up")) << first->output();
    auto [dir, pid] = running_workload(cgparent + "/p");
    ASSERT_GT(pid, 1);
    std::string cg = dir.substr(host_cgroup_dir("", "pids").size());
    std::string mem = host_cgroup_dir(cg, "memory");
    if (!v2) {
        EXPECT_GE(std::stoull(read_text(mem + "/memory.max_usage_in_bytes")), 24ull << 20);
    }
    write_text(shared_file("go"), "");
    EXPECT_EQ(first->wait(), 0) << first->output();
    // Recycled: the pool's only spare cgroup (its idle sandbox was made meanwhile).
    ASSERT_TRUE(eventually([&] { return status()["cgroups"]["spare"] == 1; })) << status();

    // The next claim takes the idle sandbox, and the one made for the claim after it
    // is made in that cgroup.
    bool found = false;
    for (int i = 0; i < 2 && !found; ++i) {
        ::unlink(shared_file("up").c_str());
        ::unlink(shared_file("go").c_str());
        auto c = run_bg("cat /proc/self/cgroup > /shared/cg; echo > /shared/up; " + wait_for("go"),
                        "probe" + std::to_string(i));
        ASSERT_TRUE(wait_file("up")) << c->output();
        auto [d, p] = running_workload(cgparent + "/p");
        if (d == dir) {
            found = true;
            EXPECT_EQ(read_text(dir + "/pids.max"), "max\n");
            if (v2) {
                EXPECT_EQ(read_text(mem + "/memory.max"), "max\n");
            } else {
                EXPECT_GT(std::stoull(read_text(mem + "/memory.limit_in_bytes")), 1ull << 60);
                EXPECT_LT(std::stoull(read_text(mem + "/memory.max_usage_in_bytes")), 16ull << 20);
                EXPECT_EQ(read_text(mem + "/memory.failcnt"), "0\n");
            }
            std::istringstream host(read_text("/proc/" + std::to_string(p) + "/cgroup"));
            for (std::string line; std::getline(host, line);)
                EXPECT_EQ(line.substr(line.find(':', line.find(':') + 1) + 1), cg) << line;
            std::istringstream inside(read_text(shared_file("cg")));
            for (std::string line; std::getline(inside, line);)
                EXPECT_EQ(line.substr(line.rfind(':') + 1), "/") << line;
            // Nothing of the earlier sandbox is left in it: every process there is
            // in the new workload's pid namespace.
            std::string ns = read_link("/proc/" + std::to_string(p) + "/ns/pid");
            std::istringstream procs(read_text(dir + "/cgroup.procs"));
            for (std::string q; std::getline(procs, q);) {
                std::string other = read_link("/proc/" + q + "/ns/pid");
                EXPECT_TRUE(other.empty() || other == ns) << "process " << q << " in " << other;
            }
        }
        write_text(shared_file("go"), "");
        EXPECT_EQ(c->wait(), 0) << c->output();
    }
    EXPECT_TRUE(found) << "no sandbox was made in " << dir << ": " << status();
    EXPECT_GE(status()["cgroups"]["reused"].get<int>(), 1);
    EXPECT_EQ(status()["cgroups"]["noReuse"], "");

    pool({"stop"});
    EXPECT_EQ(daemon->wait(), 0) << read_text(log_path);
    EXPECT_EQ(cgroup_dirs_named(cgparent), std::vector<std::string>{});
}

// A claim whose workload could write to its own cgroup (a writable bind of the cgroup
// filesystem) leaves its cgroup to no one; a read-only bind of it does not matter.
TEST_F(PoolTest, ACgroupItsWorkloadCouldWriteIsRemovedNotReused) {
    json cfg = config(1, 2);
    cfg["pools"][0]["sizing"] = "fixed";
    serve(cfg);
    auto claim = [&](const std::string& bind) {
        ::unlink(shared_file("up").c_str());
        ::unlink(shared_file("go").c_str());
        auto c = run_bg("echo > /shared/up; " + wait_for("go"), "bind", {"--bind", bind});
        EXPECT_TRUE(wait_file("up")) << c->output();
        std::string dir = running_workload(cgparent + "/p").first;
        write_text(shared_file("go"), "");
        EXPECT_EQ(c->wait(), 0) << c->output();
        return dir;
    };
    std::string rw = claim("/sys/fs/cgroup:/hostcg");
    ASSERT_FALSE(rw.empty());
    EXPECT_TRUE(eventually([&] { return !path_exists(rw); })) << rw << " was kept";
    std::string ro = claim("/sys/fs/cgroup:/hostcg:ro");
    ASSERT_FALSE(ro.empty());
    EXPECT_TRUE(eventually([&] { return status()["cgroups"]["spare"] == 1; })) << status();
    EXPECT_TRUE(path_exists(ro));
}

// A template whose workload could write to its cgroup never has its cgroups reused:
// with CAP_SETFCAP, in a user namespace of its own, it maps host root and mounts them.
TEST_F(PoolTest, ATemplateWhoseWorkloadCouldWriteItsCgroupGetsNewOnes) {
    for (const char* set : {"bounding", "effective", "permitted"})
        tmpl.config["process"]["capabilities"][set].push_back("CAP_SETFCAP");
    json cfg = config(1, 2);
    cfg["pools"][0]["sizing"] = "fixed";
    serve(cfg);
    EXPECT_NE(status()["cgroups"]["noReuse"].get<std::string>().find("CAP_SETFCAP"), std::string::npos)
        << status();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(run("true").code, 0);
    EXPECT_EQ(status()["cgroups"]["reused"], 0);
    EXPECT_TRUE(eventually([&] {
        return sandbox_dirs(cgparent + "/p").size() == status()["total"].get<size_t>();
    })) << status();
}

TEST_F(PoolTest, PerSandboxLimitsApplyToThatSandbox) {
    serve();
    auto c = run_bg("echo > /shared/up; " + wait_for("go"), "lim", {"--memory", "48m", "--pids", "9"});
    ASSERT_TRUE(wait_file("up")) << c->output();
    auto [dir, pid] = running_workload(cgparent + "/p");
    ASSERT_GT(pid, 1);
    std::string cg = dir.substr(host_cgroup_dir("", "pids").size());
    bool v2 = cgroups::detect() == cgroups::Mode::unified;
    EXPECT_EQ(read_text(host_cgroup_dir(cg, "memory") + (v2 ? "/memory.max" : "/memory.limit_in_bytes")),
              std::to_string(48ll << 20) + "\n");
    EXPECT_EQ(read_text(dir + "/pids.max"), "9\n");
    // The others keep the template's limits.
    for (const std::string& other : sandbox_dirs(cgparent + "/p")) {
        if (other == dir) continue;
        EXPECT_EQ(read_text(other + "/pids.max"), "max\n") << other;
    }
    write_text(shared_file("go"), "");
    EXPECT_EQ(c->wait(), 0) << c->output();
}

TEST_F(PoolTest, APoolNeverExceedsItsMemoryBudget) {
    // 64 MiB for the whole pool; ten sandboxes each try to hold 12 MiB at once.
    serve(config(2, 10, {{"memory", 64 << 20}}));
    std::vector<std::unique_ptr<Background>> runs;
    for (int i = 0; i < 10; ++i)
        runs.push_back(run_bg("x=$(head -c 12582912 /dev/zero | tr '\\0' a); echo > /shared/held-$ID; " + wait_for("go") +
                                  "; echo ${#x}",
                              "m" + std::to_string(i), {"-e", "ID=" + std::to_string(i), "--wait", "30000"}));
    // Wait until every one either holds its memory or was killed, then release them.
    std::vector<int> codes(runs.size(), -1);
    auto settled = [&] {
        int held = 0, done = 0;
        for (size_t i = 0; i < runs.size(); ++i) {
            if (codes[i] < 0) codes[i] = runs[i]->wait(0ms);
            if (codes[i] >= 0) ++done;
            else if (path_exists(shared_file("held-" + std::to_string(i)))) ++held;
        }
        return held + done == static_cast<int>(runs.size());
    };
    EXPECT_TRUE(eventually(settled, 60000ms));
    write_text(shared_file("go"), "");
    int ok = 0, killed = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
        int code = codes[i] >= 0 ? codes[i] : runs[i]->wait(30000ms);
        auto& r = runs[i];
        if (code == 0) ++ok;
        else if (code == 137) ++killed;
        else ADD_FAILURE() << "exit " << code << ": " << r->output();
    }
    EXPECT_LE(ok, 5) << "more than 64 MiB held at once";
    EXPECT_GE(killed, 5);
    std::string pool_dir = host_cgroup_dir(cgparent + "/p", "memory");
    if (cgroups::detect() != cgroups::Mode::unified)
        EXPECT_LE(std::stoll(read_text(pool_dir + "/memory.max_usage_in_bytes")), 64ll << 20);
    else
        EXPECT_LE(std::stoll(read_text(pool_dir + "/memory.peak")), 64ll << 20);
}

TEST_F(PoolTest, TheIdleTargetStaysWithinWhatThePidsBudgetHolds) {
    // Six wanted idle, but the pool's budget holds four tasks and a parked sandbox is
    // one: the daemon reads the pool cgroup's use and caps the target at four instead
    // of failing makes on pids.max for ever.
    serve(config(6, 10, {{"pids", 4}}));
    bool capped = eventually([&] {
        json j = status();
        return j["sizing"]["target"] == 4 && j["idle"] == 4 &&
               j["sizing"]["why"].get<std::string>().find("capped by the budget") != std::string::npos;
    }, 20000ms);
    EXPECT_TRUE(capped) << status().dump(2);
    Result r = run("echo served");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "served\n");
}

TEST_F(PoolTest, AClaimThatFindsThePidsBudgetFullIsToldSo) {
    // A budget of two tasks: two running workloads fill it, so no sandbox is made for
    // a third claim, which hears why when its wait runs out. The workloads fork
    // nothing (shell builtins and a FIFO), so they fit in the budget themselves.
    serve(config(1, 4, {{"pids", 2}}));
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }, 20000ms));
    std::vector<std::unique_ptr<Background>> holders;
    for (std::string id : {"a", "b"}) {
        ASSERT_EQ(::mkfifo(shared_file("go-" + id).c_str(), 0644), 0);
        holders.push_back(run_bg("echo > /shared/up-" + id + "; read x < /shared/go-" + id + "; echo $x", id));
        ASSERT_TRUE(wait_file("up-" + id)) << holders.back()->output();
    }
    EXPECT_TRUE(eventually([&] { return status()["idle"] == 0 && status()["starting"] == 0; })) << status().dump(2);
    Result r = run("true", {"--wait", "500"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("no sandbox free within 500 ms (its pids budget of 2 tasks is full)"), std::string::npos)
        << r.err;
    for (std::string id : {"a", "b"}) write_text(shared_file("go-" + id), "done\n");
    for (auto& h : holders) {
        EXPECT_EQ(h->wait(), 0) << h->output();
        EXPECT_EQ(h->output(), "done\n");
    }
    // The budget has room again once they are gone.
    r = run("echo again", {"--wait", "20000"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "again\n");
}

TEST_F(PoolTest, AnIdleSandboxThatDiedIsNeverHandedOut) {
    // Fixed sizing: the miss below would otherwise raise the idle count this test
    // expects the pool to return to.
    json cfg = config(2, 4);
    cfg["pools"][0]["sizing"] = "fixed";
    serve(cfg);
    ASSERT_TRUE(eventually([&] { return status()["idle"].get<int>() == 2; }, 20000ms));
    std::vector<std::string> old_dirs = sandbox_dirs(cgparent + "/p");
    std::vector<pid_t> inits;
    for (const std::string& dir : old_dirs) {
        std::istringstream procs(read_text(dir + "/cgroup.procs"));
        for (std::string pid; std::getline(procs, pid);) inits.push_back(std::stoi(pid));
    }
    ASSERT_EQ(inits.size(), 2u);
    // The daemon is stopped while a request comes in and then both idle inits die
    // (as under the budget's OOM killer): it resumes with the request first in line.
    ::kill(daemon->pid, SIGSTOP);
    auto client = run_bg("echo ran", "client");
    bool sent = eventually([&] {
        std::string wchan = read_text("/proc/" + std::to_string(client->pid) + "/wchan");
        return wchan.find("unix_stream") != std::string::npos || wchan.find("poll") != std::string::npos;
    }, 10000ms);
    for (pid_t pid : inits) ::kill(pid, SIGKILL);
    eventually([&] {
        for (pid_t pid : inits)
            if (read_text("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos &&
                path_exists("/proc/" + std::to_string(pid)))
                return false;
        return true;
    });
    ::kill(daemon->pid, SIGCONT);
    EXPECT_TRUE(sent) << "the client never waited for its answer";
    EXPECT_EQ(client->wait(), 0) << client->output();
    EXPECT_EQ(client->output(), "ran\n");
    EXPECT_NE(read_text(log_path).find("went away"), std::string::npos) << read_text(log_path);
    EXPECT_EQ(status()["lost"].get<int>(), 2);
    // The dead sandboxes are gone and the pool is back to its idle count; their
    // cgroups were removed or serve new sandboxes.
    EXPECT_TRUE(eventually([&] { return status()["idle"].get<int>() == 2; }, 20000ms));
    EXPECT_TRUE(eventually([&] { return sandbox_dirs(cgparent + "/p").size() == cgroups_in_use(status()); }))
        << sandbox_dirs(cgparent + "/p").size() << " cgroups for " << status();
}


TEST_F(PoolTest, SpawnersThatDieAreReplaced) {
    // Fixed sizing, for the idle count to return to (the burst below misses).
    json cfg = config(2, 4);
    cfg["pools"][0]["sizing"] = "fixed";
    serve(cfg);
    ASSERT_TRUE(eventually([&] { return status()["idle"].get<int>() == 2; }, 20000ms));
    std::vector<pid_t> first = spawners_of(daemon->pid);
    ASSERT_FALSE(first.empty());
    // The idle inits die with them: the daemon's requests to remove their cgroups go
    // to spawners that may die before reading them.
    for (const std::string& dir : sandbox_dirs(cgparent + "/p")) {
        std::istringstream procs(read_text(dir + "/cgroup.procs"));
        for (std::string pid; std::getline(procs, pid);) ::kill(std::stoi(pid), SIGKILL);
    }
    for (pid_t pid : first) ::kill(pid, SIGKILL);
    // New ones take over, the dead are reaped, and the pool goes on making sandboxes:
    // four claims at once need more than the idle ones.
    ASSERT_TRUE(eventually(
        [&] {
            std::vector<pid_t> now = spawners_of(daemon->pid);
            for (pid_t pid : now)
                if (std::find(first.begin(), first.end(), pid) != first.end()) return false;
            return now.size() == first.size();
        },
        10000ms))
        << read_text(log_path);
    std::vector<std::unique_ptr<Background>> runs;
    for (int i = 0; i < 4; ++i)
        runs.push_back(run_bg("echo ran", "r" + std::to_string(i), {"--wait", "20000"}));
    for (auto& r : runs) {
        EXPECT_EQ(r->wait(), 0) << r->output();
        EXPECT_EQ(r->output(), "ran\n");
    }
    EXPECT_TRUE(eventually([&] { return status()["idle"].get<int>() == 2; }, 20000ms));
    EXPECT_NE(read_text(log_path).find("replaces it"), std::string::npos) << read_text(log_path);
    // The dead were reaped, and the sandboxes they took with them left no cgroup.
    for (pid_t pid : first) EXPECT_FALSE(path_exists("/proc/" + std::to_string(pid))) << pid;
    EXPECT_TRUE(eventually([&] { return sandbox_dirs(cgparent + "/p").size() == cgroups_in_use(status()); }))
        << sandbox_dirs(cgparent + "/p").size() << " cgroups for " << status();
}

TEST_F(PoolTest, AFullPoolMakesAClaimWaitOrFailAsTheCallerChooses) {
    serve(1, 1);
    auto busy = run_bg("echo > /shared/up; " + wait_for("go"), "busy");
    ASSERT_TRUE(wait_file("up"));
    Result r = pool({"run", "--wait", "0", "p", "--", "true"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("pool p: all 1 sandboxes are in use"), std::string::npos) << r.err;
    r = pool({"run", "--wait", "300", "p", "--", "true"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("pool p: no sandbox free within 300 ms"), std::string::npos) << r.err;
    // A patient claim gets the next sandbox once the running one is done.
    auto patient = run_bg("echo second", "patient", {"--wait", "20000"});
    std::this_thread::sleep_for(200ms);
    write_text(shared_file("go"), "");
    EXPECT_EQ(busy->wait(), 0) << busy->output();
    EXPECT_EQ(patient->wait(), 0) << patient->output();
    EXPECT_EQ(patient->output(), "second\n");
    // The refused and the timed-out claim were misses (the patient one may find the
    // next sandbox already made).
    EXPECT_GE(status()["misses"].get<int>(), 2);
}

TEST_F(PoolTest, ExtraBindMountsGoWhereAskedReadOnlyWhenAsked) {
    serve();
    std::string src = tmpl.scratch("bindsrc");
    write_text(src + "/in", "from the host\n");
    Result r = run("cat /pool-ro/in; touch /pool-ro/x 2>&1 | grep -c Read-only; echo out > /pool-rw/out",
                   {"--bind", src + ":/pool-ro:ro", "--bind", shared + ":/pool-rw"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "from the host\n1\n");
    EXPECT_EQ(read_text(shared_file("out")), "out\n");
    EXPECT_FALSE(path_exists(src + "/x"));
    // The next sandbox has none of them (names no other test puts in the shared rootfs).
    EXPECT_EQ(run("ls /pool-ro /pool-rw 2>&1 | grep -c 'No such file'").out, "2\n");
    r = pool({"run", "--bind", "/no/such/dir:/pool-ro", "p", "--", "true"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("bind source /no/such/dir: no such file or directory"), std::string::npos) << r.err;
}

TEST_F(PoolTest, AnIdmappedTemplateMountHoldsInEverySandbox) {
    // The idmapped tree is made by the spawner for each sandbox before its clone
    // (as for a cold start), so each sandbox sees the mapped owner.
    std::string src = tmpl.scratch("idmapped");
    write_text(src + "/f", "x\n");
    ASSERT_EQ(::chown((src + "/f").c_str(), 1000, 1000), 0);
    json map = json::array({{{"containerID", 1000}, {"hostID", 0}, {"size", 1}}});
    tmpl.config["mounts"].push_back({{"destination", "/idm"},
                                     {"type", "bind"},
                                     {"source", src},
                                     {"options", {"bind", "idmap"}},
                                     {"uidMappings", map},
                                     {"gidMappings", map}});
    serve();
    for (int i = 0; i < 3; ++i) {
        Result r = run("stat -c %u:%g /idm/f");
        EXPECT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.out, "0:0\n");
    }
    struct stat st;
    ASSERT_EQ(::stat((src + "/f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000u) << "the mapping must not change the owner on disk";
}

TEST_F(PoolTest, BadRequestsGetClearErrorsAndLeakNothing) {
    serve();
    Result r = pool({"run", "nope", "--", "true"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("pool \"nope\": no such pool"), std::string::npos) << r.err;
    r = pool({"run", "-e", "=x", "p", "--", "true"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("not KEY=VALUE"), std::string::npos) << r.err;
    r = pool({"run", "p", "--", "/no/such/program"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("/no/such/program"), std::string::npos) << r.err;
    r = pool({"run", "--cwd", "relative", "p", "--", "true"});
    EXPECT_NE(r.err.find("cwd: expected an absolute path"), std::string::npos) << r.err;

    // Raw messages: not JSON, too large, no stdio.
    auto raw = [&](const std::string& payload) {
        int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, sock.c_str());
        EXPECT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        timeval tv{10, 0};
        ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::send(s, payload.data(), payload.size(), MSG_NOSIGNAL);
        char buf[4096] = {};
        ssize_t n = ::recv(s, buf, sizeof buf - 1, 0);
        ::close(s);
        return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    };
    EXPECT_NE(raw("not json").find("not a JSON object"), std::string::npos);
    EXPECT_NE(raw(R"({"op":"run","pool":"p","args":["true"]})").find("expected 3 fds"), std::string::npos);
    EXPECT_NE(raw(R"({"op":"run","pool":"p","args":"true"})").find("args: expected an array"), std::string::npos);
    EXPECT_NE(raw(R"({"op":"dance"})").find("unknown op"), std::string::npos);
    std::string big = R"({"op":"run","pool":"p","args":[")" + std::string(180 * 1024, 'a') + "\"]}";
    EXPECT_NE(raw(big).find("larger than"), std::string::npos);

    json st = status();
    EXPECT_EQ(st["allocated"], 0);
    EXPECT_EQ(st["total"], st["idle"].get<int>() + st["starting"].get<int>());
    EXPECT_EQ(run("echo still fine").out, "still fine\n");
}

TEST_F(PoolTest, ARunReportsStartedThenExitOrOnlyAnExitCarryingWhatStartedSays) {
    serve();
    // What a client reads for one run request, every message until the exit report.
    auto events = [&](const json& extra) {
        std::vector<json> got;
        UniqueFd s = connect_daemon();
        UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        json req = {{"op", "run"}, {"pool", "p"}, {"args", {"sh", "-c", "exit 5"}}};
        req.update(extra);
        tarn::pool::detail::send_message(s.get(), req, {null.get(), null.get(), null.get()});
        json m;
        while (tarn::pool::detail::recv_message(s.get(), m)) {
            got.push_back(m);
            if (m.contains("error") || m.value("event", "") == "exit") break;
        }
        return got;
    };
    std::vector<json> both = events(json::object());
    ASSERT_EQ(both.size(), 2u) << json(both);
    EXPECT_EQ(both[0]["event"], "started");
    EXPECT_GT(both[0]["pid"].get<int>(), 1);
    EXPECT_TRUE(both[0]["sandbox"].is_string());
    EXPECT_GE(both[0]["claimMs"].get<double>(), 0.0);
    EXPECT_EQ(both[1]["event"], "exit");
    EXPECT_EQ(both[1]["exitCode"], 5);
    EXPECT_FALSE(both[1].contains("pid"));

    std::vector<json> one = events(json{{"started", false}});
    ASSERT_EQ(one.size(), 1u) << json(one);
    EXPECT_EQ(one[0]["event"], "exit");
    EXPECT_EQ(one[0]["exitCode"], 5);
    EXPECT_EQ(one[0]["signal"], 0);
    EXPECT_GT(one[0]["pid"].get<int>(), 1);
    EXPECT_NE(one[0]["sandbox"], both[0]["sandbox"]);
    EXPECT_GE(one[0]["claimMs"].get<double>(), 0.0);

    std::vector<json> bad = events(json{{"started", "no"}});
    ASSERT_EQ(bad.size(), 1u);
    EXPECT_NE(bad[0].value("error", "").find("started: expected boolean"), std::string::npos) << bad[0];
}

TEST_F(PoolTest, AConnectionCarriesOneRunAfterAnotherAndAKeptClientSurvivesARestart) {
    serve();
    // The protocol: after its exit report, a run connection takes the next run.
    UniqueFd s = connect_daemon();
    ASSERT_TRUE(s);
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    std::set<std::string> sandboxes;
    for (int code : {3, 4}) {
        json req = {{"op", "run"}, {"pool", "p"}, {"args", {"sh", "-c", "exit " + std::to_string(code)}}, {"started", false}};
        tarn::pool::detail::send_message(s.get(), req, {null.get(), null.get(), null.get()});
        json m;
        ASSERT_TRUE(tarn::pool::detail::recv_message(s.get(), m));
        EXPECT_EQ(m.value("event", ""), "exit") << m;
        EXPECT_EQ(m.value("exitCode", -1), code) << m;
        sandboxes.insert(m.value("sandbox", ""));
    }
    EXPECT_EQ(sandboxes.size(), 2u) << "each run has a sandbox of its own";

    // The client library keeps its connection; one whose daemon restarted since is
    // replaced, and the run goes through.
    tarn::pool::Client client(sock);
    tarn::pool::RunRequest r;
    r.pool = "p";
    r.args = {"sh", "-c", "exit 6"};
    r.stdio = {null.get(), null.get(), null.get()};
    EXPECT_EQ(client.run(r).exit_code, 6);
    EXPECT_EQ(client.run(r).exit_code, 6);
    pool({"stop"});
    EXPECT_EQ(daemon->wait(), 0) << read_text(log_path);
    serve();
    tarn::pool::RunResult again = client.run(r);
    EXPECT_EQ(again.exit_code, 6);
    EXPECT_GT(again.pid, 1);
    EXPECT_FALSE(again.sandbox.empty());
}

TEST_F(PoolTest, AClientThatDisconnectsMidRunTakesItsWorkloadWithIt) {
    serve();
    auto c = run_bg("echo > /shared/up; " + wait_for("never"), "dc");
    ASSERT_TRUE(wait_file("up")) << c->output();
    auto [dir, pid] = running_workload(cgparent + "/p");
    ASSERT_GT(pid, 1);
    c->kill(SIGKILL);
    c->wait();
    EXPECT_TRUE(eventually([&] { return !alive(pid); })) << "workload " << pid << " survived its client";
    // Its cgroup is removed, or reset for another sandbox.
    EXPECT_TRUE(eventually([&] {
        return !path_exists(dir) ||
               read_text(dir + "/cgroup.procs").find(std::to_string(pid)) == std::string::npos;
    })) << dir;
    EXPECT_EQ(status()["allocated"], 0);
}

TEST_F(PoolTest, ARestartAfterSigkillRemovesEverythingTheOldDaemonLeft) {
    serve();
    auto c = run_bg("echo > /shared/up; " + wait_for("never"), "orphan");
    ASSERT_TRUE(wait_file("up")) << c->output();
    auto [dir, workload] = running_workload(cgparent + "/p");
    ASSERT_GT(workload, 1);
    daemon->kill(SIGKILL);
    daemon->wait();
    c->kill(SIGKILL);
    c->wait();
    // The running workload outlives a crashed daemon ...
    EXPECT_TRUE(alive(workload));
    // ... until the next daemon starts and clears the old one's cgroups.
    ::unlink(sock.c_str());
    serve();
    EXPECT_TRUE(eventually([&] { return !alive(workload); })) << "workload " << workload << " survived the restart";
    EXPECT_FALSE(path_exists(dir));
    EXPECT_EQ(run("echo back").out, "back\n");
}

TEST_F(PoolTest, StopWaitsForRunningSandboxesAndLeavesNoCgroup) {
    serve();
    auto c = run_bg("echo > /shared/up; " + wait_for("go") + "; exit 5", "drain");
    ASSERT_TRUE(wait_file("up"));
    auto stopper = std::make_unique<Background>(std::vector<std::string>{TARN_BINARY, "pool", "stop", "--socket", sock},
                                                tmpl.dir() + "/stop.out");
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(c->wait(0ms), -1) << "stop killed a running sandbox";
    // New claims are refused while draining.
    Result r = run("true");
    EXPECT_NE(r.err.find("stopping"), std::string::npos) << r.err;
    write_text(shared_file("go"), "");
    EXPECT_EQ(c->wait(), 5) << c->output();
    EXPECT_EQ(stopper->wait(), 0) << stopper->output();
    EXPECT_EQ(daemon->wait(), 0) << read_text(log_path);
    EXPECT_FALSE(path_exists(host_cgroup_dir(cgparent, "pids")));
    EXPECT_FALSE(path_exists(sock));
}

TEST_F(PoolTest, ATemplateThatCannotStartFailsServeWithItsReason) {
    tmpl.config["process"]["terminal"] = true;
    tmpl.write();
    write_text(cfg_path, config(1, 2).dump());
    Result r = tarn::test::tarn({"pool", "serve", "--config", cfg_path}, tmpl.root());
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("process.terminal"), std::string::npos) << r.err;

    tmpl.config["process"]["terminal"] = false;
    tmpl.config["mounts"].push_back({{"destination", "/x"}, {"type", "bind"}, {"source", "/no/such/dir"}, {"options", {"bind"}}});
    tmpl.write();
    r = tarn::test::tarn({"pool", "serve", "--config", cfg_path}, tmpl.root());
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("/no/such/dir"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(host_cgroup_dir(cgparent + "/p", "pids"))) << "a failed serve left its cgroup";

    json bad = config(1, 2);
    bad["pools"][0]["bogus"] = 1;
    write_text(cfg_path, bad.dump());
    r = tarn::test::tarn({"pool", "serve", "--config", cfg_path}, tmpl.root());
    EXPECT_NE(r.err.find("pools[0].bogus: unknown field"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tarn::test

namespace tarn::test {
namespace {

// The OCI path: `tarn create`/`run` on a bundle annotated with a pool.
class PoolOciTest : public PoolTest {
protected:
    Bundle b;

    void SetUp() override {
        PoolTest::SetUp();
        if (IsSkipped()) return;
        b.config = tmpl.config;
        b.config["annotations"] = {{"tarn.pool", "p"}, {"tarn.pool.socket", sock}};
    }

    Result debug_run(const std::string& id) const {
        b.write();
        return tarn::test::tarn({"--debug", "run", "--bundle", b.dir(), id}, b.root());
    }
};

TEST_F(PoolOciTest, AnAnnotatedBundleRunsInAPooledSandbox) {
    serve();
    b.cmd("echo \"pid $$ on $(hostname)\"; ls /proc | grep -c '^[0-9]'; exit 4");
    Result r = debug_run("oci1");
    EXPECT_EQ(r.code, 4) << r.err;
    EXPECT_NE(r.err.find("create oci1: from pool p (sandbox p-"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "pid 1 on " + b.config["hostname"].get<std::string>());
    EXPECT_LE(std::stoi(r.out.substr(r.out.find('\n') + 1)), 3) << r.out;  // its own pid namespace
    json st = status();
    EXPECT_EQ(st["leases"], 1);
    // The container's cgroup (the sandbox's) went with `run`'s delete.
    EXPECT_EQ(sandbox_dirs(cgparent + "/p").size(), st["total"].get<size_t>());
}

TEST_F(PoolOciTest, CreateStartStateKillDeleteWorkAsForAColdContainer) {
    serve();
    b.cmd("echo started > /shared/oci2; " + wait_for("never"));
    b.write();
    std::string pid_file = b.scratch("pid");
    Result r = tarn::test::tarn({"--debug", "create", "--bundle", b.dir(), "--pid-file", pid_file + "/pid", "oci2"}, b.root());
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("from pool p"), std::string::npos) << r.err;
    pid_t pid = std::stoi(read_text(pid_file + "/pid"));
    json state = json::parse(b.tarn({"state", "oci2"}).out);
    EXPECT_EQ(state["status"], "created");
    EXPECT_EQ(state["pid"], pid);
    ASSERT_EQ(b.tarn({"start", "oci2"}).code, 0);
    ASSERT_TRUE(wait_file("oci2"));
    // A daemon restart leaves the container alone: its cgroup is leased, not a sandbox.
    pool({"stop", "--now"});
    daemon->wait();
    serve();
    EXPECT_TRUE(alive(pid));
    EXPECT_EQ(json::parse(b.tarn({"state", "oci2"}).out)["status"], "running");
    ASSERT_EQ(b.tarn({"kill", "oci2", "KILL"}).code, 0);
    EXPECT_TRUE(eventually([&] { return json::parse(b.tarn({"state", "oci2"}).out)["status"] == "stopped"; }));
    ASSERT_EQ(b.tarn({"delete", "oci2"}).code, 0);
    EXPECT_EQ(sandbox_dirs(cgparent + "/p").size(), status()["total"].get<size_t>()) << "the container's cgroup stayed";
}

TEST_F(PoolOciTest, ACallerThatGoesAwayBeforeTheReleaseLeavesNothing) {
    serve(1, 2);
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }, 20000ms));
    b.write();
    oci::Config cfg = oci::load_config(b.dir());
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, sock.c_str());
    ASSERT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    pool::detail::send_message(s, json{{"op", "lease"}, {"pool", "p"}, {"id", "gone"}, {"key", pool::detail::lease_key(cfg)}});
    json reply;
    std::vector<UniqueFd> fds;
    ASSERT_TRUE(pool::detail::recv_message(s, reply, &fds));
    ASSERT_TRUE(reply.contains("cgroup")) << reply.dump();
    std::string leased = reply["cgroup"].get<std::string>();
    ::close(s);  // no "release"
    EXPECT_TRUE(eventually([&] { return !path_exists(host_cgroup_dir(leased, "pids")); }, 20000ms))
        << leased << " stayed";
    EXPECT_EQ(status()["leases"], 0);
    std::string leases = path_exists(sock + ".leases") ? read_text(sock + ".leases") : "";
    EXPECT_EQ(leases.find(leased), std::string::npos) << leases;
    // The pool refills and serves the next bundle as usual.
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }, 20000ms));
    b.cmd("echo warm");
    Result r = debug_run("after-gone");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("from pool p"), std::string::npos) << r.err;
}

TEST_F(PoolOciTest, ABundleThatDiffersFromTheTemplateStartsCold) {
    serve();
    b.config["linux"]["resources"]["pids"] = {{"limit", 50}};
    b.cmd("true");
    Result r = debug_run("oci3");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("cold start, not from pool p: pool p: config differs from the template in linux.resources"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(status()["leases"], 0);
}

TEST_F(PoolOciTest, WithoutADaemonTheBundleStartsCold) {
    b.cmd("echo cold");
    Result r = debug_run("oci4");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "cold\n");
    EXPECT_NE(r.err.find("cold start, not from pool p: no pool daemon at " + sock), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tarn::test

// ---- sizing and metrics ------------------------------------------------------

namespace tarn::test {
namespace {

// Sends `request` to a metrics address ("unix:PATH" or "IPV4:PORT") and returns all
// the daemon wrote back before closing.
std::string http_exchange(const std::string& address, const std::string& request) {
    UniqueFd fd;
    if (address.rfind("unix:", 0) == 0) {
        fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, address.c_str() + 5, sizeof a.sun_path - 1);
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return "connect failed";
    } else {
        size_t colon = address.rfind(':');
        fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
        ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &a.sin_addr);
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return "connect failed";
    }
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
        return "send failed";
    std::string out;
    char buf[4096];
    for (;;) {
        pollfd pfd{fd.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 10000) != 1) return out + "\n(timed out)";
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) return out;
        out.append(buf, static_cast<size_t>(n));
    }
}

// A scrape, parsed: every sample by its series ("name{labels}" as written), or the
// first way in which the text breaks the exposition format (0.0.4).
struct Scraped {
    std::string status_line, content_type, error;
    std::map<std::string, double> series;
    double at(const std::string& s) const {
        auto it = series.find(s);
        return it == series.end() ? -1 : it->second;
    }
};

bool metric_name(std::string_view n) {
    if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0]))) return false;
    return std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; });
}

std::string check_exposition(const std::string& body, std::map<std::string, double>& series) {
    std::map<std::string, std::string> types;  // family → type
    std::set<std::string> helped, seen_families;
    std::string current;  // the family the last TYPE opened
    // Histograms: the last bucket count per series without `le`, to check they add up.
    std::map<std::string, double> last_bucket, inf_bucket;
    std::istringstream in(body);
    std::string line;
    int n = 0;
    if (body.empty() || body.back() != '\n') return "the text does not end in a newline";
    while (std::getline(in, line)) {
        std::string where = "line " + std::to_string(++n) + " \"" + line + "\": ";
        if (line.empty()) continue;
        if (line[0] == '#') {
            std::istringstream f(line);
            std::string hash, kw, name, rest;
            f >> hash >> kw >> name;
            if (kw != "HELP" && kw != "TYPE") continue;  // a plain comment
            if (!metric_name(name)) return where + "bad metric name";
            if (kw == "HELP") {
                if (!helped.insert(name).second) return where + "second HELP";
                continue;
            }
            f >> rest;
            if (rest != "counter" && rest != "gauge" && rest != "histogram" && rest != "summary" && rest != "untyped")
                return where + "unknown type";
            if (types.count(name)) return where + "second TYPE";
            if (seen_families.count(name)) return where + "TYPE after its samples";
            if (rest == "counter" && name.size() > 6 && name.substr(name.size() - 6) != "_total")
                return where + "a counter not named _total";
            types[name] = rest;
            current = name;
            continue;
        }
        // name{labels} value
        size_t brace = line.find('{');
        size_t sp = brace == std::string::npos ? line.find(' ') : line.find("} ");
        if (sp == std::string::npos) return where + "no value";
        std::string name = line.substr(0, std::min(brace, sp));
        if (!metric_name(name)) return where + "bad metric name";
        std::string labels, le;
        if (brace != std::string::npos) {
            labels = line.substr(brace + 1, sp - brace - 1);
            // k="v" pairs, comma-separated, with \\ \" \n escapes only.
            size_t i = 0;
            std::string rebuilt;
            while (i < labels.size()) {
                size_t eq = labels.find('=', i);
                if (eq == std::string::npos || labels[eq + 1] != '"') return where + "bad label";
                std::string key = labels.substr(i, eq - i);
                if (!metric_name(key) || key.find(':') != std::string::npos) return where + "bad label name";
                size_t j = eq + 2;
                std::string value;
                while (j < labels.size() && labels[j] != '"') {
                    if (labels[j] == '\\') {
                        if (j + 1 >= labels.size() || std::string("\\\"n").find(labels[j + 1]) == std::string::npos)
                            return where + "bad escape";
                        ++j;
                    }
                    value += labels[j++];
                }
                if (j >= labels.size()) return where + "unterminated label value";
                if (key == "le") le = value;
                else rebuilt += key + "=" + value + ",";
                i = j + 1;
                if (i < labels.size() && labels[i++] != ',') return where + "labels not comma-separated";
            }
            labels = rebuilt;
            ++sp;
        }
        std::string value = line.substr(sp + 1);
        double v;
        if (value == "+Inf") v = std::numeric_limits<double>::infinity();
        else if (value == "-Inf") v = -std::numeric_limits<double>::infinity();
        else if (value == "NaN") v = std::nan("");
        else {
            size_t used = 0;
            try {
                v = std::stod(value, &used);
            } catch (const std::exception&) {
                return where + "bad value";
            }
            if (used != value.size()) return where + "bad value";
        }
        // The family a sample belongs to: the histogram's for its _bucket/_sum/_count.
        std::string family = name;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            std::string s = suffix;
            if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
                types.count(name.substr(0, name.size() - s.size())) &&
                types[name.substr(0, name.size() - s.size())] == "histogram")
                family = name.substr(0, name.size() - s.size());
        }
        if (family != current) return where + "not under its family's TYPE";
        seen_families.insert(family);
        if (types[family] == "histogram") {
            std::string key = family + "{" + labels + "}";
            if (name == family + "_bucket") {
                if (le.empty()) return where + "a bucket without le";
                if (last_bucket.count(key) && v < last_bucket[key]) return where + "buckets not cumulative";
                last_bucket[key] = v;
                if (le == "+Inf") inf_bucket[key] = v;
            } else if (name == family + "_count") {
                if (!inf_bucket.count(key)) return where + "a histogram without its +Inf bucket";
                if (inf_bucket[key] != v) return where + "_count differs from the +Inf bucket";
            }
        }
        std::string id = line.substr(0, sp);
        if (series.count(id)) return where + "series twice";
        series[id] = v;
    }
    return "";
}

Scraped scrape(const std::string& address) {
    Scraped s;
    std::string text = http_exchange(address, "GET /metrics HTTP/1.1\r\nHost: tarn\r\nAccept: text/plain\r\n\r\n");
    size_t end = text.find("\r\n\r\n");
    if (end == std::string::npos) {
        s.error = "no HTTP header in: " + text;
        return s;
    }
    std::string head = text.substr(0, end), body = text.substr(end + 4);
    s.status_line = head.substr(0, head.find("\r\n"));
    size_t ct = head.find("Content-Type: ");
    if (ct != std::string::npos) s.content_type = head.substr(ct + 14, head.find("\r\n", ct) - ct - 14);
    s.error = check_exposition(body, s.series);
    return s;
}

TEST_F(PoolTest, MetricsAreServedInExpositionFormatAndMoveWithClaims) {
    // Fixed sizing with no floor: the first claim takes the sandbox made at start
    // (warm), the next one finds none (cold).
    json cfg = config(0, 4);
    cfg["pools"][0]["sizing"] = "fixed";
    std::string addr = "unix:" + tmpl.dir() + "/metrics.sock";
    cfg["metrics"] = addr;
    serve(cfg);
    EXPECT_EQ(json::parse(pool({"status", "--json"}).out)["metrics"], addr);
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }));

    Scraped before = scrape(addr);
    ASSERT_EQ(before.error, "") << before.status_line;
    EXPECT_EQ(before.status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(before.content_type, "text/plain; version=0.0.4; charset=utf-8");
    const std::string P = "{pool=\"p\"}";
    const std::string warm = "{pool=\"p\",kind=\"warm\"}", cold = "{pool=\"p\",kind=\"cold\"}";
    EXPECT_EQ(before.at("tarn_pool_hits_total" + P), 0);
    EXPECT_EQ(before.at("tarn_pool_claim_duration_seconds_count" + warm), 0);
    EXPECT_EQ(before.at("tarn_pool_sandboxes_made_total" + P), 1);
    EXPECT_EQ(before.at("tarn_pool_idle" + P), 1);
    EXPECT_EQ(before.at("tarn_pool_sandboxes" + P), 1);
    EXPECT_EQ(before.at("tarn_pool_utilization_ratio" + P), 0);
    EXPECT_EQ(before.at("tarn_pool_idle_target" + P), 0);
    EXPECT_EQ(before.at("tarn_pool_max_total" + P), 4);
    EXPECT_GT(before.at("tarn_pool_make_duration_seconds" + P), 0);
    EXPECT_GE(before.at("tarn_pool_budget_pids" + P), 1);
    EXPECT_GT(before.at("tarn_pool_uptime_seconds"), 0);

    Result r = run("true");
    ASSERT_EQ(r.code, 0) << r.err;
    Scraped after = scrape(addr);
    ASSERT_EQ(after.error, "");
    EXPECT_EQ(after.at("tarn_pool_claims_total" + P), 1);
    EXPECT_EQ(after.at("tarn_pool_hits_total" + P), 1);
    EXPECT_EQ(after.at("tarn_pool_misses_total" + P), 0);
    EXPECT_EQ(after.at("tarn_pool_claim_duration_seconds_count" + warm), 1);
    EXPECT_EQ(after.at("tarn_pool_claim_duration_seconds_count" + cold), 0);
    EXPECT_GT(after.at("tarn_pool_claim_duration_seconds_sum" + warm), 0);

    r = run("true");
    ASSERT_EQ(r.code, 0) << r.err;
    after = scrape(addr);
    ASSERT_EQ(after.error, "");
    EXPECT_EQ(after.at("tarn_pool_claims_total" + P), 2);
    EXPECT_EQ(after.at("tarn_pool_misses_total" + P), 1);
    EXPECT_EQ(after.at("tarn_pool_claim_duration_seconds_count" + warm), 1);
    EXPECT_EQ(after.at("tarn_pool_claim_duration_seconds_count" + cold), 1);
    EXPECT_EQ(after.at("tarn_pool_claim_duration_seconds_bucket{pool=\"p\",kind=\"cold\",le=\"+Inf\"}"), 1);
    EXPECT_GE(after.at("tarn_pool_sandboxes_made_total" + P), 2);
    // Fixed sizing: a miss changes nothing but the counters.
    EXPECT_EQ(after.at("tarn_pool_idle_target" + P), 0);
    EXPECT_EQ(after.at("tarn_pool_idle_target_changes_total{pool=\"p\",direction=\"up\"}"), 0);
}

TEST_F(PoolTest, AScraperThatStallsOrMisbehavesNeverDelaysClaims) {
    json cfg = config(1, 4);
    cfg["metrics"] = "127.0.0.1:0";  // the port the kernel picks, as status reports it
    serve(cfg);
    std::string addr = json::parse(pool({"status", "--json"}).out)["metrics"];
    ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
    ASSERT_NE(addr, "127.0.0.1:0");

    // A scraper that sends half a request and then nothing: claims go on meanwhile.
    UniqueFd stalled(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1))));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(::connect(stalled.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::send(stalled.get(), "GET /metr", 9, MSG_NOSIGNAL), 9);
    for (int i = 0; i < 3; ++i) {
        Result r = run("echo ok");
        EXPECT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.out, "ok\n");
    }

    auto status_line = [](const std::string& response) { return response.substr(0, response.find("\r\n")); };
    EXPECT_EQ(status_line(http_exchange(addr, "GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
    EXPECT_EQ(status_line(http_exchange(addr, "POST /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 405 Method Not Allowed");
    EXPECT_EQ(status_line(http_exchange(addr, "GET /metrics SPDY/3\r\n\r\n")), "HTTP/1.1 400 Bad Request");
    // Headers that never end are cut off at the limit, not buffered.
    EXPECT_EQ(status_line(http_exchange(addr, "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a'))),
              "HTTP/1.1 431 Request Header Fields Too Large");
    // HEAD: the headers alone.
    std::string head = http_exchange(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    EXPECT_EQ(status_line(head), "HTTP/1.1 200 OK");
    EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "");

    Scraped s = scrape(addr);
    ASSERT_EQ(s.error, "");
    EXPECT_EQ(s.at("tarn_pool_claims_total{pool=\"p\"}"), 3);
    // The stalled one is still unanswered, and is closed once its time is up.
    pollfd pfd{stalled.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 0), 0);
    EXPECT_EQ(::poll(&pfd, 1, 15000), 1);
    char c;
    EXPECT_EQ(::recv(stalled.get(), &c, 1, 0), 0);
}

TEST_F(PoolTest, TheIdleTargetGrowsWithABurstOfClaimsAndShrinksAfterIt) {
    // Short time constants, so the way down takes about a second, not minutes.
    json cfg = config(1, 12);
    cfg["pools"][0]["maxIdle"] = 6;
    cfg["pools"][0]["decayMs"] = 300;
    cfg["pools"][0]["rateWindowMs"] = 300;
    std::string addr = "unix:" + tmpl.dir() + "/metrics.sock";
    cfg["metrics"] = addr;
    serve(cfg);
    json st = status();
    EXPECT_EQ(st["sizing"]["mode"], "adaptive");
    EXPECT_EQ(st["sizing"]["target"], 1);
    EXPECT_EQ(st["sizing"]["maxIdle"], 6);
    ASSERT_TRUE(eventually([&] { return status()["idle"] == 1; }));

    // A burst: six claims, each held until the test lets them go. The spawners are
    // stopped meanwhile, so the one ready sandbox serves the first and the other
    // five find none, however fast this machine makes sandboxes.
    std::vector<pid_t> spawners = spawners_of(daemon->pid);
    ASSERT_FALSE(spawners.empty());
    for (pid_t pid : spawners) ::kill(pid, SIGSTOP);
    std::vector<std::unique_ptr<Background>> burst;
    for (int i = 0; i < 6; ++i)
        burst.push_back(run_bg("echo > /shared/up" + std::to_string(i) + "; " + wait_for("go"), "burst" + std::to_string(i)));
    bool queued = eventually([&] { return status()["waiting"] == 5; }, 20000ms);
    st = status();
    for (pid_t pid : spawners) ::kill(pid, SIGCONT);
    ASSERT_TRUE(queued) << st.dump(2);
    EXPECT_EQ(st["misses"], 5);
    // Each miss raised the target at once, up to max-idle.
    EXPECT_GE(st["sizing"]["raised"].get<int>(), 1);
    EXPECT_GT(st["sizing"]["targetMax"].get<int>(), 1);
    EXPECT_LE(st["sizing"]["targetMax"].get<int>(), 6);
    EXPECT_GT(st["sizing"]["makeMs"].get<double>(), 0);
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(wait_file("up" + std::to_string(i))) << burst[i]->output();
    Scraped s = scrape(addr);
    ASSERT_EQ(s.error, "");
    EXPECT_GE(s.at("tarn_pool_idle_target_changes_total{pool=\"p\",direction=\"up\"}"), 1);
    EXPECT_EQ(s.at("tarn_pool_claim_duration_seconds_count{pool=\"p\",kind=\"warm\"}"), 1);
    EXPECT_EQ(s.at("tarn_pool_claim_duration_seconds_count{pool=\"p\",kind=\"cold\"}"), 5);

    write_text(shared_file("go"), "");
    for (auto& b : burst) EXPECT_EQ(b->wait(), 0) << b->output();
    // Demand gone: the target comes back to the floor and the idle sandboxes made
    // for the burst go with it.
    bool settled = eventually([&] {
        json j = status();
        return j["sizing"]["target"] == 1 && j["idle"] == 1 && j["starting"] == 0;
    }, 20000ms);
    st = status();
    EXPECT_TRUE(settled) << st.dump(2);
    EXPECT_GE(st["sizing"]["lowered"].get<int>(), 1);
    EXPECT_NE(st["sizing"]["why"].get<std::string>().find("target 1 = min-idle"), std::string::npos) << st["sizing"];
    Result r = pool({"status"});
    EXPECT_NE(r.out.find("p (adaptive): demand "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tarn::test
