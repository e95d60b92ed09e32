// The process sandbox: a container init parked in its namespaces and cgroup, made by
// spawners — processes forked from the daemon that make sandboxes and remove used
// ones, so none of that kernel work blocks the daemon's loop — and claimed over its
// sync socket.
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
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
    std::set<std::string> recycling;  // cgroups it was asked to recycle, not yet answered
};

class ProcessSandboxes;

class ProcessSandbox final : public Sandbox {
public:
    ProcessSandbox(ProcessSandboxes& kind, std::string cgroup, pid_t spawner, bool reused)
        : kind_(kind), cgroup_(std::move(cgroup)), spawner_(spawner), reused_(reused) {}

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
        // The borrower joins the cgroup with processes of its own: never recycled.
        reusable_ = false;
        reply["cgroup"] = cgroup_;
        reply["pid"] = init_->pid();
        fds.push_back(init_->pidfd());
    }
    void hand_over() override;

    void adopt(std::unique_ptr<ns::ParkedInit> init) {
        init_ = std::move(init);
        made_ = true;
    }
    bool in_the_making() const { return !made_; }
    bool reused() const { return reused_; }

private:
    ProcessSandboxes& kind_;
    std::string cgroup_;
    pid_t spawner_;                         // the spawner that made it (and removes it)
    bool reused_;                           // made in a used sandbox's cgroup
    // Its cgroup may serve another sandbox once it is used (the template allows it);
    // false once something other than the workload could have written to it.
    bool reusable_ = true;
    std::unique_ptr<ns::ParkedInit> init_;  // null while a spawner makes it
    bool made_ = false;                     // its spawner sent it (adopt)
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
    void tick() override;
    void urgency(bool urgent) override {
        if (urgent == urgent_) return;
        urgent_ = urgent;
        for (auto& sp : spawners_)
            if (!detail::set_make_priority(sp->pid, urgent))
                log_debug("pool: spawner " + std::to_string(sp->pid) + ": priority: " + Error::errno_text(errno));
        if (urgent) hurry_setups();
    }
    void stop() override {
        // The spawners finish the removals queued to them, then see EOF and exit.
        for (auto& sp : spawners_) {
            sp->sock.reset();
            while (::waitpid(sp->pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
    }

    // A used sandbox's cgroup: recycled for another sandbox where that is allowed,
    // removed otherwise.
    void retire(Pool& p, const std::string& cgroup, pid_t spawner, bool reusable);
    // Sends `msg` (about a sandbox's cgroup) to `spawner`, or to another one when that
    // one is gone; the spawner that took it, or null.
    Spawner* tell_spawner(const json& msg, pid_t spawner);

private:
    // The inits of sandboxes in the making set up at their spawner's policy as it
    // was when they were cloned: raised with it, so that a setup under way when the
    // pool ran low does not wait for idle CPU time.
    void hurry_setups();
    // Forks one spawner (at setup, or to replace one that died).
    Spawner* start_spawner();
    void on_spawner(Spawner* sp);
    // EOF or a failed send: its sandboxes in the making are lost, and another takes its place.
    void spawner_died(Spawner* sp);
    // Tells `sp` to remove every sandbox cgroup that is neither a sandbox's, a spare,
    // being recycled by a live spawner, nor leased.
    void sweep_orphans(Spawner* sp);
    // A spawner recycled `path` of `pool`: kept as a spare, or removed.
    void recycled(Spawner* sp, const std::string& pool, const std::string& path, bool reused);

    Daemon& d_;
    unsigned count_;
    std::vector<std::unique_ptr<Spawner>> spawners_;
    size_t next_spawner_ = 0;
    std::deque<Clock::time_point> spawner_deaths_;  // within the last kRespawnWindow
    bool serving_ = false;                          // setup is done, the loop runs
    bool urgent_ = false;                           // the pool runs low or a request waits (urgency)
};

// ---- the sandbox -----------------------------------------------------------

bool ProcessSandbox::claim(const Request& r) {
    oci::Resources lim;
    if (r.memory) lim.memory = oci::Memory{.limit = *r.memory};
    if (r.pids) lim.pids = oci::Pids{*r.pids};
    if (lim.memory || lim.pids) pool->rp->open_sandbox(cgroup_.substr(cgroup_.rfind('/') + 1))->apply(lim);
    // Bind sources are opened here, in the host's mount namespace, as detached
    // trees the sandbox attaches inside its root.
    std::vector<UniqueFd> trees;
    ns::Claim cl;
    std::optional<std::string> mountinfo;
    for (const Request::Bind& b : r.binds) {
        // A writable view of a cgroup filesystem lets the workload change its cgroup
        // (a read-only bind is read-only all the way down: MOUNT_ATTR_RDONLY, recursive).
        if (!b.readonly && reusable_) {
            if (!mountinfo) mountinfo = read_file("/proc/self/mountinfo");
            char real[PATH_MAX];
            if (reaches_cgroupfs(::realpath(b.source.c_str(), real) ? real : b.source, *mountinfo))
                reusable_ = false;
        }
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
    if (!detail::set_workload_priority(init_->pid()))
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
    kind_.retire(*pool, cgroup_, spawner_, reusable_);
}

void ProcessSandbox::hand_over() {
    init_.reset();  // killed and reaped: the caller holds the namespaces now
    kind_.tell_spawner(json{{"op", "forget"}, {"cgroup", cgroup_}}, spawner_);
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
    // Background work (set_make_priority), set here and never by the spawner itself,
    // so that an urgency change cannot be undone by a spawner just starting.
    if (!detail::set_make_priority(pid, urgent_))
        log_debug("pool: spawner " + std::to_string(pid) + ": priority: " + Error::errno_text(errno));
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
    // The spare used last is the likeliest to be in the caches still.
    bool reuse = !p.spare_cgroups.empty();
    std::string cgroup = reuse ? p.spare_cgroups.back().path : p.tmpl.cgroup + "/" + name;
    auto sb = std::make_unique<ProcessSandbox>(*this, cgroup, sp->pid, reuse);
    try {
        json msg{{"op", "make"}, {"pool", p.spec.name}, {"sandbox", name}};
        if (reuse) msg["cgroup"] = cgroup;
        detail::send_message(sp->sock.get(), msg);
        if (reuse) p.spare_cgroups.pop_back();
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
    if (msg.contains("recycled")) {
        recycled(sp, msg.value("pool", ""), msg.value("recycled", ""), msg.value("reused", false));
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
    if (sb->reused()) ++sb->pool->reused_cgroups;
    d_.made(sb, msg.value("phases", ""));
}

void ProcessSandboxes::retire(Pool& p, const std::string& cgroup, pid_t spawner, bool reusable) {
    // While the daemon stops, teardown removes what is left of its pools.
    bool recycle = reusable && p.tmpl.no_cgroup_reuse.empty() && !d_.stopping();
    Spawner* sp = tell_spawner(
        json{{"op", recycle ? "recycle" : "destroy"}, {"pool", p.spec.name}, {"cgroup", cgroup}}, spawner);
    if (recycle && sp) sp->recycling.insert(cgroup);
}

void ProcessSandboxes::recycled(Spawner* sp, const std::string& pool, const std::string& path, bool reused) {
    sp->recycling.erase(path);
    auto it = d_.pools().find(pool);
    if (!reused || it == d_.pools().end() || d_.stopping()) return;
    Pool& p = *it->second;
    // Sandboxes and spares together stay within maxTotal cgroups.
    if (p.total() + p.spare_cgroups.size() >= p.spec.max_total) {
        tell_spawner(json{{"op", "destroy"}, {"pool", pool}, {"cgroup", path}}, sp->pid);
        return;
    }
    p.spare_cgroups.push_back(Pool::Spare{path, Clock::now()});
}

void ProcessSandboxes::tick() {
    // Spares no sandbox took for as long as the idle target takes to shrink are not
    // needed any more: a few go per tick, oldest first.
    auto now = Clock::now();
    for (auto& [n, p] : d_.pools()) {
        if (p->kind != this) continue;
        auto ttl = std::chrono::milliseconds(p->spec.decay_ms);
        for (unsigned i = 0;
             i < kTrimPerTick && !p->spare_cgroups.empty() && now - p->spare_cgroups.front().since > ttl;
             ++i) {
            tell_spawner(json{{"op", "destroy"}, {"pool", n}, {"cgroup", p->spare_cgroups.front().path}}, 0);
            p->spare_cgroups.pop_front();
        }
    }
}

Spawner* ProcessSandboxes::tell_spawner(const json& msg, pid_t spawner) {
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
            detail::send_message(sp->sock.get(), msg);
            return sp;
        } catch (const Error& e) {
            why = e.what();
        }
    }
    // A spawner that replaces a dead one sweeps it (sweep_orphans), or teardown does.
    log_debug("pool: cgroup " + msg.value("cgroup", "") + ": " + msg.value("op", "") +
              " waits for a spawner: " + why);
    return nullptr;
}

void ProcessSandboxes::hurry_setups() {
    for (auto& [n, p] : d_.pools()) {
        if (p->kind != this) continue;
        for (auto& [sn, sb] : p->sandboxes) {
            auto* ps = static_cast<ProcessSandbox*>(sb.get());
            if (!ps->in_the_making()) continue;
            const std::string& cg = ps->cgroup();
            try {
                for (pid_t pid : p->rp->open_sandbox(cg.substr(cg.rfind('/') + 1))->pids())
                    (void)detail::set_make_priority(pid, true);
            } catch (const Error&) {
                // Not made yet, or already gone: nothing to raise.
            }
        }
    }
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
        // A sandbox's cgroup is not always named after it: it may have been another's.
        std::set<std::string> known;
        for (auto& [sn, sb] : p->sandboxes) known.insert(sb->cgroup());
        for (const Pool::Spare& s : p->spare_cgroups) known.insert(s.path);
        for (auto& live : spawners_) known.insert(live->recycling.begin(), live->recycling.end());
        for (const std::string& name : names) {
            std::string path = p->rp->path() + "/" + name;
            if (known.count(path) || d_.leased(path)) continue;
            log_debug("pool " + n + ": removing " + path + ", which a dead spawner left");
            tell_spawner(json{{"op", "destroy"}, {"pool", n}, {"cgroup", path}}, sp->pid);
        }
    }
}

}  // namespace

std::unique_ptr<SandboxKind> process_sandboxes(Daemon& d, unsigned spawners) {
    return std::make_unique<ProcessSandboxes>(d, spawners);
}

}  // namespace tarn::pool::detail
