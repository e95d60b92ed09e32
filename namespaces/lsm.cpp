// AppArmor and SELinux: process.apparmorProfile, process.selinuxLabel, linux.mountLabel.
//
// Both are applied the same way: the label is written to the process's own
// /proc/self/attr/.../exec, and the kernel switches to it at the next execve, the
// workload's. A label the host cannot apply (its LSM is not active) is an error naming
// the field: a workload must never run unconfined because its profile was ignored.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "namespaces/steps.hpp"

namespace tarn::ns {
namespace {

bool file_says(const char* path, char c) {
    UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
    char b = 0;
    return fd && ::read(fd.get(), &b, 1) == 1 && b == c;
}

}  // namespace

bool apparmor_enabled() {
    // The module's own switch; /proc/self/attr/apparmor exists on kernels >= 5.8 only.
    return file_says("/sys/module/apparmor/parameters/enabled", 'Y');
}

bool selinux_enabled() {
    // As libselinux: selinuxfs is mounted (and the policy loaded when enforce exists).
    struct statfs sf {};
    return ::statfs("/sys/fs/selinux", &sf) == 0 && sf.f_type == SELINUX_MAGIC &&
           ::access("/sys/fs/selinux/enforce", F_OK) == 0;
}

void check_lsm(const oci::Process* p, const oci::Linux* l) {
    if (p && !p->apparmor_profile.empty() && !apparmor_enabled())
        throw Error("process.apparmorProfile \"" + p->apparmor_profile +
                    "\": AppArmor is not enabled on this host");
    if (p && !p->selinux_label.empty() && !selinux_enabled())
        throw Error("process.selinuxLabel \"" + p->selinux_label + "\": SELinux is not enabled on this host");
    if (l && !l->mount_label.empty() && !selinux_enabled())
        throw Error("linux.mountLabel \"" + l->mount_label + "\": SELinux is not enabled on this host");
}

namespace detail {
namespace {

// Writes one of our own /proc/self/attr files. It must be procfs's: a bind mount over
// it (an image or a racing container redirecting the write, the CVE-2025-52881 class)
// would otherwise swallow the label and leave the workload unconfined.
void write_attr(const std::string& path, const std::string& value, const std::string& field) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno(field + ": open " + path);
    struct statfs sf {};
    if (::fstatfs(fd.get(), &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC)
        throw Error(field + ": " + path + " is not on procfs");
    ssize_t n = ::write(fd.get(), value.data(), value.size());
    if (n < 0) throw_errno(field + ": set \"" + value + "\"");
}

}  // namespace

void apply_lsm_labels(const oci::Process& p) {
    if (!p.apparmor_profile.empty()) {
        // The AppArmor-specific file where the kernel has it (>= 5.8): the shared
        // /proc/self/attr/exec belongs to whichever LSM is the "display" one.
        const char* path = ::access("/proc/self/attr/apparmor/exec", F_OK) == 0
                               ? "/proc/self/attr/apparmor/exec"
                               : "/proc/self/attr/exec";
        write_attr(path, "exec " + p.apparmor_profile, "process.apparmorProfile");
    }
    if (!p.selinux_label.empty()) write_attr("/proc/self/attr/exec", p.selinux_label, "process.selinuxLabel");
}

}  // namespace detail
}  // namespace tarn::ns
