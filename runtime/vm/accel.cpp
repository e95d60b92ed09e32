// Which accelerator a VM boots under. `/dev/kvm` opening proves little: on hosts whose
// KVM is itself a software layer (kvm_pvm, nested clouds without hardware
// virtualization) it opens and creates VMs, yet an ordinary guest kernel either makes
// QEMU abort at once (an MSR the backend refuses) or boots tens of times slower than
// under TCG and then stops on a KVM internal error (an instruction its emulator does
// not know). So `auto` asks three things before it takes KVM: the device answers, the
// CPU advertises hardware virtualization, and no earlier boot of this kernel with this
// QEMU failed under KVM since the host booted. The monitor (monitor.cpp) retries a
// failed auto-KVM boot once under TCG and remembers the failure here.
#include <dirent.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "runtime/vm/vm.hpp"

namespace tarn::runtime::vm {
namespace {

bool cpu_has_hw_virt() {
    std::string text;
    try {
        text = read_file("/proc/cpuinfo");
    } catch (const Error&) {
        return false;
    }
    for (std::string_view line : lines(text)) {
        if (line.rfind("flags", 0) != 0) continue;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view flags = line.substr(colon + 1);
        size_t pos = 0;
        while (pos < flags.size()) {
            size_t end = flags.find(' ', pos);
            if (end == std::string_view::npos) end = flags.size();
            std::string_view flag = flags.substr(pos, end - pos);
            if (flag == "vmx" || flag == "svm") return true;
            pos = end + 1;
        }
        return false;  // every CPU lists the same flags: the first line says it
    }
    return false;
}

std::vector<std::string> kvm_modules() {
    std::vector<std::string> found;
    DIR* d = ::opendir("/sys/module");
    if (!d) return found;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.rfind("kvm_", 0) == 0) found.push_back(name);
    }
    ::closedir(d);
    std::sort(found.begin(), found.end());
    return found;
}

std::string identity(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) < 0) return path + ":?";
    return path + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

}  // namespace

Accel parse_accel(const std::string& value, const std::string& what) {
    if (value.empty() || value == "auto") return Accel::automatic;
    if (value == "kvm") return Accel::kvm;
    if (value == "tcg") return Accel::tcg;
    throw Error(what + ": expected \"auto\", \"kvm\" or \"tcg\", got \"" + value + "\"");
}

AccelChoice choose_accel(Accel want, const KvmFacts& f, bool hw_check) {
    if (want == Accel::kvm) return {true, false, "accel kvm was asked for"};
    if (want == Accel::tcg) return {false, false, "accel tcg was asked for"};
    std::string modules = f.modules.empty() ? "none" : joined(f.modules);
    if (!f.device) return {false, false, "/dev/kvm is not usable (" + f.device_error + ")"};
    if (hw_check && !f.hw_virt)
        return {false, false,
                "/dev/kvm opens, but the CPU has no vmx or svm flag (KVM backends: " + modules +
                    "): a KVM without hardware virtualization cannot run an ordinary guest kernel"};
    if (!f.failed_before.empty())
        return {false, false, "KVM failed to boot this kernel earlier on this host: " + f.failed_before};
    return {true, true,
            std::string(f.hw_virt ? "/dev/kvm works and the CPU has hardware virtualization"
                                  : "/dev/kvm works (kvm_hw_check is off)") +
                " (KVM backends: " + modules + ")"};
}

KvmFacts kvm_facts(const std::string& verdict_file, const std::string& verdict_key) {
    KvmFacts f;
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        f.device_error = "open: " + Error::errno_text(errno);
    } else {
        int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
        if (version == KVM_API_VERSION)
            f.device = true;
        else
            f.device_error = version < 0 ? "KVM_GET_API_VERSION: " + Error::errno_text(errno)
                                         : "KVM API version " + std::to_string(version) + ", not " +
                                               std::to_string(KVM_API_VERSION);
        ::close(fd);
    }
    f.hw_virt = cpu_has_hw_virt();
    f.modules = kvm_modules();
    if (f.device && !verdict_file.empty()) {
        try {
            nlohmann::json j = nlohmann::json::parse(read_file(verdict_file), nullptr, false);
            if (j.is_object() && j.value("key", "") == verdict_key) f.failed_before = j.value("kvm_failed", "");
        } catch (const Error&) {
            // None remembered.
        }
    }
    return f;
}

std::string verdict_key(const std::string& qemu, const std::string& kernel) {
    utsname u{};
    ::uname(&u);
    std::string boot;
    try {
        boot = read_file("/proc/sys/kernel/random/boot_id");
        while (!boot.empty() && boot.back() == '\n') boot.pop_back();
    } catch (const Error&) {
    }
    return std::string(u.release) + " " + boot + " " + identity(qemu) + " " + identity(kernel);
}

void remember_kvm_failure(const std::string& verdict_file, const std::string& key, const std::string& why) {
    nlohmann::json j = {{"key", key}, {"kvm_failed", why}};
    write_file_atomic(verdict_file, j.dump() + "\n", 0644);
}

std::string verdict_file(const std::string& root) {
    return root + "/vm-accel.json";
}

}  // namespace tarn::runtime::vm
