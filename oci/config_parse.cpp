// config.json text -> Config. Reading checks what the JSON itself can tell: types, integer
// ranges, and presence of the members the schema marks required. The spec's rules (enums,
// absolute paths, duplicates) live in validate.cpp, which parse_config runs last, so they
// also hold for configs built in code.
#include <array>
#include <utility>

#include "oci/detail.hpp"
#include "oci/json_io.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

// ---- namespace names (config-linux.md "Namespaces") ------------------------

namespace {

constexpr std::array<std::pair<NamespaceType, std::string_view>, 8> kNamespaceNames{{
    {NamespaceType::pid, "pid"},
    {NamespaceType::network, "network"},
    {NamespaceType::mount, "mount"},
    {NamespaceType::ipc, "ipc"},
    {NamespaceType::uts, "uts"},
    {NamespaceType::user, "user"},
    {NamespaceType::cgroup, "cgroup"},
    {NamespaceType::time, "time"},
}};

}  // namespace

std::string_view to_string(NamespaceType t) {
    for (const auto& [type, name] : kNamespaceNames)
        if (type == t) return name;
    return "unknown";
}

std::optional<NamespaceType> namespace_type_from(std::string_view s) {
    for (const auto& [type, name] : kNamespaceNames)
        if (name == s) return type;
    return std::nullopt;
}

const Namespace* Linux::find_namespace(NamespaceType t) const {
    for (const auto& ns : namespaces)
        if (ns.type == t) return &ns;
    return nullptr;
}

// ---- readers, one per spec object -------------------------------------------

namespace {

using detail::json;
using detail::Reader;

Root read_root(const Reader& r) {
    Root root;
    r.require("path", root.path);
    r.read("readonly", root.readonly);
    return root;
}

IdMapping read_id_mapping(const Reader& r) {
    IdMapping m;
    r.require("containerID", m.container_id);
    r.require("hostID", m.host_id);
    r.require("size", m.size);
    return m;
}

Mount read_mount(const Reader& r) {
    Mount m;
    r.require("destination", m.destination);
    r.read("type", m.type);
    r.read("source", m.source);
    r.read("options", m.options);
    m.uid_mappings = r.list_of("uidMappings", read_id_mapping);
    m.gid_mappings = r.list_of("gidMappings", read_id_mapping);
    return m;
}

Hook read_hook(const Reader& r) {
    Hook h;
    r.require("path", h.path);
    r.read("args", h.args);
    r.read("env", h.env);
    r.read("timeout", h.timeout);
    return h;
}

Hooks read_hooks(const Reader& r) {
    Hooks h;
    h.prestart = r.list_of("prestart", read_hook);
    h.create_runtime = r.list_of("createRuntime", read_hook);
    h.create_container = r.list_of("createContainer", read_hook);
    h.start_container = r.list_of("startContainer", read_hook);
    h.poststart = r.list_of("poststart", read_hook);
    h.poststop = r.list_of("poststop", read_hook);
    return h;
}

// The type is an enum in the model, so an unknown name cannot wait for validate().
Namespace read_namespace(const Reader& r) {
    Namespace ns;
    Reader type = r.required("type");
    std::string name = type.string();
    auto t = namespace_type_from(name);
    if (!t)
        type.fail("unknown namespace type " + detail::quote(name) +
                  " (one of pid, network, mount, ipc, uts, user, cgroup, time)");
    ns.type = *t;
    r.read("path", ns.path);
    return ns;
}

TimeOffset read_time_offset(const Reader& r) {
    TimeOffset o;
    r.read("secs", o.secs);
    r.read("nanosecs", o.nanosecs);
    return o;
}

Device read_device(const Reader& r) {
    Device d;
    r.require("type", d.type);
    r.require("path", d.path);
    // major and minor are REQUIRED unless the device is a FIFO, which has no number.
    if (d.type == "c" || d.type == "b" || d.type == "u") {
        r.require("major", d.major);
        r.require("minor", d.minor);
    } else {
        r.read("major", d.major);
        r.read("minor", d.minor);
    }
    r.read("fileMode", d.file_mode);
    r.read("uid", d.uid);
    r.read("gid", d.gid);
    return d;
}

DeviceCgroupRule read_device_rule(const Reader& r) {
    DeviceCgroupRule d;
    r.require("allow", d.allow);
    r.read("type", d.type);
    r.read("major", d.major);
    r.read("minor", d.minor);
    r.read("access", d.access);
    return d;
}

Memory read_memory(const Reader& r) {
    Memory m;
    r.read("limit", m.limit);
    r.read("reservation", m.reservation);
    r.read("swap", m.swap);
    r.read("kernel", m.kernel);
    r.read("kernelTCP", m.kernel_tcp);
    r.read("swappiness", m.swappiness);
    r.read("disableOOMKiller", m.disable_oom_killer);
    r.read("useHierarchy", m.use_hierarchy);
    r.read("checkBeforeUpdate", m.check_before_update);
    return m;
}

Cpu read_cpu(const Reader& r) {
    Cpu c;
    r.read("shares", c.shares);
    r.read("quota", c.quota);
    r.read("burst", c.burst);
    r.read("period", c.period);
    r.read("realtimeRuntime", c.realtime_runtime);
    r.read("realtimePeriod", c.realtime_period);
    r.read("cpus", c.cpus);
    r.read("mems", c.mems);
    r.read("idle", c.idle);
    return c;
}

Pids read_pids(const Reader& r) {
    Pids p;
    r.read("limit", p.limit);
    return p;
}

WeightDevice read_weight_device(const Reader& r) {
    WeightDevice w;
    r.require("major", w.major);
    r.require("minor", w.minor);
    r.read("weight", w.weight);
    r.read("leafWeight", w.leaf_weight);
    return w;
}

ThrottleDevice read_throttle_device(const Reader& r) {
    ThrottleDevice t;
    r.require("major", t.major);
    r.require("minor", t.minor);
    r.require("rate", t.rate);
    return t;
}

BlockIo read_block_io(const Reader& r) {
    BlockIo b;
    r.read("weight", b.weight);
    r.read("leafWeight", b.leaf_weight);
    b.weight_device = r.list_of("weightDevice", read_weight_device);
    b.throttle_read_bps_device = r.list_of("throttleReadBpsDevice", read_throttle_device);
    b.throttle_write_bps_device = r.list_of("throttleWriteBpsDevice", read_throttle_device);
    b.throttle_read_iops_device = r.list_of("throttleReadIOPSDevice", read_throttle_device);
    b.throttle_write_iops_device = r.list_of("throttleWriteIOPSDevice", read_throttle_device);
    return b;
}

HugepageLimit read_hugepage_limit(const Reader& r) {
    HugepageLimit h;
    r.require("pageSize", h.page_size);
    r.require("limit", h.limit);
    return h;
}

InterfacePriority read_interface_priority(const Reader& r) {
    InterfacePriority p;
    r.require("name", p.name);
    r.require("priority", p.priority);
    return p;
}

Network read_network(const Reader& r) {
    Network n;
    r.read("classID", n.class_id);
    n.priorities = r.list_of("priorities", read_interface_priority);
    return n;
}

Rdma read_rdma(const Reader& r) {
    Rdma d;
    r.read("hcaHandles", d.hca_handles);
    r.read("hcaObjects", d.hca_objects);
    return d;
}

IntelRdt read_intel_rdt(const Reader& r) {
    IntelRdt i;
    r.read("closID", i.clos_id);
    r.read("l3CacheSchema", i.l3_cache_schema);
    r.read("memBwSchema", i.mem_bw_schema);
    r.read("schemata", i.schemata);
    r.read("enableMonitoring", i.enable_monitoring);
    return i;
}

SeccompArg read_seccomp_arg(const Reader& r) {
    SeccompArg a;
    r.require("index", a.index);
    r.require("value", a.value);
    r.read("valueTwo", a.value_two);
    r.require("op", a.op);
    return a;
}

SeccompSyscall read_seccomp_syscall(const Reader& r) {
    SeccompSyscall s;
    r.require("names", s.names);
    r.require("action", s.action);
    r.read("errnoRet", s.errno_ret);
    s.args = r.list_of("args", read_seccomp_arg);
    return s;
}

Seccomp read_seccomp(const Reader& r) {
    Seccomp s;
    r.require("defaultAction", s.default_action);
    r.read("defaultErrnoRet", s.default_errno_ret);
    r.read("architectures", s.architectures);
    r.read("flags", s.flags);
    r.read("listenerPath", s.listener_path);
    r.read("listenerMetadata", s.listener_metadata);
    s.syscalls = r.list_of("syscalls", read_seccomp_syscall);
    return s;
}

Personality read_personality(const Reader& r) {
    Personality p;
    r.require("domain", p.domain);
    r.read("flags", p.flags);
    return p;
}

MemoryPolicy read_memory_policy(const Reader& r) {
    MemoryPolicy m;
    r.require("mode", m.mode);
    r.read("nodes", m.nodes);
    r.read("flags", m.flags);
    return m;
}

NetDevice read_net_device(const Reader& r) {
    NetDevice d;
    r.read("name", d.name);
    return d;
}

Linux read_linux(const Reader& r) {
    Linux l;
    l.namespaces = r.list_of("namespaces", read_namespace);
    l.uid_mappings = r.list_of("uidMappings", read_id_mapping);
    l.gid_mappings = r.list_of("gidMappings", read_id_mapping);
    l.time_offsets = r.map_of("timeOffsets", read_time_offset);
    l.devices = r.list_of("devices", read_device);
    r.read("cgroupsPath", l.cgroups_path);
    l.resources = r.object("resources", detail::read_resources);
    l.intel_rdt = r.object("intelRdt", read_intel_rdt);
    r.read("sysctl", l.sysctl);
    l.seccomp = r.object("seccomp", read_seccomp);
    r.read("rootfsPropagation", l.rootfs_propagation);
    r.read("maskedPaths", l.masked_paths);
    r.read("readonlyPaths", l.readonly_paths);
    r.read("mountLabel", l.mount_label);
    l.personality = r.object("personality", read_personality);
    l.memory_policy = r.object("memoryPolicy", read_memory_policy);
    l.net_devices = r.map_of("netDevices", read_net_device);
    return l;
}

Config read_config(const Reader& r) {
    Config c;
    r.read("ociVersion", c.oci_version);
    c.root = r.object("root", read_root);
    c.mounts = r.list_of("mounts", read_mount);
    c.process = r.object("process", detail::read_process);
    r.read("hostname", c.hostname);
    r.read("domainname", c.domainname);
    c.hooks = r.object("hooks", read_hooks);
    r.read("annotations", c.annotations);
    c.linux = r.object("linux", read_linux);
    return c;
}

}  // namespace

Resources detail::read_resources(const Reader& r) {
    Resources res;
    res.devices = r.list_of("devices", read_device_rule);
    res.memory = r.object("memory", read_memory);
    res.cpu = r.object("cpu", read_cpu);
    res.pids = r.object("pids", read_pids);
    res.block_io = r.object("blockIO", read_block_io);
    res.hugepage_limits = r.list_of("hugepageLimits", read_hugepage_limit);
    res.network = r.object("network", read_network);
    res.rdma = r.map_of("rdma", read_rdma);
    r.read("unified", res.unified);
    return res;
}

// ---- entry points -----------------------------------------------------------

Config parse_config(std::string_view text, std::string_view source) {
    json j = detail::parse_json(text, source);
    try {
        Reader r(j, "");
        r.expect_object();
        Config c = read_config(r);
        validate(c);
        return c;
    } catch (const Error& e) {
        throw e.wrapped(std::string(source));
    }
}

Config load_config(const std::string& bundle_dir) {
    std::string path = bundle_dir + "/config.json";
    return parse_config(read_file(path, kMaxJsonDocument), path);
}

Resources parse_resources(std::string_view text, std::string_view source) {
    json j = detail::parse_json(text, source);
    try {
        Reader r(j, "");
        r.expect_object();
        Resources res = detail::read_resources(r);
        detail::validate_resources(res, "");
        return res;
    } catch (const Error& e) {
        throw e.wrapped(std::string(source));
    }
}

}  // namespace tarn::oci
