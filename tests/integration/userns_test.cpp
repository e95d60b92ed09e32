// config-linux.md "User namespace mappings": a container whose root is an unprivileged
// host uid (what a Kubernetes `hostUsers: false` pod gets) goes through the whole
// runc lifecycle — create, start, exec, kill, delete — like any other.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

constexpr uid_t kHostBase = 100000;

// Container ids 0-65535 on host ids 100000-165535: host root is not mapped at all.
void map_root_away(Bundle& b) {
    b.config["linux"]["namespaces"].push_back({{"type", "user"}});
    json m = {{{"containerID", 0}, {"hostID", kHostBase}, {"size", 65536}}};
    b.config["linux"]["uidMappings"] = m;
    b.config["linux"]["gidMappings"] = m;
}

// The "Uid:" line of /proc/<pid>/status: real, effective, saved, fs uid on the host.
std::string host_uids(int pid) {
    std::istringstream in(read_text("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);)
        if (line.rfind("Uid:", 0) == 0) return line;
    return "";
}

std::string status_of(const Bundle& b, const std::string& id) {
    Result r = b.tarn({"state", id});
    return r.code == 0 ? json::parse(r.out)["status"].get<std::string>() : "";
}

}  // namespace

TEST(UserNamespace, LifecycleWithRootMappedToAnUnprivilegedHostUid) {
    REQUIRE_ROOT();
    Bundle b;
    map_root_away(b);
    std::string out = b.scratch("out");
    ASSERT_EQ(::chown(out.c_str(), kHostBase, kHostBase), 0) << "the container's root owns its output dir";
    // Onto a directory the image has: the mapped root cannot create one in the shared,
    // host-root-owned test rootfs.
    b.config["mounts"].push_back({{"destination", "/tmp"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    b.cmd("id -u > /tmp/marker; sleep infinity");

    Result c = b.create("u1");
    ASSERT_EQ(c.code, 0) << c.err;
    json st = json::parse(b.tarn({"state", "u1"}).out);
    EXPECT_EQ(st["status"], "created");
    int pid = st["pid"];
    EXPECT_EQ(host_uids(pid), "Uid:\t100000\t100000\t100000\t100000") << "the parked init is already the mapped root";
    EXPECT_FALSE(path_exists(out + "/marker")) << "the workload ran before start";

    Result s = b.tarn({"start", "u1"});
    ASSERT_EQ(s.code, 0) << s.err;
    for (int i = 0; i < 100 && read_text(out + "/marker") != "0\n"; ++i) usleep(20000);
    EXPECT_EQ(read_text(out + "/marker"), "0\n");
    struct stat fst{};
    ASSERT_EQ(::stat((out + "/marker").c_str(), &fst), 0);
    EXPECT_EQ(fst.st_uid, kHostBase) << "container root writes as host uid 100000";
    EXPECT_EQ(status_of(b, "u1"), "running");

    Result e = b.tarn({"exec", "u1", "sh", "-c", "id -u; cat /proc/self/uid_map"});
    ASSERT_EQ(e.code, 0) << e.err;
    EXPECT_EQ(e.out.substr(0, 2), "0\n") << e.out;
    EXPECT_NE(e.out.find("100000"), std::string::npos) << "exec joins the container's user namespace: " << e.out;
    Result eu = b.tarn({"exec", "--user", "1000:1000", "u1", "id", "-u"});
    ASSERT_EQ(eu.code, 0) << eu.err;
    EXPECT_EQ(eu.out, "1000\n");

    ASSERT_EQ(b.tarn({"kill", "u1", "KILL"}).code, 0);
    for (int i = 0; i < 100 && status_of(b, "u1") != "stopped"; ++i) usleep(20000);
    EXPECT_EQ(status_of(b, "u1"), "stopped");
    Result d = b.tarn({"delete", "u1"});
    EXPECT_EQ(d.code, 0) << d.err;
    EXPECT_FALSE(path_exists(b.root() + "/u1"));
}

TEST(UserNamespace, CreatedContainerWithRootMappedAwayIsDeletedUnstarted) {
    REQUIRE_ROOT();
    Bundle b;
    map_root_away(b);
    b.cmd("sleep infinity");
    ASSERT_EQ(b.create("u2").code, 0);
    int pid = json::parse(b.tarn({"state", "u2"}).out)["pid"];
    ASSERT_EQ(b.tarn({"kill", "u2", "KILL"}).code, 0);
    for (int i = 0; i < 100 && alive(pid); ++i) usleep(20000);
    EXPECT_FALSE(alive(pid));
    Result d = b.tarn({"delete", "u2"});
    EXPECT_EQ(d.code, 0) << d.err;
    EXPECT_FALSE(path_exists(b.root() + "/u2"));
}

TEST(UserNamespace, RunDetachedWithRootMappedAway) {
    REQUIRE_ROOT();
    Bundle b;
    map_root_away(b);
    b.cmd("sleep infinity");
    Result r = b.tarn({"run", "-d", "--bundle", b.dir(), "u3"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(status_of(b, "u3"), "running");
    Result d = b.tarn({"delete", "--force", "u3"});
    EXPECT_EQ(d.code, 0) << d.err;
    EXPECT_FALSE(path_exists(b.root() + "/u3"));
}
