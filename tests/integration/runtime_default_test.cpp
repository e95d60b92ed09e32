// A Kubernetes pod with `seccompProfile: RuntimeDefault`: the profile comes with
// `noNewPrivileges: false`, a non-root or root user, and capabilities without
// CAP_SYS_ADMIN. The kernel loads a filter without no_new_privs only for a process
// with CAP_SYS_ADMIN; the workload must run filtered all the same, with exactly the
// user and capabilities the config asks for, through run, create/start and exec.
#include <sys/stat.h>

#include "harness.hpp"
#include "profiles.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

const char* kReport = "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/self/status; id -u";

void runtime_default(Bundle& b, unsigned uid, const std::vector<std::string>& caps,
                     const std::vector<std::string>& leave_out = {}) {
    b.config["process"]["noNewPrivileges"] = false;
    b.config["process"]["user"] = {{"uid", uid}, {"gid", uid}};
    set_capabilities(b.config["process"], caps);
    b.config["linux"]["seccomp"] = runtime_default_profile(leave_out);
}

void expect_filtered(const std::string& out, unsigned uid, const std::string& cap_eff) {
    EXPECT_NE(out.find("Seccomp:\t2"), std::string::npos) << out;
    EXPECT_NE(out.find("NoNewPrivs:\t0"), std::string::npos) << out;
    EXPECT_NE(out.find("CapEff:\t" + cap_eff), std::string::npos) << out;
    EXPECT_NE(out.find("CapPrm:\t" + cap_eff), std::string::npos) << "CAP_SYS_ADMIN held for the load stayed: " << out;
    EXPECT_NE(out.find("\n" + std::to_string(uid) + "\n"), std::string::npos) << out;
}

// The Docker default set as a capability mask.
const std::string kDockerCaps = "00000000a80425fb";
const std::string kNoCaps = "0000000000000000";

}  // namespace

TEST(RuntimeDefault, RunAsUid1000WithTheDefaultCapabilities) {
    REQUIRE_ROOT();
    Bundle b;
    runtime_default(b, 1000, docker_default_caps());
    Result r = b.cmd(kReport).run();
    ASSERT_EQ(r.code, 0) << r.err;
    // A non-root user keeps no capability across execve without ambient ones.
    expect_filtered(r.out, 1000, kNoCaps);
}

TEST(RuntimeDefault, RunAsRootWithTheDefaultCapabilities) {
    REQUIRE_ROOT();
    Bundle b;
    runtime_default(b, 0, docker_default_caps());
    Result r = b.cmd(kReport).run();
    ASSERT_EQ(r.code, 0) << r.err;
    expect_filtered(r.out, 0, kDockerCaps);
}

TEST(RuntimeDefault, RunAsRootWithNoCapabilities) {
    REQUIRE_ROOT();
    Bundle b;
    runtime_default(b, 0, {});
    Result r = b.cmd(kReport).run();
    ASSERT_EQ(r.code, 0) << r.err;
    expect_filtered(r.out, 0, kNoCaps);
}

// The runtime's own syscalls after the load are only capset and execve: a profile
// that refuses the user switch and the cwd checks still starts, filtered.
TEST(RuntimeDefault, AProfileRefusingSetuidChdirAndGetcwdStillStarts) {
    REQUIRE_ROOT();
    Bundle b;
    runtime_default(b, 1000, docker_default_caps(),
                    {"setuid", "setgid", "setresuid", "setresgid", "setgroups", "chdir", "getcwd", "close_range"});
    b.config["process"]["cwd"] = "/tmp";
    Result r = b.cmd(std::string(kReport) + "; unshare -U true 2>/dev/null || echo userns-refused").run();
    ASSERT_EQ(r.code, 0) << r.err;
    expect_filtered(r.out, 1000, kNoCaps);
    EXPECT_NE(r.out.find("userns-refused"), std::string::npos) << "unshare is not in the profile: " << r.out;
}

TEST(RuntimeDefault, CreateThenStartAsUid1000) {
    REQUIRE_ROOT();
    Bundle b;
    std::string out = b.scratch("out");
    ::chmod(out.c_str(), 0777);
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    runtime_default(b, 1000, docker_default_caps());
    b.cmd(std::string("(") + kReport + ") > /out/report.tmp; mv /out/report.tmp /out/report; sleep infinity");
    Result c = b.create("rd");
    ASSERT_EQ(c.code, 0) << c.err;
    Result s = b.tarn({"start", "rd"});
    EXPECT_EQ(s.code, 0) << s.err;
    for (int i = 0; i < 200 && !path_exists(out + "/report"); ++i) usleep(20000);
    expect_filtered(read_text(out + "/report"), 1000, kNoCaps);
    EXPECT_EQ(json::parse(b.tarn({"state", "rd"}).out)["status"], "running");
    b.tarn({"delete", "--force", "rd"});
}

TEST(RuntimeDefault, ExecAsUid1000GetsTheSameFilter) {
    REQUIRE_ROOT();
    Bundle b;
    runtime_default(b, 1000, docker_default_caps());
    b.cmd("sleep infinity");
    Result r = b.tarn({"run", "-d", "--bundle", b.dir(), "rde"});
    ASSERT_EQ(r.code, 0) << r.err;
    Result e = b.tarn({"exec", "rde", "sh", "-c", kReport});
    EXPECT_EQ(e.code, 0) << e.err;
    expect_filtered(e.out, 1000, kNoCaps);
    // And as root with the default capabilities (`exec --user 0`).
    e = b.tarn({"exec", "--user", "0:0", "rde", "sh", "-c", kReport});
    EXPECT_EQ(e.code, 0) << e.err;
    expect_filtered(e.out, 0, kDockerCaps);
    b.tarn({"delete", "--force", "rde"});
}
