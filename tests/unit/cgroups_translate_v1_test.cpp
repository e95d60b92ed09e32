// linux.resources -> cgroup v1 files (and the cgroup2 part of hybrid hosts), and
// device rules -> devices.allow/devices.deny.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "cgroups/detail.hpp"

using namespace tarn;
using namespace tarn::cgroups;
using detail::V1Layout;
using detail::Write;

namespace {

// (controller, file, value) — plus "!" on the controller for a cgroup2 write.
using Writes = std::vector<std::tuple<std::string, std::string, std::string>>;

// The v1 hierarchies and files of this project's build host (kernel 6.x, BFQ,
// hugetlb only in the cgroup2 hierarchy).
V1Layout host_layout() {
    V1Layout l;
    l.files["memory"] = {"memory.limit_in_bytes",       "memory.soft_limit_in_bytes",
                         "memory.memsw.limit_in_bytes", "memory.kmem.limit_in_bytes",
                         "memory.swappiness",           "memory.oom_control",
                         "memory.use_hierarchy",        "memory.kmem.tcp.limit_in_bytes"};
    l.files["cpu"] = {"cpu.shares",        "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.cfs_burst_us",
                      "cpu.rt_runtime_us", "cpu.rt_period_us", "cpu.idle"};
    l.files["cpuacct"] = {"cpuacct.usage"};
    l.files["cpuset"] = {"cpuset.cpus", "cpuset.mems"};
    l.files["pids"] = {"pids.max"};
    l.files["devices"] = {"devices.allow", "devices.deny", "devices.list"};
    l.files["freezer"] = {"freezer.state"};
    l.files["blkio"] = {"blkio.bfq.weight",
                        "blkio.bfq.weight_device",
                        "blkio.throttle.read_bps_device",
                        "blkio.throttle.write_bps_device",
                        "blkio.throttle.read_iops_device",
                        "blkio.throttle.write_iops_device"};
    return l;
}

V1Layout hybrid_layout() {
    V1Layout l = host_layout();
    detail::DirInfo u;
    u.controllers = {"hugetlb"};
    u.files = {"cgroup.procs", "cgroup.max.depth", "hugetlb.2MB.max", "hugetlb.2MB.rsvd.max",
               "memory.pressure"};
    l.unified = u;
    return l;
}

Writes writes(const std::vector<Write>& ws) {
    Writes out;
    for (const auto& w : ws) out.emplace_back((w.unified ? "!" : "") + w.controller, w.file, w.value);
    return out;
}

Writes translate(const oci::Resources& r, const V1Layout& l = host_layout()) {
    return writes(detail::translate_v1(r, l));
}

std::string translate_error(const oci::Resources& r, const V1Layout& l = host_layout()) {
    try {
        detail::translate_v1(r, l);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

oci::Resources memory(std::optional<int64_t> limit, std::optional<int64_t> swap = std::nullopt) {
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = limit;
    r.memory->swap = swap;
    return r;
}

oci::DeviceCgroupRule rule(bool allow, std::string type, std::optional<int64_t> major,
                           std::optional<int64_t> minor, std::string access) {
    return oci::DeviceCgroupRule{allow, std::move(type), major, minor, std::move(access)};
}

Writes default_device_writes() {
    return {{"devices", "devices.allow", "c *:* m"},     {"devices", "devices.allow", "b *:* m"},
            {"devices", "devices.allow", "c 1:3 rwm"},   {"devices", "devices.allow", "c 1:5 rwm"},
            {"devices", "devices.allow", "c 1:7 rwm"},   {"devices", "devices.allow", "c 1:8 rwm"},
            {"devices", "devices.allow", "c 1:9 rwm"},   {"devices", "devices.allow", "c 5:0 rwm"},
            {"devices", "devices.allow", "c 5:1 rwm"},   {"devices", "devices.allow", "c 5:2 rwm"},
            {"devices", "devices.allow", "c 136:* rwm"}, {"devices", "devices.allow", "c 10:200 rwm"}};
}

}  // namespace

// ---- memory ------------------------------------------------------------------------------------

TEST(CgroupTranslateV1, MemoryLimitAndSwap) {
    EXPECT_EQ(translate(memory(200, 500)), (Writes{{"memory", "memory.limit_in_bytes", "200"},
                                                   {"memory", "memory.memsw.limit_in_bytes", "500"}}));
    EXPECT_EQ(translate(memory(-1)), (Writes{{"memory", "memory.limit_in_bytes", "-1"},
                                             {"memory", "memory.memsw.limit_in_bytes", "-1"}}));
    EXPECT_EQ(translate(memory(200, -1)), (Writes{{"memory", "memory.limit_in_bytes", "200"},
                                                  {"memory", "memory.memsw.limit_in_bytes", "-1"}}));
}

TEST(CgroupTranslateV1, MemoryLimitIsRetriedAfterSwapOnEinval) {
    // Raising both limits: the kernel refuses a limit above the old memory+swap,
    // so the limit is retried once memory+swap is raised.
    auto w = detail::translate_v1(memory(200, 500), host_layout());
    ASSERT_EQ(w.size(), 2u);
    EXPECT_TRUE(w[0].retry_on_einval);
    EXPECT_FALSE(w[1].retry_on_einval);
}

TEST(CgroupTranslateV1, SwapErrors) {
    EXPECT_EQ(translate_error(memory(200, 100)),
              "linux.resources.memory.swap: must be >= memory.limit (swap 100 < limit 200)");
    V1Layout l = host_layout();
    l.files["memory"].erase("memory.memsw.limit_in_bytes");
    EXPECT_EQ(
        translate_error(memory(200, 500), l),
        "linux.resources.memory.swap: swap accounting is not enabled (no memory.memsw.limit_in_bytes; boot "
        "with swapaccount=1)");
    EXPECT_EQ(translate(memory(200, -1), l), (Writes{{"memory", "memory.limit_in_bytes", "200"}}));
}

TEST(CgroupTranslateV1, OtherMemoryKnobs) {
    oci::Resources r = memory(std::nullopt);
    r.memory->reservation = 100;
    r.memory->kernel = 300;
    r.memory->kernel_tcp = 400;
    r.memory->swappiness = 10;
    r.memory->disable_oom_killer = true;
    r.memory->use_hierarchy = true;
    EXPECT_EQ(translate(r), (Writes{{"memory", "memory.soft_limit_in_bytes", "100"},
                                    {"memory", "memory.kmem.limit_in_bytes", "300"},
                                    {"memory", "memory.kmem.tcp.limit_in_bytes", "400"},
                                    {"memory", "memory.swappiness", "10"},
                                    {"memory", "memory.oom_control", "1"},
                                    {"memory", "memory.use_hierarchy", "1"}}));
    r.memory->swappiness = 101;
    EXPECT_EQ(translate_error(r), "linux.resources.memory.swappiness: must be between 0 and 100, got 101");
}

TEST(CgroupTranslateV1, KernelMemoryIsIgnoredWhereTheKernelDroppedIt) {
    V1Layout l = host_layout();
    l.files["memory"].erase("memory.kmem.limit_in_bytes");
    oci::Resources r = memory(100);
    r.memory->kernel = 300;
    EXPECT_EQ(translate(r, l), (Writes{{"memory", "memory.limit_in_bytes", "100"}}));
}

// ---- cpu, cpuset, pids ----------------------------------------------------------------------------

TEST(CgroupTranslateV1, Cpu) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->shares = 512;
    r.cpu->quota = 50000;
    r.cpu->period = 100000;
    r.cpu->burst = 1000;
    r.cpu->realtime_period = 1000000;
    r.cpu->realtime_runtime = 950000;
    r.cpu->idle = 0;
    r.cpu->cpus = "0-1";
    r.cpu->mems = "0";
    EXPECT_EQ(translate(r), (Writes{{"cpu", "cpu.shares", "512"},
                                    {"cpu", "cpu.cfs_period_us", "100000"},
                                    {"cpu", "cpu.cfs_quota_us", "50000"},
                                    {"cpu", "cpu.cfs_burst_us", "1000"},
                                    {"cpu", "cpu.rt_period_us", "1000000"},
                                    {"cpu", "cpu.rt_runtime_us", "950000"},
                                    {"cpu", "cpu.idle", "0"},
                                    {"cpuset", "cpuset.cpus", "0-1"},
                                    {"cpuset", "cpuset.mems", "0"}}));
    auto w = detail::translate_v1(r, host_layout());
    EXPECT_TRUE(w[1].retry_on_einval);  // period, retried after the quota
}

TEST(CgroupTranslateV1, CpuQuotaUnlimited) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->quota = -1;
    EXPECT_EQ(translate(r), (Writes{{"cpu", "cpu.cfs_quota_us", "-1"}}));
}

TEST(CgroupTranslateV1, Pids) {
    oci::Resources r;
    r.pids = oci::Pids{8};
    EXPECT_EQ(translate(r), (Writes{{"pids", "pids.max", "8"}}));
    r.pids = oci::Pids{-1};
    EXPECT_EQ(translate(r), (Writes{{"pids", "pids.max", "max"}}));
}

// ---- blkio --------------------------------------------------------------------------------------

TEST(CgroupTranslateV1, BlkioUsesBfqFilesWhenCfqIsGone) {
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight = 300;
    r.block_io->weight_device = {oci::WeightDevice{8, 0, 700, std::nullopt}};
    r.block_io->throttle_read_bps_device = {{8, 0, 1048576}};
    r.block_io->throttle_write_iops_device = {{8, 16, 0}};
    EXPECT_EQ(translate(r), (Writes{{"blkio", "blkio.bfq.weight", "300"},
                                    {"blkio", "blkio.bfq.weight_device", "8:0 700"},
                                    {"blkio", "blkio.throttle.read_bps_device", "8:0 1048576"},
                                    {"blkio", "blkio.throttle.write_iops_device", "8:16 0"}}));
}

TEST(CgroupTranslateV1, BlkioPrefersCfqFiles) {
    V1Layout l = host_layout();
    l.files["blkio"].insert({"blkio.weight", "blkio.weight_device", "blkio.leaf_weight"});
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight = 300;
    r.block_io->leaf_weight = 200;
    EXPECT_EQ(translate(r, l),
              (Writes{{"blkio", "blkio.weight", "300"}, {"blkio", "blkio.leaf_weight", "200"}}));
    l.files["blkio"] = {};
    r.block_io->leaf_weight = std::nullopt;
    EXPECT_EQ(translate_error(r, l),
              "linux.resources.blockIO.weight: no blkio.weight or blkio.bfq.weight (no weight-based I/O "
              "scheduler)");
}

// ---- hugetlb, network, rdma, unified ------------------------------------------------------------

TEST(CgroupTranslateV1, HugetlbOnV1UsesLimitInBytes) {
    V1Layout l = host_layout();
    l.files["hugetlb"] = {"hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.rsvd.limit_in_bytes",
                          "hugetlb.1GB.limit_in_bytes"};
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 4194304}, {"1GB", 0}};
    EXPECT_EQ(translate(r, l), (Writes{{"hugetlb", "hugetlb.2MB.limit_in_bytes", "4194304"},
                                       {"hugetlb", "hugetlb.2MB.rsvd.limit_in_bytes", "4194304"},
                                       {"hugetlb", "hugetlb.1GB.limit_in_bytes", "0"}}));
}

TEST(CgroupTranslateV1, HugetlbOnHybridGoesToTheUnifiedHierarchy) {
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 4194304}};
    EXPECT_EQ(translate(r, hybrid_layout()), (Writes{{"!hugetlb", "hugetlb.2MB.max", "4194304"},
                                                     {"!hugetlb", "hugetlb.2MB.rsvd.max", "4194304"}}));
    EXPECT_EQ(
        translate_error(r),
        "linux.resources.hugepageLimits: the hugetlb controller is not available (neither mounted as v1 nor "
        "enabled in the cgroup2 hierarchy)");
}

TEST(CgroupTranslateV1, NetClsAndNetPrio) {
    V1Layout l = host_layout();
    l.files["net_cls"] = {"net_cls.classid"};
    l.files["net_prio"] = {"net_prio.ifpriomap"};
    oci::Resources r;
    r.network = oci::Network{};
    r.network->class_id = 0x100001;
    r.network->priorities = {{"eth0", 5}, {"lo", 1}};
    EXPECT_EQ(translate(r, l), (Writes{{"net_cls", "net_cls.classid", "1048577"},
                                       {"net_prio", "net_prio.ifpriomap", "eth0 5"},
                                       {"net_prio", "net_prio.ifpriomap", "lo 1"}}));
    EXPECT_EQ(translate_error(r), "linux.resources.network.classID: the net_cls controller is not mounted");
}

TEST(CgroupTranslateV1, RdmaNeedsTheController) {
    oci::Resources r;
    r.rdma["mlx5_0"] = oci::Rdma{1, 2};
    EXPECT_EQ(translate_error(r), "linux.resources.rdma: the rdma controller is not available");
    V1Layout l = host_layout();
    l.files["rdma"] = {"rdma.max"};
    EXPECT_EQ(translate(r, l), (Writes{{"rdma", "rdma.max", "mlx5_0 hca_handle=1 hca_object=2"}}));
}

TEST(CgroupTranslateV1, UnifiedOnAV1OnlyHostIsAnError) {
    oci::Resources r;
    r.unified["memory.high"] = "100";
    EXPECT_EQ(translate_error(r),
              "linux.resources.unified: not supported on a cgroup v1 host (there is no cgroup2 hierarchy)");
}

TEST(CgroupTranslateV1, UnifiedOnHybridChecksTheCgroup2Side) {
    oci::Resources r;
    r.unified["cgroup.max.depth"] = "2";
    EXPECT_EQ(translate(r, hybrid_layout()), (Writes{{"!cgroup", "cgroup.max.depth", "2"}}));
    r.unified["memory.high"] = "100";  // memory is a v1 controller here
    EXPECT_EQ(translate_error(r, hybrid_layout()),
              "linux.resources.unified[\"memory.high\"]: the memory controller is not available "
              "(cgroup.controllers: "
              "hugetlb)");
}

TEST(CgroupTranslateV1, UnmountedControllerNamesTheField) {
    V1Layout l = host_layout();
    l.files.erase("pids");
    oci::Resources r;
    r.pids = oci::Pids{8};
    EXPECT_EQ(translate_error(r, l), "linux.resources.pids.limit: the pids controller is not mounted");
}

// ---- devices ------------------------------------------------------------------------------------

TEST(CgroupDevicesV1, DenyAllFirstThenAllowsThenDefaults) {
    oci::Resources r;
    r.devices = {rule(false, "a", std::nullopt, std::nullopt, "rwm"), rule(true, "c", 4, 64, "rw"),
                 rule(true, "b", 8, std::nullopt, "r")};
    Writes want = {{"devices", "devices.deny", "a"},
                   {"devices", "devices.allow", "c 4:64 rw"},
                   {"devices", "devices.allow", "b 8:* r"}};
    for (auto& w : default_device_writes()) want.push_back(w);
    EXPECT_EQ(translate(r), want);
}

TEST(CgroupDevicesV1, EmptyTypeAndAccessMeanAll) {
    auto w = writes(detail::translate_devices_v1({rule(false, "", std::nullopt, std::nullopt, "")}));
    ASSERT_FALSE(w.empty());
    EXPECT_EQ(w[0], (std::tuple<std::string, std::string, std::string>{"devices", "devices.deny", "a"}));
}

TEST(CgroupDevicesV1, PartialAccessOnAllDevicesIsOneRulePerType) {
    // A bare "a" would mean rwm on everything; "a" with "m" must stay "m".
    auto w = writes(detail::translate_devices_v1({rule(true, "a", std::nullopt, std::nullopt, "m")}));
    ASSERT_GE(w.size(), 2u);
    EXPECT_EQ(std::get<2>(w[0]), "c *:* m");
    EXPECT_EQ(std::get<2>(w[1]), "b *:* m");
}

TEST(CgroupDevicesV1, InvalidRulesNameTheField) {
    oci::Resources r;
    r.devices = {rule(true, "x", 1, 3, "rwm")};
    EXPECT_EQ(translate_error(r),
              "linux.resources.devices[0].type: must be \"a\", \"c\" or \"b\", got \"x\"");
    r.devices = {rule(false, "a", std::nullopt, std::nullopt, "rwm"), rule(true, "c", 1, 3, "rwx")};
    EXPECT_EQ(translate_error(r),
              "linux.resources.devices[1].access: must be a subset of \"rwm\", got \"rwx\"");
    r.devices = {rule(true, "c", 1, 3, "rr")};
    EXPECT_EQ(translate_error(r),
              "linux.resources.devices[0].access: must be a subset of \"rwm\", got \"rr\"");
}

TEST(CgroupDevicesV1, DefaultRulesAreTheSpecDefaults) {
    auto w = writes(detail::translate_devices_v1({}));
    EXPECT_EQ(w, default_device_writes());
}

TEST(CgroupTranslateV1, RequiredControllers) {
    oci::Resources r = memory(100);
    r.devices = {rule(false, "a", std::nullopt, std::nullopt, "rwm")};
    r.hugepage_limits = {{"2MB", 1}};
    r.network = oci::Network{};
    r.network->class_id = 1;
    EXPECT_EQ(detail::required_controllers_v1(r),
              (std::map<std::string, std::string>{{"devices", "linux.resources.devices"},
                                                  {"hugetlb", "linux.resources.hugepageLimits"},
                                                  {"memory", "linux.resources.memory"},
                                                  {"net_cls", "linux.resources.network.classID"}}));
}
