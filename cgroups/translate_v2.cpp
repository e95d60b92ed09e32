// linux.resources -> cgroup v2 file writes. Pure: the directory is only described
// (its files and controllers), never touched.
#include <algorithm>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

std::string controllers_text(const DirInfo& d) {
    std::string s;
    for (const auto& c : d.controllers) s += (s.empty() ? "" : " ") + c;
    return s.empty() ? "none" : s;
}

struct V2 {
    const DirInfo& dir;
    bool unified;  // hybrid: the writes go to the cgroup2 hierarchy
    std::vector<Write>& out;

    void need(const std::string& controller, const std::string& field) const {
        if (controller == "cgroup" || dir.controllers.count(controller)) return;
        throw Error(field + ": the " + controller +
                    " controller is not available (cgroup.controllers: " + controllers_text(dir) + ")");
    }
    bool has(const std::string& file) const { return dir.files.count(file) > 0; }
    void add(const std::string& controller, std::string file, std::string value, std::string field) {
        need(controller, field);
        out.push_back(Write{controller, std::move(file), std::move(value), std::move(field), unified, false});
    }
};

// "max" for -1, the number for >= 0, an error for anything below -1.
std::string limit_or_max(int64_t v, const std::string& field) {
    if (v == -1) return "max";
    if (v < -1) throw Error(field + ": invalid value " + std::to_string(v) + " (use -1 for unlimited)");
    return std::to_string(v);
}

void memory(V2& t, const oci::Memory& m) {
    const std::string f = kResourcesField + "memory.";
    int64_t limit = m.limit.value_or(0);
    // A limit of 0 means "not set", as for runc and Docker: writing 0 would make the
    // container unable to run at all.
    if (limit != 0) t.add("memory", "memory.max", limit_or_max(limit, f + "limit"), f + "limit");

    // OCI swap is memory+swap (the v1 memsw knob); memory.swap.max is swap alone.
    std::optional<std::string> swap;
    int64_t s = m.swap.value_or(0);
    if (s == 0) {
        // Unlimited memory with swap unset means unlimited swap too (v1 behaviour).
        if (limit == -1) swap = "max";
    } else if (s == -1) {
        swap = "max";
    } else if (s < -1) {
        throw Error(f + "swap: invalid value " + std::to_string(s) + " (use -1 for unlimited)");
    } else if (limit == -1) {
        swap = std::to_string(s);  // nothing to subtract from
    } else if (limit == 0) {
        throw Error(f + "swap: cannot limit memory+swap without memory.limit");
    } else if (s < limit) {
        throw Error(f + "swap: must be >= memory.limit (swap " + std::to_string(s) + " < limit " +
                    std::to_string(limit) + ")");
    } else {
        swap = std::to_string(s - limit);
    }
    if (swap) {
        if (t.has("memory.swap.max")) {
            t.add("memory", "memory.swap.max", *swap, f + "swap");
        } else if (*swap != "max" && *swap != "0") {
            // Without swap accounting (CONFIG_MEMCG_SWAP off or swapaccount=0) a
            // request for no or unlimited swap is already what happens.
            t.need("memory", f + "swap");
            throw Error(f + "swap: swap accounting is not available (no memory.swap.max)");
        }
    }

    if (m.reservation)
        t.add("memory", "memory.low", limit_or_max(*m.reservation, f + "reservation"), f + "reservation");

    // Explicit errors, as crun gives them, rather than silently dropping a request.
    if (m.swappiness) throw Error(f + "swappiness: not supported on cgroup v2");
    if (m.disable_oom_killer.value_or(false))
        throw Error(f + "disableOOMKiller: not supported on cgroup v2 (the OOM killer cannot be turned off)");
    if (m.use_hierarchy && !*m.use_hierarchy)
        throw Error(f + "useHierarchy: cgroup v2 is always hierarchical");
    // kernel and kernelTCP are deprecated by the runtime-spec; v2 charges kernel
    // memory to memory.max anyway. Ignored, like runc does.
}

void cpu(V2& t, const oci::Cpu& c) {
    const std::string f = kResourcesField + "cpu.";
    // shares 0 means "unset" (Docker).
    if (c.shares && *c.shares != 0)
        t.add("cpu", "cpu.weight", std::to_string(shares_to_weight(*c.shares)), f + "shares");
    if (c.idle) t.add("cpu", "cpu.idle", std::to_string(*c.idle), f + "idle");

    int64_t quota = c.quota.value_or(0);
    uint64_t period = c.period.value_or(0);
    if (quota < -1)
        throw Error(f + "quota: invalid value " + std::to_string(quota) + " (use -1 for unlimited)");
    if (quota != 0 || period != 0) {
        // "$MAX $PERIOD"; the period may be left out to keep the current one.
        std::string v = quota > 0 ? std::to_string(quota) : "max";
        if (period != 0) v += " " + std::to_string(period);
        t.add("cpu", "cpu.max", v, f + (quota != 0 ? "quota" : "period"));
    }
    if (c.burst) {
        if (*c.burst < 0) throw Error(f + "burst: invalid value " + std::to_string(*c.burst));
        t.add("cpu", "cpu.max.burst", std::to_string(*c.burst), f + "burst");
    }
    if (c.realtime_runtime.value_or(0) != 0) throw Error(f + "realtimeRuntime: not supported on cgroup v2");
    if (c.realtime_period.value_or(0) != 0) throw Error(f + "realtimePeriod: not supported on cgroup v2");
    if (!c.cpus.empty()) t.add("cpuset", "cpuset.cpus", c.cpus, f + "cpus");
    if (!c.mems.empty()) t.add("cpuset", "cpuset.mems", c.mems, f + "mems");
}

void pids(V2& t, const oci::Pids& p) {
    if (!p.limit) return;
    t.add("pids", "pids.max", *p.limit > 0 ? std::to_string(*p.limit) : "max",
          kResourcesField + "pids.limit");
}

std::string dev(int64_t major, int64_t minor) {
    return std::to_string(major) + ":" + std::to_string(minor);
}

void block_io(V2& t, const oci::BlockIo& b) {
    const std::string f = kResourcesField + "blockIO.";
    // BFQ takes the v1 range (1..1000) unchanged; io.weight (iocost) wants 1..10000.
    const bool bfq = t.has("io.bfq.weight");
    auto weight_value = [&](uint16_t w, const std::string& field) {
        if (bfq) return std::to_string(uint64_t{w});
        if (w < 10 || w > 1000)
            throw Error(field + ": must be between 10 and 1000, got " + std::to_string(uint64_t{w}));
        return std::to_string(blkio_weight_to_io_weight(w));
    };
    auto weight_file = [&](const std::string& field) {
        t.need("io", field);
        if (bfq) return std::string("io.bfq.weight");
        if (t.has("io.weight")) return std::string("io.weight");
        throw Error(field +
                    ": no io weight file (neither io.bfq.weight nor io.weight: no weight-based I/O "
                    "scheduler or io.cost)");
    };
    if (b.weight && *b.weight != 0) {
        std::string file = weight_file(f + "weight");
        t.add("io", file, weight_value(*b.weight, f + "weight"), f + "weight");
    }
    if (b.leaf_weight && *b.leaf_weight != 0) throw Error(f + "leafWeight: not supported on cgroup v2");
    for (size_t i = 0; i < b.weight_device.size(); ++i) {
        const auto& d = b.weight_device[i];
        std::string field = indexed(f + "weightDevice", i);
        if (d.leaf_weight) throw Error(field + ".leafWeight: not supported on cgroup v2");
        if (!d.weight) continue;
        std::string file = weight_file(field + ".weight");
        t.add("io", file, dev(d.major, d.minor) + " " + weight_value(*d.weight, field + ".weight"),
              field + ".weight");
    }
    struct Kind {
        const std::vector<oci::ThrottleDevice>& list;
        const char* name;
        const char* key;
    };
    const Kind kinds[] = {{b.throttle_read_bps_device, "throttleReadBpsDevice", "rbps"},
                          {b.throttle_write_bps_device, "throttleWriteBpsDevice", "wbps"},
                          {b.throttle_read_iops_device, "throttleReadIOPSDevice", "riops"},
                          {b.throttle_write_iops_device, "throttleWriteIOPSDevice", "wiops"}};
    for (const auto& k : kinds) {
        for (size_t i = 0; i < k.list.size(); ++i) {
            const auto& d = k.list[i];
            // A rate of 0 removes a v1 throttle rule; "max" is v2's way to say it.
            std::string rate = d.rate == 0 ? "max" : std::to_string(d.rate);
            t.add("io", "io.max", dev(d.major, d.minor) + " " + k.key + "=" + rate, indexed(f + k.name, i));
        }
    }
}

void rdma(V2& t, const std::map<std::string, oci::Rdma>& r) {
    for (const auto& [device, limits] : r) {
        std::string field = kResourcesField + "rdma[\"" + device + "\"]";
        if (device.empty() || device.find_first_of(" \t\n") != std::string::npos)
            throw Error(field + ": invalid device name");
        if (!limits.hca_handles && !limits.hca_objects) continue;
        std::string v = device;
        if (limits.hca_handles) v += " hca_handle=" + std::to_string(uint64_t{*limits.hca_handles});
        if (limits.hca_objects) v += " hca_object=" + std::to_string(uint64_t{*limits.hca_objects});
        t.add("rdma", "rdma.max", v, field);
    }
}

}  // namespace

std::string check_page_size(const std::string& page_size, const std::string& field) {
    // The kernel's names: a number and KB/MB/GB ("2MB", "1GB", "64KB").
    bool ok =
        page_size.size() >= 3 && page_size.compare(page_size.size() - 1, 1, "B") == 0 &&
        std::string_view("KMG").find(page_size[page_size.size() - 2]) != std::string_view::npos &&
        std::all_of(page_size.begin(), page_size.end() - 2, [](char c) { return c >= '0' && c <= '9'; });
    if (!ok)
        throw Error(field + ".pageSize: invalid page size \"" + page_size + "\" (expected e.g. \"2MB\")");
    return page_size;
}

void translate_hugetlb_v2(const std::vector<oci::HugepageLimit>& limits, const DirInfo& dir, bool unified,
                          std::vector<Write>& out) {
    V2 t{dir, unified, out};
    for (size_t i = 0; i < limits.size(); ++i) {
        std::string field = indexed(kResourcesField + "hugepageLimits", i);
        std::string size = check_page_size(limits[i].page_size, field);
        t.need("hugetlb", field);
        std::string file = "hugetlb." + size + ".max";
        if (!t.has(file))
            throw Error(field + ": page size " + size + " is not supported here (no " + file + ")");
        t.add("hugetlb", file, std::to_string(limits[i].limit), field + ".limit");
        // Reservations (kernel 5.7+) are limited too, as runc does, so a mapping
        // cannot reserve pages it would later be refused.
        std::string rsvd = "hugetlb." + size + ".rsvd.max";
        if (t.has(rsvd)) t.add("hugetlb", rsvd, std::to_string(limits[i].limit), field + ".limit");
    }
}

void translate_rdma_v2(const std::map<std::string, oci::Rdma>& r, const DirInfo& dir, bool unified,
                       std::vector<Write>& out) {
    V2 t{dir, unified, out};
    rdma(t, r);
}

void translate_unified(const std::map<std::string, std::string>& unified, const DirInfo& dir, bool to_unified,
                       std::vector<Write>& out) {
    // Files that move processes or change the tree are not resource settings.
    static const std::set<std::string> kRefused = {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control",
                                                   "cgroup.kill",  "cgroup.type",    "cgroup.freeze"};
    V2 t{dir, to_unified, out};
    for (const auto& [key, value] : unified) {
        std::string field = kResourcesField + "unified[\"" + key + "\"]";
        if (key.empty() || key == "." || key == ".." || key.find('/') != std::string::npos ||
            key.find('\0') != std::string::npos)
            throw Error(field + ": must be a plain file name of the cgroup");
        size_t dot = key.find('.');
        if (dot == std::string::npos || dot == 0)
            throw Error(field + ": not a cgroup file name (expected <controller>.<file>)");
        if (kRefused.count(key)) throw Error(field + ": not a resource setting");
        std::string controller = key.substr(0, dot);
        t.need(controller, field);
        if (!t.has(key)) throw Error(field + ": no such file in the cgroup");
        // Multi-line values (io.max for several devices) go one line per write.
        for (std::string_view line : lines(value))
            if (!line.empty()) t.add(controller, key, std::string(line), field);
    }
}

std::vector<Write> translate_v2(const oci::Resources& r, const DirInfo& dir) {
    std::vector<Write> out;
    V2 t{dir, false, out};
    if (r.memory) memory(t, *r.memory);
    if (r.cpu) cpu(t, *r.cpu);
    if (r.pids) pids(t, *r.pids);
    if (r.block_io) block_io(t, *r.block_io);
    translate_hugetlb_v2(r.hugepage_limits, dir, false, out);
    if (r.network && (r.network->class_id || !r.network->priorities.empty()))
        throw Error(kResourcesField +
                    "network: not supported on cgroup v2 (net_cls and net_prio are v1 controllers)");
    rdma(t, r.rdma);
    // Last, so that a unified entry overrides the same file set from a field.
    translate_unified(r.unified, dir, false, out);
    return out;
}

std::map<std::string, std::string> required_controllers_v2(const oci::Resources& r) {
    std::map<std::string, std::string> need;
    auto add = [&](const std::string& c, const std::string& field) { need.emplace(c, field); };
    if (const auto& m = r.memory) {
        if (m->limit.value_or(0) != 0) add("memory", kResourcesField + "memory.limit");
        if (m->reservation) add("memory", kResourcesField + "memory.reservation");
        if (m->swap.value_or(0) != 0) add("memory", kResourcesField + "memory.swap");
    }
    if (const auto& c = r.cpu) {
        if (c->shares.value_or(0) != 0) add("cpu", kResourcesField + "cpu.shares");
        if (c->quota.value_or(0) != 0) add("cpu", kResourcesField + "cpu.quota");
        if (c->period.value_or(0) != 0) add("cpu", kResourcesField + "cpu.period");
        if (c->burst) add("cpu", kResourcesField + "cpu.burst");
        if (c->idle) add("cpu", kResourcesField + "cpu.idle");
        if (!c->cpus.empty()) add("cpuset", kResourcesField + "cpu.cpus");
        if (!c->mems.empty()) add("cpuset", kResourcesField + "cpu.mems");
    }
    if (r.pids && r.pids->limit) add("pids", kResourcesField + "pids.limit");
    if (const auto& b = r.block_io) {
        if (b->weight.value_or(0) != 0) add("io", kResourcesField + "blockIO.weight");
        if (!b->weight_device.empty()) add("io", kResourcesField + "blockIO.weightDevice");
        if (!b->throttle_read_bps_device.empty() || !b->throttle_write_bps_device.empty() ||
            !b->throttle_read_iops_device.empty() || !b->throttle_write_iops_device.empty())
            add("io", kResourcesField + "blockIO");
    }
    if (!r.hugepage_limits.empty()) add("hugetlb", kResourcesField + "hugepageLimits");
    if (!r.rdma.empty()) add("rdma", kResourcesField + "rdma");
    for (const auto& [key, value] : r.unified) {
        size_t dot = key.find('.');
        if (dot == std::string::npos || dot == 0) continue;  // apply() reports it
        std::string c = key.substr(0, dot);
        if (c != "cgroup") add(c, kResourcesField + "unified[\"" + key + "\"]");
    }
    return need;
}

}  // namespace tarn::cgroups::detail
