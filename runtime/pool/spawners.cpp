// Spawners: the processes, forked from the daemon, that make sandboxes and remove
// used ones, so none of that kernel work blocks the daemon's loop.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

void Daemon::start_spawners() {
    for (unsigned i = 0; i < o_.max_starting; ++i) start_spawner();
}

Spawner* Daemon::start_spawner() {
    std::vector<const detail::Template*> templates;
    for (auto& [n, p] : pools_) templates.push_back(&p->tmpl);
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


bool Daemon::start_sandbox(Pool& p) {
    if (spawners_.empty()) return false;
    Spawner* sp = spawners_[next_spawner_++ % spawners_.size()].get();
    for (auto& cand : spawners_)
        if (cand->jobs < sp->jobs) sp = cand.get();
    auto sb = std::make_unique<Sandbox>();
    sb->pool = &p;
    // The daemon's pid in the name: a restarted daemon never reuses an old name.
    sb->name = p.spec.name + "-" + std::to_string(::getpid()) + "-" + std::to_string(++p.seq);
    sb->cgroup = p.tmpl.cgroup + "/" + sb->name;
    sb->spawner = sp->pid;
    sb->t_make = Clock::now();
    try {
        detail::send_message(sp->sock.get(),
                             json{{"op", "make"}, {"pool", p.spec.name}, {"sandbox", sb->name}});
    } catch (const Error& e) {
        // Dead before the loop read its EOF.
        log_error("pool: spawner " + std::to_string(sp->pid) + ": " + e.what());
        spawner_died(sp);
        return false;
    }
    ++sp->jobs;
    sp->pending.insert(sb->name);
    ++p.starting;
    ++starting_total_;
    p.sandboxes[sb->name] = std::move(sb);
    return true;
}

void Daemon::spawner_died(Spawner* sp) {
    // Its sandboxes in the making are lost; the daemon carries on with the others.
    log_error("pool: spawner " + std::to_string(sp->pid) + " died");
    unwatch(sp->sock.get(), sp->id);
    for (const std::string& name : sp->pending)
        for (auto& [n, p] : pools_)
            if (p->sandboxes.erase(name)) {
                --p->starting;
                --starting_total_;
                setup_failed(*p, "the spawner making it died");
            }
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
    if (serving_ && !stopping_ && spawner_deaths_.size() <= kMaxRespawns) {
        try {
            Spawner* fresh = start_spawner();
            fresh->id = watch(fresh->sock.get(), Kind::spawner, fresh);
            log_warn("pool: spawner " + std::to_string(fresh->pid) + " replaces it");
            // What the dead one was told to remove may have died unread with it.
            sweep_orphans(fresh);
        } catch (const Error& e) {
            log_error("pool: replacing spawner " + std::to_string(dead) + ": " + e.what());
        }
    }
    if (spawners_.empty()) {
        log_error("pool: every spawner died: stopping");
        begin_stop(true);
    }
}

void Daemon::on_spawner(Spawner* sp) {
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
    Pool* pool = nullptr;
    for (auto& [n, p] : pools_)
        if (p->sandboxes.count(name)) pool = p.get();
    pid_t pid = msg.value("pid", -1);
    if (!pool) {
        if (pid > 0) ::kill(pid, SIGKILL);
        return;
    }
    Pool& p = *pool;
    Sandbox* sb = p.sandboxes[name].get();
    --p.starting;
    --starting_total_;
    if (msg.contains("failed") || fds.size() != 2) {
        // The spawner killed the init; we are its parent and reap it.
        if (pid > 0) {
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        std::string err = msg.value("error", "sandbox setup failed");
        p.sandboxes.erase(name);
        setup_failed(p, err, msg.value("oom", false));
        return;
    }
    sb->init = ns::ParkedInit::adopt(std::move(fds[0]), std::move(fds[1]), pid);
    // Idle, the init only speaks if it dies: watching its socket notices that.
    sb->sync_id = watch(sb->init->fd(), Kind::sync, sb);
    ++p.made;
    p.make_s = sizing::ewma_sample(p.make_s, seconds(Clock::now() - sb->t_make), !p.made_any);
    p.made_any = true;
    p.consecutive_failures = 0;
    p.made_recent.push_back(Clock::now());
    log_debug("pool " + p.spec.name + ": " + name + " ready: " + msg.value("phases", ""));
    sandbox_ready(p, sb);
}


void Daemon::tell_spawner(const std::string& path, pid_t spawner, const std::string& op) {
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

void Daemon::sweep_orphans(Spawner* sp) {
    for (auto& [n, p] : pools_) {
        std::vector<std::string> names;
        try {
            names = p->rp->sandboxes();
        } catch (const Error& e) {
            log_warn(std::string("pool: ") + e.what());
            continue;
        }
        for (const std::string& name : names) {
            std::string path = p->rp->open_sandbox(name)->path();
            if (p->sandboxes.count(name) || leased_.count(path)) continue;
            log_debug("pool " + n + ": removing " + path + ", which a dead spawner left");
            tell_spawner(path, sp->pid);
        }
    }
}

}  // namespace tarn::pool::detail
