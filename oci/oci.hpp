// The OCI runtime-spec data model (config.json of runtime-spec 1.0.0 up to 1.3.x),
// the state document, the features document and the default `spec`.
//
// Field names follow the spec's JSON names in snake_case. Optional scalars are
// std::optional so "absent" and "zero" stay distinct, as the spec requires for
// e.g. linux.resources.memory.swap or process.oomScoreAdj.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/base.hpp"

namespace tarn::oci {

inline constexpr std::string_view kSpecVersion = "1.3.0";

// ---- process -------------------------------------------------------------

struct ConsoleSize {
    uint32_t height = 0;
    uint32_t width = 0;

    bool operator==(const ConsoleSize&) const = default;
};

struct User {
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::optional<uint32_t> umask;
    std::vector<uint32_t> additional_gids;
    std::string username;  // windows only; kept for round trip

    bool operator==(const User&) const = default;
};

struct Rlimit {
    std::string type;  // "RLIMIT_NOFILE", validated against the known names
    uint64_t hard = 0;
    uint64_t soft = 0;

    bool operator==(const Rlimit&) const = default;
};

struct Capabilities {
    std::vector<std::string> bounding, effective, inheritable, permitted, ambient;

    bool operator==(const Capabilities&) const = default;
};

struct Scheduler {
    std::string policy;  // SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_ISO, SCHED_IDLE, SCHED_DEADLINE
    std::optional<int32_t> nice;
    std::optional<int32_t> priority;
    std::vector<std::string> flags;  // SCHED_FLAG_*
    std::optional<uint64_t> runtime, deadline, period;

    bool operator==(const Scheduler&) const = default;
};

struct IoPriority {
    std::string klass;  // IOPRIO_CLASS_RT, IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE ("class" in JSON)
    int32_t priority = 0;

    bool operator==(const IoPriority&) const = default;
};

struct ExecCpuAffinity {
    std::string initial;  // cpu list, e.g. "0-3,7"
    std::string final;

    bool operator==(const ExecCpuAffinity&) const = default;
};

struct Process {
    bool terminal = false;
    std::optional<ConsoleSize> console_size;
    User user;
    std::vector<std::string> args;
    std::string command_line;  // windows only
    std::vector<std::string> env;
    std::string cwd;
    std::optional<Capabilities> capabilities;
    std::vector<Rlimit> rlimits;
    bool no_new_privileges = false;
    std::string apparmor_profile;
    std::optional<int> oom_score_adj;
    std::optional<Scheduler> scheduler;
    std::string selinux_label;
    std::optional<IoPriority> io_priority;
    std::optional<ExecCpuAffinity> exec_cpu_affinity;

    bool operator==(const Process&) const = default;
};

// ---- root, mounts, hooks -------------------------------------------------

struct Root {
    std::string path;
    bool readonly = false;

    bool operator==(const Root&) const = default;
};

struct IdMapping {
    uint32_t container_id = 0;
    uint32_t host_id = 0;
    uint32_t size = 0;

    bool operator==(const IdMapping&) const = default;
};

struct Mount {
    std::string destination;
    std::string type;
    std::string source;
    std::vector<std::string> options;
    std::vector<IdMapping> uid_mappings;
    std::vector<IdMapping> gid_mappings;

    bool operator==(const Mount&) const = default;
};

struct Hook {
    std::string path;
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::optional<int> timeout;  // seconds, > 0

    bool operator==(const Hook&) const = default;
};

struct Hooks {
    std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart, poststop;

    bool operator==(const Hooks&) const = default;
};

// ---- linux ---------------------------------------------------------------

enum class NamespaceType { pid, network, mount, ipc, uts, user, cgroup, time };
std::string_view to_string(NamespaceType t);
std::optional<NamespaceType> namespace_type_from(std::string_view s);

struct Namespace {
    NamespaceType type = NamespaceType::pid;
    std::string path;  // empty: create a new one

    bool operator==(const Namespace&) const = default;
};

struct TimeOffset {
    int64_t secs = 0;
    uint32_t nanosecs = 0;

    bool operator==(const TimeOffset&) const = default;
};

struct Device {
    std::string type;  // "c", "b", "u", "p"
    std::string path;
    int64_t major = 0, minor = 0;
    std::optional<uint32_t> file_mode;
    std::optional<uint32_t> uid, gid;

    bool operator==(const Device&) const = default;
};

struct DeviceCgroupRule {
    bool allow = false;
    std::string type;  // "a", "c", "b"; empty = all
    std::optional<int64_t> major, minor;
    std::string access;  // subset of "rwm"

    bool operator==(const DeviceCgroupRule&) const = default;
};

struct Memory {
    std::optional<int64_t> limit, reservation, swap, kernel, kernel_tcp;
    std::optional<uint64_t> swappiness;
    std::optional<bool> disable_oom_killer, use_hierarchy, check_before_update;

    bool operator==(const Memory&) const = default;
};

struct Cpu {
    std::optional<uint64_t> shares;
    std::optional<int64_t> quota;
    std::optional<int64_t> burst;
    std::optional<uint64_t> period;
    std::optional<int64_t> realtime_runtime;
    std::optional<uint64_t> realtime_period;
    std::string cpus, mems;
    std::optional<int64_t> idle;

    bool operator==(const Cpu&) const = default;
};

struct WeightDevice {
    int64_t major = 0, minor = 0;
    std::optional<uint16_t> weight, leaf_weight;

    bool operator==(const WeightDevice&) const = default;
};

struct ThrottleDevice {
    int64_t major = 0, minor = 0;
    uint64_t rate = 0;

    bool operator==(const ThrottleDevice&) const = default;
};

struct BlockIo {
    std::optional<uint16_t> weight, leaf_weight;
    std::vector<WeightDevice> weight_device;
    std::vector<ThrottleDevice> throttle_read_bps_device, throttle_write_bps_device,
        throttle_read_iops_device, throttle_write_iops_device;

    bool operator==(const BlockIo&) const = default;
};

struct HugepageLimit {
    std::string page_size;  // "2MB", "1GB"
    uint64_t limit = 0;

    bool operator==(const HugepageLimit&) const = default;
};

struct InterfacePriority {
    std::string name;
    uint32_t priority = 0;

    bool operator==(const InterfacePriority&) const = default;
};

struct Network {
    std::optional<uint32_t> class_id;
    std::vector<InterfacePriority> priorities;

    bool operator==(const Network&) const = default;
};

struct Pids {
    std::optional<int64_t> limit;  // absent or <= 0: unlimited

    bool operator==(const Pids&) const = default;
};

struct Rdma {
    std::optional<uint32_t> hca_handles, hca_objects;

    bool operator==(const Rdma&) const = default;
};

struct Resources {
    std::vector<DeviceCgroupRule> devices;
    std::optional<Memory> memory;
    std::optional<Cpu> cpu;
    std::optional<Pids> pids;
    std::optional<BlockIo> block_io;
    std::vector<HugepageLimit> hugepage_limits;
    std::optional<Network> network;
    std::map<std::string, Rdma> rdma;
    std::map<std::string, std::string> unified;

    bool operator==(const Resources&) const = default;
};

struct IntelRdt {
    std::string clos_id, l3_cache_schema, mem_bw_schema;
    std::vector<std::string> schemata;
    std::optional<bool> enable_monitoring;

    bool operator==(const IntelRdt&) const = default;
};

struct SeccompArg {
    uint32_t index = 0;
    uint64_t value = 0;
    uint64_t value_two = 0;
    std::string op;  // SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT, _MASKED_EQ

    bool operator==(const SeccompArg&) const = default;
};

struct SeccompSyscall {
    std::vector<std::string> names;
    std::string action;  // SCMP_ACT_*
    std::optional<uint32_t> errno_ret;
    std::vector<SeccompArg> args;

    bool operator==(const SeccompSyscall&) const = default;
};

struct Seccomp {
    std::string default_action;
    std::optional<uint32_t> default_errno_ret;
    std::vector<std::string> architectures;  // SCMP_ARCH_*
    std::vector<std::string> flags;          // SECCOMP_FILTER_FLAG_*
    std::string listener_path;
    std::string listener_metadata;
    std::vector<SeccompSyscall> syscalls;

    bool operator==(const Seccomp&) const = default;
};

struct Personality {
    std::string domain;  // LINUX, LINUX32
    std::vector<std::string> flags;

    bool operator==(const Personality&) const = default;
};

struct MemoryPolicy {
    std::string mode;   // MPOL_*
    std::string nodes;  // node list, e.g. "0-3"
    std::vector<std::string> flags;

    bool operator==(const MemoryPolicy&) const = default;
};

struct NetDevice {
    std::string name;

    bool operator==(const NetDevice&) const = default;
};

struct Linux {
    std::vector<Namespace> namespaces;
    std::vector<IdMapping> uid_mappings, gid_mappings;
    std::map<std::string, TimeOffset> time_offsets;  // "monotonic", "boottime"
    std::vector<Device> devices;
    std::string cgroups_path;
    std::optional<Resources> resources;
    std::optional<IntelRdt> intel_rdt;
    std::map<std::string, std::string> sysctl;
    std::optional<Seccomp> seccomp;
    std::string rootfs_propagation;
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    std::string mount_label;
    std::optional<Personality> personality;
    std::optional<MemoryPolicy> memory_policy;
    std::map<std::string, NetDevice> net_devices;

    const Namespace* find_namespace(NamespaceType t) const;

    bool operator==(const Linux&) const = default;
};

struct Config {
    std::string oci_version;
    std::optional<Root> root;
    std::vector<Mount> mounts;
    std::optional<Process> process;
    std::string hostname;
    std::string domainname;
    std::optional<Hooks> hooks;
    std::map<std::string, std::string> annotations;
    std::optional<Linux> linux;

    bool operator==(const Config&) const = default;
};

// Parses and validates config.json text. `source` names the file in messages.
// Errors are tarn::Error with messages like
//   "config.json: linux.resources.memory.limit: expected integer, got string \"1G\""
//   "config.json: line 3, column 7: syntax error ..."
Config parse_config(std::string_view text, std::string_view source = "config.json");
// Reads <bundle>/config.json and parses it.
Config load_config(const std::string& bundle_dir);
// Validation alone (also run by parse_config): enums, required fields, absolute paths,
// duplicates. Throws tarn::Error naming the JSON path.
void validate(const Config& c);

nlohmann::json to_json(const Config& c);
std::string to_json_text(const Config& c, int indent = 2);

// Parses a process.json (the `exec --process` document); same rules as config.process.
Process parse_process(std::string_view text, std::string_view source = "process.json");
nlohmann::json to_json(const Process& p);

// Parses the linux.resources object alone (`update --resources`).
Resources parse_resources(std::string_view text, std::string_view source = "resources");

// The default config `spec` writes, like runc's: busybox-friendly `sh`, terminal,
// the default mounts, masked and readonly paths, and the default capability set.
// `rootless` adds a user namespace mapping the caller's ids and drops what needs privileges.
Config default_spec(bool rootless, uint32_t uid = 0, uint32_t gid = 0);

// ---- state (runtime.md) ---------------------------------------------------

enum class Status { creating, created, running, stopped, paused };
std::string_view to_string(Status s);

struct State {
    std::string oci_version = std::string(kSpecVersion);
    std::string id;
    Status status = Status::creating;
    int pid = 0;  // 0 when not running
    std::string bundle;
    std::map<std::string, std::string> annotations;
    // runc's extras, printed by `state`.
    std::string rootfs;
    std::string created;  // RFC 3339 with nanoseconds
    std::string owner;
};

nlohmann::json to_json(const State& s);
std::string to_json_text(const State& s, int indent = 2);

// config-linux.md "Seccomp", listenerPath: the containerProcessState document sent with
// the seccomp notify fd. `pid` is the process the filter applies to (the init, or an
// exec'd process) as the host sees it; `state` is the container's.
std::string process_state_json(const State& state, int pid, const std::string& metadata);

// ---- features (features.md / features-linux.md) ---------------------------

// What this build really supports; filled in by the runtime.
struct Features {
    std::string oci_version_min = "1.0.0";
    std::string oci_version_max = std::string(kSpecVersion);
    std::vector<std::string> hooks;
    std::vector<std::string> mount_options;
    std::vector<std::string> namespaces;
    std::vector<std::string> capabilities;
    bool cgroup_v1 = false, cgroup_v2 = false, cgroup_systemd = false, cgroup_systemd_user = false,
         cgroup_rdma = false;
    bool seccomp_enabled = false;
    std::vector<std::string> seccomp_actions, seccomp_operators, seccomp_archs,
        seccomp_known_flags, seccomp_supported_flags;
    bool apparmor = false, selinux = false, intel_rdt = false, mount_idmap = false,
         net_devices = false, memory_policy = false;
    std::vector<std::string> memory_policy_modes, memory_policy_flags;
    std::map<std::string, std::string> annotations;
    std::vector<std::string> potentially_unsafe_annotations;
};

nlohmann::json to_json(const Features& f);

}  // namespace tarn::oci
