// config-linux.md "Seccomp": the filter is in force in the workload, each action
// does what it says, argument comparisons narrow a rule, and the filter is loaded
// late enough that a profile blocking the runtime's own last syscalls still starts.
#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Seccomp, ErrnoActionBlocksTheNamedSyscalls) {
    REQUIRE_ROOT();
    Bundle b;
    b.private_tmp();
    b.config["linux"]["seccomp"] = {
        {"defaultAction", "SCMP_ACT_ALLOW"},
        {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
        {"syscalls", {{{"names", {"mkdir", "mkdirat", "no_such_syscall_anywhere"}}, {"action", "SCMP_ACT_ERRNO"}},
                      {{"names", {"unshare"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}}}}};
    Result r = b.cmd("grep ^Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; unshare -n true 2>&1; echo done").run();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << "default errnoRet is EPERM: " << r.out;
    EXPECT_NE(r.out.find("Function not implemented"), std::string::npos) << "errnoRet 38 is ENOSYS: " << r.out;
    EXPECT_NE(r.out.find("done"), std::string::npos);
}

TEST(Seccomp, ArgumentComparisonNarrowsTheRule) {
    REQUIRE_ROOT();
    Bundle b;
    b.private_tmp();
    b.config["linux"]["seccomp"] = {
        {"defaultAction", "SCMP_ACT_ALLOW"},
        {"syscalls",
         {{{"names", {"chmod"}}, {"action", "SCMP_ACT_ERRNO"}, {"args", {{{"index", 1}, {"value", 0777}, {"op", "SCMP_CMP_EQ"}}}}},
          {{"names", {"fchmodat"}}, {"action", "SCMP_ACT_ERRNO"}, {"args", {{{"index", 2}, {"value", 0777}, {"op", "SCMP_CMP_EQ"}}}}}}}};
    Result r = b.cmd("touch /tmp/f; chmod 755 /tmp/f && echo 755-ok; chmod 777 /tmp/f 2>/dev/null || echo 777-denied").run();
    EXPECT_EQ(r.out, "755-ok\n777-denied\n") << r.err;
}

TEST(Seccomp, KillProcessActionKillsWithSigsys) {
    REQUIRE_ROOT();
    Bundle b;
    // busybox sh calls getppid at start-up (for $PPID): the workload dies of SIGSYS
    // before it prints anything, and run reports 128 + SIGSYS.
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"syscalls", {{{"names", {"getppid"}}, {"action", "SCMP_ACT_KILL_PROCESS"}}}}};
    Result r = b.args({"/bin/busybox", "sh", "-c", "echo never"}).run();
    EXPECT_EQ(r.code, 128 + 31) << r.out << r.err;
    EXPECT_EQ(r.out, "");
}

TEST(Seccomp, ProfileBlockingGetcwdStillStarts) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["cwd"] = "/tmp";
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"syscalls", {{{"names", {"getcwd"}}, {"action", "SCMP_ACT_ERRNO"}}}}};
    Result r = b.cmd("echo started").run();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "started\n");
}

TEST(Seccomp, UnknownActionIsAnErrorNamingTheField) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"syscalls", {{{"names", {"getpid"}}, {"action", "SCMP_ACT_EXPLODE"}}}}};
    Result r = b.cmd("true").run("sc-bad");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.seccomp.syscalls[0].action"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/sc-bad"));
}

TEST(Seccomp, ExecGetsTheContainersFilter) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"syscalls", {{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_ERRNO"}}}}};
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "sx"}).code, 0);
    Result r = b.tarn({"exec", "sx", "sh", "-c", "grep ^Seccomp: /proc/self/status; mkdir /tmp/x 2>&1 || true"});
    EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out << r.err;
    EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << r.out;
}

namespace {

// The test agent (seccomp_listener.py) on a socket in a scratch dir; it answers every
// notification with -errno_ret and records the states it received.
class Listener {
public:
    Listener(const Bundle& b, int errno_ret) : out_(b.scratch("listener")), sock_(out_ + "/agent.sock") {
        sh("python3 " + std::string(TARN_SOURCE_DIR) + "/tests/integration/seccomp_listener.py " + sock_ + " " + out_ +
           " " + std::to_string(errno_ret) + " >" + out_ + "/log 2>&1 &");
        for (int i = 0; i < 200 && !path_exists(out_ + "/ready"); ++i) usleep(50000);
    }
    ~Listener() { write_text(out_ + "/stop", ""); }
    const std::string& socket() const { return sock_; }
    json state(int n) const {
        std::string p = out_ + "/state-" + std::to_string(n) + ".json";
        for (int i = 0; i < 50 && !path_exists(p); ++i) usleep(50000);
        std::string text = read_text(p);
        return text.empty() ? json() : json::parse(text);
    }

private:
    std::string out_, sock_;
};

json notify_profile(const std::string& listener) {
    return {{"defaultAction", "SCMP_ACT_ALLOW"},
            {"listenerPath", listener},
            {"listenerMetadata", "agent-config=strict"},
            {"syscalls", {{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_NOTIFY"}}}}};
}

}  // namespace

// config-linux.md "listenerPath": the agent gets the containerProcessState and the
// notify fd, and its answer is what the workload's syscall returns.
TEST(SeccompNotify, AgentGetsStateAndFdAndAnswersTheSyscall) {
    REQUIRE_ROOT();
    Bundle b;
    Listener agent(b, 28);  // ENOSPC
    ASSERT_TRUE(path_exists(agent.socket()));
    b.config["linux"]["seccomp"] = notify_profile(agent.socket());
    b.config["annotations"] = {{"org.example.team", "blue"}};
    Result r = b.cmd("grep ^Seccomp: /proc/self/status; mkdir /newdir 2>&1; echo done").run("notif");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out;
    // The root is read-only: the kernel would say EROFS; the agent said ENOSPC.
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("done"), std::string::npos);
    json got = agent.state(1);
    ASSERT_FALSE(got.is_null());
    EXPECT_EQ(got["nfds"], 1);
    const json& s = got["state"];
    EXPECT_EQ(s["fds"], json::array({"seccompFd"}));
    EXPECT_EQ(s["metadata"], "agent-config=strict");
    EXPECT_GT(s["pid"].get<int>(), 0);
    EXPECT_EQ(s["state"]["id"], "notif");
    EXPECT_EQ(s["state"]["status"], "creating");
    EXPECT_EQ(s["state"]["pid"], s["pid"]);
    EXPECT_EQ(s["state"]["bundle"], b.dir());
    EXPECT_EQ(s["state"]["annotations"]["org.example.team"], "blue");
    EXPECT_FALSE(s["ociVersion"].get<std::string>().empty());
}

TEST(SeccompNotify, ExecProcessesAreReportedToo) {
    REQUIRE_ROOT();
    Bundle b;
    Listener agent(b, 28);
    b.config["linux"]["seccomp"] = notify_profile(agent.socket());
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"create", "--bundle", b.dir(), "notx"}).code, 0);
    ASSERT_EQ(b.tarn({"start", "notx"}).code, 0);
    json init = agent.state(1);
    Result r = b.tarn({"exec", "notx", "sh", "-c", "mkdir /d 2>&1; true"});
    json ex = agent.state(2);
    b.tarn({"delete", "-f", "notx"});
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out << r.err;
    ASSERT_FALSE(init.is_null());
    ASSERT_FALSE(ex.is_null());
    EXPECT_EQ(ex["state"]["state"]["status"], "running");
    EXPECT_EQ(ex["state"]["state"]["pid"], init["state"]["pid"]);
    EXPECT_NE(ex["state"]["pid"], init["state"]["pid"]) << "the exec'd process has its own pid";
}

TEST(SeccompNotify, UnreachableListenerFailsCreateNamingTheField) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["seccomp"] = notify_profile(b.scratch("nobody") + "/missing.sock");
    Result r = b.cmd("true").run("notif-missing");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.seccomp.listenerPath"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/notif-missing"));
}

TEST(SeccompNotify, NotifyAsDefaultActionIsRefused) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_NOTIFY"}, {"listenerPath", "/run/x.sock"}};
    Result r = b.cmd("true").run("notif-default");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.seccomp.defaultAction"), std::string::npos) << r.err;
}

// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19): with it the filter is loaded by
// tarn itself (libseccomp 2.5 cannot set it); the agent still gets the fd and answers.
TEST(SeccompNotify, WaitKillableRecvFlagLoadsAndNotifies) {
    REQUIRE_ROOT();
    Bundle b;
    Listener agent(b, 28);
    b.config["linux"]["seccomp"] = notify_profile(agent.socket());
    b.config["linux"]["seccomp"]["flags"] = {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_LOG"};
    Result r = b.cmd("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /newdir 2>&1; echo done").run("wk");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
    EXPECT_FALSE(agent.state(1).is_null());
}

// Without a notify rule the flag has nothing to act on and is dropped, not an error.
TEST(SeccompNotify, WaitKillableRecvWithoutNotifyIsHarmless) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"flags", {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}},
                                    {"syscalls", {{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_ERRNO"}}}}};
    Result r = b.cmd("mkdir /newdir 2>&1; true").run("wk2");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Operation not permitted"), std::string::npos) << r.out;
}
