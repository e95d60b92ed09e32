// Reading usage counters (v1 and v2) and printing them the way runc does.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cgroups/detail.hpp"

namespace tarn::cgroups {

namespace detail {

namespace {

uint64_t get(const std::map<std::string, uint64_t>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? 0 : it->second;
}

std::map<std::string, uint64_t> keyed(const std::string& dir, std::string_view file) {
    auto text = read_if_exists(dir, file);
    return text ? parse_flat_keyed(*text) : std::map<std::string, uint64_t>{};
}

std::optional<uint64_t> number(const std::string& dir, const std::string& file) {
    auto text = read_if_exists(dir, file);
    if (!text) return std::nullopt;
    return parse_uint_or_max(*text, "cgroup " + dir + ": " + file);
}

std::vector<uint64_t> numbers(const std::string& dir, const std::string& file) {
    std::vector<uint64_t> out;
    if (auto text = read_if_exists(dir, file))
        for (const auto& w : split_words(*text))
            out.push_back(parse_uint_or_max(w, "cgroup " + dir + ": " + file));
    return out;
}

bool parse_dev(std::string_view s, uint64_t& major, uint64_t& minor) {
    size_t colon = s.find(':');
    if (colon == std::string_view::npos) return false;
    try {
        major = std::stoull(std::string(s.substr(0, colon)));
        minor = std::stoull(std::string(s.substr(colon + 1)));
    } catch (const std::exception&) {
        return false;
    }
    return true;
}

// "hugetlb.2MB.current" -> "2MB" (and not the ".rsvd." files).
std::vector<std::string> hugetlb_sizes(const std::string& dir, const std::string& suffix) {
    std::vector<std::string> out;
    const std::string prefix = "hugetlb.";
    for (const auto& f : list_files(dir)) {
        if (f.size() <= prefix.size() + suffix.size() || f.compare(0, prefix.size(), prefix) != 0 ||
            f.compare(f.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        std::string size = f.substr(prefix.size(), f.size() - prefix.size() - suffix.size());
        if (size.find('.') == std::string::npos) out.push_back(size);
    }
    return out;
}

void hugetlb_v2(const std::string& dir, Stats& s) {
    for (const auto& size : hugetlb_sizes(dir, ".current")) {
        HugetlbStats h;
        h.usage = number(dir, "hugetlb." + size + ".current").value_or(0);
        h.limit = number(dir, "hugetlb." + size + ".max").value_or(UINT64_MAX);
        h.failcnt = get(keyed(dir, "hugetlb." + size + ".events"), "max");
        s.hugetlb[size] = h;
    }
}

// v1 blkio files: "8:0 Read 4096" lines and a final "Total N".
std::vector<BlkioEntry> blkio_v1(const std::string& dir, std::initializer_list<const char*> files) {
    for (const char* file : files) {
        auto text = read_if_exists(dir, file);
        if (!text) continue;
        std::vector<BlkioEntry> out;
        for (std::string_view line : lines(*text)) {
            auto w = split_words(line);
            BlkioEntry e;
            if (w.size() != 3 || !parse_dev(w[0], e.major, e.minor)) continue;
            e.op = w[1];
            e.value = parse_uint_or_max(w[2], "cgroup " + dir + ": " + file);
            out.push_back(std::move(e));
        }
        // An empty file means this policy saw no I/O; the next one may have.
        if (!out.empty()) return out;
    }
    return {};
}

}  // namespace

Stats read_stats_v2(const std::string& dir) {
    Stats s;
    auto cpu = keyed(dir, "cpu.stat");
    s.cpu.total_ns = get(cpu, "usage_usec") * 1000;
    s.cpu.user_ns = get(cpu, "user_usec") * 1000;
    s.cpu.kernel_ns = get(cpu, "system_usec") * 1000;
    s.cpu.periods = get(cpu, "nr_periods");
    s.cpu.throttled_periods = get(cpu, "nr_throttled");
    s.cpu.throttled_ns = get(cpu, "throttled_usec") * 1000;

    if (auto current = number(dir, "memory.current")) {
        auto& m = s.memory;
        m.usage.usage = *current;
        m.usage.limit = number(dir, "memory.max").value_or(UINT64_MAX);
        m.usage.max_usage = number(dir, "memory.peak").value_or(0);  // kernel 5.19+
        auto events = keyed(dir, "memory.events");
        m.usage.failcnt = get(events, "max");
        m.oom = get(events, "oom");
        m.oom_kill = get(events, "oom_kill");
        m.raw = keyed(dir, "memory.stat");
        m.cache = get(m.raw, "file");
        // runc reports memory+swap here, as v1 does.
        if (auto swap = number(dir, "memory.swap.current")) {
            uint64_t swap_max = number(dir, "memory.swap.max").value_or(UINT64_MAX);
            m.swap.usage = *swap + m.usage.usage;
            m.swap.limit = (swap_max == UINT64_MAX || m.usage.limit == UINT64_MAX) ? UINT64_MAX
                                                                                   : swap_max + m.usage.limit;
        }
    }

    s.pids.current = number(dir, "pids.current").value_or(0);
    uint64_t pmax = number(dir, "pids.max").value_or(UINT64_MAX);
    s.pids.limit = pmax == UINT64_MAX ? 0 : pmax;

    // io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
    if (auto text = read_if_exists(dir, "io.stat")) {
        for (std::string_view line : lines(*text)) {
            auto w = split_words(line);
            uint64_t major, minor;
            if (w.empty() || !parse_dev(w[0], major, minor)) continue;
            for (size_t k = 1; k < w.size(); ++k) {
                size_t eq = w[k].find('=');
                if (eq == std::string::npos) continue;
                std::string key = w[k].substr(0, eq);
                uint64_t v = parse_uint_or_max(w[k].substr(eq + 1), "cgroup " + dir + ": io.stat");
                if (key == "rbytes") s.blkio.service_bytes.push_back({major, minor, "Read", v});
                if (key == "wbytes") s.blkio.service_bytes.push_back({major, minor, "Write", v});
                if (key == "rios") s.blkio.serviced.push_back({major, minor, "Read", v});
                if (key == "wios") s.blkio.serviced.push_back({major, minor, "Write", v});
            }
        }
    }

    hugetlb_v2(dir, s);
    return s;
}

namespace {

// A limit file's value: none for "max" (v2) or v1's "no limit" (a number near 2^63).
std::optional<uint64_t> limit_of(std::optional<uint64_t> v) {
    if (!v || *v >= (1ULL << 60)) return std::nullopt;
    return v;
}

}  // namespace

Usage read_usage_v2(const std::string& dir) {
    Usage u;
    u.memory = number(dir, "memory.current");
    if (u.memory) u.memory_limit = limit_of(number(dir, "memory.max"));
    u.pids = number(dir, "pids.current");
    if (u.pids) u.pids_limit = limit_of(number(dir, "pids.max"));
    return u;
}

Usage read_usage_v1(const std::string& memory, const std::string& pids) {
    Usage u;
    if (!memory.empty()) {
        u.memory = number(memory, "memory.usage_in_bytes");
        if (u.memory) u.memory_limit = limit_of(number(memory, "memory.limit_in_bytes"));
    }
    if (!pids.empty()) {
        u.pids = number(pids, "pids.current");
        if (u.pids) u.pids_limit = limit_of(number(pids, "pids.max"));
    }
    return u;
}

Stats read_stats_v1(const std::map<std::string, std::string>& dirs, const std::string& unified) {
    Stats s;
    auto dir_of = [&](const std::string& c) -> const std::string* {
        auto it = dirs.find(c);
        return it == dirs.end() ? nullptr : &it->second;
    };

    if (const std::string* d = dir_of("cpuacct")) {
        s.cpu.total_ns = number(*d, "cpuacct.usage").value_or(0);
        s.cpu.percpu_ns = numbers(*d, "cpuacct.usage_percpu");
        s.cpu.percpu_kernel_ns = numbers(*d, "cpuacct.usage_percpu_sys");
        s.cpu.percpu_user_ns = numbers(*d, "cpuacct.usage_percpu_user");
        auto user = number(*d, "cpuacct.usage_user"), sys = number(*d, "cpuacct.usage_sys");
        if (user && sys) {
            s.cpu.user_ns = *user;
            s.cpu.kernel_ns = *sys;
        } else {
            // Older kernels: cpuacct.stat in clock ticks.
            auto stat = keyed(*d, "cpuacct.stat");
            uint64_t hz = static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
            if (hz == 0) hz = 100;
            s.cpu.user_ns = get(stat, "user") * (1000000000 / hz);
            s.cpu.kernel_ns = get(stat, "system") * (1000000000 / hz);
        }
    }
    if (const std::string* d = dir_of("cpu")) {
        auto stat = keyed(*d, "cpu.stat");
        s.cpu.periods = get(stat, "nr_periods");
        s.cpu.throttled_periods = get(stat, "nr_throttled");
        s.cpu.throttled_ns = get(stat, "throttled_time");
    }

    if (const std::string* d = dir_of("memory")) {
        auto entry = [&](const std::string& prefix) {
            MemoryEntry e;
            e.usage = number(*d, prefix + "usage_in_bytes").value_or(0);
            e.max_usage = number(*d, prefix + "max_usage_in_bytes").value_or(0);
            e.limit = number(*d, prefix + "limit_in_bytes").value_or(0);
            e.failcnt = number(*d, prefix + "failcnt").value_or(0);
            return e;
        };
        auto& m = s.memory;
        m.usage = entry("memory.");
        m.swap = entry("memory.memsw.");
        m.kernel = entry("memory.kmem.");
        m.kernel_tcp = entry("memory.kmem.tcp.");
        m.raw = keyed(*d, "memory.stat");
        m.cache = get(m.raw, "cache");
        m.oom_kill = get(keyed(*d, "memory.oom_control"), "oom_kill");
    }

    if (const std::string* d = dir_of("pids")) {
        s.pids.current = number(*d, "pids.current").value_or(0);
        uint64_t pmax = number(*d, "pids.max").value_or(UINT64_MAX);
        s.pids.limit = pmax == UINT64_MAX ? 0 : pmax;
    }

    if (const std::string* d = dir_of("blkio")) {
        // CFQ (gone since 5.0), then BFQ, then the throttling policy, which counts
        // all I/O whether or not a throttle is set.
        s.blkio.service_bytes =
            blkio_v1(*d, {"blkio.io_service_bytes_recursive", "blkio.bfq.io_service_bytes_recursive",
                          "blkio.throttle.io_service_bytes_recursive"});
        s.blkio.serviced = blkio_v1(*d, {"blkio.io_serviced_recursive", "blkio.bfq.io_serviced_recursive",
                                         "blkio.throttle.io_serviced_recursive"});
    }

    if (const std::string* d = dir_of("hugetlb")) {
        for (const auto& size : hugetlb_sizes(*d, ".usage_in_bytes")) {
            std::string p = "hugetlb." + size + ".";
            HugetlbStats h;
            h.usage = number(*d, p + "usage_in_bytes").value_or(0);
            h.max_usage = number(*d, p + "max_usage_in_bytes").value_or(0);
            h.failcnt = number(*d, p + "failcnt").value_or(0);
            h.limit = number(*d, p + "limit_in_bytes").value_or(0);
            s.hugetlb[size] = h;
        }
    } else if (!unified.empty()) {
        hugetlb_v2(unified, s);
    }
    return s;
}

}  // namespace detail

nlohmann::json to_runc_json(const Stats& s, std::string_view id) {
    using nlohmann::json;
    // runc's struct tags: "omitempty" numbers vanish when zero, the others stay.
    auto put = [](json& o, const char* key, uint64_t v) {
        if (v) o[key] = v;
    };
    auto list = [](json& o, const char* key, const std::vector<uint64_t>& v) {
        if (!v.empty()) o[key] = v;
    };

    json usage = json::object();
    put(usage, "total", s.cpu.total_ns);
    list(usage, "percpu", s.cpu.percpu_ns);
    list(usage, "percpu_kernel", s.cpu.percpu_kernel_ns);
    list(usage, "percpu_user", s.cpu.percpu_user_ns);
    usage["kernel"] = s.cpu.kernel_ns;
    usage["user"] = s.cpu.user_ns;
    json throttling = json::object();
    put(throttling, "periods", s.cpu.periods);
    put(throttling, "throttledPeriods", s.cpu.throttled_periods);
    put(throttling, "throttledTime", s.cpu.throttled_ns);

    json cpuset = {{"cpu_exclusive", 0},   {"mem_hardwall", 0},       {"mem_exclusive", 0},
                   {"memory_migrate", 0},  {"memory_spread_page", 0}, {"memory_spread_slab", 0},
                   {"memory_pressure", 0}, {"sched_load_balance", 0}, {"sched_relax_domain_level", 0}};

    auto entry = [&](const MemoryEntry& e) {
        json o = {{"limit", e.limit}};
        put(o, "usage", e.usage);
        put(o, "max", e.max_usage);
        o["failcnt"] = e.failcnt;
        return o;
    };
    json memory = json::object();
    put(memory, "cache", s.memory.cache);
    memory["usage"] = entry(s.memory.usage);
    memory["swap"] = entry(s.memory.swap);
    memory["kernel"] = entry(s.memory.kernel);
    memory["kernelTCP"] = entry(s.memory.kernel_tcp);
    if (!s.memory.raw.empty()) memory["raw"] = s.memory.raw;

    json pids = json::object();
    put(pids, "current", s.pids.current);
    put(pids, "limit", s.pids.limit);

    auto entries = [&](const std::vector<BlkioEntry>& v) {
        json a = json::array();
        for (const auto& e : v) {
            json o = json::object();
            put(o, "major", e.major);
            put(o, "minor", e.minor);
            if (!e.op.empty()) o["op"] = e.op;
            put(o, "value", e.value);
            a.push_back(std::move(o));
        }
        return a;
    };
    json blkio = json::object();
    if (!s.blkio.service_bytes.empty()) blkio["ioServiceBytesRecursive"] = entries(s.blkio.service_bytes);
    if (!s.blkio.serviced.empty()) blkio["ioServicedRecursive"] = entries(s.blkio.serviced);

    json hugetlb = json::object();
    for (const auto& [size, h] : s.hugetlb) {
        json o = json::object();
        put(o, "usage", h.usage);
        put(o, "max", h.max_usage);
        o["failcnt"] = h.failcnt;
        hugetlb[size] = std::move(o);
    }

    json data = {{"cpu", {{"usage", usage}, {"throttling", throttling}}},
                 {"cpuset", cpuset},
                 {"memory", memory},
                 {"pids", pids},
                 {"blkio", blkio},
                 {"hugetlb", hugetlb},
                 {"intel_rdt", json::object()},
                 {"network_interfaces", nullptr}};
    return json{{"type", "stats"}, {"id", std::string(id)}, {"data", std::move(data)}};
}

}  // namespace tarn::cgroups
