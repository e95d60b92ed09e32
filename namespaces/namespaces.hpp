// Building the isolated process: clone3 with namespace flags, id maps, rootfs and
// mounts, devices, process attributes, capabilities, and the final exec.
//
// Sandbox setup is a sequence of named phases; each is timed so the cost of a
// start can be read phase by phase (`tarn --debug`).
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "oci/oci.hpp"

namespace tarn::ns {

enum class Phase {
    state,  // the container's state directory and records (create)
    lease,  // borrowing a pool sandbox (create, annotated bundles)
    clone,
    idmaps,
    cgroup,
    rootfs,
    mounts,
    devices,
    hooks,
    pivot,
    hostname,
    sysctl,
    rlimits,
    process,
    capabilities,
    seccomp,
    park,
    exec,
    count_
};
std::string_view to_string(Phase p);

// Per-phase wall time in nanoseconds. Plain data so the child can send it to the parent.
struct Timings {
    std::array<uint64_t, static_cast<size_t>(Phase::count_)> ns{};
    void add(Phase p, std::chrono::steady_clock::duration d) {
        ns[static_cast<size_t>(p)] += std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    }
    void merge(const Timings& o) {
        for (size_t i = 0; i < ns.size(); ++i) ns[i] += o.ns[i];
    }
    // "clone=0.21ms idmaps=0.00ms ..." (phases that took no time are left out).
    std::string report() const;
};

// Times the rest of the enclosing scope into one phase.
class PhaseScope {
public:
    PhaseScope(Timings& t, Phase p) : t_(t), p_(p), start_(std::chrono::steady_clock::now()) {}
    ~PhaseScope() { t_.add(p_, std::chrono::steady_clock::now() - start_); }
    PhaseScope(const PhaseScope&) = delete;
    PhaseScope& operator=(const PhaseScope&) = delete;

private:
    Timings& t_;
    Phase p_;
    std::chrono::steady_clock::time_point start_;
};

// The parent's work at the points where the container's init waits for it.
// Each runs in the calling (runtime) process; an exception aborts the spawn.
struct ParentSteps {
    // After clone, before id maps: place the init in its cgroup.
    std::function<void(pid_t)> place_in_cgroup;
    // After mounts, before pivot_root: prestart + createRuntime hooks.
    std::function<void(pid_t)> create_runtime;
};

// Work the init itself runs, in the container's namespaces.
struct ChildSteps {
    // Before pivot_root: createContainer hooks (paths resolve in the runtime's mount ns).
    // The argument is the init's pid as the runtime sees it, for the hooks' state.
    std::function<void(pid_t)> create_container;
    // After `start` released the init, before exec: startContainer hooks.
    std::function<void(pid_t)> start_container;
};

struct InitOptions {
    std::string rootfs;        // absolute host path of the root filesystem
    bool no_pivot = false;     // chroot instead of pivot_root (ramfs roots)
    unsigned preserve_fds = 0; // fds 3..3+N-1 pass to the workload
    // Path of exec.fifo: `create` parks the init on it until `start`. Empty: exec at once.
    std::string exec_fifo;
    // With exec_fifo: a fifo the init reports on once `start` released it. It writes
    // "+" when only execve is left, the error text when something fails; its end
    // closes on execve. `start` opens the read end before releasing the init.
    std::string report_fifo;
    // Unix socket to send the pty master to (--console-socket). -1: none.
    int console_socket = -1;
    // With process.terminal and no console socket (`run` in the foreground): the parent
    // gets the pty master back and proxies it.
    bool want_pty_master = false;
    // A cgroup v2 directory fd: the init is born in it (CLONE_INTO_CGROUP), so not one
    // of its instructions runs outside its limits. -1: place_in_cgroup does it instead.
    int cgroup_fd = -1;
    // cgroup v1 `tasks` files (fd, path for errors) the init writes "0" to before
    // anything else, moving itself into each hierarchy (cgroups::Manager::open_entry);
    // closed right after. Non-empty: place_in_cgroup is not called, unless the init is
    // cloned by an intermediate (namespaces joined by path), which ignores these.
    std::vector<std::pair<int, std::string>> cgroup_self_join;
    // The init's cgroup path ("/tarn/c1"): on v1 and hybrid hosts the spec's cgroup
    // mount shows that cgroup in every hierarchy. Empty: the runtime's own.
    std::string cgroup_path;
    // A fresh session keyring named after the container, so it never shares the
    // caller's keys (--no-new-keyring leaves the caller's). Empty: keep it.
    std::string session_keyring;
    // linux.seccomp.listenerPath, connected by the runtime before the init starts (after
    // pivot_root the init could not reach the host's path): the init sends the notify fd
    // and seccomp_state(its host pid) there once the filter is loaded. -1: none.
    int seccomp_listener = -1;
    std::function<std::string(pid_t)> seccomp_state;
    // Warm pool: after setup the init reports ready and waits on the sync socket for a
    // Claim (ParkedInit::claim) instead of exec'ing; the socket closing ends it.
    bool await_claim = false;
    // The rootfs becomes the lower layer of an overlay whose upper layer is a tmpfs
    // private to this init: many sandboxes share one template rootfs, and each one's
    // writes stay its own (and are charged to its cgroup).
    bool rootfs_overlay = false;
    // ParkedInit only: clone with CLONE_PARENT, so the init is the caller's parent's
    // child (the pool's spawner processes make sandboxes the daemon reaps).
    bool clone_parent = false;
};

struct Spawned {
    pid_t pid = -1;
    UniqueFd pidfd;
    UniqueFd pty_master;  // only with want_pty_master
    Timings timings;      // parent and child phases together
};

// Starts a container init for `config` (validated), runs the setup phases and returns
// once the init is parked on exec.fifo (or has exec'd, when exec_fifo is empty).
// Any failure kills the half-made init and throws with the failing phase's message.
Spawned spawn_init(const oci::Config& config, const InitOptions& opts, const ParentSteps& parent,
                   const ChildSteps& child);

// `exec`: a new process inside the namespaces of a running container (its init's pidfd).
struct ExecOptions {
    unsigned preserve_fds = 0;
    int console_socket = -1;
    bool want_pty_master = false;
    // Namespaces the container has (from its config); joined through the pidfd.
    std::vector<oci::NamespaceType> namespaces;
    // Container's rootfs mount is already the root of its mount namespace.
    std::optional<oci::Seccomp> seccomp;
    // As InitOptions: where the exec'd process's notify fd goes.
    int seccomp_listener = -1;
    std::function<std::string(pid_t)> seccomp_state;
    // A fresh anonymous session keyring instead of the caller's (which would give the
    // container every key its caller holds); false for --no-new-keyring containers.
    bool new_session_keyring = false;
};
Spawned spawn_exec(int init_pidfd, pid_t init_pid, const oci::Process& process, const ExecOptions& opts,
                   const std::function<void(pid_t)>& place_in_cgroup);

// Whether this kernel can make idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP, 5.12).
// Which filesystems take them is the filesystem's business: a create that asks for one
// on a filesystem without support fails naming the mount.
bool idmapped_mounts_supported();

// Linux security modules (lsm.cpp). Whether AppArmor / SELinux is active on this host,
// and the check create and exec make first: a profile or label the host cannot apply
// is an error naming the field, never silently dropped.
bool apparmor_enabled();
bool selinux_enabled();
void check_lsm(const oci::Process* p, const oci::Linux* l);
// process.capabilities.ambient entries the kernel would refuse to raise: not also in
// inheritable and permitted. runc leaves them out of the ambient set instead of failing
// (older `runc spec` and podman write such configs); tarn does too, and the runtime
// names them at debug level.
std::vector<std::string> unraisable_ambient(const oci::Capabilities& caps);
// ---- warm pool: sandboxes set up ahead of the request ------------------------

// The per-request part of process a claim hands a parked sandbox.
struct Claim {
    std::vector<std::string> args;  // required
    std::vector<std::string> env;   // "K=V": added to process.env, replacing the same K
    std::string cwd;                // empty: process.cwd
    // stdin, stdout, stderr for the workload (borrowed; sent with SCM_RIGHTS).
    std::array<int, 3> stdio{-1, -1, -1};
    // Extra bind mounts: detached mount trees (open_tree(OPEN_TREE_CLONE) in the
    // sender's namespace, borrowed) and where they go inside the container.
    struct Bind {
        int tree = -1;
        std::string destination;
    };
    std::vector<Bind> binds;
};
// The largest encoded claim a sandbox accepts (args + env + cwd).
inline constexpr size_t kMaxClaimBytes = 128 * 1024;
inline constexpr size_t kMaxClaimBinds = 16;

// A container init spawned without blocking, for a daemon keeping many sandboxes in
// flight: poll fd() for input and call advance() until it returns true (parked),
// then claim() hands the init its request and it execs. Templates that need an
// intermediate process (namespaces joined by path, a time namespace) or hooks are
// refused. Until release(), destroying the object kills and reaps the init.
class ParkedInit {
public:
    // Clones the init (into `opts.cgroup_fd` when >= 0, else `place` puts it in its
    // cgroup), writes its id maps and lets it start; returns at once.
    ParkedInit(const oci::Config& config, const InitOptions& opts, const std::function<void(pid_t)>& place = {});
    ~ParkedInit();
    ParkedInit(const ParkedInit&) = delete;
    ParkedInit& operator=(const ParkedInit&) = delete;

    int fd() const { return sock_.get(); }
    pid_t pid() const { return pid_; }
    int pidfd() const { return pidfd_.get(); }
    bool parked() const { return state_ == State::parked; }
    const Timings& timings() const { return timings_; }

    // One setup step when fd() is readable; true once the init is parked. A setup
    // failure throws the init's message (the init is reaped).
    bool advance();
    // Sends the request; the init applies it and execs. Throws when it cannot be sent
    // (the init died, or the claim is larger than kMaxClaimBytes).
    void claim(const Claim& c);
    // After claim(), when fd() is readable: "" once the workload runs (the init's end
    // closed on exec), otherwise why it could not start.
    std::string claim_outcome();
    // A parked init another process set up (its socket, pidfd and pid passed over
    // SCM_RIGHTS); `take_fds` is that process's half.
    static std::unique_ptr<ParkedInit> adopt(UniqueFd sock, UniqueFd pidfd, pid_t pid);
    std::pair<UniqueFd, UniqueFd> take_fds();
    // Signals the init (or, once claimed, the workload) through its pidfd.
    void signal(int sig) const;
    // The caller reaps the process from now on (waitid on pidfd()).
    void release() { released_ = true; }

private:
    ParkedInit() = default;
    enum class State { readying, parked, claimed };
    State state_ = State::readying;
    UniqueFd sock_;
    UniqueFd pidfd_;
    pid_t pid_ = -1;
    bool released_ = false;
    Timings timings_;
    std::chrono::steady_clock::time_point t0_;
};

// Sends a fd over a unix socket with SCM_RIGHTS (console socket protocol).
void send_fd(int sock, int fd, std::string_view name);
int recv_fd(int sock);

// One message and its fds (SCM_RIGHTS) over a unix socket, EINTR retried; errors
// say `what`. The most fds one message carries:
inline constexpr size_t kMaxPassedFds = 24;
size_t send_with_fds(int sock, std::string_view data, std::span<const int> fds, const char* what);
struct Received {
    size_t bytes = 0;  // 0 with no fds: the peer closed
    bool truncated = false;      // the message was larger than the buffer
    bool fds_truncated = false;  // more fds than kMaxPassedFds came; they were closed
};
// Received fds are close-on-exec and appended to `fds` (closed when it is null).
Received recv_with_fds(int sock, std::span<char> buf, std::vector<UniqueFd>* fds, const char* what);

// Start time of a process in clock ticks since boot (/proc/<pid>/stat field 22), or 0
// when the process does not exist. Used to tell a container's init from a reused pid.
uint64_t process_start_time(pid_t pid);

// Whether this process runs in a user namespace other than the initial one (its
// uid_map is not the identity of every id): rootless podman runs the runtime as root
// of such a namespace.
bool in_user_namespace();

}  // namespace tarn::ns
