// The pool's sizing decision: how many idle sandboxes to keep for the demand
// measured, within the pool's limits.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/pool/sizing.hpp"

namespace tarn::pool::sizing {
namespace {

Limits adaptive(unsigned min_idle = 2, unsigned max_idle = 32, unsigned max_total = 64) {
    return Limits{.mode = Mode::adaptive,
                  .min_idle = min_idle,
                  .max_idle = max_idle,
                  .max_total = max_total,
                  .headroom = 2,
                  .decay_s = 10};
}

Input demand(double rate, double make_ms, double dt_s = 0.1) {
    return Input{.rate = rate, .make_s = make_ms / 1000, .dt_s = dt_s};
}

TEST(PoolSizing, FixedIsMinIdleWhateverTheDemand) {
    Limits l = adaptive(4);
    l.mode = Mode::fixed;
    Input in = demand(500, 100);
    in.misses = 10;
    Decision d = decide(l, 0, in);
    EXPECT_EQ(d.target, 4u);
    EXPECT_EQ(d.basis, Basis::fixed);
    EXPECT_EQ(explain(l, in, d), "target 4 = min-idle (fixed sizing)");
}

TEST(PoolSizing, TheTargetCoversTheMakeTimeAtTheCurrentRateWithHeadroom) {
    Limits l = adaptive();
    Input in = demand(40, 150);
    Decision d = decide(l, 2, in);
    EXPECT_EQ(d.target, 12u);  // 40/s × 0.15 s × 2
    EXPECT_EQ(d.basis, Basis::demand);
    EXPECT_EQ(d.cap, Cap::none);
    EXPECT_EQ(explain(l, in, d), "target 12 = 40.0/s × 150 ms × 2");
    // A fraction of a sandbox is a whole one.
    EXPECT_EQ(decide(l, 2, demand(41, 150)).target, 13u);
}

TEST(PoolSizing, LowDemandKeepsTheFloor) {
    Limits l = adaptive(2);
    Input in = demand(1, 150);
    Decision d = decide(l, 0, in);
    EXPECT_EQ(d.target, 2u);
    EXPECT_EQ(d.basis, Basis::floor);
    EXPECT_EQ(explain(l, in, d), "target 2 = min-idle (demand 0.3 = 1.0/s × 150 ms × 2)");
    // No demand at all, no floor: nothing kept idle.
    EXPECT_EQ(decide(adaptive(0), 0, demand(0, 0)).target, 0u);
}

TEST(PoolSizing, EachMissRaisesTheTargetAtOnce) {
    Limits l = adaptive(2);
    Input in = demand(0, 5, 0);
    in.misses = 1;
    Decision d = decide(l, 2, in);
    EXPECT_EQ(d.target, 3u);
    EXPECT_EQ(d.basis, Basis::misses);
    in.misses = 3;
    d = decide(l, d.level, in);
    EXPECT_EQ(d.target, 6u);
    EXPECT_EQ(explain(l, in, d), "target 6 after misses, shrinking toward 2 (0.0/s × 5.0 ms × 2)");
}

TEST(PoolSizing, AHigherDemandIsFollowedAtOnceALowerOneSlowly) {
    Limits l = adaptive(1);
    Decision d = decide(l, 1, demand(100, 100));
    EXPECT_EQ(d.target, 20u);
    // Demand falls to nothing: one tick later the target has barely moved.
    d = decide(l, d.level, demand(0, 100, 0.1));
    EXPECT_EQ(d.target, 20u);
    EXPECT_EQ(d.basis, Basis::misses);
    // It comes down step by step, never up, and reaches the floor after several
    // time constants.
    unsigned last = d.target;
    int ticks = 0;
    while (d.target > 1 && ticks < 10000) {
        d = decide(l, d.level, demand(0, 100, 0.1));
        EXPECT_LE(d.target, last);
        last = d.target;
        ++ticks;
    }
    EXPECT_EQ(d.target, 1u);
    EXPECT_EQ(d.basis, Basis::floor);
    // ln(19 / 0.5) ≈ 3.6 time constants of 10 s, in ticks of 0.1 s.
    EXPECT_GT(ticks, 300);
    EXPECT_LT(ticks, 400);
}

TEST(PoolSizing, TheDecayIsTheSameWhateverTheTickLength) {
    Limits l = adaptive(0);
    Decision coarse = decide(l, 10, demand(0, 0, 5));
    Decision fine{.level = 10};
    for (int i = 0; i < 50; ++i) fine = decide(l, fine.level, demand(0, 0, 0.1));
    EXPECT_NEAR(coarse.level, fine.level, 1e-9);
    EXPECT_NEAR(coarse.level, 10 * std::exp(-0.5), 1e-9);
}

TEST(PoolSizing, CapsComeFromMaxIdleMaxTotalAndTheBudget) {
    Limits l = adaptive(2, 8, 20);
    Input in = demand(40, 150);
    Decision d = decide(l, 2, in);
    EXPECT_EQ(d.target, 8u);
    EXPECT_EQ(d.cap, Cap::max_idle);
    EXPECT_EQ(explain(l, in, d), "target 8 = 40.0/s × 150 ms × 2, capped by max-idle 8");
    // Misses never push the level past the ceiling, so it comes down from there.
    in.misses = 100;
    EXPECT_EQ(decide(l, 2, in).level, 8);

    in = demand(40, 150);
    in.busy = 15;
    d = decide(l, 2, in);
    EXPECT_EQ(d.target, 5u);
    EXPECT_EQ(d.cap, Cap::max_total);
    EXPECT_EQ(explain(l, in, d), "target 5 = 40.0/s × 150 ms × 2, capped by max-total 20 (15 in use)");
    in.busy = 25;
    EXPECT_EQ(decide(l, 2, in).target, 0u);

    in = demand(40, 150);
    in.budget_room = 3;
    d = decide(l, 2, in);
    EXPECT_EQ(d.target, 3u);
    EXPECT_EQ(d.cap, Cap::budget);
    EXPECT_EQ(explain(l, in, d), "target 3 = 40.0/s × 150 ms × 2, capped by the budget");
}

TEST(PoolSizing, RateIsAnExponentialAverageOfArrivals) {
    // A steady 50/s in ticks of 0.1 s converges on 50 whatever the time constant.
    double r = 0;
    for (int i = 0; i < 400; ++i) r = ewma_rate(r, 5, 0.1, 2);
    EXPECT_NEAR(r, 50, 1e-6);
    // A step is 63% followed after one time constant.
    r = 0;
    for (int i = 0; i < 20; ++i) r = ewma_rate(r, 10, 0.1, 2);
    EXPECT_NEAR(r, 100 * (1 - std::exp(-1)), 1e-6);
    // No time passed: nothing changes.
    EXPECT_EQ(ewma_rate(7, 100, 0, 2), 7);
    // Samples: the first is taken as it is.
    EXPECT_EQ(ewma_sample(0, 0.2, true), 0.2);
    EXPECT_NEAR(ewma_sample(0.2, 0.6, false), 0.3, 1e-12);
}

TEST(PoolSizing, BudgetRoomKeepsHalfTheFreeBudgetForWorkloads) {
    // 4 sandboxes use 40 MiB of 100: 60 free, half of it at 10 MiB each is 3 more,
    // plus the 2 idle and 1 starting already there.
    constexpr uint64_t M = 1 << 20;
    EXPECT_EQ(budget_room(40 * M, 100 * M, std::nullopt, std::nullopt, 4, 2, 1), 6u);
    // pids: 8 used of 16 by 4 sandboxes: 8 free, half is 4 pids, 2 sandboxes.
    EXPECT_EQ(budget_room(std::nullopt, std::nullopt, 8, 16, 4, 0, 0), 2u);
    // Both known: the tighter one.
    EXPECT_EQ(budget_room(40 * M, 100 * M, 8, 16, 4, 0, 0), 2u);
    // A full budget leaves room only for what is already idle.
    EXPECT_EQ(budget_room(100 * M, 100 * M, std::nullopt, std::nullopt, 4, 1, 0), 1u);
    // No limit, or no sandbox to measure use by: no cap.
    EXPECT_EQ(budget_room(40 * M, std::nullopt, 8, std::nullopt, 4, 0, 0), std::nullopt);
    EXPECT_EQ(budget_room(0, 100 * M, 0, 16, 0, 0, 0), std::nullopt);
}

}  // namespace
}  // namespace tarn::pool::sizing
