// Which templates let a used sandbox's cgroup serve the next sandbox: only those
// whose workload cannot write to its own cgroup (runtime/pool/cgroup_reuse.cpp).
#include <gtest/gtest.h>

#include "runtime/pool/detail.hpp"

namespace tarn::pool::detail {
namespace {

// A host like this project's: cgroup v1 hierarchies under a tmpfs, the cgroup2 one
// at unified, and an unrelated mount whose point needs mountinfo's escapes.
const std::string kMountinfo =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n"
    "40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    "50 27 0:40 / /srv/my\\040data rw,relatime - tmpfs tmpfs rw\n"
    "51 50 0:29 /tarn /srv/my\\040data/cg ro,relatime - cgroup cgroup rw,cpu\n";

// The template `tarn spec` writes: its own pid namespace, three capabilities, the
// cgroup filesystem read-only.
oci::Config spec_default() {
    oci::Config c;
    c.linux.emplace();
    c.linux->namespaces = {{oci::NamespaceType::pid, ""}, {oci::NamespaceType::mount, ""}};
    c.process.emplace();
    c.process->capabilities = oci::Capabilities{};
    c.process->capabilities->bounding = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"};
    oci::Mount cg;
    cg.destination = "/sys/fs/cgroup";
    cg.type = "cgroup";
    cg.source = "cgroup";
    cg.options = {"nosuid", "noexec", "nodev", "relatime", "ro"};
    c.mounts.push_back(cg);
    return c;
}

TEST(PoolCgroupReuse, TheSpecDefaultTemplateAllowsIt) {
    EXPECT_EQ(cgroup_reuse_refusal(spec_default(), kMountinfo), "");
}

TEST(PoolCgroupReuse, AWorkloadThatCouldWriteItsCgroupRefusesIt) {
    oci::Config c = spec_default();
    c.process->capabilities->bounding.push_back("CAP_SYS_ADMIN");
    EXPECT_NE(cgroup_reuse_refusal(c, kMountinfo).find("CAP_SYS_ADMIN"), std::string::npos);

    // Docker's default set has it: a user namespace of its own could map host root.
    c = spec_default();
    c.process->capabilities->bounding.push_back("CAP_SETFCAP");
    EXPECT_NE(cgroup_reuse_refusal(c, kMountinfo).find("CAP_SETFCAP"), std::string::npos);

    c = spec_default();
    c.process->capabilities.reset();
    EXPECT_NE(cgroup_reuse_refusal(c, kMountinfo).find("process.capabilities is absent"), std::string::npos);

    c = spec_default();
    c.mounts[0].options = {"nosuid", "rw"};
    EXPECT_EQ(cgroup_reuse_refusal(c, kMountinfo),
              "mounts[0] (/sys/fs/cgroup): the cgroup filesystem is mounted read-write");

    c = spec_default();
    c.linux->namespaces = {{oci::NamespaceType::mount, ""}};
    EXPECT_EQ(cgroup_reuse_refusal(c, kMountinfo), "the template has no pid namespace of its own");
}

TEST(PoolCgroupReuse, ABindThatReachesACgroupFilesystemRefusesIt) {
    oci::Config c = spec_default();
    oci::Mount m;
    m.destination = "/host-sys";
    m.type = "bind";
    m.source = "/sys";
    m.options = {"rbind", "ro"};
    c.mounts.push_back(m);
    EXPECT_EQ(cgroup_reuse_refusal(c, kMountinfo),
              "mounts[1] (/host-sys): a bind of /sys, which reaches a cgroup filesystem");
    c.mounts[1].source = "/srv/elsewhere";
    EXPECT_EQ(cgroup_reuse_refusal(c, kMountinfo), "");
}

TEST(PoolCgroupReuse, ReachesCgroupfsAtOrBelowTheSourceOrAround) {
    EXPECT_TRUE(reaches_cgroupfs("/", kMountinfo));
    EXPECT_TRUE(reaches_cgroupfs("/sys", kMountinfo));
    EXPECT_TRUE(reaches_cgroupfs("/sys/fs/cgroup", kMountinfo));
    EXPECT_TRUE(reaches_cgroupfs("/sys/fs/cgroup/cpu/tarn", kMountinfo));
    EXPECT_TRUE(reaches_cgroupfs("/sys/fs/cgroup/unified", kMountinfo));
    EXPECT_TRUE(reaches_cgroupfs("/srv/my data", kMountinfo));  // a cgroup bind below it
    EXPECT_FALSE(reaches_cgroupfs("/srv/my", kMountinfo));
    EXPECT_FALSE(reaches_cgroupfs("/sys/fs/cgroupish", kMountinfo));
    EXPECT_FALSE(reaches_cgroupfs("/proc", kMountinfo));
    EXPECT_FALSE(reaches_cgroupfs("/srv", ""));
}

}  // namespace
}  // namespace tarn::pool::detail
