// `tarn spec`: runc's example config, and its rootless variant.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "oci/oci.hpp"

namespace tarn::oci {
namespace {

using Strings = std::vector<std::string>;

const Mount* find_mount(const Config& c, std::string_view destination) {
    for (const auto& m : c.mounts)
        if (m.destination == destination) return &m;
    return nullptr;
}

Strings namespace_names(const Config& c) {
    Strings out;
    for (const auto& ns : c.linux->namespaces) out.emplace_back(to_string(ns.type));
    return out;
}

TEST(OciSpec, DefaultSpecIsValidAndRoundTrips) {
    for (bool rootless : {false, true}) {
        Config c = default_spec(rootless, 1000, 1000);
        EXPECT_NO_THROW(validate(c)) << "rootless=" << rootless;
        EXPECT_EQ(parse_config(to_json_text(c)), c) << "rootless=" << rootless;
    }
}

TEST(OciSpec, DefaultProcess) {
    Config c = default_spec(false);
    EXPECT_EQ(c.oci_version, kSpecVersion);
    ASSERT_TRUE(c.root);
    EXPECT_EQ(c.root->path, "rootfs");
    EXPECT_TRUE(c.root->readonly);
    EXPECT_EQ(c.hostname, "tarn");

    const Process& p = *c.process;
    EXPECT_TRUE(p.terminal);
    EXPECT_EQ(p.user.uid, 0u);
    EXPECT_EQ(p.user.gid, 0u);
    EXPECT_EQ(p.args, Strings{"sh"});
    EXPECT_EQ(p.env,
              (Strings{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"}));
    EXPECT_EQ(p.cwd, "/");
    EXPECT_TRUE(p.no_new_privileges);
    Strings caps = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"};
    EXPECT_EQ(p.capabilities->bounding, caps);
    EXPECT_EQ(p.capabilities->effective, caps);
    EXPECT_EQ(p.capabilities->permitted, caps);
    EXPECT_TRUE(p.capabilities->inheritable.empty());
    EXPECT_TRUE(p.capabilities->ambient.empty());
    ASSERT_EQ(p.rlimits.size(), 1u);
    EXPECT_EQ(p.rlimits[0].type, "RLIMIT_NOFILE");
    EXPECT_EQ(p.rlimits[0].hard, 1024u);
    EXPECT_EQ(p.rlimits[0].soft, 1024u);
}

TEST(OciSpec, DefaultMountsAndLinux) {
    Config c = default_spec(false);
    Strings destinations;
    for (const auto& m : c.mounts) destinations.push_back(m.destination);
    EXPECT_EQ(destinations,
              (Strings{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"}));
    EXPECT_EQ(find_mount(c, "/dev")->options, (Strings{"nosuid", "strictatime", "mode=755", "size=65536k"}));
    EXPECT_EQ(find_mount(c, "/dev/pts")->options,
              (Strings{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
    EXPECT_EQ(find_mount(c, "/dev/shm")->options,
              (Strings{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}));
    EXPECT_EQ(find_mount(c, "/sys")->type, "sysfs");
    EXPECT_EQ(find_mount(c, "/sys")->options, (Strings{"nosuid", "noexec", "nodev", "ro"}));
    EXPECT_EQ(find_mount(c, "/sys/fs/cgroup")->options,
              (Strings{"nosuid", "noexec", "nodev", "relatime", "ro"}));

    EXPECT_EQ(namespace_names(c), (Strings{"pid", "network", "ipc", "uts", "mount", "cgroup"}));
    ASSERT_TRUE(c.linux->resources);
    ASSERT_EQ(c.linux->resources->devices.size(), 1u);
    EXPECT_FALSE(c.linux->resources->devices[0].allow);
    EXPECT_EQ(c.linux->resources->devices[0].access, "rwm");
    EXPECT_TRUE(c.linux->uid_mappings.empty());
    EXPECT_EQ(c.linux->masked_paths.size(), 11u);
    EXPECT_NE(std::find(c.linux->masked_paths.begin(), c.linux->masked_paths.end(), "/proc/kcore"),
              c.linux->masked_paths.end());
    EXPECT_EQ(c.linux->readonly_paths,
              (Strings{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}));
}

TEST(OciSpec, RootlessMapsTheCallerAndDropsPrivilegedParts) {
    Config c = default_spec(true, 1000, 2000);
    EXPECT_EQ(namespace_names(c), (Strings{"pid", "ipc", "uts", "mount", "user"}));
    ASSERT_EQ(c.linux->uid_mappings.size(), 1u);
    EXPECT_EQ(c.linux->uid_mappings[0].container_id, 0u);
    EXPECT_EQ(c.linux->uid_mappings[0].host_id, 1000u);
    EXPECT_EQ(c.linux->uid_mappings[0].size, 1u);
    EXPECT_EQ(c.linux->gid_mappings.at(0).host_id, 2000u);

    const Mount* sys = find_mount(c, "/sys");
    ASSERT_NE(sys, nullptr);
    EXPECT_EQ(sys->type, "none");
    EXPECT_EQ(sys->source, "/sys");
    EXPECT_EQ(sys->options, (Strings{"rbind", "nosuid", "noexec", "nodev", "ro"}));
    EXPECT_EQ(find_mount(c, "/sys/fs/cgroup"), nullptr);
    EXPECT_EQ(find_mount(c, "/dev/pts")->options,
              (Strings{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}));
    EXPECT_FALSE(c.linux->resources);
    EXPECT_EQ(c.linux->masked_paths, default_spec(false).linux->masked_paths);
}

}  // namespace
}  // namespace tarn::oci
