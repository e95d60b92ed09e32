// tarn-pool-bench: the warm pool as a platform sees it, through the C++ client
// library (no `tarn pool run` process per request), beside a plain fork+exec of the
// same command from the same process.
//
//   tarn-pool-bench --socket S --pool P [--runs N] [--clients K] [--pause-ms MS] -- CMD ARGS...
//
// With one client: N sequential runs, each timed from the request to the exit
// report, and N posix_spawn+waitpid of CMD (resolved on the host) for the baseline.
// With K clients: K threads share N runs as fast as they go; the rate is runs over
// wall time. Prints one JSON document on stdout.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "runtime/pool/pool.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Args {
    std::string socket = tarn::pool::kDefaultSocket, pool;
    unsigned runs = 100, clients = 1, pause_ms = 0;
    std::string host_cmd;  // the baseline's executable: CMD as the host finds it
    std::vector<std::string> cmd;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "tarn-pool-bench: " << why
              << "\nusage: tarn-pool-bench --socket S --pool P [--runs N] [--clients K] [--pause-ms MS]"
                 " [--host-cmd PATH] -- CMD ARGS...\n";
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
        if (f == "--socket") a.socket = value("--socket");
        else if (f == "--pool") a.pool = value("--pool");
        else if (f == "--runs") a.runs = static_cast<unsigned>(std::stoul(value("--runs")));
        else if (f == "--clients") a.clients = static_cast<unsigned>(std::stoul(value("--clients")));
        else if (f == "--pause-ms") a.pause_ms = static_cast<unsigned>(std::stoul(value("--pause-ms")));
        else if (f == "--host-cmd") a.host_cmd = value("--host-cmd");
        else usage("unknown flag " + f);
    }
    for (; i < argc; ++i) a.cmd.push_back(argv[i]);
    if (a.pool.empty() || a.cmd.empty() || a.runs == 0 || a.clients == 0) usage("--pool and a command are required");
    if (a.host_cmd.empty()) a.host_cmd = a.cmd[0];
    return a;
}

nlohmann::json summary(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))]; };
    return {{"mean", sum / static_cast<double>(v.size())}, {"p50", pct(50)}, {"p90", pct(90)}, {"p99", pct(99)},
            {"min", v.front()}, {"max", v.back()}, {"samples", v}};
}

double spawn_once(const Args& a, int null_fd) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(a.host_cmd.c_str()));
    for (size_t i = 1; i < a.cmd.size(); ++i) argv.push_back(const_cast<char*>(a.cmd[i].c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 2);
    auto t0 = Clock::now();
    pid_t pid;
    if (posix_spawn(&pid, a.host_cmd.c_str(), &fa, nullptr, argv.data(), environ) != 0) {
        std::cerr << "tarn-pool-bench: spawn " << a.host_cmd << " failed\n";
        std::exit(1);
    }
    int st;
    ::waitpid(pid, &st, 0);
    auto t1 = Clock::now();
    posix_spawn_file_actions_destroy(&fa);
    return ms_between(t0, t1);
}

}  // namespace

int main(int argc, char** argv) {
    Args a = parse(argc, argv);
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    tarn::pool::RunRequest req;
    req.pool = a.pool;
    req.args = a.cmd;
    req.wait_ms = 60000;
    req.stdio = {null_fd, null_fd, null_fd};

    std::mutex mu;
    std::vector<double> latency, claim;
    unsigned failed = 0;
    std::atomic<unsigned> next{0};
    auto worker = [&] {
        tarn::pool::Client client(a.socket);
        while (next.fetch_add(1) < a.runs) {
            if (a.pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(a.pause_ms));
            auto t0 = Clock::now();
            try {
                tarn::pool::RunResult r = client.run(req);
                double ms = ms_between(t0, Clock::now());
                std::lock_guard l(mu);
                latency.push_back(ms);
                claim.push_back(r.claim_ms);
                if (r.exit_code != 0) ++failed;
            } catch (const std::exception& e) {
                std::lock_guard l(mu);
                ++failed;
                if (failed == 1) std::cerr << "tarn-pool-bench: " << e.what() << "\n";
            }
        }
    };
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < a.clients; ++i) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    double wall = ms_between(start, Clock::now());

    nlohmann::json out = {{"runs", a.runs}, {"clients", a.clients}, {"failed", failed}, {"wallMs", wall},
                          {"ratePerSec", 1000.0 * static_cast<double>(latency.size()) / wall}};
    if (!latency.empty()) {
        out["latencyMs"] = summary(latency);
        out["claimMs"] = summary(claim);
    }
    if (a.clients == 1) {
        std::vector<double> base;
        for (unsigned i = 0; i < a.runs; ++i) {
            if (a.pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(a.pause_ms));
            base.push_back(spawn_once(a, null_fd));
        }
        out["forkExecMs"] = summary(base);
    }
    std::cout << out.dump() << "\n";
    return failed ? 1 : 0;
}
