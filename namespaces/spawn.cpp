#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "namespaces/namespaces.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/sync.hpp"
#include "namespaces/syscalls.hpp"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

namespace tarn::ns {

std::string_view to_string(Phase p) {
    static constexpr std::string_view names[] = {
        "state", "lease",    "clone",  "idmaps",  "cgroup",  "rootfs",       "mounts",  "devices", "hooks",
        "pivot", "hostname", "sysctl", "rlimits", "process", "capabilities", "seccomp", "park",    "exec",
    };
    static_assert(std::size(names) == static_cast<size_t>(Phase::count_));
    return names[static_cast<size_t>(p)];
}

std::string Timings::report() const {
    std::string out;
    uint64_t total = 0;
    for (size_t i = 0; i < ns.size(); ++i) {
        if (!ns[i]) continue;
        total += ns[i];
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s=%.3fms ", to_string(static_cast<Phase>(i)).data(), ns[i] / 1e6);
        out += buf;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "total=%.3fms", total / 1e6);
    return out + buf;
}

namespace detail {

int clone_flag(oci::NamespaceType t) {
    switch (t) {
        case oci::NamespaceType::pid: return CLONE_NEWPID;
        case oci::NamespaceType::network: return CLONE_NEWNET;
        case oci::NamespaceType::mount: return CLONE_NEWNS;
        case oci::NamespaceType::ipc: return CLONE_NEWIPC;
        case oci::NamespaceType::uts: return CLONE_NEWUTS;
        case oci::NamespaceType::user: return CLONE_NEWUSER;
        case oci::NamespaceType::cgroup: return CLONE_NEWCGROUP;
        case oci::NamespaceType::time: return CLONE_NEWTIME;
    }
    return 0;
}

namespace {

// Whether the kernel takes `maps` from an unprivileged writer: one line mapping the
// writer's own id (user_namespaces(7), "Defining user and group ID mappings").
bool own_id_only(const std::vector<oci::IdMapping>& maps, uint32_t own) {
    return maps.size() == 1 && maps[0].size == 1 && maps[0].host_id == own;
}

// newuidmap/newgidmap (shadow's setuid helpers) write ranges /etc/subuid and
// /etc/subgid grant the caller. Their stderr says what they refused.
void run_id_map_helper(const std::string& helper, pid_t pid, const std::vector<oci::IdMapping>& maps) {
    std::string path;
    for (const char* dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/"})
        if (::access((std::string(dir) + helper).c_str(), X_OK) == 0) {
            path = std::string(dir) + helper;
            break;
        }
    if (path.empty())
        throw Error("more than the caller's own id, as an unprivileged user: " + helper +
                    " not found (install Debian's uidmap)");
    std::vector<std::string> args = {path, std::to_string(pid)};
    for (const oci::IdMapping& m : maps) {
        args.push_back(std::to_string(m.container_id));
        args.push_back(std::to_string(m.host_id));
        args.push_back(std::to_string(m.size));
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int err[2];
    if (::pipe2(err, O_CLOEXEC) < 0) throw_errno("pipe for " + helper);
    UniqueFd r(err[0]), w(err[1]);
    pid_t child = ::fork();
    if (child < 0) throw_errno("fork " + helper);
    if (child == 0) {
        int null = ::open("/dev/null", O_RDWR);
        if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(w.get(), 2) < 0) ::_exit(126);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    w.reset();
    std::string said;
    char buf[512];
    ssize_t n;
    while ((n = ::read(r.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && said.size() < 4096) said.append(buf, static_cast<size_t>(n));
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    std::string asked;
    for (const oci::IdMapping& m : maps)
        asked += (asked.empty() ? "" : ", ") + std::to_string(m.container_id) + "->" + std::to_string(m.host_id) +
                 " (" + std::to_string(m.size) + ")";
    throw Error(path + " " + asked + ": " +
                (said.empty() ? (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                                    : "signal " + std::to_string(WTERMSIG(status)))
                              : said) +
                " (see /etc/" + (helper == "newuidmap" ? "subuid" : "subgid") + ")");
}

}  // namespace

void write_id_maps(pid_t pid, const oci::Linux& l) {
    std::string base = "/proc/" + std::to_string(pid) + "/";
    const bool privileged = ::geteuid() == 0;
    try {
        if (l.uid_mappings.empty()) {
        } else if (privileged || own_id_only(l.uid_mappings, ::geteuid())) {
            write_file(base + "uid_map", format_id_map(l.uid_mappings));
        } else {
            run_id_map_helper("newuidmap", pid, l.uid_mappings);
        }
    } catch (const Error& e) {
        throw e.wrapped("linux.uidMappings");
    }
    try {
        if (l.gid_mappings.empty()) {
        } else if (privileged || own_id_only(l.gid_mappings, ::getegid())) {
            // Without CAP_SETGID in the parent namespace the kernel only takes a gid map
            // once setgroups is denied (user_namespaces(7)); newgidmap, with its ranges,
            // leaves setgroups allowed.
            if (!privileged) write_file(base + "setgroups", "deny");
            write_file(base + "gid_map", format_id_map(l.gid_mappings));
        } else {
            run_id_map_helper("newgidmap", pid, l.gid_mappings);
        }
    } catch (const Error& e) {
        throw e.wrapped("linux.gidMappings");
    }
}

namespace {

// Namespaces to join by path, user first: the others are then joined with the
// privileges the container's user namespace grants.
void join_namespaces(const oci::Linux& l) {
    std::vector<const oci::Namespace*> order;
    for (const oci::Namespace& n : l.namespaces)
        if (!n.path.empty() && n.type == oci::NamespaceType::user) order.push_back(&n);
    for (const oci::Namespace& n : l.namespaces)
        if (!n.path.empty() && n.type != oci::NamespaceType::user) order.push_back(&n);
    for (const oci::Namespace* n : order) {
        UniqueFd fd(::open(n->path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("linux.namespaces: open " + std::string(oci::to_string(n->type)) + " namespace " + n->path);
        if (::setns(fd.get(), clone_flag(n->type)) < 0)
            throw_errno("linux.namespaces: join " + std::string(oci::to_string(n->type)) + " namespace " + n->path);
    }
}

void set_time_offsets(const oci::Linux& l) {
    if (::unshare(CLONE_NEWTIME) < 0) throw_errno("linux.namespaces: new time namespace");
    std::string s;
    for (const auto& [clock, off] : l.time_offsets)
        s += clock + " " + std::to_string(off.secs) + " " + std::to_string(off.nanosecs) + "\n";
    if (!s.empty()) {
        try {
            write_file("/proc/self/timens_offsets", s);
        } catch (const Error& e) {
            throw e.wrapped("linux.timeOffsets");
        }
    }
}

}  // namespace

Plan make_plan(const oci::Config& c, const InitOptions& o) {
    Plan p;
    p.cgroup_binds = detail::cgroup_binds(c, o.cgroup_path);
    if (!c.linux) return p;
    for (const oci::Namespace& n : c.linux->namespaces) {
        if (!n.path.empty()) {
            p.intermediate = true;
        } else if (n.type == oci::NamespaceType::time) {
            // Offsets can only be written before the first process enters the namespace.
            p.new_timens = p.intermediate = true;
        } else {
            p.new_flags |= static_cast<uint64_t>(clone_flag(n.type));
            if (n.type == oci::NamespaceType::user) p.new_userns = true;
        }
    }
    p.self_join_cgroups = !o.cgroup_self_join.empty() && !p.intermediate;
    // The intermediate path places the init after clone even on v2; an init that joins
    // v1 hierarchies itself is in its cgroups only once it has.
    if ((o.cgroup_fd < 0 || p.intermediate || p.self_join_cgroups) && (p.new_flags & CLONE_NEWCGROUP)) {
        p.new_flags &= ~static_cast<uint64_t>(CLONE_NEWCGROUP);
        p.late_cgroupns = true;
    }
    return p;
}

void join_cgroups_self(const std::vector<std::pair<int, std::string>>& files) {
    // "0" is the writing thread itself: the kernel moves it without taking the
    // threadgroup rwsem, since a thread cannot exit or exec while it writes. This
    // process has one thread, so the thread is the process.
    for (const auto& [fd, path] : files) {
        ssize_t n;
        while ((n = ::write(fd, "0", 1)) < 0 && errno == EINTR) {
        }
        if (n != 1) throw_errno("join cgroup: write 0 to " + path);
    }
    // Host cgroup files must not reach the container.
    for (const auto& [fd, path] : files) ::close(fd);
}

namespace {

void report_to_start(int fd, std::string_view text) {
    if (fd < 0) return;
    // One write of at most PIPE_BUF bytes is atomic: `start` reads whole messages.
    (void)!::write(fd, text.data(), std::min(text.size(), static_cast<size_t>(PIPE_BUF)));
}

}  // namespace

// The container's init: every phase after clone, in order.
void init_main(const oci::Config& c, const InitOptions& o, const ChildSteps& steps, SyncSocket& sock, const Plan& plan) {
    Timings t;
    const oci::Process& proc = *c.process;
    // A user namespace joined by path counts as much as a new one: the init must become
    // its root and cannot mknod there either.
    const bool userns = c.linux && c.linux->find_namespace(oci::NamespaceType::user);
    if (plan.self_join_cgroups) {
        // First, so that everything the init does is charged to its own cgroups.
        PhaseScope s(t, Phase::cgroup);
        detail::join_cgroups_self(o.cgroup_self_join);
    }
    // A parked init's runtime sends its host pid now: it has no hooks, so nothing runs
    // between its mounts and its pivot and the "mounted" round below is skipped.
    const pid_t first_go = sock.expect(MsgType::go, "runtime went away").value;
    if (userns) {
        // Become the container's root (if mapped) so files created below belong to it.
        if (::setresgid(0, 0, 0) < 0 && errno != EINVAL) throw_errno("setgid 0 in user namespace");
        if (::setresuid(0, 0, 0) < 0 && errno != EINVAL) throw_errno("setuid 0 in user namespace");
    }
    if (plan.late_cgroupns && ::unshare(CLONE_NEWCGROUP) < 0) throw_errno("linux.namespaces: new cgroup namespace");
    // Without a mount namespace the container shares the runtime's (config-linux.md: a
    // namespace type not listed is inherited). Its filesystem is still built the usual
    // way, but in a scratch namespace of its own, then taken as one detached tree and
    // entered with chroot from the runtime's namespace: the caller's mount table never
    // holds one of its mounts, on success or on any failure, and the tree goes away
    // with the container's last process.
    const bool mount_ns = c.linux && c.linux->find_namespace(oci::NamespaceType::mount);
    UniqueFd shared_mnt_ns;
    if (!mount_ns) {
        // Returning to the runtime's namespace takes CAP_SYS_ADMIN in the user namespace
        // that owns it, which a container's user namespace never grants.
        if (userns)
            throw Error("linux.namespaces: a container with a user namespace needs a mount namespace too");
        if (o.await_claim) throw Error("linux.namespaces: a pool template needs a mount namespace");
        shared_mnt_ns.reset(::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
        if (!shared_mnt_ns) throw_errno("open /proc/self/ns/mnt");
        if (::unshare(CLONE_NEWNS) < 0) throw_errno("unshare a scratch mount namespace");
    }
    {
        PhaseScope s(t, Phase::rootfs);
        detail::prepare_rootfs(c, o.rootfs, o.rootfs_overlay);
    }
    {
        PhaseScope s(t, Phase::mounts);
        detail::mount_all(c, o.rootfs, plan.idmapped_trees, plan.cgroup_binds);
    }
    {
        PhaseScope s(t, Phase::devices);
        detail::create_devices(c, o.rootfs, userns);
    }
    // The runtime's O_RDWR open (an open that does not block), inherited across clone;
    // `start` writes one byte to release us and sees our end close (close-on-exec) once
    // the workload runs.
    UniqueFd fifo;
    if (!o.exec_fifo.empty()) {
        if (plan.exec_fifo < 0) throw Error("open " + o.exec_fifo + ": not opened by the runtime");
        fifo.reset(plan.exec_fifo);
    }
    {
        // Before the createContainer hooks, so they see the container's names.
        PhaseScope s(t, Phase::hostname);
        detail::set_hostname(c);
    }
    pid_t host_pid = first_go;
    if (!o.await_claim) {
        sock.send(MsgType::mounted);
        host_pid = sock.expect(MsgType::go, "runtime went away").value;
    }
    if (steps.create_container) {
        PhaseScope s(t, Phase::hooks);
        steps.create_container(host_pid);
    }
    {
        PhaseScope s(t, Phase::pivot);
        detail::enter_rootfs(o.rootfs, o.no_pivot);
    }
    {
        // Before readonlyPaths make /proc/sys read-only.
        PhaseScope s(t, Phase::sysctl);
        detail::apply_sysctl(c);
    }
    {
        PhaseScope s(t, Phase::mounts);
        detail::finish_rootfs(c);
    }
    if (shared_mnt_ns) {
        PhaseScope s(t, Phase::pivot);
        detail::enter_detached_root(shared_mnt_ns.get());
        shared_mnt_ns.reset();
    }
    if (proc.terminal) {
        UniqueFd master = detail::setup_console(proc);
        if (o.console_socket >= 0) send_fd(o.console_socket, master.get(), "console");
        if (o.want_pty_master) sock.send(MsgType::pty, {}, nullptr, 0, master.get());
    }
    {
        PhaseScope s(t, Phase::process);
        // KEYCTL_JOIN_SESSION_KEYRING (1); keyrings may be unavailable (ENOSYS) or
        // refused by a seccomp profile around the runtime: not fatal, as with runc.
        if (!o.session_keyring.empty())
            (void)::syscall(SYS_keyctl, 1, o.session_keyring.c_str(), 0, 0, 0);
        detail::apply_personality(c);
        detail::apply_lsm_labels(proc);
    }
    // A parked sandbox learns its command, and its extra binds, only at claim time:
    // it stays privileged until then.
    const bool hold_admin = seccomp_needs_sys_admin(proc, c.linux && c.linux->seccomp);
    FinalCapabilities final_caps;
    if (!o.await_claim) final_caps = detail::become_workload(proc, t, false, hold_admin);
    std::vector<std::string> args = proc.args, env = proc.env;
    std::string exe;
    if (!o.await_claim) exe = detail::find_executable(args, env);
    detail::SeccompFilter filter;
    std::string listener_state;
    if (c.linux && c.linux->seccomp) {
        PhaseScope s(t, Phase::seccomp);
        filter = detail::build_seccomp(*c.linux->seccomp, proc.no_new_privileges);
        // Rendered now: after the filter is loaded, the fewer syscalls the better.
        if (filter.notifies() && o.seccomp_state) listener_state = o.seccomp_state(host_pid);
    }
    // From here the runtime may exit (create); the init must outlive it. A parked
    // sandbox needs no death signal: its daemon's end of the socket closing ends it.
    ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    // The bounding set only limits what an exec can gain: a parked sandbox drops it
    // now, keeping its effective capabilities for the claim's binds, and the claim
    // path is ~40 syscalls shorter.
    if (o.await_claim && proc.capabilities) detail::drop_bounding(*proc.capabilities);
    sock.send(MsgType::ready, {}, &t);
    if (o.await_claim) {
        Claim claim;
        if (!detail::recv_claim(sock.fd(), claim)) ::_exit(0);
        detail::mount_claim_binds(claim);
        final_caps = detail::become_workload(proc, t, /*bounding_dropped=*/true, hold_admin);
        detail::apply_claim(claim, args, env);
        exe = detail::find_executable(args, env);
    }
    if (fifo) {
        char b;
        ssize_t n;
        while ((n = ::read(fifo.get(), &b, 1)) < 0 && errno == EINTR) {
        }
        if (n != 1) throw_errno("wait on exec.fifo");
    }
    // `start` is another process than the `create` that made us and our sync socket's
    // peer is gone: what fails from here is written to the report fifo, which `start`
    // reads until our end closes on execve.
    try {
        if (steps.start_container) steps.start_container(host_pid);
        if (fifo) {
            // The cwd was entered at create; a directory removed since would leave the
            // workload in a deleted one.
            struct stat st;
            if (::stat(".", &st) < 0 || st.st_nlink == 0)
                throw Error("cwd " + (proc.cwd.empty() ? std::string("/") : proc.cwd) + ": removed since create", ENOENT);
        }
        detail::close_fds_on_exec(o.preserve_fds);
        detail::load_seccomp_and_notify(filter, o.seccomp_listener, listener_state);
        final_caps.release();
        // Everything but execve itself has worked: `start` tells a workload that exec'd
        // and exited at once from an init that died before it by this byte.
        report_to_start(plan.report_fd, "+");
        detail::exec_process(exe, args, env);
    } catch (const std::exception& e) {
        report_to_start(plan.report_fd, e.what());
        throw;
    }
}

void kill_and_reap(int pidfd, pid_t pid) {
    if (pidfd >= 0) detail::pidfd_send_signal(pidfd, SIGKILL);
    else if (pid > 0) ::kill(pid, SIGKILL);
    if (pid > 0) {
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
}

}  // namespace detail

using namespace detail;

Spawned spawn_init(const oci::Config& config, const InitOptions& opts, const ParentSteps& parent,
                   const ChildSteps& child) {
    if (!config.process) throw Error("process: required to start a container");
    Spawned out;
    Plan plan = make_plan(config, opts);
    // Ours until clone copies them to the init; closing them afterwards leaves the init
    // the only holder.
    std::vector<UniqueFd> idmapped;
    {
        PhaseScope s(out.timings, Phase::mounts);
        idmapped = prepare_idmapped_mounts(config);
    }
    for (const UniqueFd& t : idmapped) plan.idmapped_trees.push_back(t.get());
    // Opened here, as the runtime's user, and closed once clone has copied it: a reader
    // left in the runtime would hide from `start` that the init's end closed.
    UniqueFd fifo;
    if (!opts.exec_fifo.empty()) {
        fifo.reset(::open(opts.exec_fifo.c_str(), O_RDWR | O_CLOEXEC));
        if (!fifo) throw_errno("open " + opts.exec_fifo);
        plan.exec_fifo = fifo.get();
    }
    // Opened here, by the runtime, rather than by the init: in a user namespace the
    // init may not be allowed to open a file of the host's root. Ours closes when we
    // return; the init's on execve.
    UniqueFd report;
    if (!opts.report_fifo.empty()) {
        report.reset(::open(opts.report_fifo.c_str(), O_RDWR | O_CLOEXEC));
        if (!report) throw_errno("open " + opts.report_fifo);
        plan.report_fd = report.get();
    }
    int sv[2];
    auto t0 = std::chrono::steady_clock::now();
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd parent_end(sv[0]), child_end(sv[1]);

    // Without a user namespace, nothing in the container may open our /proc/<pid>/exe or
    // ptrace us while we set up (a joined pid namespace has other processes in it). In
    // one, a non-dumpable process's /proc files belong to the host's root and the init
    // could no longer use its own /proc/self; the sealed binary (reexec_sealed) covers it.
    bool any_userns = config.linux && config.linux->find_namespace(oci::NamespaceType::user);
    auto child_body = [&](SyncSocket& s) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (!any_userns && ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) throw_errno("prctl dumpable");
        parent_end.reset();
        std::vector<int> keep{child_end.get(), opts.console_socket, opts.seccomp_listener, plan.report_fd};
        keep.insert(keep.end(), plan.idmapped_trees.begin(), plan.idmapped_trees.end());
        if (plan.exec_fifo >= 0) keep.push_back(plan.exec_fifo);
        if (plan.self_join_cgroups)
            for (const auto& [fd, path] : opts.cgroup_self_join) keep.push_back(fd);
        detail::close_inherited_fds(opts.preserve_fds, keep);
        init_main(config, opts, child, s, plan);
    };

    int pidfd = -1;
    pid_t pid;
    pid_t intermediate = -1;
    if (!plan.intermediate) {
        CloneArgs a = init_clone_args(plan.new_flags, &pidfd, opts.cgroup_fd);
        a.exit_signal = SIGCHLD;
        pid = detail::clone3(a);
        if (pid < 0) throw_errno("clone3 container init");
        if (pid > 0) out.pidfd.reset(pidfd);
        if (pid == 0) {
            SyncSocket s(child_end.get());
            run_child(s, [&] { child_body(s); });
        }
    } else {
        // Joining namespaces by path (or creating a time namespace) changes the caller
        // for good, so a short-lived intermediate does it and clones the init as our
        // sibling-turned-child (CLONE_PARENT): the init stays the runtime's child.
        intermediate = ::fork();
        if (intermediate < 0) throw_errno("fork");
        if (intermediate == 0) {
            SyncSocket s(child_end.get());
            run_child(s, [&] {
                ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                join_namespaces(*config.linux);
                if (plan.new_timens) set_time_offsets(*config.linux);
                CloneArgs a;
                // clone3 takes no exit signal with CLONE_PARENT: the child inherits ours (SIGCHLD).
                a.flags = plan.new_flags | CLONE_PARENT;
                pid_t p = detail::clone3(a);
                if (p < 0) throw_errno("clone3 container init");
                if (p == 0) run_child(s, [&] { child_body(s); });
                s.send(MsgType::pid, {}, nullptr, p);
            });
        }
        pid = -1;
    }
    child_end.reset();
    idmapped.clear();
    fifo.reset();
    SyncSocket sock(parent_end.get());
    try {
        if (intermediate > 0) {
            Packet p = sock.expect(MsgType::pid, "container init: intermediate process died");
            pid = p.value;
            while (::waitpid(intermediate, nullptr, 0) < 0 && errno == EINTR) {
            }
            pidfd = detail::pidfd_open(pid);
            if (pidfd < 0) throw_errno("pidfd_open container init");
            out.pidfd.reset(pidfd);
        }
        out.pid = pid;
        out.timings.add(Phase::clone, std::chrono::steady_clock::now() - t0);
        if (parent.place_in_cgroup && (opts.cgroup_fd < 0 || plan.intermediate) && !plan.self_join_cgroups) {
            PhaseScope s(out.timings, Phase::cgroup);
            parent.place_in_cgroup(pid);
        }
        if (plan.new_userns) {
            PhaseScope s(out.timings, Phase::idmaps);
            write_id_maps(pid, *config.linux);
        }
        sock.send(MsgType::go);
        sock.expect(MsgType::mounted, "container init died during mounts");
        if (parent.create_runtime) {
            PhaseScope s(out.timings, Phase::hooks);
            parent.create_runtime(pid);
        }
        sock.send(MsgType::go, {}, nullptr, pid);
        out.timings.merge(sock.expect_ready(out.pty_master, "container init died during setup").timings);
        if (opts.exec_fifo.empty()) {
            auto te = std::chrono::steady_clock::now();
            sock.expect_exec();
            out.timings.add(Phase::exec, std::chrono::steady_clock::now() - te);
        }
    } catch (...) {
        if (intermediate > 0 && pid < 0) kill_and_reap(-1, intermediate);
        kill_and_reap(out.pidfd.get(), pid);
        throw;
    }
    return out;
}

bool in_user_namespace() {
    std::string map;
    try {
        map = read_file("/proc/self/uid_map");
    } catch (const Error&) {
        return false;
    }
    unsigned long inside = 1, outside = 1, count = 0;
    return std::sscanf(map.c_str(), "%lu %lu %lu", &inside, &outside, &count) != 3 || inside != 0 ||
           outside != 0 || count != 4294967295UL;
}

uint64_t process_start_time(pid_t pid) {
    std::string stat;
    try {
        stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    } catch (const Error&) {
        return 0;
    }
    // comm may hold spaces and parentheses: fields restart after the last ')'.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    size_t pos = close + 2;
    for (int field = 3; field < 22; ++field) {
        pos = stat.find(' ', pos);
        if (pos == std::string::npos) return 0;
        ++pos;
    }
    // A zombie has exited: it is no longer the running container.
    if (stat[close + 2] == 'Z' || stat[close + 2] == 'X') return 0;
    return std::strtoull(stat.c_str() + pos, nullptr, 10);
}

}  // namespace tarn::ns
