// config.md "apparmorProfile"/"selinuxLabel", config-linux.md "mountLabel": applied where
// the host runs the LSM, a create error naming the field where it does not. And
// features-linux.md: what `tarn features` lists is exactly what a config may use.
#include "harness.hpp"
#include "namespaces/namespaces.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Lsm, AppArmorProfileWithoutAppArmorFailsCreate) {
    REQUIRE_ROOT();
    if (tarn::ns::apparmor_enabled()) GTEST_SKIP() << "AppArmor is enabled here";
    Bundle b;
    b.config["process"]["apparmorProfile"] = "tarn-test-profile";
    Result r = b.cmd("true").run("aa");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("process.apparmorProfile \"tarn-test-profile\": AppArmor is not enabled"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/aa"));
}

TEST(Lsm, SelinuxLabelAndMountLabelWithoutSelinuxFailCreate) {
    REQUIRE_ROOT();
    if (tarn::ns::selinux_enabled()) GTEST_SKIP() << "SELinux is enabled here";
    Bundle b;
    b.config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2";
    Result r = b.cmd("true").run("se");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("process.selinuxLabel"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("SELinux is not enabled"), std::string::npos) << r.err;
    Bundle m;
    m.config["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2";
    r = m.cmd("true").run("ml");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.mountLabel"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(m.root() + "/ml"));
}

TEST(Lsm, ExecWithAProfileTheHostCannotApplyFails) {
    REQUIRE_ROOT();
    if (tarn::ns::apparmor_enabled()) GTEST_SKIP() << "AppArmor is enabled here";
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "lx"}).code, 0);
    json p = {{"args", {"true"}}, {"cwd", "/"}, {"user", {{"uid", 0}, {"gid", 0}}}, {"apparmorProfile", "x"}};
    write_text(b.dir() + "/process.json", p.dump());
    Result r = b.tarn({"exec", "--process", b.dir() + "/process.json", "lx"});
    b.tarn({"delete", "-f", "lx"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("process.apparmorProfile"), std::string::npos) << r.err;
}

TEST(Lsm, AppArmorProfileIsApplied) {
    REQUIRE_ROOT();
    if (!tarn::ns::apparmor_enabled()) GTEST_SKIP() << "AppArmor is not enabled here";
    Bundle b;
    b.config["process"]["apparmorProfile"] = "unconfined";
    Result r = b.cmd("cat /proc/self/attr/current").run("aa-on");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("unconfined"), std::string::npos) << r.out;
}

namespace {

json features() {
    Result r = tarn::test::tarn({"features"}, "/tmp");
    EXPECT_EQ(r.code, 0) << r.err;
    return json::parse(r.out);
}

// A container whose filter has one rule for acct(2), which `true` never calls.
Result run_with_seccomp(Bundle& b, const json& seccomp, const std::string& id) {
    b.config["linux"]["seccomp"] = seccomp;
    return b.args({"/bin/true"}).run(id);
}

}  // namespace

TEST(Features, EverySeccompActionListedWorks) {
    REQUIRE_ROOT();
    json f = features()["linux"]["seccomp"];
    EXPECT_TRUE(f["enabled"].get<bool>());
    int n = 0;
    for (const auto& action : f["actions"]) {
        Bundle b;
        json rule = {{"names", {"acct"}}, {"action", action}};
        json seccomp = {{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {rule}}};
        // NOTIFY needs an agent listening: a socket nobody answers still takes the fd.
        std::string sock;
        if (action == "SCMP_ACT_NOTIFY") {
            sock = b.scratch("agent") + "/s.sock";
            sh("python3 -c 'import socket,time,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
               "s.listen(1); "
               "c,_=s.accept(); time.sleep(2)' " +
               sock + " >/dev/null 2>&1 &");
            for (int i = 0; i < 500 && !path_exists(sock); ++i) usleep(20000);
            seccomp["listenerPath"] = sock;
        }
        Result r = run_with_seccomp(b, seccomp, "act" + std::to_string(n++));
        EXPECT_EQ(r.code, 0) << action << ": " << r.err;
    }
    EXPECT_EQ(n, 9);
}

TEST(Features, EveryOperatorArchAndSupportedFlagListedWorks) {
    REQUIRE_ROOT();
    json f = features()["linux"]["seccomp"];
    Bundle b;
    json rules = json::array();
    for (const auto& op : f["operators"])
        rules.push_back({{"names", {"acct"}},
                         {"action", "SCMP_ACT_ERRNO"},
                         {"args", {{{"index", 0}, {"value", 7}, {"valueTwo", 7}, {"op", op}}}}});
    json seccomp = {{"defaultAction", "SCMP_ACT_ALLOW"},
                    {"architectures", f["archs"]},
                    {"flags", f["supportedFlags"]},
                    {"syscalls", rules}};
    Result r = run_with_seccomp(b, seccomp, "ops");
    EXPECT_EQ(r.code, 0) << r.err;
    // Known but not supported: refused with the flag's name, never ignored.
    for (const auto& flag : f["knownFlags"]) {
        if (std::find(f["supportedFlags"].begin(), f["supportedFlags"].end(), flag) !=
            f["supportedFlags"].end())
            continue;
        Bundle u;
        Result ur = run_with_seccomp(u, {{"defaultAction", "SCMP_ACT_ALLOW"}, {"flags", {flag}}}, "flag");
        EXPECT_NE(ur.code, 0) << flag;
        EXPECT_NE(ur.err.find(flag.get<std::string>()), std::string::npos) << ur.err;
    }
}

TEST(Features, LsmSupportIsDeclared) {
    json f = features()["linux"];
    EXPECT_TRUE(f["apparmor"]["enabled"].get<bool>());
    EXPECT_TRUE(f["selinux"]["enabled"].get<bool>());
}

TEST(Features, IdmappedMountsAreDeclaredOnThisKernel) {
    // MOUNT_ATTR_IDMAP is in every kernel since 5.12; the probe must find it.
    json f = features()["linux"]["mountExtensions"];
    EXPECT_TRUE(f["idmap"]["enabled"].get<bool>()) << f.dump();
    json opts = features()["mountOptions"];
    EXPECT_NE(std::find(opts.begin(), opts.end(), "ridmap"), opts.end());
}

TEST(Features, EveryMountOptionListedIsAccepted) {
    REQUIRE_ROOT();
    json opts = features()["mountOptions"];
    ASSERT_FALSE(opts.empty());
    Bundle b;
    std::string src = b.scratch("src");
    // The mount points live on a tmpfs, not in the shared rootfs.
    b.config["mounts"].push_back(
        {{"destination", "/mnt"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", json::array()}});
    int i = 0;
    for (const auto& o : opts) {
        json m = {{"destination", "/mnt/m" + std::to_string(i++)},
                  {"type", "bind"},
                  {"source", src},
                  {"options", {"rbind", o}}};
        // An idmap needs a mapping: the mount's own, as the container has no user namespace.
        if (o == "idmap" || o == "ridmap")
            m["uidMappings"] = m["gidMappings"] = {{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}};
        b.config["mounts"].push_back(m);
    }
    Result r = b.cmd("true").run("mopts");
    EXPECT_EQ(r.code, 0) << r.err;
}

TEST(Features, BindMountAtimeOptionsTakeEffect) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("src");
    b.config["mounts"].push_back(
        {{"destination", "/mnt"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", json::array()}});
    b.config["mounts"].push_back(
        {{"destination", "/mnt/na"}, {"type", "bind"}, {"source", src}, {"options", {"rbind", "noatime"}}});
    b.config["mounts"].push_back({{"destination", "/mnt/sa"},
                                  {"type", "bind"},
                                  {"source", src},
                                  {"options", {"rbind", "strictatime"}}});
    Result r = b.cmd("grep -E ' /mnt/(na|sa) ' /proc/self/mountinfo").run("atime");
    ASSERT_EQ(r.code, 0) << r.err;
    std::string na = r.out.substr(0, r.out.find('\n'));
    std::string sa = r.out.substr(r.out.find('\n') + 1);
    EXPECT_NE(na.find("noatime"), std::string::npos) << r.out;
    EXPECT_EQ(sa.find("noatime"), std::string::npos) << r.out;
    EXPECT_EQ(sa.find("relatime"), std::string::npos) << "strictatime shows as neither: " << r.out;
}
