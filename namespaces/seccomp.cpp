#include <seccomp.h>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "namespaces/steps.hpp"

namespace tarn::ns::detail {
namespace {

uint32_t action_of(const std::string& name, std::optional<uint32_t> errno_ret, const std::string& field) {
    if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
    if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
    if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
    if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
    if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
    // EPERM when errnoRet is absent, as runc and crun do.
    if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(errno_ret.value_or(EPERM));
    if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(errno_ret.value_or(EPERM));
    if (name == "SCMP_ACT_NOTIFY") return SCMP_ACT_NOTIFY;
    throw Error(field + ": unknown action \"" + name + "\"");
}

scmp_compare op_of(const std::string& op, const std::string& field) {
    if (op == "SCMP_CMP_NE") return SCMP_CMP_NE;
    if (op == "SCMP_CMP_LT") return SCMP_CMP_LT;
    if (op == "SCMP_CMP_LE") return SCMP_CMP_LE;
    if (op == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
    if (op == "SCMP_CMP_GE") return SCMP_CMP_GE;
    if (op == "SCMP_CMP_GT") return SCMP_CMP_GT;
    if (op == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
    throw Error(field + ": unknown operator \"" + op + "\"");
}

std::vector<sock_filter> export_bpf(void* ctx) {
    UniqueFd mem(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
    if (!mem) throw_errno("linux.seccomp: export the filter");
    int r = seccomp_export_bpf(ctx, mem.get());
    if (r < 0) throw Error("linux.seccomp: export the filter", -r);
    off_t size = ::lseek(mem.get(), 0, SEEK_END);
    if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
        throw Error("linux.seccomp: export the filter: unexpected size " + std::to_string(size));
    std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
    if (::pread(mem.get(), prog.data(), static_cast<size_t>(size), 0) != size)
        throw_errno("linux.seccomp: read the exported filter");
    return prog;
}

}  // namespace

SeccompFilter::~SeccompFilter() {
    if (ctx_) seccomp_release(ctx_);
}

SeccompFilter build_seccomp(const oci::Seccomp& s, bool no_new_privs) {
    SeccompFilter f;
    uint32_t def = action_of(s.default_action, s.default_errno_ret, "linux.seccomp.defaultAction");
    // The kernel refuses SECCOMP_RET_USER_NOTIF as the filter's default, and so does runc.
    if (def == SCMP_ACT_NOTIFY) throw Error("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action");
    f.ctx_ = seccomp_init(def);
    if (!f.ctx_) throw Error("linux.seccomp: seccomp_init failed");
    // Without no_new_privs the filter needs CAP_SYS_ADMIN, which the workload usually
    // lacks by then; libseccomp would otherwise turn no_new_privs on behind our back.
    if (!no_new_privs && seccomp_attr_set(f.ctx_, SCMP_FLTATR_CTL_NNP, 0) < 0)
        throw Error("linux.seccomp: cannot leave no_new_privs off");
    for (size_t i = 0; i < s.architectures.size(); ++i) {
        std::string name = s.architectures[i];
        std::string field = "linux.seccomp.architectures[" + std::to_string(i) + "]";
        if (name.rfind("SCMP_ARCH_", 0) != 0) throw Error(field + ": unknown architecture \"" + name + "\"");
        std::string lower = name.substr(10);
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        uint32_t arch = seccomp_arch_resolve_name(lower.c_str());
        if (!arch) throw Error(field + ": unknown architecture \"" + name + "\"");
        int r = seccomp_arch_add(f.ctx_, arch);
        if (r < 0 && r != -EEXIST) throw Error(field + ": add " + name, -r);
    }
    f.no_new_privs_ = no_new_privs;
    for (const std::string& flag : s.flags) {
        int r;
        if (flag == "SECCOMP_FILTER_FLAG_LOG") {
            r = seccomp_attr_set(f.ctx_, SCMP_FLTATR_CTL_LOG, 1);
            f.flags_ |= SECCOMP_FILTER_FLAG_LOG;
        } else if (flag == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") {
            r = seccomp_attr_set(f.ctx_, SCMP_FLTATR_CTL_SSB, 1);
            f.flags_ |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        } else if (flag == "SECCOMP_FILTER_FLAG_TSYNC") {
            r = seccomp_attr_set(f.ctx_, SCMP_FLTATR_CTL_TSYNC, 1);
            f.flags_ |= SECCOMP_FILTER_FLAG_TSYNC;
        } else if (flag == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") {
            // libseccomp 2.5 has no attribute for it: the filter is then loaded by us.
            r = 0;
            f.flags_ |= SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        } else {
            throw Error("linux.seccomp.flags: \"" + flag + "\" is not supported by this build");
        }
        if (r < 0) throw Error("linux.seccomp.flags: " + flag, -r);
    }
    for (size_t i = 0; i < s.syscalls.size(); ++i) {
        const oci::SeccompSyscall& sc = s.syscalls[i];
        std::string field = "linux.seccomp.syscalls[" + std::to_string(i) + "]";
        uint32_t act = action_of(sc.action, sc.errno_ret, field + ".action");
        // A rule with the default action is a no-op that libseccomp refuses.
        if (act == def) continue;
        if (act == SCMP_ACT_NOTIFY) f.notify_ = true;
        std::vector<scmp_arg_cmp> args;
        for (const oci::SeccompArg& a : sc.args) {
            if (a.index > 5) throw Error(field + ".args: index " + std::to_string(a.index) + " out of range");
            args.push_back({a.index, op_of(a.op, field + ".args"), a.value, a.value_two});
        }
        for (const std::string& name : sc.names) {
            int nr = seccomp_syscall_resolve_name(name.c_str());
            // Names this libseccomp does not know are skipped, as runc does: profiles
            // list syscalls of newer kernels and other architectures.
            if (nr == __NR_SCMP_ERROR) continue;
            int r = seccomp_rule_add_array(f.ctx_, act, nr, static_cast<unsigned>(args.size()), args.data());
            if (r < 0) throw Error(field + ": rule for " + name, -r);
        }
    }
    if (f.flags_ & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
        // The flag only changes how a notifying task waits for its listener; without a
        // notify rule there is none, and the kernel would refuse it. Otherwise the
        // program is exported now and loaded with seccomp(2) directly.
        if (!f.notify_) f.flags_ &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        else f.bpf_ = export_bpf(f.ctx_);
    }
    return f;
}

UniqueFd load_seccomp(SeccompFilter& f) {
    if (!f.ctx_) return {};
    if (!f.bpf_.empty()) {
        // What seccomp_load would do, plus the flags libseccomp 2.5 does not know.
        if (f.no_new_privs_ && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw_errno("set no_new_privs");
        unsigned long flags = f.flags_ | SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // TSYNC with a listener: report a thread that cannot sync as ESRCH, not as its tid.
        if (flags & SECCOMP_FILTER_FLAG_TSYNC) flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        sock_fprog prog{static_cast<unsigned short>(f.bpf_.size()), f.bpf_.data()};
        long fd = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
        if (fd < 0) throw_errno("load seccomp filter");
        return UniqueFd(static_cast<int>(fd));
    }
    int r = seccomp_load(f.ctx_);
    if (r < 0) throw Error("load seccomp filter", -r);
    if (!f.notify_) return {};
    // libseccomp loaded the filter with SECCOMP_FILTER_FLAG_NEW_LISTENER and keeps the
    // listener; the fd is ours to pass on and close.
    int fd = seccomp_notify_fd(f.ctx_);
    if (fd < 0) throw Error("seccomp notify fd", -fd);
    return UniqueFd(fd);
}

void send_seccomp_listener(int sock, int notify_fd, const std::string& state_json) {
    // config-linux.md: the state is the payload and the fds go as SCM_RIGHTS in the
    // same message, in the order the state's "fds" names them.
    size_t sent = send_with_fds(sock, state_json, {&notify_fd, 1}, "linux.seccomp.listenerPath: send the notify fd");
    // A stream socket may take the payload in parts; the fd went with the first.
    ssize_t n;
    while (sent < state_json.size()) {
        n = ::send(sock, state_json.data() + sent, state_json.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("linux.seccomp.listenerPath: send the state");
        sent += static_cast<size_t>(n);
    }
}

}  // namespace tarn::ns::detail

namespace tarn::ns::detail {

void load_seccomp_and_notify(SeccompFilter& f, int listener, const std::string& state_json) {
    UniqueFd notify = load_seccomp(f);
    if (!notify) return;
    if (listener < 0) throw Error("linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath");
    // From here every syscall passes the filter: a profile that notifies on sendmsg,
    // close or execve waits for a listener that has not got the fd yet (as with runc).
    send_seccomp_listener(listener, notify.get(), state_json);
}

}  // namespace tarn::ns::detail
