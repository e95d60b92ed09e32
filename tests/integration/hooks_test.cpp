// config.md "POSIX-platform Hooks" and runtime.md "Lifecycle": each hook runs at its
// point, with the state on stdin; failures follow the spec.
#include <unistd.h>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

static json hook(const std::string& script, const std::string& name) {
    return {{"path", "/bin/sh"}, {"args", {"sh", "-c", script, name}}};
}

TEST(Hooks, RunInLifecycleOrderWithStateOnStdin) {
    REQUIRE_ROOT();
    Bundle b;
    std::string log = b.dir() + "/hooks.log";
    // Host-side hooks append their name and the state's status; container-side ones
    // (createContainer, startContainer) run in the container's namespaces.
    std::string host = "read -r s; echo \"$0 $(echo \"$s\" | grep -o '\"status\":\"[a-z]*\"')\" >> " + log;
    std::string in_ctr = "echo \"$0 $(hostname)\" >> " + log;
    b.config["hostname"] = "hooked";
    b.config["hooks"] = {
        {"prestart", {hook(host, "prestart")}},
        {"createRuntime", {hook(host, "createRuntime")}},
        {"createContainer", {hook(in_ctr, "createContainer")}},
        {"poststart", {hook(host, "poststart")}},
        {"poststop", {hook(host, "poststop")}},
    };
    b.cmd("true");
    ASSERT_EQ(b.create("h1").code, 0);
    ASSERT_EQ(b.tarn({"start", "h1"}).code, 0);
    usleep(200000);
    ASSERT_EQ(b.tarn({"delete", "h1"}).code, 0);
    EXPECT_EQ(read_text(log),
              "prestart \"status\":\"creating\"\n"
              "createRuntime \"status\":\"creating\"\n"
              "createContainer hooked\n"
              "poststart \"status\":\"running\"\n"
              "poststop \"status\":\"stopped\"\n");
}

TEST(Hooks, StartContainerRunsInsideBeforeTheWorkload) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hooks"] = {{"startContainer", {{{"path", "/bin/sh"}, {"args", {"sh", "-c", "echo start-hook $(hostname)"}}}}}};
    b.config["hostname"] = "inside";
    Result r = b.cmd("echo workload").run();
    EXPECT_EQ(r.out, "start-hook inside\nworkload\n") << r.err;
}

TEST(Hooks, FailingCreateRuntimeHookFailsCreateAndLeavesNothing) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hooks"] = {{"createRuntime", {hook("exit 9", "bad")}}};
    b.cmd("sleep infinity");
    Result r = b.create("hf");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("create hf: createRuntime hook /bin/sh: exit status 9"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/hf"));
    EXPECT_TRUE(processes_matching(b.dir()).empty()) << "the half-made init was left running";
}

TEST(Hooks, TimeoutKillsTheHook) {
    REQUIRE_ROOT();
    Bundle b;
    json h = hook("sleep 10", "slow");
    h["timeout"] = 1;
    b.config["hooks"] = {{"prestart", {h}}};
    Result r = b.cmd("true").run();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("prestart hook /bin/sh: timed out after 1s"), std::string::npos) << r.err;
}

// runtime.md "Lifecycle" 9: a failing poststart hook is an error and the container
// is stopped (runc kills it and keeps its state for `delete`).
TEST(Hooks, FailingPoststartFailsStartAndStopsTheContainer) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hooks"] = {{"poststart", {hook("exit 1", "fail")}}};
    b.cmd("sleep infinity");
    ASSERT_EQ(b.create("hp").code, 0);
    Result r = b.tarn({"start", "hp"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("start hp: poststart hook /bin/sh: exit status 1"), std::string::npos) << r.err;
    Result st = b.tarn({"state", "hp"});
    ASSERT_EQ(st.code, 0) << st.err;
    EXPECT_EQ(json::parse(st.out)["status"], "stopped");
    EXPECT_TRUE(processes_matching(b.dir()).empty()) << "the workload was left running";
    EXPECT_EQ(b.tarn({"delete", "hp"}).code, 0);
}

TEST(Hooks, FailingPoststartFailsRun) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hooks"] = {{"poststart", {hook("exit 1", "fail")}}};
    Result r = b.cmd("sleep infinity").run("hr", {"--detach"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("run hr: poststart hook /bin/sh: exit status 1"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/hr"));
}

// Not what runtime.md says ("MUST generate an error" for delete of a container that is
// not stopped), but what runc and crun do and containerd's shim relies on: a task
// created and never started is deleted with a plain `delete`.
TEST(Hooks, DeleteOfACreatedContainerNeedsNoForce) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hooks"] = {{"poststop", {hook("true", "poststop")}}};
    ASSERT_EQ(b.cmd("sleep infinity").create("hd").code, 0);
    Result d = b.tarn({"delete", "hd"});
    EXPECT_EQ(d.code, 0) << d.err;
    EXPECT_FALSE(path_exists(b.root() + "/hd"));
}
