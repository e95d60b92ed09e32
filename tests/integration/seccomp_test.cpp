// config-linux.md "Seccomp": the filter is in force in the workload, each action
// does what it says, argument comparisons narrow a rule, and the filter is loaded
// late enough that a profile blocking the runtime's own last syscalls still starts.
#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Seccomp, ErrnoActionBlocksTheNamedSyscalls) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["root"]["readonly"] = false;
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
    b.config["root"]["readonly"] = false;
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
