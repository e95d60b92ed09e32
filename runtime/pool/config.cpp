#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "runtime/pool/metrics.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::pool {

unsigned default_max_starting() {
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    return static_cast<unsigned>(std::clamp<long>(2 * cpus, 2, 8));
}

namespace {

using nlohmann::json;

void only_keys(const json& j, const std::string& where, std::initializer_list<const char*> keys) {
    std::set<std::string> allowed(keys.begin(), keys.end());
    for (const auto& [k, v] : j.items())
        if (!allowed.count(k)) throw Error(where + "." + k + ": unknown field");
}

const json& object_at(const json& j, const std::string& where) {
    if (!j.is_object()) throw Error(where + ": expected object");
    return j;
}

std::string string_at(const json& j, const char* key, const std::string& where, bool required) {
    if (!j.contains(key)) {
        if (required) throw Error(where + "." + key + ": required");
        return {};
    }
    if (!j[key].is_string() || j[key].get<std::string>().empty())
        throw Error(where + "." + key + ": expected a non-empty string");
    return j[key].get<std::string>();
}

template <class T>
std::optional<T> int_at(const json& j, const char* key, const std::string& where, int64_t min) {
    if (!j.contains(key)) return std::nullopt;
    const json& v = j[key];
    if (!v.is_number_integer()) throw Error(where + "." + key + ": expected integer");
    int64_t x = v.get<int64_t>();
    if (x < min) throw Error(where + "." + key + ": must be >= " + std::to_string(min) + ", got " + std::to_string(x));
    return static_cast<T>(x);
}

bool valid_name(const std::string& n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
    return n != "." && n != "..";
}

}  // namespace

DaemonOptions parse_config(const json& j, const std::string& what) {
    object_at(j, what);
    only_keys(j, what, {"socket", "cgroupParent", "maxStarting", "metrics", "pools"});
    DaemonOptions o;
    if (auto s = string_at(j, "socket", what, false); !s.empty()) o.socket = s;
    if (auto s = string_at(j, "cgroupParent", what, false); !s.empty()) {
        if (s[0] != '/') throw Error(what + ".cgroupParent: must be an absolute cgroup path");
        o.cgroup_parent = s;
    }
    if (auto v = int_at<unsigned>(j, "maxStarting", what, 1)) o.max_starting = *v;
    if (auto s = string_at(j, "metrics", what, false); !s.empty()) {
        try {
            check_metrics_address(s);
        } catch (const Error& e) {
            throw Error(what + ".metrics: " + e.what());
        }
        o.metrics = s;
    }
    if (!j.contains("pools") || !j["pools"].is_array() || j["pools"].empty())
        throw Error(what + ".pools: expected a non-empty array");
    std::set<std::string> names;
    for (size_t i = 0; i < j["pools"].size(); ++i) {
        std::string where = what + ".pools[" + std::to_string(i) + "]";
        const json& p = object_at(j["pools"][i], where);
        only_keys(p, where,
                  {"name", "bundle", "minIdle", "maxTotal", "maxIdle", "sizing", "headroom", "rateWindowMs",
                   "decayMs", "budget", "isolation", "vmRefill", "reuseCgroups"});
        PoolSpec s;
        s.name = string_at(p, "name", where, true);
        if (!valid_name(s.name)) throw Error(where + ".name: \"" + s.name + "\": letters, digits, '-', '_' and '.' only");
        if (!names.insert(s.name).second) throw Error(where + ".name: \"" + s.name + "\" appears twice");
        s.bundle = string_at(p, "bundle", where, true);
        if (auto v = int_at<unsigned>(p, "minIdle", where, 0)) s.min_idle = *v;
        if (auto v = int_at<unsigned>(p, "maxTotal", where, 1)) s.max_total = *v;
        if (s.min_idle > s.max_total)
            throw Error(where + ".minIdle: " + std::to_string(s.min_idle) + " is more than maxTotal " +
                        std::to_string(s.max_total));
        if (auto m = string_at(p, "sizing", where, false); !m.empty()) {
            if (m != "fixed" && m != "adaptive")
                throw Error(where + ".sizing: \"" + m + "\": expected \"fixed\" or \"adaptive\"");
            s.sizing = m == "fixed" ? sizing::Mode::fixed : sizing::Mode::adaptive;
        }
        if (auto v = int_at<unsigned>(p, "maxIdle", where, 1)) s.max_idle = *v;
        if (p.contains("headroom")) {
            if (!p["headroom"].is_number()) throw Error(where + ".headroom: expected a number");
            s.headroom = p["headroom"].get<double>();
        }
        if (auto iso = string_at(p, "isolation", where, false); !iso.empty()) {
            if (iso != "vm" && iso != "container")
                throw Error(where + ".isolation: \"" + iso + "\": expected \"vm\" or \"container\"");
            s.isolation = iso;
        }
        if (auto r = string_at(p, "vmRefill", where, false); !r.empty()) {
            if (r != "restore" && r != "boot")
                throw Error(where + ".vmRefill: \"" + r + "\": expected \"restore\" or \"boot\"");
            s.vm_refill = r;
        }
        if (p.contains("reuseCgroups")) {
            if (!p["reuseCgroups"].is_boolean()) throw Error(where + ".reuseCgroups: expected true or false");
            s.reuse_cgroups = p["reuseCgroups"].get<bool>();
        }
        if (auto v = int_at<unsigned>(p, "rateWindowMs", where, 1)) s.rate_window_ms = *v;
        if (auto v = int_at<unsigned>(p, "decayMs", where, 1)) s.decay_ms = *v;
        check_sizing(s, where + ".", [](const char* f) { return std::string(f); });
        if (p.contains("budget")) {
            std::string bw = where + ".budget";
            const json& b = object_at(p["budget"], bw);
            only_keys(b, bw, {"memory", "cpuQuota", "cpuPeriod", "cpuWeight", "pids"});
            s.budget.memory_max = int_at<int64_t>(b, "memory", bw, -1);
            s.budget.cpu_quota = int_at<int64_t>(b, "cpuQuota", bw, -1);
            s.budget.cpu_period = int_at<uint64_t>(b, "cpuPeriod", bw, 1);
            s.budget.cpu_weight = int_at<uint64_t>(b, "cpuWeight", bw, 1);
            s.budget.pids_max = int_at<int64_t>(b, "pids", bw, -1);
        }
        o.pools.push_back(std::move(s));
    }
    return o;
}

void check_metrics_address(const std::string& address) { (void)metrics::parse_address(address); }

void check_sizing(const PoolSpec& s, const std::string& where, const std::function<std::string(const char*)>& name) {
    if (s.max_idle && s.max_idle > s.max_total)
        throw Error(where + name("maxIdle") + ": " + std::to_string(s.max_idle) + " is more than " + name("maxTotal") +
                    " " + std::to_string(s.max_total));
    if (s.max_idle && s.min_idle > s.max_idle)
        throw Error(where + name("minIdle") + ": " + std::to_string(s.min_idle) + " is more than " + name("maxIdle") +
                    " " + std::to_string(s.max_idle));
    // Below 1 the pool plans for fewer arrivals than it measures; above 100 it is a typo.
    if (!(s.headroom >= 1 && s.headroom <= 100)) {
        char got[32];
        std::snprintf(got, sizeof got, "%g", s.headroom);
        throw Error(where + name("headroom") + ": must be between 1 and 100, got " + got);
    }
}

DaemonOptions load_config(const std::string& path) {
    std::string text = read_file(path, kMaxJsonDocument);
    check_json_bounds(text, path);
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw Error(path + ": not valid JSON");
    return parse_config(j, path);
}

}  // namespace tarn::pool
