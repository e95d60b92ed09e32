#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "namespaces/namespaces.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/sync.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns {
namespace {

using namespace detail;

void exec_main(const oci::Process& proc, const ExecOptions& o, SyncSocket& sock) {
    Timings t;
    pid_t host_pid = sock.expect(MsgType::go, "runtime went away").value;
    if (proc.terminal) {
        UniqueFd master = detail::setup_console(proc);
        if (o.console_socket >= 0) send_fd(o.console_socket, master.get(), "console");
        if (o.want_pty_master) sock.send(MsgType::pty, {}, nullptr, 0, master.get());
    }
    if (o.new_session_keyring) detail::join_fresh_session_keyring();
    detail::apply_lsm_labels(proc);
    detail::FinalCapabilities final_caps =
        detail::become_workload(proc, t, false, detail::seccomp_needs_sys_admin(proc, o.seccomp.has_value()));
    std::string exe = detail::find_executable(proc.args, proc.env);
    detail::SeccompFilter filter;
    std::string listener_state;
    if (o.seccomp) filter = detail::build_seccomp(*o.seccomp, proc.no_new_privileges);
    if (filter.notifies() && o.seccomp_state) listener_state = o.seccomp_state(host_pid);
    ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    sock.send(MsgType::ready, {}, &t);
    detail::close_fds_on_exec(o.preserve_fds);
    detail::load_seccomp_and_notify(filter, o.seccomp_listener, listener_state);
    final_caps.release();
    detail::exec_process(exe, proc.args, proc.env);
}

}  // namespace

Spawned spawn_exec(int init_pidfd, pid_t init_pid, const oci::Process& process, const ExecOptions& opts,
                   const std::function<void(pid_t)>& place_in_cgroup) {
    Spawned out;
    auto t0 = std::chrono::steady_clock::now();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd parent_end(sv[0]), child_end(sv[1]);
    int flags = 0;
    for (oci::NamespaceType t : opts.namespaces) flags |= clone_flag(t);

    pid_t intermediate = ::fork();
    if (intermediate < 0) throw_errno("fork");
    if (intermediate == 0) {
        SyncSocket s(child_end.get());
        run_child(s, [&] {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            parent_end.reset();
            // Not dumpable: no process of the container may open our /proc/<pid>/exe
            // (the runtime binary) while we sit in its pid namespace (CVE-2019-5736).
            if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) throw_errno("prctl dumpable");
            if (flags && ::setns(init_pidfd, flags) < 0)
                throw_errno("join namespaces of container init " + std::to_string(init_pid));
            // A container without a mount namespace of its own lives in a detached tree
            // in ours (enter_detached_root): its root is the init's root.
            if (!(flags & CLONE_NEWNS)) {
                std::string link = "/proc/" + std::to_string(init_pid) + "/root";
                UniqueFd root(::open(link.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
                if (!root) throw_errno("open " + link);
                // Still the init the pidfd names, so the pid was not reused in between.
                if (detail::pidfd_send_signal(init_pidfd, 0) < 0)
                    throw_errno("container init " + std::to_string(init_pid));
                if (::fchdir(root.get()) < 0 || ::chroot(".") < 0 || ::chdir("/") < 0)
                    throw_errno("enter the root of container init " + std::to_string(init_pid));
            }
            CloneArgs a;
            // clone3 takes no exit signal with CLONE_PARENT: the child inherits ours (SIGCHLD).
            a.flags = CLONE_PARENT;
            pid_t p = detail::clone3(a);
            if (p < 0) throw_errno("clone3 exec process");
            if (p == 0) {
                run_child(s, [&] {
                    detail::close_inherited_fds(opts.preserve_fds,
                                                {child_end.get(), opts.console_socket, opts.seccomp_listener});
                    exec_main(process, opts, s);
                });
            }
            s.send(MsgType::pid, {}, nullptr, p);
        });
    }
    child_end.reset();
    SyncSocket sock(parent_end.get());
    pid_t pid = -1;
    try {
        Packet p = sock.expect(MsgType::pid, "exec: could not join the container");
        pid = p.value;
        while (::waitpid(intermediate, nullptr, 0) < 0 && errno == EINTR) {
        }
        intermediate = -1;
        out.pid = pid;
        out.pidfd.reset(detail::pidfd_open(pid));
        if (!out.pidfd) throw_errno("pidfd_open exec process");
        out.timings.add(Phase::clone, std::chrono::steady_clock::now() - t0);
        if (place_in_cgroup) {
            PhaseScope s(out.timings, Phase::cgroup);
            place_in_cgroup(pid);
        }
        // The exec'd process's pid as the host sees it (for the seccomp listener's state).
        sock.send(MsgType::go, {}, nullptr, pid);
        out.timings.merge(sock.expect_ready(out.pty_master, "exec process died during setup").timings);
        auto te = std::chrono::steady_clock::now();
        sock.expect_exec();
        out.timings.add(Phase::exec, std::chrono::steady_clock::now() - te);
    } catch (...) {
        if (intermediate > 0) kill_and_reap(-1, intermediate);
        if (pid > 0) kill_and_reap(out.pidfd.get(), pid);
        throw;
    }
    return out;
}

}  // namespace tarn::ns
