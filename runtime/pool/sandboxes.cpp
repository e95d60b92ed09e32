// A sandbox's life in the daemon, whatever its kind: asked for, made (or failed),
// idle, claimed, its workload's start and exit, lost or destroyed.
#include <unistd.h>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

bool Daemon::start_sandbox(Pool& p) {
    // The daemon's pid in the name: a restarted daemon never reuses an old name.
    std::string name = p.spec.name + "-" + std::to_string(::getpid()) + "-" + std::to_string(++p.seq);
    auto t_make = Clock::now();
    std::unique_ptr<Sandbox> sb = p.kind->make(p, name);
    if (!sb) return false;
    sb->pool = &p;
    sb->name = std::move(name);
    sb->t_make = t_make;
    ++p.starting;
    ++starting_total_;
    p.sandboxes[sb->name] = std::move(sb);
    return true;
}

Sandbox* Daemon::starting(const std::string& name) {
    for (auto& [n, p] : pools_) {
        auto it = p->sandboxes.find(name);
        if (it != p->sandboxes.end()) return it->second.get();
    }
    return nullptr;
}

void Daemon::made(Sandbox* sb, const std::string& phases) {
    Pool& p = *sb->pool;
    --p.starting;
    --starting_total_;
    // Idle, a sandbox only speaks if it dies: watching it notices that.
    sb->control_id = watch(sb->control_fd(), Kind::control, sb);
    ++p.made;
    p.make_s = sizing::ewma_sample(p.make_s, seconds(Clock::now() - sb->t_make), !p.made_any);
    p.made_any = true;
    p.consecutive_failures = 0;
    p.made_recent.push_back(Clock::now());
    log_debug("pool " + p.spec.name + ": " + sb->name + " ready: " + phases);
    sandbox_ready(p, sb);
}

void Daemon::make_failed(Sandbox* sb, const std::string& why, bool oom) {
    Pool& p = *sb->pool;
    --p.starting;
    --starting_total_;
    p.sandboxes.erase(sb->name);
    setup_failed(p, why, oom);
}

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

void Daemon::on_control(Sandbox* sb) {
    if (sb->st == Sandbox::St::idle) {
        // An idle sandbox only speaks if it died.
        lose_sandbox(sb, "while idle");
        return;
    }
    // Claimed: EOF means the workload exec'd; a message says why it did not.
    sb->error = sb->claim_outcome();
    sb->exec_done = true;
    if (reassign(sb)) return;
    unwatch(sb->control_fd(), sb->control_id);
    if (sb->error.empty() && sb->owner) workload_started(sb);
}

void Daemon::workload_started(Sandbox* sb) {
    Pool& p = *sb->pool;
    Conn* c = sb->owner;
    c->stdio.clear();
    double ms = ms_since(c->t_req);
    (c->cold ? p.cold : p.warm).observe(ms / 1000);
    if (p.latencies.size() < kLatencies)
        p.latencies.push_back(ms);
    else
        p.latencies[p.lat_next++ % kLatencies] = ms;
    c->started = json{{"pid", sb->pid()}, {"sandbox", sb->name}, {"claimMs", ms}};
    if (c->report_started) {
        json m = c->started;
        m["event"] = "started";
        reply(c, m);
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
    std::optional<ExitStatus> status = sb->exit_status();
    if (!status) return;
    // The exit can come before the control fd's news: an error message (the workload
    // never started) is already queued there; EOF means it exec'd.
    if (!sb->exec_done) {
        sb->error = sb->claim_outcome();
        sb->exec_done = true;
        if (reassign(sb)) return;
        if (sb->error.empty() && sb->owner) workload_started(sb);
    }
    if (Conn* c = sb->owner) {
        c->sb = nullptr;
        sb->owner = nullptr;
        if (!sb->error.empty()) {
            fail(c, sb->error);
        } else {
            json exit{{"event", "exit"}, {"exitCode", status->code}, {"signal", status->signal}};
            if (!c->report_started && c->started.is_object()) exit.update(c->started);
            reply(c, exit);
        }
    }
    destroy_sandbox(sb);
}

bool Daemon::reassign(Sandbox* sb) {
    Conn* c = sb->owner;
    if (!sb->lost_under_claim || !c || stopping_) return false;
    Pool& p = *sb->pool;
    c->sb = nullptr;
    sb->owner = nullptr;
    lose_sandbox(sb, "under a claim (" + sb->error + ")");
    try {
        assign(p, c);
    } catch (const Error& e) {
        fail(c, "pool " + p.spec.name + ": " + e.what());
    }
    return true;
}

void Daemon::destroy_sandbox(Sandbox* sb) {
    Pool& p = *sb->pool;
    unwatch(sb->control_fd(), sb->control_id);
    unwatch(sb->exit_fd(), sb->exit_id);
    if (sb->st == Sandbox::St::running) --p.running;
    if (sb->st == Sandbox::St::idle) std::erase(p.idle, sb);
    if (sb->owner) sb->owner->sb = nullptr;
    sb->destroy();
    p.sandboxes.erase(sb->name);
}

void Daemon::lose_sandbox(Sandbox* sb, const std::string& when) {
    Pool& p = *sb->pool;
    log_warn("pool " + p.spec.name + ": sandbox " + sb->name + " went away " + when);
    ++p.lost;
    destroy_sandbox(sb);
}

// An idle sandbox can die before the loop hears of it: the budget's OOM killer picks
// by resident set, and an idle init's counts the pages it shares with its spawner
// (tens of MiB under a sanitizer), so it can be chosen over the workload that
// filled the budget. Such a sandbox is dropped, never handed out.
Sandbox* Daemon::take_idle(Pool& p) {
    while (!p.idle.empty()) {
        Sandbox* sb = p.idle.front();
        p.idle.pop_front();
        if (sb->alive()) return sb;
        lose_sandbox(sb, "while idle");
    }
    return nullptr;
}

}  // namespace tarn::pool::detail
