#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "runtime/hooks.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {

int start(const GlobalOptions& g, const std::string& id) {
    try {
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        if (st != oci::Status::created)
            throw Error("cannot start a container that is " + std::string(oci::to_string(st)));
        UniqueFd pidfd(detail::open_init_pidfd(rec));
        oci::Config cfg = dir.load_config();
        // What is left of a container whose start failed is stopped, not left half-way.
        auto stop = [&] {
            try {
                detail::kill_container(rec, pidfd.get());
            } catch (const Error& e2) {
                log_warn("start " + id + ": " + e2.what());
            }
        };
        // runtime.md "start": a workload that does not start is an error of `start`.
        try {
            detail::release_exec_fifo(dir.fifo_path(), pidfd.get(), dir.report_fifo_path());
        } catch (const Error&) {
            stop();
            throw;
        }
        // runtime.md "Lifecycle" 9: a failing poststart hook is an error, and the
        // container is stopped (as runc does: killed, its state kept for `delete`).
        if (cfg.hooks && !cfg.hooks->poststart.empty()) {
            try {
                detail::run_hooks(cfg.hooks->poststart, detail::hook_state(rec, oci::Status::running, rec.state.pid),
                                  "poststart");
            } catch (const Error&) {
                stop();
                throw;
            }
        }
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("start " + id);
    }
}

namespace detail {
namespace {

// Until the init's end closes (execve or exit). The init writes whole messages.
std::string read_report(int fd) {
    std::string got;
    for (;;) {
        char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            got.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0) return got;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) throw_errno("read the container init's report");
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
    }
}

// The init closed its end without a word: it was killed (a signal, or a seccomp
// profile's kill action on the last syscalls before execve), or it exec'd and the
// profile refused its one write. Files close before the exit is signalled: wait a little.
bool init_exited(int pidfd) {
    if (pidfd < 0) return true;
    pollfd p{pidfd, POLLIN, 0};
    int r;
    while ((r = ::poll(&p, 1, 200)) < 0 && errno == EINTR) {
    }
    return r > 0;
}

}  // namespace

void release_exec_fifo(const std::string& path, int pidfd, const std::string& report_path) {
    // Opened before the init is released: the pipe's contents live only as long as
    // some end of it is open, and the init's closes when it execs or dies.
    UniqueFd report;
    if (!report_path.empty()) {
        report.reset(::open(report_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
        if (!report && errno != ENOENT) throw_errno("open " + report_path);
    }
    UniqueFd fifo(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fifo) throw_errno("open exec.fifo (is the container init still waiting?)");
    ::signal(SIGPIPE, SIG_IGN);
    if (::write(fifo.get(), "0", 1) != 1) throw_errno("release container init");
    if (report) {
        std::string got;
        try {
            got = read_report(report.get());
        } catch (...) {
            ::unlink(path.c_str());
            ::unlink(report_path.c_str());
            throw;
        }
        ::unlink(path.c_str());
        ::unlink(report_path.c_str());
        bool reached_exec = !got.empty() && got[0] == '+';
        if (reached_exec) got.erase(0, 1);
        if (!got.empty()) throw Error(got);
        if (!reached_exec && init_exited(pidfd)) throw Error("container init exited before the workload started");
        return;
    }
    // No report fifo (a VM monitor): the init's end of exec.fifo closes on exec, so
    // POLLERR on our write end means the workload runs, the pidfd that it died.
    pollfd p[2] = {{fifo.get(), 0, 0}, {pidfd, POLLIN, 0}};
    while (::poll(p, pidfd >= 0 ? 2 : 1, -1) < 0 && errno == EINTR) {
    }
    ::unlink(path.c_str());
    if (pidfd >= 0 && (p[1].revents & POLLIN) && !(p[0].revents & POLLERR))
        throw Error("container init exited before the workload started");
}

}  // namespace detail

}  // namespace tarn::runtime
