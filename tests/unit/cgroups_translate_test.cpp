// linux.resources -> cgroup v2 files: every field, its conversion and its errors.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "cgroups/detail.hpp"
#include "error_of.hpp"

using namespace tarn;
using namespace tarn::cgroups;
using detail::DirInfo;
using detail::Write;

namespace {

using FileValues = std::vector<std::pair<std::string, std::string>>;

// A cgroup with every controller enabled and the files a 6.x kernel shows.
DirInfo full_v2() {
    DirInfo d;
    d.controllers = {"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"};
    d.files = {"cgroup.procs",    "cgroup.kill", "cgroup.max.depth", "cgroup.freeze",
               "cgroup.events",   "memory.max",  "memory.low",       "memory.high",
               "memory.swap.max", "cpu.weight",  "cpu.max",          "cpu.max.burst",
               "cpu.idle",        "cpuset.cpus", "cpuset.mems",      "pids.max",
               "io.weight",       "io.max",      "hugetlb.2MB.max",  "hugetlb.2MB.rsvd.max",
               "hugetlb.1GB.max", "rdma.max",    "misc.max"};
    return d;
}

FileValues files(const std::vector<Write>& writes) {
    FileValues out;
    for (const auto& w : writes) out.emplace_back(w.file, w.value);
    return out;
}

FileValues translate(const oci::Resources& r, const DirInfo& d = full_v2()) {
    return files(detail::translate_v2(r, d));
}

using test::error_of;

std::string translate_error(const oci::Resources& r, const DirInfo& d = full_v2()) {
    return error_of([&] { detail::translate_v2(r, d); });
}

oci::Resources memory(std::optional<int64_t> limit, std::optional<int64_t> swap = std::nullopt) {
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = limit;
    r.memory->swap = swap;
    return r;
}

oci::Resources cpu(std::optional<int64_t> quota, std::optional<uint64_t> period) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->quota = quota;
    r.cpu->period = period;
    return r;
}

}  // namespace

// ---- conversions ----------------------------------------------------------------

TEST(CgroupConvert, SharesToWeightFollowsTheQuadraticOfRuncAndCrun) {
    EXPECT_EQ(detail::shares_to_weight(0), 0u);  // unset
    EXPECT_EQ(detail::shares_to_weight(1), 1u);
    EXPECT_EQ(detail::shares_to_weight(2), 1u);
    EXPECT_EQ(detail::shares_to_weight(3), 2u);
    EXPECT_EQ(detail::shares_to_weight(256), 35u);
    EXPECT_EQ(detail::shares_to_weight(512), 59u);
    EXPECT_EQ(detail::shares_to_weight(1024), 100u);  // default shares -> default weight
    EXPECT_EQ(detail::shares_to_weight(2048), 174u);
    EXPECT_EQ(detail::shares_to_weight(262143), 10000u);
    EXPECT_EQ(detail::shares_to_weight(262144), 10000u);
    EXPECT_EQ(detail::shares_to_weight(1u << 20), 10000u);
}

TEST(CgroupConvert, SharesToWeightIsMonotonicAndInRange) {
    uint64_t prev = 0;
    for (uint64_t s = 2; s <= 262144; s += 97) {
        uint64_t w = detail::shares_to_weight(s);
        EXPECT_GE(w, prev) << "shares " << s;
        EXPECT_GE(w, 1u);
        EXPECT_LE(w, 10000u);
        prev = w;
    }
}

TEST(CgroupConvert, BlkioWeightToIoWeightIsLinear) {
    EXPECT_EQ(detail::blkio_weight_to_io_weight(0), 0u);
    EXPECT_EQ(detail::blkio_weight_to_io_weight(10), 1u);
    EXPECT_EQ(detail::blkio_weight_to_io_weight(100), 910u);
    EXPECT_EQ(detail::blkio_weight_to_io_weight(500), 4950u);
    EXPECT_EQ(detail::blkio_weight_to_io_weight(1000), 10000u);
}

TEST(CgroupConvert, WeightToSharesMatchesTheKernel) {
    EXPECT_EQ(detail::weight_to_shares(100), 1024u);
    EXPECT_EQ(detail::weight_to_shares(1), 10u);
    EXPECT_EQ(detail::weight_to_shares(10000), 102400u);
}

// ---- memory -------------------------------------------------------------------------

TEST(CgroupTranslateV2, MemoryLimitGoesToMemoryMax) {
    EXPECT_EQ(translate(memory(1 << 30)), (FileValues{{"memory.max", "1073741824"}}));
}

TEST(CgroupTranslateV2, MemoryLimitZeroIsUnset) {
    EXPECT_EQ(translate(memory(0)), FileValues{});
}

TEST(CgroupTranslateV2, UnlimitedMemoryMeansUnlimitedSwapToo) {
    EXPECT_EQ(translate(memory(-1)), (FileValues{{"memory.max", "max"}, {"memory.swap.max", "max"}}));
}

TEST(CgroupTranslateV2, SwapIsMemoryPlusSwapMinusLimit) {
    EXPECT_EQ(translate(memory(200, 500)), (FileValues{{"memory.max", "200"}, {"memory.swap.max", "300"}}));
    EXPECT_EQ(translate(memory(200, 200)), (FileValues{{"memory.max", "200"}, {"memory.swap.max", "0"}}));
    EXPECT_EQ(translate(memory(200, -1)), (FileValues{{"memory.max", "200"}, {"memory.swap.max", "max"}}));
    EXPECT_EQ(translate(memory(-1, 500)), (FileValues{{"memory.max", "max"}, {"memory.swap.max", "500"}}));
}

TEST(CgroupTranslateV2, SwapBelowLimitIsAnErrorNamingTheField) {
    EXPECT_EQ(translate_error(memory(200, 100)),
              "linux.resources.memory.swap: must be >= memory.limit (swap 100 < limit 200)");
}

TEST(CgroupTranslateV2, SwapWithoutLimitIsAnError) {
    EXPECT_EQ(translate_error(memory(std::nullopt, 100)),
              "linux.resources.memory.swap: cannot limit memory+swap without memory.limit");
}

TEST(CgroupTranslateV2, NegativeValuesOtherThanMinusOneAreErrors) {
    EXPECT_EQ(translate_error(memory(-2)),
              "linux.resources.memory.limit: invalid value -2 (use -1 for unlimited)");
    EXPECT_EQ(translate_error(memory(100, -7)),
              "linux.resources.memory.swap: invalid value -7 (use -1 for unlimited)");
}

TEST(CgroupTranslateV2, SwapWithoutSwapAccounting) {
    DirInfo d = full_v2();
    d.files.erase("memory.swap.max");
    // No swap / unlimited swap is what already happens: nothing to write.
    EXPECT_EQ(translate(memory(200, 200), d), (FileValues{{"memory.max", "200"}}));
    EXPECT_EQ(translate(memory(-1), d), (FileValues{{"memory.max", "max"}}));
    EXPECT_EQ(translate_error(memory(200, 500), d),
              "linux.resources.memory.swap: swap accounting is not available (no memory.swap.max)");
}

TEST(CgroupTranslateV2, ReservationGoesToMemoryLow) {
    oci::Resources r = memory(std::nullopt);
    r.memory->reservation = 1 << 20;
    EXPECT_EQ(translate(r), (FileValues{{"memory.low", "1048576"}}));
    r.memory->reservation = -1;
    EXPECT_EQ(translate(r), (FileValues{{"memory.low", "max"}}));
}

TEST(CgroupTranslateV2, V1OnlyMemoryKnobsAreRefusedNotDropped) {
    oci::Resources r = memory(100);
    r.memory->swappiness = 0;
    EXPECT_EQ(translate_error(r), "linux.resources.memory.swappiness: not supported on cgroup v2");
    r = memory(100);
    r.memory->disable_oom_killer = true;
    EXPECT_EQ(translate_error(r),
              "linux.resources.memory.disableOOMKiller: not supported on cgroup v2 (the OOM killer cannot be "
              "turned "
              "off)");
    r.memory->disable_oom_killer = false;
    EXPECT_EQ(translate(r), (FileValues{{"memory.max", "100"}}));
    r.memory->use_hierarchy = false;
    EXPECT_EQ(translate_error(r), "linux.resources.memory.useHierarchy: cgroup v2 is always hierarchical");
}

TEST(CgroupTranslateV2, DeprecatedKernelMemoryIsIgnored) {
    oci::Resources r = memory(100);
    r.memory->kernel = 1000;
    r.memory->kernel_tcp = 1000;
    EXPECT_EQ(translate(r), (FileValues{{"memory.max", "100"}}));
}

// ---- cpu ----------------------------------------------------------------------------

TEST(CgroupTranslateV2, SharesBecomeWeight) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->shares = 1024;
    EXPECT_EQ(translate(r), (FileValues{{"cpu.weight", "100"}}));
    r.cpu->shares = 0;  // Docker's "unset"
    EXPECT_EQ(translate(r), FileValues{});
}

TEST(CgroupTranslateV2, CpuMaxForms) {
    EXPECT_EQ(translate(cpu(50000, 100000)), (FileValues{{"cpu.max", "50000 100000"}}));
    EXPECT_EQ(translate(cpu(-1, 100000)), (FileValues{{"cpu.max", "max 100000"}}));
    EXPECT_EQ(translate(cpu(std::nullopt, 250000)), (FileValues{{"cpu.max", "max 250000"}}));
    EXPECT_EQ(translate(cpu(50000, std::nullopt)), (FileValues{{"cpu.max", "50000"}}));  // keeps the period
    EXPECT_EQ(translate(cpu(-1, std::nullopt)), (FileValues{{"cpu.max", "max"}}));
    EXPECT_EQ(translate(cpu(std::nullopt, std::nullopt)), FileValues{});
    EXPECT_EQ(translate_error(cpu(-5, 100000)),
              "linux.resources.cpu.quota: invalid value -5 (use -1 for unlimited)");
}

TEST(CgroupTranslateV2, BurstIdleAndCpuset) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->burst = 20000;
    r.cpu->idle = 1;
    r.cpu->cpus = "0-3";
    r.cpu->mems = "0";
    EXPECT_EQ(
        translate(r),
        (FileValues{
            {"cpu.idle", "1"}, {"cpu.max.burst", "20000"}, {"cpuset.cpus", "0-3"}, {"cpuset.mems", "0"}}));
}

TEST(CgroupTranslateV2, RealtimeIsRefused) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->realtime_runtime = 950000;
    EXPECT_EQ(translate_error(r), "linux.resources.cpu.realtimeRuntime: not supported on cgroup v2");
    r.cpu->realtime_runtime = 0;
    r.cpu->realtime_period = 1000000;
    EXPECT_EQ(translate_error(r), "linux.resources.cpu.realtimePeriod: not supported on cgroup v2");
}

// ---- pids -----------------------------------------------------------------------------

TEST(CgroupTranslateV2, PidsLimit) {
    oci::Resources r;
    r.pids = oci::Pids{100};
    EXPECT_EQ(translate(r), (FileValues{{"pids.max", "100"}}));
    r.pids = oci::Pids{0};
    EXPECT_EQ(translate(r), (FileValues{{"pids.max", "max"}}));
    r.pids = oci::Pids{-1};
    EXPECT_EQ(translate(r), (FileValues{{"pids.max", "max"}}));
    r.pids = oci::Pids{};
    EXPECT_EQ(translate(r), FileValues{});
}

// ---- io ---------------------------------------------------------------------------------

TEST(CgroupTranslateV2, BlkioWeightConvertsForIoWeight) {
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight = 500;
    EXPECT_EQ(translate(r), (FileValues{{"io.weight", "4950"}}));
}

TEST(CgroupTranslateV2, BlkioWeightGoesUnchangedToBfq) {
    DirInfo d = full_v2();
    d.files.insert("io.bfq.weight");
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight = 500;
    EXPECT_EQ(translate(r, d), (FileValues{{"io.bfq.weight", "500"}}));
}

TEST(CgroupTranslateV2, BlkioWeightErrors) {
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight = 5;
    EXPECT_EQ(translate_error(r), "linux.resources.blockIO.weight: must be between 10 and 1000, got 5");
    DirInfo d = full_v2();
    d.files.erase("io.weight");
    r.block_io->weight = 500;
    EXPECT_EQ(translate_error(r, d),
              "linux.resources.blockIO.weight: no io weight file (neither io.bfq.weight nor io.weight: no "
              "weight-based I/O scheduler or io.cost)");
    r.block_io->weight = std::nullopt;
    r.block_io->leaf_weight = 300;
    EXPECT_EQ(translate_error(r), "linux.resources.blockIO.leafWeight: not supported on cgroup v2");
}

TEST(CgroupTranslateV2, WeightDevice) {
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->weight_device = {oci::WeightDevice{8, 0, 500, std::nullopt}};
    EXPECT_EQ(translate(r), (FileValues{{"io.weight", "8:0 4950"}}));
    DirInfo d = full_v2();
    d.files.insert("io.bfq.weight");
    EXPECT_EQ(translate(r, d), (FileValues{{"io.bfq.weight", "8:0 500"}}));
    r.block_io->weight_device = {oci::WeightDevice{8, 0, 500, 100}};
    EXPECT_EQ(translate_error(r),
              "linux.resources.blockIO.weightDevice[0].leafWeight: not supported on cgroup v2");
}

TEST(CgroupTranslateV2, ThrottlesGoToIoMax) {
    oci::Resources r;
    r.block_io = oci::BlockIo{};
    r.block_io->throttle_read_bps_device = {{8, 0, 1048576}};
    r.block_io->throttle_write_bps_device = {{8, 0, 0}};  // 0 lifts the limit
    r.block_io->throttle_read_iops_device = {{8, 16, 100}};
    r.block_io->throttle_write_iops_device = {{259, 1, 50}};
    EXPECT_EQ(translate(r), (FileValues{{"io.max", "8:0 rbps=1048576"},
                                        {"io.max", "8:0 wbps=max"},
                                        {"io.max", "8:16 riops=100"},
                                        {"io.max", "259:1 wiops=50"}}));
}

// ---- hugetlb, rdma, network ----------------------------------------------------------------

TEST(CgroupTranslateV2, HugepageLimitsNameTheFiles) {
    oci::Resources r;
    r.hugepage_limits = {{"2MB", 1 << 21}, {"1GB", 1 << 30}};
    // The reservation file is limited too where the kernel has it.
    EXPECT_EQ(translate(r), (FileValues{{"hugetlb.2MB.max", "2097152"},
                                        {"hugetlb.2MB.rsvd.max", "2097152"},
                                        {"hugetlb.1GB.max", "1073741824"}}));
}

TEST(CgroupTranslateV2, HugepageLimitErrors) {
    oci::Resources r;
    r.hugepage_limits = {{"2M", 1}};
    EXPECT_EQ(translate_error(r),
              "linux.resources.hugepageLimits[0].pageSize: invalid page size \"2M\" (expected e.g. \"2MB\")");
    r.hugepage_limits = {{"../2MB", 1}};
    EXPECT_EQ(
        translate_error(r),
        "linux.resources.hugepageLimits[0].pageSize: invalid page size \"../2MB\" (expected e.g. \"2MB\")");
    r.hugepage_limits = {{"2MB", 1}, {"64KB", 1}};
    EXPECT_EQ(
        translate_error(r),
        "linux.resources.hugepageLimits[1]: page size 64KB is not supported here (no hugetlb.64KB.max)");
}

TEST(CgroupTranslateV2, Rdma) {
    oci::Resources r;
    r.rdma["mlx5_0"] = oci::Rdma{2, 2000};
    r.rdma["mlx5_1"] = oci::Rdma{10, std::nullopt};
    EXPECT_EQ(translate(r), (FileValues{{"rdma.max", "mlx5_0 hca_handle=2 hca_object=2000"},
                                        {"rdma.max", "mlx5_1 hca_handle=10"}}));
}

TEST(CgroupTranslateV2, NetworkIsV1Only) {
    oci::Resources r;
    r.network = oci::Network{};
    r.network->class_id = 0x100001;
    EXPECT_EQ(
        translate_error(r),
        "linux.resources.network: not supported on cgroup v2 (net_cls and net_prio are v1 controllers)");
}

// ---- unified ------------------------------------------------------------------------------------

TEST(CgroupTranslateV2, UnifiedIsWrittenAsGivenAndLast) {
    oci::Resources r = memory(1000);
    r.unified["memory.max"] = "2000";
    r.unified["memory.high"] = "1500";
    r.unified["cgroup.max.depth"] = "3";
    EXPECT_EQ(translate(r), (FileValues{{"memory.max", "1000"},
                                        {"cgroup.max.depth", "3"},
                                        {"memory.high", "1500"},
                                        {"memory.max", "2000"}}));
}

TEST(CgroupTranslateV2, UnifiedMultiLineValuesAreOneWritePerLine) {
    oci::Resources r;
    r.unified["io.max"] = "8:0 rbps=1000\n8:16 wbps=2000\n";
    EXPECT_EQ(translate(r), (FileValues{{"io.max", "8:0 rbps=1000"}, {"io.max", "8:16 wbps=2000"}}));
}

TEST(CgroupTranslateV2, UnifiedKeysMustBePlainExistingFiles) {
    auto err = [](const std::string& key) {
        oci::Resources r;
        r.unified[key] = "1";
        return translate_error(r);
    };
    EXPECT_EQ(err("../x"), "linux.resources.unified[\"../x\"]: must be a plain file name of the cgroup");
    EXPECT_EQ(err("a/b"), "linux.resources.unified[\"a/b\"]: must be a plain file name of the cgroup");
    EXPECT_EQ(err(".."), "linux.resources.unified[\"..\"]: must be a plain file name of the cgroup");
    EXPECT_EQ(err(""), "linux.resources.unified[\"\"]: must be a plain file name of the cgroup");
    EXPECT_EQ(err("nodot"),
              "linux.resources.unified[\"nodot\"]: not a cgroup file name (expected <controller>.<file>)");
    EXPECT_EQ(err("memory.nonexistent"),
              "linux.resources.unified[\"memory.nonexistent\"]: no such file in the cgroup");
    EXPECT_EQ(err("cgroup.procs"), "linux.resources.unified[\"cgroup.procs\"]: not a resource setting");
    EXPECT_EQ(err("cgroup.kill"), "linux.resources.unified[\"cgroup.kill\"]: not a resource setting");
}

TEST(CgroupTranslateV2, UnifiedKeyNeedsItsControllerEnabled) {
    DirInfo d = full_v2();
    d.controllers = {"memory", "pids"};
    oci::Resources r;
    r.unified["cpu.weight"] = "100";
    EXPECT_EQ(
        translate_error(r, d),
        "linux.resources.unified[\"cpu.weight\"]: the cpu controller is not available (cgroup.controllers: "
        "memory pids)");
}

TEST(CgroupTranslateV2, MissingControllerNamesTheField) {
    DirInfo d = full_v2();
    d.controllers = {"cpu"};
    EXPECT_EQ(
        translate_error(memory(100), d),
        "linux.resources.memory.limit: the memory controller is not available (cgroup.controllers: cpu)");
    oci::Resources r;
    r.pids = oci::Pids{5};
    d.controllers = {};
    EXPECT_EQ(translate_error(r, d),
              "linux.resources.pids.limit: the pids controller is not available (cgroup.controllers: none)");
}

TEST(CgroupTranslateV2, WritesCarryFieldAndController) {
    auto w = detail::translate_v2(memory(100), full_v2());
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0], (Write{"memory", "memory.max", "100", "linux.resources.memory.limit", false, false}));
}

TEST(CgroupTranslateV2, EmptyResourcesWriteNothing) {
    EXPECT_EQ(translate(oci::Resources{}), FileValues{});
}

TEST(CgroupTranslateV2, RequiredControllers) {
    oci::Resources r = memory(100);
    r.cpu = oci::Cpu{};
    r.cpu->shares = 512;
    r.cpu->cpus = "0";
    r.pids = oci::Pids{10};
    r.hugepage_limits = {{"2MB", 0}};
    r.unified["io.max"] = "8:0 rbps=1";
    r.unified["cgroup.max.depth"] = "2";
    auto need = detail::required_controllers_v2(r);
    EXPECT_EQ(need, (std::map<std::string, std::string>{{"cpu", "linux.resources.cpu.shares"},
                                                        {"cpuset", "linux.resources.cpu.cpus"},
                                                        {"hugetlb", "linux.resources.hugepageLimits"},
                                                        {"io", "linux.resources.unified[\"io.max\"]"},
                                                        {"memory", "linux.resources.memory.limit"},
                                                        {"pids", "linux.resources.pids.limit"}}));
    EXPECT_TRUE(detail::required_controllers_v2(oci::Resources{}).empty());
}
