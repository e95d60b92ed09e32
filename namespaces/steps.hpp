// The setup steps the container's init runs, in order, inside its new namespaces.
// Internal to namespaces/: spawn.cpp sequences them; the warm pool and the VM agent
// reuse them through spawn_init.
#pragma once

#include <linux/filter.h>

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "namespaces/mount_options.hpp"
#include "namespaces/namespaces.hpp"

namespace tarn::ns::detail {

// ---- rootfs.cpp / mounts.cpp (before pivot_root: paths are host paths)
// Sets / propagation (rootfsPropagation, default rslave) and bind-mounts the rootfs on
// itself so it is a mount point pivot_root accepts. With `overlay`, what gets mounted
// there is an overlay of the rootfs under a private tmpfs (InitOptions::rootfs_overlay).
void prepare_rootfs(const oci::Config& c, const std::string& rootfs, bool overlay);
// Every linux mount of config.mounts, resolved inside the rootfs. `idmapped` holds, by
// mount index, the trees prepare_idmapped_mounts built (-1 elsewhere); they are closed
// once attached.
struct CgroupBind {
    std::string name;    // the hierarchy's directory under the cgroup mount: "cpu,cpuacct", "unified"
    std::string source;  // the container's cgroup in it, on the host: /sys/fs/cgroup/cpu,cpuacct/tarn/c1
};
// In the runtime, before clone: for a config with a cgroup mount, the container's
// cgroup directory (`cgroup_path`, or where the runtime itself is when that is empty)
// in every v1 hierarchy, or on a unified host without a cgroup namespace in the config
// its one cgroup2 directory (name ""); on a unified host with one, nothing.
std::vector<CgroupBind> cgroup_binds(const oci::Config& c, const std::string& cgroup_path);
void mount_all(const oci::Config& c, const std::string& rootfs, std::span<const int> idmapped,
               std::span<const CgroupBind> cgroups);
// A detached clone of a bind mount's source (rbind: recursive) with the mount's
// attributes (ro, nosuid, rro, ...) already set.
UniqueFd clone_bind_tree(const oci::Mount& m, const MountOptions& o);

// ---- idmap.cpp (in the runtime, before clone)
// The bind mount wants an idmapping: uidMappings/gidMappings, or idmap/ridmap.
bool wants_idmap(const oci::Mount& m, const MountOptions& o);
// For each mount that wants one, a detached bind tree carrying its idmapping, by mount
// index (an empty vector when none does). Errors name the mount ("mounts[2]: ...").
std::vector<UniqueFd> prepare_idmapped_mounts(const oci::Config& c);
// "containerID hostID size\n" lines, as uid_map and gid_map take them.
std::string format_id_map(const std::vector<oci::IdMapping>& m);
// The default devices, linux.devices and the /dev symlinks (when /dev is a fresh tmpfs).
void create_devices(const oci::Config& c, const std::string& rootfs, bool in_userns);
// pivot_root (or chroot with no_pivot) into the rootfs; the old root is detached.
void enter_rootfs(const std::string& rootfs, bool no_pivot);
// After pivot: maskedPaths, readonlyPaths, root.readonly, rootfsPropagation for shared roots.
void finish_rootfs(const oci::Config& c);
// No mount namespace in the config: takes the finished root (built in a scratch mount
// namespace) as a detached tree, returns to the runtime's namespace `mnt_ns` and
// chroots into the tree.
void enter_detached_root(int mnt_ns);

// ---- process.cpp
void set_hostname(const oci::Config& c);
void apply_sysctl(const oci::Config& c);
void apply_rlimits(const oci::Process& p);
void apply_oom_score_adj(const oci::Process& p);
void apply_scheduling(const oci::Process& p);  // scheduler, ioPriority, personality is in config
void apply_personality(const oci::Config& c);
// An anonymous session keyring of the process's own, for `exec` (see design.md,
// Security measures: session keyrings).
void join_fresh_session_keyring();
void apply_cpu_affinity(const std::string& cpus, const char* field);
// setgroups + setresgid + setresuid, keeping capabilities across the uid change.
void switch_user(const oci::User& u);
void apply_umask(const oci::User& u);
void change_cwd(const std::string& cwd);

// The capability sets a process ends with, while it still holds CAP_SYS_ADMIN to load
// its seccomp filter without no_new_privs (the kernel's condition for that load).
// Empty when nothing is held.
class FinalCapabilities {
public:
    FinalCapabilities() = default;
    explicit FinalCapabilities(void* caps) : caps_(caps) {}  // a cap_t, owned
    FinalCapabilities(FinalCapabilities&& o) noexcept : caps_(std::exchange(o.caps_, nullptr)) {}
    FinalCapabilities& operator=(FinalCapabilities&& o) noexcept;
    FinalCapabilities(const FinalCapabilities&) = delete;
    FinalCapabilities& operator=(const FinalCapabilities&) = delete;
    ~FinalCapabilities();
    // Drops what was held (one capset): called once the filter is loaded.
    void release();

private:
    void* caps_ = nullptr;
};

// The process half shared by the init and `exec`: rlimits, oom score, scheduling,
// cpu affinity, capabilities around the user switch, no_new_privs, umask and cwd.
// `hold_sys_admin`: a seccomp filter is to be loaded without no_new_privs; the process
// keeps CAP_SYS_ADMIN until FinalCapabilities::release, right after the load.
FinalCapabilities become_workload(const oci::Process& p, Timings& t, bool bounding_dropped = false,
                                  bool hold_sys_admin = false);
// Whether the process must hold CAP_SYS_ADMIN for its filter (see become_workload).
inline bool seccomp_needs_sys_admin(const oci::Process& p, bool has_filter) {
    return has_filter && !p.no_new_privileges;
}

// ---- claim.cpp (warm pool)
// Length-prefixed strings plus the three stdio fds, in one SOCK_SEQPACKET message.
void send_claim(int sock, const Claim& c);
// False on EOF (the daemon went away). The stdio fds land in claim.stdio (owned now).
bool recv_claim(int sock, Claim& claim);
// Attaches the claim's bind mounts (after pivot_root, still privileged).
void mount_claim_binds(Claim& claim);
// dup2s the stdio, merges env, changes to the claim's cwd; args replace `args`.
void apply_claim(Claim& claim, std::vector<std::string>& args, std::vector<std::string>& env);

// ---- spawn.cpp
class SyncSocket;
struct Plan {
    uint64_t new_flags = 0;     // namespaces created by clone3
    bool intermediate = false;  // joins by path or sets time offsets first
    bool new_userns = false;
    bool new_timens = false;
    // The init unshares its cgroup namespace itself once the parent has placed it in
    // its cgroup (no CLONE_INTO_CGROUP: v1 and hybrid hosts), so the namespace's root
    // is the container's cgroup, not the runtime's.
    bool late_cgroupns = false;
    // The init moves itself into its v1 cgroups (InitOptions::cgroup_self_join); not
    // through an intermediate, which is not the init and not born in the cgroup2 one.
    bool self_join_cgroups = false;
    // Detached idmapped bind trees the init inherits across clone, by mount index.
    std::vector<int> idmapped_trees;
    // The cgroup mount's binds (cgroup_binds).
    std::vector<CgroupBind> cgroup_binds;
    // exec.fifo, opened O_RDWR by the runtime before clone and inherited by the init:
    // in a user namespace whose root is not host root, the init could no longer open
    // the host root's 0600 fifo in a 0700 state directory by path. -1: none.
    int exec_fifo = -1;
    // The init's end of InitOptions::report_fifo (O_RDWR, close-on-exec), or -1.
    int report_fd = -1;
};
Plan make_plan(const oci::Config& c, const InitOptions& o);
void write_id_maps(pid_t pid, const oci::Linux& l);
// The container's init: every phase after clone, in order; returns only by throwing.
void init_main(const oci::Config& c, const InitOptions& o, const ChildSteps& steps, SyncSocket& sock, const Plan& plan);

// ---- capabilities.cpp
// Capability names ("CAP_SYS_ADMIN") to numbers; unknown names throw naming the field.
std::vector<int> capability_numbers(const std::vector<std::string>& names, const char* field);
void drop_bounding(const oci::Capabilities& caps);
// Sets effective, permitted and inheritable, then the ambient set (leaving out what
// unraisable_ambient names). With `hold_sys_admin`, see become_workload.
FinalCapabilities apply_capabilities(const oci::Capabilities& caps, bool hold_sys_admin = false);
// No process.capabilities: the sets are what the user switch left; CAP_SYS_ADMIN is
// made effective until release.
FinalCapabilities hold_sys_admin();

// ---- exec.cpp
// The executable for args[0]: a path with '/' as is, otherwise searched in the PATH of
// the container's env (not the runtime's). Throws the runc-style "executable file not found".
std::string find_executable(const std::vector<std::string>& args, const std::vector<std::string>& env);
// Marks every fd >= 3 + preserve_fds close-on-exec except none: called last before execve.
void close_fds_on_exec(unsigned preserve_fds);
// Closes inherited fds >= 3 + preserve_fds except those listed (runtime's own), at once:
// leaked fds must not be reachable through /proc/self/fd while the init sets up.
void close_inherited_fds(unsigned preserve_fds, const std::vector<int>& keep);
// Moves the calling (single-threaded) process into cgroup v1 hierarchies by writing
// "0" to each `tasks` fd, then closes them (InitOptions::cgroup_self_join).
void join_cgroups_self(const std::vector<std::pair<int, std::string>>& files);
[[noreturn]] void exec_process(const std::string& path, const std::vector<std::string>& args,
                               const std::vector<std::string>& env);

// ---- seccomp.cpp
// Built before the init reports ready (a bad profile fails create), loaded last
// before execve, so the runtime's own remaining syscalls are not filtered.
class SeccompFilter {
public:
    SeccompFilter() = default;
    SeccompFilter(SeccompFilter&& o) noexcept
        : ctx_(std::exchange(o.ctx_, nullptr)), notify_(o.notify_), no_new_privs_(o.no_new_privs_),
          flags_(o.flags_), bpf_(std::move(o.bpf_)) {}
    SeccompFilter& operator=(SeccompFilter&& o) noexcept {
        std::swap(ctx_, o.ctx_);
        std::swap(notify_, o.notify_);
        std::swap(no_new_privs_, o.no_new_privs_);
        std::swap(flags_, o.flags_);
        std::swap(bpf_, o.bpf_);
        return *this;
    }
    // Some rule has SCMP_ACT_NOTIFY: loading yields a listener fd.
    bool notifies() const { return notify_; }
    SeccompFilter(const SeccompFilter&) = delete;
    SeccompFilter& operator=(const SeccompFilter&) = delete;
    ~SeccompFilter();

private:
    friend SeccompFilter build_seccomp(const oci::Seccomp& s, bool no_new_privs);
    friend UniqueFd load_seccomp(SeccompFilter& f);
    void* ctx_ = nullptr;
    bool notify_ = false;
    bool no_new_privs_ = true;
    unsigned long flags_ = 0;  // SECCOMP_FILTER_FLAG_* asked for
    // The exported program, when it must be loaded with flags libseccomp cannot set
    // (WAIT_KILLABLE_RECV); empty: seccomp_load.
    std::vector<sock_filter> bpf_;
};
SeccompFilter build_seccomp(const oci::Seccomp& s, bool no_new_privs);
// Loads the filter into the calling thread; returns the notify fd when it has one.
UniqueFd load_seccomp(SeccompFilter& f);
// Sends the containerProcessState JSON and the notify fd over the connected
// listenerPath socket (one message, SCM_RIGHTS).
void send_seccomp_listener(int sock, int notify_fd, const std::string& state_json);
// Loads the filter last before execve and, with a listener, hands it the notify fd.
void load_seccomp_and_notify(SeccompFilter& f, int listener, const std::string& state_json);

// ---- lsm.cpp
// Sets process.apparmorProfile / process.selinuxLabel for the next execve through our
// own /proc/self/attr (verified to be procfs). Before the user switch: once
// non-dumpable and unprivileged, those files are no longer ours to write.
void apply_lsm_labels(const oci::Process& p);

// ---- console.cpp
// Opens a new pty in the container's devpts, makes its slave the stdio and controlling
// terminal, and returns the master.
UniqueFd setup_console(const oci::Process& p);

}  // namespace tarn::ns::detail
