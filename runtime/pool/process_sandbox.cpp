// The process sandbox: a container init parked in its namespaces and cgroup, made by
// spawners — processes forked from the daemon that make sandboxes and remove used
// ones, so none of that kernel work blocks the daemon's loop — and claimed over its
// sync socket.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {
namespace {

using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

// Spawners replaced after they died: at most kMaxRespawns per kRespawnWindow.
constexpr auto kRespawnWindow = std::chrono::seconds(60);
constexpr size_t kMaxRespawns = 5;

struct Spawner {
    pid_t pid = -1;
    UniqueFd sock;
    uint64_t id = 0;
    unsigned jobs = 0;              // sandboxes asked for and not yet answered
    std::set<std::string> pending;  // their names
};

class ProcessSandboxes;

class ProcessSandbox final : public Sandbox {
public:
    ProcessSandbox(ProcessSandboxes& kind, std::string cgroup, pid_t spawner)
        : kind_(kind), cgroup_(std::move(cgroup)), spawner_(spawner) {}

    int control_fd() const override { return init_ ? init_->fd() : -1; }
    int exit_fd() const override { return init_ ? init_->pidfd() : -1; }
    pid_t pid() const override { return init_->pid(); }
    const std::string& cgroup() const override { return cgroup_; }
    bool alive() const override {
        pollfd pfd{init_->pidfd(), POLLIN, 0};
        return ::poll(&pfd, 1, 0) == 0;
    }
    bool claim(const Request& r) override;
    std::string claim_outcome() override { return init_->claim_outcome(); }
    std::optional<ExitStatus> exit_status() override;
    void signal(int sig) override { init_->signal(sig); }
    void destroy() override;
    void lend(nlohmann::json& reply, std::vector<int>& fds) override {
        reply["cgroup"] = cgroup_;
        reply["pid"] = init_->pid();
        fds.push_back(init_->pidfd());
    }
    void hand_over() override;

    void adopt(std::unique_ptr<ns::ParkedInit> init) { init_ = std::move(init); }

private:
    ProcessSandboxes& kind_;
    std::string cgroup_;
    pid_t spawner_;                         // the spawner that made it (and removes it)
    std::unique_ptr<ns::ParkedInit> init_;  // null while a spawner makes it
};

class ProcessSandboxes final : public SandboxKind {
public:
    ProcessSandboxes(Daemon& d, unsigned spawners) : d_(d), count_(spawners) {}

    const char* name() const override { return "process"; }
    void start() override {
        for (unsigned i = 0; i < count_; ++i) start_spawner();
    }
    std::unique_ptr<Sandbox> make(Pool& p, const std::string& name) override;
    void settle() override {
        for (auto& sp : spawners_)
            if (sp->jobs) on_spawner(sp.get());
    }
    void serve() override {
        for (auto& sp : spawners_) sp->id = d_.watch_for(this, sp->sock.get(), sp.get());
        serving_ = true;
    }
    void on_event(void* obj) override { on_spawner(static_cast<Spawner*>(obj)); }
    bool lendable() const override { return true; }
    nlohmann::json lease_key(const Pool& p) const override { return detail::lease_key(p.tmpl.config); }
    void stop() override {
        // The spawners finish the removals queued to them, then see EOF and exit.
        for (auto& sp : spawners_) {
            sp->sock.reset();
            while (::waitpid(sp->pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
    }

    void tell_spawner(const std::string& path, pid_t spawner, const std::string& op = "destroy");

private:
    // Forks one spawner (at setup, or to replace one that died).
    Spawner* start_spawner();
    void on_spawner(Spawner* sp);
    // EOF or a failed send: its sandboxes in the making are lost, and another takes its place.
    void spawner_died(Spawner* sp);
    // Tells `sp` to remove every sandbox cgroup that is neither a sandbox of ours nor leased.
    void sweep_orphans(Spawner* sp);

    Daemon& d_;
    unsigned count_;
    std::vector<std::unique_ptr<Spawner>> spawners_;
    size_t next_spawner_ = 0;
    std::deque<Clock::time_point> spawner_deaths_;  // within the last kRespawnWindow
    bool serving_ = false;                          // setup is done, the loop runs
};

// ---- the sandbox -----------------------------------------------------------

bool ProcessSandbox::claim(const Request& r) {
    oci::Resources lim;
    if (r.memory) lim.memory = oci::Memory{.limit = *r.memory};
    if (r.pids) lim.pids = oci::Pids{*r.pids};
    if (lim.memory || lim.pids) cgroups::open(cgroup_, pool->tmpl.mode)->apply(lim);
    // Bind sources are opened here, in the host's mount namespace, as detached
    // trees the sandbox attaches inside its root.
    std::vector<UniqueFd> trees;
    ns::Claim cl;
    for (const Request::Bind& b : r.binds) {
        UniqueFd t(
            ::open_tree(AT_FDCWD, b.source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
        if (!t) throw_errno("bind source " + b.source);
        if (b.readonly) {
            mount_attr attr{};
            attr.attr_set = MOUNT_ATTR_RDONLY;
            if (::mount_setattr(t.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
                throw_errno("bind source " + b.source + ": read-only");
        }
        cl.binds.push_back({t.get(), b.destination});
        trees.push_back(std::move(t));
    }
    cl.args = r.args;
    cl.env = r.env;
    cl.cwd = r.cwd;
    cl.stdio = r.stdio;
    // Made at the spawners' background priority; the workload runs at the normal one.
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(init_->pid()), 0) < 0)
        log_debug("pool: sandbox " + name + ": reset priority: " + Error::errno_text(errno));
    try {
        init_->claim(cl);
    } catch (const Error& e) {
        // Its init died since take_idle looked (or, from sandbox_ready, since it parked).
        if (e.code() != EPIPE && e.code() != ECONNRESET) throw;
        return false;
    }
    return true;
}

std::optional<ExitStatus> ProcessSandbox::exit_status() {
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(init_->pidfd()), &si, WEXITED | WNOHANG) <
            0 ||
        si.si_pid == 0)
        return std::nullopt;
    init_->release();
    int sig = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED ? si.si_status : 0;
    return ExitStatus{.code = sig ? 128 + sig : si.si_status, .signal = sig};
}

void ProcessSandbox::destroy() {
    init_.reset();  // kills and reaps it unless released
    // A lease only becomes a container's at "release" (hand_over), which never comes
    // here: a sandbox destroyed while leased is still the pool's to remove.
    kind_.tell_spawner(cgroup_, spawner_);
}

void ProcessSandbox::hand_over() {
    init_.reset();  // killed and reaped: the caller holds the namespaces now
    kind_.tell_spawner(cgroup_, spawner_, "forget");
}

// ---- the spawners ----------------------------------------------------------

Spawner* ProcessSandboxes::start_spawner() {
    std::vector<const detail::Template*> templates;
    for (auto& [n, p] : d_.pools())
        if (p->kind == this) templates.push_back(&p->tmpl);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd mine(sv[0]), theirs(sv[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork pool spawner");
    if (pid == 0) {
        mine.reset();
        // Nothing of the daemon's but its own socket: sandboxes are cloned from here.
        if (theirs.get() != 3) {
            ::dup2(theirs.get(), 3);
            theirs.reset();
        } else {
            (void)theirs.release();
        }
        ::close_range(4, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        detail::spawner_main(3, templates);
    }
    auto sp = std::make_unique<Spawner>();
    sp->pid = pid;
    sp->sock = std::move(mine);
    spawners_.push_back(std::move(sp));
    return spawners_.back().get();
}

std::unique_ptr<Sandbox> ProcessSandboxes::make(Pool& p, const std::string& name) {
    if (spawners_.empty()) return nullptr;
    Spawner* sp = spawners_[next_spawner_++ % spawners_.size()].get();
    for (auto& cand : spawners_)
        if (cand->jobs < sp->jobs) sp = cand.get();
    auto sb = std::make_unique<ProcessSandbox>(*this, p.tmpl.cgroup + "/" + name, sp->pid);
    try {
        detail::send_message(sp->sock.get(), json{{"op", "make"}, {"pool", p.spec.name}, {"sandbox", name}});
    } catch (const Error& e) {
        // Dead before the loop read its EOF.
        log_error("pool: spawner " + std::to_string(sp->pid) + ": " + e.what());
        spawner_died(sp);
        return nullptr;
    }
    ++sp->jobs;
    sp->pending.insert(name);
    return sb;
}

void ProcessSandboxes::spawner_died(Spawner* sp) {
    // Its sandboxes in the making are lost; the daemon carries on with the others.
    log_error("pool: spawner " + std::to_string(sp->pid) + " died");
    d_.unwatch(sp->sock.get(), sp->id);
    for (const std::string& name : sp->pending)
        if (Sandbox* sb = d_.starting(name)) d_.make_failed(sb, "the spawner making it died");
    pid_t dead = sp->pid;
    std::erase_if(spawners_, [sp](const auto& x) { return x.get() == sp; });
    ::kill(dead, SIGKILL);  // EOF is its exit, or a spawner past saving
    while (::waitpid(dead, nullptr, 0) < 0 && errno == EINTR) {
    }
    // A replacement, unless they keep dying: then something breaks every one, and
    // the daemon goes on with those left (or stops when none is). Setup watches the
    // spawners it starts itself.
    auto now = Clock::now();
    while (!spawner_deaths_.empty() && now - spawner_deaths_.front() > kRespawnWindow)
        spawner_deaths_.pop_front();
    spawner_deaths_.push_back(now);
    if (serving_ && !d_.stopping() && spawner_deaths_.size() <= kMaxRespawns) {
        try {
            Spawner* fresh = start_spawner();
            fresh->id = d_.watch_for(this, fresh->sock.get(), fresh);
            log_warn("pool: spawner " + std::to_string(fresh->pid) + " replaces it");
            // What the dead one was told to remove may have died unread with it.
            sweep_orphans(fresh);
        } catch (const Error& e) {
            log_error("pool: replacing spawner " + std::to_string(dead) + ": " + e.what());
        }
    }
    if (spawners_.empty()) {
        log_error("pool: every spawner died: stopping");
        d_.begin_stop(true);
    }
}

void ProcessSandboxes::on_spawner(Spawner* sp) {
    json msg;
    std::vector<UniqueFd> fds;
    bool alive = false;
    try {
        alive = detail::recv_message(sp->sock.get(), msg, &fds);
    } catch (const Error& e) {
        // ECONNRESET: it died with requests unread.
        log_debug(std::string("pool: spawner ") + std::to_string(sp->pid) + ": " + e.what());
    }
    if (!alive) {
        spawner_died(sp);
        return;
    }
    std::string name = msg.contains("made") ? msg.value("made", "") : msg.value("failed", "");
    --sp->jobs;
    sp->pending.erase(name);
    pid_t pid = msg.value("pid", -1);
    // Every name a spawner answers was asked by this kind: the sandbox is a ProcessSandbox.
    auto* sb = static_cast<ProcessSandbox*>(d_.starting(name));
    if (!sb) {
        if (pid > 0) ::kill(pid, SIGKILL);
        return;
    }
    if (msg.contains("failed") || fds.size() != 2) {
        // The spawner killed the init; we are its parent and reap it.
        if (pid > 0) {
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        d_.make_failed(sb, msg.value("error", "sandbox setup failed"), msg.value("oom", false));
        return;
    }
    sb->adopt(ns::ParkedInit::adopt(std::move(fds[0]), std::move(fds[1]), pid));
    d_.made(sb, msg.value("phases", ""));
}

void ProcessSandboxes::tell_spawner(const std::string& path, pid_t spawner, const std::string& op) {
    // rmdir on every hierarchy (and the mount tree's teardown) is the job of the
    // spawner that made the sandbox, off the daemon's loop; another one's when that
    // one is gone (or dead before the loop read its EOF).
    std::vector<Spawner*> order;
    for (auto& cand : spawners_)
        if (cand->pid == spawner) order.push_back(cand.get());
    for (auto& cand : spawners_)
        if (cand->pid != spawner) order.push_back(cand.get());
    std::string why = "no spawner";
    for (Spawner* sp : order) {
        try {
            detail::send_message(sp->sock.get(), json{{"op", op}, {"cgroup", path}});
            return;
        } catch (const Error& e) {
            why = e.what();
        }
    }
    // A spawner that replaces a dead one sweeps it (sweep_orphans), or teardown does.
    log_debug("pool: cgroup " + path + ": " + op + " waits for a spawner: " + why);
}

void ProcessSandboxes::sweep_orphans(Spawner* sp) {
    for (auto& [n, p] : d_.pools()) {
        if (p->kind != this) continue;
        std::vector<std::string> names;
        try {
            names = p->rp->sandboxes();
        } catch (const Error& e) {
            log_warn(std::string("pool: ") + e.what());
            continue;
        }
        for (const std::string& name : names) {
            std::string path = p->rp->open_sandbox(name)->path();
            if (p->sandboxes.count(name) || d_.leased(path)) continue;
            log_debug("pool " + n + ": removing " + path + ", which a dead spawner left");
            tell_spawner(path, sp->pid);
        }
    }
}

}  // namespace

std::unique_ptr<SandboxKind> process_sandboxes(Daemon& d, unsigned spawners) {
    return std::make_unique<ProcessSandboxes>(d, spawners);
}

}  // namespace tarn::pool::detail
