#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime {
namespace detail {
void block_forwarded_signals();
}
namespace {

uint32_t parse_id(const std::string& s, const char* what) {
    char* end = nullptr;
    unsigned long v = std::strtoul(s.c_str(), &end, 10);
    if (s.empty() || *end || v > 0xffffffffUL) throw Error(std::string(what) + ": bad id \"" + s + "\"");
    return static_cast<uint32_t>(v);
}

// The process to exec: --process, or the container's own process with the flags applied.
oci::Process exec_process(const ExecOptions& o, const oci::Config& cfg) {
    if (!o.process_file.empty()) {
        oci::Process p = oci::parse_process(read_file(o.process_file, kMaxJsonDocument), o.process_file);
        if (o.tty) p.terminal = true;
        return p;
    }
    if (o.args.empty()) throw Error("exec: no command given (ARGS or --process)");
    oci::Process p;
    if (cfg.process) p = *cfg.process;
    p.args = o.args;
    p.terminal = o.tty;
    p.console_size.reset();
    p.rlimits.clear();  // already the container's; raising them again could fail
    p.oom_score_adj.reset();
    p.scheduler.reset();
    p.io_priority.reset();
    for (const std::string& e : o.env) {
        size_t eq = e.find('=');
        std::string key = e.substr(0, eq);
        std::erase_if(p.env, [&](const std::string& x) { return x.substr(0, x.find('=')) == key; });
        p.env.push_back(e);
    }
    if (!o.cwd.empty()) p.cwd = o.cwd;
    if (o.user) {
        size_t colon = o.user->find(':');
        p.user.uid = parse_id(o.user->substr(0, colon), "--user");
        p.user.gid = colon == std::string::npos ? 0 : parse_id(o.user->substr(colon + 1), "--user");
    }
    if (!o.additional_gids.empty()) p.user.additional_gids = o.additional_gids;
    if (!o.caps.empty()) {
        if (!p.capabilities) p.capabilities.emplace();
        for (const std::string& c : o.caps) {
            for (auto* set : {&p.capabilities->bounding, &p.capabilities->effective, &p.capabilities->permitted})
                if (std::find(set->begin(), set->end(), c) == set->end()) set->push_back(c);
        }
    }
    if (o.no_new_privs) p.no_new_privileges = true;
    return p;
}

}  // namespace

int exec(const GlobalOptions& g, const ExecOptions& o) {
    ns::Spawned sp;
    try {
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, o.id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        if (st != oci::Status::running && st != oci::Status::created)
            throw Error("cannot exec in a container that is " + std::string(oci::to_string(st)));
        oci::Config cfg = dir.load_config();
        oci::Process proc = exec_process(o, cfg);
        if (rec.vm) {
            if (o.preserve_fds) throw Error("--preserve-fds: host fds cannot be passed into a vm");
            UniqueFd console;
            if (!o.console_socket.empty()) console = detail::connect_console_socket(o.console_socket);
            std::string state_dir = dir.path();
            dir.unlock();
            return vm::exec(state_dir, o.id, proc, o.detach, o.pid_file, console.get());
        }
        ns::check_lsm(&proc, nullptr);
        if (proc.terminal && o.detach && o.console_socket.empty())
            throw Error("--tty with --detach needs --console-socket");
        UniqueFd pidfd(detail::open_init_pidfd(rec));
        if (!pidfd) throw Error("container is stopped");
        ns::ExecOptions eo;
        eo.preserve_fds = o.preserve_fds;
        UniqueFd console;
        if (!o.console_socket.empty()) {
            console = detail::connect_console_socket(o.console_socket);
            eo.console_socket = console.get();
        }
        eo.want_pty_master = proc.terminal && o.console_socket.empty();
        eo.new_session_keyring = !rec.no_new_keyring;
        if (cfg.linux)
            for (const oci::Namespace& n : cfg.linux->namespaces) eo.namespaces.push_back(n.type);
        if (cfg.linux) eo.seccomp = cfg.linux->seccomp;
        UniqueFd listener = detail::connect_seccomp_listener(cfg);
        if (listener) {
            eo.seccomp_listener = listener.get();
            oci::State state = rec.state;
            state.status = oci::Status::running;
            eo.seccomp_state = detail::seccomp_state_for(cfg, state, false);
        }
        if (proc.capabilities) detail::log_unraisable_ambient(*proc.capabilities, "exec " + o.id);
        if (!o.detach) detail::block_forwarded_signals();
        // The container's lock is not held while the process runs: kill/delete must work.
        pid_t init_pid = rec.state.pid;
        dir.unlock();
        // The process joins the container's cgroup (its limits, and with the systemd
        // driver its unit) before it runs anything.
        auto cg = detail::open_cgroup(rec);
        std::function<void(pid_t)> place;
        if (cg && cg->exists()) place = [&cg](pid_t pid) { cg->add_process(pid); };
        sp = ns::spawn_exec(pidfd.get(), init_pid, proc, eo, place);
        if (!o.pid_file.empty()) detail::write_pid_file(o.pid_file, sp.pid);
        log_debug("exec " + o.id + ": pid " + std::to_string(sp.pid) + " phases: " + sp.timings.report());
    } catch (const Error& e) {
        throw e.wrapped("exec " + o.id);
    }
    if (o.detach) return 0;
    return detail::wait_foreground(sp.pid, sp.pidfd.get(), sp.pty_master.get());
}

}  // namespace tarn::runtime
