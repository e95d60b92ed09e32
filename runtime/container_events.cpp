#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace {

std::chrono::milliseconds parse_interval(const std::string& s) {
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    if (i == 0) throw Error("--interval: bad duration \"" + s + "\"");
    double v = std::stod(s.substr(0, i));
    std::string unit = s.substr(i);
    double ms;
    if (unit == "ms") ms = v;
    else if (unit == "s" || unit.empty()) ms = v * 1000;
    else if (unit == "m") ms = v * 60000;
    else throw Error("--interval: bad duration \"" + s + "\"");
    if (ms < 1) throw Error("--interval: must be at least 1ms");
    return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

void emit(const nlohmann::json& j) {
    std::string line = j.dump() + "\n";
    (void)!::write(1, line.data(), line.size());
}

}  // namespace

int events(const GlobalOptions& g, const std::string& id, bool stats_once, const std::string& interval) {
    try {
        auto every = parse_interval(interval);
        std::unique_ptr<cgroups::Manager> cg;
        {
            detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
            detail::Record rec = dir.load();
            oci::Status st = detail::current_status(dir, rec);
            if (st == oci::Status::stopped || st == oci::Status::creating)
                throw Error("container is " + std::string(oci::to_string(st)));
            cg = detail::open_cgroup(rec);
            if (!cg) throw Error("container has no cgroup");
        }
        if (stats_once) {
            emit(cgroups::to_runc_json(cg->stats(), id));
            return 0;
        }
        // OOM kills are checked often; stats go out at the interval.
        uint64_t ooms = cg->oom_kill_count();
        auto next_stats = std::chrono::steady_clock::now();
        auto report_ooms = [&] {
            if (!cg->exists()) return;
            uint64_t now_ooms = cg->oom_kill_count();
            for (; ooms < now_ooms; ++ooms) emit({{"type", "oom"}, {"id", id}});
        };
        for (;;) {
            // The kill that stops a container may be the OOM killer's: report it first.
            report_ooms();
            if (!detail::ContainerDir::exists(g.root, id) || !cg->exists()) return 0;
            detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
            detail::Record rec = dir.load();
            if (detail::current_status(dir, rec) == oci::Status::stopped) {
                report_ooms();
                return 0;
            }
            dir.unlock();
            if (std::chrono::steady_clock::now() >= next_stats) {
                emit(cgroups::to_runc_json(cg->stats(), id));
                next_stats += every;
            }
            std::this_thread::sleep_for(std::min(every, std::chrono::milliseconds(100)));
        }
    } catch (const Error& e) {
        throw e.wrapped("events " + id);
    }
}

}  // namespace tarn::runtime
