// `exec` into a VM-mode container: a client of the monitor's socket. The monitor
// numbers the client's process and relays between it and the guest agent.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "namespaces/syscalls.hpp"
#include "runtime/vm/protocol.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime::vm {
namespace {

using nlohmann::json;

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
}

// With --tty, the caller's terminal passes keys through untouched while the process
// runs: the guest pty does the echo and line editing. A host pty made only to carry
// the guest's (console socket) is fully raw: its output processing would be the
// guest's twice.
class RawStdin {
public:
    explicit RawStdin(bool keep_output_processing) {
        if (::isatty(0) && ::tcgetattr(0, &saved_) == 0) {
            termios raw = saved_;
            ::cfmakeraw(&raw);
            if (keep_output_processing) raw.c_oflag |= OPOST;
            active_ = ::tcsetattr(0, TCSANOW, &raw) == 0;
        }
    }
    ~RawStdin() {
        if (active_) ::tcsetattr(0, TCSANOW, &saved_);
    }
    RawStdin(const RawStdin&) = delete;
    RawStdin& operator=(const RawStdin&) = delete;

private:
    termios saved_{};
    bool active_ = false;
};

class Client {
public:
    explicit Client(UniqueFd sock) : sock_(std::move(sock)) {}
    json next();  // the next message; throws when the monitor goes away
    void send(const json& msg) { write_all(sock_.get(), tarn::vm::encode(msg)); }
    // Stdio and signals until the exit message; returns the exit code. With `terminal`,
    // the window size of the terminal on fd 0 (now and on SIGWINCH) goes to the guest
    // pty; `own_pty`: that terminal is a host pty standing for the guest's.
    int relay(bool terminal = false, bool own_pty = false);

private:
    UniqueFd sock_;
    tarn::vm::LineReader reader_;
};

json Client::next() {
    for (;;) {
        while (auto line = reader_.next())
            if (auto msg = tarn::vm::decode(*line)) return *msg;
        char buf[65536];
        ssize_t n = ::read(sock_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Error("the vm monitor went away (the container stopped)");
        reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
}

int Client::relay(bool terminal, bool own_pty) {
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, nullptr);
    UniqueFd sfd(::signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK));
    bool stdin_open = ::fcntl(0, F_GETFD) >= 0;
    std::optional<RawStdin> raw;
    auto send_size = [&] {
        winsize ws{};
        if (::ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
            send({{"op", "resize"}, {"rows", ws.ws_row}, {"cols", ws.ws_col}});
    };
    if (terminal) {
        raw.emplace(!own_pty);
        send_size();
    }
    for (;;) {
        pollfd p[3] = {{sock_.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
        if (::poll(p, 3, -1) < 0) {
            if (errno == EINTR) continue;
            return 255;
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            char buf[65536];
            ssize_t n = ::read(sock_.get(), buf, sizeof buf);
            if (n <= 0) return 255;  // the container stopped under us
            reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
            while (auto line = reader_.next()) {
                auto msg = tarn::vm::decode(*line);
                if (!msg) continue;
                std::string t = msg->value("t", "");
                if (t == "out") {
                    write_all(msg->value("fd", 1) == 2 ? 2 : 1,
                              tarn::vm::base64_decode(msg->value("data", "")));
                } else if (t == "exit") {
                    return msg->contains("signal") ? 128 + msg->value("signal", 0) : msg->value("code", 255);
                } else if (t == "error") {
                    log_error("exec: guest: " + msg->value("msg", ""));
                }
            }
        }
        if (p[1].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGWINCH && terminal) send_size();
                if (tarn::vm::forwarded_signal(sig)) send({{"op", "signal"}, {"sig", sig}});
            }
        }
        if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (auto req = tarn::vm::stdin_request(0)) {
                if (req->value("eof", false)) stdin_open = false;
                send(*req);
            }
        }
    }
}

}  // namespace

UniqueFd monitor_socket(const std::string& dir, bool listen) {
    // sun_path holds 108 bytes; a state dir can be longer. Through an O_PATH fd on
    // the dir the address is always short.
    UniqueFd dfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_errno("open " + dir);
    std::string path = "/proc/self/fd/" + std::to_string(dfd.get()) + "/" + std::string(kMonitorSocket);
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (listen) {
        ::unlink(path.c_str());
        if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
            throw_errno("bind " + dir + "/" + std::string(kMonitorSocket));
        if (::listen(s.get(), 16) < 0) throw_errno("listen");
    } else if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        throw_errno("connect to the vm monitor at " + dir + "/" + std::string(kMonitorSocket));
    }
    return s;
}

void signal_all(const std::string& state_dir, int sig) {
    Client c(monitor_socket(state_dir, false));
    c.send({{"op", "signal"}, {"sig", sig}, {"all", true}});
}

int exec(const std::string& state_dir, const std::string& id, const oci::Process& process, bool detach,
         const std::string& pid_file, int console) {
    // A detached process with a terminal needs a console socket to hand it to.
    if (process.terminal && detach && console < 0) throw Error("--tty with --detach needs --console-socket");
    if (console >= 0 && !process.terminal) throw Error("--console-socket needs a terminal (--tty)");
    std::optional<HostPty> pty;
    if (console >= 0) {
        pty = open_host_pty(process);
        ns::send_fd(console, pty->master.get(), "console");
        pty->master.reset();
    }
    // Blocked before a relay child is forked: it takes every signal through a signalfd,
    // and the foreground waiter below forwards what it is sent to it.
    sigset_t all;
    sigfillset(&all);
    if (pty && !detach) ::sigprocmask(SIG_BLOCK, &all, nullptr);
    Client c(monitor_socket(state_dir, false));
    c.send({{"op", "exec"}, {"process", oci::to_json(process)}});
    json first = c.next();
    if (first.value("t", "") == "error") throw Error("guest: " + first.value("msg", ""));
    if (first.value("t", "") != "started")
        throw Error("the vm monitor answered \"" + first.value("t", "") + "\"");
    log_debug("exec " + id + ": pid " + std::to_string(first.value("pid", 0)) + " in the guest");
    if (!detach && !pty) return c.relay(process.terminal);
    // The shim waits on the pid it is given: a process here that lives as long as the
    // one in the guest and exits with its code.
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
        ::setsid();
        if (pty) {
            // The pty's slave is this process's stdio and controlling terminal: the
            // holder of the master resizing it sends SIGWINCH here.
            for (int fd = 0; fd < 3; ++fd)
                if (::dup2(pty->slave.get(), fd) < 0) ::_exit(255);
            if (::ioctl(0, TIOCSCTTY, 0) < 0) ::_exit(255);
            pty->slave.reset();
        }
        ::_exit(c.relay(process.terminal, pty.has_value()));
    }
    pty.reset();
    if (!pid_file.empty()) write_file_atomic(pid_file, std::to_string(pid), 0644);
    if (detach) return 0;
    // In the foreground the relay still runs in the child (it needs a session of its
    // own for the pty); this process waits for it and forwards what it is sent.
    UniqueFd sfd(::signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK));
    UniqueFd child(ns::detail::pidfd_open(pid));
    for (;;) {
        pollfd p[2] = {{child.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[0].revents & POLLIN) break;
        signalfd_siginfo si;
        while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
            int sig = static_cast<int>(si.ssi_signo);
            if (tarn::vm::forwarded_signal(sig)) ::kill(pid, sig);
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace tarn::runtime::vm
