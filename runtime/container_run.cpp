#include "runtime/hooks.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace detail {
void block_forwarded_signals();
}

int run(const GlobalOptions& g, const RunOptions& o) {
    if (!o.detach) detail::block_forwarded_signals();
    bool want_pty = !o.detach && o.console_socket.empty();
    detail::Launched l = detail::launch(g, o, /*park=*/false, want_pty);
    if (l.config.hooks && !l.config.hooks->poststart.empty()) {
        try {
            detail::run_hooks(l.config.hooks->poststart, detail::hook_state(l.record, oci::Status::running, l.spawned.pid),
                              "poststart");
        } catch (const Error& e) {
            // runtime.md "Lifecycle" 9: an error, and the container is stopped.
            try {
                detail::kill_container(l.record, l.spawned.pidfd.get());
                if (!o.keep) detail::destroy(l.dir, l.record, &l.config);
            } catch (const Error& e2) {
                log_warn("run " + o.id + ": " + e2.what());
            }
            throw e.wrapped("run " + o.id);
        }
    }
    if (o.detach) return 0;
    l.dir.unlock();
    int code = detail::wait_foreground(l.spawned.pid, l.spawned.pidfd.get(), l.spawned.pty_master.get());
    if (!o.keep) {
        try {
            // Someone may have deleted it meanwhile; that is their cleanup, not ours.
            if (!detail::ContainerDir::exists(g.root, o.id)) return code;
            detail::ContainerDir dir = detail::ContainerDir::open(g.root, o.id);
            detail::destroy(dir, dir.load(), &l.config);
        } catch (const Error& e) {
            log_warn("run " + o.id + ": " + e.what());
        }
    }
    return code;
}

}  // namespace tarn::runtime
