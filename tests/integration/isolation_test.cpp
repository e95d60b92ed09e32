// config-linux.md "Namespaces", "User namespace mappings", "Offset for Time Namespace":
// what the process inside sees of its namespaces.
#include <sys/stat.h>
#include <unistd.h>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

static std::string host_ns(const char* type) {
    char buf[256];
    ssize_t n = readlink((std::string("/proc/self/ns/") + type).c_str(), buf, sizeof buf);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

TEST(Namespaces, InitIsPid1InItsOwnPidNamespace) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("echo $$; ps | wc -l").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "1");
}

TEST(Namespaces, EveryRequestedNamespaceIsNew) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("for t in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$t; done").run();
    ASSERT_EQ(r.code, 0) << r.err;
    for (const char* t : {"pid", "net", "ipc", "uts", "mnt", "cgroup"})
        EXPECT_EQ(r.out.find(host_ns(t)), std::string::npos) << t << " is the host's";
}

TEST(Namespaces, NetworkNamespaceHasOnlyLoopback) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("ls /sys/class/net").run();
    EXPECT_EQ(r.out, "lo\n") << r.err;
}

TEST(Namespaces, HostnameAndDomainname) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hostname"] = "box1";
    b.config["domainname"] = "example.test";
    Result r = b.cmd("hostname; cat /proc/sys/kernel/domainname").run();
    EXPECT_EQ(r.out, "box1\nexample.test\n") << r.err;
}

TEST(Namespaces, JoinsANamespaceByPath) {
    REQUIRE_ROOT();
    // A holder process in a fresh uts namespace with a known hostname.
    Result holder = sh("unshare --uts sh -c 'hostname joined-uts; sleep infinity' >/dev/null 2>&1 & echo $!");
    int pid = std::stoi(holder.out);
    usleep(200000);
    std::string child = sh("pgrep -P " + std::to_string(pid) + " sleep || echo " + std::to_string(pid)).out;
    int target = std::stoi(child);
    Bundle b;
    for (auto& n : b.config["linux"]["namespaces"])
        if (n["type"] == "uts") n["path"] = "/proc/" + std::to_string(target) + "/ns/uts";
    b.config.erase("hostname");
    Result r = b.cmd("hostname").run();
    kill(pid, SIGKILL);
    kill(target, SIGKILL);
    EXPECT_EQ(r.out, "joined-uts\n") << r.err;
}

TEST(Namespaces, UserNamespaceWithIdMaps) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["namespaces"].push_back({{"type", "user"}});
    b.config["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
    b.config["linux"]["gidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
    Result r = b.cmd("cat /proc/self/uid_map /proc/self/gid_map; id -u").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("100000"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1), "0\n");
}

TEST(Namespaces, TimeNamespaceOffsetsShiftBoottime) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["namespaces"].push_back({{"type", "time"}});
    b.config["linux"]["timeOffsets"] = {{"boottime", {{"secs", 864000}, {"nanosecs", 0}}}};
    Result r = b.cmd("cut -d. -f1 /proc/uptime").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_GE(std::stol(r.out), 864000) << "uptime inside: " << r.out;
}
