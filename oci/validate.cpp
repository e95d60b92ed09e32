// The rules of config.md / config-linux.md that the JSON types alone cannot express.
// Every error starts with the JSON path of the field at fault.
#include <algorithm>
#include <array>
#include <charconv>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include "oci/detail.hpp"
#include "oci/json_path.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

namespace {

using detail::element_path;
using detail::member_path;
using detail::quote;
using Names = std::span<const std::string_view>;

// getrlimit(2).
constexpr std::string_view kRlimits[] = {
    "RLIMIT_AS",      "RLIMIT_CORE",     "RLIMIT_CPU",        "RLIMIT_DATA",   "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",       "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
    "RLIMIT_RTPRIO",  "RLIMIT_RTTIME",   "RLIMIT_SIGPENDING", "RLIMIT_STACK"};
// sched_setattr(2).
constexpr std::string_view kSchedPolicies[] = {"SCHED_OTHER", "SCHED_FIFO", "SCHED_RR",      "SCHED_BATCH",
                                               "SCHED_ISO",   "SCHED_IDLE", "SCHED_DEADLINE"};
constexpr std::string_view kSchedFlags[] = {"SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM",
                                            "SCHED_FLAG_DL_OVERRUN",    "SCHED_FLAG_KEEP_POLICY",
                                            "SCHED_FLAG_KEEP_PARAMS",   "SCHED_FLAG_UTIL_CLAMP_MIN",
                                            "SCHED_FLAG_UTIL_CLAMP_MAX"};
constexpr std::string_view kIoPrioClasses[] = {"IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"};
// runc also accepts the recursive spellings, and configs written for it use them.
constexpr std::string_view kPropagations[] = {"shared",  "slave",  "private",  "unbindable",
                                              "rshared", "rslave", "rprivate", "runbindable"};
constexpr std::string_view kDeviceTypes[] = {"c", "b", "u", "p"};
constexpr std::string_view kDeviceRuleTypes[] = {"a", "c", "b"};
constexpr std::string_view kClocks[] = {"monotonic", "boottime"};
constexpr std::string_view kPersonalityDomains[] = {"LINUX", "LINUX32"};
constexpr std::string_view kMemoryPolicyModes[] = {
    "MPOL_DEFAULT",   "MPOL_BIND",           "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_LOCAL"};
constexpr std::string_view kMemoryPolicyFlags[] = {"MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES",
                                                   "MPOL_F_STATIC_NODES"};
constexpr std::string_view kSeccompActions[] = {
    "SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",        "SCMP_ACT_LOG",         "SCMP_ACT_NOTIFY"};
constexpr std::string_view kSeccompOps[] = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",       "SCMP_CMP_EQ",
                                            "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"};
constexpr std::string_view kSeccompFlags[] = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                              "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                              "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"};
constexpr std::string_view kSeccompArchs[] = {
    "SCMP_ARCH_X86",     "SCMP_ARCH_X86_64",   "SCMP_ARCH_X32",         "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS",     "SCMP_ARCH_MIPS64",      "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",  "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",   "SCMP_ARCH_PPC64LE",  "SCMP_ARCH_S390",        "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",  "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",     "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",    "SCMP_ARCH_SH",       "SCMP_ARCH_SHEB"};

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
    throw Error(path.empty() ? msg : path + ": " + msg);
}

bool one_of(std::string_view v, Names names) {
    return std::find(names.begin(), names.end(), v) != names.end();
}

// Short enums list their values in the message; long ones (archs, rlimits) would drown it.
void check_enum(const std::string& path, std::string_view v, Names names, std::string_view what) {
    if (v.empty()) fail(path, "required");
    if (one_of(v, names)) return;
    std::string msg = "unknown " + std::string(what) + " " + quote(v);
    if (names.size() <= 9) {
        msg += " (one of ";
        bool first = true;
        for (auto n : names) {
            msg += (first ? "" : ", ") + std::string(n);
            first = false;
        }
        msg += ")";
    }
    fail(path, msg);
}

void check_absolute(const std::string& path, std::string_view v) {
    if (v.empty()) fail(path, "required");
    if (v.front() != '/') fail(path, "must be an absolute path, got " + quote(v));
}

void check_absolute_list(const std::string& path, const std::vector<std::string>& list) {
    for (std::size_t i = 0; i < list.size(); ++i) check_absolute(element_path(path, i), list[i]);
}

// A name that becomes one path component (a cgroup file, a resctrl group): it must not be
// able to walk out of the directory it is joined to.
bool is_file_name(std::string_view v) {
    return !v.empty() && v != "." && v != ".." && v.find('/') == std::string_view::npos;
}

// dev_valid_name() in net/core/dev.c.
bool is_interface_name(std::string_view v) {
    if (!is_file_name(v) || v.size() >= 16) return false;
    return std::none_of(v.begin(), v.end(),
                        [](char c) { return c == ':' || c == ' ' || (c >= '\t' && c <= '\r'); });
}

// "1.0.0" .. "1.3.x", with an optional pre-release or build suffix ("1.0.2-dev").
bool supported_version(std::string_view v) {
    unsigned parts[3];
    const char* p = v.data();
    const char* end = v.data() + v.size();
    for (int i = 0; i < 3; ++i) {
        if (i > 0) {
            if (p == end || *p != '.') return false;
            ++p;
        }
        auto [next, ec] = std::from_chars(p, end, parts[i]);
        if (ec != std::errc() || next == p) return false;
        p = next;
    }
    if (p != end && *p != '-' && *p != '+') return false;
    return parts[0] == 1 && parts[1] <= 3;
}

// The rules the kernel applies when uid_map/gid_map is written (user_namespaces(7)),
// checked here so the error names the entry rather than "invalid argument".
void validate_id_mappings(const std::string& path, const std::vector<IdMapping>& maps) {
    // UID_GID_MAP_MAX_EXTENTS in include/linux/user_namespace.h.
    constexpr std::size_t kMaxExtents = 340;
    if (maps.size() > kMaxExtents)
        fail(path, "at most " + std::to_string(kMaxExtents) + " entries, got " + std::to_string(maps.size()));
    auto end = [](uint32_t start, uint32_t size) { return uint64_t{start} + size; };
    for (std::size_t i = 0; i < maps.size(); ++i) {
        const IdMapping& m = maps[i];
        std::string at = element_path(path, i);
        if (m.size == 0) fail(member_path(at, "size"), "must be greater than zero");
        // (uint32_t)-1 is never a valid id: the range must end at or below it.
        if (end(m.container_id, m.size) > UINT32_MAX)
            fail(member_path(at, "size"), "containerID + size overflows 32 bits");
        if (end(m.host_id, m.size) > UINT32_MAX)
            fail(member_path(at, "size"), "hostID + size overflows 32 bits");
        for (std::size_t k = 0; k < i; ++k) {
            const IdMapping& o = maps[k];
            if (m.container_id < end(o.container_id, o.size) && o.container_id < end(m.container_id, m.size))
                fail(at, "containerID range overlaps entry " + std::to_string(k));
            if (m.host_id < end(o.host_id, o.size) && o.host_id < end(m.host_id, m.size))
                fail(at, "hostID range overlaps entry " + std::to_string(k));
        }
    }
}

bool has_option(const Mount& m, std::string_view name) {
    return std::find(m.options.begin(), m.options.end(), name) != m.options.end();
}

// config.md "Mounts": uidMappings/gidMappings and the idmap/ridmap options.
void validate_idmapped_mount(const std::string& path, const Mount& m, const Linux* l) {
    bool uids = !m.uid_mappings.empty(), gids = !m.gid_mappings.empty();
    bool option = has_option(m, "idmap") || has_option(m, "ridmap");
    if (!uids && !gids && !option) return;
    if (uids != gids)
        fail(member_path(path, uids ? "gidMappings" : "uidMappings"),
             std::string("required with ") + (uids ? "uidMappings" : "gidMappings"));
    bool bind = m.type == "bind" || has_option(m, "bind") || has_option(m, "rbind");
    if (!bind)
        fail(member_path(path, uids ? "uidMappings" : "options"),
             "only bind mounts can be idmapped (type " + quote(m.type) + " without bind or rbind)");
    if (!uids) {
        // The container's own mappings are the fallback; without a user namespace there
        // is nothing to fall back on.
        const Namespace* user = l ? l->find_namespace(NamespaceType::user) : nullptr;
        bool fallback = user && (!user->path.empty() || !l->uid_mappings.empty());
        if (!fallback)
            fail(member_path(path, "options"),
                 "idmap needs uidMappings and gidMappings, or a user namespace for the container");
    }
}

void validate_mount(const std::string& path, const Mount& m, const Linux* l) {
    // Linux mounts are made relative to the container's root, so the destination must be
    // absolute (config.md "Mounts", POSIX platforms).
    check_absolute(member_path(path, "destination"), m.destination);
    validate_id_mappings(member_path(path, "uidMappings"), m.uid_mappings);
    validate_id_mappings(member_path(path, "gidMappings"), m.gid_mappings);
    validate_idmapped_mount(path, m, l);
}

void validate_hooks(const Hooks& h) {
    auto check = [](const char* name, const std::vector<Hook>& hooks) {
        std::string base = member_path("hooks", name);
        for (std::size_t i = 0; i < hooks.size(); ++i) {
            std::string at = element_path(base, i);
            check_absolute(member_path(at, "path"), hooks[i].path);
            if (hooks[i].timeout && *hooks[i].timeout <= 0)
                fail(member_path(at, "timeout"),
                     "must be greater than zero, got " + std::to_string(*hooks[i].timeout));
        }
    };
    check("prestart", h.prestart);
    check("createRuntime", h.create_runtime);
    check("createContainer", h.create_container);
    check("startContainer", h.start_container);
    check("poststart", h.poststart);
    check("poststop", h.poststop);
}

void validate_seccomp(const std::string& path, const Seccomp& s) {
    check_enum(member_path(path, "defaultAction"), s.default_action, kSeccompActions, "seccomp action");
    bool notify = s.default_action == "SCMP_ACT_NOTIFY";
    for (std::size_t i = 0; i < s.architectures.size(); ++i)
        check_enum(element_path(member_path(path, "architectures"), i), s.architectures[i], kSeccompArchs,
                   "seccomp architecture");
    for (std::size_t i = 0; i < s.flags.size(); ++i)
        check_enum(element_path(member_path(path, "flags"), i), s.flags[i], kSeccompFlags, "seccomp flag");
    if (!s.listener_path.empty()) check_absolute(member_path(path, "listenerPath"), s.listener_path);

    for (std::size_t i = 0; i < s.syscalls.size(); ++i) {
        const auto& sc = s.syscalls[i];
        std::string at = element_path(member_path(path, "syscalls"), i);
        if (sc.names.empty()) fail(member_path(at, "names"), "must name at least one syscall");
        for (std::size_t k = 0; k < sc.names.size(); ++k)
            if (sc.names[k].empty()) fail(element_path(member_path(at, "names"), k), "must not be empty");
        check_enum(member_path(at, "action"), sc.action, kSeccompActions, "seccomp action");
        notify = notify || sc.action == "SCMP_ACT_NOTIFY";
        for (std::size_t k = 0; k < sc.args.size(); ++k) {
            std::string arg = element_path(member_path(at, "args"), k);
            // A syscall has at most six arguments.
            if (sc.args[k].index > 5)
                fail(member_path(arg, "index"),
                     "must be between 0 and 5, got " + std::to_string(sc.args[k].index));
            check_enum(member_path(arg, "op"), sc.args[k].op, kSeccompOps, "seccomp operator");
        }
    }
    // The notify fd has nowhere to go without a listener (config-linux.md "Seccomp").
    if (notify && s.listener_path.empty())
        fail(member_path(path, "listenerPath"), "required when SCMP_ACT_NOTIFY is used");
}

void validate_linux(const Linux& l) {
    const std::string base = "linux";

    std::set<NamespaceType> seen;
    for (std::size_t i = 0; i < l.namespaces.size(); ++i) {
        const auto& ns = l.namespaces[i];
        std::string at = element_path(member_path(base, "namespaces"), i);
        if (!seen.insert(ns.type).second)
            fail(member_path(at, "type"), "duplicate namespace " + quote(to_string(ns.type)));
        if (!ns.path.empty()) check_absolute(member_path(at, "path"), ns.path);
    }
    validate_id_mappings(member_path(base, "uidMappings"), l.uid_mappings);
    validate_id_mappings(member_path(base, "gidMappings"), l.gid_mappings);

    for (const auto& [clock, offset] : l.time_offsets) {
        std::string at = member_path(member_path(base, "timeOffsets"), clock);
        if (!one_of(clock, kClocks))
            fail(at, "unknown clock " + quote(clock) + " (one of monotonic, boottime)");
        if (offset.nanosecs >= 1'000'000'000)
            fail(member_path(at, "nanosecs"),
                 "must be less than 1000000000, got " + std::to_string(offset.nanosecs));
    }

    for (std::size_t i = 0; i < l.devices.size(); ++i) {
        std::string at = element_path(member_path(base, "devices"), i);
        check_enum(member_path(at, "type"), l.devices[i].type, kDeviceTypes, "device type");
        check_absolute(member_path(at, "path"), l.devices[i].path);
    }

    if (l.resources) detail::validate_resources(*l.resources, member_path(base, "resources"));

    if (l.intel_rdt && !l.intel_rdt->clos_id.empty() && !is_file_name(l.intel_rdt->clos_id))
        fail(member_path(member_path(base, "intelRdt"), "closID"),
             "must be a plain directory name, got " + quote(l.intel_rdt->clos_id));

    if (l.seccomp) validate_seccomp(member_path(base, "seccomp"), *l.seccomp);

    if (!l.rootfs_propagation.empty())
        check_enum(member_path(base, "rootfsPropagation"), l.rootfs_propagation, kPropagations,
                   "propagation");
    check_absolute_list(member_path(base, "maskedPaths"), l.masked_paths);
    check_absolute_list(member_path(base, "readonlyPaths"), l.readonly_paths);

    if (l.personality)
        check_enum(member_path(member_path(base, "personality"), "domain"), l.personality->domain,
                   kPersonalityDomains, "personality domain");

    if (l.memory_policy) {
        std::string at = member_path(base, "memoryPolicy");
        check_enum(member_path(at, "mode"), l.memory_policy->mode, kMemoryPolicyModes, "memory policy mode");
        for (std::size_t i = 0; i < l.memory_policy->flags.size(); ++i)
            check_enum(element_path(member_path(at, "flags"), i), l.memory_policy->flags[i],
                       kMemoryPolicyFlags, "memory policy flag");
    }

    for (const auto& [host, dev] : l.net_devices) {
        std::string at = member_path(member_path(base, "netDevices"), host);
        if (!is_interface_name(host)) fail(at, "invalid interface name " + quote(host));
        if (!dev.name.empty() && !is_interface_name(dev.name))
            fail(member_path(at, "name"), "invalid interface name " + quote(dev.name));
    }
}

}  // namespace

void detail::validate_process(const Process& p, std::string_view base_view) {
    const std::string base(base_view);

    check_absolute(member_path(base, "cwd"), p.cwd);
    // commandLine is the Windows alternative to args.
    if (p.args.empty() && p.command_line.empty())
        fail(member_path(base, "args"), "must contain at least one argument");

    if (p.capabilities) {
        auto check = [&](const char* set, const std::vector<std::string>& caps) {
            for (std::size_t i = 0; i < caps.size(); ++i) {
                const auto& c = caps[i];
                bool ok = c.size() > 4 && c.starts_with("CAP_") &&
                          std::all_of(c.begin() + 4, c.end(),
                                      [](char ch) { return (ch >= 'A' && ch <= 'Z') || ch == '_'; });
                if (!ok)
                    fail(element_path(member_path(member_path(base, "capabilities"), set), i),
                         "invalid capability " + quote(c));
            }
        };
        check("bounding", p.capabilities->bounding);
        check("effective", p.capabilities->effective);
        check("inheritable", p.capabilities->inheritable);
        check("permitted", p.capabilities->permitted);
        check("ambient", p.capabilities->ambient);
    }

    std::set<std::string> seen;
    for (std::size_t i = 0; i < p.rlimits.size(); ++i) {
        const auto& l = p.rlimits[i];
        std::string at = element_path(member_path(base, "rlimits"), i);
        check_enum(member_path(at, "type"), l.type, kRlimits, "rlimit");
        // config.md: duplicated rlimit types MUST be an error.
        if (!seen.insert(l.type).second) fail(member_path(at, "type"), "duplicate rlimit " + quote(l.type));
        if (l.soft > l.hard)
            fail(member_path(at, "soft"),
                 std::to_string(l.soft) + " exceeds the hard limit " + std::to_string(l.hard));
    }

    // The kernel's range for /proc/<pid>/oom_score_adj.
    if (p.oom_score_adj && (*p.oom_score_adj < -1000 || *p.oom_score_adj > 1000))
        fail(member_path(base, "oomScoreAdj"),
             "must be between -1000 and 1000, got " + std::to_string(*p.oom_score_adj));

    if (p.scheduler) {
        std::string at = member_path(base, "scheduler");
        check_enum(member_path(at, "policy"), p.scheduler->policy, kSchedPolicies, "scheduler policy");
        for (std::size_t i = 0; i < p.scheduler->flags.size(); ++i)
            check_enum(element_path(member_path(at, "flags"), i), p.scheduler->flags[i], kSchedFlags,
                       "scheduler flag");
    }

    if (p.io_priority) {
        std::string at = member_path(base, "ioPriority");
        check_enum(member_path(at, "class"), p.io_priority->klass, kIoPrioClasses, "I/O priority class");
        // ioprio_set(2): eight levels per class.
        if (p.io_priority->priority < 0 || p.io_priority->priority > 7)
            fail(member_path(at, "priority"),
                 "must be between 0 and 7, got " + std::to_string(p.io_priority->priority));
    }

    if (p.exec_cpu_affinity) {
        auto check = [&](const char* key, const std::string& list) {
            bool ok = std::all_of(list.begin(), list.end(), [](char c) {
                return (c >= '0' && c <= '9') || c == ',' || c == '-' || c == ' ';
            });
            if (!ok)
                fail(member_path(member_path(base, "execCPUAffinity"), key),
                     "invalid CPU list " + quote(list));
        };
        check("initial", p.exec_cpu_affinity->initial);
        check("final", p.exec_cpu_affinity->final);
    }
}

void detail::validate_resources(const Resources& r, std::string_view base_view) {
    const std::string base(base_view);

    for (std::size_t i = 0; i < r.devices.size(); ++i) {
        const auto& d = r.devices[i];
        std::string at = element_path(member_path(base, "devices"), i);
        if (!d.type.empty()) check_enum(member_path(at, "type"), d.type, kDeviceRuleTypes, "device type");
        bool ok = std::all_of(d.access.begin(), d.access.end(),
                              [](char c) { return c == 'r' || c == 'w' || c == 'm'; });
        if (!ok)
            fail(member_path(at, "access"), "must be a combination of r, w and m, got " + quote(d.access));
    }

    if (r.memory && r.memory->limit && r.memory->swap) {
        // swap is the memory+swap limit, so it cannot be below the memory limit. -1 means
        // unlimited, and runc reads 0 as "not set", so neither is compared.
        int64_t limit = *r.memory->limit, swap = *r.memory->swap;
        if (limit > 0 && swap > 0 && swap < limit)
            fail(member_path(member_path(base, "memory"), "swap"),
                 std::to_string(swap) + " is below memory.limit " + std::to_string(limit) +
                     " (swap limits memory+swap)");
    }

    if (r.block_io) {
        // config-linux.md: each weightDevice entry sets weight, leafWeight or both.
        for (std::size_t i = 0; i < r.block_io->weight_device.size(); ++i) {
            const auto& w = r.block_io->weight_device[i];
            if (!w.weight && !w.leaf_weight)
                fail(element_path(member_path(member_path(base, "blockIO"), "weightDevice"), i),
                     "needs weight or leafWeight");
        }
    }

    for (std::size_t i = 0; i < r.hugepage_limits.size(); ++i)
        if (r.hugepage_limits[i].page_size.empty())
            fail(member_path(element_path(member_path(base, "hugepageLimits"), i), "pageSize"), "required");

    if (r.network) {
        for (std::size_t i = 0; i < r.network->priorities.size(); ++i)
            if (r.network->priorities[i].name.empty())
                fail(member_path(element_path(member_path(member_path(base, "network"), "priorities"), i),
                                 "name"),
                     "required");
    }

    // unified keys become file names under the container's cgroup directory.
    for (const auto& [key, value] : r.unified)
        if (!is_file_name(key))
            fail(member_path(member_path(base, "unified"), key),
                 "must be a cgroup file name, got " + quote(key));
}

void validate(const Config& c) {
    if (c.oci_version.empty()) fail("ociVersion", "required");
    if (!supported_version(c.oci_version))
        fail("ociVersion", "unsupported version " + quote(c.oci_version) + " (supported 1.0.0 to 1.3.x)");

    if (c.root && c.root->path.empty()) fail("root.path", "required");
    for (std::size_t i = 0; i < c.mounts.size(); ++i)
        validate_mount(element_path("mounts", i), c.mounts[i], c.linux ? &*c.linux : nullptr);
    if (c.process) detail::validate_process(*c.process, "process");
    if (c.hooks) validate_hooks(*c.hooks);
    // config.md "Annotations": keys MUST NOT be empty.
    if (c.annotations.contains("")) fail("annotations", "keys must not be empty");
    if (c.linux) validate_linux(*c.linux);
}

}  // namespace tarn::oci
