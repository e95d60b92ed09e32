// Which bundles run in a VM, and the VM's settings: kernel, initramfs, QEMU, size.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "runtime/vm/vm.hpp"

namespace tarn::runtime::vm {
namespace {

// Kernel and agent overhead on top of the workload's memory limit: Debian's kernel
// with the agent runs in about 60 MiB; the rest is page cache for the shared root.
constexpr unsigned kOverheadMib = 96;
constexpr unsigned kMinMemoryMib = 128;

nlohmann::json load_config_file(const GlobalOptions& g, std::string& path) {
    path = g.vm_config.empty() ? std::string(kDefaultConfigFile) : g.vm_config;
    std::string text;
    try {
        text = read_file(path);
    } catch (const Error& e) {
        // The default file is optional; one named with --vm-config is not.
        if (e.code() == ENOENT && g.vm_config.empty()) return nlohmann::json::object();
        throw;
    }
    check_json_bounds(text, "vm config " + path);
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("vm config " + path + ": not a JSON object");
    return j;
}

std::string string_key(const nlohmann::json& j, const std::string& key, const std::string& path) {
    if (!j.contains(key)) return "";
    if (!j[key].is_string()) throw Error("vm config " + path + ": " + key + ": expected string");
    return j[key].get<std::string>();
}

unsigned unsigned_key(const nlohmann::json& j, const std::string& key, const std::string& path,
                      unsigned dflt) {
    if (!j.contains(key)) return dflt;
    if (!j[key].is_number_unsigned() || j[key].get<uint64_t>() == 0 || j[key].get<uint64_t>() > 1u << 20)
        throw Error("vm config " + path + ": " + key + ": expected a positive integer");
    return j[key].get<unsigned>();
}

std::string annotation(const oci::Config& cfg, const std::string& key) {
    auto it = cfg.annotations.find(key);
    return it == cfg.annotations.end() ? std::string() : it->second;
}

std::string find_in_path(const std::string& name) {
    if (name.find('/') != std::string::npos) return name;
    const char* path = std::getenv("PATH");
    std::string dirs = path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    size_t pos = 0;
    while (pos <= dirs.size()) {
        size_t colon = dirs.find(':', pos);
        std::string dir = dirs.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        if (colon == std::string::npos) break;
        pos = colon + 1;
    }
    return "";
}

void require_file(const std::string& what, const std::string& path, const std::string& hint) {
    struct stat st;
    if (::stat(path.c_str(), &st) < 0)
        throw Error(what + " " + path + ": " + Error::errno_text(errno) + hint);
    if (!S_ISREG(st.st_mode)) throw Error(what + " " + path + ": not a regular file");
}

unsigned host_cpus() {
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<unsigned>(n) : 1;
}

unsigned host_tsc_khz() {
    // "cpu MHz : 2994.374": the guest's early TSC calibration is unreliable under TCG
    // (a microvm guest can hang at "Marking TSC unstable" without it).
    try {
        std::string text = read_file("/proc/cpuinfo");
        size_t pos = text.find("cpu MHz");
        if (pos == std::string::npos) return 0;
        size_t colon = text.find(':', pos);
        if (colon == std::string::npos) return 0;
        return static_cast<unsigned>(std::strtod(text.c_str() + colon + 1, nullptr) * 1000);
    } catch (const Error&) {
        return 0;
    }
}

// The accelerator: --vm-accel, else the tarn.vm.accel annotation, else vm.json's
// "accel"; auto by default.
void choose(const GlobalOptions& g, const oci::Config& cfg, const nlohmann::json& file, const std::string& path,
            Settings& s) {
    Accel want = Accel::automatic;
    if (!g.vm_accel.empty())
        want = parse_accel(g.vm_accel, "--vm-accel");
    else if (std::string a = annotation(cfg, "tarn.vm.accel"); !a.empty())
        want = parse_accel(a, "annotation tarn.vm.accel");
    else
        want = parse_accel(string_key(file, "accel", path), "vm config " + path + ": accel");
    bool hw_check = true;
    if (file.contains("kvm_hw_check")) {
        if (!file["kvm_hw_check"].is_boolean())
            throw Error("vm config " + path + ": kvm_hw_check: expected true or false");
        hw_check = file["kvm_hw_check"].get<bool>();
    }
    s.verdict_file = verdict_file(g.root);
    s.verdict_key = verdict_key(s.qemu, s.kernel);
    KvmFacts facts = want == Accel::automatic ? kvm_facts(s.verdict_file, s.verdict_key) : KvmFacts{};
    AccelChoice c = choose_accel(want, facts, hw_check);
    s.kvm = c.kvm;
    s.kvm_fallback = c.fallback;
    s.accel_reason = c.reason;
    log_debug(std::string("vm: accelerator ") + (c.kvm ? "kvm" : "tcg") + ": " + c.reason);
}

}  // namespace

AccelChoice default_accel(const GlobalOptions& g) {
    oci::Config none;
    std::string path;
    nlohmann::json file = load_config_file(g, path);
    Settings s;
    std::string dir = string_key(file, "dir", path);
    s.kernel = string_key(file, "kernel", path);
    if (s.kernel.empty()) s.kernel = (dir.empty() ? std::string(kDefaultDir) : dir) + "/vmlinux";
    std::string qemu = string_key(file, "qemu", path);
    s.qemu = find_in_path(qemu.empty() ? "qemu-system-x86_64" : qemu);
    choose(g, none, file, path, s);
    return {s.kvm, s.kvm_fallback, s.accel_reason};
}

std::string default_virtiofsd() {
    for (const char* p : {"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"})
        if (::access(p, X_OK) == 0) return p;
    return find_in_path("virtiofsd");
}

bool selected(const GlobalOptions& g, const oci::Config& cfg) {
    std::string mode = g.isolation, source = "--isolation";
    if (mode.empty()) {
        mode = annotation(cfg, "tarn.isolation");
        source = "annotation tarn.isolation";
    }
    if (mode.empty()) {
        std::string path;
        nlohmann::json file = load_config_file(g, path);
        mode = string_key(file, "isolation", path);
        source = "vm config " + path + ": isolation";
    }
    if (mode.empty() || mode == "container") return false;
    if (mode == "vm") return true;
    throw Error(source + ": expected \"vm\" or \"container\", got \"" + mode + "\"");
}

unsigned memory_mib_for(const oci::Config& cfg, unsigned default_mib) {
    if (cfg.linux && cfg.linux->resources && cfg.linux->resources->memory &&
        cfg.linux->resources->memory->limit) {
        int64_t limit = *cfg.linux->resources->memory->limit;
        if (limit > 0) {
            uint64_t mib = (static_cast<uint64_t>(limit) + (1 << 20) - 1) >> 20;
            return std::max<unsigned>(static_cast<unsigned>(std::min<uint64_t>(mib, 1 << 20)) + kOverheadMib,
                                      kMinMemoryMib);
        }
    }
    return std::max(default_mib, kMinMemoryMib);
}

unsigned cpus_for(const oci::Config& cfg, unsigned default_cpus, unsigned host) {
    unsigned n = default_cpus;
    if (cfg.linux && cfg.linux->resources && cfg.linux->resources->cpu) {
        const oci::Cpu& c = *cfg.linux->resources->cpu;
        if (c.quota && *c.quota > 0 && c.period && *c.period > 0)
            n = static_cast<unsigned>((static_cast<uint64_t>(*c.quota) + *c.period - 1) / *c.period);
    }
    return std::clamp(n, 1u, std::max(host, 1u));
}

Settings resolve(const GlobalOptions& g, const oci::Config& cfg) {
    std::string path;
    nlohmann::json file = load_config_file(g, path);
    std::string dir = string_key(file, "dir", path);
    if (dir.empty()) dir = kDefaultDir;
    const std::string setup_hint = " (run `tarn vm setup`, or name one with --vm-kernel/--vm-initrd)";

    Settings s;
    s.kernel = !g.vm_kernel.empty() ? g.vm_kernel : annotation(cfg, "tarn.vm.kernel");
    if (s.kernel.empty()) s.kernel = string_key(file, "kernel", path);
    if (s.kernel.empty()) s.kernel = dir + "/vmlinux";
    s.initrd = !g.vm_initrd.empty() ? g.vm_initrd : annotation(cfg, "tarn.vm.initrd");
    if (s.initrd.empty()) s.initrd = string_key(file, "initrd", path);
    if (s.initrd.empty()) s.initrd = dir + "/initrd.cpio";
    require_file("vm kernel", s.kernel, setup_hint);
    require_file("vm initrd", s.initrd, setup_hint);

    std::string qemu = string_key(file, "qemu", path);
    if (qemu.empty()) qemu = "qemu-system-x86_64";
    s.qemu = find_in_path(qemu);
    if (s.qemu.empty() || ::access(s.qemu.c_str(), X_OK) < 0)
        throw Error("qemu " + qemu + ": not found (install Debian's qemu-system-x86, or set \"qemu\" in " +
                    path + ")");

    s.timeout_seconds = unsigned_key(file, "timeout_seconds", path, s.timeout_seconds);
    if (std::string t = annotation(cfg, "tarn.vm.timeout"); !t.empty()) {
        char* end = nullptr;
        unsigned long v = std::strtoul(t.c_str(), &end, 10);
        if (*end || v == 0 || v > 3600)
            throw Error("annotation tarn.vm.timeout: expected seconds (1-3600), got \"" + t + "\"");
        s.timeout_seconds = static_cast<unsigned>(v);
    }
    s.memory_mib = memory_mib_for(cfg, unsigned_key(file, "memory_mib", path, s.memory_mib));
    s.cpus = cpus_for(cfg, unsigned_key(file, "cpus", path, s.cpus), host_cpus());
    choose(g, cfg, file, path, s);
    if (std::string cpu = string_key(file, "kvm_cpu", path); !cpu.empty()) s.kvm_cpu = cpu;
    s.tsc_khz = host_tsc_khz();

    std::string share = string_key(file, "share", path);
    if (share.empty()) share = "auto";
    if (share != "auto" && share != "virtiofs" && share != "9p")
        throw Error("vm config " + path + ": share: expected \"auto\", \"virtiofs\" or \"9p\", got \"" +
                    share + "\"");
    if (share != "9p") {
        std::string named = string_key(file, "virtiofsd", path);
        if (!named.empty()) {
            s.virtiofsd = find_in_path(named);
            if (s.virtiofsd.empty() || ::access(s.virtiofsd.c_str(), X_OK) < 0)
                throw Error("virtiofsd " + named + ": not found (vm config " + path + ": virtiofsd)");
        } else {
            s.virtiofsd = default_virtiofsd();
        }
        if (s.virtiofsd.empty() && share == "virtiofs")
            throw Error("vm config " + path +
                        ": share: virtiofs, but no virtiofsd in /usr/libexec, "
                        "/usr/lib/qemu or PATH (install Debian's qemu-system-common, or set \"virtiofsd\")");
        if (s.virtiofsd.empty()) log_debug("vm: no virtiofsd found: the rootfs goes over virtio-9p");
    }
    return s;
}

GuestConfig guest_config(const std::string& config_text, const std::string& bundle) {
    check_json_bounds(config_text, "config.json");
    nlohmann::json j = nlohmann::json::parse(config_text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("config.json: not a JSON object");
    GuestConfig g;
    j["root"]["path"] = std::string(kGuestRootfs);
    if (j.contains("mounts") && j["mounts"].is_array()) {
        std::vector<std::string> earlier;
        for (nlohmann::json& m : j["mounts"]) {
            bool bind = m.value("type", "") == "bind", readonly = false;
            if (m.contains("options") && m["options"].is_array())
                for (const auto& o : m["options"]) {
                    if (o == "bind" || o == "rbind") bind = true;
                    if (o == "ro") readonly = true;
                }
            std::string destination = m.value("destination", "");
            while (destination.size() > 1 && destination.back() == '/') destination.pop_back();
            bool in_earlier = std::any_of(earlier.begin(), earlier.end(), [&](const std::string& e) {
                return destination == e || destination.compare(0, e.size() + 1, e + "/") == 0 || e == "/";
            });
            earlier.push_back(destination);
            if (!in_earlier && !destination.empty()) g.mount_points.push_back({destination, false});
            if (!bind) continue;
            std::string what = "mount " + m.value("destination", "");
            std::string source = m.value("source", "");
            if (source.empty()) throw Error(what + ": source: required for a bind mount");
            if (source[0] != '/') source = bundle + "/" + source;
            struct stat st;
            if (::stat(source.c_str(), &st) < 0) throw_errno(what + ": source " + source);
            bool file = !S_ISDIR(st.st_mode);
            if (!in_earlier && !destination.empty()) g.mount_points.back().file = file;
            // Binds of one directory with the same ro-ness share a device: transports
            // are few. A file has its own, as each is staged apart.
            auto same = std::find_if(g.shares.begin(), g.shares.end(), [&](const Share& s) {
                return !file && !s.file && s.source == source && s.readonly == readonly;
            });
            if (same == g.shares.end()) {
                if (g.shares.size() == kMaxShares)
                    throw Error(what + ": more than " + std::to_string(kMaxShares) +
                                " host bind mounts: microvm has " + std::to_string(kMaxShares + 1) +
                                " virtio-mmio transports and the rootfs takes one");
                std::string n = std::to_string(g.shares.size());
                g.shares.push_back({"bind" + n, source, file, readonly, std::string(kGuestShares) + "/" + n});
                same = g.shares.end() - 1;
            }
            std::string base = source.substr(source.find_last_of('/') + 1);
            m["source"] = file ? same->guest_path + "/" + base : same->guest_path;
        }
    }
    // Hooks are host programs: the host runs those it can (container_create), and the
    // guest none.
    j.erase("hooks");
    g.text = j.dump();
    return g;
}

std::vector<std::string> qemu_argv(const Settings& s, const std::string& id, const Devices& d) {
    // The kernel command line and device set are kept minimal for boot time: one
    // serial port (also the agent's channel), no PCI, virtio-mmio found through ACPI.
    std::string append =
        "console=ttyS0 panic=-1 quiet loglevel=1 cryptomgr.notests tsc=reliable no_timer_check "
        "mitigations=off "
        "8250.nr_uarts=1 random.trust_cpu=on pci=off";
    if (s.tsc_khz > 0) append += " tsc_early_khz=" + std::to_string(s.tsc_khz);
    if (!s.extra_append.empty()) append += " " + s.extra_append;
    bool virtiofs = d.virtiofs_fd >= 0;
    std::string memory = std::to_string(s.memory_mib);
    // vhost-user: virtiofsd maps the guest's memory, so it must be a shareable memfd,
    // not anonymous memory.
    bool file_memory = !d.memory_file.empty();
    std::string machine = virtiofs || file_memory ? "microvm,memory-backend=mem" : "microvm";
    // Emulated SMP runs its vCPUs round-robin in one thread. With a thread per vCPU,
    // QEMU 7.2 now and then livelocks a Linux guest while the kernel patches its own
    // code across CPUs (module loads, static keys, SMP bring-up): both vCPUs spin and
    // the guest reports soft lockups. Here that hit about one 2-vCPU create in a
    // hundred, and two of about fifteen runs toggling a static key 400-3000 times.
    // One thread costs a 2-vCPU guest about 0.5 s of boot, and parallelism that two
    // emulated CPUs on a small host hardly had.
    std::string accel = s.kvm ? "kvm" : s.cpus > 1 ? "tcg,thread=single" : "tcg";
    std::vector<std::string> a = {s.qemu,
                                  "-name",
                                  "tarn-vm:" + id,
                                  "-accel",
                                  accel,
                                  "-M",
                                  machine,
                                  "-cpu",
                                  s.kvm ? s.kvm_cpu : "qemu64",
                                  "-smp",
                                  std::to_string(s.cpus),
                                  "-m",
                                  memory,
                                  "-nodefaults",
                                  "-no-user-config",
                                  "-display",
                                  "none",
                                  "-no-reboot",
                                  "-chardev",
                                  "stdio,id=agent,signal=off",
                                  "-serial",
                                  "chardev:agent",
                                  "-kernel",
                                  s.kernel,
                                  "-initrd",
                                  s.initrd,
                                  "-append",
                                  append};
    // Restored from a snapshot (migrate-incoming over QMP) instead of booted.
    if (d.incoming) a.insert(a.end(), {"-incoming", "defer"});
    if (d.qmp_fd >= 0)
        // QMP: the STOP event tells at once that the guest halted (a KVM internal error
        // pauses it and leaves QEMU running).
        a.insert(a.end(), {"-chardev", "socket,id=qmp,fd=" + std::to_string(d.qmp_fd), "-mon",
                           "chardev=qmp,mode=control"});
    // A comma in a path would split QEMU's option string: QEMU escapes it as ",,".
    auto escaped = [](const std::string& path) {
        std::string e;
        for (char c : path) {
            e += c;
            if (c == ',') e += ',';
        }
        return e;
    };
    auto ninep = [&](const std::string& tag, const std::string& dir, bool readonly, bool remap) {
        a.insert(a.end(), {"-fsdev",
                           "local,id=" + tag + ",path=" + escaped(dir) + ",security_model=none" +
                               (remap ? ",multidevs=remap" : "") + (readonly ? ",readonly=on" : ""),
                           "-device", "virtio-9p-device,fsdev=" + tag + ",mount_tag=" + tag});
    };
    if (file_memory && !virtiofs)
        a.insert(a.end(), {"-object", "memory-backend-file,id=mem,size=" + memory + "M,mem-path=" + escaped(d.memory_file) +
                                          ",share=" + (d.memory_shared ? "on" : "off")});
    if (virtiofs) {
        // virtiofsd's libvhost-user speaks virtio 1.0 only, and microvm's virtio-mmio
        // transports are legacy (version 1) unless told otherwise.
        a.insert(a.end(), {"-global", "virtio-mmio.force-legacy=false", "-object",
                           "memory-backend-memfd,id=mem,size=" + memory + "M,share=on", "-chardev",
                           "socket,id=rootfs,fd=" + std::to_string(d.virtiofs_fd), "-device",
                           "vhost-user-fs-device,chardev=rootfs,tag=rootfs"});
    } else {
        ninep("rootfs", d.rootfs, d.rootfs_readonly, false);
    }
    // multidevs=remap: a bind source is any host directory, often with mounts under
    // it, and inode numbers from several file systems would collide in the guest.
    for (size_t i = 0; i < d.shares.size(); ++i)
        ninep(d.shares[i].tag, i < d.dirs.size() ? d.dirs[i] : d.shares[i].source, d.shares[i].readonly,
              true);
    // The staging share holds whatever a lease attaches: mounts of other file systems.
    if (!d.staging.empty()) ninep("staging", d.staging, false, true);
    return a;
}

nlohmann::json lease_key(const Settings& s) {
    return {{"qemu", s.qemu},     {"kernel", s.kernel},         {"initrd", s.initrd},
            {"accel", s.kvm ? "kvm" : "tcg"}, {"memoryMib", s.memory_mib}, {"cpus", s.cpus}};
}

}  // namespace tarn::runtime::vm
