#include "runtime/pool/sizing.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tarn::pool::sizing {
namespace {

// A decaying level this close to its goal is at it: an exponential never arrives.
constexpr double kSnap = 0.5;

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

std::string product(const Input& in, const Limits& l) {
    double ms = in.make_s * 1000;
    return fmt("%.1f/s", in.rate) + " × " + fmt(ms < 10 ? "%.1f ms" : "%.0f ms", ms) + " × " +
           fmt("%g", l.headroom);
}

}  // namespace

const char* mode_name(Mode m) {
    return m == Mode::fixed ? "fixed" : "adaptive";
}

Decision decide(const Limits& l, double prev_level, const Input& in) {
    Decision d;
    if (l.mode == Mode::fixed) {
        d.level = l.min_idle;
        d.target = l.min_idle;
        return d;
    }
    d.demand = std::max(0.0, in.rate) * std::max(0.0, in.make_s) * l.headroom;
    // Where the level settles without misses: the demand, never below the floor.
    double goal = std::max(std::min(d.demand, 1e6), static_cast<double>(l.min_idle));
    double level = std::max(prev_level, static_cast<double>(l.min_idle));
    if (goal >= level) {
        level = goal;
    } else {
        level = goal + (level - goal) * std::exp(-std::max(0.0, in.dt_s) / l.decay_s);
        if (level - goal < kSnap) level = goal;
    }
    level += in.misses;
    // Misses past the ceiling would only make the way down longer.
    d.level = std::max(std::min(level, static_cast<double>(l.max_idle)), static_cast<double>(l.min_idle));

    unsigned settled = static_cast<unsigned>(std::ceil(goal - 1e-9));
    unsigned wanted = static_cast<unsigned>(std::ceil(std::min(std::max(level, 0.0), 1e6) - 1e-9));
    if (wanted > settled)
        d.basis = Basis::misses;
    else if (d.demand > l.min_idle)
        d.basis = Basis::demand;
    else
        d.basis = Basis::floor;
    d.target = wanted;
    auto cap = [&](unsigned most, Cap why) {
        if (d.target > most) {
            d.target = most;
            d.cap = why;
        }
    };
    cap(l.max_idle, Cap::max_idle);
    cap(l.max_total > in.busy ? l.max_total - in.busy : 0, Cap::max_total);
    if (in.budget_room) cap(*in.budget_room, Cap::budget);
    return d;
}

std::string explain(const Limits& l, const Input& in, const Decision& d) {
    std::string s = "target " + std::to_string(d.target);
    switch (d.basis) {
        case Basis::fixed:
            return s + " = min-idle (fixed sizing)";
        case Basis::floor:
            s += " = min-idle (demand " + fmt("%.1f", d.demand) + " = " + product(in, l) + ")";
            break;
        case Basis::demand:
            s += " = " + product(in, l);
            break;
        case Basis::misses: {
            unsigned goal =
                std::max(l.min_idle, static_cast<unsigned>(std::ceil(std::min(d.demand, 1e6) - 1e-9)));
            s += " after misses, shrinking toward " + std::to_string(goal) + " (" + product(in, l) + ")";
            break;
        }
    }
    switch (d.cap) {
        case Cap::none:
            break;
        case Cap::max_idle:
            s += ", capped by max-idle " + std::to_string(l.max_idle);
            break;
        case Cap::max_total:
            s += ", capped by max-total " + std::to_string(l.max_total) + " (" + std::to_string(in.busy) +
                 " in use)";
            break;
        case Cap::budget:
            s += ", capped by the budget";
            break;
    }
    return s;
}

double ewma_rate(double prev, uint64_t events, double dt_s, double tau_s) {
    if (dt_s <= 0) return prev;
    double a = 1 - std::exp(-dt_s / tau_s);
    return prev + a * (static_cast<double>(events) / dt_s - prev);
}

double ewma_sample(double prev, double sample, bool first, double weight) {
    return first ? sample : prev + weight * (sample - prev);
}

std::optional<unsigned> budget_room(std::optional<uint64_t> mem_current, std::optional<uint64_t> mem_limit,
                                    std::optional<uint64_t> pids_current, std::optional<uint64_t> pids_limit,
                                    unsigned total, unsigned idle, unsigned starting) {
    if (total == 0) return std::nullopt;  // no use per sandbox to go by yet
    std::optional<uint64_t> room;
    auto fit = [&](std::optional<uint64_t> cur, std::optional<uint64_t> lim) {
        if (!cur || !lim) return;
        uint64_t each = std::max<uint64_t>(1, *cur / total);
        uint64_t free = *lim > *cur ? *lim - *cur : 0;
        uint64_t n = free / 2 / each;
        room = room ? std::min(*room, n) : n;
    };
    fit(mem_current, mem_limit);
    fit(pids_current, pids_limit);
    if (!room) return std::nullopt;
    return static_cast<unsigned>(std::min<uint64_t>(*room + idle + starting, 1u << 20));
}

}  // namespace tarn::pool::sizing
