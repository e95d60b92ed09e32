// config.md "Process": user, env, cwd, rlimits, capabilities, and friends, as the
// workload sees them.
#include <fcntl.h>
#include <linux/keyctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Process, UserGroupsAndUmask) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["user"] = {{"uid", 1000}, {"gid", 1001}, {"additionalGids", {5, 6}}, {"umask", 077}};
    Result r = b.cmd("id -u; id -g; id -G; umask").run();
    EXPECT_EQ(r.out, "1000\n1001\n1001 5 6\n0077\n") << r.err;
}

TEST(Process, EnvAndCwd) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["env"] = {"PATH=/bin:/sbin", "GREETING=hi there"};
    b.config["process"]["cwd"] = "/tmp";
    Result r = b.cmd("echo \"$GREETING\"; pwd; env | wc -l").run();
    EXPECT_EQ(r.out.substr(0, r.out.rfind('\n', r.out.size() - 2) + 1), "hi there\n/tmp\n") << r.err;
}

TEST(Process, MissingCwdIsCreatedNotFatal) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["cwd"] = "/does/not/exist";
    Result r = b.cmd("pwd").run();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("cwd /does/not/exist"), std::string::npos) << r.err;
}

TEST(Process, Rlimits) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"soft", 512}, {"hard", 768}},
                                      {{"type", "RLIMIT_CORE"}, {"soft", 0}, {"hard", 0}}};
    Result r = b.cmd("ulimit -n; ulimit -Hn; ulimit -c").run();
    EXPECT_EQ(r.out, "512\n768\n0\n") << r.err;
}

TEST(Process, CapabilitiesAndNoNewPrivs) {
    REQUIRE_ROOT();
    Bundle b;
    // Default spec: CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
    Result r = b.cmd("grep -E '^(CapEff|CapBnd|CapPrm|CapAmb|NoNewPrivs)' /proc/self/status").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("CapPrm:\t0000000020000420"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CapEff:\t0000000020000420"), std::string::npos);
    EXPECT_NE(r.out.find("CapBnd:\t0000000020000420"), std::string::npos);
    EXPECT_NE(r.out.find("CapAmb:\t0000000000000000"), std::string::npos);
    EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos);
}

TEST(Process, AmbientCapabilitiesReachANonRootUser) {
    REQUIRE_ROOT();
    Bundle b;
    json caps = {"CAP_NET_BIND_SERVICE"};
    b.config["process"]["capabilities"] = {{"bounding", caps}, {"effective", caps}, {"permitted", caps},
                                           {"inheritable", caps}, {"ambient", caps}};
    b.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    Result r = b.cmd("grep -E '^(CapEff|CapAmb)' /proc/self/status").run();
    EXPECT_EQ(r.out, "CapEff:\t0000000000000400\nCapAmb:\t0000000000000400\n") << r.err;
}

TEST(Process, UnknownCapabilityIsAnError) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["capabilities"]["bounding"].push_back("CAP_NOT_A_THING");
    Result r = b.cmd("true").run();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("process.capabilities.bounding: unknown capability \"CAP_NOT_A_THING\""), std::string::npos)
        << r.err;
}

TEST(Process, OomScoreAdjAndSysctl) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["oomScoreAdj"] = 500;
    b.config["linux"]["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
    Result r = b.cmd("cat /proc/self/oom_score_adj /proc/sys/net/ipv4/ip_forward").run();
    EXPECT_EQ(r.out, "500\n1\n") << r.err;
}

TEST(Process, OnlyStdioAndPreservedFdsReachTheContainer) {
    REQUIRE_ROOT();
    Bundle b;
    // Probed one by one: listing /proc/self/fd would show the lister's own fd.
    b.cmd("for i in 0 1 2 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/self/fd/$i ] && echo \"$i $(readlink /proc/self/fd/$i)\"; done; true");
    b.write();
    // fds 3 and 4 are open in the caller (containerd leaks such fds); only
    // --preserve-fds 1 lets fd 3 through.
    std::string script = "exec 3</dev/null 4</dev/null; " + std::string(TARN_BINARY) + " --root " + b.root() +
                         " run --preserve-fds 1 --bundle " + b.dir() + " fds";
    Result r = sh(script);
    EXPECT_NE(r.out.find("3 /dev/null\n"), std::string::npos) << r.out << r.err;
    EXPECT_EQ(r.out.find("\n4 "), std::string::npos) << "fd 4 leaked into the container:\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;
}

TEST(Process, SchedulerAndPersonality) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["scheduler"] = {{"policy", "SCHED_BATCH"}, {"nice", 5}};
    b.config["linux"]["personality"] = {{"domain", "LINUX32"}};
    Result r = b.cmd("uname -m; cut -d' ' -f19 /proc/self/stat").run();
    EXPECT_EQ(r.out, "i686\n5\n") << r.err;
}

TEST(Process, SessionKeyringIsTheContainersOwn) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["maskedPaths"] = json::array();  // /proc/keys is masked by default
    Result r = b.cmd("grep _ses /proc/keys || echo no-keys-file").run("keyring1");
    ASSERT_EQ(r.code, 0) << r.err;
    if (r.out == "no-keys-file\n") GTEST_SKIP() << "no /proc/keys on this kernel";
    EXPECT_NE(r.out.find("_ses.keyring1"), std::string::npos) << r.out;
    Result kept = b.cmd("grep -c _ses.keyring2 /proc/keys; true").run("keyring2", {"--no-new-keyring"});
    EXPECT_EQ(kept.out, "0\n") << kept.out << kept.err;
}

// `exec` must not hand the container the keys of whoever ran it. The key is visible
// only to a possessor (no user permission bits), so a /proc/keys line for it inside
// the container means the process possesses the caller's session keyring.
TEST(Process, ExecDoesNotKeepTheCallersSessionKeyring) {
    REQUIRE_ROOT();
    // A session keyring of the test's own, so the key never lands in the caller's.
    long ring = ::syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, nullptr, 0, 0, 0);
    if (ring < 0 && errno == ENOSYS) GTEST_SKIP() << "no keyrings in this kernel";
    ASSERT_GE(ring, 0) << std::strerror(errno);
    const std::string desc = "tarn-exec-secret-" + std::to_string(::getpid());
    const char secret[] = "hunter2";
    long key = ::syscall(SYS_add_key, "user", desc.c_str(), secret, sizeof secret - 1, KEY_SPEC_SESSION_KEYRING);
    ASSERT_GE(key, 0) << std::strerror(errno);
    ASSERT_EQ(::syscall(SYS_keyctl, KEYCTL_SETPERM, key, 0x3f000000 /* possessor: all; nobody else */, 0, 0), 0);
    // The observation works: a host process that inherits our keyring sees the key.
    ASSERT_EQ(sh("grep -c " + desc + " /proc/keys").out, "1\n");

    Bundle b;
    b.config["linux"]["maskedPaths"] = json::array();  // /proc/keys is masked by default
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "kr-exec"}).code, 0);
    Result r = b.tarn({"exec", "kr-exec", "sh", "-c", "grep -c " + desc + " /proc/keys; grep -c _ses /proc/keys"});
    EXPECT_EQ(r.out.substr(0, r.out.find('\n') + 1), "0\n") << "exec'd process possesses the caller's key:\n"
                                                              << r.out << r.err;
    // With --no-new-keyring the container keeps its caller's keyring, exec too.
    ASSERT_EQ(b.tarn({"run", "-d", "--no-new-keyring", "--bundle", b.dir(), "kr-kept"}).code, 0);
    Result kept = b.tarn({"exec", "kr-kept", "grep", "-c", desc, "/proc/keys"});
    EXPECT_EQ(kept.out, "1\n") << kept.err;
    ::syscall(SYS_keyctl, KEYCTL_REVOKE, key, 0, 0, 0);
}

// The capability blocks other tools write. The kernel raises an ambient capability only
// if it is also permitted and inheritable; runc leaves the others out of the ambient
// set (and the workload runs), so tarn does too and says so at debug level.
namespace {

struct CapsCase {
    const char* who;
    json caps;
    unsigned uid;
    const char* cap_amb;  // /proc/self/status CapAmb the workload must see
};

json caps_of(const std::vector<std::string>& all, bool inheritable, const std::vector<std::string>& ambient) {
    json c = {{"bounding", all}, {"effective", all}, {"permitted", all}, {"ambient", ambient}};
    if (inheritable) c["inheritable"] = all;
    return c;
}

}  // namespace

TEST(Process, AmbientCapabilitiesOfRuncAndPodmanConfigs) {
    REQUIRE_ROOT();
    const std::vector<std::string> runc_caps = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"};
    const std::vector<std::string> podman_caps = {"CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
                                                  "CAP_KILL",   "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID",
                                                  "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"};
    json partial = caps_of(runc_caps, false, runc_caps);
    partial["inheritable"] = {"CAP_KILL"};
    const CapsCase cases[] = {
        // runc 1.0 and 1.1.0/1.1.1 `runc spec`: all five sets, ambient within inheritable.
        {"runc 1.0 spec", caps_of(runc_caps, true, runc_caps), 0, "0000000020000420"},
        // runc 1.1.2 and later `runc spec` (inheritable dropped, CVE-2022-29162), ambient kept.
        {"runc 1.1.2 spec", caps_of(runc_caps, false, runc_caps), 0, "0000000000000000"},
        // podman 4 for `--user 1000 --cap-add net_bind_service`: no inheritable set.
        {"podman", caps_of(podman_caps, false, {"CAP_NET_BIND_SERVICE"}), 1000, "0000000000000000"},
        // Some ambient capabilities inheritable, some not: those keep their place.
        {"partial", partial, 0, "0000000000000020"},
    };
    for (const CapsCase& c : cases) {
        SCOPED_TRACE(c.who);
        Bundle b;
        b.config["process"]["capabilities"] = c.caps;
        b.config["process"]["user"] = {{"uid", c.uid}, {"gid", c.uid}};
        std::string log = b.dir() + "/debug.log";
        b.cmd("grep ^CapAmb: /proc/self/status").write();
        Result r = tarn::test::tarn({"--debug", "--log", log, "run", "--bundle", b.dir(), "amb"}, b.root(), b.dir());
        ASSERT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.out, std::string("CapAmb:\t") + c.cap_amb + "\n");
        bool dropped = std::string(c.cap_amb) != "0000000020000420";
        EXPECT_EQ(read_text(log).find("left out of the ambient set") != std::string::npos, dropped) << read_text(log);
    }
}
