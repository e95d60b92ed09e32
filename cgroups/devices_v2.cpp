// linux.resources.devices on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, written
// instruction by instruction (no libbpf), loaded with bpf(2) and attached to the
// container's cgroup.
//
// v2 has no devices.allow/devices.deny: the kernel asks the attached programs about
// every mknod and every open of a device node. So the rules are first run through the
// v1 semantics (the same list on v1 and v2 must mean the same thing): a rule on every
// device with every access resets the default and drops the exceptions; any other rule
// adds an exception when its polarity differs from the default and takes access away
// from a matching exception otherwise. The program then checks the exceptions in order
// and falls back to the default.
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {
namespace {

constexpr uint32_t kAccMknod = BPF_DEVCG_ACC_MKNOD, kAccRead = BPF_DEVCG_ACC_READ,
                   kAccWrite = BPF_DEVCG_ACC_WRITE;
constexpr uint32_t kAccAll = kAccMknod | kAccRead | kAccWrite;

uint32_t access_bits(const oci::DeviceCgroupRule& r, const std::string& field) {
    std::string access = r.access.empty() ? "rwm" : r.access;
    uint32_t bits = 0;
    for (size_t i = 0; i < access.size(); ++i) {
        uint32_t b = access[i] == 'r'   ? kAccRead
                     : access[i] == 'w' ? kAccWrite
                     : access[i] == 'm' ? kAccMknod
                                        : 0;
        if (!b || (bits & b))
            throw Error(field + ".access: must be a subset of \"rwm\", got \"" + r.access + "\"");
        bits |= b;
    }
    return bits;
}

void add_exception(DeviceFilter& f, const DeviceException& e, bool allow) {
    if (allow == f.default_allow) {
        // Same polarity as the default: take the access away from the exception that
        // names exactly this device (the kernel's v1 dev_exception_rm).
        for (auto it = f.exceptions.begin(); it != f.exceptions.end();) {
            if (it->type == e.type && it->major == e.major && it->minor == e.minor) {
                it->access &= ~e.access;
                if (!it->access) {
                    it = f.exceptions.erase(it);
                    continue;
                }
            }
            ++it;
        }
        return;
    }
    for (DeviceException& x : f.exceptions) {
        if (x.type == e.type && x.major == e.major && x.minor == e.minor) {
            x.access |= e.access;
            return;
        }
    }
    f.exceptions.push_back(e);
}

void apply_rule(DeviceFilter& f, const oci::DeviceCgroupRule& r, const std::string& field) {
    std::string type = r.type.empty() ? "a" : r.type;
    if (type != "a" && type != "c" && type != "b")
        throw Error(field + ".type: must be \"a\", \"c\" or \"b\", got \"" + r.type + "\"");
    uint32_t access = access_bits(r, field);
    if ((r.major && (*r.major < 0 || *r.major > UINT32_MAX)) ||
        (r.minor && (*r.minor < 0 || *r.minor > UINT32_MAX)))
        throw Error(field + ": major and minor must be between 0 and 4294967295");
    std::optional<uint32_t> major, minor;
    if (r.major) major = static_cast<uint32_t>(*r.major);
    if (r.minor) minor = static_cast<uint32_t>(*r.minor);
    if (type == "a") {
        if (access == kAccAll && !major && !minor) {
            f.default_allow = r.allow;
            f.exceptions.clear();
            return;
        }
        // As on v1 (devices_v1.cpp): a partial rule on all devices is one per type.
        add_exception(f, {BPF_DEVCG_DEV_CHAR, major, minor, access}, r.allow);
        add_exception(f, {BPF_DEVCG_DEV_BLOCK, major, minor, access}, r.allow);
        return;
    }
    add_exception(
        f, {type == "c" ? uint32_t{BPF_DEVCG_DEV_CHAR} : uint32_t{BPF_DEVCG_DEV_BLOCK}, major, minor, access},
        r.allow);
}

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

// The registers the prologue fills from struct bpf_cgroup_dev_ctx.
constexpr uint8_t R0 = 0, R1 = 1, rType = 2, rAccess = 3, rMajor = 4, rMinor = 5;

bpf_insn load_ctx(uint8_t dst, int16_t off) {
    return insn(BPF_LDX | BPF_MEM | BPF_W, dst, R1, off, 0);
}
bpf_insn alu32_imm(uint8_t op, uint8_t dst, int32_t imm) {
    return insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm);
}
bpf_insn mov32_reg(uint8_t dst, uint8_t src) {
    return insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn mov64_imm(uint8_t dst, int32_t imm) {
    return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
// 32-bit compare: majors and minors are u32, compared without sign extension.
bpf_insn jne32_imm(uint8_t dst, uint32_t imm, int16_t off) {
    return insn(BPF_JMP32 | BPF_JNE | BPF_K, dst, 0, off, static_cast<int32_t>(imm));
}
bpf_insn exit_insn() {
    return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

long bpf(int cmd, bpf_attr& attr) {
    return ::syscall(SYS_bpf, cmd, &attr, sizeof attr);
}

}  // namespace

DeviceFilter emulate_device_rules(const std::vector<oci::DeviceCgroupRule>& rules) {
    // A new cgroup allows every device until a rule says otherwise, as on v1.
    DeviceFilter f;
    for (size_t i = 0; i < rules.size(); ++i)
        apply_rule(f, rules[i], "linux.resources.devices[" + std::to_string(i) + "]");
    for (const auto& r : default_device_rules()) apply_rule(f, r, "default device rules");
    return f;
}

std::vector<bpf_insn> device_filter_program(const DeviceFilter& f) {
    std::vector<bpf_insn> p;
    // ctx: u32 access_type (access << 16 | type), u32 major, u32 minor.
    p.push_back(load_ctx(rType, 0));
    p.push_back(alu32_imm(BPF_AND, rType, 0xffff));
    p.push_back(load_ctx(rAccess, 0));
    p.push_back(alu32_imm(BPF_RSH, rAccess, 16));
    p.push_back(load_ctx(rMajor, 4));
    p.push_back(load_ctx(rMinor, 8));
    for (const DeviceException& e : f.exceptions) {
        // Every test jumps to the end of this block when it fails; offsets are fixed
        // once the block's length is known.
        std::vector<bpf_insn> block;
        std::vector<size_t> jumps;
        jumps.push_back(block.size());
        block.push_back(jne32_imm(rType, e.type, 0));
        if (e.access != kAccAll) {
            // Every access asked for must be in the exception's: (asked & ~allowed) == 0.
            block.push_back(mov32_reg(R1, rAccess));
            block.push_back(alu32_imm(BPF_AND, R1, static_cast<int32_t>(~e.access & kAccAll)));
            jumps.push_back(block.size());
            block.push_back(jne32_imm(R1, 0, 0));
        }
        if (e.major) {
            jumps.push_back(block.size());
            block.push_back(jne32_imm(rMajor, *e.major, 0));
        }
        if (e.minor) {
            jumps.push_back(block.size());
            block.push_back(jne32_imm(rMinor, *e.minor, 0));
        }
        block.push_back(mov64_imm(R0, f.default_allow ? 0 : 1));
        block.push_back(exit_insn());
        for (size_t j : jumps) block[j].off = static_cast<int16_t>(block.size() - j - 1);
        p.insert(p.end(), block.begin(), block.end());
    }
    p.push_back(mov64_imm(R0, f.default_allow ? 1 : 0));
    p.push_back(exit_insn());
    return p;
}

void attach_device_filter(int cgroup_fd, const std::vector<bpf_insn>& prog, const std::string& what) {
    static const char license[] = "GPL";
    std::string log(64 * 1024, '\0');
    bpf_attr load{};
    load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    load.insns = reinterpret_cast<uint64_t>(prog.data());
    load.insn_cnt = static_cast<uint32_t>(prog.size());
    load.license = reinterpret_cast<uint64_t>(license);
    load.log_buf = reinterpret_cast<uint64_t>(log.data());
    load.log_size = static_cast<uint32_t>(log.size());
    load.log_level = 1;
    UniqueFd fd(static_cast<int>(bpf(BPF_PROG_LOAD, load)));
    if (!fd) {
        int e = errno;
        std::string verifier = log.c_str();
        throw Error(what + ": load device filter" + (verifier.empty() ? "" : " (verifier: " + verifier + ")"),
                    e);
    }

    // Programs attached before (an earlier apply): replaced once the new one is in
    // place, so there is no moment without a filter.
    std::vector<uint32_t> old(64);
    bpf_attr query{};
    query.query.target_fd = static_cast<uint32_t>(cgroup_fd);
    query.query.attach_type = BPF_CGROUP_DEVICE;
    query.query.prog_ids = reinterpret_cast<uint64_t>(old.data());
    query.query.prog_cnt = static_cast<uint32_t>(old.size());
    if (bpf(BPF_PROG_QUERY, query) < 0) throw_errno(what + ": query device filters");
    old.resize(query.query.prog_cnt);

    bpf_attr attach{};
    attach.target_fd = static_cast<uint32_t>(cgroup_fd);
    attach.attach_bpf_fd = static_cast<uint32_t>(fd.get());
    attach.attach_type = BPF_CGROUP_DEVICE;
    attach.attach_flags = BPF_F_ALLOW_MULTI;
    if (bpf(BPF_PROG_ATTACH, attach) < 0) throw_errno(what + ": attach device filter");

    for (uint32_t id : old) {
        bpf_attr get{};
        get.prog_id = id;
        UniqueFd old_fd(static_cast<int>(bpf(BPF_PROG_GET_FD_BY_ID, get)));
        if (!old_fd) continue;  // already gone
        bpf_attr detach{};
        detach.target_fd = static_cast<uint32_t>(cgroup_fd);
        detach.attach_bpf_fd = static_cast<uint32_t>(old_fd.get());
        detach.attach_type = BPF_CGROUP_DEVICE;
        if (bpf(BPF_PROG_DETACH, detach) < 0 && errno != ENOENT)
            throw_errno(what + ": detach old device filter");
    }
}

}  // namespace tarn::cgroups::detail
