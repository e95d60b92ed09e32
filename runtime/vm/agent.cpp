// tarn-agent: pid 1 of the VM isolation mode's guest. It loads the modules the guest
// needs, moves onto a tmpfs root, mounts the basics, and then serves the host's
// requests on the first serial port (protocol.hpp, docs/vm-protocol.md): it mounts
// the bundle's rootfs shared over virtio-fs or virtio-9p and the bind mounts' 9p
// shares, creates the container with the same namespaces and cgroups libraries tarn
// uses on a host, forwards stdio and signals, and reports the exit status. When the
// workload is gone it powers the guest off.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cgroups/cgroups.hpp"
#include "namespaces/namespaces.hpp"
#include "namespaces/syscalls.hpp"
#include "runtime/vm/protocol.hpp"

namespace tarn::vm {
namespace {

using nlohmann::json;

constexpr const char* kSerial = "/dev/ttyS0";
constexpr const char* kRootfs = "/run/tarn/rootfs";
constexpr std::string_view kShares = "/run/tarn/shares/";
constexpr const char* kFifo = "/run/tarn/exec.fifo";
// A leased pool VM's staging share: the bundle's root at root/, share N at bindN/.
constexpr const char* kStaging = "/run/tarn/staging";

// Reads a pool template's executable into the guest's page cache (below).
void warm_executable(const oci::Process& p);

double boottime_ms() {
    timespec ts;
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Until the serial line is ours, errors go to the console the kernel gave pid 1.
[[noreturn]] void die(const std::string& msg) {
    std::string line = "tarn-agent: " + msg + "\n";
    (void)!::write(2, line.data(), line.size());
    ::sync();
    ::reboot(RB_POWER_OFF);
    ::_exit(1);
}

void mount_or_throw(const char* source, const char* target, const char* type, unsigned long flags,
                    const char* data) {
    ::mkdir(target, 0755);
    if (::mount(source, target, type, flags, data) < 0)
        throw_errno(std::string("mount ") + type + " on " + target);
}

// The kernel modules of the initramfs (/lib/modules/order lists them, dependencies
// first; tarn vm setup writes it). The file systems' modules wait for the create
// request, which says whether the root comes over virtio-fs or 9p and whether there
// are 9p shares: under TCG each module costs boot time, and a guest needs one set.
class Modules {
public:
    // Reads every module into memory (the agent leaves the initramfs before a create
    // comes) and loads all but the file systems'.
    void boot();
    // Loads `name` and what it depends on (its .modinfo "depends="); a module that is
    // not there is taken as built into the kernel.
    void load(const std::string& name);

private:
    std::vector<std::string> depends(const std::string& name) const;
    void closure(const std::string& name, std::set<std::string>& into) const;

    std::vector<std::string> order_;
    std::map<std::string, std::string> image_;  // name (no .ko) -> module file
    std::set<std::string> loaded_;
};

// The modules the create request loads on demand: 9p's (root or shares), virtio-fs's.
constexpr const char* kOnDemand[] = {"9pnet_virtio", "9p", "virtiofs"};

void Modules::boot() {
    std::string order;
    try {
        order = read_file("/lib/modules/order");
    } catch (const Error&) {
        return;  // a kernel with everything built in
    }
    for (std::string_view line : lines(order)) {
        std::string file(line);
        if (file.size() <= 3 || file.compare(file.size() - 3, 3, ".ko") != 0) continue;
        std::string name = file.substr(0, file.size() - 3), path = "/lib/modules/" + file;
        image_[name] = read_file(path);
        ::unlink(path.c_str());  // the initramfs is memory: one copy is enough
        order_.push_back(name);
    }
    // What virtio-mmio needs loads now even when a file system depends on it too.
    std::set<std::string> deferred, now;
    for (const char* m : kOnDemand) closure(m, deferred);
    closure("virtio_mmio", now);
    for (const std::string& name : order_)
        if (!deferred.count(name) || now.count(name)) load(name);
}

std::vector<std::string> Modules::depends(const std::string& name) const {
    auto it = image_.find(name);
    if (it == image_.end()) return {};
    // .modinfo is a run of NUL-terminated key=value strings.
    constexpr std::string_view key("\0depends=", 9);
    size_t at = it->second.find(key);
    if (at == std::string::npos) return {};
    at += key.size();
    std::string list = it->second.substr(at, it->second.find('\0', at) - at);
    std::vector<std::string> deps;
    size_t pos = 0;
    while (pos < list.size()) {
        size_t comma = list.find(',', pos);
        std::string dep = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!dep.empty()) deps.push_back(dep);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return deps;
}

void Modules::closure(const std::string& name, std::set<std::string>& into) const {
    if (!image_.count(name) || !into.insert(name).second) return;
    for (const std::string& dep : depends(name)) closure(dep, into);
}

void Modules::load(const std::string& name) {
    auto it = image_.find(name);
    if (it == image_.end() || loaded_.count(name)) return;
    loaded_.insert(name);
    for (const std::string& dep : depends(name)) load(dep);
    if (::syscall(SYS_init_module, it->second.data(), it->second.size(), "") < 0 && errno != EEXIST)
        throw_errno("load module " + name + ".ko");
    image_.erase(it);
}

// pivot_root(2) refuses to move the initial rootfs, and the container's init pivots:
// the agent moves onto a tmpfs first, as switch_root does.
void leave_initramfs() {
    mount_or_throw("tmpfs", "/newroot", "tmpfs", MS_NOSUID, "mode=0755");
    if (::chdir("/newroot") < 0) throw_errno("chdir /newroot");
    if (::mount(".", "/", nullptr, MS_MOVE, nullptr) < 0) throw_errno("move /newroot to /");
    if (::chroot(".") < 0) throw_errno("chroot");
    if (::chdir("/") < 0) throw_errno("chdir /");
}

void mount_basics() {
    mount_or_throw("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_throw("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    mount_or_throw("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    // What a systemd host has: the unified hierarchy, with nsdelegate.
    mount_or_throw("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate");
    mount_or_throw("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_or_throw("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    ::mkdir("/run/tarn", 0700);
    // Kernel messages share the serial line with the protocol: only emergencies now.
    try {
        write_file("/proc/sys/kernel/printk", "1 4 1 7");
    } catch (const Error&) {
    }
}

UniqueFd open_serial() {
    UniqueFd fd(::open(kSerial, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!fd) throw_errno(std::string("open ") + kSerial);
    termios t;
    if (::tcgetattr(fd.get(), &t) < 0) throw_errno(std::string("tcgetattr ") + kSerial);
    // Raw: no echo of the host's requests, no CR/LF translation, no signal characters.
    ::cfmakeraw(&t);
    if (::tcsetattr(fd.get(), TCSANOW, &t) < 0) throw_errno(std::string("tcsetattr ") + kSerial);
    return fd;
}

void set_stdio(int in, int out, int err) {
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
}

struct Pipe {
    UniqueFd r, w;
    Pipe() {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0) throw_errno("pipe");
        r.reset(p[0]);
        w.reset(p[1]);
    }
};

// A process of the container whose stdio the agent forwards: the init (n 0) or one
// started by an "exec" request (n 1, 2, ...: the host's numbering).
struct Proc {
    int n = 0;
    pid_t pid = -1;
    UniqueFd pidfd, in, out, err;
    std::string in_pending;
    bool in_eof = false;
    // With process.terminal, `in` and `out` are the guest pty's master (two fds, so
    // closing stdin on EOF leaves the output open) and `err` is unused.
    bool terminal = false;
};

class Agent {
public:
    Agent(UniqueFd serial, UniqueFd devnull, Modules modules)
        : serial_(std::move(serial)), devnull_(std::move(devnull)), modules_(std::move(modules)) {}
    void ready(double boot_ms, double init_ms) {
        send({{"t", "ready"}, {"boot_ms", boot_ms}, {"init_ms", init_ms}});
    }
    [[noreturn]] void serve();

private:
    void send(json msg, int n = 0) {
        if (n != 0) msg["n"] = n;
        std::string line = encode(msg);
        std::string_view rest = line;
        while (!rest.empty()) {
            ssize_t n = ::write(serial_.get(), rest.data(), rest.size());
            if (n < 0) {
                if (errno == EINTR) continue;
                power_off();
            }
            rest.remove_prefix(static_cast<size_t>(n));
        }
    }
    void request(const json& msg);
    void create(const json& msg);
    // A pool VM: the init is set up and parked until "claim" hands it the request.
    void create_parked(const std::string& id, oci::Config cfg, int cgroup_fd, double mounts_ms);
    // The shared root and the bind mounts' shares, as the create request lists them.
    void mount_shares(const json& msg, bool root_readonly);
    void start();
    // A parked container (created with "park"): the request's args, env, cwd and
    // limits, and the workload starts with its stdio on pipes the agent relays.
    void claim(const json& msg);
    // A pool VM lent to `tarn create`: the template's parked container goes (killed,
    // its guest cgroup and root unmounted), so the bundle's own can be created.
    void discard();
    // A VM restored from a snapshot starts with the snapshot's random state, which
    // every VM restored from it shares: the host's fresh seed is mixed in (credited)
    // and the kernel's generator reseeded before anything in the guest draws on it.
    void reseed(const std::string& seed);
    void exec(int n, const json& msg);
    // Runs `spawn` with the new process's stdio on pipes, and registers it. A spawn
    // that made a terminal (process.terminal) returns its pty master: the process's
    // stdio is then that pty, and the pipes go unused.
    Proc& with_pipes(int n, const std::function<ns::Spawned()>& spawn);
    void resize(Proc& p, const json& msg);
    Proc* find(int n);
    void forward_output(Proc& p, UniqueFd& fd, int which);
    void flush_stdin(Proc& p);
    void reap();
    [[noreturn]] void power_off() {
        ::sync();
        ::reboot(RB_POWER_OFF);
        ::_exit(0);
    }

    UniqueFd serial_, devnull_, sigchld_;
    Modules modules_;
    LineReader reader_;
    std::vector<std::unique_ptr<Proc>> procs_;  // [0] is the init once created
    std::optional<oci::Config> config_;
    pid_t init_pid_ = -1;
    std::unique_ptr<cgroups::Manager> cgroup_;
    std::unique_ptr<ns::ParkedInit> parked_;  // a pool VM's container, until claimed
};

Proc* Agent::find(int n) {
    for (auto& p : procs_)
        if (p->n == n) return p.get();
    return nullptr;
}

Proc& Agent::with_pipes(int n, const std::function<ns::Spawned()>& spawn) {
    Pipe in, out, err;
    set_stdio(in.r.get(), out.w.get(), err.w.get());
    ns::Spawned sp;
    try {
        sp = spawn();
    } catch (...) {
        set_stdio(devnull_.get(), devnull_.get(), devnull_.get());
        throw;
    }
    set_stdio(devnull_.get(), devnull_.get(), devnull_.get());
    auto p = std::make_unique<Proc>();
    p->n = n;
    p->pid = sp.pid;
    p->pidfd = std::move(sp.pidfd);
    if (sp.pty_master) {
        p->terminal = true;
        p->in.reset(::fcntl(sp.pty_master.get(), F_DUPFD_CLOEXEC, 3));
        if (!p->in) throw_errno("dup pty master");
        p->out = std::move(sp.pty_master);
    } else {
        p->in = std::move(in.w);
        p->out = std::move(out.r);
        p->err = std::move(err.r);
    }
    for (int fd : {p->in.get(), p->out.get(), p->err.get()})
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    procs_.push_back(std::move(p));
    return *procs_.back();
}

void Agent::create(const json& msg) {
    if (config_) throw Error("a container already runs in this guest");
    std::string id = msg.value("id", "");
    oci::Config cfg = oci::parse_config(msg.value("config", ""), "config.json");

    double t_mounts = boottime_ms();
    mount_shares(msg, cfg.root && cfg.root->readonly);
    double mounts_ms = boottime_ms() - t_mounts;

    const oci::Resources none;
    const oci::Resources& res = cfg.linux && cfg.linux->resources ? *cfg.linux->resources : none;
    cgroup_ =
        cgroups::open(cgroups::resolve_path(cfg.linux ? cfg.linux->cgroups_path : "", id), cgroups::detect());
    cgroup_->create(res);
    cgroup_->apply(res);
    UniqueFd cgroup_fd(cgroup_->open_v2_dir_fd());

    if (msg.value("park", false)) {
        create_parked(id, std::move(cfg), cgroup_fd.get(), mounts_ms);
        return;
    }
    if (::mkfifo(kFifo, 0600) < 0) throw_errno(std::string("mkfifo ") + kFifo);
    ns::InitOptions io;
    io.rootfs = kRootfs;
    io.exec_fifo = kFifo;
    io.cgroup_fd = cgroup_fd.get();
    io.cgroup_path = cgroup_->path();
    io.session_keyring = "_ses." + id;
    // The container's init makes the pty inside its own /dev/pts and hands the master
    // back; the agent relays it as the process's stdio.
    io.want_pty_master = cfg.process && cfg.process->terminal;
    ns::ParentSteps ps;
    ps.place_in_cgroup = [&](pid_t p) { cgroup_->add_process(p); };
    ns::Spawned timings;
    Proc& init = with_pipes(0, [&] {
        ns::Spawned sp = ns::spawn_init(cfg, io, ps, ns::ChildSteps{});
        timings.timings = sp.timings;
        if (io.want_pty_master && !sp.pty_master) throw Error("process.terminal: the init sent no pty");
        return sp;
    });
    init_pid_ = init.pid;
    config_ = std::move(cfg);
    send({{"t", "created"},
          {"pid", init.pid},
          {"timings", timings.timings.report()},
          {"mounts_ms", mounts_ms}});
}

void Agent::create_parked(const std::string& id, oci::Config cfg, int cgroup_fd, double mounts_ms) {
    if (cfg.process && cfg.process->terminal)
        throw Error("process.terminal: a pool sandbox takes its stdio from each request");
    ns::InitOptions io;
    io.rootfs = kRootfs;
    io.await_claim = true;
    io.cgroup_fd = cgroup_fd;
    io.cgroup_path = cgroup_->path();
    io.session_keyring = "_ses." + id;
    auto parked = std::make_unique<ns::ParkedInit>(cfg, io, [&](pid_t p) { cgroup_->add_process(p); });
    // The agent has nothing else to do until the init is parked: step it through.
    while (!parked->advance()) {
        pollfd p[2] = {{parked->fd(), POLLIN, 0}, {parked->pidfd(), POLLIN, 0}};
        while (::poll(p, 2, -1) < 0 && errno == EINTR) {
        }
    }
    init_pid_ = parked->pid();
    warm_executable(*cfg.process);
    config_ = std::move(cfg);
    json created = {{"t", "created"},
                    {"pid", parked->pid()},
                    {"timings", parked->timings().report()},
                    {"mounts_ms", mounts_ms}};
    parked_ = std::move(parked);
    send(created);
}

void Agent::discard() {
    if (!parked_) throw Error("discard: no parked container in this guest");
    parked_.reset();  // killed and reaped
    cgroup_->destroy();
    cgroup_.reset();
    config_.reset();
    init_pid_ = -1;
    if (::umount2(kRootfs, MNT_DETACH) < 0) throw_errno(std::string("unmount the template's root ") + kRootfs);
}

void Agent::reseed(const std::string& seed) {
    if (seed.size() < 32) throw Error("reseed: the seed must be at least 32 bytes");
    UniqueFd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno("open /dev/urandom");
    std::vector<char> info(sizeof(rand_pool_info) + seed.size());
    auto* rpi = reinterpret_cast<rand_pool_info*>(info.data());
    rpi->entropy_count = static_cast<int>(seed.size() * 8);
    rpi->buf_size = static_cast<int>(seed.size());
    std::memcpy(rpi->buf, seed.data(), seed.size());
    if (::ioctl(fd.get(), RNDADDENTROPY, rpi) < 0) throw_errno("reseed: RNDADDENTROPY");
    if (::ioctl(fd.get(), RNDRESEEDCRNG) < 0) throw_errno("reseed: RNDRESEEDCRNG");
}

void warm_executable(const oci::Process& p) {
    // The template's executable, read once while the VM waits: a claim's exec then
    // finds it in the guest's page cache (the pool VM's root is cached, cache=loose)
    // instead of faulting it in page by page over the share. Resolved inside the
    // container's root, symlinks included; a miss costs nothing but the attempt.
    if (p.args.empty() || p.args[0].empty()) return;
    std::vector<std::string> candidates;
    if (p.args[0].find('/') != std::string::npos) {
        candidates.push_back(p.args[0]);
    } else {
        std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        for (const std::string& e : p.env)
            if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
        for (size_t start = 0; start <= path.size();) {
            size_t end = path.find(':', start);
            if (end == std::string::npos) end = path.size();
            std::string dir = path.substr(start, end - start);
            if (!dir.empty()) candidates.push_back(dir + "/" + p.args[0]);
            start = end + 1;
        }
    }
    UniqueFd root(::open(kRootfs, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return;
    for (const std::string& c : candidates) {
        UniqueFd f(ns::detail::open_in_root(root.get(), c, O_RDONLY | O_CLOEXEC));
        if (!f) continue;
        std::vector<char> buf(256 * 1024);
        while (::read(f.get(), buf.data(), buf.size()) > 0) {
        }
        return;
    }
}

void Agent::claim(const json& msg) {
    if (!parked_) throw Error("claim: no parked container in this guest");
    ns::Claim cl;
    for (const char* key : {"args", "env"}) {
        if (!msg.contains(key)) continue;
        if (!msg[key].is_array()) throw Error(std::string("claim: ") + key + ": expected an array of strings");
        for (const json& v : msg[key]) {
            if (!v.is_string()) throw Error(std::string("claim: ") + key + ": expected an array of strings");
            (key[0] == 'a' ? cl.args : cl.env).push_back(v.get<std::string>());
        }
    }
    if (cl.args.empty()) throw Error("claim: args: must name a command");
    cl.cwd = msg.value("cwd", "");
    // Per-request limits go on the guest container's cgroup, as a host sandbox's go on its own.
    oci::Resources lim;
    if (msg.contains("memory") && msg["memory"].is_number_integer())
        lim.memory = oci::Memory{.limit = msg["memory"].get<int64_t>()};
    if (msg.contains("pids") && msg["pids"].is_number_integer()) lim.pids = oci::Pids{msg["pids"].get<int64_t>()};
    if (lim.memory || lim.pids) cgroup_->apply(lim);
    Pipe in, out, err;
    cl.stdio = {in.r.get(), out.w.get(), err.w.get()};
    std::unique_ptr<ns::ParkedInit> parked = std::move(parked_);
    parked->claim(cl);
    in.r.reset();
    out.w.reset();
    err.w.reset();
    // The init's end of its socket closes on exec; a message says why it did not.
    pollfd p{parked->fd(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    std::string why = parked->claim_outcome();
    auto proc = std::make_unique<Proc>();
    proc->n = 0;
    proc->pid = parked->pid();
    proc->pidfd.reset(::fcntl(parked->pidfd(), F_DUPFD_CLOEXEC, 3));
    if (!proc->pidfd) throw_errno("dup the init's pidfd");
    proc->in = std::move(in.w);
    proc->out = std::move(out.r);
    proc->err = std::move(err.r);
    for (int fd : {proc->in.get(), proc->out.get(), proc->err.get()})
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    // Reaped by reap() from now on, whose exit report powers the guest off.
    parked->release();
    procs_.push_back(std::move(proc));
    if (!why.empty()) throw Error(why);
    send({{"t", "started"}});
}

// A device can show up a moment after its driver loads: retry for a while.
void mount_tag(const std::string& tag, const std::string& target, const char* type, unsigned long flags,
               const char* data) {
    if (::mkdir(target.c_str(), 0755) < 0 && errno != EEXIST) throw_errno("mkdir " + target);
    for (int i = 0;; ++i) {
        if (::mount(tag.c_str(), target.c_str(), type, flags, data) == 0) return;
        if (i >= 500) throw_errno("mount the share " + tag + " (" + type + ") on " + target);
        ::usleep(10000);
    }
}

void Agent::mount_shares(const json& msg, bool root_readonly) {
    constexpr const char* k9p = "trans=virtio,version=9p2000.L,msize=262144";
    std::string root = msg.value("root", "9p");
    unsigned long flags = root_readonly ? MS_RDONLY : 0;
    if (root == "virtiofs") {
        modules_.load("virtiofs");
        mount_tag("rootfs", kRootfs, "virtiofs", flags, nullptr);
    } else if (root == "staging") {
        // A leased pool VM: the host attached the bundle's root and bind sources to
        // the staging share; they are bound where a cold VM mounts its shares.
        modules_.load("9pnet_virtio");
        modules_.load("9p");
        mount_tag("staging", kStaging, "9p", 0, k9p);
        auto bind = [](const std::string& from, const std::string& to, bool readonly) {
            if (::mount(from.c_str(), to.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
                throw_errno("bind " + from + " on " + to);
            if (readonly && ::mount(nullptr, to.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) < 0)
                throw_errno("remount " + to + " read-only");
        };
        if (::mkdir(kRootfs, 0755) < 0 && errno != EEXIST) throw_errno(std::string("mkdir ") + kRootfs);
        bind(std::string(kStaging) + "/root", kRootfs, root_readonly);
        // Over the template's shares, if it had any.
        std::string shares(kShares.substr(0, kShares.size() - 1));
        if (::mkdir(shares.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir " + shares);
        if (::mount("tmpfs", shares.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0)
            throw_errno("mount tmpfs on " + shares);
        if (!msg.contains("shares") || !msg["shares"].is_array()) return;
        for (const json& sh : msg["shares"]) {
            std::string tag = sh.value("tag", ""), path = sh.value("path", "");
            if (tag.empty() || tag.find('/') != std::string::npos || tag[0] == '.' ||
                path.compare(0, kShares.size(), kShares) != 0 || path.find("/..") != std::string::npos)
                throw Error("create: shares: bad share " + sh.dump());
            if (::mkdir(path.c_str(), 0755) < 0) throw_errno("mkdir " + path);
            bind(std::string(kStaging) + "/" + tag, path, sh.value("readonly", false));
        }
        return;
    } else if (root == "9p") {
        modules_.load("9pnet_virtio");
        modules_.load("9p");
        // A pool VM's root is its own (a read-only template, or an overlay only this
        // guest writes): nothing changes it behind the guest's back, so the guest may
        // keep what it read (cache=loose), and a workload's exec reads ahead instead
        // of asking the host for every page.
        std::string opts = std::string(k9p) + (msg.value("park", false) ? ",cache=loose" : "");
        mount_tag("rootfs", kRootfs, "9p", flags, opts.c_str());
    } else {
        throw Error("create: root: expected \"virtiofs\", \"9p\" or \"staging\", got \"" + root + "\"");
    }
    if (!msg.contains("shares") || !msg["shares"].is_array() || msg["shares"].empty()) return;
    modules_.load("9pnet_virtio");
    modules_.load("9p");
    ::mkdir(std::string(kShares).c_str(), 0700);
    for (const json& sh : msg["shares"]) {
        std::string tag = sh.value("tag", ""), path = sh.value("path", "");
        if (tag.empty() || path.compare(0, kShares.size(), kShares) != 0 ||
            path.find("/..") != std::string::npos)
            throw Error("create: shares: bad share " + sh.dump());
        mount_tag(tag, path, "9p", sh.value("readonly", false) ? MS_RDONLY : 0, k9p);
    }
}

void Agent::start() {
    Proc* init = find(0);
    if (!init) throw Error("no container to start");
    UniqueFd fifo(::open(kFifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fifo) throw_errno("open exec.fifo (is the container init still waiting?)");
    if (::write(fifo.get(), "0", 1) != 1) throw_errno("release container init");
    // The init's end closes on exec: POLLERR means the workload runs.
    pollfd p[2] = {{fifo.get(), 0, 0}, {init->pidfd.get(), POLLIN, 0}};
    while (::poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    ::unlink(kFifo);
    if ((p[1].revents & POLLIN) && !(p[0].revents & POLLERR))
        throw Error("container init exited before the workload started");
    send({{"t", "started"}});
}

void Agent::exec(int n, const json& msg) {
    Proc* init = find(0);
    if (!init || !config_) throw Error("no container to exec in");
    if (n <= 0 || find(n)) throw Error("exec: bad process number " + std::to_string(n));
    oci::Process proc = oci::parse_process(msg.value("process", json::object()).dump(), "process");
    ns::ExecOptions eo;
    eo.want_pty_master = proc.terminal;
    if (config_->linux)
        for (const oci::Namespace& ns : config_->linux->namespaces) eo.namespaces.push_back(ns.type);
    if (config_->linux) eo.seccomp = config_->linux->seccomp;
    Proc& p = with_pipes(n, [&] {
        return ns::spawn_exec(init->pidfd.get(), init_pid_, proc, eo,
                              [&](pid_t pid) { cgroup_->add_process(pid); });
    });
    send({{"t", "started"}, {"pid", p.pid}}, n);
}

void Agent::request(const json& msg) {
    std::string op = msg.value("op", "");
    int n = msg.value("n", 0);
    try {
        if (op == "create") {
            create(msg);
        } else if (op == "start") {
            start();
        } else if (op == "claim") {
            claim(msg);
        } else if (op == "discard") {
            discard();
            send({{"t", "discarded"}});
        } else if (op == "prepare") {
            // Before a snapshot: what every VM restored from it would load anyway.
            if (msg.value("root", "") == "9p" || msg.value("shares", false)) {
                modules_.load("9pnet_virtio");
                modules_.load("9p");
            }
            send({{"t", "prepared"}});
        } else if (op == "reseed") {
            reseed(base64_decode(msg.value("seed", "")));
            send({{"t", "reseeded"}});
        } else if (op == "exec") {
            exec(n, msg);
        } else if (op == "stdin") {
            Proc* p = find(n);
            if (!p) return;
            if (msg.contains("data")) p->in_pending += base64_decode(msg.value("data", ""));
            if (msg.value("eof", false)) p->in_eof = true;
            flush_stdin(*p);
        } else if (op == "resize") {
            if (Proc* p = find(n)) resize(*p, msg);
        } else if (op == "signal" && msg.value("all", false)) {
            // kill --all: every process of the container, exec'd ones included (they
            // joined its cgroup), as on a host.
            if (!cgroup_) throw Error("no container to signal");
            cgroup_->kill_all(msg.value("sig", SIGTERM));
        } else if (op == "signal") {
            if (Proc* p = find(n)) ns::detail::pidfd_send_signal(p->pidfd.get(), msg.value("sig", SIGTERM));
        } else {
            send({{"t", "log"}, {"msg", "unknown request \"" + op + "\" ignored"}});
        }
    } catch (const std::exception& e) {
        send({{"t", "error"}, {"msg", e.what()}}, n);
    }
}

void Agent::resize(Proc& p, const json& msg) {
    if (!p.terminal) return;  // a window size means nothing to pipes
    winsize ws{};
    ws.ws_row = static_cast<unsigned short>(msg.value("rows", 0));
    ws.ws_col = static_cast<unsigned short>(msg.value("cols", 0));
    // The kernel sends SIGWINCH to the pty's foreground process group.
    if (::ioctl(p.out.get(), TIOCSWINSZ, &ws) < 0) throw_errno("resize the terminal");
}

void Agent::flush_stdin(Proc& p) {
    while (p.in && !p.in_pending.empty()) {
        ssize_t w = ::write(p.in.get(), p.in_pending.data(), p.in_pending.size());
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            p.in_pending.clear();  // the process closed its stdin
            break;
        }
        p.in_pending.erase(0, static_cast<size_t>(w));
    }
    if (p.in_eof && p.in_pending.empty()) p.in.reset();
}

void Agent::forward_output(Proc& p, UniqueFd& fd, int which) {
    char buf[4096];
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r > 0) {
        send({{"t", "out"},
              {"fd", which},
              {"data", base64_encode(std::string_view(buf, static_cast<size_t>(r)))}},
             p.n);
    } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.reset();
    }
}

void Agent::reap() {
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        auto it = std::find_if(procs_.begin(), procs_.end(), [&](const auto& p) { return p->pid == pid; });
        if (it == procs_.end()) continue;  // an orphan the guest's pid 1 inherited
        Proc& p = **it;
        // Forward what is left before the exit status. For the init, the kernel kills
        // the rest of its pid namespace, so its pipes reach EOF soon.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while ((p.out || p.err) && std::chrono::steady_clock::now() < deadline) {
            pollfd q[2] = {{p.out ? p.out.get() : -1, POLLIN, 0}, {p.err ? p.err.get() : -1, POLLIN, 0}};
            if (::poll(q, 2, 100) <= 0) continue;
            if (q[0].revents & (POLLIN | POLLHUP)) forward_output(p, p.out, 1);
            if (q[1].revents & (POLLIN | POLLHUP)) forward_output(p, p.err, 2);
        }
        json exit = {{"t", "exit"}};
        if (WIFSIGNALED(status))
            exit["signal"] = WTERMSIG(status);
        else
            exit["code"] = WEXITSTATUS(status);
        send(exit, p.n);
        if (p.n == 0) {
            ::tcdrain(serial_.get());
            power_off();
        }
        procs_.erase(it);
    }
}

void Agent::serve() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigchld_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    for (;;) {
        // serial, SIGCHLD, then out, err, in of each process.
        std::vector<pollfd> p = {{serial_.get(), POLLIN, 0}, {sigchld_.get(), POLLIN, 0}};
        for (const auto& pr : procs_) {
            p.push_back({pr->out ? pr->out.get() : -1, POLLIN, 0});
            p.push_back({pr->err ? pr->err.get() : -1, POLLIN, 0});
            p.push_back({pr->in && !pr->in_pending.empty() ? pr->in.get() : -1, POLLOUT, 0});
        }
        if (::poll(p.data(), p.size(), -1) < 0) {
            if (errno == EINTR) continue;
            power_off();
        }
        for (size_t i = 0; i < procs_.size(); ++i) {
            Proc& pr = *procs_[i];
            if (p[2 + 3 * i].revents & (POLLIN | POLLHUP)) forward_output(pr, pr.out, 1);
            if (p[3 + 3 * i].revents & (POLLIN | POLLHUP)) forward_output(pr, pr.err, 2);
            if (p[4 + 3 * i].revents & (POLLOUT | POLLERR)) flush_stdin(pr);
        }
        // Requests and exits last: they may add or remove processes.
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            ssize_t n = ::read(serial_.get(), buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) power_off();  // the host is gone
            if (n > 0) reader_.feed(std::string_view(buf, static_cast<size_t>(n)));
            while (auto line = reader_.next())
                if (auto msg = decode(*line)) request(*msg);
        }
        if (p[1].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(sigchld_.get(), &si, sizeof si) == sizeof si) {
            }
            reap();
        }
    }
}

}  // namespace
}  // namespace tarn::vm

int main() {
    using namespace tarn;
    double boot_ms = vm::boottime_ms();
    if (::getpid() != 1) {
        std::fprintf(stderr, "tarn-agent: runs as pid 1 of a tarn VM guest (see docs/vm-protocol.md)\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    try {
        vm::Modules modules;
        modules.boot();
        vm::leave_initramfs();
        vm::mount_basics();
        UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!devnull) throw_errno("open /dev/null");
        UniqueFd serial = vm::open_serial();
        vm::set_stdio(devnull.get(), devnull.get(), devnull.get());
        vm::Agent agent(std::move(serial), std::move(devnull), std::move(modules));
        agent.ready(boot_ms, vm::boottime_ms() - boot_ms);
        agent.serve();
    } catch (const std::exception& e) {
        vm::die(e.what());
    }
}
