// The cgroup v2 device filter (cgroups/devices_v2.cpp): v1 rule semantics, the BPF
// program's decisions (run through a small interpreter of the instructions it uses),
// and, as root on a host with a cgroup2 mount, the kernel's verdict on a real open.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "cgroups/detail.hpp"

using namespace tarn;
using namespace tarn::cgroups;
using namespace tarn::cgroups::detail;
using Rule = oci::DeviceCgroupRule;

namespace {

constexpr uint32_t C = BPF_DEVCG_DEV_CHAR, B = BPF_DEVCG_DEV_BLOCK;
constexpr uint32_t M = BPF_DEVCG_ACC_MKNOD, R = BPF_DEVCG_ACC_READ, W = BPF_DEVCG_ACC_WRITE;

// Runs the subset of eBPF the generator emits; fails the test on anything else.
int run(const std::vector<bpf_insn>& p, uint32_t type, uint32_t major, uint32_t minor, uint32_t access) {
    uint32_t ctx[3] = {access << 16 | type, major, minor};
    uint64_t reg[11] = {};
    for (size_t pc = 0; pc < p.size(); ++pc) {
        const bpf_insn& i = p[pc];
        switch (i.code) {
            case BPF_LDX | BPF_MEM | BPF_W:
                EXPECT_EQ(i.src_reg, 1);
                reg[i.dst_reg] = ctx[i.off / 4];
                break;
            case BPF_ALU | BPF_AND | BPF_K:
                reg[i.dst_reg] = uint32_t(reg[i.dst_reg]) & uint32_t(i.imm);
                break;
            case BPF_ALU | BPF_RSH | BPF_K:
                reg[i.dst_reg] = uint32_t(reg[i.dst_reg]) >> i.imm;
                break;
            case BPF_ALU | BPF_MOV | BPF_X:
                reg[i.dst_reg] = uint32_t(reg[i.src_reg]);
                break;
            case BPF_ALU64 | BPF_MOV | BPF_K:
                reg[i.dst_reg] = uint64_t(int64_t(i.imm));
                break;
            case BPF_JMP32 | BPF_JNE | BPF_K:
                if (uint32_t(reg[i.dst_reg]) != uint32_t(i.imm)) pc += i.off;
                break;
            case BPF_JMP | BPF_EXIT:
                return int(reg[0]);
            default:
                ADD_FAILURE() << "unexpected opcode " << int(i.code);
                return -1;
        }
    }
    ADD_FAILURE() << "fell off the end of the program";
    return -1;
}

std::vector<bpf_insn> program(const std::vector<Rule>& rules) {
    return device_filter_program(emulate_device_rules(rules));
}

const Rule kDenyAll{false, "a", std::nullopt, std::nullopt, "rwm"};

}  // namespace

TEST(DeviceFilterV2, DenyAllThenAllowListAndDefaults) {
    DeviceFilter f = emulate_device_rules({kDenyAll, Rule{true, "c", 10, 229, "rw"}});
    EXPECT_FALSE(f.default_allow);
    ASSERT_FALSE(f.exceptions.empty());
    EXPECT_EQ(f.exceptions[0], (DeviceException{C, 10, 229, R | W}));
    auto p = program({kDenyAll, Rule{true, "c", 10, 229, "rw"}});
    EXPECT_EQ(run(p, C, 10, 229, R), 1);
    EXPECT_EQ(run(p, C, 10, 229, R | W), 1);
    EXPECT_EQ(run(p, C, 10, 230, R), 0);
    EXPECT_EQ(run(p, B, 10, 229, R), 0);
    // The defaults: the spec's default devices, pts, and mknod of anything.
    EXPECT_EQ(run(p, C, 1, 3, R | W), 1);    // /dev/null
    EXPECT_EQ(run(p, C, 136, 7, R | W), 1);  // /dev/pts/7
    EXPECT_EQ(run(p, B, 8, 0, M), 1);        // mknod of a disk...
    EXPECT_EQ(run(p, B, 8, 0, R), 0);        // ...but not opening it
    EXPECT_EQ(run(p, C, 4, 1, R), 0);        // /dev/tty1
}

TEST(DeviceFilterV2, AccessMustBeWithinTheException) {
    auto p = program({kDenyAll, Rule{true, "b", 7, std::nullopt, "r"}});
    EXPECT_EQ(run(p, B, 7, 0, R), 1);
    EXPECT_EQ(run(p, B, 7, 12, R), 1);
    EXPECT_EQ(run(p, B, 7, 0, W), 0);
    EXPECT_EQ(run(p, B, 7, 0, R | W), 0);
}

TEST(DeviceFilterV2, DefaultAllowWithDenyExceptions) {
    // No "deny all": a new cgroup allows everything, as on v1; a deny rule is an exception.
    auto p = program({Rule{false, "c", 4, std::nullopt, "rw"}});
    EXPECT_EQ(run(p, C, 4, 1, R), 0);
    EXPECT_EQ(run(p, C, 4, 1, M), 1);
    EXPECT_EQ(run(p, C, 5, 1, R), 1);
    EXPECT_EQ(run(p, B, 8, 0, R | W), 1);
}

TEST(DeviceFilterV2, LaterRulesTakeAccessAwayOrReset) {
    // v1 semantics: an allow rule then a deny of part of it narrows the exception.
    DeviceFilter f =
        emulate_device_rules({kDenyAll, Rule{true, "c", 42, 1, "rwm"}, Rule{false, "c", 42, 1, "w"}});
    ASSERT_FALSE(f.exceptions.empty());
    EXPECT_EQ(f.exceptions[0], (DeviceException{C, 42, 1, R | M}));
    // "allow all" afterwards resets to default-allow; the defaults add no exception.
    f = emulate_device_rules(
        {kDenyAll, Rule{true, "c", 42, 1, "rwm"}, Rule{true, "a", std::nullopt, std::nullopt, "rwm"}});
    EXPECT_TRUE(f.default_allow);
    EXPECT_TRUE(f.exceptions.empty());
    auto p = device_filter_program(f);
    EXPECT_EQ(p.size(), 8u);  // prologue and "allow"
    EXPECT_EQ(run(p, B, 8, 0, R | W), 1);
}

TEST(DeviceFilterV2, PartialAllDevicesRuleIsOnePerType) {
    auto p = program({kDenyAll, Rule{true, "a", std::nullopt, std::nullopt, "r"}});
    EXPECT_EQ(run(p, C, 99, 1, R), 1);
    EXPECT_EQ(run(p, B, 99, 1, R), 1);
    EXPECT_EQ(run(p, B, 99, 1, W), 0);
}

TEST(DeviceFilterV2, LargeMajorsCompareUnsigned) {
    auto p = program({kDenyAll, Rule{true, "c", 4000000000LL, 4294967295LL, "rwm"}});
    EXPECT_EQ(run(p, C, 4000000000u, 4294967295u, R), 1);
    EXPECT_EQ(run(p, C, 4000000000u, 1, R), 0);
}

TEST(DeviceFilterV2, BadRulesNameTheField) {
    try {
        emulate_device_rules({kDenyAll, Rule{true, "x", 1, 1, "rwm"}});
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("linux.resources.devices[1].type"), std::string::npos)
            << e.what();
    }
    try {
        emulate_device_rules({Rule{true, "c", 1, 1, "rwx"}});
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("linux.resources.devices[0].access"), std::string::npos)
            << e.what();
    }
}

// The kernel's verifier accepts the program and enforces it: a child moved into a
// cgroup2 directory with "deny /dev/null" cannot open /dev/null, and can open /dev/zero.
TEST(DeviceFilterV2Host, KernelEnforcesTheProgram) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    std::string base;
    for (const char* m : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
        struct statfs sf {};
        if (::statfs(m, &sf) == 0 && sf.f_type == 0x63677270) base = m;
    }
    if (base.empty()) GTEST_SKIP() << "no cgroup2 mount";
    std::string dir = base + "/tarn-devfilter-test-" + std::to_string(::getpid());
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    // The defaults would allow /dev/null again: take it away after them.
    DeviceFilter f = emulate_device_rules({kDenyAll});
    std::erase_if(f.exceptions, [](const DeviceException& e) { return e.major == 1u && e.minor == 3u; });
    try {
        attach_device_filter(fd, device_filter_program(f), dir);
        attach_device_filter(fd, device_filter_program(f), dir);  // replaces, does not stack
    } catch (const Error& e) {
        ::rmdir(dir.c_str());
        if (std::string(e.what()).find("not permitted") != std::string::npos || errno == EINVAL)
            GTEST_SKIP() << e.what();
        FAIL() << e.what();
    }
    pid_t child = ::fork();
    if (child == 0) {
        std::ofstream(dir + "/cgroup.procs") << ::getpid();
        int null_fd = ::open("/dev/null", O_RDONLY);
        bool null_denied = null_fd < 0 && errno == EPERM;
        int zero_fd = ::open("/dev/zero", O_RDONLY);
        _exit((null_denied ? 0 : 1) | (zero_fd >= 0 ? 0 : 2));
    }
    int st = 0;
    ::waitpid(child, &st, 0);
    ::close(fd);
    for (int i = 0; i < 50 && ::rmdir(dir.c_str()) < 0; ++i) ::usleep(20000);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0) << "1: /dev/null opened despite the filter; 2: /dev/zero refused";
}
