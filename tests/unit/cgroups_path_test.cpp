// linux.cgroupsPath -> the cgroup path, and the runtime's own cgroup.
#include <gtest/gtest.h>

#include <string>

#include "cgroups/detail.hpp"

using namespace tarn;
using namespace tarn::cgroups;

namespace {

std::string resolve(std::string_view p, std::string_view id = "c1",
                    std::string_view own = "/user.slice/s.scope") {
    return detail::resolve_path(p, id, false, own);
}

std::string resolve_error(std::string_view p, std::string_view id = "c1", bool systemd = false) {
    try {
        detail::resolve_path(p, id, systemd, "/user.slice/s.scope");
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST(CgroupPath, OwnCgroupPrefersTheCgroup2Entry) {
    EXPECT_EQ(detail::own_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
              "/user.slice/user-0.slice/session-1.scope");
    EXPECT_EQ(detail::own_cgroup(
                  "9:name=systemd:/system.slice/a.service\n4:memory:/x/y\n0::/system.slice/b.service\n"),
              "/system.slice/b.service");
}

TEST(CgroupPath, OwnCgroupOnLegacyHosts) {
    EXPECT_EQ(detail::own_cgroup("4:memory:/x/y\n1:name=systemd:/system.slice/a.service\n"),
              "/system.slice/a.service");
    EXPECT_EQ(detail::own_cgroup("4:memory:/x/y\n2:cpu,cpuacct:/\n"), "/x/y");
    EXPECT_EQ(detail::own_cgroup("0::/with:colon\n"), "/with:colon");
    EXPECT_EQ(detail::own_cgroup(""), "/");
}

TEST(CgroupPath, EmptyMeansTarnSlashId) {
    EXPECT_EQ(resolve(""), "/tarn/c1");
}

TEST(CgroupPath, AbsoluteIsUsedAsIs) {
    EXPECT_EQ(resolve("/default/c1"), "/default/c1");
    EXPECT_EQ(resolve("//a/./b//"), "/a/b");
    EXPECT_EQ(resolve("/a/../b"), "/b");
}

TEST(CgroupPath, RelativeIsBelowTheRuntimesCgroup) {
    EXPECT_EQ(resolve("tarn/c1"), "/user.slice/s.scope/tarn/c1");
    EXPECT_EQ(resolve("a/../b"), "/user.slice/s.scope/b");
    EXPECT_EQ(resolve("x", "c1", "/"), "/x");
}

TEST(CgroupPath, DotDotMayNotEscape) {
    EXPECT_EQ(resolve_error("/../etc"), "linux.cgroupsPath \"/../etc\": \"..\" climbs above the cgroup root");
    EXPECT_EQ(resolve_error("../sibling"),
              "linux.cgroupsPath \"../sibling\": \"..\" climbs above \"/user.slice/s.scope\"");
    EXPECT_EQ(resolve_error("a/../../b"),
              "linux.cgroupsPath \"a/../../b\": \"..\" climbs above \"/user.slice/s.scope\"");
}

TEST(CgroupPath, RootIsRefused) {
    EXPECT_EQ(resolve_error("/"), "linux.cgroupsPath \"/\": names the root cgroup");
    EXPECT_EQ(resolve_error("/a/.."), "linux.cgroupsPath \"/a/..\": names the root cgroup");
}

TEST(CgroupPath, SystemdSyntaxNeedsTheSystemdDriver) {
    EXPECT_EQ(resolve_error("system.slice:docker:abc"),
              "linux.cgroupsPath \"system.slice:docker:abc\": \"slice:prefix:name\" is the systemd driver's "
              "syntax: run with --systemd-cgroup, or use a path such as \"/tarn/c1\"");
    EXPECT_EQ(resolve_error("/a", "c1", true),
              "linux.cgroupsPath \"/a\": expected \"slice:prefix:name\" with --systemd-cgroup (e.g. "
              "\"system.slice:tarn:c1\")");
    EXPECT_EQ(detail::resolve_path("system.slice:docker:abc", "c1", true, "/"), "/system.slice/docker-abc.scope");
}

TEST(CgroupPath, IdMustBeAName) {
    EXPECT_EQ(resolve_error("", "a/b"), "container id \"a/b\": not usable as a cgroup name");
    EXPECT_EQ(resolve_error("", ".."), "container id \"..\": not usable as a cgroup name");
}

TEST(CgroupPath, PublicResolveReadsProcSelf) {
    // Relative paths land below whatever /proc/self/cgroup says; absolute ones do not read it.
    EXPECT_EQ(resolve_path("/x/y", "c1"), "/x/y");
    std::string rel = resolve_path("x", "c1");
    EXPECT_EQ(rel.substr(rel.size() - 2), "/x");
}
