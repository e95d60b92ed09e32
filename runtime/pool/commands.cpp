// `tarn pool ...`: the CLI's half of the pool — set-up of signals, printing.
#include <signal.h>
#include <sys/signalfd.h>

#include <cstdio>
#include <iostream>

#include "runtime/pool/pool.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool {

int serve_command(const DaemonOptions& o) {
    serve(o);
    return 0;
}

int run_command(const std::string& socket, const RunRequest& r) {
    // Signals meant for the workload are forwarded to it; the client itself only
    // exits when the daemon reports the workload's exit.
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    RunResult res = Client(socket).run(r, sfd.get());
    runtime::log_debug("pool run: sandbox " + res.sandbox + " pid " + std::to_string(res.pid) + " claim " +
                       std::to_string(res.claim_ms) + " ms");
    return res.exit_code;
}

int status_command(const std::string& socket, const std::string& pool, bool as_json) {
    nlohmann::json st = Client(socket).status(pool);
    if (as_json) {
        std::cout << st.dump(2) << "\n";
        return 0;
    }
    std::printf("%-16s %6s %6s %5s %6s %6s %8s %8s %9s %9s %9s %12s\n", "POOL", "TOTAL", "ALLOC", "IDLE", "TARGET",
                "UTIL", "HITS", "MISSES", "P50(ms)", "P99(ms)", "REFILL/s", "MEMORY");
    std::string why;
    for (const auto& p : st["pools"]) {
        const auto& b = p["budget"];
        std::string mem = b.contains("memoryCurrent") ? std::to_string(b["memoryCurrent"].get<uint64_t>() >> 20) + "M" : "-";
        if (b.contains("memoryLimit") && b["memoryLimit"].get<uint64_t>() < (1ULL << 60))
            mem += "/" + std::to_string(b["memoryLimit"].get<uint64_t>() >> 20) + "M";
        const auto& sz = p["sizing"];
        std::printf("%-16s %6u %6u %5u %6u %5.0f%% %8llu %8llu %9.2f %9.2f %9.1f %12s\n",
                    p["name"].get<std::string>().c_str(), p["total"].get<unsigned>(), p["allocated"].get<unsigned>(),
                    p["idle"].get<unsigned>(), sz["target"].get<unsigned>(), 100 * p["utilization"].get<double>(),
                    static_cast<unsigned long long>(p["hits"].get<uint64_t>()),
                    static_cast<unsigned long long>(p["misses"].get<uint64_t>()),
                    p["claimLatencyMs"]["p50"].get<double>(), p["claimLatencyMs"]["p99"].get<double>(),
                    p["refillPerSec"].get<double>(), mem.c_str());
        char line[192];
        std::snprintf(line, sizeof line, "%s (%s): demand %.1f/s, make %.1f ms: ", p["name"].get<std::string>().c_str(),
                      sz["mode"].get<std::string>().c_str(), sz["demandPerSec"].get<double>(),
                      sz["makeMs"].get<double>());
        why += line + sz["why"].get<std::string>() + "\n";
    }
    std::fputs(why.c_str(), stdout);
    if (st.contains("metrics")) std::printf("metrics: %s\n", st["metrics"].get<std::string>().c_str());
    return 0;
}

int stop_command(const std::string& socket, bool now) {
    Client(socket).stop(now);
    return 0;
}

}  // namespace tarn::pool
