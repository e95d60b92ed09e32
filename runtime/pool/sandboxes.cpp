// A sandbox's life in the daemon: ready, claimed, its workload's start and exit,
// lost or destroyed.
#include <signal.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

void Daemon::setup_failed(Pool& p, const std::string& msg, bool oom) {
    ++p.failures;
    p.last_error = msg;
    // A template that cannot start would otherwise be retried in a tight loop.
    ++p.consecutive_failures;
    auto delay = std::chrono::milliseconds(std::min(5000u, 50u << std::min(p.consecutive_failures, 7u)));
    p.backoff_until = Clock::now() + delay;
    log_error("pool " + p.spec.name + ": sandbox setup failed: " + msg);
    // Out of memory while it was made: the budget is full for now, as when every
    // sandbox is in use. Waiting requests keep waiting (until their deadline) for the
    // memory running workloads give back; another sandbox is tried after the backoff.
    if (oom) return;
    // A request waiting for a sandbox that cannot be made gets the reason.
    if (!p.waiting.empty() && p.starting == 0 && p.idle.empty()) {
        Conn* c = p.waiting.front();
        p.waiting.pop_front();
        c->waiting = false;
        fail(c, "pool " + p.spec.name + ": sandbox setup failed: " + msg);
    }
}

void Daemon::on_sync(Sandbox* sb) {
    Pool& p = *sb->pool;
    if (sb->st == Sandbox::St::idle) {
        // An idle init only speaks if it died.
        lose_sandbox(sb, "while idle");
        return;
    }
    // Claimed: EOF means the workload exec'd; a message says why it did not.
    sb->error = sb->init->claim_outcome();
    sb->exec_done = true;
    unwatch(sb->init->fd(), sb->sync_id);
    if (sb->error.empty() && sb->owner) {
        double ms = ms_since(sb->owner->t_req);
        (sb->owner->cold ? p.cold : p.warm).observe(ms / 1000);
        if (p.latencies.size() < kLatencies) p.latencies.push_back(ms);
        else p.latencies[p.lat_next++ % kLatencies] = ms;
        reply(sb->owner, json{{"event", "started"}, {"pid", sb->init->pid()}, {"sandbox", sb->name}, {"claimMs", ms}});
    }
}

void Daemon::sandbox_ready(Pool& p, Sandbox* sb) {
    sb->st = Sandbox::St::idle;
    if (!p.waiting.empty()) {
        Conn* c = p.waiting.front();
        p.waiting.pop_front();
        c->waiting = false;
        if (claim(p, sb, c)) return;
        c->waiting = true;
        p.waiting.push_front(c);
        return;
    }
    p.idle.push_back(sb);
    if (stopping_) destroy_sandbox(sb);
}

void Daemon::on_exit(Sandbox* sb) {
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(sb->init->pidfd()), &si, WEXITED | WNOHANG) < 0 ||
        si.si_pid == 0)
        return;
    sb->init->release();
    // The exit can come before the socket's news: an error message (the workload
    // never started) is already queued there; EOF means it exec'd.
    if (!sb->exec_done) sb->error = sb->init->claim_outcome();
    if (Conn* c = sb->owner) {
        c->sb = nullptr;
        sb->owner = nullptr;
        if (!sb->error.empty()) {
            fail(c, sb->error);
        } else {
            int sig = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED ? si.si_status : 0;
            int code = sig ? 128 + sig : si.si_status;
            reply(c, json{{"event", "exit"}, {"exitCode", code}, {"signal", sig}});
        }
    }
    destroy_sandbox(sb);
}

void Daemon::destroy_sandbox(Sandbox* sb) {
    Pool& p = *sb->pool;
    if (sb->init) {
        unwatch(sb->init->fd(), sb->sync_id);
        unwatch(sb->init->pidfd(), sb->pid_id);
    }
    if (sb->st == Sandbox::St::running) --p.running;
    if (sb->st == Sandbox::St::idle) std::erase(p.idle, sb);
    if (sb->owner) sb->owner->sb = nullptr;
    sb->init.reset();  // kills and reaps it unless released
    // A lease only becomes a container's at "release" (end_lease), which never comes
    // here: a sandbox destroyed while leased is still the pool's to remove.
    tell_spawner(sb->cgroup, sb->spawner);
    p.sandboxes.erase(sb->name);
}

void Daemon::lose_sandbox(Sandbox* sb, const std::string& when) {
    Pool& p = *sb->pool;
    log_warn("pool " + p.spec.name + ": sandbox " + sb->name + " went away " + when);
    ++p.lost;
    destroy_sandbox(sb);
}


// An idle init can die before the loop hears of it: the budget's OOM killer picks
// by resident set, and an idle init's counts the pages it shares with its spawner
// (tens of MiB under a sanitizer), so it can be chosen over the workload that
// filled the budget. Such a sandbox is dropped, never handed out.
Sandbox* Daemon::take_idle(Pool& p) {
    while (!p.idle.empty()) {
        Sandbox* sb = p.idle.front();
        p.idle.pop_front();
        pollfd pfd{sb->init->pidfd(), POLLIN, 0};
        if (::poll(&pfd, 1, 0) == 0) return sb;
        lose_sandbox(sb, "while idle");
    }
    return nullptr;
}

}  // namespace tarn::pool::detail
