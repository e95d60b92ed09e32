// How many idle sandboxes a pool keeps: the sizing decision, a pure function of the
// pool's limits and of what the daemon has measured (arrival rate, make time,
// misses), so it can be tested without a daemon. Internal to runtime/pool/.
//
// A claim that finds an idle sandbox costs a claim; one that does not waits for a
// whole sandbox to be made. To cover arrivals at rate λ while a replacement takes T
// to make, about λ·T sandboxes must be ready (Little's law); `headroom` covers the
// bursts a Poisson process has around that mean. The target follows that product
// upwards at once and comes down slowly (an exponential decay with time constant
// `decay_s`), so a pool does not drain between two bursts; each miss raises it by
// one at once, because a miss proves the estimate was short whatever it says.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tarn::pool::sizing {

enum class Mode { fixed, adaptive };

struct Limits {
    Mode mode = Mode::adaptive;
    unsigned min_idle = 2;   // the floor, and the whole target when fixed
    unsigned max_idle = 16;  // the ceiling of the target
    unsigned max_total = 16;
    double headroom = 2.0;
    double decay_s = 30;  // time constant of the target's shrink
};

struct Input {
    double rate = 0;                      // claims per second (an EWMA)
    double make_s = 0;                    // seconds to make a sandbox (an EWMA)
    double dt_s = 0;                      // since the previous decision
    unsigned misses = 0;                  // claims that found no idle sandbox since the previous decision
    unsigned busy = 0;                    // sandboxes running or lent: they count against max_total
    std::optional<unsigned> budget_room;  // most idle sandboxes the budget has room for
};

// What bounded the target last.
enum class Cap { none, max_idle, max_total, budget };
// What the target is made of, before the caps.
enum class Basis { fixed, floor, demand, misses };

struct Decision {
    double level = 0;   // the unrounded target, carried to the next decision
    double demand = 0;  // rate × make time × headroom
    unsigned target = 0;
    Basis basis = Basis::fixed;
    Cap cap = Cap::none;
};

// The next decision from the previous level.
Decision decide(const Limits& l, double prev_level, const Input& in);

// "target 12 = 40.0/s × 150 ms × 2, capped by max-idle 12": for `pool status`.
std::string explain(const Limits& l, const Input& in, const Decision& d);

// An exponentially weighted rate: `events` seen over the last `dt_s` seconds folded
// into `prev` with time constant `tau_s` (so a step in the rate is 63% followed
// after tau_s, whatever the tick length).
double ewma_rate(double prev, uint64_t events, double dt_s, double tau_s);

// An exponentially weighted mean of samples; the first sample is taken as it is.
double ewma_sample(double prev, double sample, bool first, double weight = 0.25);

// How many idle sandboxes the pool's budget has room for: those there are
// (`idle`, `starting`) plus what half of the free memory and pids would hold at the
// pool's current use per sandbox (`total` sandboxes). The other half stays for
// running workloads to grow into. Nothing when no limit is known.
std::optional<unsigned> budget_room(std::optional<uint64_t> mem_current, std::optional<uint64_t> mem_limit,
                                    std::optional<uint64_t> pids_current, std::optional<uint64_t> pids_limit,
                                    unsigned total, unsigned idle, unsigned starting);

const char* mode_name(Mode m);

}  // namespace tarn::pool::sizing
