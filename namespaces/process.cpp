#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <map>

#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

const std::map<std::string, int, std::less<>>& rlimit_names() {
    static const std::map<std::string, int, std::less<>> m = {
        {"RLIMIT_AS", RLIMIT_AS},           {"RLIMIT_CORE", RLIMIT_CORE},
        {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_DATA", RLIMIT_DATA},
        {"RLIMIT_FSIZE", RLIMIT_FSIZE},     {"RLIMIT_LOCKS", RLIMIT_LOCKS},
        {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
        {"RLIMIT_NICE", RLIMIT_NICE},       {"RLIMIT_NOFILE", RLIMIT_NOFILE},
        {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_RSS", RLIMIT_RSS},
        {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},
        {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING}, {"RLIMIT_STACK", RLIMIT_STACK},
    };
    return m;
}

struct SchedAttr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};

int sched_policy(const std::string& p) {
    static const std::map<std::string, int, std::less<>> m = {
        {"SCHED_OTHER", 0}, {"SCHED_FIFO", 1}, {"SCHED_RR", 2}, {"SCHED_BATCH", 3},
        {"SCHED_ISO", 4},   {"SCHED_IDLE", 5}, {"SCHED_DEADLINE", 6},
    };
    auto it = m.find(p);
    if (it == m.end()) throw Error("process.scheduler.policy: unknown policy \"" + p + "\"");
    return it->second;
}

uint64_t sched_flag(const std::string& f) {
    static const std::map<std::string, uint64_t, std::less<>> m = {
        {"SCHED_FLAG_RESET_ON_FORK", 0x01}, {"SCHED_FLAG_RECLAIM", 0x02},
        {"SCHED_FLAG_DL_OVERRUN", 0x04},    {"SCHED_FLAG_KEEP_POLICY", 0x08},
        {"SCHED_FLAG_KEEP_PARAMS", 0x10},   {"SCHED_FLAG_UTIL_CLAMP_MIN", 0x20},
        {"SCHED_FLAG_UTIL_CLAMP_MAX", 0x40},
    };
    auto it = m.find(f);
    if (it == m.end()) throw Error("process.scheduler.flags: unknown flag \"" + f + "\"");
    return it->second;
}

// "0-3,7" -> cpu_set_t; errors name the field.
cpu_set_t parse_cpus(const std::string& list, const char* field) {
    cpu_set_t set;
    CPU_ZERO(&set);
    size_t pos = 0;
    while (pos < list.size()) {
        size_t comma = list.find(',', pos);
        std::string part = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? list.size() : comma + 1;
        if (part.empty()) continue;
        char* end = nullptr;
        unsigned long lo = std::strtoul(part.c_str(), &end, 10), hi = lo;
        if (end == part.c_str()) throw Error(std::string(field) + ": bad cpu list \"" + list + "\"");
        if (*end == '-') {
            const char* s = end + 1;
            hi = std::strtoul(s, &end, 10);
            if (end == s) throw Error(std::string(field) + ": bad cpu list \"" + list + "\"");
        }
        if (*end != '\0' || hi < lo || hi >= CPU_SETSIZE)
            throw Error(std::string(field) + ": bad cpu list \"" + list + "\"");
        for (unsigned long c = lo; c <= hi; ++c) CPU_SET(c, &set);
    }
    return set;
}

}  // namespace

void set_hostname(const oci::Config& c) {
    bool uts = c.linux && c.linux->find_namespace(oci::NamespaceType::uts);
    if (!c.hostname.empty()) {
        if (!uts) throw Error("hostname: requires a new uts namespace");
        if (::sethostname(c.hostname.data(), c.hostname.size()) < 0) throw_errno("sethostname " + c.hostname);
    }
    if (!c.domainname.empty()) {
        if (!uts) throw Error("domainname: requires a new uts namespace");
        if (::setdomainname(c.domainname.data(), c.domainname.size()) < 0)
            throw_errno("setdomainname " + c.domainname);
    }
}

void apply_sysctl(const oci::Config& c) {
    if (!c.linux) return;
    for (const auto& [key, value] : c.linux->sysctl) {
        if (key.find("..") != std::string::npos || key.find('/') != std::string::npos)
            throw Error("linux.sysctl: bad key \"" + key + "\"");
        std::string path = "/proc/sys/" + key;
        for (size_t i = strlen("/proc/sys/"); i < path.size(); ++i)
            if (path[i] == '.') path[i] = '/';
        // The file must be procfs's own: a /proc that is a bind mount of something else
        // (an image's directory, the CVE-2025-52881 class) would take the write silently.
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_errno("linux.sysctl." + key + ": open " + path);
        struct statfs sf{};
        if (::fstatfs(fd.get(), &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC)
            throw Error("linux.sysctl." + key + ": " + path + " is not on procfs");
        if (::write(fd.get(), value.data(), value.size()) < 0)
            throw_errno("linux.sysctl." + key + ": write \"" + value + "\" to " + path);
    }
}

void apply_rlimits(const oci::Process& p) {
    for (const oci::Rlimit& r : p.rlimits) {
        auto it = rlimit_names().find(r.type);
        if (it == rlimit_names().end()) throw Error("process.rlimits: unknown type \"" + r.type + "\"");
        struct rlimit lim{static_cast<rlim_t>(r.soft), static_cast<rlim_t>(r.hard)};
        if (::setrlimit(it->second, &lim) < 0)
            throw_errno("setrlimit " + r.type + " soft " + std::to_string(r.soft) + " hard " + std::to_string(r.hard));
    }
}

void apply_oom_score_adj(const oci::Process& p) {
    if (!p.oom_score_adj) return;
    try {
        write_file("/proc/self/oom_score_adj", std::to_string(*p.oom_score_adj));
    } catch (const Error& e) {
        throw e.wrapped("process.oomScoreAdj " + std::to_string(*p.oom_score_adj) +
                        (*p.oom_score_adj < 0 ? " (lowering it needs CAP_SYS_RESOURCE)" : ""));
    }
}

void apply_scheduling(const oci::Process& p) {
    if (p.scheduler) {
        const oci::Scheduler& s = *p.scheduler;
        SchedAttr a{};
        a.size = sizeof a;
        a.sched_policy = static_cast<uint32_t>(sched_policy(s.policy));
        for (const std::string& f : s.flags) a.sched_flags |= sched_flag(f);
        a.sched_nice = s.nice.value_or(0);
        a.sched_priority = static_cast<uint32_t>(s.priority.value_or(0));
        a.sched_runtime = s.runtime.value_or(0);
        a.sched_deadline = s.deadline.value_or(0);
        a.sched_period = s.period.value_or(0);
        if (::syscall(SYS_sched_setattr, 0, &a, 0) < 0) throw_errno("process.scheduler: sched_setattr " + s.policy);
    }
    if (p.io_priority) {
        int klass;
        if (p.io_priority->klass == "IOPRIO_CLASS_RT") klass = 1;
        else if (p.io_priority->klass == "IOPRIO_CLASS_BE") klass = 2;
        else if (p.io_priority->klass == "IOPRIO_CLASS_IDLE") klass = 3;
        else throw Error("process.ioPriority.class: unknown class \"" + p.io_priority->klass + "\"");
        int prio = (klass << 13) | p.io_priority->priority;
        if (::syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, prio) < 0)
            throw_errno("process.ioPriority: ioprio_set");
    }
}

void join_fresh_session_keyring() {
    // KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous keyring that nobody
    // else can find or join. The container's own `_ses.<id>` cannot be joined from
    // here: the kernel finds a keyring by name only for a caller with search
    // permission, which its creator's default permissions give to possessors alone.
    if (::syscall(SYS_keyctl, 1, nullptr, 0, 0, 0) >= 0) return;
    // No keyrings in this kernel, or keyctl refused by a seccomp filter around the
    // runtime, which binds the container's processes too: either way no key can be
    // reached through keyctl, as for the init (spawn.cpp).
    if (errno == ENOSYS || errno == EPERM || errno == EACCES) return;
    throw_errno("join a new session keyring");
}

void apply_personality(const oci::Config& c) {
    if (!c.linux || !c.linux->personality) return;
    const oci::Personality& p = *c.linux->personality;
    unsigned long persona;
    if (p.domain == "LINUX") persona = PER_LINUX;
    else if (p.domain == "LINUX32") persona = PER_LINUX32;
    else throw Error("linux.personality.domain: unknown domain \"" + p.domain + "\"");
    if (::personality(persona) < 0) throw_errno("linux.personality: " + p.domain);
}

void apply_cpu_affinity(const std::string& cpus, const char* field) {
    if (cpus.empty()) return;
    cpu_set_t set = parse_cpus(cpus, field);
    if (::sched_setaffinity(0, sizeof set, &set) < 0) throw_errno(std::string(field) + ": sched_setaffinity " + cpus);
}

void switch_user(const oci::User& u) {
    // Capabilities survive the uid change only with keep-caps; the effective set is
    // then rebuilt from the config by apply_capabilities.
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) throw_errno("prctl keepcaps");
    std::vector<gid_t> groups(u.additional_gids.begin(), u.additional_gids.end());
    if (::setgroups(groups.size(), groups.data()) < 0) {
        // In a user namespace with setgroups denied, only an empty list is possible.
        if (!(errno == EPERM && groups.empty())) throw_errno("setgroups (process.user.additionalGids)");
    }
    if (::setresgid(u.gid, u.gid, u.gid) < 0) throw_errno("setgid " + std::to_string(u.gid) + " (process.user.gid)");
    if (::setresuid(u.uid, u.uid, u.uid) < 0) throw_errno("setuid " + std::to_string(u.uid) + " (process.user.uid)");
}

void apply_umask(const oci::User& u) { ::umask(static_cast<mode_t>(u.umask.value_or(022))); }

void change_cwd(const std::string& cwd) {
    if (::chdir(cwd.c_str()) < 0) throw_errno("chdir to cwd " + cwd);
    // After pivot_root every path is inside the container; a cwd reached through a
    // leaked host fd would show as "(unreachable)" (CVE-2024-21626 class).
    char buf[PATH_MAX];
    if (!::getcwd(buf, sizeof buf) || buf[0] != '/')
        throw Error("cwd " + cwd + ": resolves outside the container root");
}

FinalCapabilities become_workload(const oci::Process& p, Timings& t, bool bounding_dropped, bool hold_sys_admin) {
    FinalCapabilities held;
    {
        PhaseScope s(t, Phase::rlimits);
        apply_rlimits(p);
    }
    {
        PhaseScope s(t, Phase::process);
        apply_oom_score_adj(p);
        apply_scheduling(p);
        if (p.exec_cpu_affinity) apply_cpu_affinity(p.exec_cpu_affinity->final, "process.execCPUAffinity.final");
    }
    {
        PhaseScope s(t, Phase::capabilities);
        if (p.capabilities && !bounding_dropped) drop_bounding(*p.capabilities);
        switch_user(p.user);
        // Without no_new_privs the kernel loads a filter only for a process with
        // CAP_SYS_ADMIN, which the workload rarely has (a Kubernetes RuntimeDefault pod:
        // uid 1000 or root, the default capability set). The user and the capabilities
        // are set now all the same, and CAP_SYS_ADMIN is held until the filter is loaded
        // right before execve: after the load only capset and execve remain, so a
        // profile that refuses setuid, setgroups, chdir or getcwd still starts.
        if (p.capabilities) held = apply_capabilities(*p.capabilities, hold_sys_admin);
        else if (hold_sys_admin) held = detail::hold_sys_admin();
        if (p.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw_errno("set no_new_privs");
    }
    apply_umask(p.user);
    change_cwd(p.cwd.empty() ? "/" : p.cwd);
    return held;
}

}  // namespace tarn::ns::detail
