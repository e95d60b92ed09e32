// config-linux.md "rootfsPropagation" and config.md mount propagation options, against
// a volume whose host source is a shared mount: what Kubernetes asks for with
// `mountPropagation: Bidirectional` (rootfsPropagation rshared, an rbind+rshared
// volume) and `HostToContainer` (rslave). For each combination the test mounts a tmpfs
// on the host under the source after the container is created, and the container
// mounts one under the volume once started; then it records what each side saw.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

// A tmpfs on the host marked shared (`mount --make-shared`), removed with everything
// propagated under it when the test ends.
struct SharedHostDir {
    std::string path;
    bool mounted = false;
    explicit SharedHostDir(std::string p) : path(std::move(p)) {
        ::mkdir(path.c_str(), 0755);
        mounted = sh("mount -t tmpfs tmpfs " + path + " && mount --make-shared " + path).code == 0;
    }
    ~SharedHostDir() {
        if (mounted) sh("umount -R " + path);
    }
};

// Mount points of this (the host's) mount namespace outside `except`.
std::set<std::string> host_mounts_outside(const std::string& except) {
    std::set<std::string> out;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream f(line);
        std::string id, parent, dev, root, point;
        f >> id >> parent >> dev >> root >> point;
        if (point != except && point.rfind(except + "/", 0) != 0) out.insert(id + " " + point);
    }
    return out;
}

struct Seen {
    bool host_sees_container_mount = false;
    bool container_sees_host_mount = false;
    std::string root_mountinfo;  // the container's own line for "/"
    std::string err;
};

// rootfsPropagation `root` (empty: unset) and a bind of a shared host dir at /vol with
// `options` (rbind plus maybe a propagation option).
Seen run_case(const std::string& root, const std::vector<std::string>& options, const std::vector<std::string>& create_args) {
    Seen s;
    Bundle b;
    SharedHostDir host(b.scratch("shared"));
    if (!host.mounted) {
        s.err = "cannot make a shared tmpfs on the host";
        return s;
    }
    if (!root.empty()) b.config["linux"]["rootfsPropagation"] = root;
    b.config["mounts"].push_back({{"destination", "/vol"}, {"type", "bind"}, {"source", host.path}, {"options", options}});
    // Mounting is the workload's part: it needs CAP_SYS_ADMIN.
    for (const char* set : {"bounding", "effective", "permitted"})
        b.config["process"]["capabilities"][set].push_back("CAP_SYS_ADMIN");
    b.cmd("if [ -e /vol/h/hostfile ]; then echo yes > /vol/saw-host; else echo no > /vol/saw-host; fi; "
          "while read id parent dev root point rest; do [ \"$point\" = / ] && echo \"$rest\"; done "
          "< /proc/self/mountinfo > /vol/root-line; "
          "mkdir /vol/c && mount -t tmpfs tmpfs /vol/c && echo inside > /vol/c/f && echo done > /vol/finished");
    auto before = host_mounts_outside(host.path);
    Result c = b.create("p", create_args);
    if (c.code != 0) {
        s.err = "create: " + c.err;
        return s;
    }
    // The host mounts under its shared source after the container's volume exists.
    sh("mkdir " + host.path + "/h && mount -t tmpfs tmpfs " + host.path + "/h && echo host > " + host.path + "/h/hostfile");
    Result st = b.tarn({"start", "p"});
    if (st.code != 0) {
        s.err = "start: " + st.err;
        return s;
    }
    for (int i = 0; i < 200 && read_text(host.path + "/finished") != "done\n"; ++i) usleep(20000);
    if (read_text(host.path + "/finished") != "done\n") s.err = "the workload did not finish";
    s.container_sees_host_mount = read_text(host.path + "/saw-host") == "yes\n";
    // A mount propagated to the host outlives the container; one that did not leaves
    // only the empty directory the container made in the shared tmpfs.
    s.host_sees_container_mount = read_text(host.path + "/c/f") == "inside\n";
    s.root_mountinfo = read_text(host.path + "/root-line");
    b.tarn({"delete", "--force", "p"});
    auto after = host_mounts_outside(host.path);
    if (before != after) s.err += " the host's mount table changed outside the volume's source";
    return s;
}

struct Case {
    std::string root;                 // rootfsPropagation
    std::vector<std::string> options; // the volume's options
    bool host_sees_container;         // a mount made in the container under the volume
    bool container_sees_host;         // a mount made on the host under the source
};

void check(const Case& k, const std::vector<std::string>& create_args = {}) {
    std::string name = "rootfsPropagation=" + (k.root.empty() ? std::string("(unset)") : k.root) + " options=";
    for (const std::string& o : k.options) name += o + ",";
    SCOPED_TRACE(name);
    Seen s = run_case(k.root, k.options, create_args);
    ASSERT_EQ(s.err, "");
    EXPECT_EQ(s.host_sees_container_mount, k.host_sees_container);
    EXPECT_EQ(s.container_sees_host_mount, k.container_sees_host);
    // The container's root carries the propagation asked for.
    if (k.root == "shared" || k.root == "rshared") {
        EXPECT_NE(s.root_mountinfo.find(" shared:"), std::string::npos) << s.root_mountinfo;
    }
    if (k.root == "unbindable" || k.root == "runbindable") {
        EXPECT_NE(s.root_mountinfo.find(" unbindable"), std::string::npos) << s.root_mountinfo;
    }
}

}  // namespace

// Bidirectional: the volume is a peer of its host source, so mounts travel both ways.
TEST(Propagation, RsharedRootAndRbindVolumeShareMountsBothWays) {
    REQUIRE_ROOT();
    check({"rshared", {"rbind"}, true, true});
    check({"shared", {"rbind"}, true, true});
    check({"rshared", {"rbind", "rshared"}, true, true});
}

// Without pivot_root the rootfs is moved onto `/`, which a shared root must not copy
// onto the host's `/`; the volume still shares both ways.
TEST(Propagation, RsharedRootWithNoPivotLeavesTheHostTableAlone) {
    REQUIRE_ROOT();
    check({"rshared", {"rbind"}, true, true}, {"--no-pivot"});
}

// HostToContainer: the volume is a slave of its host source; the host sees nothing back.
TEST(Propagation, RslaveVolumeReceivesHostMountsOnly) {
    REQUIRE_ROOT();
    check({"rslave", {"rbind"}, false, true});
    check({"slave", {"rbind"}, false, true});
    check({"rshared", {"rbind", "rslave"}, false, true});
    check({"", {"rbind", "rslave"}, false, true});
    // Unset is rslave: host mounts reach the container, never the other way.
    check({"", {"rbind"}, false, true});
    // A shared volume under a slave root is a peer group of its own inside the container,
    // still a slave of the host's source.
    check({"", {"rbind", "rshared"}, false, true});
}

// Private (and unbindable, which is private plus no bind of it): nothing travels.
TEST(Propagation, PrivateAndUnbindableVolumesAreCutOff) {
    REQUIRE_ROOT();
    check({"rprivate", {"rbind"}, false, false});
    check({"private", {"rbind"}, false, false});
    check({"rshared", {"rbind", "rprivate"}, false, false});
    check({"", {"rbind", "rprivate"}, false, false});
    check({"unbindable", {"rbind"}, false, false});
    check({"runbindable", {"rbind"}, false, false});
}

// An unbindable root cannot be bind-mounted inside the container.
TEST(Propagation, UnbindableRootRefusesABindOfItself) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["rootfsPropagation"] = "unbindable";
    for (const char* set : {"bounding", "effective", "permitted"})
        b.config["process"]["capabilities"][set].push_back("CAP_SYS_ADMIN");
    b.config["mounts"].push_back({{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"size=64k"}}});
    Result r = b.cmd("mkdir /tmp/x; mount --bind / /tmp/x 2>/dev/null && echo bound || echo refused").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "refused\n");
}
