// The spec's rules beyond JSON types, one test per clause of config.md / config-linux.md.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"

namespace tarn::oci {
namespace {

using nlohmann::json;

// A minimal valid config with `patch` merged in (RFC 7396: objects merge, arrays are
// replaced, null removes a member); returns the error parse_config reports, if any.
std::string error_with(std::string_view patch) {
    json doc = json::parse(R"({"ociVersion": "1.3.0", "root": {"path": "rootfs"},
                               "process": {"args": ["sh"], "cwd": "/"}})");
    doc.merge_patch(json::parse(patch));
    try {
        parse_config(doc.dump());
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

constexpr const char* kOk = "(no error)";

// validate() alone names the JSON path without a file name; parse_config adds the file.
TEST(OciValidate, ValidateNamesThePathOnly) {
    Config c;
    c.oci_version = "1.3.0";
    c.process.emplace().args = {"sh"};
    try {
        validate(c);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "process.cwd: required");
    }
    c.process->cwd = "/";
    EXPECT_NO_THROW(validate(c));
    c.oci_version.clear();
    EXPECT_THROW(validate(c), Error);
}

// ---- process (config.md "Process") ----

TEST(OciValidate, CwdMustBeAbsolute) {
    EXPECT_EQ(error_with(R"({"process": {"cwd": "work"}})"),
              R"(config.json: process.cwd: must be an absolute path, got "work")");
}

TEST(OciValidate, ArgsRequiredUnlessCommandLine) {
    EXPECT_EQ(error_with(R"({"process": {"args": []}})"),
              "config.json: process.args: must contain at least one argument");
    EXPECT_EQ(error_with(R"({"process": {"args": null, "commandLine": "cmd /c dir"}})"), kOk);
}

TEST(OciValidate, RlimitTypesAreKnownAndUnique) {
    EXPECT_EQ(error_with(R"({"process": {"rlimits": [{"type": "RLIMIT_FOO", "hard": 1, "soft": 1}]}})"),
              R"(config.json: process.rlimits[0].type: unknown rlimit "RLIMIT_FOO")");
    EXPECT_EQ(error_with(R"({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1},
                                                     {"type": "RLIMIT_NOFILE", "hard": 2, "soft": 2}]}})"),
              R"(config.json: process.rlimits[1].type: duplicate rlimit "RLIMIT_NOFILE")");
}

TEST(OciValidate, RlimitSoftNotAboveHard) {
    EXPECT_EQ(
        error_with(R"({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 2048}]}})"),
        "config.json: process.rlimits[0].soft: 2048 exceeds the hard limit 1024");
}

TEST(OciValidate, CapabilityNames) {
    EXPECT_EQ(error_with(R"({"process": {"capabilities": {"ambient": ["CAP_KILL", "kill"]}}})"),
              R"(config.json: process.capabilities.ambient[1]: invalid capability "kill")");
}

TEST(OciValidate, SchedulerPolicyAndFlags) {
    EXPECT_EQ(
        error_with(R"({"process": {"scheduler": {"policy": "SCHED_FAST"}}})"),
        R"(config.json: process.scheduler.policy: unknown scheduler policy "SCHED_FAST" (one of SCHED_OTHER, )"
        R"(SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_ISO, SCHED_IDLE, SCHED_DEADLINE))");
    EXPECT_EQ(
        error_with(R"({"process": {"scheduler": {"policy": "SCHED_RR", "flags": ["SCHED_FLAG_NOPE"]}}})")
            .rfind("config.json: process.scheduler.flags[0]: unknown scheduler flag", 0),
        0u);
}

TEST(OciValidate, IoPriorityClassAndLevel) {
    EXPECT_EQ(error_with(R"({"process": {"ioPriority": {"class": "IOPRIO_CLASS_NONE"}}})"),
              R"(config.json: process.ioPriority.class: unknown I/O priority class "IOPRIO_CLASS_NONE" )"
              R"((one of IOPRIO_CLASS_RT, IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE))");
    EXPECT_EQ(error_with(R"({"process": {"ioPriority": {"class": "IOPRIO_CLASS_RT", "priority": 8}}})"),
              "config.json: process.ioPriority.priority: must be between 0 and 7, got 8");
    EXPECT_EQ(error_with(R"({"process": {"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 7}}})"),
              kOk);
}

TEST(OciValidate, OomScoreAdjWithinKernelRange) {
    EXPECT_EQ(error_with(R"({"process": {"oomScoreAdj": 1001}})"),
              "config.json: process.oomScoreAdj: must be between -1000 and 1000, got 1001");
}

TEST(OciValidate, ExecCpuAffinityIsACpuList) {
    EXPECT_EQ(error_with(R"({"process": {"execCPUAffinity": {"initial": "0-3, 7"}}})"), kOk);
    EXPECT_EQ(error_with(R"({"process": {"execCPUAffinity": {"final": "all"}}})"),
              R"(config.json: process.execCPUAffinity.final: invalid CPU list "all")");
}

// ---- root, mounts, hooks, annotations (config.md) ----

TEST(OciValidate, RootPathRequired) {
    EXPECT_EQ(error_with(R"({"root": {"path": ""}})"), "config.json: root.path: required");
}

TEST(OciValidate, MountDestinationsAreAbsolute) {
    EXPECT_EQ(error_with(R"({"mounts": [{"destination": "/proc"}, {"destination": "dev"}]})"),
              R"(config.json: mounts[1].destination: must be an absolute path, got "dev")");
}

TEST(OciValidate, IdMappedMountsNeedASize) {
    EXPECT_EQ(
        error_with(
            R"({"mounts": [{"destination": "/d", "gidMappings": [{"containerID": 0, "hostID": 1, "size": 0}]}]})"),
        "config.json: mounts[0].gidMappings[0].size: must be greater than zero");
}

// config.md "Mounts": uidMappings and gidMappings come together, on bind mounts only;
// idmap/ridmap without them borrow the container's user namespace mapping.
TEST(OciValidate, IdMappedMountsNeedBothMappings) {
    EXPECT_EQ(error_with(R"({"mounts": [{"destination": "/d", "type": "bind", "source": "/s",
                                          "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}]})"),
              "config.json: mounts[0].gidMappings: required with uidMappings");
    EXPECT_EQ(error_with(R"({"mounts": [{"destination": "/d", "type": "bind", "source": "/s",
                                          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}]})"),
              "config.json: mounts[0].uidMappings: required with gidMappings");
}

TEST(OciValidate, OnlyBindMountsAreIdMapped) {
    EXPECT_EQ(
        error_with(R"({"mounts": [{"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                                          "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                                          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}]})"),
        R"(config.json: mounts[0].uidMappings: only bind mounts can be idmapped (type "tmpfs" without bind or rbind))");
    EXPECT_EQ(
        error_with(
            R"({"mounts": [{"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["ridmap"]}],
                             "linux": {"namespaces": [{"type": "user"}],
                                       "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                                       "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}})"),
        R"(config.json: mounts[0].options: only bind mounts can be idmapped (type "tmpfs" without bind or rbind))");
}

TEST(OciValidate, IdmapOptionWithoutMappingsNeedsAUserNamespace) {
    EXPECT_EQ(
        error_with(
            R"({"mounts": [{"destination": "/d", "type": "none", "source": "/s", "options": ["rbind", "ridmap"]}]})"),
        "config.json: mounts[0].options: idmap needs uidMappings and gidMappings, or a user namespace for "
        "the container");
    EXPECT_EQ(
        error_with(
            R"({"mounts": [{"destination": "/d", "type": "none", "source": "/s", "options": ["bind", "idmap"]}],
                             "linux": {"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}]}})"),
        "(no error)");
}

TEST(OciValidate, IdMappingsMayNotOverlapOrOverflow) {
    EXPECT_EQ(error_with(R"({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10},
                                                       {"containerID": 20, "hostID": 1005, "size": 1}]}})"),
              "config.json: linux.uidMappings[1]: hostID range overlaps entry 0");
    EXPECT_EQ(error_with(R"({"mounts": [{"destination": "/d", "type": "bind", "source": "/s",
                                          "uidMappings": [{"containerID": 4294967295, "hostID": 0, "size": 1}],
                                          "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}]}]})"),
              "config.json: mounts[0].uidMappings[0].size: containerID + size overflows 32 bits");
}

TEST(OciValidate, HookPathAbsoluteAndTimeoutPositive) {
    EXPECT_EQ(error_with(R"({"hooks": {"createRuntime": [{"path": "hook.sh"}]}})"),
              R"(config.json: hooks.createRuntime[0].path: must be an absolute path, got "hook.sh")");
    EXPECT_EQ(error_with(R"({"hooks": {"prestart": [{"path": "/bin/true", "timeout": 0}]}})"),
              "config.json: hooks.prestart[0].timeout: must be greater than zero, got 0");
}

TEST(OciValidate, AnnotationKeysNotEmpty) {
    EXPECT_EQ(error_with(R"({"annotations": {"": "x"}})"),
              "config.json: annotations: keys must not be empty");
}

// ---- linux (config-linux.md) ----

TEST(OciValidate, NamespaceTypesAreKnown) {
    EXPECT_EQ(error_with(R"({"linux": {"namespaces": [{"type": "net"}]}})"),
              R"(config.json: linux.namespaces[0].type: unknown namespace type "net" )"
              R"((one of pid, network, mount, ipc, uts, user, cgroup, time))");
}

TEST(OciValidate, DuplicateNamespacesAreAnError) {
    EXPECT_EQ(error_with(R"({"linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                                                      {"type": "pid", "path": "/proc/1/ns/pid"}]}})"),
              R"(config.json: linux.namespaces[3].type: duplicate namespace "pid")");
}

TEST(OciValidate, NamespacePathsAreAbsolute) {
    EXPECT_EQ(error_with(R"({"linux": {"namespaces": [{"type": "network", "path": "netns/a"}]}})"),
              R"(config.json: linux.namespaces[0].path: must be an absolute path, got "netns/a")");
}

TEST(OciValidate, UserNamespaceMappingsNeedASize) {
    EXPECT_EQ(error_with(R"({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 0}]}})"),
              "config.json: linux.uidMappings[0].size: must be greater than zero");
}

TEST(OciValidate, TimeOffsetsOnlyForMonotonicAndBoottime) {
    EXPECT_EQ(
        error_with(R"({"linux": {"timeOffsets": {"realtime": {"secs": 1}}}})"),
        R"(config.json: linux.timeOffsets.realtime: unknown clock "realtime" (one of monotonic, boottime))");
    EXPECT_EQ(
        error_with(R"({"linux": {"timeOffsets": {"boottime": {"nanosecs": 1000000000}}}})"),
        "config.json: linux.timeOffsets.boottime.nanosecs: must be less than 1000000000, got 1000000000");
}

TEST(OciValidate, DeviceTypeAndPath) {
    EXPECT_EQ(
        error_with(R"({"linux": {"devices": [{"type": "x", "path": "/dev/x", "major": 1, "minor": 1}]}})"),
        R"(config.json: linux.devices[0].type: unknown device type "x" (one of c, b, u, p))");
    EXPECT_EQ(error_with(R"({"linux": {"devices": [{"type": "b", "path": "sda", "major": 8, "minor": 0}]}})"),
              R"(config.json: linux.devices[0].path: must be an absolute path, got "sda")");
}

TEST(OciValidate, DeviceCgroupRules) {
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"devices": [{"allow": true, "type": "p"}]}}})"),
              R"(config.json: linux.resources.devices[0].type: unknown device type "p" (one of a, c, b))");
    EXPECT_EQ(
        error_with(R"({"linux": {"resources": {"devices": [{"allow": true, "access": "rwx"}]}}})"),
        R"(config.json: linux.resources.devices[0].access: must be a combination of r, w and m, got "rwx")");
}

TEST(OciValidate, SwapIsMemoryPlusSwap) {
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": 2000, "swap": 1000}}}})"),
              "config.json: linux.resources.memory.swap: 1000 is below memory.limit 2000 (swap limits "
              "memory+swap)");
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": 2000, "swap": -1}}}})"), kOk);
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": -1, "swap": 1000}}}})"), kOk);
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": 2000, "swap": 2000}}}})"), kOk);
}

TEST(OciValidate, WeightDeviceNeedsAWeight) {
    EXPECT_EQ(
        error_with(R"({"linux": {"resources": {"blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}}}})"),
        "config.json: linux.resources.blockIO.weightDevice[0]: needs weight or leafWeight");
}

TEST(OciValidate, UnifiedKeysCannotLeaveTheCgroup) {
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"unified": {"../../cgroup.procs": "0"}}}})"),
              R"(config.json: linux.resources.unified["../../cgroup.procs"]: must be a cgroup file name, )"
              R"(got "../../cgroup.procs")");
}

TEST(OciValidate, IntelRdtClosIdIsADirectoryName) {
    EXPECT_EQ(error_with(R"({"linux": {"intelRdt": {"closID": "../info"}}})"),
              R"(config.json: linux.intelRdt.closID: must be a plain directory name, got "../info")");
}

TEST(OciValidate, RootfsPropagationValues) {
    for (const char* p :
         {"shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable"})
        EXPECT_EQ(error_with(std::string(R"({"linux": {"rootfsPropagation": ")") + p + R"("}})"), kOk) << p;
    EXPECT_EQ(error_with(R"({"linux": {"rootfsPropagation": "recursive"}})")
                  .rfind(R"(config.json: linux.rootfsPropagation: unknown propagation "recursive")", 0),
              0u);
}

TEST(OciValidate, MaskedAndReadonlyPathsAreAbsolute) {
    EXPECT_EQ(error_with(R"({"linux": {"maskedPaths": ["/proc/kcore", "proc/keys"]}})"),
              R"(config.json: linux.maskedPaths[1]: must be an absolute path, got "proc/keys")");
    EXPECT_EQ(error_with(R"({"linux": {"readonlyPaths": [""]}})"),
              "config.json: linux.readonlyPaths[0]: required");
}

TEST(OciValidate, PersonalityDomain) {
    EXPECT_EQ(
        error_with(R"({"linux": {"personality": {"domain": "LINUX64"}}})"),
        R"(config.json: linux.personality.domain: unknown personality domain "LINUX64" (one of LINUX, LINUX32))");
}

TEST(OciValidate, MemoryPolicyModeAndFlags) {
    EXPECT_EQ(error_with(R"({"linux": {"memoryPolicy": {"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0-3",
                                                        "flags": ["MPOL_F_RELATIVE_NODES"]}}})"),
              kOk);
    EXPECT_EQ(
        error_with(R"({"linux": {"memoryPolicy": {"mode": "MPOL_RANDOM"}}})")
            .rfind(R"(config.json: linux.memoryPolicy.mode: unknown memory policy mode "MPOL_RANDOM")", 0),
        0u);
    EXPECT_EQ(
        error_with(R"({"linux": {"memoryPolicy": {"mode": "MPOL_BIND", "flags": ["MPOL_F_NODE"]}}})")
            .rfind(R"(config.json: linux.memoryPolicy.flags[0]: unknown memory policy flag "MPOL_F_NODE")",
                   0),
        0u);
}

TEST(OciValidate, NetDeviceNamesAreInterfaceNames) {
    EXPECT_EQ(error_with(R"({"linux": {"netDevices": {"eth0": {"name": "ctr0"}}}})"), kOk);
    EXPECT_EQ(error_with(R"({"linux": {"netDevices": {"eth0": {"name": "a/b"}}}})"),
              R"(config.json: linux.netDevices.eth0.name: invalid interface name "a/b")");
    EXPECT_EQ(
        error_with(R"({"linux": {"netDevices": {"averyveryverylongname": {}}}})"),
        R"(config.json: linux.netDevices.averyveryverylongname: invalid interface name "averyveryverylongname")");
}

// ---- seccomp (config-linux.md "Seccomp") ----

TEST(OciValidate, SeccompActionsOperatorsArchsFlags) {
    EXPECT_EQ(
        error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_DENY"}}})"),
        R"(config.json: linux.seccomp.defaultAction: unknown seccomp action "SCMP_ACT_DENY" (one of SCMP_ACT_KILL, )"
        R"(SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, SCMP_ACT_TRACE, )"
        R"(SCMP_ACT_ALLOW, SCMP_ACT_LOG, SCMP_ACT_NOTIFY))");
    EXPECT_EQ(
        error_with(
            R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}}})"),
        R"(config.json: linux.seccomp.architectures[0]: unknown seccomp architecture "SCMP_ARCH_Z80")");
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                                   "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}}})")
                  .rfind(R"(config.json: linux.seccomp.flags[0]: unknown seccomp flag)", 0),
              0u);
    EXPECT_EQ(
        error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                 {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_IS"}]}]}}})")
            .rfind(
                R"(config.json: linux.seccomp.syscalls[0].args[0].op: unknown seccomp operator "SCMP_CMP_IS")",
                0),
        0u);
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                 {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 9, "op": "SCMP_CMP_EQ"}]}]}}})"),
              "config.json: linux.seccomp.syscalls[0].args[0].index: must be between 0 and 5, got 6");
}

TEST(OciValidate, SeccompAcceptsNewerArchitectures) {
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures":
                 ["SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SHEB"],
                 "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}}})"),
              kOk);
}

TEST(OciValidate, SeccompSyscallsNameSomething) {
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                 {"names": [], "action": "SCMP_ACT_ERRNO"}]}}})"),
              "config.json: linux.seccomp.syscalls[0].names: must name at least one syscall");
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                 {"names": ["read", ""], "action": "SCMP_ACT_ERRNO"}]}}})"),
              "config.json: linux.seccomp.syscalls[0].names[1]: must not be empty");
}

TEST(OciValidate, SeccompNotifyNeedsAListener) {
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                 {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}}})"),
              "config.json: linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used");
    EXPECT_EQ(
        error_with(
            R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "agent.sock"}}})"),
        R"(config.json: linux.seccomp.listenerPath: must be an absolute path, got "agent.sock")");
    EXPECT_EQ(
        error_with(R"({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock",
                 "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}}})"),
        kOk);
}

}  // namespace
}  // namespace tarn::oci
