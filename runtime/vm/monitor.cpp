// The VM monitor: a process forked by create/run that starts QEMU, talks to the
// guest agent over the serial line (protocol.hpp), and stands for the workload on the
// host. Its pid is the container's pid: signals sent to it go to the workload, it
// copies stdio between its fds and the guest, and it exits with the workload's code.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "namespaces/syscalls.hpp"
#include "runtime/vm/protocol.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime::vm {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string ms(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f ms", v);
    return buf;
}

// execv's argv: pointers into `args`, null-terminated. The command line goes to the
// debug log.
std::vector<char*> exec_argv(const std::string& id, std::vector<std::string>& args) {
    std::string line;
    for (const std::string& a : args) line += (line.empty() ? "" : " ") + a;
    log_debug("vm " + id + ": " + line);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return argv;
}

// In a forked child of the monitor: execs `argv` with every signal unblocked (the
// monitor blocks them all); a failure goes to stderr (the child's log) and exit 127.
[[noreturn]] void exec_child(std::vector<char*>& argv) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    std::string msg = std::string("exec ") + argv[0] + ": " + Error::errno_text(errno) + "\n";
    (void)!::write(2, msg.data(), msg.size());
    ::_exit(127);
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // the reader is gone: the workload's output has nowhere to go
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
}

// Closes every fd except those in `keep` (the state dir's lock above all: the
// monitor outlives create, and an inherited flock would block every later command).
void close_other_fds(std::set<int> keep) {
    unsigned from = 0;
    for (int fd : keep) {
        if (fd < 0) continue;
        if (static_cast<unsigned>(fd) > from) ::close_range(from, static_cast<unsigned>(fd) - 1, 0);
        from = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(from, ~0U, 0);
}

// An `exec` client on the monitor's socket; its process in the guest has number n.
struct ExecClient {
    int n;
    UniqueFd fd;
    tarn::vm::LineReader reader;
};

class Monitor {
public:
    Monitor(const Launch& l, int ctl) : l_(l), settings_(l.settings), ctl_(ctl) {}
    [[noreturn]] void run();

private:
    // The file shares' staging and a read-only root for virtiofsd, in a mount
    // namespace of the monitor's own; fills devices_.
    void prepare_shares();
    // Starts virtiofsd on the rootfs; devices_.virtiofs_fd is QEMU's end.
    void start_virtiofsd();
    void stop_virtiofsd();
    // Boot and create; throws with the message create reports.
    json boot_and_create();
    // A pool's VM, parked: waits for the claim on ctl_ (exits if the VM or the
    // caller goes first), hands it to the agent and returns once the workload runs.
    void await_claim();
    // A pool's VM lent to `tarn create` (docs/pool.md, VM pools on the OCI path): the
    // borrower's trees go onto the staging share, the parked container is discarded,
    // and the guest's channel goes to the borrower; from then on this monitor only
    // keeps QEMU, until the borrower's end of `peer` closes or QEMU exits.
    [[noreturn]] void serve_lease(UniqueFd peer);
    // The attach request on `peer`: mounts the trees; returns when the guest is ready
    // for the borrower's create.
    void attach(int peer);
    // Starts QEMU (and virtiofsd) and waits for the agent's "ready".
    json boot();
    // QMP: the greeting asks for capabilities; STOP means the guest halted; replies
    // to qmp() go to qmp_replies_.
    void read_qmp();
    // A QMP command of the monitor's own (snapshot, restore): its "return", or an error
    // saying `what` failed.
    json qmp(const std::string& execute, const json& args, Clock::time_point deadline, const std::string& what);
    // Polls query-migrate until the migration completed (throws if it failed).
    void await_migration(Clock::time_point deadline, const std::string& what);
    // l_.snapshot_out: boots, prepares the agent, saves the paused VM.
    void snapshot();
    static json ignore_shared();
    // After QEMU started with -incoming: loads l_.restore_from, resumes the guest and
    // reseeds its random generator; returns what boot() would.
    json restore(Clock::time_point deadline);
    // After STOP: why the guest halted (the run state and QEMU's words in its log).
    std::string stop_reason();
    // Reads the serial line until a message with t == `want` (or "error"), QEMU's exit
    // or the deadline.
    json await(const std::string& want, Clock::time_point deadline, const std::string& waiting_for);
    bool read_serial();  // false on EOF
    void send(const json& msg);
    void flush_outbox();
    void handle(const json& msg);
    void send_window_size();
    void stop_qemu();
    void accept_client();
    // False when the client is gone.
    bool from_client(ExecClient& c);
    void to_client(const json& msg);
    std::string console_tail() const;
    std::string qemu_log_path() const { return l_.adopted ? l_.adopted->qemu_log : l_.state_dir + "/qemu.log"; }
    // The first lines QEMU wrote to its log (its error, before any register dump).
    std::string qemu_log_reason() const;
    // Why virtiofsd is gone (it exited, with the last line of its log); reaps it.
    std::string virtiofsd_gone();
    // QEMU's exit closes virtiofsd's socket, which ends virtiofsd: when virtiofsd is
    // gone, this tells whether QEMU is going too (then the cause is QEMU's).
    bool qemu_exits_soon();
    [[noreturn]] void finish();

    const Launch& l_;
    Settings settings_;  // l_.settings, with KVM turned off by a fallback to TCG
    int ctl_;
    UniqueFd serial_, qemu_pidfd_, signals_, fifo_, listener_, qmp_;
    tarn::vm::LineReader qmp_reader_;
    bool guest_stopped_ = false;
    std::string run_state_;  // query-status after STOP
    bool qmp_greeted_ = false, expect_stop_ = false;
    int qmp_id_ = 0;
    std::map<int, json> qmp_replies_;
    std::vector<std::unique_ptr<ExecClient>> clients_;
    int next_n_ = 1;
    pid_t qemu_pid_ = -1;
    pid_t virtiofsd_pid_ = -1;
    UniqueFd virtiofsd_pidfd_;
    Devices devices_;
    UniqueFd virtiofs_client_;  // devices_.virtiofs_fd
    tarn::vm::LineReader reader_;
    std::deque<json> inbox_;
    std::deque<std::string> console_;  // the last lines that were not messages
    std::string outbox_;
    bool started_ = false, stdin_open_ = true, exited_ = false, terminal_ = false;
    bool serial_eof_ = false;  // QEMU closed its end: it is exiting
    int exit_code_ = 255, exit_signal_ = 0;
    Clock::time_point t_spawn_, t_ready_, t_created_, t_started_;
};

void Monitor::send(const json& msg) {
    outbox_ += tarn::vm::encode(msg);
    flush_outbox();
}

void Monitor::flush_outbox() {
    while (!outbox_.empty()) {
        ssize_t n = ::write(serial_.get(), outbox_.data(), outbox_.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;  // polled for POLLOUT
            outbox_.clear();              // QEMU is gone; its pidfd says so next
            return;
        }
        outbox_.erase(0, static_cast<size_t>(n));
    }
}

bool Monitor::read_serial() {
    char buf[65536];
    ssize_t n = ::read(serial_.get(), buf, sizeof buf);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) return false;
    reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
    while (auto line = reader_.next()) {
        if (auto msg = tarn::vm::decode(*line)) {
            inbox_.push_back(std::move(*msg));
        } else if (!line->empty()) {
            log_debug("vm " + l_.id + ": console: " + *line);
            console_.push_back(*line);
            if (console_.size() > 8) console_.pop_front();
        }
    }
    return true;
}

std::string Monitor::console_tail() const {
    std::string s;
    for (const std::string& line : console_) s += (s.empty() ? "" : " | ") + line;
    return s;
}

std::string Monitor::virtiofsd_gone() {
    int status = 0;
    ::waitpid(virtiofsd_pid_, &status, 0);
    virtiofsd_pid_ = -1;
    virtiofsd_pidfd_.reset();
    std::string why = "virtiofsd " + settings_.virtiofsd + " exited (" +
                      (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                         : "signal " + std::to_string(WTERMSIG(status))) +
                      ")";
    try {
        std::string text = read_file(l_.state_dir + "/virtiofsd.log");
        while (!text.empty() && text.back() == '\n') text.pop_back();
        if (!text.empty()) why += ": " + text.substr(text.rfind('\n') + 1);
    } catch (const Error&) {
    }
    return why;
}

std::string Monitor::qemu_log_reason() const {
    std::string text;
    try {
        text = read_file(qemu_log_path());
    } catch (const Error&) {
        return "";
    }
    // "KVM internal error. Suberror: 1" comes before "extra data[N]: ..." and a
    // register dump ("RAX=..."); an abort's message comes in one or two lines.
    std::string why;
    int kept = 0;
    for (std::string_view line : lines(text)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
        if (line.empty() || line.rfind("extra data", 0) == 0) continue;
        if (line.find('=') != std::string_view::npos || kept == 2) break;
        why += (why.empty() ? "" : "; ") + std::string(line);
        ++kept;
    }
    return why;
}

void Monitor::read_qmp() {
    char buf[8192];
    ssize_t n = ::read(qmp_.get(), buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) qmp_.reset();  // QEMU is going; its pidfd says so
        return;
    }
    qmp_reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
    while (auto line = qmp_reader_.next()) {
        json m = json::parse(*line, nullptr, false);
        if (!m.is_object()) continue;
        if (m.contains("QMP")) {
            write_all(qmp_.get(), "{\"execute\":\"qmp_capabilities\"}\n");
            qmp_greeted_ = true;
        } else if (m.contains("id") && m["id"].is_number_integer()) {
            qmp_replies_[m["id"].get<int>()] = m;
        } else if (m.value("event", "") == "STOP" && expect_stop_) {
            // The monitor paused it itself (a snapshot).
        } else if (m.value("event", "") == "STOP") {
            // Nothing here ever pauses the guest: QEMU did (a KVM internal error, an
            // unrecoverable fault), and the guest will not go on.
            guest_stopped_ = true;
            write_all(qmp_.get(), "{\"execute\":\"query-status\"}\n");
        } else if (m.contains("return") && m["return"].is_object() && m["return"].contains("status")) {
            run_state_ = m["return"].value("status", "");
        }
    }
}

std::string Monitor::stop_reason() {
    auto deadline = Clock::now() + std::chrono::seconds(1);
    while (run_state_.empty() && qmp_ && Clock::now() < deadline) {
        pollfd p{qmp_.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) read_qmp();
    }
    std::string why = qemu_log_reason();
    if (why.empty()) why = console_tail();
    return "qemu stopped the guest (" + (run_state_.empty() ? std::string("paused") : run_state_) + ", " +
           (settings_.kvm ? "KVM" : "TCG") + ")" + (why.empty() ? "" : ": " + why);
}

void Monitor::stop_qemu() {
    if (qemu_pid_ > 0) {
        ns::detail::pidfd_send_signal(qemu_pidfd_.get(), SIGKILL);
        while (::waitpid(qemu_pid_, nullptr, 0) < 0 && errno == EINTR) {
        }
        qemu_pid_ = -1;
    } else if (l_.adopted && qemu_pidfd_) {
        // A leased VM's QEMU is the pool monitor's child, which reaps it.
        ns::detail::pidfd_send_signal(qemu_pidfd_.get(), SIGKILL);
    }
    stop_virtiofsd();
}

void Monitor::stop_virtiofsd() {
    if (virtiofsd_pid_ <= 0) return;
    // Its sandbox child (pid 1 of a pid namespace of its own) goes with it: virtiofsd
    // gives that child a parent-death signal.
    ::kill(virtiofsd_pid_, SIGKILL);
    while (::waitpid(virtiofsd_pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    virtiofsd_pid_ = -1;
    virtiofsd_pidfd_.reset();
}

void Monitor::prepare_shares() {
    if (l_.rootfs_readonly) {
        // The root is read-only on the host side too (a guest kernel is not trusted
        // with the bundle), so the guest cannot make missing mount points: we do, each
        // resolved inside the rootfs, as a host container's init does before it
        // remounts the root read-only.
        UniqueFd root(::open(l_.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!root) throw_errno("open root.path " + l_.rootfs);
        for (const MountPoint& mp : l_.mount_points) {
            try {
                ns::detail::mkdir_all_in_root(root.get(), mp.path, mp.file);
            } catch (const Error& e) {
                throw e.wrapped("mount point " + mp.path + " in root.path " + l_.rootfs);
            }
        }
    }
    devices_.rootfs = l_.rootfs;
    devices_.rootfs_readonly = l_.rootfs_readonly;
    devices_.shares = l_.shares;
    for (const Share& sh : l_.shares) devices_.dirs.push_back(sh.source);
    bool files = std::any_of(l_.shares.begin(), l_.shares.end(), [](const Share& sh) { return sh.file; });
    bool readonly_virtiofs = l_.rootfs_readonly && !settings_.virtiofsd.empty();
    // A pool's VM (and its snapshot, which must have the same devices) has a staging
    // share, lent with the VM to `tarn create`.
    bool staging = l_.pooled || !l_.snapshot_out.empty();
    if (!files && !readonly_virtiofs && !l_.overlay && !staging) return;

    // A namespace of our own: what is mounted here is seen by QEMU and virtiofsd (our
    // children) and by nobody on the host, and is gone with the last of us, so a
    // killed monitor leaves no mount to clean up.
    if (::unshare(CLONE_NEWNS) < 0) throw_errno("unshare the monitor's mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) throw_errno("make / rprivate");
    std::string dir = l_.state_dir + "/shares";
    if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir " + dir);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0)
        throw_errno("mount tmpfs on " + dir);
    for (size_t i = 0; i < l_.shares.size(); ++i) {
        const Share& sh = l_.shares[i];
        if (!sh.file) continue;
        // 9p exports directories: the file gets one holding nothing but it, so the
        // guest never sees the file's siblings on the host.
        std::string sub = dir + "/" + std::to_string(i);
        std::string target = sub + "/" + sh.source.substr(sh.source.find_last_of('/') + 1);
        if (::mkdir(sub.c_str(), 0755) < 0) throw_errno("mkdir " + sub);
        UniqueFd f(::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!f) throw_errno("create " + target);
        if (::mount(sh.source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) < 0)
            throw_errno("bind " + sh.source + " for the guest");
        devices_.dirs[i] = sub;
    }
    if (staging) {
        // Empty until a lease attaches a bundle's trees below it, in this namespace
        // only: the host never sees them here.
        devices_.staging = dir + "/staging";
        if (::mkdir(devices_.staging.c_str(), 0700) < 0) throw_errno("mkdir " + devices_.staging);
    }
    if (l_.overlay) {
        // The template's root stays untouched: the guest writes to a tmpfs layer in
        // this namespace (charged to the VM's cgroup), gone with the VM.
        if (l_.rootfs.find_first_of(",:\\") != std::string::npos)
            throw Error("root.path " + l_.rootfs + ": a path with ',', ':' or '\\' cannot be an overlay's lower layer");
        std::string ov = dir + "/overlay";
        for (const char* sub : {"", "/upper", "/work", "/root"})
            if (::mkdir((ov + sub).c_str(), 0755) < 0) throw_errno("mkdir " + ov + sub);
        std::string opts = "lowerdir=" + l_.rootfs + ",upperdir=" + ov + "/upper,workdir=" + ov + "/work";
        if (::mount("overlay", (ov + "/root").c_str(), "overlay", 0, opts.c_str()) < 0)
            throw_errno("mount an overlay of root.path " + l_.rootfs);
        devices_.rootfs = ov + "/root";
    }
    if (readonly_virtiofs) {
        // This virtiofsd has no read-only mode: it serves a read-only bind of the root,
        // so not even a guest that ignores its own ro mount can write to the bundle.
        std::string ro = dir + "/rootfs";
        if (::mkdir(ro.c_str(), 0755) < 0) throw_errno("mkdir " + ro);
        if (::mount(l_.rootfs.c_str(), ro.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
            throw_errno("bind root.path " + l_.rootfs);
        if (::mount(nullptr, ro.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) < 0)
            throw_errno("remount root.path " + l_.rootfs + " read-only");
        devices_.rootfs = ro;
    }
}

void Monitor::start_virtiofsd() {
    // vhost-user needs a socket, and virtiofsd --fd takes a listening one and accepts
    // one connection. Ours is bound in the state dir (root's alone: an abstract name
    // would let any local user race QEMU to virtiofsd, which serves the rootfs as
    // root), reached through an O_PATH fd so a long --root never overflows sun_path;
    // QEMU's end connects before virtiofsd even starts, and the name is unlinked at
    // once: no socket file stays behind.
    UniqueFd dfd(::open(l_.state_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_errno("open " + l_.state_dir);
    std::string path = "/proc/self/fd/" + std::to_string(dfd.get()) + "/virtiofsd.sock";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) throw_errno("socket for virtiofsd");
    ::unlink(path.c_str());
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        ::listen(listener.get(), 1) < 0)
        throw_errno("listen on " + l_.state_dir + "/virtiofsd.sock");
    UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int connected = client ? ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) : -1;
    int saved = errno;
    ::unlink(path.c_str());
    if (connected < 0) throw Error("connect to " + l_.state_dir + "/virtiofsd.sock", saved);
    // Above stdio: the monitor's stdin may be closed, and QEMU's 0-2 are taken.
    virtiofs_client_.reset(::fcntl(client.get(), F_DUPFD_CLOEXEC, 3));
    if (!virtiofs_client_) throw_errno("dup virtiofsd's socket");
    devices_.virtiofs_fd = virtiofs_client_.get();

    std::string log_path = l_.state_dir + "/virtiofsd.log";
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!log) throw_errno("open " + log_path);
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null) throw_errno("open /dev/null");
    constexpr int kListenFd = 3;
    std::vector<std::string> args = {settings_.virtiofsd,
                                     "--fd=" + std::to_string(kListenFd),
                                     "-o",
                                     "source=" + devices_.rootfs,
                                     "-o",
                                     "cache=auto",
                                     "-o",
                                     "log_level=warn"};
    std::vector<char*> argv = exec_argv(l_.id, args);
    pid_t self = ::getpid();
    virtiofsd_pid_ = ::fork();
    if (virtiofsd_pid_ < 0) throw_errno("fork virtiofsd");
    if (virtiofsd_pid_ == 0) {
        // Like QEMU, it dies with the monitor; it is in the container's host cgroup
        // too (forked after the monitor was placed), so `delete` kills it in any case.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (::getppid() != self) ::_exit(1);
        // Out of the way of stdio first: with the monitor's stdin closed, any of these
        // fds can be low.
        int fd = ::fcntl(listener.get(), F_DUPFD, 10);
        ::dup2(null.get(), 0);
        ::dup2(log.get(), 1);
        ::dup2(log.get(), 2);
        if (fd < 0 || ::dup2(fd, kListenFd) < 0) ::_exit(126);
        exec_child(argv);
    }
    virtiofsd_pidfd_.reset(ns::detail::pidfd_open(virtiofsd_pid_));
    if (!virtiofsd_pidfd_) throw_errno("pidfd_open virtiofsd");
}

bool Monitor::qemu_exits_soon() {
    pollfd q{qemu_pidfd_.get(), POLLIN, 0};
    return ::poll(&q, 1, 500) > 0;
}

json Monitor::await(const std::string& want, Clock::time_point deadline, const std::string& waiting_for) {
    for (;;) {
        while (!inbox_.empty()) {
            json msg = std::move(inbox_.front());
            inbox_.pop_front();
            std::string t = msg.value("t", "");
            if (t == want) return msg;
            if (t == "error") throw Error("guest: " + msg.value("msg", "unknown error"));
            handle(msg);
        }
        if (guest_stopped_) throw Error(stop_reason());
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            std::string tail = console_tail();
            throw Error(waiting_for + (tail.empty() ? std::string() : "; guest console: " + tail));
        }
        pollfd p[4] = {{serial_.get(), static_cast<short>(POLLIN | (outbox_.empty() ? 0 : POLLOUT)), 0},
                       {qemu_pidfd_.get(), POLLIN, 0},
                       {virtiofsd_pidfd_ ? virtiofsd_pidfd_.get() : -1, POLLIN, 0},
                       {qmp_ ? qmp_.get() : -1, POLLIN, 0}};
        if (::poll(p, 4, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR)
            throw_errno("poll");
        if (p[3].revents & (POLLIN | POLLHUP)) read_qmp();
        // Without it the guest's mount of the root would wait forever.
        if ((p[2].revents & POLLIN) && !(p[1].revents & POLLIN) && !qemu_exits_soon())
            throw Error(virtiofsd_gone() + " before the guest " +
                        (want == "ready" ? std::string("agent answered") : "reported \"" + want + "\""));
        if (p[0].revents & POLLOUT) flush_outbox();
        if (p[0].revents & (POLLIN | POLLHUP)) read_serial();
        if ((p[1].revents & POLLIN) && inbox_.empty()) {
            int status = 0;
            // A leased VM's QEMU is the pool monitor's child: its status is not ours to see.
            bool waited = qemu_pid_ > 0 && ::waitpid(qemu_pid_, &status, 0) > 0;
            qemu_pid_ = -1;
            std::string why = qemu_log_reason();
            if (why.empty()) why = console_tail();
            // A virtiofsd that died first is the likelier cause of QEMU's vhost-user error.
            std::string vfs;
            pollfd v{virtiofsd_pidfd_ ? virtiofsd_pidfd_.get() : -1, POLLIN, 0};
            if (virtiofsd_pidfd_ && ::poll(&v, 1, 0) > 0) {
                std::string gone = virtiofsd_gone();
                // Status 0: it ended because QEMU's end of its socket closed.
                if (gone.find("(status 0)") == std::string::npos) vfs = " (" + gone + ")";
            }
            std::string how = !waited             ? std::string()
                              : WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                                  : "signal " + std::to_string(WTERMSIG(status));
            if (settings_.kvm) how += how.empty() ? "KVM" : ", KVM";
            throw Error("qemu " + settings_.qemu + " exited" + (how.empty() ? "" : " (" + how + ")") + " before the guest " +
                        (want == "ready" ? "agent answered" : "reported \"" + want + "\"") +
                        (why.empty() ? std::string() : ": " + why) + vfs);
        }
    }
}

json Monitor::boot() {
    // A retry starts from nothing: the failed QEMU's lines and events are its own.
    reader_ = {};
    qmp_reader_ = {};
    inbox_.clear();
    console_.clear();
    outbox_.clear();
    guest_stopped_ = false;
    run_state_.clear();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    serial_.reset(sv[0]);
    UniqueFd guest_end(sv[1]);
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair for qmp");
    qmp_.reset(sv[0]);
    // Above stdio, like virtiofsd's socket: QEMU's 0-2 are taken by the time it execs.
    UniqueFd qmp_end(::fcntl(sv[1], F_DUPFD_CLOEXEC, 3));
    ::close(sv[1]);
    if (!qmp_end) throw_errno("dup the qmp socket");
    devices_.qmp_fd = qmp_end.get();
    std::string log_path = l_.state_dir + "/qemu.log";
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!log) throw_errno("open " + log_path);

    if (!settings_.virtiofsd.empty()) start_virtiofsd();
    devices_.incoming = !l_.restore_from.empty();
    if (settings_.virtiofsd.empty()) {
        devices_.memory_file = l_.memory_file;
        devices_.memory_shared = !l_.snapshot_out.empty();
    }
    qmp_greeted_ = expect_stop_ = false;
    qmp_replies_.clear();
    std::vector<std::string> args = qemu_argv(settings_, l_.id, devices_);
    std::vector<char*> argv = exec_argv(l_.id, args);

    pid_t self = ::getpid();
    t_spawn_ = Clock::now();
    qemu_pid_ = ::fork();
    if (qemu_pid_ < 0) throw_errno("fork qemu");
    if (qemu_pid_ == 0) {
        // QEMU dies with the monitor: `kill -9` of the container's pid powers it off.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (::getppid() != self) ::_exit(1);
        // A pool's VM idles for most of its life: without transparent huge pages its
        // guest memory costs what the guest touched, not 2 MiB for every 4 KiB of it
        // (a restore touches pages all over the guest's memory).
        if (l_.pooled || !l_.snapshot_out.empty()) ::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
        ::dup2(guest_end.get(), 0);
        ::dup2(guest_end.get(), 1);
        ::dup2(log.get(), 2);
        // The chardevs' fd=N: QEMU's ends of virtiofsd's and the QMP socket, kept across exec.
        if (devices_.virtiofs_fd >= 0) ::fcntl(devices_.virtiofs_fd, F_SETFD, 0);
        ::fcntl(devices_.qmp_fd, F_SETFD, 0);
        exec_child(argv);
    }
    guest_end.reset();
    qmp_end.reset();
    devices_.qmp_fd = -1;
    virtiofs_client_.reset();  // QEMU holds it now
    qemu_pidfd_.reset(ns::detail::pidfd_open(qemu_pid_));
    if (!qemu_pidfd_) throw_errno("pidfd_open qemu");
    ::fcntl(serial_.get(), F_SETFL, ::fcntl(serial_.get(), F_GETFL) | O_NONBLOCK);
    ::fcntl(qmp_.get(), F_SETFL, ::fcntl(qmp_.get(), F_GETFL) | O_NONBLOCK);

    const Settings& s = settings_;
    auto deadline = t_spawn_ + std::chrono::seconds(s.timeout_seconds);
    if (devices_.incoming) return restore(deadline);
    return await("ready", deadline,
                 "the guest agent did not answer within " + std::to_string(s.timeout_seconds) + " s (kernel " +
                     s.kernel + ", initrd " + s.initrd + ", " + (s.kvm ? "KVM" : "TCG") + ")");
}

json Monitor::boot_and_create() {
    json ready;
    try {
        if (l_.adopted) {
            // A leased pool VM: up already, its channel handed to us.
            serial_ = std::move(l_.adopted->serial);
            qmp_ = std::move(l_.adopted->qmp);
            qemu_pidfd_ = std::move(l_.adopted->qemu_pidfd);
            qmp_greeted_ = true;
            t_spawn_ = Clock::now();
            ready = {{"boot_ms", 0.0}, {"init_ms", 0.0}, {"leased", true}};
        } else {
            ready = boot();
        }
    } catch (const Error& e) {
        if (!settings_.kvm || !settings_.kvm_fallback) throw;
        // auto chose KVM and it failed the guest (QEMU aborted, the guest stopped on a
        // KVM internal error, or it never came up): once more under TCG, and if that
        // boots, KVM is the culprit, remembered so later creates go straight to TCG.
        std::string kvm_error = e.what();
        log_debug("vm " + l_.id + ": KVM failed to boot the guest (" + kvm_error + "); retrying under TCG");
        stop_qemu();
        settings_.kvm = false;
        settings_.kvm_fallback = false;
        try {
            ready = boot();
        } catch (const Error& tcg) {
            throw Error(std::string(tcg.what()) + " (under KVM first: " + kvm_error + ")");
        }
        try {
            remember_kvm_failure(settings_.verdict_file, settings_.verdict_key, kvm_error);
        } catch (const Error& w) {
            log_warn("vm " + l_.id + ": " + w.what());
        }
    }
    const Settings& s = settings_;
    t_ready_ = Clock::now();
    json shares = json::array();
    for (const Share& sh : l_.shares)
        shares.push_back({{"tag", sh.tag}, {"path", sh.guest_path}, {"readonly", sh.readonly}});
    std::string root = l_.adopted ? "staging" : s.virtiofsd.empty() ? "9p" : "virtiofs";
    send({{"op", "create"}, {"id", l_.id}, {"config", l_.config}, {"root", root}, {"shares", shares}, {"park", l_.pooled}});
    json created = await("created", Clock::now() + std::chrono::seconds(60),
                         "the guest agent did not create the container within 60 s");
    t_created_ = Clock::now();
    if (l_.exec_fifo.empty() && !l_.pooled) {
        send({{"op", "start"}});
        await("started", Clock::now() + std::chrono::seconds(60),
              "the guest agent did not start the workload within 60 s");
        t_started_ = Clock::now();
        started_ = true;
    }
    double host_boot = ms_between(t_spawn_, t_ready_);
    double guest_boot = ready.value("boot_ms", 0.0), agent_init = ready.value("init_ms", 0.0);
    return {{"accel", s.kvm ? "kvm" : "tcg"},
            {"restored", ready.value("restored", false)},
            {"leased", ready.value("leased", false)},
            {"qemu_start_ms", std::max(0.0, host_boot - guest_boot - agent_init)},
            {"kernel_boot_ms", guest_boot},
            {"agent_init_ms", agent_init},
            {"create_ms", ms_between(t_ready_, t_created_)},
            {"start_ms", started_ ? ms_between(t_created_, t_started_) : 0.0},
            {"root", root},
            {"mounts_ms", created.value("mounts_ms", 0.0)},
            {"guest_setup", created.value("timings", "")}};
}

json Monitor::qmp(const std::string& execute, const json& args, Clock::time_point deadline,
                  const std::string& what) {
    auto wait_once = [&] {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) throw Error(what + ": QEMU did not answer in time");
        if (!qmp_) throw Error(what + ": QEMU closed its monitor");
        pollfd p[2] = {{qmp_.get(), POLLIN, 0}, {qemu_pidfd_.get(), POLLIN, 0}};
        if (::poll(p, 2, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR)
            throw_errno("poll");
        if (p[0].revents & (POLLIN | POLLHUP)) read_qmp();
        if ((p[1].revents & POLLIN) && !(p[0].revents & POLLIN)) {
            std::string why = qemu_log_reason();
            throw Error(what + ": qemu exited" + (why.empty() ? "" : ": " + why));
        }
    };
    while (!qmp_greeted_) wait_once();
    int id = ++qmp_id_;
    json cmd = {{"execute", execute}, {"id", id}};
    if (!args.is_null()) cmd["arguments"] = args;
    write_all(qmp_.get(), cmd.dump() + "\n");
    for (;;) {
        if (auto it = qmp_replies_.find(id); it != qmp_replies_.end()) {
            json r = std::move(it->second);
            qmp_replies_.erase(it);
            if (r.contains("error"))
                throw Error(what + ": " + (r["error"].is_object() ? r["error"].value("desc", "error") : "error"));
            return r.value("return", json::object());
        }
        wait_once();
    }
}

void Monitor::await_migration(Clock::time_point deadline, const std::string& what) {
    for (;;) {
        json st = qmp("query-migrate", nullptr, deadline, what);
        std::string status = st.value("status", "");
        if (status == "completed") return;
        if (status == "failed" || status == "cancelled")
            throw Error(what + ": " + st.value("error-desc", status));
        ::usleep(10000);
    }
}

namespace {
// A path QEMU's exec: migration hands to /bin/sh: nothing the shell would read.
const std::string& shell_safe(const std::string& path) {
    for (char c : path)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '.' || c == '_' || c == '-'))
            throw Error("snapshot path " + path + ": only letters, digits and / . _ - are allowed");
    return path;
}
}  // namespace

json Monitor::ignore_shared() {
    return {{"capabilities", json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}};
}

void Monitor::snapshot() {
    const Settings& s = settings_;
    boot();
    // What every restored VM would otherwise do first: the root's modules.
    send({{"op", "prepare"}, {"root", s.virtiofsd.empty() ? "9p" : "virtiofs"}, {"shares", !l_.shares.empty()}});
    await("prepared", Clock::now() + std::chrono::seconds(60), "the guest agent did not prepare within 60 s");
    auto deadline = Clock::now() + std::chrono::seconds(120);
    expect_stop_ = true;
    qmp("stop", nullptr, deadline, "pause the guest for its snapshot");
    std::string tmp = shell_safe(l_.snapshot_out) + ".tmp";
    // The guest's memory stays in its file; the snapshot holds the devices' state.
    if (!devices_.memory_file.empty()) qmp("migrate-set-capabilities", ignore_shared(), deadline, "x-ignore-shared");
    qmp("migrate", {{"uri", "exec:cat > " + tmp}}, deadline, "save the snapshot " + l_.snapshot_out);
    await_migration(deadline, "save the snapshot " + l_.snapshot_out);
    if (::rename(tmp.c_str(), l_.snapshot_out.c_str()) < 0) throw_errno("rename " + tmp);
    log_debug("vm " + l_.id + ": snapshot " + l_.snapshot_out + " saved " +
              ms(ms_between(t_spawn_, Clock::now())) + " after QEMU started");
}

json Monitor::restore(Clock::time_point deadline) {
    std::string what = "restore the snapshot " + l_.restore_from;
    // The memory comes from the template's file, mapped copy-on-write: only the
    // devices' state is read, and the pages the guest never writes stay shared.
    if (!devices_.memory_file.empty()) qmp("migrate-set-capabilities", ignore_shared(), deadline, what);
    qmp("migrate-incoming", {{"uri", "exec:cat " + shell_safe(l_.restore_from)}}, deadline, what);
    await_migration(deadline, what);
    qmp("cont", nullptr, deadline, what + ": resume");
    // Every VM restored from one snapshot starts with the same random state.
    std::string seed(64, '\0');
    if (::getrandom(seed.data(), seed.size(), 0) != static_cast<ssize_t>(seed.size())) throw_errno("getrandom");
    send({{"op", "reseed"}, {"seed", tarn::vm::base64_encode(seed)}});
    await("reseeded", deadline, "the restored guest's agent did not answer within " +
                                    std::to_string(settings_.timeout_seconds) + " s");
    return {{"boot_ms", 0.0}, {"init_ms", 0.0}, {"restored", true}};
}

void Monitor::await_claim() {
    auto gone = [this] {
        stop_qemu();
        ::_exit(1);
    };
    for (;;) {
        while (!inbox_.empty()) {
            json msg = std::move(inbox_.front());
            inbox_.pop_front();
            handle(msg);
        }
        if (exited_) {
            log_warn("vm " + l_.id + ": the parked container exited before any claim");
            gone();
        }
        if (guest_stopped_) {
            log_warn("vm " + l_.id + ": " + stop_reason() + " before any claim");
            gone();
        }
        pollfd p[5] = {{ctl_, POLLIN, 0},
                       {serial_.get(), static_cast<short>(POLLIN | (outbox_.empty() ? 0 : POLLOUT)), 0},
                       {qemu_pidfd_.get(), POLLIN, 0},
                       {qmp_ ? qmp_.get() : -1, POLLIN, 0},
                       {virtiofsd_pidfd_ ? virtiofsd_pidfd_.get() : -1, POLLIN, 0}};
        if (::poll(p, 5, -1) < 0) {
            if (errno == EINTR) continue;
            gone();
        }
        if (p[3].revents & (POLLIN | POLLHUP)) read_qmp();
        if (p[1].revents & POLLOUT) flush_outbox();
        if ((p[1].revents & (POLLIN | POLLHUP)) && !read_serial()) gone();
        if (p[2].revents & POLLIN) gone();  // QEMU exited
        if (p[4].revents & POLLIN) gone();  // virtiofsd exited: the guest's root is gone
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        std::string buf(256 * 1024, '\0');
        std::vector<UniqueFd> fds;
        ns::Received r;
        try {
            r = ns::recv_with_fds(ctl_, std::span<char>(buf.data(), buf.size()), &fds, "receive a claim");
        } catch (const Error&) {
            gone();
        }
        if (r.bytes == 0 && fds.empty()) gone();  // the pool is gone
        json req = json::parse(buf.substr(0, r.bytes), nullptr, false);
        auto refuse = [&](const std::string& why) {
            // "lost": the VM died under the claim, which another VM can serve;
            // "error": the guest refused the request itself.
            bool vm_died = qemu_pid_ < 0 || guest_stopped_ || serial_eof_ ||
                           (virtiofsd_pidfd_ && ::poll(std::array<pollfd, 1>{{{virtiofsd_pidfd_.get(), POLLIN, 0}}}.data(), 1, 0) > 0);
            std::string m = (vm_died ? "lost " : "error ") + why;
            (void)!::send(ctl_, m.data(), m.size(), MSG_NOSIGNAL);
            gone();
        };
        if (!r.truncated && req.is_object() && req.value("op", "") == "lease" && fds.size() == 1)
            serve_lease(std::move(fds[0]));
        if (r.truncated || !req.is_object() || fds.size() != 3) refuse("a malformed claim");
        for (int i = 0; i < 3; ++i)
            if (::dup2(fds[static_cast<size_t>(i)].get(), i) < 0) refuse("take the claim's stdio: " + Error::errno_text(errno));
        req["op"] = "claim";
        t_created_ = Clock::now();
        send(req);
        try {
            await("started", Clock::now() + std::chrono::seconds(60),
                  "the guest agent did not start the workload within 60 s");
        } catch (const Error& e) {
            refuse(e.what());
        }
        t_started_ = Clock::now();
        started_ = true;
        log_debug("vm " + l_.id + ": claimed, workload started in " + ms(ms_between(t_created_, t_started_)));
        if (::send(ctl_, "started", 7, MSG_NOSIGNAL) < 0) gone();
        return;
    }
}

namespace {
// A share's tag as guest_config() makes them: "bind" and a number.
bool valid_tag(const std::string& tag) {
    return tag.size() > 4 && tag.size() < 12 && tag.compare(0, 4, "bind") == 0 &&
           std::all_of(tag.begin() + 4, tag.end(), [](char c) { return c >= '0' && c <= '9'; });
}
bool valid_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos && name.size() < 256;
}
}  // namespace

void Monitor::attach(int peer) {
    pollfd p[2] = {{peer, POLLIN, 0}, {qemu_pidfd_.get(), POLLIN, 0}};
    int ready;
    while ((ready = ::poll(p, 2, 60000)) < 0 && errno == EINTR) {
    }
    if (ready <= 0 || !(p[0].revents & POLLIN)) throw Error("the borrower sent nothing");
    if (guest_stopped_ || (p[1].revents & POLLIN)) throw Error("the VM is gone");
    std::string buf(64 * 1024, '\0');
    std::vector<UniqueFd> fds;
    ns::Received r = ns::recv_with_fds(peer, std::span<char>(buf.data(), buf.size()), &fds, "receive the attach request");
    json req = r.truncated ? json() : json::parse(buf.substr(0, r.bytes), nullptr, false);
    if (!req.is_object() || req.value("op", "") != "attach" || !req.contains("shares") || !req["shares"].is_array() ||
        fds.size() != req["shares"].size() + 1)
        throw Error("a malformed attach request");
    // Each tree goes onto a mount point made for it in the staging directory; the
    // guest finds the root at staging/root and share N at staging/bindN.
    auto put = [&](int tree, const std::string& target, const std::string& what) {
        if (::move_mount(tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            throw_errno("attach " + what + " to the VM's staging share");
    };
    const std::string& staging = devices_.staging;
    std::string root = staging + "/root";
    if (::mkdir(root.c_str(), 0755) < 0) throw_errno("mkdir " + root);
    put(fds[0].get(), root, "the root");
    for (size_t i = 0; i < req["shares"].size(); ++i) {
        const json& sh = req["shares"][i];
        std::string tag = sh.value("tag", ""), file = sh.value("file", "");
        if (!valid_tag(tag) || (!file.empty() && !valid_name(file))) throw Error("attach: bad share " + sh.dump());
        std::string dir = staging + "/" + tag;
        if (::mkdir(dir.c_str(), 0755) < 0) throw_errno("mkdir " + dir);
        std::string target = dir;
        if (!file.empty()) {
            // As for a cold VM's file share: a directory holding nothing but the file.
            target = dir + "/" + file;
            UniqueFd f(::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            if (!f) throw_errno("create " + target);
        }
        put(fds[i + 1].get(), target, "share " + tag);
    }
    send({{"op", "discard"}});
    await("discarded", Clock::now() + std::chrono::seconds(30),
          "the guest agent did not discard the parked container within 30 s");
}

void Monitor::serve_lease(UniqueFd peer) {
    // The VM is the borrower's container now: it outlives the pool daemon, and goes
    // when the borrower's end of `peer` closes (the container's monitor exited or was
    // killed, or `tarn create` failed) or when QEMU exits.
    ::prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    auto t_lease = Clock::now();
    try {
        attach(peer.get());
        json ok = {{"ok", true}, {"qemuLog", l_.state_dir + "/qemu.log"}};
        std::array<int, 3> fds{serial_.get(), qmp_.get(), qemu_pidfd_.get()};
        ns::send_with_fds(peer.get(), ok.dump(), fds, "hand the VM to its borrower");
    } catch (const std::exception& e) {
        std::string m = json{{"error", e.what()}}.dump();
        (void)!::send(peer.get(), m.data(), m.size(), MSG_NOSIGNAL);
        stop_qemu();
        ::_exit(1);
    }
    log_debug("vm " + l_.id + ": lent, " + ms(ms_between(t_lease, Clock::now())) + " after the lease");
    // Nothing here reads the guest any more.
    serial_.reset();
    qmp_.reset();
    ::close(ctl_);
    for (;;) {
        pollfd p[2] = {{peer.get(), POLLIN, 0}, {qemu_pidfd_.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents & POLLIN) break;
        if (p[0].revents & (POLLHUP | POLLERR)) break;
        if (p[0].revents & POLLIN) {
            char b[64];
            if (::recv(peer.get(), b, sizeof b, MSG_DONTWAIT) == 0) break;
        }
    }
    stop_qemu();
    // The borrower's trees are below shares/ in this namespace only: once they are
    // detached, the directory is what the host sees, empty, and can go. Were the
    // detach to fail, a removal would reach into the borrower's rootfs: it stays.
    if (::umount2((l_.state_dir + "/shares").c_str(), MNT_DETACH) == 0) {
        std::error_code ec;
        std::filesystem::remove_all(l_.state_dir, ec);
    }
    ::_exit(0);
}

void Monitor::accept_client() {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) return;
    clients_.push_back(std::make_unique<ExecClient>(ExecClient{next_n_++, std::move(fd), {}}));
    log_debug("vm " + l_.id + ": exec client " + std::to_string(clients_.back()->n));
}

bool Monitor::from_client(ExecClient& c) {
    char buf[65536];
    ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
        // The host side of an exec'd process is gone (killed, most likely): so goes
        // the process.
        send({{"op", "signal"}, {"n", c.n}, {"sig", SIGKILL}});
        return false;
    }
    c.reader.feed(std::string_view(buf, static_cast<size_t>(n)));
    while (auto line = c.reader.next()) {
        auto msg = tarn::vm::decode(*line);
        if (!msg) continue;
        std::string op = msg->value("op", "");
        if (op != "exec" && op != "stdin" && op != "signal" && op != "resize") continue;
        (*msg)["n"] = c.n;
        send(*msg);
    }
    return true;
}

void Monitor::to_client(const json& msg) {
    int n = msg.value("n", 0);
    auto it = std::find_if(clients_.begin(), clients_.end(), [&](const auto& c) { return c->n == n; });
    if (it == clients_.end()) return;
    write_all((*it)->fd.get(), tarn::vm::encode(msg));
    std::string t = msg.value("t", "");
    if (t == "exit" || t == "error") clients_.erase(it);
}

void Monitor::handle(const json& msg) {
    if (msg.value("n", 0) != 0) {
        to_client(msg);
        return;
    }
    std::string t = msg.value("t", "");
    if (t == "out") {
        int fd = msg.value("fd", 1) == 2 ? 2 : 1;
        try {
            write_all(fd, tarn::vm::base64_decode(msg.value("data", "")));
        } catch (const Error& e) {
            log_warn("vm " + l_.id + ": " + e.what());
        }
    } else if (t == "started") {
        t_started_ = Clock::now();
        started_ = true;
        fifo_.reset();  // `start` polls the fifo for POLLERR: no reader left means "running"
    } else if (t == "exit") {
        exited_ = true;
        exit_signal_ = msg.value("signal", 0);
        if (msg.contains("signal"))
            exit_code_ = 128 + msg.value("signal", 0);
        else
            exit_code_ = msg.value("code", 255);
    } else if (t == "error") {
        log_error("vm " + l_.id + ": guest: " + msg.value("msg", ""));
    } else if (t == "log") {
        log_debug("vm " + l_.id + ": guest: " + msg.value("msg", ""));
    }
}

void Monitor::send_window_size() {
    winsize ws{};
    if (::ioctl(0, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0 || ws.ws_col == 0) return;
    send({{"op", "resize"}, {"rows", ws.ws_row}, {"cols", ws.ws_col}});
}

void Monitor::finish() {
    if (l_.pooled) {
        // A pool's VM is used once and nothing of its guest is kept: the status goes
        // out first, and QEMU is killed by our exit (its parent-death signal) while
        // the pool hands the status on; the pool's cleaner waits for it to be gone.
        if (started_)
            log_debug("vm " + l_.id + ": workload " + ms(ms_between(t_started_, Clock::now())) + ", exit code " +
                      std::to_string(exit_code_));
        std::string m = "exit " + json{{"code", exit_code_}, {"signal", exit_signal_}}.dump();
        (void)!::send(ctl_, m.data(), m.size(), MSG_NOSIGNAL);
        ::_exit(exit_code_);
    }
    // After "exit" the agent powers the guest off; give it a moment, then pull the plug.
    if (qemu_pid_ > 0 || (l_.adopted && qemu_pidfd_)) {
        pollfd p{qemu_pidfd_.get(), POLLIN, 0};
        ::poll(&p, 1, 2000);
    }
    stop_qemu();
    if (started_)
        log_debug("vm " + l_.id + ": workload " + ms(ms_between(t_started_, Clock::now())) + ", exit code " +
                  std::to_string(exit_code_));
    ::_exit(exit_code_);
}

void Monitor::run() {
    // Every signal is the workload's: they arrive through the signalfd and go to the guest.
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, nullptr);
    ::setsid();  // a terminal's ^C reaches `run`, which forwards it once, not us too
    std::set<int> keep = {0, 1, 2, ctl_, log_file_fd()};
    if (l_.adopted)
        for (const UniqueFd* fd : {&l_.adopted->serial, &l_.adopted->qmp, &l_.adopted->qemu_pidfd, &l_.adopted->lifeline})
            keep.insert(fd->get());
    close_other_fds(keep);
    terminal_ = l_.terminal >= 0;
    if (terminal_) {
        // The host pty's slave is our stdio. As its controlling process we get SIGWINCH
        // when the master's holder resizes it. Raw: echo, line editing and CR/LF belong
        // to the guest's pty, and doing them twice would garble the workload's output.
        termios t;
        if (::ioctl(0, TIOCSCTTY, 0) < 0 || ::tcgetattr(0, &t) < 0) ::_exit(1);
        ::cfmakeraw(&t);
        if (::tcsetattr(0, TCSANOW, &t) < 0) ::_exit(1);
    }
    try {
        char go[8];
        if (::recv(ctl_, go, sizeof go, 0) <= 0) ::_exit(1);
        signals_.reset(::signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!signals_) throw_errno("signalfd");
        if (!l_.exec_fifo.empty()) {
            // Held open until the workload runs, like a parked container init's.
            fifo_.reset(::open(l_.exec_fifo.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
            if (!fifo_) throw_errno("open " + l_.exec_fifo);
        }
        if (!l_.adopted) prepare_shares();
        if (!l_.snapshot_out.empty()) {
            snapshot();
            stop_qemu();
            (void)!::send(ctl_, "ok {}", 5, MSG_NOSIGNAL);
            ::_exit(0);
        }
        json timings = boot_and_create();
        listener_ = monitor_socket(l_.state_dir, true);
        std::string ok = "ok " + timings.dump();
        // Nobody to tell (create was killed): nobody recorded this VM either.
        if (::send(ctl_, ok.data(), ok.size(), MSG_NOSIGNAL) < 0) {
            stop_qemu();
            ::_exit(1);
        }
    } catch (const std::exception& e) {
        stop_qemu();
        std::string msg = std::string("error ") + e.what();
        (void)!::send(ctl_, msg.data(), msg.size(), MSG_NOSIGNAL);
        ::_exit(1);
    }
    if (l_.pooled)
        await_claim();  // ctl_ stays: the exit status goes there too
    else
        ::close(ctl_);
    if (::fcntl(0, F_GETFD) < 0) stdin_open_ = false;
    // A size set on the master before we were its controlling process sent no SIGWINCH.
    if (terminal_) send_window_size();

    for (;;) {
        while (!inbox_.empty()) {
            json msg = std::move(inbox_.front());
            inbox_.pop_front();
            handle(msg);
            if (exited_) finish();
        }
        bool want_stdin = started_ && stdin_open_ && outbox_.size() < (1u << 20);
        std::vector<pollfd> p = {
            {serial_eof_ ? -1 : serial_.get(), static_cast<short>(POLLIN | (outbox_.empty() ? 0 : POLLOUT)), 0},
            {qemu_pidfd_.get(), POLLIN, 0},
            {signals_.get(), POLLIN, 0},
            {fifo_ ? fifo_.get() : -1, POLLIN, 0},
            {want_stdin ? 0 : -1, POLLIN, 0},
            {listener_.get(), POLLIN, 0},
            {virtiofsd_pidfd_ ? virtiofsd_pidfd_.get() : -1, POLLIN, 0},
            {qmp_ ? qmp_.get() : -1, POLLIN, 0},
        };
        constexpr size_t kClients = 8;  // the first client's pollfd
        for (const auto& c : clients_)
            p.push_back({outbox_.size() < (1u << 20) ? c->fd.get() : -1, POLLIN, 0});
        if (::poll(p.data(), p.size(), -1) < 0) {
            if (errno == EINTR) continue;
            ::_exit(255);
        }
        for (size_t i = clients_.size(); i-- > 0;)
            if ((p[kClients + i].revents & (POLLIN | POLLHUP | POLLERR)) && !from_client(*clients_[i]))
                clients_.erase(clients_.begin() + static_cast<long>(i));
        if (p[7].revents & (POLLIN | POLLHUP)) read_qmp();
        if (guest_stopped_) {
            // QEMU lives on with a halted guest: the workload will never finish.
            log_error("vm " + l_.id + ": " + stop_reason() + " while the workload ran");
            stop_qemu();
            ::_exit(255);
        }
        if (p[5].revents & POLLIN) accept_client();
        if (p[0].revents & POLLOUT) flush_outbox();
        // At EOF the serial line is no longer polled, so that QEMU's exit is seen below.
        if ((p[0].revents & (POLLIN | POLLHUP)) && !read_serial()) serial_eof_ = true;
        if (p[2].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(signals_.get(), &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGWINCH && terminal_) send_window_size();
                if (tarn::vm::forwarded_signal(static_cast<int>(si.ssi_signo)))
                    send({{"op", "signal"}, {"sig", si.ssi_signo}});
            }
        }
        if (p[3].revents & POLLIN) {
            char b;
            if (::read(fifo_.get(), &b, 1) == 1) send({{"op", "start"}});
        }
        if (p[4].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (auto req = tarn::vm::stdin_request(0)) {
                if (req->value("eof", false)) stdin_open_ = false;
                send(*req);
            }
        }
        if ((p[6].revents & POLLIN) && inbox_.empty() && !(p[0].revents & POLLIN) &&
            !(p[1].revents & POLLIN) && !qemu_exits_soon()) {
            // The guest's root is gone: every access to it would hang.
            log_error("vm " + l_.id + ": " + virtiofsd_gone() + " while the workload ran");
            stop_qemu();
            ::_exit(255);
        }
        if ((p[1].revents & POLLIN) && inbox_.empty() && !(p[0].revents & POLLIN)) {
            int status = 0;
            if (qemu_pid_ > 0) ::waitpid(qemu_pid_, &status, 0);
            qemu_pid_ = -1;
            std::string why = qemu_log_reason();
            if (why.empty()) why = console_tail();
            log_error("vm " + l_.id + ": qemu exited before the workload did" +
                      (why.empty() ? "" : ": " + why));
            ::_exit(255);
        }
    }
}

}  // namespace

HostPty open_host_pty(const oci::Process& p) {
    HostPty t;
    t.master.reset(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!t.master) throw_errno("open /dev/ptmx");
    if (::unlockpt(t.master.get()) < 0) throw_errno("unlockpt");
    t.slave.reset(::ioctl(t.master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!t.slave) throw_errno("open pty slave");
    if (p.console_size) {
        winsize ws{};
        ws.ws_row = static_cast<unsigned short>(p.console_size->height);
        ws.ws_col = static_cast<unsigned short>(p.console_size->width);
        ::ioctl(t.slave.get(), TIOCSWINSZ, &ws);
    }
    return t;
}

namespace {

void log_boot(const std::string& id, const json& t) {
    log_debug("create " + id + ": vm (" + t.value("accel", "") + ") qemu start " + ms(t.value("qemu_start_ms", 0.0)) +
              ", kernel boot " + ms(t.value("kernel_boot_ms", 0.0)) + ", agent init " +
              ms(t.value("agent_init_ms", 0.0)) + ", create " + ms(t.value("create_ms", 0.0)) + ", start " +
              ms(t.value("start_ms", 0.0)) + "; " + t.value("root", "") + " root, mounts " +
              ms(t.value("mounts_ms", 0.0)) + "; guest phases: " + t.value("guest_setup", ""));
}

// Forks the monitor, has `l.place_in_cgroup` place it and lets it start.
PooledVm fork_monitor(const Launch& l) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd ctl(sv[0]), child_end(sv[1]);
    pid_t self = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork vm monitor");
    if (pid == 0) {
        ctl.reset();
        if (l.pooled || !l.snapshot_out.empty()) {
            // A pool's VM goes with the pool daemon, whatever kills it (QEMU and
            // virtiofsd go with us in turn). Until a claim brings the workload's
            // stdio, there is none.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (::getppid() != self) ::_exit(1);
            int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
            if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0) ::_exit(1);
            ::close(null);
        }
        if (l.terminal >= 0)
            for (int fd = 0; fd < 3; ++fd)
                if (::dup2(l.terminal, fd) < 0) ::_exit(1);
        Monitor(l, child_end.get()).run();
    }
    child_end.reset();
    PooledVm vm;
    vm.pid = pid;
    vm.pidfd.reset(ns::detail::pidfd_open(pid));
    try {
        if (!vm.pidfd) throw_errno("pidfd_open vm monitor");
        if (l.place_in_cgroup) l.place_in_cgroup(pid);
        if (::send(ctl.get(), "go", 2, MSG_NOSIGNAL) < 0) throw_errno("start vm monitor");
    } catch (...) {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        throw;
    }
    vm.ctl = std::move(ctl);
    return vm;
}

std::string recv_text(int ctl) {
    std::string reply(65536, '\0');
    ssize_t n;
    while ((n = ::recv(ctl, reply.data(), reply.size(), 0)) < 0 && errno == EINTR) {
    }
    reply.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return reply;
}

}  // namespace

ns::Spawned spawn(const Launch& l) {
    PooledVm vm = fork_monitor(l);
    std::string reply = recv_text(vm.ctl.get());
    if (reply.rfind("ok ", 0) != 0) {
        ::kill(vm.pid, SIGKILL);
        while (::waitpid(vm.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        if (reply.rfind("error ", 0) == 0) throw Error(reply.substr(6));
        throw Error("the vm monitor exited without a word");
    }
    json t = json::parse(reply.substr(3), nullptr, false);
    if (t.is_object() && t.contains("accel")) log_boot(l.id, t);
    ns::Spawned sp;
    sp.pid = vm.pid;
    sp.pidfd = std::move(vm.pidfd);
    return sp;
}

PooledVm start_pooled(const Launch& l) {
    return fork_monitor(l);
}

std::string pooled_ready(int ctl, std::string& timings) {
    std::string reply = recv_text(ctl);
    if (reply.rfind("ok ", 0) == 0) {
        json t = json::parse(reply.substr(3), nullptr, false);
        if (!t.is_discarded() && t.value("restored", false))
            timings = "restore " + ms(t.value("qemu_start_ms", 0.0)) + ", create " + ms(t.value("create_ms", 0.0)) +
                      " (" + t.value("accel", "") + ", " + t.value("root", "") +
                      " root; guest phases: " + t.value("guest_setup", "") + ")";
        else if (!t.is_discarded())
            timings = "qemu start " + ms(t.value("qemu_start_ms", 0.0)) + ", kernel boot " +
                      ms(t.value("kernel_boot_ms", 0.0)) + ", agent init " + ms(t.value("agent_init_ms", 0.0)) +
                      ", create " + ms(t.value("create_ms", 0.0)) + " (" + t.value("accel", "") + ", " +
                      t.value("root", "") + " root; guest phases: " + t.value("guest_setup", "") + ")";
        return {};
    }
    if (reply.rfind("error ", 0) == 0) return reply.substr(6);
    return "the vm monitor exited without a word";
}

bool claim_pooled(int ctl, const json& request, const std::array<int, 3>& stdio) {
    try {
        ns::send_with_fds(ctl, request.dump(), stdio, "send the claim to the vm monitor");
    } catch (const Error& e) {
        if (e.code() == EPIPE || e.code() == ECONNRESET) return false;
        throw;
    }
    return true;
}

std::string pooled_outcome(int ctl, bool& lost) {
    std::string reply = recv_text(ctl);
    lost = false;
    if (reply == "started") return {};
    if (reply.rfind("error ", 0) == 0) return reply.substr(6);
    lost = true;
    if (reply.rfind("lost ", 0) == 0) return reply.substr(5);
    return "the vm monitor exited before the workload started";
}

}  // namespace tarn::runtime::vm
