// `tarn vm setup`: the guest kernel and an initramfs holding tarn-agent as /init.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <iostream>

#include "runtime/vm/cpio.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime {
namespace {

// The modules the guest may load, in the order the kernel directory lists them (the
// agent loads the file systems' only when a create needs them); others in that
// directory (brd, for the cgroup guest tests) stay out of the initramfs.
bool wanted_module(const std::string& name) {
    return name != "brd.ko";
}

std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw_errno("readlink /proc/self/exe");
    std::string p(buf, static_cast<size_t>(n));
    return p.substr(0, p.rfind('/'));
}

void run_fetch_script(const std::string& script, const std::string& into) {
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
        ::dup2(2, 1);  // its progress is not our output
        ::execl(script.c_str(), script.c_str(), into.c_str(), nullptr);
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Error(script + " " + into + ": failed");
}

}  // namespace

int vm_setup(const GlobalOptions& g, const VmSetupOptions& o) {
    try {
        std::string dir = o.dir.empty() ? std::string(vm::kDefaultDir) : o.dir;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw Error("create " + dir, ec.value());
        std::string from = o.from;
        if (from.empty()) {
            // Debian's kernel package, unpacked: the script the guest tests use.
            std::string script = std::string(TARN_SOURCE_DIR) + "/tests/guest/prepare.sh";
            if (::access(script.c_str(), X_OK) < 0)
                throw Error(
                    "no --from kernel directory, and " + script +
                    " (which fetches Debian's kernel) is not here: pass --from DIR holding vmlinux and "
                    "modules/order");
            from = dir + "/kernel";
            run_fetch_script(script, from);
        }
        std::string agent = o.agent.empty() ? self_dir() + "/tarn-agent" : o.agent;
        std::string agent_bin = read_file(agent);
        if (agent_bin.compare(0, 4,
                              "\x7f"
                              "ELF") != 0)
            throw Error("tarn-agent " + agent + ": not an ELF binary");

        vm::CpioWriter cpio;
        for (const char* d : {"dev", "proc", "sys", "run", "tmp", "newroot", "lib", "lib/modules"})
            cpio.directory(d);
        // The kernel opens /dev/console for pid 1's stdio before devtmpfs is mounted.
        cpio.char_device("dev/console", 5, 1);
        cpio.file("init", agent_bin, 0755);
        std::string order, kept;
        try {
            order = read_file(from + "/modules/order");
        } catch (const Error& e) {
            if (e.code() != ENOENT) throw;
        }
        for (std::string_view line : lines(order)) {
            std::string name(line);
            if (name.empty() || !wanted_module(name)) continue;
            cpio.file("lib/modules/" + name, read_file(from + "/modules/" + name));
            kept += name + "\n";
        }
        cpio.file("lib/modules/order", kept);
        write_file_atomic(dir + "/initrd.cpio", cpio.finish(), 0644);

        std::string vmlinux = dir + "/vmlinux";
        if (std::filesystem::absolute(from + "/vmlinux") != std::filesystem::absolute(vmlinux)) {
            // A hard link where it can be (the kernel is 60+ MiB), else a copy.
            std::filesystem::remove(vmlinux + ".tmp", ec);
            std::filesystem::create_hard_link(from + "/vmlinux", vmlinux + ".tmp", ec);
            if (ec)
                std::filesystem::copy_file(from + "/vmlinux", vmlinux + ".tmp",
                                           std::filesystem::copy_options::overwrite_existing, ec);
            if (ec) throw Error("copy " + from + "/vmlinux", ec.value());
            std::filesystem::rename(vmlinux + ".tmp", vmlinux, ec);
            if (ec) throw Error("rename " + vmlinux, ec.value());
        }
        for (char& c : kept)
            if (c == '\n') c = ' ';
        try {
            write_file_atomic(dir + "/kernel-version", read_file(from + "/kernel-version"), 0644);
        } catch (const Error&) {
            // A kernel directory made by hand need not say.
        }
        std::cout << "kernel: " << vmlinux << "\ninitrd: " << dir << "/initrd.cpio (tarn-agent, modules: "
                  << (kept.empty() ? std::string("none") : kept.substr(0, kept.size() - 1)) << ")\n";
        vm::AccelChoice accel = vm::default_accel(g);
        std::cout << "accelerator: " << (accel.kvm ? "kvm" : "tcg") << " (auto: " << accel.reason << ")\n";
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("vm setup");
    }
}

}  // namespace tarn::runtime
