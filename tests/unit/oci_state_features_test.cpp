// The state document (runtime.md "State") and the features document (features.md,
// features-linux.md): member names and presence rules.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"

namespace tarn::oci {
namespace {

using nlohmann::json;

TEST(OciState, StatusNames) {
    EXPECT_EQ(to_string(Status::creating), "creating");
    EXPECT_EQ(to_string(Status::created), "created");
    EXPECT_EQ(to_string(Status::running), "running");
    EXPECT_EQ(to_string(Status::stopped), "stopped");
    EXPECT_EQ(to_string(Status::paused), "paused");
}

TEST(OciState, RunningContainer) {
    State s;
    s.id = "c1";
    s.status = Status::running;
    s.pid = 4242;
    s.bundle = "/run/bundles/c1";
    s.annotations = {{"org.example", "x"}};
    s.rootfs = "/run/bundles/c1/rootfs";
    s.created = "2024-05-01T10:00:00.123456789Z";
    s.owner = "root";
    EXPECT_EQ(to_json(s), json::parse(R"({
      "ociVersion": "1.3.0", "id": "c1", "status": "running", "pid": 4242, "bundle": "/run/bundles/c1",
      "annotations": {"org.example": "x"}, "rootfs": "/run/bundles/c1/rootfs",
      "created": "2024-05-01T10:00:00.123456789Z", "owner": "root"
    })"));
    EXPECT_EQ(json::parse(to_json_text(s)), to_json(s));
}

// runtime.md: pid is REQUIRED only when created or running; annotations MAY be absent.
TEST(OciState, StoppedContainerHasNoPid) {
    State s;
    s.id = "c2";
    s.status = Status::stopped;
    s.bundle = "/b";
    json j = to_json(s);
    EXPECT_FALSE(j.contains("pid"));
    EXPECT_FALSE(j.contains("annotations"));
    EXPECT_EQ(j["status"], "stopped");
    EXPECT_EQ(j["ociVersion"], "1.3.0");
}

TEST(OciFeatures, DocumentShape) {
    Features f;
    f.hooks = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};
    f.mount_options = {"bind", "rbind", "ro"};
    f.namespaces = {"cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"};
    f.capabilities = {"CAP_CHOWN", "CAP_KILL"};
    f.cgroup_v2 = f.cgroup_systemd = true;
    f.seccomp_enabled = true;
    f.seccomp_actions = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"};
    f.seccomp_operators = {"SCMP_CMP_EQ"};
    f.seccomp_archs = {"SCMP_ARCH_X86_64"};
    f.seccomp_known_flags = {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"};
    f.seccomp_supported_flags = {"SECCOMP_FILTER_FLAG_LOG"};
    f.mount_idmap = true;
    f.memory_policy = true;
    f.memory_policy_modes = {"MPOL_DEFAULT", "MPOL_BIND"};
    f.memory_policy_flags = {"MPOL_F_STATIC_NODES"};
    f.annotations = {{"org.opencontainers.runtime.name", "tarn"}};
    f.potentially_unsafe_annotations = {"org.criu.config"};

    EXPECT_EQ(to_json(f), json::parse(R"({
      "ociVersionMin": "1.0.0",
      "ociVersionMax": "1.3.0",
      "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
      "mountOptions": ["bind", "rbind", "ro"],
      "linux": {
        "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
        "capabilities": ["CAP_CHOWN", "CAP_KILL"],
        "cgroup": {"v1": false, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
        "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"], "operators": ["SCMP_CMP_EQ"],
                    "archs": ["SCMP_ARCH_X86_64"],
                    "knownFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
                    "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG"]},
        "apparmor": {"enabled": false},
        "selinux": {"enabled": false},
        "intelRdt": {"enabled": false},
        "mountExtensions": {"idmap": {"enabled": true}},
        "netDevices": {"enabled": false},
        "memoryPolicy": {"modes": ["MPOL_DEFAULT", "MPOL_BIND"], "flags": ["MPOL_F_STATIC_NODES"]}
      },
      "annotations": {"org.opencontainers.runtime.name": "tarn"},
      "potentiallyUnsafeConfigAnnotations": ["org.criu.config"]
    })"));
}

// features.md: ociVersionMin and ociVersionMax are the only REQUIRED members; an empty
// list is written as such, because the spec tells "none" ([]) from "unknown" (absent).
TEST(OciFeatures, EmptyFeatures) {
    json j = to_json(Features{});
    EXPECT_EQ(j["ociVersionMin"], "1.0.0");
    EXPECT_EQ(j["ociVersionMax"], std::string(kSpecVersion));
    EXPECT_EQ(j["hooks"], json::array());
    EXPECT_FALSE(j.contains("annotations"));
    EXPECT_EQ(j["linux"]["memoryPolicy"], json::parse(R"({"modes": [], "flags": []})"));
}

TEST(OciFeatures, MemoryPolicyListsOnlyWhenSupported) {
    Features f;
    f.memory_policy_modes = {"MPOL_BIND"};
    EXPECT_EQ(to_json(f)["linux"]["memoryPolicy"]["modes"], json::array());
}

}  // namespace
}  // namespace tarn::oci
