// Each pool's idle target, decided by the pure policy in sizing.cpp from what the
// daemon measures, and the refill that keeps that many sandboxes ready.
#include <cmath>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;

void Daemon::refill() {
    if (stopping_) return;
    // Refill is background work while a pool holds more ready sandboxes than the
    // requests expected during one make; below that, or with a request waiting, the
    // makes must not starve behind workloads (SandboxKind::urgency).
    for (auto& kind : kinds_) {
        bool urgent = false;
        for (auto& [name, pp] : pools_) {
            const Pool& p = *pp;
            if (p.kind != kind.get()) continue;
            double cover = std::max(1.0, std::ceil(p.sizing_in.rate * p.make_s));
            urgent |= !p.waiting.empty() || static_cast<double>(p.idle.size()) < cover;
        }
        kind->urgency(urgent);
    }
    auto now = Clock::now();
    for (auto& [name, pp] : pools_) {
        Pool& p = *pp;
        while (starting_total_ < o_.max_starting && now >= p.backoff_until) {
            size_t want = p.sizing.target + p.waiting.size();
            if (p.idle.size() + p.starting >= want || p.total() >= p.spec.max_total) break;
            if (pids_budget_full(p)) break;
            size_t before = p.failures;
            if (!start_sandbox(p) || p.failures != before) break;
        }
    }
}

bool Daemon::pids_budget_full(Pool& p) {
    const std::optional<int64_t>& max = p.spec.budget.pids_max;
    if (!max || *max <= 0) return false;
    // pids.max is checked when a task forks, not when one moves in: on a v1 host a
    // sandbox's init joins its cgroups by moving itself, so the kernel would let the
    // parked sandboxes alone fill the budget past its limit (and every workload's fork
    // would then fail). Sandboxes still being made may not be counted yet.
    std::optional<uint64_t> current;
    try {
        current = p.rp->cgroup().usage().pids;
    } catch (const Error& e) {
        log_debug("pool " + p.spec.name + ": budget: " + e.what());
        return false;
    }
    return current && *current + p.starting >= static_cast<uint64_t>(*max);
}

std::string Daemon::cannot_grow(Pool& p) {
    if (p.total() >= p.spec.max_total)
        return "all " + std::to_string(p.spec.max_total) + " sandboxes are in use";
    if (pids_budget_full(p)) return "its pids budget of " + std::to_string(*p.spec.budget.pids_max) + " tasks is full";
    return "";
}

void Daemon::resize(Pool& p, unsigned misses) {
    auto now = Clock::now();
    p.sizing_in.dt_s = seconds(now - p.last_decision);
    p.last_decision = now;
    p.sizing_in.make_s = p.make_s;
    p.sizing_in.misses = misses;
    unsigned free = static_cast<unsigned>(p.idle.size()) + p.starting;
    p.sizing_in.busy = p.total() > free ? p.total() - free : 0;
    p.sizing_in.budget_room = p.budget_room;
    unsigned before = p.sizing.target;
    p.sizing = sizing::decide(p.limits, p.sizing.level, p.sizing_in);
    if (p.sizing.target > before) ++p.target_raised;
    if (p.sizing.target < before) ++p.target_lowered;
    p.target_max = std::max(p.target_max, p.sizing.target);
}

void Daemon::tick_sizing(Pool& p, Clock::time_point now) {
    p.sizing_in.rate = sizing::ewma_rate(p.sizing_in.rate, p.arrivals, seconds(now - p.last_rate),
                                         p.spec.rate_window_ms / 1000.0);
    p.arrivals = 0;
    p.last_rate = now;
    if (p.limits.mode == sizing::Mode::adaptive && now - p.last_budget >= kBudgetEvery) {
        p.last_budget = now;
        cgroups::Usage use;
        try {
            use = p.rp->cgroup().usage();
        } catch (const Error& e) {
            log_debug("pool " + p.spec.name + ": budget: " + e.what());
        }
        p.budget_room = sizing::budget_room(use.memory, use.memory_limit, use.pids, use.pids_limit, p.total(),
                                            static_cast<unsigned>(p.idle.size()), p.starting);
    }
    resize(p, 0);
    if (p.limits.mode != sizing::Mode::adaptive) return;
    // The target came down: the oldest idle sandboxes beyond it go, a few per tick.
    for (unsigned i = 0; i < kTrimPerTick && p.idle.size() > p.sizing.target; ++i)
        destroy_sandbox(p.idle.front());
}

}  // namespace tarn::pool::detail
