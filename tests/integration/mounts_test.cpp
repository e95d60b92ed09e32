// config.md "Mounts" and "Root", config-linux.md "Devices", "Masked Paths",
// "Readonly Paths": the filesystem the process sees.
#include <sys/stat.h>
#include <unistd.h>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

static std::string mount_line(const std::string& mounts, const std::string& target) {
    size_t pos = 0;
    while (pos < mounts.size()) {
        size_t nl = mounts.find('\n', pos);
        std::string line = mounts.substr(pos, nl - pos);
        pos = nl == std::string::npos ? mounts.size() : nl + 1;
        size_t a = line.find(' ');
        size_t b2 = line.find(' ', a + 1);
        if (line.substr(a + 1, b2 - a - 1) == target) return line;
    }
    return "";
}

TEST(Mounts, DefaultMountsAreThereWithTheirFlags) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("cat /proc/mounts").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(mount_line(r.out, "/proc").find("proc"), std::string::npos) << r.out;
    std::string dev = mount_line(r.out, "/dev");
    EXPECT_NE(dev.find("tmpfs"), std::string::npos);
    EXPECT_NE(dev.find("nosuid"), std::string::npos);
    std::string sys = mount_line(r.out, "/sys");
    EXPECT_NE(sys.find("sysfs ro,"), std::string::npos) << sys;
    EXPECT_NE(mount_line(r.out, "/dev/pts").find("devpts"), std::string::npos);
    EXPECT_NE(mount_line(r.out, "/dev/shm").find("nodev"), std::string::npos);
    EXPECT_NE(mount_line(r.out, "/dev/mqueue").find("mqueue"), std::string::npos);
    EXPECT_NE(mount_line(r.out, "/").find(" ro,"), std::string::npos) << "root.readonly";
}

TEST(Mounts, ReadonlyRootRejectsWrites) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("touch /newfile 2>&1; echo rc=$?").run();
    EXPECT_NE(r.out.find("Read-only file system"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("rc=1"), std::string::npos);
}

TEST(Mounts, BindMountReadOnlyAndReadWrite) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("data");
    write_text(src + "/hello", "from host\n");
    b.config["mounts"].push_back({{"destination", "/ro"}, {"type", "bind"}, {"source", src}, {"options", {"rbind", "ro"}}});
    b.config["mounts"].push_back({{"destination", "/rw/deep/dir"}, {"type", "bind"}, {"source", src}, {"options", {"bind"}}});
    Result r = b.cmd("cat /ro/hello; touch /ro/x 2>/dev/null || echo ro-denied; echo new > /rw/deep/dir/written").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "from host\nro-denied\n");
    EXPECT_EQ(read_text(src + "/written"), "new\n") << "missing targets are created and writes reach the source";
}

TEST(Mounts, RelativeBindSourceIsRelativeToTheBundle) {
    REQUIRE_ROOT();
    Bundle b;
    b.scratch("rel");
    write_text(b.dir() + "/rel/f", "relative\n");
    b.config["mounts"].push_back({{"destination", "/rel"}, {"type", "bind"}, {"source", "rel"}, {"options", {"bind"}}});
    EXPECT_EQ(b.cmd("cat /rel/f").run().out, "relative\n");
}

TEST(Mounts, FileBindMount) {
    REQUIRE_ROOT();
    Bundle b;
    write_text(b.dir() + "/single", "one file\n");
    b.config["mounts"].push_back({{"destination", "/etc/single"}, {"type", "bind"}, {"source", b.dir() + "/single"}, {"options", {"bind", "ro"}}});
    EXPECT_EQ(b.cmd("cat /etc/single").run().out, "one file\n");
}

TEST(Mounts, TmpfsWithOptions) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["mounts"].push_back({{"destination", "/scratch"}, {"type", "tmpfs"}, {"source", "tmpfs"},
                                  {"options", {"nosuid", "noexec", "nodev", "size=1m", "mode=700"}}});
    Result r = b.cmd("grep ' /scratch ' /proc/mounts; stat -c %a /scratch").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("nosuid,nodev,noexec"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("size=1024k"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\n700\n"), std::string::npos) << r.out;
}

TEST(Mounts, RecursiveReadOnlyReachesSubmounts) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("tree");
    ::mkdir((src + "/sub").c_str(), 0755);
    ASSERT_EQ(sh("mount -t tmpfs tmpfs " + src + "/sub").code, 0);
    b.config["mounts"].push_back({{"destination", "/tree"}, {"type", "bind"}, {"source", src}, {"options", {"rbind", "rro"}}});
    Result r = b.cmd("touch /tree/sub/x 2>/dev/null || echo sub-ro").run();
    sh("umount " + src + "/sub");
    EXPECT_EQ(r.out, "sub-ro\n") << r.err;
}

// config.md "Mounts" uidMappings/gidMappings: an idmapped bind mount presents a file
// owned by containerID on the source as owned by hostID, without touching the disk.
namespace {

json id_map(uint32_t container_id, uint32_t host_id, uint32_t size) {
    return {{"containerID", container_id}, {"hostID", host_id}, {"size", size}};
}

// A file in `dir` owned on disk by uid:gid `id`.
void owned_file(const std::string& dir, const std::string& name, uid_t id) {
    write_text(dir + "/" + name, name + "\n");
    ASSERT_EQ(::chown((dir + "/" + name).c_str(), id, id), 0);
}

// A tmpfs mounted for the length of a test, gone before the bundle is removed.
struct HostTmpfs {
    std::string path;
    explicit HostTmpfs(std::string p) : path(std::move(p)) {
        ::mkdir(path.c_str(), 0755);
        mounted = sh("mount -t tmpfs tmpfs " + path).code == 0;
    }
    ~HostTmpfs() {
        if (mounted) sh("umount " + path);
    }
    bool mounted = false;
};

}  // namespace

TEST(Mounts, IdmappedBindShowsTheMappedOwner) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("idmapped");
    owned_file(src, "root-owned", 0);
    owned_file(src, "user-owned", 1000);
    owned_file(src, "unmapped", 5);
    json maps = {id_map(0, 1000, 1), id_map(1000, 2000, 1)};
    b.config["mounts"].push_back({{"destination", "/data"},
                                  {"type", "bind"},
                                  {"source", src},
                                  {"options", {"bind", "idmap"}},
                                  {"uidMappings", maps},
                                  {"gidMappings", maps}});
    Result r = b.cmd("cd /data && stat -c '%n %u:%g' root-owned user-owned unmapped").run("idm1");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "root-owned 1000:1000\nuser-owned 2000:2000\nunmapped 65534:65534\n");
    struct stat st;
    ASSERT_EQ(::stat((src + "/user-owned").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000u) << "the mapping must not change the owner on disk";
}

TEST(Mounts, IdmappedTmpfsSourceWithoutTheOption) {
    REQUIRE_ROOT();
    // Mappings alone make the mount idmapped too (the option only says "recursive or
    // not"); tmpfs takes idmapped mounts like ext4 does.
    Bundle b;
    HostTmpfs src(b.scratch("tmpfs-src"));
    ASSERT_TRUE(src.mounted);
    owned_file(src.path, "f", 1000);
    b.config["mounts"].push_back({{"destination", "/t"},
                                  {"type", "bind"},
                                  {"source", src.path},
                                  {"options", {"bind"}},
                                  {"uidMappings", {id_map(1000, 0, 1)}},
                                  {"gidMappings", {id_map(1000, 0, 1)}}});
    Result r = b.cmd("stat -c %u:%g /t/f").run("idm2");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "0:0\n");
}

TEST(Mounts, RidmapReachesSubmountsAndIdmapDoesNot) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("rtree");
    owned_file(src, "top", 0);
    HostTmpfs sub(src + "/sub");
    ASSERT_TRUE(sub.mounted);
    owned_file(sub.path, "nested", 0);
    json maps = {id_map(0, 1000, 1)};
    for (auto [dest, opt] : {std::pair{"/r", "ridmap"}, {"/n", "idmap"}})
        b.config["mounts"].push_back({{"destination", dest},
                                      {"type", "bind"},
                                      {"source", src},
                                      {"options", {"rbind", opt}},
                                      {"uidMappings", maps},
                                      {"gidMappings", maps}});
    Result r = b.cmd("stat -c '%n %u' /r/top /r/sub/nested /n/top /n/sub/nested").run("idm3");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "/r/top 1000\n/r/sub/nested 1000\n/n/top 1000\n/n/sub/nested 0\n");
}

TEST(Mounts, IdmapOptionTakesTheContainersUserNamespaceMapping) {
    REQUIRE_ROOT();
    // The common case: a host directory owned by root, a container whose root is host
    // uid 100000. Without idmap its files are nobody's; with it, the container's root owns them.
    Bundle b;
    std::string src = b.scratch("volume");
    owned_file(src, "f", 0);
    b.config["linux"]["namespaces"].push_back({{"type", "user"}});
    b.config["linux"]["uidMappings"] = {id_map(0, 100000, 65536)};
    b.config["linux"]["gidMappings"] = {id_map(0, 100000, 65536)};
    // Targets that exist in the image: the container's root cannot create them in a
    // rootfs owned by the host's root.
    b.config["mounts"].push_back(
        {{"destination", "/run"}, {"type", "bind"}, {"source", src}, {"options", {"bind"}}});
    b.config["mounts"].push_back(
        {{"destination", "/var"}, {"type", "bind"}, {"source", src}, {"options", {"bind", "idmap"}}});
    Result r = b.cmd("stat -c '%n %u:%g' /run/f /var/f && echo hi > /var/new").run("idm4");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "/run/f 65534:65534\n/var/f 0:0\n");
    struct stat st;
    ASSERT_EQ(::stat((src + "/new").c_str(), &st), 0) << "the container's root can write through the mapping";
    EXPECT_EQ(st.st_uid, 0u) << "and what it writes is owned by root on disk";
}

TEST(Mounts, IdmapOptionTakesAJoinedUserNamespace) {
    REQUIRE_ROOT();
    // A user namespace given by path has no mappings in the config: the idmapping is
    // the namespace itself.
    Bundle holder;
    holder.config["linux"]["namespaces"].push_back({{"type", "user"}});
    holder.config["linux"]["uidMappings"] = {id_map(0, 200000, 65536)};
    holder.config["linux"]["gidMappings"] = {id_map(0, 200000, 65536)};
    holder.cmd("exec sleep 1000");
    ASSERT_EQ(holder.tarn({"run", "-d", "--bundle", holder.dir(), "idm-holder"}).code, 0);
    int pid = json::parse(holder.tarn({"state", "idm-holder"}).out)["pid"];

    Bundle b;
    std::string src = b.scratch("volume");
    owned_file(src, "f", 0);
    b.config["linux"]["namespaces"].push_back(
        {{"type", "user"}, {"path", "/proc/" + std::to_string(pid) + "/ns/user"}});
    b.config["mounts"].push_back(
        {{"destination", "/var"}, {"type", "bind"}, {"source", src}, {"options", {"bind", "idmap"}}});
    Result r = b.cmd("stat -c %u:%g /var/f").run("idm5");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "0:0\n");
}

TEST(Mounts, SymlinkedTargetStaysInsideTheRootfs) {
    REQUIRE_ROOT();
    // A hostile image points a mount target at a host path; the mount must land inside.
    Bundle b;
    std::string rootfs = b.scratch("ownroot");
    ASSERT_EQ(sh("cp -a " + busybox_rootfs() + "/. " + rootfs).code, 0);
    std::string victim = b.scratch("victim");
    ASSERT_EQ(::symlink(victim.c_str(), (rootfs + "/escape").c_str()), 0);
    b.config["root"]["path"] = rootfs;
    b.config["mounts"].push_back({{"destination", "/escape"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", json::array()}});
    Result r = b.cmd("touch /escape/inside && echo ok").run();
    EXPECT_EQ(r.out, "ok\n") << r.err;
    EXPECT_FALSE(path_exists(victim + "/inside")) << "the tmpfs landed on the host path";
    EXPECT_TRUE(path_exists(rootfs + victim)) << "the symlink was resolved inside the rootfs";
}

TEST(Devices, DefaultDevicesAndLinks) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; "
                     "readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; echo x > /dev/null && echo null-ok").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("/dev/null character special file 1:3 666"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("/dev/zero character special file 1:5 666"), std::string::npos);
    EXPECT_NE(r.out.find("/dev/tty character special file 5:0 666"), std::string::npos);
    EXPECT_NE(r.out.find("pts/ptmx\n/proc/self/fd\n/proc/self/fd/0\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("null-ok"), std::string::npos);
}

TEST(Devices, ConfiguredDeviceWithModeAndOwner) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["devices"] = {{{"type", "c"}, {"path", "/dev/mynull"}, {"major", 1}, {"minor", 3},
                                     {"fileMode", 0600}, {"uid", 1}, {"gid", 1}}};
    Result r = b.cmd("stat -c '%F %t:%T %a %u:%g' /dev/mynull").run();
    EXPECT_EQ(r.out, "character special file 1:3 600 1:1\n") << r.err;
}

TEST(MaskedPaths, AreUnreadable) {
    REQUIRE_ROOT();
    Bundle b;
    // A file masked with /dev/null reads empty; a directory masked with a tmpfs is empty.
    b.config["linux"]["maskedPaths"] = {"/proc/timer_list", "/proc/self/net/../../../sys/firmware", "/proc/does-not-exist"};
    b.config["linux"]["maskedPaths"].push_back("/proc/sys/kernel");
    Result r = b.cmd("wc -c < /proc/timer_list; ls /proc/sys/kernel | wc -l; "
                     "echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null || echo sysctl-ro").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "0\n0\nsysctl-ro\n");
}

TEST(Rootfs, NoPivotUsesChroot) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("echo chrooted").run("np", {"--no-pivot"});
    EXPECT_EQ(r.out, "chrooted\n") << r.err;
}
