#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "namespaces/syscalls.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime::detail {
namespace {

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP};

class RawTerminal {
public:
    RawTerminal() {
        if (::isatty(0) && ::tcgetattr(0, &saved_) == 0) {
            termios raw = saved_;
            ::cfmakeraw(&raw);
            raw.c_oflag |= OPOST;  // keep "\n" -> "\r\n" on our side readable
            if (::tcsetattr(0, TCSANOW, &raw) == 0) active_ = true;
        }
    }
    ~RawTerminal() {
        if (active_) ::tcsetattr(0, TCSANOW, &saved_);
    }

private:
    termios saved_{};
    bool active_ = false;
};

void copy_winsize(int pty) {
    winsize ws;
    if (::ioctl(0, TIOCGWINSZ, &ws) == 0) ::ioctl(pty, TIOCSWINSZ, &ws);
}

bool pump(int from, int to) {
    char buf[16384];
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return !(n == 0 || (errno != EINTR && errno != EAGAIN));
    for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return true;  // the reader went away; keep waiting for the exit status
        }
        off += w;
    }
    return true;
}

}  // namespace

void block_forwarded_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : kForwarded) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

int wait_foreground(pid_t pid, int pidfd, int pty_master) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : kForwarded) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC));
    if (!sfd) throw_errno("signalfd");
    std::optional<RawTerminal> raw;
    bool stdin_open = true;
    if (pty_master >= 0) {
        raw.emplace();
        copy_winsize(pty_master);
    }
    for (;;) {
        pollfd p[4] = {{pidfd, POLLIN, 0}, {sfd.get(), POLLIN, 0}, {pty_master, POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
        int n = pty_master >= 0 ? 4 : 2;
        if (::poll(p, static_cast<nfds_t>(n), -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        if (p[1].revents & POLLIN) {
            signalfd_siginfo si;
            if (::read(sfd.get(), &si, sizeof si) == sizeof si) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGWINCH && pty_master >= 0) copy_winsize(pty_master);
                else if (sig != SIGWINCH) ns::detail::pidfd_send_signal(pidfd, sig);
            }
        }
        if (n == 4 && (p[2].revents & (POLLIN | POLLHUP))) {
            if (!pump(pty_master, 1) || (p[2].revents & POLLHUP && !(p[2].revents & POLLIN))) {
                // The slave closed; the exit status follows.
            }
        }
        if (n == 4 && stdin_open && (p[3].revents & (POLLIN | POLLHUP))) {
            if (!pump(0, pty_master)) stdin_open = false;
        }
        if (p[0].revents & POLLIN) {
            // Drain what the workload wrote last before its exit.
            if (pty_master >= 0) {
                int fl = ::fcntl(pty_master, F_GETFL);
                ::fcntl(pty_master, F_SETFL, fl | O_NONBLOCK);
                while (pump(pty_master, 1)) {
                    pollfd q{pty_master, POLLIN, 0};
                    if (::poll(&q, 1, 0) <= 0 || !(q.revents & POLLIN)) break;
                }
            }
            break;
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw_errno("wait for container process");
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

int open_init_pidfd(const Record& r) {
    if (r.state.pid <= 0) return -1;
    int fd = ns::detail::pidfd_open(r.state.pid);
    if (fd < 0) return -1;
    // Checked after the pidfd exists: from here the fd names this very process.
    if (ns::process_start_time(r.state.pid) != r.pid_start) {
        ::close(fd);
        return -1;
    }
    return fd;
}

}  // namespace tarn::runtime::detail
