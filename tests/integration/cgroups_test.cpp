// config-linux.md "Control groups" on this host's hierarchy (v1 or hybrid here; the
// pure v2 path runs in the QEMU guest): limits hold for real, pause/resume/update,
// events, kill --all, and nothing is left after delete.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "cgroups/cgroups.hpp"
#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

// The directory of controller `ctrl` for cgroup `path` on this host.
std::string controller_dir(const std::string& ctrl, const std::string& path) {
    if (tarn::cgroups::detect() == tarn::cgroups::Mode::unified) return "/sys/fs/cgroup" + path;
    return "/sys/fs/cgroup/" + ctrl + path;
}

bool has_v1(const char* ctrl) { return path_exists(std::string("/sys/fs/cgroup/") + ctrl + "/cgroup.procs"); }

std::string wait_status(const Bundle& b, const std::string& id, const std::string& want) {
    std::string st;
    for (int i = 0; i < 200; ++i) {
        Result r = b.tarn({"state", id});
        if (r.code != 0) return "gone";
        st = json::parse(r.out)["status"];
        if (st == want) break;
        usleep(10000);
    }
    return st;
}

}  // namespace

TEST(Cgroups, InitIsPlacedInCgroupsPathWithItsLimits) {
    REQUIRE_ROOT();
    if (!has_v1("memory") || !has_v1("pids")) GTEST_SKIP() << "needs the v1 memory and pids controllers";
    Bundle b;
    std::string path = "/tarn-it/limits-" + std::to_string(getpid());
    b.config["linux"]["cgroupsPath"] = path;
    b.config["linux"]["resources"] = {{"memory", {{"limit", 64 << 20}}}, {"pids", {{"limit", 32}}}, {"cpu", {{"shares", 512}}}};
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "lim"}).code, 0);
    int pid = json::parse(b.tarn({"state", "lim"}).out)["pid"];
    EXPECT_NE(read_text(controller_dir("memory", path) + "/cgroup.procs").find(std::to_string(pid)), std::string::npos);
    EXPECT_EQ(read_text(controller_dir("memory", path) + "/memory.limit_in_bytes"), std::to_string(64 << 20) + "\n");
    EXPECT_EQ(read_text(controller_dir("pids", path) + "/pids.max"), "32\n");
    EXPECT_EQ(read_text(controller_dir("cpu", path) + "/cpu.shares"), "512\n");
    ASSERT_EQ(b.tarn({"delete", "--force", "lim"}).code, 0);
    EXPECT_FALSE(path_exists(controller_dir("memory", path))) << "delete left the cgroup";
    EXPECT_FALSE(path_exists(controller_dir("pids", path)));
    rmdir(controller_dir("memory", "/tarn-it").c_str());
}

TEST(Cgroups, MemoryHogIsOomKilledAndEventsReportIt) {
    REQUIRE_ROOT();
    if (!has_v1("memory")) GTEST_SKIP() << "needs the v1 memory controller";
    Bundle b;
    b.config["linux"]["resources"] = {{"memory", {{"limit", 16 << 20}, {"swap", 16 << 20}}}};
    // A shell variable that doubles until it is far past the limit.
    b.private_tmp().cmd(
        "touch /tmp/ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; x=0123456789abcdef; while true; do "
        "x=$x$x; done");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "oom"}).code, 0);
    Result stats = b.tarn({"events", "--stats", "oom"});
    ASSERT_EQ(stats.code, 0) << stats.err;
    json before = json::parse(stats.out);
    EXPECT_EQ(before["type"], "stats");
    EXPECT_GT(before["data"]["memory"]["usage"]["usage"].get<uint64_t>(), 0u);
    EXPECT_EQ(before["data"]["memory"]["usage"]["limit"].get<uint64_t>(), 16u << 20);
    // Stream events while the hog runs; the oom line must come.
    b.write();
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    pid_t ev = fork();
    if (ev == 0) {
        dup2(out[1], 1);
        execl(TARN_BINARY, TARN_BINARY, "--root", b.root().c_str(), "events", "--interval", "100ms", "oom", nullptr);
        _exit(127);
    }
    close(out[1]);
    int pid = json::parse(b.tarn({"state", "oom"}).out)["pid"];
    std::string go = "/proc/" + std::to_string(pid) + "/root/tmp/go";
    write_text(go, "");
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = read(out[0], buf, sizeof buf)) > 0) {
        text.append(buf, static_cast<size_t>(n));
        if (text.find("\"type\":\"oom\"") != std::string::npos) break;
    }
    kill(ev, SIGKILL);
    waitpid(ev, nullptr, 0);
    close(out[0]);
    EXPECT_NE(text.find("{\"id\":\"oom\",\"type\":\"oom\"}"), std::string::npos) << text;
    EXPECT_EQ(wait_status(b, "oom", "stopped"), "stopped");
}

TEST(Cgroups, PidsLimitStopsAForkLoop) {
    REQUIRE_ROOT();
    if (!has_v1("pids")) GTEST_SKIP() << "needs the v1 pids controller";
    Bundle b;
    b.config["linux"]["resources"] = {{"pids", {{"limit", 8}}}};
    Result r = b.cmd("n=0; while [ $n -lt 20 ]; do sleep infinity & n=$((n+1)); done; echo all forked").run();
    // busybox sh gives up with status 2 when fork fails: the 8th process was refused.
    EXPECT_EQ(r.code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("can't fork: Resource temporarily unavailable"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("all forked"), std::string::npos);
}

TEST(Cgroups, PauseFreezesAndResumeThaws) {
    REQUIRE_ROOT();
    if (!has_v1("freezer") && tarn::cgroups::detect() != tarn::cgroups::Mode::unified) GTEST_SKIP() << "no freezer";
    Bundle b;
    std::string out = b.scratch("out");
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    // Renamed into place, so a reader never sees a half-written file.
    b.cmd("i=0; while true; do i=$((i+1)); echo $i > /out/tmp; mv /out/tmp /out/count; done");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "pz"}).code, 0);
    usleep(100000);
    ASSERT_EQ(b.tarn({"pause", "pz"}).code, 0);
    EXPECT_EQ(json::parse(b.tarn({"state", "pz"}).out)["status"], "paused");
    std::string a = read_text(out + "/count");
    usleep(200000);
    EXPECT_EQ(read_text(out + "/count"), a) << "the counter moved while paused";
    Result again = b.tarn({"pause", "pz"});
    EXPECT_NE(again.code, 0);
    EXPECT_NE(again.err.find("cannot pause a container that is paused"), std::string::npos) << again.err;
    ASSERT_EQ(b.tarn({"resume", "pz"}).code, 0);
    EXPECT_EQ(json::parse(b.tarn({"state", "pz"}).out)["status"], "running");
    usleep(200000);
    EXPECT_NE(read_text(out + "/count"), a) << "the counter did not resume";
    // A paused container can still be deleted by force.
    ASSERT_EQ(b.tarn({"pause", "pz"}).code, 0);
    EXPECT_EQ(b.tarn({"delete", "--force", "pz"}).code, 0);
    EXPECT_FALSE(path_exists(b.root() + "/pz"));
}

TEST(Cgroups, UpdateChangesLimitsLikeContainerdSendsThem) {
    REQUIRE_ROOT();
    if (!has_v1("memory") || !has_v1("pids")) GTEST_SKIP() << "needs the v1 memory and pids controllers";
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "up"}).code, 0);
    Result r = b.tarn({"update", "--resources", "-", "up"}, R"({"memory":{"limit":33554432},"pids":{"limit":50}})");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_text(controller_dir("memory", "/tarn/up") + "/memory.limit_in_bytes"), "33554432\n");
    EXPECT_EQ(read_text(controller_dir("pids", "/tarn/up") + "/pids.max"), "50\n");
    ASSERT_EQ(b.tarn({"update", "--memory", "64m", "--pids-limit", "60", "up"}).code, 0);
    EXPECT_EQ(read_text(controller_dir("memory", "/tarn/up") + "/memory.limit_in_bytes"), std::to_string(64 << 20) + "\n");
    EXPECT_EQ(read_text(controller_dir("pids", "/tarn/up") + "/pids.max"), "60\n");
    Result bad = b.tarn({"update", "--resources", "-", "up"}, R"({"memory":{"limit":"lots"}})");
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.err.find("memory.limit"), std::string::npos) << bad.err;
}

TEST(Cgroups, KillAllReachesEveryProcess) {
    REQUIRE_ROOT();
    Bundle b;
    // Two processes in the cgroup: kill --all must reach the one that is not init.
    b.cmd("sleep infinity & sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "ka"}).code, 0);
    usleep(100000);
    json pids = json::parse(b.tarn({"ps", "--format", "json", "ka"}).out);
    ASSERT_EQ(pids.size(), 2u);
    ASSERT_EQ(b.tarn({"kill", "--all", "ka", "KILL"}).code, 0);
    EXPECT_EQ(wait_status(b, "ka", "stopped"), "stopped");
    for (int p : pids) EXPECT_FALSE(alive(p)) << p;
    EXPECT_EQ(b.tarn({"kill", "--all", "ka", "9"}).code, 0) << "containerd kills stopped containers with --all";
}

TEST(Cgroups, FailedCreateLeavesNoCgroup) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["cgroupsPath"] = "/tarn-it/failed";
    b.config["mounts"].push_back({{"destination", "/x"}, {"type", "bind"}, {"source", "/no/such"}, {"options", {"bind"}}});
    Result r = b.cmd("true").run("fc");
    EXPECT_NE(r.code, 0);
    EXPECT_FALSE(path_exists(controller_dir("memory", "/tarn-it/failed")));
    EXPECT_FALSE(path_exists(controller_dir("pids", "/tarn-it/failed")));
    rmdir(controller_dir("memory", "/tarn-it").c_str());
}

// A failure after the init exists (here: the pid file cannot be written) kills the
// init, so its cgroup can go and no process outlives the failed create.
TEST(Cgroups, FailureAfterTheSpawnKillsTheInit) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["cgroupsPath"] = "/tarn-it/late-fail";
    Result r = b.cmd("sleep infinity").create("lf", {"--pid-file", b.dir() + "/no/such/dir/pid"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("pid"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(controller_dir("pids", "/tarn-it/late-fail")));
    EXPECT_FALSE(path_exists(b.root() + "/lf"));
    rmdir(controller_dir("pids", "/tarn-it").c_str());
    rmdir(controller_dir("memory", "/tarn-it").c_str());
}

// The spec's cgroup mount on a v1 or hybrid host shows the container's own cgroup in
// each hierarchy, whatever its namespaces and even mounted read-write: the limits it
// reads are its own, no other cgroup of the host is listed, and root in the container
// (without CAP_SYS_ADMIN, as by default) cannot move itself out of its limits.
class CgroupMountV1 : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(CgroupMountV1, ShowsOnlyTheContainersOwnCgroup) {
    REQUIRE_ROOT();
    if (!has_v1("pids") || !has_v1("memory")) GTEST_SKIP() << "needs the v1 pids and memory controllers";
    auto [cgroupns, writable] = GetParam();
    Bundle b;
    std::string id = std::string("cgview-") + (cgroupns ? "ns" : "nons") + (writable ? "-rw" : "-ro");
    auto& ns = b.config["linux"]["namespaces"];
    for (size_t i = ns.size(); i-- > 0;)
        if (ns[i]["type"] == "cgroup") ns.erase(i);
    if (cgroupns) ns.push_back({{"type", "cgroup"}});
    for (auto& m : b.config["mounts"])
        if (m["type"] == "cgroup" && writable) {
            auto& o = m["options"];
            for (size_t i = o.size(); i-- > 0;)
                if (o[i] == "ro") o.erase(i);
        }
    b.config["linux"]["resources"] = {{"memory", {{"limit", 96 << 20}}}, {"pids", {{"limit", 77}}}};
    b.cmd("sleep 30");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), id}).code, 0);
    int pid = json::parse(b.tarn({"state", id}).out)["pid"];
    Result view = b.tarn({"exec", id, "sh", "-c",
                          "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                          "find /sys/fs/cgroup/ -mindepth 2 -type d | wc -l; ls /sys/fs/cgroup/pids"});
    EXPECT_EQ(view.code, 0) << view.err;
    EXPECT_EQ(view.out.rfind("77\n" + std::to_string(96 << 20) + "\n0\n", 0), 0u) << view.out;
    EXPECT_EQ(view.out.find("tarn"), std::string::npos) << "a host cgroup is listed: " << view.out;
    // Root in the container moves its init (pid 1 there) into every cgroup it can reach.
    b.tarn({"exec", id, "sh", "-c",
            "mkdir /sys/fs/cgroup/pids/sub 2>/dev/null; "
            "for f in $(find /sys/fs/cgroup -name cgroup.procs); do echo 1 > $f 2>/dev/null; done; true"});
    std::string cg = read_text("/proc/" + std::to_string(pid) + "/cgroup");
    for (const char* ctrl : {":pids:", ":memory:"}) {
        size_t at = cg.find(ctrl);
        ASSERT_NE(at, std::string::npos) << cg;
        std::string path = cg.substr(at + strlen(ctrl), cg.find('\n', at) - at - strlen(ctrl));
        EXPECT_EQ(path.rfind("/tarn/" + id, 0), 0u) << ctrl << " left the container's cgroup: " << cg;
    }
    // Still under its own limit: the init's pids cgroup (or one below it) caps at 77.
    std::string pids_dir = "/sys/fs/cgroup/pids/tarn/" + id;
    EXPECT_EQ(read_text(pids_dir + "/pids.max"), "77\n");
    if (writable) ::rmdir((pids_dir + "/sub").c_str());
    EXPECT_EQ(b.tarn({"delete", "--force", id}).code, 0);
}

INSTANTIATE_TEST_SUITE_P(Namespaces, CgroupMountV1,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                             return std::string(std::get<0>(info.param) ? "CgroupNs" : "NoCgroupNs") +
                                    (std::get<1>(info.param) ? "ReadWrite" : "ReadOnly");
                         });
