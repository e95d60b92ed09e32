// Freezing: v2 cgroup.freeze + cgroup.events, v1 freezer.state. Both are
// asynchronous in the kernel, so each request waits (bounded) for the result.
#include <algorithm>
#include <thread>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

// Polls `done` with a growing pause until it holds or the timeout passes;
// `nudge` runs every 100 ms of waiting.
template <typename Done, typename Nudge>
bool wait_for(Done&& done, Nudge&& nudge) {
    auto start = std::chrono::steady_clock::now();
    auto last_nudge = start;
    auto pause = std::chrono::microseconds(100);
    for (;;) {
        if (done()) return true;
        auto now = std::chrono::steady_clock::now();
        if (now - start >= kFreezeTimeout) return false;
        if (now - last_nudge >= std::chrono::milliseconds(100)) {
            nudge();
            last_nudge = now;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(10000));
    }
}

std::string seconds(std::chrono::milliseconds ms) {
    return std::to_string(ms.count() / 1000) + "s";
}

void set_v2(const std::string& dir, bool freeze) {
    const char* value = freeze ? "1" : "0";
    write(dir, "cgroup.freeze", value);
    bool ok = wait_for([&] { return frozen_v2(dir) == freeze; }, [] {});
    if (ok) return;
    if (freeze) write_errno(dir, "cgroup.freeze", "0");  // do not leave it half frozen
    throw Error("cgroup " + dir + ": " + (freeze ? "freeze" : "thaw") +
                ": cgroup.events did not report frozen " + value + " within " + seconds(kFreezeTimeout) +
                (freeze ? " (a task may be stuck in uninterruptible sleep)" : " (is an ancestor frozen?)"));
}

}  // namespace

bool frozen_v2(const std::string& dir) {
    auto events = parse_flat_keyed(read(dir, "cgroup.events"));
    auto it = events.find("frozen");
    return it != events.end() && it->second == 1;
}

void freeze_v2(const std::string& dir) {
    set_v2(dir, true);
}
void thaw_v2(const std::string& dir) {
    set_v2(dir, false);
}

bool frozen_v1(const std::string& dir) {
    return trim(read(dir, "freezer.state")) == "FROZEN";
}

void freeze_v1(const std::string& dir) {
    write(dir, "freezer.state", "FROZEN");
    // FREEZING lingers while a task is not yet frozen (one forked meanwhile, or one
    // in a non-freezable sleep); writing FROZEN again makes the kernel retry.
    bool ok = wait_for([&] { return frozen_v1(dir); }, [&] { write_errno(dir, "freezer.state", "FROZEN"); });
    if (ok) return;
    write_errno(dir, "freezer.state", "THAWED");
    throw Error("cgroup " + dir + ": freeze: freezer.state did not reach FROZEN within " +
                seconds(kFreezeTimeout) + " (a task may be stuck in uninterruptible sleep)");
}

void thaw_v1(const std::string& dir) {
    write(dir, "freezer.state", "THAWED");
    bool ok = wait_for([&] { return trim(read(dir, "freezer.state")) == "THAWED"; },
                       [&] { write_errno(dir, "freezer.state", "THAWED"); });
    if (!ok)
        throw Error("cgroup " + dir + ": thaw: freezer.state did not reach THAWED within " +
                    seconds(kFreezeTimeout) + " (is an ancestor frozen?)");
}

}  // namespace tarn::cgroups::detail
