// Config -> the spec's camelCase JSON. Absent optionals and empty lists are left out, so
// parse_config(to_json_text(c)) == c.
#include "oci/detail.hpp"
#include "oci/json_io.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

namespace {

using detail::json;
using detail::put_if;
using detail::put_list;
using detail::put_map;

json id_mapping_json(const IdMapping& m) {
    return {{"containerID", m.container_id}, {"hostID", m.host_id}, {"size", m.size}};
}

json mount_json(const Mount& m) {
    json j = {{"destination", m.destination}};
    put_if(j, "type", m.type);
    put_if(j, "source", m.source);
    put_if(j, "options", m.options);
    put_list(j, "uidMappings", m.uid_mappings, id_mapping_json);
    put_list(j, "gidMappings", m.gid_mappings, id_mapping_json);
    return j;
}

json hook_json(const Hook& h) {
    json j = {{"path", h.path}};
    put_if(j, "args", h.args);
    put_if(j, "env", h.env);
    put_if(j, "timeout", h.timeout);
    return j;
}

json hooks_json(const Hooks& h) {
    json j = json::object();
    put_list(j, "prestart", h.prestart, hook_json);
    put_list(j, "createRuntime", h.create_runtime, hook_json);
    put_list(j, "createContainer", h.create_container, hook_json);
    put_list(j, "startContainer", h.start_container, hook_json);
    put_list(j, "poststart", h.poststart, hook_json);
    put_list(j, "poststop", h.poststop, hook_json);
    return j;
}

json device_json(const Device& d) {
    json j = {{"type", d.type}, {"path", d.path}};
    // A FIFO has no device number; its major/minor are optional and usually left out.
    if (d.type != "p" || d.major != 0 || d.minor != 0) {
        j["major"] = d.major;
        j["minor"] = d.minor;
    }
    put_if(j, "fileMode", d.file_mode);
    put_if(j, "uid", d.uid);
    put_if(j, "gid", d.gid);
    return j;
}

json device_rule_json(const DeviceCgroupRule& d) {
    json j = {{"allow", d.allow}};
    put_if(j, "type", d.type);
    put_if(j, "major", d.major);
    put_if(j, "minor", d.minor);
    put_if(j, "access", d.access);
    return j;
}

json memory_json(const Memory& m) {
    json j = json::object();
    put_if(j, "limit", m.limit);
    put_if(j, "reservation", m.reservation);
    put_if(j, "swap", m.swap);
    put_if(j, "kernel", m.kernel);
    put_if(j, "kernelTCP", m.kernel_tcp);
    put_if(j, "swappiness", m.swappiness);
    put_if(j, "disableOOMKiller", m.disable_oom_killer);
    put_if(j, "useHierarchy", m.use_hierarchy);
    put_if(j, "checkBeforeUpdate", m.check_before_update);
    return j;
}

json cpu_json(const Cpu& c) {
    json j = json::object();
    put_if(j, "shares", c.shares);
    put_if(j, "quota", c.quota);
    put_if(j, "burst", c.burst);
    put_if(j, "period", c.period);
    put_if(j, "realtimeRuntime", c.realtime_runtime);
    put_if(j, "realtimePeriod", c.realtime_period);
    put_if(j, "cpus", c.cpus);
    put_if(j, "mems", c.mems);
    put_if(j, "idle", c.idle);
    return j;
}

json throttle_json(const ThrottleDevice& t) {
    return {{"major", t.major}, {"minor", t.minor}, {"rate", t.rate}};
}

json block_io_json(const BlockIo& b) {
    json j = json::object();
    put_if(j, "weight", b.weight);
    put_if(j, "leafWeight", b.leaf_weight);
    put_list(j, "weightDevice", b.weight_device, [](const WeightDevice& w) {
        json d = {{"major", w.major}, {"minor", w.minor}};
        put_if(d, "weight", w.weight);
        put_if(d, "leafWeight", w.leaf_weight);
        return d;
    });
    put_list(j, "throttleReadBpsDevice", b.throttle_read_bps_device, throttle_json);
    put_list(j, "throttleWriteBpsDevice", b.throttle_write_bps_device, throttle_json);
    put_list(j, "throttleReadIOPSDevice", b.throttle_read_iops_device, throttle_json);
    put_list(j, "throttleWriteIOPSDevice", b.throttle_write_iops_device, throttle_json);
    return j;
}

json network_json(const Network& n) {
    json j = json::object();
    put_if(j, "classID", n.class_id);
    put_list(j, "priorities", n.priorities, [](const InterfacePriority& p) {
        return json{{"name", p.name}, {"priority", p.priority}};
    });
    return j;
}

json rdma_json(const Rdma& r) {
    json j = json::object();
    put_if(j, "hcaHandles", r.hca_handles);
    put_if(j, "hcaObjects", r.hca_objects);
    return j;
}

json intel_rdt_json(const IntelRdt& i) {
    json j = json::object();
    put_if(j, "closID", i.clos_id);
    put_if(j, "l3CacheSchema", i.l3_cache_schema);
    put_if(j, "memBwSchema", i.mem_bw_schema);
    put_if(j, "schemata", i.schemata);
    put_if(j, "enableMonitoring", i.enable_monitoring);
    return j;
}

json seccomp_json(const Seccomp& s) {
    json j = {{"defaultAction", s.default_action}};
    put_if(j, "defaultErrnoRet", s.default_errno_ret);
    put_if(j, "architectures", s.architectures);
    put_if(j, "flags", s.flags);
    put_if(j, "listenerPath", s.listener_path);
    put_if(j, "listenerMetadata", s.listener_metadata);
    put_list(j, "syscalls", s.syscalls, [](const SeccompSyscall& sc) {
        json c = {{"names", sc.names}, {"action", sc.action}};
        put_if(c, "errnoRet", sc.errno_ret);
        put_list(c, "args", sc.args, [](const SeccompArg& a) {
            json arg = {{"index", a.index}, {"value", a.value}, {"op", a.op}};
            if (a.value_two != 0) arg["valueTwo"] = a.value_two;
            return arg;
        });
        return c;
    });
    return j;
}

json linux_json(const Linux& l) {
    json j = json::object();
    put_list(j, "namespaces", l.namespaces, [](const Namespace& ns) {
        json n = {{"type", to_string(ns.type)}};
        put_if(n, "path", ns.path);
        return n;
    });
    put_list(j, "uidMappings", l.uid_mappings, id_mapping_json);
    put_list(j, "gidMappings", l.gid_mappings, id_mapping_json);
    put_map(j, "timeOffsets", l.time_offsets, [](const TimeOffset& o) {
        return json{{"secs", o.secs}, {"nanosecs", o.nanosecs}};
    });
    put_list(j, "devices", l.devices, device_json);
    put_if(j, "cgroupsPath", l.cgroups_path);
    if (l.resources) j["resources"] = detail::resources_to_json(*l.resources);
    if (l.intel_rdt) j["intelRdt"] = intel_rdt_json(*l.intel_rdt);
    put_if(j, "sysctl", l.sysctl);
    if (l.seccomp) j["seccomp"] = seccomp_json(*l.seccomp);
    put_if(j, "rootfsPropagation", l.rootfs_propagation);
    put_if(j, "maskedPaths", l.masked_paths);
    put_if(j, "readonlyPaths", l.readonly_paths);
    put_if(j, "mountLabel", l.mount_label);
    if (l.personality) {
        json p = {{"domain", l.personality->domain}};
        put_if(p, "flags", l.personality->flags);
        j["personality"] = std::move(p);
    }
    if (l.memory_policy) {
        json m = {{"mode", l.memory_policy->mode}};
        put_if(m, "nodes", l.memory_policy->nodes);
        put_if(m, "flags", l.memory_policy->flags);
        j["memoryPolicy"] = std::move(m);
    }
    put_map(j, "netDevices", l.net_devices, [](const NetDevice& d) {
        json n = json::object();
        put_if(n, "name", d.name);
        return n;
    });
    return j;
}

}  // namespace

json detail::resources_to_json(const Resources& r) {
    json j = json::object();
    put_list(j, "devices", r.devices, device_rule_json);
    if (r.memory) j["memory"] = memory_json(*r.memory);
    if (r.cpu) j["cpu"] = cpu_json(*r.cpu);
    if (r.pids) {
        json p = json::object();
        put_if(p, "limit", r.pids->limit);
        j["pids"] = std::move(p);
    }
    if (r.block_io) j["blockIO"] = block_io_json(*r.block_io);
    put_list(j, "hugepageLimits", r.hugepage_limits, [](const HugepageLimit& h) {
        return json{{"pageSize", h.page_size}, {"limit", h.limit}};
    });
    if (r.network) j["network"] = network_json(*r.network);
    put_map(j, "rdma", r.rdma, rdma_json);
    put_if(j, "unified", r.unified);
    return j;
}

nlohmann::json to_json(const Config& c) {
    json j = {{"ociVersion", c.oci_version}};
    if (c.root) {
        json root = {{"path", c.root->path}};
        if (c.root->readonly) root["readonly"] = true;
        j["root"] = std::move(root);
    }
    put_list(j, "mounts", c.mounts, mount_json);
    if (c.process) j["process"] = to_json(*c.process);
    put_if(j, "hostname", c.hostname);
    put_if(j, "domainname", c.domainname);
    if (c.hooks) j["hooks"] = hooks_json(*c.hooks);
    put_if(j, "annotations", c.annotations);
    if (c.linux) j["linux"] = linux_json(*c.linux);
    return j;
}

std::string to_json_text(const Config& c, int indent) {
    return detail::dump_text(to_json(c), indent, "config.json");
}

}  // namespace tarn::oci
