// config.json parsing and writing: every member of config.md / config-linux.md lands in
// the model, and the model writes back to the same document.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"

namespace tarn::oci {
namespace {

using nlohmann::json;

// Every member the model knows, with values that differ from the defaults.
constexpr const char* kFullConfig = R"({
  "ociVersion": "1.3.0",
  "root": {"path": "rootfs", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"],
     "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
     "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]}
  ],
  "process": {
    "terminal": true,
    "consoleSize": {"height": 25, "width": 80},
    "user": {"uid": 1000, "gid": 1001, "umask": 18, "additionalGids": [5, 6], "username": "alice"},
    "args": ["sh", "-c", "echo hi"],
    "commandLine": "sh -c 'echo hi'",
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/work",
    "capabilities": {
      "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"], "inheritable": ["CAP_CHOWN"],
      "permitted": ["CAP_KILL"], "ambient": ["CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0}],
    "noNewPrivileges": true,
    "apparmorProfile": "tarn-default",
    "oomScoreAdj": -500,
    "scheduler": {"policy": "SCHED_DEADLINE", "nice": -5, "priority": 10,
                  "flags": ["SCHED_FLAG_RESET_ON_FORK"], "runtime": 100, "deadline": 200, "period": 300},
    "selinuxLabel": "system_u:system_r:container_t:s0",
    "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
    "execCPUAffinity": {"initial": "0-1", "final": "2,3"}
  },
  "hostname": "box",
  "domainname": "example.org",
  "hooks": {
    "prestart": [{"path": "/usr/bin/pre", "args": ["pre", "1"], "env": ["A=1"], "timeout": 5}],
    "createRuntime": [{"path": "/bin/cr"}],
    "createContainer": [{"path": "/bin/cc"}],
    "startContainer": [{"path": "/bin/sc"}],
    "poststart": [{"path": "/bin/ps"}],
    "poststop": [{"path": "/bin/pst", "timeout": 1}]
  },
  "annotations": {"org.example.key": "value"},
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/a"}, {"type": "mount"},
                   {"type": "ipc"}, {"type": "uts"}, {"type": "user"}, {"type": "cgroup"}, {"type": "time"}],
    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
    "gidMappings": [{"containerID": 0, "hostID": 1001, "size": 2}],
    "timeOffsets": {"monotonic": {"secs": -10, "nanosecs": 5}, "boottime": {"secs": 20, "nanosecs": 0}},
    "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
                {"type": "p", "path": "/dev/fifo"}],
    "cgroupsPath": "/tarn/box",
    "resources": {
      "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}],
      "memory": {"limit": 536870912, "reservation": 268435456, "swap": 1073741824, "kernel": -1, "kernelTCP": -1,
                 "swappiness": 60, "disableOOMKiller": true, "useHierarchy": false, "checkBeforeUpdate": true},
      "cpu": {"shares": 1024, "quota": 50000, "burst": 10000, "period": 100000, "realtimeRuntime": 950000,
              "realtimePeriod": 1000000, "cpus": "0-3", "mems": "0", "idle": 1},
      "pids": {"limit": 100},
      "blockIO": {"weight": 500, "leafWeight": 300,
                  "weightDevice": [{"major": 8, "minor": 0, "weight": 600, "leafWeight": 200}, {"major": 8, "minor": 16, "weight": 100}],
                  "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                  "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2000}],
                  "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 30}],
                  "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 40}]},
      "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
      "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
      "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
      "unified": {"memory.high": "1073741824", "io.weight": "default 100"}
    },
    "intelRdt": {"closID": "guaranteed", "l3CacheSchema": "L3:0=7f0", "memBwSchema": "MB:0=20",
                 "schemata": ["L2:0=ff"], "enableMonitoring": true},
    "sysctl": {"net.ipv4.ip_forward": "1"},
    "seccomp": {
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
      "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
      "flags": ["SECCOMP_FILTER_FLAG_LOG"],
      "listenerPath": "/run/seccomp.sock", "listenerMetadata": "meta",
      "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
         "args": [{"index": 0, "value": 8, "valueTwo": 9, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}
      ]
    },
    "rootfsPropagation": "rslave",
    "maskedPaths": ["/proc/kcore"],
    "readonlyPaths": ["/proc/sys"],
    "mountLabel": "system_u:object_r:container_file_t:s0",
    "personality": {"domain": "LINUX32", "flags": []},
    "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0-1", "flags": ["MPOL_F_STATIC_NODES"]},
    "netDevices": {"eth1": {"name": "ctr1"}, "eth2": {}}
  }
})";

TEST(OciConfig, FullConfigFillsEveryMember) {
    Config c = parse_config(kFullConfig);

    EXPECT_EQ(c.oci_version, "1.3.0");
    ASSERT_TRUE(c.root);
    EXPECT_EQ(c.root->path, "rootfs");
    EXPECT_TRUE(c.root->readonly);

    ASSERT_EQ(c.mounts.size(), 2u);
    EXPECT_EQ(c.mounts[0].destination, "/proc");
    EXPECT_EQ(c.mounts[0].type, "proc");
    EXPECT_EQ(c.mounts[1].source, "/srv/data");
    EXPECT_EQ(c.mounts[1].options, (std::vector<std::string>{"rbind", "ro"}));
    ASSERT_EQ(c.mounts[1].uid_mappings.size(), 1u);
    EXPECT_EQ(c.mounts[1].uid_mappings[0].host_id, 100000u);
    EXPECT_EQ(c.mounts[1].gid_mappings[0].size, 65536u);

    ASSERT_TRUE(c.process);
    const Process& p = *c.process;
    EXPECT_TRUE(p.terminal);
    ASSERT_TRUE(p.console_size);
    EXPECT_EQ(p.console_size->height, 25u);
    EXPECT_EQ(p.console_size->width, 80u);
    EXPECT_EQ(p.user.uid, 1000u);
    EXPECT_EQ(p.user.gid, 1001u);
    EXPECT_EQ(p.user.umask, 18u);
    EXPECT_EQ(p.user.additional_gids, (std::vector<uint32_t>{5, 6}));
    EXPECT_EQ(p.user.username, "alice");
    EXPECT_EQ(p.args, (std::vector<std::string>{"sh", "-c", "echo hi"}));
    EXPECT_EQ(p.command_line, "sh -c 'echo hi'");
    EXPECT_EQ(p.env, (std::vector<std::string>{"PATH=/bin", "TERM=xterm"}));
    EXPECT_EQ(p.cwd, "/work");
    ASSERT_TRUE(p.capabilities);
    EXPECT_EQ(p.capabilities->bounding, (std::vector<std::string>{"CAP_KILL", "CAP_CHOWN"}));
    EXPECT_EQ(p.capabilities->effective, (std::vector<std::string>{"CAP_KILL"}));
    EXPECT_EQ(p.capabilities->inheritable, (std::vector<std::string>{"CAP_CHOWN"}));
    EXPECT_EQ(p.capabilities->permitted, (std::vector<std::string>{"CAP_KILL"}));
    EXPECT_EQ(p.capabilities->ambient, (std::vector<std::string>{"CAP_NET_BIND_SERVICE"}));
    ASSERT_EQ(p.rlimits.size(), 2u);
    EXPECT_EQ(p.rlimits[0].type, "RLIMIT_NOFILE");
    EXPECT_EQ(p.rlimits[0].hard, 4096u);
    EXPECT_EQ(p.rlimits[0].soft, 1024u);
    EXPECT_EQ(p.rlimits[1].hard, UINT64_MAX);  // RLIM_INFINITY fits the uint64 member
    EXPECT_TRUE(p.no_new_privileges);
    EXPECT_EQ(p.apparmor_profile, "tarn-default");
    EXPECT_EQ(p.oom_score_adj, -500);
    ASSERT_TRUE(p.scheduler);
    EXPECT_EQ(p.scheduler->policy, "SCHED_DEADLINE");
    EXPECT_EQ(p.scheduler->nice, -5);
    EXPECT_EQ(p.scheduler->priority, 10);
    EXPECT_EQ(p.scheduler->flags, (std::vector<std::string>{"SCHED_FLAG_RESET_ON_FORK"}));
    EXPECT_EQ(p.scheduler->runtime, 100u);
    EXPECT_EQ(p.scheduler->deadline, 200u);
    EXPECT_EQ(p.scheduler->period, 300u);
    EXPECT_EQ(p.selinux_label, "system_u:system_r:container_t:s0");
    ASSERT_TRUE(p.io_priority);
    EXPECT_EQ(p.io_priority->klass, "IOPRIO_CLASS_BE");
    EXPECT_EQ(p.io_priority->priority, 4);
    ASSERT_TRUE(p.exec_cpu_affinity);
    EXPECT_EQ(p.exec_cpu_affinity->initial, "0-1");
    EXPECT_EQ(p.exec_cpu_affinity->final, "2,3");

    EXPECT_EQ(c.hostname, "box");
    EXPECT_EQ(c.domainname, "example.org");
    ASSERT_TRUE(c.hooks);
    ASSERT_EQ(c.hooks->prestart.size(), 1u);
    EXPECT_EQ(c.hooks->prestart[0].path, "/usr/bin/pre");
    EXPECT_EQ(c.hooks->prestart[0].args, (std::vector<std::string>{"pre", "1"}));
    EXPECT_EQ(c.hooks->prestart[0].env, (std::vector<std::string>{"A=1"}));
    EXPECT_EQ(c.hooks->prestart[0].timeout, 5);
    EXPECT_EQ(c.hooks->create_runtime.at(0).path, "/bin/cr");
    EXPECT_EQ(c.hooks->create_container.at(0).path, "/bin/cc");
    EXPECT_EQ(c.hooks->start_container.at(0).path, "/bin/sc");
    EXPECT_EQ(c.hooks->poststart.at(0).path, "/bin/ps");
    EXPECT_EQ(c.hooks->poststop.at(0).timeout, 1);
    EXPECT_EQ(c.annotations.at("org.example.key"), "value");

    ASSERT_TRUE(c.linux);
    const Linux& l = *c.linux;
    ASSERT_EQ(l.namespaces.size(), 8u);
    EXPECT_EQ(l.namespaces[1].type, NamespaceType::network);
    EXPECT_EQ(l.namespaces[1].path, "/var/run/netns/a");
    EXPECT_EQ(l.namespaces[7].type, NamespaceType::time);
    ASSERT_NE(l.find_namespace(NamespaceType::user), nullptr);
    EXPECT_EQ(l.find_namespace(NamespaceType::network)->path, "/var/run/netns/a");
    EXPECT_EQ(l.uid_mappings.at(0).host_id, 1000u);
    EXPECT_EQ(l.gid_mappings.at(0).size, 2u);
    EXPECT_EQ(l.time_offsets.at("monotonic").secs, -10);
    EXPECT_EQ(l.time_offsets.at("monotonic").nanosecs, 5u);
    EXPECT_EQ(l.time_offsets.at("boottime").secs, 20);
    ASSERT_EQ(l.devices.size(), 2u);
    EXPECT_EQ(l.devices[0].major, 10);
    EXPECT_EQ(l.devices[0].minor, 229);
    EXPECT_EQ(l.devices[0].file_mode, 438u);
    EXPECT_EQ(l.devices[0].uid, 0u);
    EXPECT_EQ(l.devices[1].type, "p");
    EXPECT_FALSE(l.devices[1].file_mode);
    EXPECT_EQ(l.cgroups_path, "/tarn/box");

    ASSERT_TRUE(l.resources);
    const Resources& r = *l.resources;
    ASSERT_EQ(r.devices.size(), 2u);
    EXPECT_FALSE(r.devices[0].allow);
    EXPECT_EQ(r.devices[0].type, "");
    EXPECT_FALSE(r.devices[0].major);
    EXPECT_EQ(r.devices[1].major, 10);
    EXPECT_EQ(r.devices[1].access, "rw");
    ASSERT_TRUE(r.memory);
    EXPECT_EQ(r.memory->limit, 536870912);
    EXPECT_EQ(r.memory->reservation, 268435456);
    EXPECT_EQ(r.memory->swap, 1073741824);
    EXPECT_EQ(r.memory->kernel, -1);
    EXPECT_EQ(r.memory->kernel_tcp, -1);
    EXPECT_EQ(r.memory->swappiness, 60u);
    EXPECT_EQ(r.memory->disable_oom_killer, true);
    EXPECT_EQ(r.memory->use_hierarchy, false);
    EXPECT_EQ(r.memory->check_before_update, true);
    ASSERT_TRUE(r.cpu);
    EXPECT_EQ(r.cpu->shares, 1024u);
    EXPECT_EQ(r.cpu->quota, 50000);
    EXPECT_EQ(r.cpu->burst, 10000);
    EXPECT_EQ(r.cpu->period, 100000u);
    EXPECT_EQ(r.cpu->realtime_runtime, 950000);
    EXPECT_EQ(r.cpu->realtime_period, 1000000u);
    EXPECT_EQ(r.cpu->cpus, "0-3");
    EXPECT_EQ(r.cpu->mems, "0");
    EXPECT_EQ(r.cpu->idle, 1);
    ASSERT_TRUE(r.pids);
    EXPECT_EQ(r.pids->limit, 100);
    ASSERT_TRUE(r.block_io);
    EXPECT_EQ(r.block_io->weight, 500);
    EXPECT_EQ(r.block_io->leaf_weight, 300);
    ASSERT_EQ(r.block_io->weight_device.size(), 2u);
    EXPECT_EQ(r.block_io->weight_device[0].leaf_weight, 200);
    EXPECT_FALSE(r.block_io->weight_device[1].leaf_weight);
    EXPECT_EQ(r.block_io->throttle_read_bps_device.at(0).rate, 1000u);
    EXPECT_EQ(r.block_io->throttle_write_bps_device.at(0).rate, 2000u);
    EXPECT_EQ(r.block_io->throttle_read_iops_device.at(0).rate, 30u);
    EXPECT_EQ(r.block_io->throttle_write_iops_device.at(0).rate, 40u);
    ASSERT_EQ(r.hugepage_limits.size(), 1u);
    EXPECT_EQ(r.hugepage_limits[0].page_size, "2MB");
    EXPECT_EQ(r.hugepage_limits[0].limit, 209715200u);
    ASSERT_TRUE(r.network);
    EXPECT_EQ(r.network->class_id, 1048577u);
    EXPECT_EQ(r.network->priorities.at(0).name, "eth0");
    EXPECT_EQ(r.network->priorities.at(0).priority, 500u);
    EXPECT_EQ(r.rdma.at("mlx5_1").hca_handles, 3u);
    EXPECT_EQ(r.rdma.at("mlx5_1").hca_objects, 10000u);
    EXPECT_EQ(r.unified.at("io.weight"), "default 100");

    ASSERT_TRUE(l.intel_rdt);
    EXPECT_EQ(l.intel_rdt->clos_id, "guaranteed");
    EXPECT_EQ(l.intel_rdt->l3_cache_schema, "L3:0=7f0");
    EXPECT_EQ(l.intel_rdt->mem_bw_schema, "MB:0=20");
    EXPECT_EQ(l.intel_rdt->schemata, (std::vector<std::string>{"L2:0=ff"}));
    EXPECT_EQ(l.intel_rdt->enable_monitoring, true);
    EXPECT_EQ(l.sysctl.at("net.ipv4.ip_forward"), "1");

    ASSERT_TRUE(l.seccomp);
    const Seccomp& s = *l.seccomp;
    EXPECT_EQ(s.default_action, "SCMP_ACT_ERRNO");
    EXPECT_EQ(s.default_errno_ret, 1u);
    EXPECT_EQ(s.architectures, (std::vector<std::string>{"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}));
    EXPECT_EQ(s.flags, (std::vector<std::string>{"SECCOMP_FILTER_FLAG_LOG"}));
    EXPECT_EQ(s.listener_path, "/run/seccomp.sock");
    EXPECT_EQ(s.listener_metadata, "meta");
    ASSERT_EQ(s.syscalls.size(), 3u);
    EXPECT_EQ(s.syscalls[0].names, (std::vector<std::string>{"read", "write"}));
    EXPECT_FALSE(s.syscalls[0].errno_ret);
    EXPECT_EQ(s.syscalls[1].errno_ret, 38u);
    ASSERT_EQ(s.syscalls[1].args.size(), 1u);
    EXPECT_EQ(s.syscalls[1].args[0].index, 0u);
    EXPECT_EQ(s.syscalls[1].args[0].value, 8u);
    EXPECT_EQ(s.syscalls[1].args[0].value_two, 9u);
    EXPECT_EQ(s.syscalls[1].args[0].op, "SCMP_CMP_MASKED_EQ");

    EXPECT_EQ(l.rootfs_propagation, "rslave");
    EXPECT_EQ(l.masked_paths, (std::vector<std::string>{"/proc/kcore"}));
    EXPECT_EQ(l.readonly_paths, (std::vector<std::string>{"/proc/sys"}));
    EXPECT_EQ(l.mount_label, "system_u:object_r:container_file_t:s0");
    ASSERT_TRUE(l.personality);
    EXPECT_EQ(l.personality->domain, "LINUX32");
    ASSERT_TRUE(l.memory_policy);
    EXPECT_EQ(l.memory_policy->mode, "MPOL_INTERLEAVE");
    EXPECT_EQ(l.memory_policy->nodes, "0-1");
    EXPECT_EQ(l.memory_policy->flags, (std::vector<std::string>{"MPOL_F_STATIC_NODES"}));
    EXPECT_EQ(l.net_devices.at("eth1").name, "ctr1");
    EXPECT_EQ(l.net_devices.at("eth2").name, "");
}

TEST(OciConfig, RoundTripsThroughJson) {
    Config c = parse_config(kFullConfig);
    EXPECT_EQ(parse_config(to_json_text(c)), c);
    EXPECT_EQ(parse_config(to_json(c).dump()), c);
}

TEST(OciConfig, WritesTheSpecsMemberNames) {
    json j = to_json(parse_config(kFullConfig));
    // The written document is the input again, member for member (the input holds no
    // null, no unknown member and no value equal to a default that would be dropped).
    json in = json::parse(kFullConfig);
    in["linux"]["personality"].erase("flags");  // an empty list is not written
    EXPECT_EQ(j, in) << j.dump(2);
}

TEST(OciConfig, AbsentMembersStayAbsent) {
    Config c = parse_config(R"({"ociVersion": "1.0.0"})");
    EXPECT_EQ(c.oci_version, "1.0.0");
    EXPECT_FALSE(c.root);
    EXPECT_FALSE(c.process);
    EXPECT_FALSE(c.hooks);
    EXPECT_FALSE(c.linux);
    EXPECT_TRUE(c.mounts.empty());
    EXPECT_EQ(to_json(c), json::parse(R"({"ociVersion": "1.0.0"})"));
}

TEST(OciConfig, PresentButEmptyObjectsRoundTrip) {
    Config c = parse_config(R"({"ociVersion": "1.3.0", "linux": {"resources": {"pids": {}, "memory": {}}}})");
    ASSERT_TRUE(c.linux && c.linux->resources && c.linux->resources->pids);
    EXPECT_FALSE(c.linux->resources->pids->limit);
    EXPECT_EQ(parse_config(to_json_text(c)), c);
}

// config.md "Extensibility": runtimes MUST ignore properties they do not know.
TEST(OciConfig, UnknownMembersAreIgnored) {
    Config c = parse_config(R"({
      "ociVersion": "1.2.0",
      "vendorThing": {"x": [1, 2]},
      "process": {"args": ["sh"], "cwd": "/", "futureField": true},
      "windows": {"layerFolders": []},
      "linux": {"resources": {"memory": {"limit": 1, "newKnob": "x"}}, "landlock": {}}
    })");
    EXPECT_EQ(c.oci_version, "1.2.0");
    EXPECT_EQ(c.linux->resources->memory->limit, 1);
}

// A null member is the same as an absent one; some generators write optional fields so.
TEST(OciConfig, NullMeansAbsent) {
    Config c = parse_config(R"({
      "ociVersion": "1.1.0", "root": null, "hooks": null, "mounts": null, "annotations": null,
      "process": {"args": ["sh"], "cwd": "/", "capabilities": null, "oomScoreAdj": null, "env": null},
      "linux": {"resources": {"memory": {"limit": null, "swap": 5}}, "seccomp": null}
    })");
    EXPECT_FALSE(c.root);
    EXPECT_FALSE(c.hooks);
    EXPECT_FALSE(c.process->capabilities);
    EXPECT_FALSE(c.process->oom_score_adj);
    EXPECT_FALSE(c.linux->resources->memory->limit);
    EXPECT_EQ(c.linux->resources->memory->swap, 5);
    EXPECT_FALSE(c.linux->seccomp);
}

// config.md "Specification version": 1.0.0 up to 1.3.x, pre-releases included.
TEST(OciConfig, AcceptsEverySupportedVersion) {
    for (const char* v : {"1.0.0", "1.0.2-dev", "1.1.0-rc.1", "1.2.1", "1.3.0", "1.3.7", "1.3.0+build.5"}) {
        std::string text = std::string(R"({"ociVersion": ")") + v + R"("})";
        EXPECT_EQ(parse_config(text).oci_version, v);
    }
}

TEST(OciConfig, NamespaceNamesRoundTrip) {
    for (auto t : {NamespaceType::pid, NamespaceType::network, NamespaceType::mount, NamespaceType::ipc,
                   NamespaceType::uts, NamespaceType::user, NamespaceType::cgroup, NamespaceType::time})
        EXPECT_EQ(namespace_type_from(to_string(t)), t);
    EXPECT_EQ(to_string(NamespaceType::network), "network");
    EXPECT_FALSE(namespace_type_from("net"));
    EXPECT_EQ(Linux{}.find_namespace(NamespaceType::pid), nullptr);
}

}  // namespace
}  // namespace tarn::oci
