// linux.resources -> cgroup v1 file writes (and, on hybrid hosts, the cgroup2
// writes for what only the unified hierarchy offers). Pure, like translate_v2.
#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

struct V1 {
    const V1Layout& layout;
    std::vector<Write>& out;

    bool mounted(const std::string& c) const { return layout.mounted(c); }
    void need(const std::string& c, const std::string& field) const {
        if (!mounted(c)) throw Error(field + ": the " + c + " controller is not mounted");
    }
    bool has(const std::string& c, const std::string& file) const { return layout.files_of(c).count(file) > 0; }
    void add(const std::string& c, std::string file, std::string value, std::string field,
             bool retry = false) {
        need(c, field);
        out.push_back(Write{c, std::move(file), std::move(value), std::move(field), false, retry});
    }
};

void memory(V1& t, const oci::Memory& m) {
    const std::string f = kResourcesField + "memory.";
    int64_t limit = m.limit.value_or(0);
    if (limit < -1)
        throw Error(f + "limit: invalid value " + std::to_string(limit) + " (use -1 for unlimited)");
    // The limit may not exceed the current memory+swap limit and memory+swap may not
    // go below the current limit: which write must come first depends on the
    // values in place, so the limit is retried after the swap on EINVAL.
    if (limit != 0) t.add("memory", "memory.limit_in_bytes", std::to_string(limit), f + "limit", true);

    const std::string memsw = "memory.memsw.limit_in_bytes";
    int64_t s = m.swap.value_or(0);
    if (s < -1) throw Error(f + "swap: invalid value " + std::to_string(s) + " (use -1 for unlimited)");
    if (s == -1 || (s == 0 && limit == -1)) {
        if (t.has("memory", memsw)) t.add("memory", memsw, "-1", f + "swap");
    } else if (s > 0) {
        if (limit > 0 && s < limit)
            throw Error(f + "swap: must be >= memory.limit (swap " + std::to_string(s) + " < limit " +
                        std::to_string(limit) + ")");
        t.need("memory", f + "swap");
        if (!t.has("memory", memsw))
            throw Error(f + "swap: swap accounting is not enabled (no " + memsw +
                        "; boot with swapaccount=1)");
        t.add("memory", memsw, std::to_string(s), f + "swap");
    }

    if (m.reservation)
        t.add("memory", "memory.soft_limit_in_bytes", std::to_string(*m.reservation), f + "reservation");
    // Deprecated by the runtime-spec and gone from recent kernels: written where the
    // kernel still has the file, otherwise ignored.
    if (m.kernel && t.has("memory", "memory.kmem.limit_in_bytes"))
        t.add("memory", "memory.kmem.limit_in_bytes", std::to_string(*m.kernel), f + "kernel");
    if (m.kernel_tcp && t.has("memory", "memory.kmem.tcp.limit_in_bytes"))
        t.add("memory", "memory.kmem.tcp.limit_in_bytes", std::to_string(*m.kernel_tcp), f + "kernelTCP");
    if (m.swappiness) {
        if (*m.swappiness > 100)
            throw Error(f + "swappiness: must be between 0 and 100, got " + std::to_string(*m.swappiness));
        t.add("memory", "memory.swappiness", std::to_string(*m.swappiness), f + "swappiness");
    }
    if (m.disable_oom_killer)
        t.add("memory", "memory.oom_control", *m.disable_oom_killer ? "1" : "0", f + "disableOOMKiller");
    if (m.use_hierarchy)
        t.add("memory", "memory.use_hierarchy", *m.use_hierarchy ? "1" : "0", f + "useHierarchy");
}

void cpu(V1& t, const oci::Cpu& c) {
    const std::string f = kResourcesField + "cpu.";
    if (c.shares.value_or(0) != 0) t.add("cpu", "cpu.shares", std::to_string(*c.shares), f + "shares");
    // A shorter period can be refused while the old quota is in place (the parent's
    // bandwidth would be exceeded): retried after the quota, as runc and crun do.
    if (c.period.value_or(0) != 0)
        t.add("cpu", "cpu.cfs_period_us", std::to_string(*c.period), f + "period", true);
    int64_t quota = c.quota.value_or(0);
    if (quota < -1)
        throw Error(f + "quota: invalid value " + std::to_string(quota) + " (use -1 for unlimited)");
    if (quota != 0) t.add("cpu", "cpu.cfs_quota_us", std::to_string(quota), f + "quota");
    if (c.burst) {
        if (*c.burst < 0) throw Error(f + "burst: invalid value " + std::to_string(*c.burst));
        t.add("cpu", "cpu.cfs_burst_us", std::to_string(*c.burst), f + "burst");
    }
    if (c.realtime_period.value_or(0) != 0)
        t.add("cpu", "cpu.rt_period_us", std::to_string(*c.realtime_period), f + "realtimePeriod");
    if (c.realtime_runtime.value_or(0) != 0)
        t.add("cpu", "cpu.rt_runtime_us", std::to_string(*c.realtime_runtime), f + "realtimeRuntime");
    if (c.idle) t.add("cpu", "cpu.idle", std::to_string(*c.idle), f + "idle");
    if (!c.cpus.empty()) t.add("cpuset", "cpuset.cpus", c.cpus, f + "cpus");
    if (!c.mems.empty()) t.add("cpuset", "cpuset.mems", c.mems, f + "mems");
}

std::string dev(int64_t major, int64_t minor) {
    return std::to_string(major) + ":" + std::to_string(minor);
}

void blkio(V1& t, const oci::BlockIo& b) {
    const std::string f = kResourcesField + "blockIO.";
    // CFQ's blkio.weight is gone since 5.0; BFQ names its files blkio.bfq.*.
    auto pick = [&](const std::string& cfq, const std::string& bfq, const std::string& field) {
        t.need("blkio", field);
        if (t.has("blkio", cfq)) return cfq;
        if (t.has("blkio", bfq)) return bfq;
        throw Error(field + ": no " + cfq + " or " + bfq + " (no weight-based I/O scheduler)");
    };
    if (b.weight.value_or(0) != 0)
        t.add("blkio", pick("blkio.weight", "blkio.bfq.weight", f + "weight"),
              std::to_string(uint64_t{*b.weight}), f + "weight");
    if (b.leaf_weight.value_or(0) != 0)
        t.add("blkio", "blkio.leaf_weight", std::to_string(uint64_t{*b.leaf_weight}), f + "leafWeight");
    for (size_t i = 0; i < b.weight_device.size(); ++i) {
        const auto& d = b.weight_device[i];
        std::string field = indexed(f + "weightDevice", i);
        if (d.weight)
            t.add("blkio", pick("blkio.weight_device", "blkio.bfq.weight_device", field + ".weight"),
                  dev(d.major, d.minor) + " " + std::to_string(uint64_t{*d.weight}), field + ".weight");
        if (d.leaf_weight)
            t.add("blkio", "blkio.leaf_weight_device",
                  dev(d.major, d.minor) + " " + std::to_string(uint64_t{*d.leaf_weight}),
                  field + ".leafWeight");
    }
    struct Kind {
        const std::vector<oci::ThrottleDevice>& list;
        const char* name;
        const char* file;
    };
    const Kind kinds[] = {
        {b.throttle_read_bps_device, "throttleReadBpsDevice", "blkio.throttle.read_bps_device"},
        {b.throttle_write_bps_device, "throttleWriteBpsDevice", "blkio.throttle.write_bps_device"},
        {b.throttle_read_iops_device, "throttleReadIOPSDevice", "blkio.throttle.read_iops_device"},
        {b.throttle_write_iops_device, "throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"}};
    for (const auto& k : kinds)
        for (size_t i = 0; i < k.list.size(); ++i)
            t.add("blkio", k.file,
                  dev(k.list[i].major, k.list[i].minor) + " " + std::to_string(k.list[i].rate),
                  indexed(f + k.name, i));
}

void hugetlb(V1& t, const std::vector<oci::HugepageLimit>& limits) {
    if (limits.empty()) return;
    if (!t.mounted("hugetlb")) {
        // Hybrid hosts often have hugetlb only in the cgroup2 hierarchy (this one does).
        if (t.layout.unified && t.layout.unified->controllers.count("hugetlb")) {
            translate_hugetlb_v2(limits, *t.layout.unified, true, t.out);
            return;
        }
        throw Error(kResourcesField +
                    "hugepageLimits: the hugetlb controller is not available (neither mounted as v1 nor "
                    "enabled in the cgroup2 hierarchy)");
    }
    for (size_t i = 0; i < limits.size(); ++i) {
        std::string field = indexed(kResourcesField + "hugepageLimits", i);
        std::string size = check_page_size(limits[i].page_size, field);
        std::string file = "hugetlb." + size + ".limit_in_bytes";
        if (!t.has("hugetlb", file))
            throw Error(field + ": page size " + size + " is not supported here (no " + file + ")");
        t.add("hugetlb", file, std::to_string(limits[i].limit), field + ".limit");
        std::string rsvd = "hugetlb." + size + ".rsvd.limit_in_bytes";
        if (t.has("hugetlb", rsvd)) t.add("hugetlb", rsvd, std::to_string(limits[i].limit), field + ".limit");
    }
}

void network(V1& t, const oci::Network& n) {
    const std::string f = kResourcesField + "network.";
    if (n.class_id) t.add("net_cls", "net_cls.classid", std::to_string(uint64_t{*n.class_id}), f + "classID");
    for (size_t i = 0; i < n.priorities.size(); ++i) {
        const auto& p = n.priorities[i];
        std::string field = indexed(f + "priorities", i);
        if (p.name.empty() || p.name.find_first_of(" \t\n/") != std::string::npos)
            throw Error(field + ".name: invalid interface name \"" + p.name + "\"");
        t.add("net_prio", "net_prio.ifpriomap", p.name + " " + std::to_string(uint64_t{p.priority}), field);
    }
}

void rdma(V1& t, const std::map<std::string, oci::Rdma>& r) {
    if (r.empty()) return;
    if (t.mounted("rdma")) {
        // v1 rdma.max has the v2 syntax.
        DirInfo d{t.layout.files_of("rdma"), {"rdma"}};
        translate_rdma_v2(r, d, false, t.out);
    } else if (t.layout.unified && t.layout.unified->controllers.count("rdma")) {
        translate_rdma_v2(r, *t.layout.unified, true, t.out);
    } else {
        throw Error(kResourcesField + "rdma: the rdma controller is not available");
    }
}

}  // namespace

std::vector<Write> translate_v1(const oci::Resources& r, const V1Layout& layout) {
    std::vector<Write> out;
    V1 t{layout, out};
    if (!r.devices.empty()) {
        t.need("devices", kResourcesField + "devices");
        auto d = translate_devices_v1(r.devices);
        out.insert(out.end(), d.begin(), d.end());
    }
    if (r.memory) memory(t, *r.memory);
    if (r.cpu) cpu(t, *r.cpu);
    if (r.pids && r.pids->limit)
        t.add("pids", "pids.max", *r.pids->limit > 0 ? std::to_string(*r.pids->limit) : "max",
              kResourcesField + "pids.limit");
    if (r.block_io) blkio(t, *r.block_io);
    hugetlb(t, r.hugepage_limits);
    if (r.network) network(t, *r.network);
    rdma(t, r.rdma);
    if (!r.unified.empty()) {
        if (!layout.unified)
            throw Error(kResourcesField +
                        "unified: not supported on a cgroup v1 host (there is no cgroup2 hierarchy)");
        translate_unified(r.unified, *layout.unified, true, out);
    }
    return out;
}

std::map<std::string, std::string> required_controllers_v1(const oci::Resources& r) {
    std::map<std::string, std::string> need;
    auto add = [&](const std::string& c, const std::string& field) { need.emplace(c, field); };
    if (!r.devices.empty()) add("devices", kResourcesField + "devices");
    if (const auto& m = r.memory) {
        if (m->limit.value_or(0) != 0 || m->reservation || m->swap.value_or(0) > 0 || m->swappiness ||
            m->disable_oom_killer || m->use_hierarchy)
            add("memory", kResourcesField + "memory");
    }
    if (const auto& c = r.cpu) {
        if (c->shares.value_or(0) != 0 || c->quota.value_or(0) != 0 || c->period.value_or(0) != 0 ||
            c->burst || c->realtime_period.value_or(0) != 0 || c->realtime_runtime.value_or(0) != 0 ||
            c->idle)
            add("cpu", kResourcesField + "cpu");
        if (!c->cpus.empty() || !c->mems.empty()) add("cpuset", kResourcesField + "cpu.cpus");
    }
    if (r.pids && r.pids->limit) add("pids", kResourcesField + "pids.limit");
    if (const auto& b = r.block_io) {
        if (b->weight.value_or(0) != 0 || b->leaf_weight.value_or(0) != 0 || !b->weight_device.empty() ||
            !b->throttle_read_bps_device.empty() || !b->throttle_write_bps_device.empty() ||
            !b->throttle_read_iops_device.empty() || !b->throttle_write_iops_device.empty())
            add("blkio", kResourcesField + "blockIO");
    }
    if (!r.hugepage_limits.empty()) add("hugetlb", kResourcesField + "hugepageLimits");
    if (r.network && r.network->class_id) add("net_cls", kResourcesField + "network.classID");
    if (r.network && !r.network->priorities.empty()) add("net_prio", kResourcesField + "network.priorities");
    if (!r.rdma.empty()) add("rdma", kResourcesField + "rdma");
    return need;
}

}  // namespace tarn::cgroups::detail
