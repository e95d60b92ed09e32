// The VM sandbox: a microVM booted ahead of its request, with tarn-agent up and the
// template's container created in the guest and parked (runtime/vm/monitor.cpp,
// start_pooled). A claim hands the request to the VM's monitor, which passes it to
// the agent; the workload starts in the guest with the claim's stdio. Each VM is used
// once: its monitor exits with the workload, and the VM goes with it.
//
// A VM's host side is its monitor (a child of the daemon, killed with it), QEMU and
// virtiofsd, all in the sandbox's cgroup below the pool's: the budget counts what the
// VM really costs. Its files (QEMU's and virtiofsd's logs) are in <dir>/<name>, and
// the template's root reaches it as an overlay private to it, in the monitor's own
// mount namespace.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <set>

#include "namespaces/syscalls.hpp"
#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::pool::detail {
namespace {

using runtime::log_debug;
using runtime::log_warn;

// A cleaner waits this long for QEMU and virtiofsd to leave the cgroup after the
// monitor's death (their parent-death signal) before it gives up on removing it.
constexpr int kCleanerWaitMs = 10000;

// The template's memory file holds the whole guest memory, most of it pages the guest
// zeroed (init_on_free): they become holes, so the file (and the page cache every VM
// restored from it shares) holds only what the guest had in use.
void punch_zero_pages(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    constexpr size_t kPage = 4096, kChunk = 1 << 20;
    std::vector<char> buf(kChunk);
    static const std::vector<char> zero(kPage, 0);
    off_t off = 0, hole = -1;
    auto punch = [&](off_t end) {
        if (hole >= 0 && ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hole, end - hole) < 0)
            throw_errno("punch the zero pages out of " + path);
        hole = -1;
    };
    for (;;) {
        ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read " + path);
        if (n == 0) break;
        for (size_t i = 0; i < static_cast<size_t>(n); i += kPage) {
            size_t len = std::min(kPage, static_cast<size_t>(n) - i);
            bool zeros = std::memcmp(buf.data() + i, zero.data(), len) == 0;
            off_t at = off + static_cast<off_t>(i);
            if (zeros && hole < 0) hole = at;
            if (!zeros) punch(at);
        }
        off += n;
    }
    punch(off);
}

// What the daemon watches for this kind: a VM booting, or a cleaner exiting.
struct Watched {
    enum class What { booting, cleaner } what;
};

// What every VM of a pool is made from, resolved once.
struct PoolVm {
    runtime::vm::Settings settings;
    runtime::vm::GuestConfig guest;
    std::string rootfs;  // real path
    bool readonly = false;
    std::string snapshot;  // restore each VM from this; empty: boot each one
    std::string memory;    // ... with its memory mapped from this file, copy-on-write
};

class VmSandboxes;

class VmSandbox final : public Sandbox, public Watched {
public:
    VmSandbox(VmSandboxes& kind, std::string cgroup, std::string dir)
        : Watched{What::booting}, kind_(kind), cgroup_(std::move(cgroup)), dir_(std::move(dir)) {}
    ~VmSandbox() override { destroy(); }

    int control_fd() const override { return failed_.empty() ? vm_.ctl.get() : failed_fd_.get(); }
    int exit_fd() const override { return vm_.pidfd.get(); }
    pid_t pid() const override { return vm_.pid; }
    const std::string& cgroup() const override { return cgroup_; }
    bool alive() const override {
        pollfd pfd{vm_.pidfd.get(), POLLIN, 0};
        return ::poll(&pfd, 1, 0) == 0;
    }
    bool claim(const Request& r) override;
    std::string claim_outcome() override { return runtime::vm::pooled_outcome(vm_.ctl.get(), lost_under_claim); }
    std::optional<ExitStatus> exit_status() override;
    void signal(int sig) override {
        if (vm_.pidfd && !reaped_) ns::detail::pidfd_send_signal(vm_.pidfd.get(), sig);
    }
    void destroy() override;
    void lend(nlohmann::json& reply, std::vector<int>& fds) override;
    void hand_over() override;

    void started(runtime::vm::PooledVm vm) { vm_ = std::move(vm); }
    // Starting it failed at once: the loop hears of it as of any failed boot, through
    // an eventfd that is readable from the start.
    void failed(const std::string& why) {
        failed_ = why;
        failed_fd_.reset(::eventfd(1, EFD_CLOEXEC));
        if (!failed_fd_) throw_errno("eventfd");
    }
    const std::string& failure() const { return failed_; }
    uint64_t boot_id = 0;  // the watch on ctl while it boots

private:
    VmSandboxes& kind_;
    std::string cgroup_, dir_;
    runtime::vm::PooledVm vm_;
    bool reaped_ = false, destroyed_ = false;
    std::string failed_;
    UniqueFd failed_fd_;
    UniqueFd borrower_end_;  // a lease's socket to the monitor, until it is sent
};

struct Cleaner : Watched {
    Cleaner() : Watched{What::cleaner} {}
    pid_t pid = -1;
    UniqueFd pidfd;
    uint64_t id = 0;
};

class VmSandboxes final : public SandboxKind {
public:
    VmSandboxes(Daemon& d, std::string dir, runtime::GlobalOptions global)
        : d_(d), dir_(std::move(dir)), global_(std::move(global)) {}

    const char* name() const override { return "vm"; }
    void start() override;
    std::unique_ptr<Sandbox> make(Pool& p, const std::string& name) override;
    void settle() override;
    void serve() override {
        serving_ = true;
        for (VmSandbox* sb : booting_) sb->boot_id = d_.watch_for(this, sb->control_fd(), static_cast<Watched*>(sb));
        for (auto& [c, owned] : cleaners_) c->id = d_.watch_for(this, c->pidfd.get(), static_cast<Watched*>(c));
    }
    void on_event(void* obj) override;
    bool lendable() const override { return true; }
    nlohmann::json lease_key(const Pool& p) const override { return runtime::vm::lease_key(vms_.at(&p).settings); }
    void stop() override;
    // A lent VM's monitor is the borrower's container, still the daemon's child: it is
    // reaped when it exits, and neither waited for nor killed when the daemon stops.
    void adopt_lent(pid_t pid, UniqueFd pidfd);

    // Removes what a VM leaves once its monitor is gone (its cgroup, its files), in a
    // process of its own: QEMU takes a moment to exit, which the loop does not wait for.
    void clean(const std::string& cgroup, const std::string& dir);
    // Removes <dir>, but for the directories of VMs lent to containers that live on
    // (their cgroups are in the leases file).
    void remove_unleased();
    void forget(VmSandbox* sb) { booting_.erase(sb); }

private:
    void booted(VmSandbox* sb);
    runtime::vm::Launch launch(const PoolVm& pv, const std::string& name, const std::string& dir) const;
    // Boots the template's guest once and saves it in pv.snapshot (<dir>/<pool>.snapshot).
    void make_snapshot(Pool& p, PoolVm& pv);
    // Makes its directory and cgroup and starts its monitor; throws on failure.
    void start_vm(Pool& p, const PoolVm& pv, VmSandbox& sb, const std::string& name, const std::string& dir);

    Daemon& d_;
    std::string dir_;
    runtime::GlobalOptions global_;
    std::map<const Pool*, PoolVm> vms_;
    std::set<VmSandbox*> booting_;
    std::map<Cleaner*, std::unique_ptr<Cleaner>> cleaners_, lent_;
    bool serving_ = false;
};

// ---- the sandbox -----------------------------------------------------------

bool VmSandbox::claim(const Request& r) {
    // A booted guest has its shares already: a host path cannot join it now.
    if (!r.binds.empty()) throw Error("binds: a VM pool's sandboxes take no per-request bind mounts");
    json req = {{"args", r.args}, {"env", r.env}};
    if (!r.cwd.empty()) req["cwd"] = r.cwd;
    if (r.memory) req["memory"] = *r.memory;
    if (r.pids) req["pids"] = *r.pids;
    return runtime::vm::claim_pooled(vm_.ctl.get(), req, r.stdio);
}

std::optional<ExitStatus> VmSandbox::exit_status() {
    if (reaped_) return std::nullopt;
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(vm_.pidfd.get()), &si, WEXITED | WNOHANG) < 0 ||
        si.si_pid == 0)
        return std::nullopt;
    reaped_ = true;
    ExitStatus st;
    if (si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED) {
        st = {.code = 128 + si.si_status, .signal = si.si_status};
    } else {
        st = {.code = si.si_status, .signal = 0};
    }
    // The monitor's last word says whether the guest's workload died of a signal
    // (its exit code alone cannot tell 128+N from N).
    char buf[512];
    ssize_t n;
    while ((n = ::recv(vm_.ctl.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        std::string_view m(buf, static_cast<size_t>(n));
        if (m.rfind("exit ", 0) != 0) continue;
        json j = json::parse(m.substr(5), nullptr, false);
        if (!j.is_object()) continue;
        st.code = j.value("code", st.code);
        st.signal = j.value("signal", 0);
    }
    return st;
}

void VmSandbox::lend(nlohmann::json& reply, std::vector<int>& fds) {
    // The borrower talks to the monitor directly over a socket pair: the monitor gets
    // one end with the lease, the borrower the other with the daemon's reply.
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd monitor_end(sv[0]);
    borrower_end_.reset(sv[1]);
    ns::send_with_fds(vm_.ctl.get(), R"({"op":"lease"})", std::array<int, 1>{monitor_end.get()},
                      "lend the VM's monitor");
    reply["cgroup"] = cgroup_;
    reply["pid"] = vm_.pid;
    reply["vmDir"] = dir_;
    fds.push_back(borrower_end_.get());
}

void VmSandbox::hand_over() {
    // Its monitor, QEMU and directory are the container's now (tarn delete removes
    // what is left of them); the daemon only reaps the monitor.
    destroyed_ = true;
    borrower_end_.reset();
    kind_.forget(this);
    kind_.adopt_lent(vm_.pid, std::move(vm_.pidfd));
}

void VmSandbox::destroy() {
    if (destroyed_) return;
    destroyed_ = true;
    kind_.forget(this);
    if (vm_.pidfd && !reaped_) {
        // QEMU and virtiofsd follow it (their parent-death signal).
        ns::detail::pidfd_send_signal(vm_.pidfd.get(), SIGKILL);
        siginfo_t si{};
        while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(vm_.pidfd.get()), &si, WEXITED) < 0 &&
               errno == EINTR) {
        }
        reaped_ = true;
    }
    kind_.clean(cgroup_, dir_);
}

// ---- the kind --------------------------------------------------------------

void VmSandboxes::start() {
    // What a previous daemon left: its VMs' files (their processes went with it),
    // except those lent to containers.
    remove_unleased();
    if (::mkdir(dir_.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir " + dir_);
    for (auto& [n, p] : d_.pools()) {
        if (p->kind != this) continue;
        std::string where = "pool " + n + ": template " + p->spec.bundle;
        char real[PATH_MAX];
        if (!::realpath(p->spec.bundle.c_str(), real)) throw_errno(where);
        std::string bundle = real, config_path = bundle + "/config.json";
        if (p->tmpl.config.process && p->tmpl.config.process->terminal)
            throw Error(config_path + ": process.terminal: a pool sandbox takes its stdio from each request");
        const oci::Config& c = p->tmpl.config;
        if (c.hooks && *c.hooks != oci::Hooks{})
            throw Error(config_path + ": hooks: a pool template cannot have hooks (a sandbox is made before its request)");
        PoolVm pv;
        try {
            pv.settings = runtime::vm::resolve(global_, c);
            pv.guest = runtime::vm::guest_config(read_file(config_path), bundle);
        } catch (const Error& e) {
            throw e.wrapped(where);
        }
        if (!::realpath(p->tmpl.rootfs.c_str(), real)) throw_errno(config_path + ": root.path " + p->tmpl.rootfs);
        pv.rootfs = real;
        pv.readonly = c.root && c.root->readonly;
        if (p->spec.vm_refill == "restore") {
            // vhost-user-fs cannot migrate: restored VMs get their root over 9p.
            PoolVm snap = pv;
            snap.settings.virtiofsd.clear();
            // Pages the guest frees are zeroed, so the snapshot holds (and every VM
            // restored from it maps) only the memory the guest uses: migration sends a
            // zero page as a flag, and the restored QEMU never touches it.
            snap.settings.extra_append = "init_on_free=1";
            try {
                make_snapshot(*p, snap);
                pv = std::move(snap);
            } catch (const Error& e) {
                log_warn("pool " + n + ": no snapshot of the template's guest (" + e.what() +
                         "): every VM boots instead");
            }
        }
        log_debug("pool " + n + ": VM sandboxes, " + (pv.settings.kvm ? "KVM" : "TCG") + " (" +
                  pv.settings.accel_reason + "), " + std::to_string(pv.settings.memory_mib) + " MiB, " +
                  std::to_string(pv.settings.cpus) + " vCPU, " +
                  (pv.snapshot.empty() ? "booted" : "restored from " + pv.snapshot));
        vms_[p.get()] = std::move(pv);
    }
}

runtime::vm::Launch VmSandboxes::launch(const PoolVm& pv, const std::string& name, const std::string& dir) const {
    runtime::vm::Launch l;
    l.id = name;
    l.state_dir = dir;
    l.config = pv.guest.text;
    l.shares = pv.guest.shares;
    l.mount_points = pv.guest.mount_points;
    l.rootfs = pv.rootfs;
    l.rootfs_readonly = pv.readonly;
    l.overlay = !pv.readonly;
    l.settings = pv.settings;
    l.memory_file = pv.memory;
    return l;
}

void VmSandboxes::make_snapshot(Pool& p, PoolVm& pv) {
    // The template's guest booted once, in a cgroup of its own under the pool, with
    // the same command line as every VM restored from it.
    std::string name = p.spec.name + "-snapshot-" + std::to_string(::getpid());
    std::string dir = dir_ + "/" + name;
    if (::mkdir(dir.c_str(), 0700) < 0) throw_errno("mkdir " + dir);
    auto t0 = Clock::now();
    std::string out = dir_ + "/" + p.spec.name + ".snapshot";
    std::string memory = dir_ + "/" + p.spec.name + ".memory";
    std::string cgroup = p.rp->path() + "/" + name;
    try {
        std::unique_ptr<cgroups::Manager> cg = p.rp->create_sandbox(name);
        runtime::vm::Launch l = launch(pv, name, dir);
        l.snapshot_out = out;
        l.memory_file = memory;
        l.place_in_cgroup = [&](pid_t pid) { cg->add_process(pid); };
        ns::Spawned sp = runtime::vm::spawn(l);
        while (::waitpid(sp.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        try {
            punch_zero_pages(memory);
        } catch (const Error& e) {
            // The VMs still share the file's pages; the page cache holds the zeros too.
            log_warn("pool " + p.spec.name + ": " + e.what());
        }
        pv.snapshot = out;
        pv.memory = memory;
    } catch (...) {
        // Nothing of the attempt stays: its cgroup, its directory, a partial file.
        clean(cgroup, dir);
        ::unlink(out.c_str());
        ::unlink(memory.c_str());
        ::unlink((out + ".tmp").c_str());
        throw;
    }
    clean(cgroup, dir);
    struct stat st {}, mem {};
    ::stat(pv.snapshot.c_str(), &st);
    ::stat(pv.memory.c_str(), &mem);
    log_debug("pool " + p.spec.name + ": snapshot of the template's guest in " +
              std::to_string(static_cast<long>(ms_since(t0))) + " ms: devices " + std::to_string(st.st_size >> 10) +
              " KiB, memory " + std::to_string((static_cast<long long>(mem.st_blocks) * 512) >> 20) + " MiB in use");
}

std::unique_ptr<Sandbox> VmSandboxes::make(Pool& p, const std::string& name) {
    const PoolVm& pv = vms_.at(&p);
    std::string dir = dir_ + "/" + name;
    auto sb = std::make_unique<VmSandbox>(*this, p.rp->path() + "/" + name, dir);
    try {
        start_vm(p, pv, *sb, name, dir);
    } catch (const Error& e) {
        sb->failed(e.what());  // on_event reports it; ~VmSandbox removes what was made
    }
    booting_.insert(sb.get());
    if (serving_) sb->boot_id = d_.watch_for(this, sb->control_fd(), static_cast<Watched*>(sb.get()));
    return sb;
}

void VmSandboxes::start_vm(Pool& p, const PoolVm& pv, VmSandbox& sb, const std::string& name,
                           const std::string& dir) {
    if (::mkdir(dir.c_str(), 0700) < 0) throw_errno("mkdir " + dir);
    // No limits on the VM's own cgroup: the template's resources apply in the guest,
    // and a host limit would take QEMU's own overhead out of the guest's share. The
    // pool's budget, above it, holds.
    std::unique_ptr<cgroups::Manager> cg = p.rp->create_sandbox(name);
    runtime::vm::Launch l = launch(pv, name, dir);
    l.restore_from = pv.snapshot;
    l.pooled = true;
    l.place_in_cgroup = [&](pid_t pid) { cg->add_process(pid); };
    sb.started(runtime::vm::start_pooled(l));
}

void VmSandboxes::booted(VmSandbox* sb) {
    d_.unwatch(sb->control_fd(), sb->boot_id);
    booting_.erase(sb);
    std::string timings;
    std::string why = sb->failure();
    if (why.empty()) why = runtime::vm::pooled_ready(sb->control_fd(), timings);
    if (why.empty()) {
        d_.made(sb, timings);
        return;
    }
    d_.make_failed(sb, why);  // destroys it: the monitor is reaped, the rest cleaned
}

void VmSandboxes::settle() {
    if (booting_.empty()) return;
    std::vector<pollfd> p;
    std::vector<VmSandbox*> order(booting_.begin(), booting_.end());
    for (VmSandbox* sb : order) p.push_back({sb->control_fd(), POLLIN, 0});
    while (::poll(p.data(), p.size(), -1) < 0)
        if (errno != EINTR) throw_errno("poll");
    for (size_t i = 0; i < p.size(); ++i)
        if (p[i].revents) {
            booted(order[i]);
            return;
        }
}

void VmSandboxes::on_event(void* obj) {
    auto* w = static_cast<Watched*>(obj);
    if (w->what == Watched::What::booting) {
        booted(static_cast<VmSandbox*>(w));
        return;
    }
    auto* c = static_cast<Cleaner*>(w);
    d_.unwatch(c->pidfd.get(), c->id);
    siginfo_t si{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c->pidfd.get()), &si, WEXITED | WNOHANG);
    cleaners_.erase(c);
    lent_.erase(c);
}

void VmSandboxes::clean(const std::string& cgroup, const std::string& dir) {
    cgroups::Mode mode = cgroups::detect();
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close_range(3, ~0U, 0);
        int rc = 0;
        try {
            auto cg = cgroups::open(cgroup, mode);
            if (cg->exists()) {
                cg->kill_all(SIGKILL);
                for (int i = 0; i < kCleanerWaitMs / 10 && !cg->pids().empty(); ++i) ::usleep(10000);
                cg->destroy();
            }
        } catch (const Error& e) {
            log_warn("pool: " + std::string(e.what()));
            rc = 1;
        }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        ::_exit(rc);
    }
    if (pid < 0) {
        log_warn("pool: fork a cleaner for " + cgroup + ": " + Error::errno_text(errno));
        return;
    }
    auto c = std::make_unique<Cleaner>();
    c->pid = pid;
    c->pidfd.reset(ns::detail::pidfd_open(pid));
    if (!c->pidfd) {
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        return;
    }
    if (serving_ && !d_.stopping()) c->id = d_.watch_for(this, c->pidfd.get(), static_cast<Watched*>(c.get()));
    cleaners_[c.get()] = std::move(c);
}

void VmSandboxes::remove_unleased() {
    std::set<std::string> keep;
    for (const std::string& cg : d_.leased()) keep.insert(cg.substr(cg.find_last_of('/') + 1));
    std::error_code ec;
    bool kept = false;
    for (std::filesystem::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        if (keep.count(it->path().filename().string())) {
            kept = true;
            continue;
        }
        std::error_code ec2;
        std::filesystem::remove_all(it->path(), ec2);
        if (ec2) log_warn("pool: remove " + it->path().string() + ": " + ec2.message());
    }
    if (!kept) ::rmdir(dir_.c_str());
}

void VmSandboxes::adopt_lent(pid_t pid, UniqueFd pidfd) {
    auto c = std::make_unique<Cleaner>();
    c->pid = pid;
    c->pidfd = std::move(pidfd);
    if (serving_ && !d_.stopping()) c->id = d_.watch_for(this, c->pidfd.get(), static_cast<Watched*>(c.get()));
    lent_[c.get()] = std::move(c);
}

void VmSandboxes::stop() {
    // VMs still booting go too; then every removal is finished.
    for (VmSandbox* sb : std::set<VmSandbox*>(booting_)) {
        d_.unwatch(sb->control_fd(), sb->boot_id);
        sb->destroy();
    }
    for (auto& [c, owned] : cleaners_) {
        d_.unwatch(c->pidfd.get(), c->id);
        while (::waitpid(c->pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
    cleaners_.clear();
    for (auto& [c, owned] : lent_) d_.unwatch(c->pidfd.get(), c->id);
    lent_.clear();
    // The pools' snapshots, and what cleaners could not remove; lent VMs' directories
    // stay with their containers.
    remove_unleased();
}

}  // namespace

std::unique_ptr<SandboxKind> vm_sandboxes(Daemon& d, const std::string& dir, const runtime::GlobalOptions& global) {
    return std::make_unique<VmSandboxes>(d, dir, global);
}

bool vm_isolated(const PoolSpec& spec, const runtime::GlobalOptions& global, const oci::Config& tmpl) {
    if (spec.isolation == "vm") return true;
    if (spec.isolation == "container") return false;
    return runtime::vm::selected(global, tmpl);
}

}  // namespace tarn::pool::detail
