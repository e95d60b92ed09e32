// config-linux.md "Namespaces": a namespace type not listed is inherited from the
// runtime. Without a mount namespace the container shares the runtime's: its root is
// a detached copy of the built rootfs, entered with chroot, so none of its mounts ever
// lands in the caller's mount table.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

void drop_mount_namespace(Bundle& b) {
    json kept = json::array();
    for (const json& n : b.config["linux"]["namespaces"])
        if (n["type"] != "mount") kept.push_back(n);
    b.config["linux"]["namespaces"] = kept;
}

std::set<std::string> host_mount_table() {
    std::set<std::string> out;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) out.insert(line);
    return out;
}

std::string link_of(const std::string& path) {
    char buf[256];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
    return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

TEST(NoMountNamespace, ContainerSharesTheRuntimesMountNamespaceAndLeavesItsTableAlone) {
    REQUIRE_ROOT();
    Bundle b;
    drop_mount_namespace(b);
    std::string out = b.scratch("out");
    write_text(out + "/from-host", "host\n");
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    auto before = host_mount_table();
    // The default mounts (proc, dev, sysfs...), masks and the read-only root are all there.
    Result r = b.cmd("readlink /proc/self/ns/mnt; cat /out/from-host; ls /dev/null; "
                     "touch /x 2>/dev/null || echo root-ro; wc -c < /proc/timer_list 2>/dev/null; "
                     "echo written > /out/from-container").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, link_of("/proc/self/ns/mnt") + "\nhost\n/dev/null\nroot-ro\n0\n");
    EXPECT_EQ(read_text(out + "/from-container"), "written\n");
    EXPECT_EQ(host_mount_table(), before) << "a mount of the container landed in the runtime's namespace";
}

TEST(NoMountNamespace, CreateStartExecAndDelete) {
    REQUIRE_ROOT();
    Bundle b;
    drop_mount_namespace(b);
    b.cmd("sleep infinity");
    auto before = host_mount_table();
    ASSERT_EQ(b.create("nm").code, 0);
    EXPECT_EQ(host_mount_table(), before);
    ASSERT_EQ(b.tarn({"start", "nm"}).code, 0);
    // exec enters the container's root, not the runtime's.
    Result e = b.tarn({"exec", "nm", "sh", "-c", "readlink /proc/self/ns/mnt; ls /"});
    ASSERT_EQ(e.code, 0) << e.err;
    EXPECT_EQ(e.out.substr(0, e.out.find('\n')), link_of("/proc/self/ns/mnt"));
    EXPECT_EQ(e.out.find("\nhome\n"), std::string::npos) << "exec ran in the host's root: " << e.out;
    EXPECT_NE(e.out.find("\nbin\n"), std::string::npos) << e.out;
    ASSERT_EQ(b.tarn({"delete", "--force", "nm"}).code, 0);
    EXPECT_EQ(host_mount_table(), before);
}

TEST(NoMountNamespace, FailedCreateLeavesNoMountBehind) {
    REQUIRE_ROOT();
    Bundle b;
    drop_mount_namespace(b);
    // Fails after proc, dev and sysfs are mounted.
    b.config["mounts"].push_back({{"destination", "/late"}, {"type", "bind"}, {"source", "/does/not/exist"}, {"options", {"rbind"}}});
    auto before = host_mount_table();
    Result r = b.cmd("true").run();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("/does/not/exist"), std::string::npos) << r.err;
    EXPECT_EQ(host_mount_table(), before);
}

TEST(NoMountNamespace, WithAUserNamespaceIsRefusedByName) {
    REQUIRE_ROOT();
    Bundle b;
    drop_mount_namespace(b);
    b.config["linux"]["namespaces"].push_back({{"type", "user"}});
    json m = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
    b.config["linux"]["uidMappings"] = m;
    b.config["linux"]["gidMappings"] = m;
    Result r = b.cmd("true").run();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.namespaces: a container with a user namespace needs a mount namespace too"), std::string::npos)
        << r.err;
}
