#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "runtime/hooks.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {

int start(const GlobalOptions& g, const std::string& id) {
    (void)g;
    try {
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        if (st != oci::Status::created)
            throw Error("cannot start a container that is " + std::string(oci::to_string(st)));
        UniqueFd pidfd(detail::open_init_pidfd(rec));
        // poststart must come after the workload runs.
        detail::release_exec_fifo(dir.fifo_path(), pidfd.get());
        oci::Config cfg = dir.load_config();
        if (cfg.hooks && !cfg.hooks->poststart.empty())
            detail::run_hooks_warn(cfg.hooks->poststart, detail::hook_state(rec, oci::Status::running, rec.state.pid),
                                   "poststart");
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("start " + id);
    }
}

namespace detail {

void release_exec_fifo(const std::string& path, int pidfd) {
    UniqueFd fifo(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fifo) throw_errno("open exec.fifo (is the container init still waiting?)");
    ::signal(SIGPIPE, SIG_IGN);
    if (::write(fifo.get(), "0", 1) != 1) throw_errno("release container init");
    // The init's end of the fifo closes on exec: POLLERR on our write end means the
    // workload runs, the pidfd that it died.
    pollfd p[2] = {{fifo.get(), 0, 0}, {pidfd, POLLIN, 0}};
    while (::poll(p, pidfd >= 0 ? 2 : 1, -1) < 0 && errno == EINTR) {
    }
    ::unlink(path.c_str());
    if (pidfd >= 0 && (p[1].revents & POLLIN) && !(p[0].revents & POLLERR))
        throw Error("container init exited before the workload started");
}

}  // namespace detail

}  // namespace tarn::runtime
