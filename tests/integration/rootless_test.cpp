// tarn run by an ordinary user: users made by the test (one with /etc/subuid and
// /etc/subgid ranges, one without), a copy of tarn they can execute, state under their
// XDG_RUNTIME_DIR, configs as `tarn spec --rootless` writes them.
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

struct User {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
};

// A user of the test's own: made once, with subordinate ids or without.
User test_user(const std::string& name, bool subids) {
    if (!::getpwnam(name.c_str())) {
        Result r = sh("useradd --no-create-home --shell /bin/sh " + name + " 2>&1");
        if (r.code != 0) return {};
    }
    const passwd* pw = ::getpwnam(name.c_str());
    if (!pw) return {};
    User u{name, pw->pw_uid, pw->pw_gid};
    for (const char* file : {"/etc/subuid", "/etc/subgid"}) {
        std::string text = path_exists(file) ? read_text(file) : "";
        std::string kept, line;
        std::istringstream in(text);
        while (std::getline(in, line))
            if (line.rfind(name + ":", 0) != 0) kept += line + "\n";
        // A range of its own, far above anything useradd hands out.
        if (subids) kept += name + ":" + std::to_string(1000000 + (u.uid % 1000) * 65536) + ":65536\n";
        write_text(file, kept);
    }
    return u;
}

std::string shell_quoted(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

uint32_t subid_start(const User& u) { return 1000000 + (u.uid % 1000) * 65536; }

class Rootless : public ::testing::Test {
protected:
    void SetUp() override {
        REQUIRE_ROOT();
        user_ = test_user("tarn-rl", true);
        if (user_.name.empty()) GTEST_SKIP() << "useradd is not available";
        // Everything the user touches lives in a directory it may enter: the repository
        // may sit under a home only root can read.
        dir_ = b_.scratch("rootless");
        ::chmod(dir_.c_str(), 0755);
        bin_ = dir_ + "/tarn";
        std::filesystem::copy_file(TARN_BINARY, bin_, std::filesystem::copy_options::overwrite_existing);
        ::chmod(bin_.c_str(), 0755);
        xdg_ = dir_ + "/xdg";
        ::mkdir(xdg_.c_str(), 0700);
        ::chown(xdg_.c_str(), user_.uid, user_.gid);
        bundle_ = dir_ + "/bundle";
        ::mkdir(bundle_.c_str(), 0755);
        ::chown(bundle_.c_str(), user_.uid, user_.gid);
        Result spec = as(user_, {"spec", "--rootless", "--bundle", bundle_});
        ASSERT_EQ(spec.code, 0) << spec.err;
        config_ = json::parse(read_text(bundle_ + "/config.json"));
        config_["root"]["path"] = busybox_rootfs();
        config_["process"]["terminal"] = false;
    }
    void TearDown() override {
        // Whatever a failed assertion left: the user's containers, then their state.
        if (!user_.name.empty() && !xdg_.empty())
            sh("for c in $(ls " + xdg_ + "/tarn 2>/dev/null); do setpriv --reuid " + std::to_string(user_.uid) +
               " --regid " + std::to_string(user_.gid) + " --clear-groups env XDG_RUNTIME_DIR=" + xdg_ + " " + bin_ +
               " delete --force $c; done");
    }

    void write_config(const json& c) {
        std::ofstream(bundle_ + "/config.json") << c.dump(2);
    }
    // `tarn ARGS` as `u`, from the bundle, with no --root: XDG_RUNTIME_DIR decides.
    Result as(const User& u, const std::vector<std::string>& args) {
        std::vector<std::string> argv = {"setpriv",  "--reuid", std::to_string(u.uid), "--regid",
                                         std::to_string(u.gid), "--clear-groups", "env", "XDG_RUNTIME_DIR=" + xdg_,
                                         "HOME=" + dir_, bin_};
        argv.insert(argv.end(), args.begin(), args.end());
        std::string cmd;
        for (const std::string& a : argv) cmd += shell_quoted(a) + " ";
        return sh("cd " + shell_quoted(bundle_) + " && exec " + cmd);
    }
    std::string state_dir(const std::string& id) const { return xdg_ + "/tarn/" + id; }
    void expect_nothing_left(const std::string& id) {
        EXPECT_FALSE(path_exists(state_dir(id))) << "state dir left behind";
        EXPECT_TRUE(processes_matching(bundle_).empty());
        EXPECT_EQ(read_text("/proc/self/mountinfo").find(bundle_), std::string::npos) << "a mount is left";
    }

    Bundle b_;  // only for its scratch space
    User user_;
    std::string dir_, bin_, xdg_, bundle_;
    json config_;
};

TEST_F(Rootless, RunIsRootInItsOwnUserNamespaceOnly) {
    config_["process"]["args"] = {"sh", "-c", "id -u; cat /proc/self/uid_map; exit 3"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-run"});
    EXPECT_EQ(r.code, 3) << r.err;
    std::istringstream out(r.out);
    std::string id, map;
    std::getline(out, id);
    std::getline(out, map);
    EXPECT_EQ(id, "0");
    // Container root is the user itself, and nothing else is mapped.
    std::istringstream fields(map);
    uint32_t inside = 1, outside = 0, size = 0;
    fields >> inside >> outside >> size;
    EXPECT_EQ(inside, 0u);
    EXPECT_EQ(outside, user_.uid);
    EXPECT_EQ(size, 1u);
    expect_nothing_left("rl-run");
}

TEST_F(Rootless, CreateStartExecKillDelete) {
    config_["process"]["args"] = {"sleep", "600"};
    write_config(config_);
    std::string pid_file = bundle_ + "/pid";
    Result c = as(user_, {"create", "--pid-file", pid_file, "rl-life"});
    ASSERT_EQ(c.code, 0) << c.err;
    EXPECT_TRUE(path_exists(state_dir("rl-life"))) << "state under $XDG_RUNTIME_DIR/tarn";
    pid_t pid = std::stoi(read_text(pid_file));
    struct stat st;
    ASSERT_EQ(::stat(("/proc/" + std::to_string(pid)).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, user_.uid) << "the init runs as the user on the host";
    // The parked init runs tarn from a sealed memfd: an unprivileged user cannot make
    // the read-only bind.
    char exe[256] = {};
    ASSERT_GT(::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), exe, sizeof exe - 1), 0);
    EXPECT_EQ(std::string(exe).find("memfd:tarn"), 1u) << exe;
    // ... sealed: the runtime cannot be overwritten through it (CVE-2019-5736), not even
    // by host root.
    int w = ::open(("/proc/" + std::to_string(pid) + "/exe").c_str(), O_WRONLY | O_CLOEXEC);
    if (w >= 0) {
        EXPECT_LT(::write(w, "x", 1), 0) << "the parked init's binary took a write";
        ::close(w);
    }
    EXPECT_NE(as(user_, {"state", "rl-life"}).out.find("\"created\""), std::string::npos);
    ASSERT_EQ(as(user_, {"start", "rl-life"}).code, 0);
    EXPECT_NE(as(user_, {"state", "rl-life"}).out.find("\"running\""), std::string::npos);
    Result e = as(user_, {"exec", "rl-life", "sh", "-c", "id -u; ls /proc/self/fd | tr '\\n' ' '; exit 4"});
    EXPECT_EQ(e.code, 4) << e.err;
    // No fd of the runtime reaches the exec'd process: stdio, and ls's own directory.
    EXPECT_EQ(e.out, "0\n0 1 2 3 ") << e.out;
    Result l = as(user_, {"list"});
    EXPECT_NE(l.out.find("rl-life"), std::string::npos) << l.out;
    EXPECT_NE(as(user_, {"ps", "rl-life"}).out.find("sleep 600"), std::string::npos);
    // Another user's runtime state is not this user's: root's default root has nothing.
    EXPECT_EQ(as(user_, {"kill", "rl-life", "KILL"}).code, 0);
    for (int i = 0; i < 100 && alive(pid); ++i) ::usleep(20000);
    Result d = as(user_, {"delete", "rl-life"});
    EXPECT_EQ(d.code, 0) << d.err;
    expect_nothing_left("rl-life");
}

TEST_F(Rootless, MaskedPathsSeccompAndCapabilitiesHold) {
    // A profile that refuses mkdir, with noNewPrivileges as spec --rootless writes it.
    config_["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                   {"syscalls", json::array({{{"names", {"mkdir", "mkdirat"}},
                                                              {"action", "SCMP_ACT_ERRNO"},
                                                              {"errnoRet", 1}}})}};
    config_["mounts"].push_back({{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}});
    config_["process"]["args"] = {
        "sh", "-c",
        "grep -E '^(Seccomp|CapEff):' /proc/self/status; grep -c ' /proc/keys ' /proc/self/mountinfo; "
        "echo firmware: $(ls /sys/firmware | wc -l); "
        "mkdir /tmp/d 2>/dev/null && echo mkdir-ok || echo mkdir-refused"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-sec"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out;
    // spec --rootless keeps three capabilities: audit_write, kill, net_bind_service.
    EXPECT_NE(r.out.find("CapEff:\t0000000020000420"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\n1\n"), std::string::npos) << "/proc/keys is masked: " << r.out;
    EXPECT_NE(r.out.find("firmware: 0\n"), std::string::npos) << "/sys/firmware is masked: " << r.out;
    EXPECT_NE(r.out.find("mkdir-refused"), std::string::npos) << r.out;
    expect_nothing_left("rl-sec");
}

TEST_F(Rootless, SubordinateRangesGoThroughNewuidmap) {
    if (!path_exists("/usr/bin/newuidmap")) GTEST_SKIP() << "no newuidmap (Debian's uidmap)";
    uint32_t start = subid_start(user_);
    for (const char* key : {"uidMappings", "gidMappings"})
        config_["linux"][key] = {{{"containerID", 0}, {"hostID", key[0] == 'u' ? user_.uid : user_.gid}, {"size", 1}},
                                 {{"containerID", 1}, {"hostID", start}, {"size", 65536}}};
    config_["mounts"].push_back({{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}});
    // CAP_CHOWN to give a file to a subordinate id.
    for (const char* set : {"bounding", "effective", "permitted"})
        config_["process"]["capabilities"][set].push_back("CAP_CHOWN");
    config_["process"]["args"] = {"sh", "-c", "cat /proc/self/uid_map; touch /tmp/f; chown 1000:1000 /tmp/f && "
                                              "stat -c '%u %g' /tmp/f"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-sub"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find(std::to_string(start) + "      65536"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("1000 1000"), std::string::npos) << r.out;
    expect_nothing_left("rl-sub");
}

TEST_F(Rootless, RangeTheUserDoesNotHaveIsNamedAndLeavesNothing) {
    if (!path_exists("/usr/bin/newuidmap")) GTEST_SKIP() << "no newuidmap (Debian's uidmap)";
    User bare = test_user("tarn-rl-bare", false);
    ASSERT_FALSE(bare.name.empty());
    ::chown(xdg_.c_str(), bare.uid, bare.gid);
    config_["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", bare.uid}, {"size", 1}},
                                       {{"containerID", 1}, {"hostID", 1000000}, {"size", 65536}}};
    config_["linux"]["gidMappings"] = {{{"containerID", 0}, {"hostID", bare.gid}, {"size", 1}}};
    config_["process"]["args"] = {"true"};
    write_config(config_);
    Result r = as(bare, {"run", "rl-bare"});
    ::chown(xdg_.c_str(), user_.uid, user_.gid);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("linux.uidMappings: /usr/bin/newuidmap 0->" + std::to_string(bare.uid)), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("/etc/subuid"), std::string::npos) << r.err;
    expect_nothing_left("rl-bare");
}

TEST_F(Rootless, LimitsWithoutADelegatedCgroupAreRefused) {
    if (::access("/sys/fs/cgroup/cgroup.procs", F_OK) == 0)
        GTEST_SKIP() << "a pure cgroup v2 host: delegation is the guest tests' to check";
    config_["linux"]["resources"] = {{"memory", {{"limit", 64 << 20}}}};
    config_["process"]["args"] = {"true"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-limit"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("linux.resources.memory: no cgroup is delegated to uid " + std::to_string(user_.uid)),
              std::string::npos)
        << r.err;
    expect_nothing_left("rl-limit");
    // Without limits the same container runs, in its caller's cgroup.
    config_["linux"].erase("resources");
    config_["process"]["args"] = {"sh", "-c", "echo ran"};
    write_config(config_);
    Result ok = as(user_, {"run", "rl-nolimit"});
    EXPECT_EQ(ok.code, 0) << ok.err;
    EXPECT_EQ(ok.out, "ran\n");
}

// --systemd-cgroup as an ordinary user asks the user's own systemd manager, which can
// delegate controllers on cgroup v2 only: on a v1 or hybrid host (or without systemd)
// create says why and makes nothing. (The working path is checked in the systemd guest.)
TEST_F(Rootless, SystemdCgroupWithoutAUserManagerSaysWhy) {
    if (::access("/sys/fs/cgroup/cgroup.procs", F_OK) == 0)
        GTEST_SKIP() << "a pure cgroup v2 host: the systemd guest tests check the user manager";
    config_["process"]["args"] = {"true"};
    write_config(config_);
    Result r = as(user_, {"--systemd-cgroup", "run", "rl-sd"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("create rl-sd: systemd cgroup driver: an unprivileged user's containers need cgroup v2"),
              std::string::npos)
        << r.err;
    expect_nothing_left("rl-sd");
    Result f = as(user_, {"features"});
    ASSERT_EQ(f.code, 0) << f.err;
    json cg = json::parse(f.out)["linux"]["cgroup"];
    EXPECT_EQ(cg["systemd"], false);
    EXPECT_EQ(cg["systemdUser"], false);
}

// What rootless networking does (pasta, slirp4netns): a network namespace made ahead in
// a user namespace of the user's own, which the container joins by path.
TEST_F(Rootless, JoinsAUserAndNetworkNamespaceByPath) {
    Result holder = sh("setpriv --reuid " + std::to_string(user_.uid) + " --regid " + std::to_string(user_.gid) +
                       " --clear-groups unshare --user --map-root-user --net sleep 60 >/dev/null 2>&1 & echo $!");
    pid_t p = std::stoi(holder.out);
    for (int i = 0; i < 100 && read_text("/proc/" + std::to_string(p) + "/uid_map").find(" 1") == std::string::npos; ++i)
        ::usleep(10000);
    std::string net = "/proc/" + std::to_string(p) + "/ns/net";
    char want[64] = {};
    ASSERT_GT(::readlink(net.c_str(), want, sizeof want - 1), 0);
    auto& ns = config_["linux"]["namespaces"];
    for (size_t i = ns.size(); i-- > 0;)
        if (ns[i]["type"] == "user" || ns[i]["type"] == "network") ns.erase(i);
    ns.push_back({{"type", "user"}, {"path", "/proc/" + std::to_string(p) + "/ns/user"}});
    ns.push_back({{"type", "network"}, {"path", net}});
    config_["linux"].erase("uidMappings");
    config_["linux"].erase("gidMappings");
    config_["process"]["args"] = {"readlink", "/proc/self/ns/net"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-netns"});
    ::kill(p, SIGKILL);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, std::string(want) + "\n");
    expect_nothing_left("rl-netns");
}

TEST_F(Rootless, WithoutAUserNamespaceIsRefusedByName) {
    auto& ns = config_["linux"]["namespaces"];
    for (size_t i = ns.size(); i-- > 0;)
        if (ns[i]["type"] == "user") ns.erase(i);
    config_["process"]["args"] = {"true"};
    write_config(config_);
    Result r = as(user_, {"run", "rl-nouserns"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("linux.namespaces: an unprivileged user needs a user namespace"), std::string::npos)
        << r.err;
    expect_nothing_left("rl-nouserns");
}

}  // namespace
