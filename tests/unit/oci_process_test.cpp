// process.json (`exec --process`) and a bare linux.resources object (`update --resources`):
// the same rules as inside config.json, with paths from the top of their own document.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"
#include "error_of.hpp"

namespace tarn::oci {
namespace {

using nlohmann::json;

using test::error_of;

TEST(OciProcess, ParsesAProcessDocument) {
    Process p = parse_process(R"({
      "terminal": false, "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
      "args": ["/bin/ps", "aux"], "env": ["PATH=/bin"], "cwd": "/tmp",
      "capabilities": {"bounding": ["CAP_KILL"]}, "noNewPrivileges": true,
      "rlimits": [{"type": "RLIMIT_NPROC", "hard": 10, "soft": 5}],
      "apparmorProfile": "p", "selinuxLabel": "l", "oomScoreAdj": 0
    })");
    EXPECT_EQ(p.user.uid, 1000u);
    EXPECT_EQ(p.user.additional_gids, (std::vector<uint32_t>{10}));
    EXPECT_EQ(p.args, (std::vector<std::string>{"/bin/ps", "aux"}));
    EXPECT_EQ(p.cwd, "/tmp");
    EXPECT_TRUE(p.no_new_privileges);
    EXPECT_EQ(p.oom_score_adj, 0);  // present zero stays distinct from absent
    EXPECT_EQ(p.rlimits.at(0).soft, 5u);
}

TEST(OciProcess, RoundTrips) {
    Process p = parse_process(R"({"terminal": true, "consoleSize": {"height": 40, "width": 120},
      "user": {"uid": 1, "gid": 2, "umask": 63}, "args": ["sh"], "cwd": "/",
      "scheduler": {"policy": "SCHED_BATCH", "nice": 5}, "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 0},
      "execCPUAffinity": {"initial": "0"}, "capabilities": {}})");
    EXPECT_EQ(parse_process(to_json(p).dump()), p);
    EXPECT_EQ(to_json(p)["user"], json::parse(R"({"uid": 1, "gid": 2, "umask": 63})"));
    EXPECT_EQ(to_json(p)["capabilities"], json::object());
}

// Paths start at the top of process.json, not at "process.".
TEST(OciProcess, ErrorsNameTheProcessDocument) {
    EXPECT_EQ(error_of([] { parse_process(R"({"args": ["sh"]})"); }), "process.json: cwd: required");
    EXPECT_EQ(error_of([] { parse_process(R"({"args": [], "cwd": "/"})"); }),
              "process.json: args: must contain at least one argument");
    EXPECT_EQ(error_of([] { parse_process(R"({"args": ["sh"], "cwd": "/", "user": {"uid": -5}})"); }),
              "process.json: user.uid: expected non-negative integer, got number -5");
    EXPECT_EQ(error_of([] { parse_process(R"({"args": ["sh"], "cwd": "relative"})", "/tmp/p.json"); }),
              R"(/tmp/p.json: cwd: must be an absolute path, got "relative")");
    EXPECT_EQ(error_of([] { parse_process("{\"args\": [\"sh\"],\n \"cwd\": }"); }),
              "process.json: line 2, column 9: unexpected '}'; expected '[', '{', or a literal");
    EXPECT_EQ(error_of([] { parse_process("[]"); }), "process.json: expected object, got array");
}

TEST(OciResources, ParsesABareResourcesObject) {
    Resources r = parse_resources(
        R"({"memory": {"limit": 1048576, "swap": -1}, "cpu": {"quota": 20000, "period": 100000},
                                      "pids": {"limit": 64}, "unified": {"memory.high": "max"}})");
    EXPECT_EQ(r.memory->limit, 1048576);
    EXPECT_EQ(r.memory->swap, -1);
    EXPECT_EQ(r.cpu->quota, 20000);
    EXPECT_EQ(r.pids->limit, 64);
    EXPECT_EQ(r.unified.at("memory.high"), "max");
    EXPECT_FALSE(r.block_io);
}

TEST(OciResources, ErrorsNameTheResourcesDocument) {
    EXPECT_EQ(error_of([] { parse_resources(R"({"memory": {"limit": "1G"}})"); }),
              R"(resources: memory.limit: expected integer, got string "1G")");
    EXPECT_EQ(error_of([] { parse_resources(R"({"devices": [{"allow": true, "access": "x"}]})"); }),
              R"(resources: devices[0].access: must be a combination of r, w and m, got "x")");
    EXPECT_EQ(error_of([] { parse_resources(R"({"unified": {"a/b": "1"}})", "-"); }),
              R"(-: unified["a/b"]: must be a cgroup file name, got "a/b")");
}

}  // namespace
}  // namespace tarn::oci
