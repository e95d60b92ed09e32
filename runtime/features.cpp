#include <seccomp.h>
#include <linux/seccomp.h>
#include <sys/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "cgroups/cgroups.hpp"
#include "namespaces/mount_options.hpp"
#include "namespaces/namespaces.hpp"
#include "runtime/runtime.hpp"
#include "runtime/vm/vm.hpp"

#ifndef TARN_VERSION
#define TARN_VERSION "0.0.0"
#endif
#ifndef TARN_COMMIT
#define TARN_COMMIT "unknown"
#endif

namespace tarn::runtime {

int spec(const std::string& bundle, bool rootless) {
    std::string path = bundle + "/config.json";
    if (::access(path.c_str(), F_OK) == 0) throw Error("spec: " + path + " already exists");
    oci::Config c = oci::default_spec(rootless, ::geteuid(), ::getegid());
    write_file_atomic(path, oci::to_json_text(c, 2) + "\n", 0644);
    return 0;
}

int features(const GlobalOptions& g) {
    oci::Features f;
    f.hooks = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};
    f.mount_options = ns::known_mount_options();
    f.namespaces = {"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"};
    for (int c = 0; c < static_cast<int>(cap_max_bits()); ++c) {
        char* n = cap_to_name(c);
        if (!n) continue;
        std::string name = n;
        cap_free(n);
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (name.rfind("CAP_", 0) == 0) f.capabilities.push_back(name);
    }
    f.seccomp_enabled = true;
    // Only where it would work: systemd runs and the manager the caller's containers
    // would use (its own user manager when unprivileged) answers over D-Bus.
    // systemdUser (features-linux.md: the driver in rootless mode) is probed only for an
    // unprivileged caller, whose user manager it is.
    const bool rootless = g.rootless.value_or(::geteuid() != 0 || ns::in_user_namespace());
    f.cgroup_systemd = cgroups::systemd::available(rootless);
    f.cgroup_systemd_user = rootless && f.cgroup_systemd;
    // Whether tarn supports them (features-linux.md), not whether this host runs them:
    // a config naming a profile fails create where the LSM is absent.
    f.apparmor = true;
    f.selinux = true;
    // Unlike those, an idmap a config asks for is applied or create fails, so this says
    // whether this kernel can do it at all.
    f.mount_idmap = ns::idmapped_mounts_supported();
    // What this kernel's seccomp can return (SECCOMP_GET_ACTION_AVAIL): KILL_PROCESS and
    // LOG need 4.14, NOTIFY 5.0.
    for (auto [name, ret] : {std::pair{"SCMP_ACT_ALLOW", SECCOMP_RET_ALLOW}, {"SCMP_ACT_ERRNO", SECCOMP_RET_ERRNO},
                             {"SCMP_ACT_KILL", SECCOMP_RET_KILL_THREAD}, {"SCMP_ACT_KILL_PROCESS", SECCOMP_RET_KILL_PROCESS},
                             {"SCMP_ACT_KILL_THREAD", SECCOMP_RET_KILL_THREAD}, {"SCMP_ACT_LOG", SECCOMP_RET_LOG},
                             {"SCMP_ACT_NOTIFY", SECCOMP_RET_USER_NOTIF}, {"SCMP_ACT_TRACE", SECCOMP_RET_TRACE},
                             {"SCMP_ACT_TRAP", SECCOMP_RET_TRAP}}) {
        uint32_t action = ret;
        if (::syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0) f.seccomp_actions.push_back(name);
    }
    f.seccomp_operators = {"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                           "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"};
    scmp_filter_ctx probe = seccomp_init(SCMP_ACT_ALLOW);
    for (const char* a : {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
                          "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
                          "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                          "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
                          "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64"}) {
        std::string lower = std::string(a).substr(10);
        for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        // Listed only if a filter for this machine can take it too: libseccomp refuses
        // to mix byte orders (the big-endian MIPS, PPC, S390, PARISC on x86).
        uint32_t arch = seccomp_arch_resolve_name(lower.c_str());
        int r = arch ? seccomp_arch_add(probe, arch) : -EINVAL;
        if (r == 0 || r == -EEXIST) f.seccomp_archs.push_back(a);
    }
    seccomp_release(probe);
    f.seccomp_known_flags = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                             "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"};
    // Listed when the kernel takes them: loading a NULL filter fails with EFAULT for flags
    // it knows and EINVAL otherwise. WAIT_KILLABLE_RECV (5.19) only goes with a listener.
    for (auto [name, flag] : {std::pair{"SECCOMP_FILTER_FLAG_TSYNC", SECCOMP_FILTER_FLAG_TSYNC},
                              {"SECCOMP_FILTER_FLAG_LOG", SECCOMP_FILTER_FLAG_LOG},
                              {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SECCOMP_FILTER_FLAG_SPEC_ALLOW},
                              {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                               SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | SECCOMP_FILTER_FLAG_NEW_LISTENER}}) {
        if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flag, nullptr) < 0 && errno == EFAULT)
            f.seccomp_supported_flags.push_back(name);
    }
    f.annotations["io.github.tarn.version"] = TARN_VERSION;
    // What an unprivileged caller gets (README, Rootless).
    f.annotations["io.github.tarn.rootless"] =
        "user namespace required; ids beyond the caller's own through newuidmap/newgidmap; "
        "limits only where a cgroup is delegated";
    if (f.cgroup_systemd_user)
        f.annotations["io.github.tarn.rootless"] +=
            "; --systemd-cgroup: scopes in the user's systemd manager (user.slice), limits on the controllers "
            "it was delegated";
    // The VM mode's accelerator for a bundle that does not choose one (auto), and why.
    try {
        vm::AccelChoice accel = vm::default_accel(g);
        f.annotations["io.github.tarn.vm.accel"] = accel.kvm ? "kvm" : "tcg";
        f.annotations["io.github.tarn.vm.accel.reason"] = accel.reason;
    } catch (const Error& e) {
        f.annotations["io.github.tarn.vm.accel.reason"] = e.what();
    }
    const scmp_version* v = seccomp_version();
    f.annotations["io.github.seccomp.libseccomp.version"] =
        std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->micro);
    std::string out = oci::to_json(f).dump(4) + "\n";
    (void)!::write(1, out.data(), out.size());
    return 0;
}

std::string version_text() {
    const scmp_version* v = seccomp_version();
    return std::string("tarn version ") + TARN_VERSION + "\ncommit: " + TARN_COMMIT + "\nspec: " +
           std::string(oci::kSpecVersion) + "\nlibseccomp: " + std::to_string(v->major) + "." +
           std::to_string(v->minor) + "." + std::to_string(v->micro) + "\n";
}

}  // namespace tarn::runtime
