// runtime.md "start": the workload not starting is an error of `start`, not of the
// container's stderr. Whatever fails in the init after `start` released it (the
// executable gone or not executable, the cwd removed, the init killed before execve)
// makes `start` exit non-zero with the init's own words in the log containerd reads,
// and leaves the container stopped.
#include <sys/stat.h>
#include <unistd.h>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

// The workload's executable lives in a host directory bound at /opt, so the test can
// take it away between create and start.
std::string bind_opt(Bundle& b) {
    std::string opt = b.scratch("opt");
    ::mkdir((opt + "/work").c_str(), 0755);
    write_text(opt + "/prog", "#!/bin/sh\necho ran\n", 0755);
    b.config["mounts"].push_back({{"destination", "/opt"}, {"type", "bind"}, {"source", opt}, {"options", {"rbind"}}});
    b.args({"/opt/prog"});
    return opt;
}

// `start` with a JSON log, as containerd's shim runs it: the last "level":"error" line
// is what its users see.
std::string start_error(const Bundle& b, const std::string& id, Result& r) {
    std::string log = b.dir() + "/start-log.json";
    r = b.tarn({"--log", log, "--log-format", "json", "start", id});
    std::string text = read_text(log);
    std::string last;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (!line.empty()) {
            json j = json::parse(line);
            if (j["level"] == "error") last = j["msg"];
        }
        if (nl == std::string::npos) break;
        pos = nl + 1;
    }
    return last;
}

void expect_stopped(const Bundle& b, const std::string& id) {
    Result st = b.tarn({"state", id});
    ASSERT_EQ(st.code, 0) << st.err;
    EXPECT_EQ(json::parse(st.out)["status"], "stopped");
    Result d = b.tarn({"delete", id});
    EXPECT_EQ(d.code, 0) << "a stopped container is deleted without --force: " << d.err;
}

}  // namespace

TEST(StartFailure, ExecutableRemovedAfterCreate) {
    REQUIRE_ROOT();
    Bundle b;
    std::string opt = bind_opt(b);
    ASSERT_EQ(b.create("sf1").code, 0);
    ::unlink((opt + "/prog").c_str());
    Result r;
    std::string msg = start_error(b, "sf1", r);
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(msg, "start sf1: exec \"/opt/prog\": no such file or directory") << r.err;
    EXPECT_NE(r.err.find("start sf1: exec \"/opt/prog\": no such file or directory"), std::string::npos) << r.err;
    expect_stopped(b, "sf1");
}

TEST(StartFailure, ExecutableNoLongerExecutable) {
    REQUIRE_ROOT();
    Bundle b;
    std::string opt = bind_opt(b);
    // Not root: root may execute a file with any x bit, and this one will have none.
    b.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    ASSERT_EQ(b.create("sf2").code, 0);
    ::chmod((opt + "/prog").c_str(), 0644);
    Result r;
    std::string msg = start_error(b, "sf2", r);
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(msg, "start sf2: exec \"/opt/prog\": permission denied") << r.err;
    expect_stopped(b, "sf2");
}

TEST(StartFailure, CwdRemovedAfterCreate) {
    REQUIRE_ROOT();
    Bundle b;
    std::string opt = bind_opt(b);
    b.config["process"]["cwd"] = "/opt/work";
    ASSERT_EQ(b.create("sf3").code, 0);
    ::rmdir((opt + "/work").c_str());
    Result r;
    std::string msg = start_error(b, "sf3", r);
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(msg, "start sf3: cwd /opt/work: removed since create: no such file or directory") << r.err;
    expect_stopped(b, "sf3");
}

// A profile that kills the process on capset, with noNewPrivileges false and a user
// without CAP_SYS_ADMIN: the init dies of SIGSYS right after loading the filter, with
// no chance to say so. Its end of the report fifo closing without the word that only
// execve is left is enough for `start` to know.
TEST(StartFailure, InitKilledBeforeExecve) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["noNewPrivileges"] = false;
    b.config["process"]["user"] = {{"uid", 1000}, {"gid", 1000}};
    b.config["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                                    {"syscalls", {{{"names", {"capset"}}, {"action", "SCMP_ACT_KILL_PROCESS"}}}}};
    b.cmd("echo never");
    ASSERT_EQ(b.create("sf4").code, 0);
    Result r;
    std::string msg = start_error(b, "sf4", r);
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(msg, "start sf4: container init exited before the workload started") << r.err;
    expect_stopped(b, "sf4");
}

// The other side: a workload that exec'd and exited at once is a successful start.
TEST(StartFailure, AWorkloadThatExitsAtOnceStartedFine) {
    REQUIRE_ROOT();
    Bundle b;
    b.args({"/bin/true"});
    for (int i = 0; i < 5; ++i) {
        std::string id = "sf5-" + std::to_string(i);
        ASSERT_EQ(b.create(id).code, 0);
        Result r = b.tarn({"start", id});
        EXPECT_EQ(r.code, 0) << r.err;
        b.tarn({"delete", "--force", id});
    }
}
