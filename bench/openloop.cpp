// tarn-openloop: load on the warm pool (or on any command) as a platform makes it.
//
//   tarn-openloop --mode pool --socket S --pool P --rate R [options] -- CMD ARGS...
//   tarn-openloop --mode spawn --rate R [options] -- PROGRAM ARGS...
//   tarn-openloop --mode pool|spawn --closed K [options] -- ...
//   tarn-openloop --mode pool --timeline N --socket S --pool P -- CMD ARGS...
//
// Open loop (--rate R): requests arrive as a Poisson process of rate R per second
// (exponential gaps, seeded) and are issued on schedule whatever the earlier ones
// are doing, by up to --max-inflight workers (default 32). A request whose time
// comes while every worker is busy waits in a backlog (counted as `delayed`); one
// that finds the backlog full (--backlog, default 1000) is dropped (`dropped`).
// Each request is timed from its scheduled arrival to its exit status, so time
// spent in the backlog counts.
//
// Closed loop (--closed K): K workers issue requests back to back: the sustained
// rate, the capacity the open-loop rates are fractions of.
//
// --mode pool: through the client library (tarn::pool::Client::run), and the
// daemon's hits, misses and claims over the measured window from its status.
// --mode spawn: posix_spawn of PROGRAM and waitpid; "{n}" in an argument becomes
// the request's number (a unique container id for `tarn run`).
//
// --warmup S (default 3) runs the load before --duration S (default 10) without
// recording it, so an adaptive pool has seen the rate. --timeline N runs N
// sequential pool claims, 50 ms apart, with the client library's timeline on
// stderr (TARN_POOL_TIMELINE). Prints one JSON document on stdout.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/pool/pool.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Args {
    std::string mode, socket = tarn::pool::kDefaultSocket, pool;
    double rate = 0, duration_s = 10, warmup_s = 3;
    unsigned closed = 0, max_inflight = 32, backlog = 1000, timeline = 0;
    uint64_t seed = 1;
    std::vector<std::string> cmd;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "tarn-openloop: " << why
              << "\nusage: tarn-openloop --mode pool|spawn [--socket S --pool P] (--rate R | --closed K | "
                 "--timeline N)"
                 " [--duration S] [--warmup S] [--max-inflight K] [--backlog B] [--seed N] -- CMD ARGS...\n";
    std::exit(2);
}

Args parse(int argc, char** argv) {
    Args a;
    int i = 1;
    auto value = [&](const char* flag) -> std::string {
        if (i + 1 >= argc) usage(std::string(flag) + ": needs a value");
        return argv[++i];
    };
    for (; i < argc; ++i) {
        std::string f = argv[i];
        if (f == "--") {
            ++i;
            break;
        }
        if (f == "--mode")
            a.mode = value("--mode");
        else if (f == "--socket")
            a.socket = value("--socket");
        else if (f == "--pool")
            a.pool = value("--pool");
        else if (f == "--rate")
            a.rate = std::stod(value("--rate"));
        else if (f == "--closed")
            a.closed = static_cast<unsigned>(std::stoul(value("--closed")));
        else if (f == "--timeline")
            a.timeline = static_cast<unsigned>(std::stoul(value("--timeline")));
        else if (f == "--duration")
            a.duration_s = std::stod(value("--duration"));
        else if (f == "--warmup")
            a.warmup_s = std::stod(value("--warmup"));
        else if (f == "--max-inflight")
            a.max_inflight = static_cast<unsigned>(std::stoul(value("--max-inflight")));
        else if (f == "--backlog")
            a.backlog = static_cast<unsigned>(std::stoul(value("--backlog")));
        else if (f == "--seed")
            a.seed = std::stoull(value("--seed"));
        else
            usage("unknown flag " + f);
    }
    for (; i < argc; ++i) a.cmd.push_back(argv[i]);
    if (a.mode != "pool" && a.mode != "spawn") usage("--mode must be pool or spawn");
    if (a.mode == "pool" && a.pool.empty()) usage("--mode pool needs --pool");
    if (a.cmd.empty()) usage("a command is required");
    if ((a.rate > 0) + (a.closed > 0) + (a.timeline > 0) != 1) usage("one of --rate, --closed, --timeline");
    if (a.timeline && a.mode != "pool") usage("--timeline is for --mode pool");
    if (a.duration_s <= 0 || a.warmup_s < 0 || a.max_inflight == 0)
        usage("bad --duration, --warmup or --max-inflight");
    return a;
}

json summary(std::vector<double> v) {
    if (v.empty()) return nullptr;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    // Nearest rank: the smallest sample with at least p% of them at or below it.
    auto pct = [&](double p) {
        size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
        return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
    };
    return {{"n", v.size()},  {"mean", sum / static_cast<double>(v.size())},
            {"p50", pct(50)}, {"p90", pct(90)},
            {"p99", pct(99)}, {"min", v.front()},
            {"max", v.back()}};
}

// One request, whatever the mode: returns false on a failure (a thrown error, a
// spawn that failed or a non-zero exit).
class Issuer {
public:
    explicit Issuer(const Args& a) : a_(a), client_(a.socket) {
        null_fd_ = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        req_.pool = a.pool;
        req_.args = a.cmd;
        req_.wait_ms = 60000;
        req_.stdio = {null_fd_, null_fd_, null_fd_};
    }
    bool issue(uint64_t n, double& claim_ms) {
        if (a_.mode == "pool") {
            // One client for every worker, kept as a platform keeps it: its connections
            // are reused from one request to the next.
            tarn::pool::RunResult r = client_.run(req_);
            claim_ms = r.claim_ms;
            return r.exit_code == 0;
        }
        std::vector<std::string> args = a_.cmd;
        for (std::string& s : args)
            for (size_t at; (at = s.find("{n}")) != std::string::npos;) s.replace(at, 3, std::to_string(n));
        std::vector<char*> argv;
        for (std::string& s : args) argv.push_back(s.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        for (int fd = 0; fd < 3; ++fd) posix_spawn_file_actions_adddup2(&fa, null_fd_, fd);
        pid_t pid;
        int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) return false;
        int st = 0;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    json pool_counters() const {
        if (a_.mode != "pool") return nullptr;
        json p = tarn::pool::Client(a_.socket).status(a_.pool)["pools"][0];
        return {
            {"hits", p.value("hits", 0)}, {"misses", p.value("misses", 0)}, {"claims", p.value("claims", 0)}};
    }

private:
    const Args& a_;
    tarn::pool::Client client_;
    int null_fd_;
    tarn::pool::RunRequest req_;
};

struct Results {
    std::mutex mu;
    std::vector<double> latency, claim;
    unsigned failed = 0;
    std::string first_error;
    void add(bool ok, double ms, double claim_ms, const std::string& err = {}) {
        std::lock_guard l(mu);
        if (!ok) {
            ++failed;
            if (first_error.empty()) first_error = err.empty() ? "a request failed or exited non-zero" : err;
            return;
        }
        latency.push_back(ms);
        claim.push_back(claim_ms);
    }
};

void timed(Issuer& is, uint64_t n, Clock::time_point from, bool record, Results& res) {
    double claim_ms = 0;
    bool ok = false;
    std::string err;
    try {
        ok = is.issue(n, claim_ms);
    } catch (const std::exception& e) {
        err = e.what();
    }
    if (record) res.add(ok, ms_between(from, Clock::now()), claim_ms, err);
}

json counters_delta(const json& before, const json& after) {
    if (before.is_null() || after.is_null()) return nullptr;
    int64_t h = after["hits"].get<int64_t>() - before["hits"].get<int64_t>();
    int64_t m = after["misses"].get<int64_t>() - before["misses"].get<int64_t>();
    int64_t c = after["claims"].get<int64_t>() - before["claims"].get<int64_t>();
    return {{"hits", h},
            {"misses", m},
            {"claims", c},
            {"hitRatio", h + m > 0 ? static_cast<double>(h) / static_cast<double>(h + m) : 0.0}};
}

json closed_loop(const Args& a, Issuer& is) {
    Results res;
    auto start = Clock::now();
    auto measure_from =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.warmup_s));
    auto end = measure_from +
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.duration_s));
    std::atomic<uint64_t> next{0};
    json before;
    std::once_flag snapshot;
    auto worker = [&] {
        for (;;) {
            auto t0 = Clock::now();
            if (t0 >= end) return;
            bool record = t0 >= measure_from;
            if (record) std::call_once(snapshot, [&] { before = is.pool_counters(); });
            timed(is, next.fetch_add(1), t0, record, res);
        }
    };
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < a.closed; ++i) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    json after = is.pool_counters();
    return {{"workers", a.closed},
            {"completed", res.latency.size()},
            {"failed", res.failed},
            {"ratePerSec", static_cast<double>(res.latency.size()) / a.duration_s},
            {"latencyMs", summary(res.latency)},
            {"claimMs", a.mode == "pool" ? summary(res.claim) : json(nullptr)},
            {"pool", counters_delta(before, after)},
            {"firstError", res.first_error}};
}

json open_loop(const Args& a, Issuer& is) {
    struct Job {
        Clock::time_point at;
        uint64_t n;
        bool record;
    };
    Results res;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> backlog;
    unsigned busy = 0;
    bool done = false;
    auto worker = [&] {
        for (;;) {
            Job j;
            {
                std::unique_lock l(mu);
                cv.wait(l, [&] { return done || !backlog.empty(); });
                if (backlog.empty()) return;
                j = backlog.front();
                backlog.pop_front();
                ++busy;
            }
            timed(is, j.n, j.at, j.record, res);
            std::lock_guard l(mu);
            --busy;
        }
    };
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < a.max_inflight; ++i) threads.emplace_back(worker);

    std::mt19937_64 rng(a.seed);
    std::exponential_distribution<double> gap(a.rate);
    auto start = Clock::now() + std::chrono::milliseconds(10);
    auto measure_from =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.warmup_s));
    auto end = measure_from +
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.duration_s));
    json before = a.warmup_s > 0 ? json(nullptr) : is.pool_counters();
    uint64_t issued = 0, delayed = 0, dropped = 0, n = 0;
    double late_ms_max = 0;  // the generator's own lateness: how far behind schedule it woke
    auto at = start;
    for (;;) {
        at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
        if (at >= end) break;
        std::this_thread::sleep_until(at);
        bool record = at >= measure_from;
        if (record && before.is_null()) before = is.pool_counters();
        if (record) late_ms_max = std::max(late_ms_max, ms_between(at, Clock::now()));
        std::lock_guard l(mu);
        if (backlog.size() >= a.backlog) {
            if (record) ++dropped;
            continue;
        }
        if (record) {
            ++issued;
            if (busy + backlog.size() >= a.max_inflight) ++delayed;
        }
        backlog.push_back({at, n++, record});
        cv.notify_one();
    }
    {
        std::lock_guard l(mu);
        done = true;
    }
    cv.notify_all();
    for (auto& t : threads) t.join();
    auto finished = Clock::now();
    json after = is.pool_counters();
    return {{"ratePerSec", a.rate},
            {"durationS", a.duration_s},
            {"issued", issued},
            {"completed", res.latency.size()},
            {"failed", res.failed},
            {"delayed", delayed},
            {"dropped", dropped},
            {"maxInflight", a.max_inflight},
            {"offeredPerSec", static_cast<double>(issued) / a.duration_s},
            {"drainMs", std::max(0.0, ms_between(end, finished))},
            {"generatorLateMaxMs", late_ms_max},
            {"latencyMs", summary(res.latency)},
            {"claimMs", a.mode == "pool" ? summary(res.claim) : json(nullptr)},
            {"pool", counters_delta(before, after)},
            {"firstError", res.first_error}};
}

json timeline(const Args& a, Issuer& is) {
    ::setenv("TARN_POOL_TIMELINE", "1", 1);
    Results res;
    for (unsigned i = 0; i < a.timeline; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        timed(is, i, Clock::now(), true, res);
    }
    ::unsetenv("TARN_POOL_TIMELINE");
    return {{"runs", a.timeline},
            {"failed", res.failed},
            {"latencyMs", summary(res.latency)},
            {"claimMs", summary(res.claim)}};
}

}  // namespace

int main(int argc, char** argv) {
    Args a = parse(argc, argv);
    std::signal(SIGPIPE, SIG_IGN);
    Issuer is(a);
    json out = a.timeline ? timeline(a, is) : a.closed ? closed_loop(a, is) : open_loop(a, is);
    out["mode"] = a.mode;
    std::cout << out.dump() << "\n";
    return out["failed"].get<unsigned>() ? 1 : 0;
}
