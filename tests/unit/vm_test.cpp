// The VM isolation mode's pure parts: the line protocol, the initramfs writer, the
// guest's view of the config (and the shares it needs), QEMU's command line, and how
// linux.resources size the VM.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"
#include "runtime/vm/cpio.hpp"
#include "runtime/vm/protocol.hpp"
#include "runtime/vm/vm.hpp"

namespace vm = tarn::runtime::vm;
namespace proto = tarn::vm;
using nlohmann::json;

TEST(VmProtocol, Base64RoundTripsEveryByte) {
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (size_t n : {0u, 1u, 2u, 3u, 4u, 255u, 256u}) {
        std::string s = all.substr(0, n);
        EXPECT_EQ(proto::base64_decode(proto::base64_encode(s)), s) << n;
    }
    EXPECT_EQ(proto::base64_encode("hi\n"), "aGkK");
    EXPECT_EQ(proto::base64_encode("a"), "YQ==");
    EXPECT_THROW(proto::base64_decode("a*b"), tarn::Error);
}

TEST(VmProtocol, LinesSplitAcrossReadsAndCarriageReturns) {
    proto::LineReader r;
    r.feed("{\"t\":\"rea");
    EXPECT_FALSE(r.next());
    r.feed("dy\"}\r\n{\"op\":\"start\"}\n");
    EXPECT_EQ(*r.next(), "{\"t\":\"ready\"}");
    EXPECT_EQ(*r.next(), "{\"op\":\"start\"}");
    EXPECT_FALSE(r.next());
}

TEST(VmProtocol, KernelMessagesAreNotMessages) {
    EXPECT_FALSE(proto::decode("[    1.234] virtio_mmio: probe"));
    EXPECT_FALSE(proto::decode("{\"x\":1}"));  // neither "t" nor "op"
    EXPECT_FALSE(proto::decode("[1,2]"));
    // A kernel message printed in front of a message on the same line.
    auto m = proto::decode("[ 2.0] random: crng init done{\"t\":\"exit\",\"code\":3}");
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["code"], 3);
    EXPECT_EQ(proto::encode({{"t", "ready"}}), "{\"t\":\"ready\"}\n");
}

TEST(VmCpio, NewcHeadersAndPadding) {
    vm::CpioWriter w;
    w.directory("dev");
    w.char_device("dev/console", 5, 1);
    w.file("/init", "abc", 0755);
    std::string a = w.finish();
    EXPECT_EQ(a.size() % 4, 0u);
    EXPECT_EQ(a.compare(0, 6, "070701"), 0);
    // Second entry: /dev/console, a character device 5:1 (rdevmajor, rdevminor fields).
    size_t console = a.find("dev/console");
    ASSERT_NE(console, std::string::npos);
    std::string hdr = a.substr(console - 110, 110);
    EXPECT_EQ(hdr.substr(14, 8), "00002180");  // S_IFCHR | 0600
    EXPECT_EQ(hdr.substr(78, 8), "00000005");
    EXPECT_EQ(hdr.substr(86, 8), "00000001");
    // The leading slash is dropped; the data follows the padded name.
    size_t init = a.find("init");
    ASSERT_NE(init, std::string::npos);
    EXPECT_EQ(a.substr(init - 110 + 54, 8), "00000003");  // filesize
    EXPECT_NE(a.find("abc"), std::string::npos);
    EXPECT_NE(a.find("TRAILER!!!"), std::string::npos);
}

TEST(VmConfig, GuestConfigRootsAtTheShareAndSharesBindSources) {
    char tmpl[] = "/tmp/tarn-vm-unit.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string bundle = tmpl;
    std::filesystem::create_directories(bundle + "/data");
    std::ofstream(bundle + "/hosts") << "127.0.0.1 localhost\n";
    json cfg = {{"ociVersion", "1.0.2"},
                {"root", {{"path", "rootfs"}, {"readonly", true}}},
                {"process", {{"args", {"sh"}}, {"cwd", "/"}}},
                {"mounts",
                 {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
                  {{"destination", "/data"}, {"type", "bind"}, {"source", bundle + "/data"}},
                  {{"destination", "/again"}, {"type", "bind"}, {"source", "data"}},
                  {{"destination", "/data-ro"}, {"source", "data"}, {"options", {"bind", "ro"}}},
                  {{"destination", "/etc/hosts"}, {"source", "hosts"}, {"options", {"rbind", "ro"}}}}},
                {"hooks", {{"prestart", {{{"path", "/bin/true"}}}}}}};
    vm::GuestConfig g = vm::guest_config(cfg.dump(), bundle);
    json j = json::parse(g.text);
    EXPECT_EQ(j["root"]["path"], "/run/tarn/rootfs");
    EXPECT_EQ(j["root"]["readonly"], true);
    ASSERT_EQ(j["mounts"].size(), 5u);
    EXPECT_EQ(j["mounts"][0]["source"], "proc");
    // A relative source is the bundle's; one directory with the same ro-ness is one share.
    EXPECT_EQ(j["mounts"][1]["source"], "/run/tarn/shares/0");
    EXPECT_EQ(j["mounts"][2]["source"], "/run/tarn/shares/0");
    EXPECT_EQ(j["mounts"][3]["source"], "/run/tarn/shares/1");
    EXPECT_EQ(j["mounts"][3]["options"], json({"bind", "ro"}));
    EXPECT_EQ(j["mounts"][4]["source"], "/run/tarn/shares/2/hosts");
    ASSERT_EQ(g.shares.size(), 3u);
    EXPECT_EQ(g.shares[0].tag, "bind0");
    EXPECT_EQ(g.shares[0].source, bundle + "/data");
    EXPECT_FALSE(g.shares[0].readonly);
    EXPECT_TRUE(g.shares[1].readonly);
    EXPECT_TRUE(g.shares[2].file);
    EXPECT_EQ(g.shares[2].source, bundle + "/hosts");
    EXPECT_FALSE(j.contains("hooks"));
    // Mount points the host makes for a read-only root: each destination, a file for a
    // file bind, none inside an earlier mount.
    ASSERT_EQ(g.mount_points.size(), 5u);
    EXPECT_EQ(g.mount_points[1].path, "/data");
    EXPECT_FALSE(g.mount_points[1].file);
    EXPECT_EQ(g.mount_points[4].path, "/etc/hosts");
    EXPECT_TRUE(g.mount_points[4].file);
    json nested = cfg;
    nested["mounts"] = {{{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}},
                        {{"destination", "/dev/pts"}, {"type", "devpts"}, {"source", "devpts"}},
                        {{"destination", "/devices/"}, {"type", "tmpfs"}, {"source", "tmpfs"}}};
    vm::GuestConfig n = vm::guest_config(nested.dump(), bundle);
    ASSERT_EQ(n.mount_points.size(), 2u);
    EXPECT_EQ(n.mount_points[0].path, "/dev");
    EXPECT_EQ(n.mount_points[1].path, "/devices");
    EXPECT_THROW(vm::guest_config("[1]", bundle), tarn::Error);

    json missing = cfg;
    missing["mounts"] = {{{"destination", "/x"}, {"type", "bind"}, {"source", "nonexistent"}}};
    try {
        vm::guest_config(missing.dump(), bundle);
        ADD_FAILURE() << "a missing bind source was accepted";
    } catch (const tarn::Error& e) {
        EXPECT_NE(std::string(e.what()).find("mount /x: source " + bundle + "/nonexistent"),
                  std::string::npos)
            << e.what();
    }
    // One transport per share, and microvm has 24 of them, one the rootfs's.
    json many = cfg;
    many["mounts"] = json::array();
    for (int i = 0; i <= 23; ++i) {
        std::filesystem::create_directories(bundle + "/d" + std::to_string(i));
        many["mounts"].push_back({{"destination", "/m" + std::to_string(i)},
                                  {"type", "bind"},
                                  {"source", "d" + std::to_string(i)}});
    }
    try {
        vm::guest_config(many.dump(), bundle);
        ADD_FAILURE() << "24 shares were accepted";
    } catch (const tarn::Error& e) {
        EXPECT_NE(std::string(e.what()).find("mount /m23: more than 23 host bind mounts"), std::string::npos)
            << e.what();
    }
    many["mounts"].erase(23);
    EXPECT_EQ(vm::guest_config(many.dump(), bundle).shares.size(), 23u);
    std::filesystem::remove_all(bundle);
}

static tarn::oci::Config with_resources(const json& res) {
    json cfg = {{"ociVersion", "1.0.2"},
                {"root", {{"path", "rootfs"}}},
                {"process", {{"args", {"sh"}}, {"cwd", "/"}}},
                {"linux", {{"resources", res}}}};
    return tarn::oci::parse_config(cfg.dump());
}

TEST(VmConfig, MemoryLimitSizesTheVm) {
    EXPECT_EQ(vm::memory_mib_for(with_resources(json::object()), 256), 256u);
    // The limit plus 96 MiB for the guest kernel and agent, never below 128 MiB.
    EXPECT_EQ(vm::memory_mib_for(with_resources({{"memory", {{"limit", 512 << 20}}}}), 256), 608u);
    EXPECT_EQ(vm::memory_mib_for(with_resources({{"memory", {{"limit", (64 << 20) + 1}}}}), 256), 161u);
    EXPECT_EQ(vm::memory_mib_for(with_resources({{"memory", {{"limit", 1 << 20}}}}), 256), 128u);
}

TEST(VmConfig, CpuQuotaGivesVcpus) {
    EXPECT_EQ(vm::cpus_for(with_resources(json::object()), 1, 8), 1u);
    EXPECT_EQ(vm::cpus_for(with_resources({{"cpu", {{"quota", 50000}, {"period", 100000}}}}), 1, 8), 1u);
    EXPECT_EQ(vm::cpus_for(with_resources({{"cpu", {{"quota", 250000}, {"period", 100000}}}}), 1, 8), 3u);
    // Never more than the host has.
    EXPECT_EQ(vm::cpus_for(with_resources({{"cpu", {{"quota", 800000}, {"period", 100000}}}}), 1, 2), 2u);
    EXPECT_EQ(vm::cpus_for(with_resources({{"cpu", {{"quota", -1}, {"period", 100000}}}}), 1, 8), 1u);
}

TEST(VmConfig, QemuCommandLineIsLean) {
    vm::Settings s;
    s.qemu = "/usr/bin/qemu-system-x86_64";
    s.kernel = "/k/vmlinux";
    s.initrd = "/k/initrd.cpio";
    s.tsc_khz = 2000000;
    vm::Devices d;
    d.rootfs = "/b/root,fs";
    d.rootfs_readonly = true;
    auto joined = [](const std::vector<std::string>& a) {
        std::string line;
        for (const auto& x : a) line += x + " ";
        return line;
    };
    std::string line = joined(vm::qemu_argv(s, "c1", d));
    EXPECT_NE(line.find("-accel tcg -M microvm -cpu qemu64 -smp 1 -m 256 -nodefaults"), std::string::npos)
        << line;
    EXPECT_NE(line.find("-name tarn-vm:c1"), std::string::npos);
    EXPECT_NE(line.find("tsc_early_khz=2000000"), std::string::npos);
    EXPECT_NE(line.find("pci=off"), std::string::npos);
    EXPECT_NE(line.find("path=/b/root,,fs,security_model=none,readonly=on"), std::string::npos) << line;
    EXPECT_EQ(line.find("vhost-user"), std::string::npos) << line;
    // Emulated SMP: one thread for all vCPUs.
    s.cpus = 2;
    line = joined(vm::qemu_argv(s, "c1", d));
    EXPECT_NE(line.find("-accel tcg,thread=single -M microvm -cpu qemu64 -smp 2 "), std::string::npos) << line;
    s.kvm = true;
    d.rootfs_readonly = false;
    line = joined(vm::qemu_argv(s, "c1", d));
    EXPECT_NE(line.find("-accel kvm -M microvm -cpu host -smp 2 "), std::string::npos) << line;
    s.kvm_cpu = "host,-arch-capabilities";
    line = joined(vm::qemu_argv(s, "c1", d));
    EXPECT_NE(line.find("-accel kvm -M microvm -cpu host,-arch-capabilities -smp 2 "), std::string::npos) << line;
    // QMP on the monitor's socket: a guest that stops (a KVM internal error) is seen at once.
    EXPECT_EQ(line.find("-mon"), std::string::npos) << "no QMP socket, no QMP";
    d.qmp_fd = 9;
    line = joined(vm::qemu_argv(s, "c1", d));
    EXPECT_NE(line.find("-chardev socket,id=qmp,fd=9 -mon chardev=qmp,mode=control"), std::string::npos) << line;
}

TEST(VmConfig, VirtiofsRootSharesGuestMemoryAndBindsAre9p) {
    vm::Settings s;
    s.qemu = "/usr/bin/qemu-system-x86_64";
    s.memory_mib = 300;
    vm::Devices d;
    d.rootfs = "/b/rootfs";
    d.virtiofs_fd = 7;
    d.shares.push_back({"bind0", "/srv/data", false, true, "/run/tarn/shares/0"});
    d.shares.push_back({"bind1", "/etc/hosts", true, false, "/run/tarn/shares/1"});
    d.dirs = {"/srv/data", "/run/tarn/state/c1/shares/1"};
    std::string line;
    for (const auto& x : vm::qemu_argv(s, "c1", d)) line += x + " ";
    EXPECT_NE(line.find("-M microvm,memory-backend=mem "), std::string::npos) << line;
    EXPECT_NE(line.find("-m 300 "), std::string::npos) << line;
    EXPECT_NE(line.find("memory-backend-memfd,id=mem,size=300M,share=on"), std::string::npos) << line;
    EXPECT_NE(
        line.find("-chardev socket,id=rootfs,fd=7 -device vhost-user-fs-device,chardev=rootfs,tag=rootfs"),
        std::string::npos)
        << line;
    EXPECT_EQ(line.find("mount_tag=rootfs"), std::string::npos) << line;
    EXPECT_NE(line.find("local,id=bind0,path=/srv/data,security_model=none,multidevs=remap,readonly=on"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("path=/run/tarn/state/c1/shares/1,security_model=none,multidevs=remap -device "
                        "virtio-9p-device,fsdev=bind1,mount_tag=bind1"),
              std::string::npos)
        << line;
}

TEST(VmConfig, PoolVmsHaveAStagingShareAndTheTemplatesMemoryFile) {
    vm::Settings s;
    s.qemu = "/usr/bin/qemu-system-x86_64";
    s.memory_mib = 128;
    vm::Devices d;
    d.rootfs = "/p/v-1/shares/overlay/root";
    d.staging = "/p/v-1/shares/staging";
    d.memory_file = "/p/v.memory";
    d.memory_shared = true;  // the snapshot guest writes through
    auto joined = [&] {
        std::string line;
        for (const auto& x : vm::qemu_argv(s, "v-1", d)) line += x + " ";
        return line;
    };
    std::string line = joined();
    EXPECT_NE(line.find("-M microvm,memory-backend=mem "), std::string::npos) << line;
    EXPECT_NE(line.find("-object memory-backend-file,id=mem,size=128M,mem-path=/p/v.memory,share=on "),
              std::string::npos)
        << line;
    // Whatever a lease attaches below the staging directory is another file system.
    EXPECT_NE(line.find("local,id=staging,path=/p/v-1/shares/staging,security_model=none,multidevs=remap -device "
                        "virtio-9p-device,fsdev=staging,mount_tag=staging"),
              std::string::npos)
        << line;
    // A restored VM maps it copy-on-write.
    d.memory_shared = false;
    line = joined();
    EXPECT_NE(line.find("mem-path=/p/v.memory,share=off "), std::string::npos) << line;
    // No file: anonymous memory, no backend.
    d.memory_file.clear();
    line = joined();
    EXPECT_EQ(line.find("memory-backend"), std::string::npos) << line;
}

TEST(VmConfig, TheLeaseKeyIsWhatAVmFixesAtBoot) {
    vm::Settings s;
    s.qemu = "/usr/bin/qemu-system-x86_64";
    s.kernel = "/k/vmlinux";
    s.initrd = "/k/initrd.cpio";
    s.memory_mib = 256;
    s.cpus = 1;
    nlohmann::json k = vm::lease_key(s);
    EXPECT_EQ(k, (nlohmann::json{{"qemu", "/usr/bin/qemu-system-x86_64"},
                                 {"kernel", "/k/vmlinux"},
                                 {"initrd", "/k/initrd.cpio"},
                                 {"accel", "tcg"},
                                 {"memoryMib", 256},
                                 {"cpus", 1}}));
    // What a pool's snapshot guest adds to its command line is not the bundle's business.
    vm::Settings snap = s;
    snap.extra_append = "init_on_free=1";
    snap.virtiofsd.clear();
    EXPECT_EQ(vm::lease_key(snap), k);
    s.memory_mib = 384;
    EXPECT_NE(vm::lease_key(s), k);
}

TEST(VmSelect, FlagThenAnnotation) {
    tarn::runtime::GlobalOptions g;
    g.vm_config = "/nonexistent/tarn-vm.json-unused";
    tarn::oci::Config cfg = with_resources(json::object());
    g.isolation = "vm";
    EXPECT_TRUE(vm::selected(g, cfg));
    g.isolation = "container";
    cfg.annotations["tarn.isolation"] = "vm";
    EXPECT_FALSE(vm::selected(g, cfg));
    g.isolation.clear();
    EXPECT_TRUE(vm::selected(g, cfg));
    cfg.annotations["tarn.isolation"] = "kvm";
    EXPECT_THROW(vm::selected(g, cfg), tarn::Error);
}

// ---- the accelerator -----------------------------------------------------------------

TEST(VmAccel, ValuesAndTheirErrors) {
    EXPECT_EQ(vm::parse_accel("", "x"), vm::Accel::automatic);
    EXPECT_EQ(vm::parse_accel("auto", "x"), vm::Accel::automatic);
    EXPECT_EQ(vm::parse_accel("kvm", "x"), vm::Accel::kvm);
    EXPECT_EQ(vm::parse_accel("tcg", "x"), vm::Accel::tcg);
    try {
        vm::parse_accel("hvf", "annotation tarn.vm.accel");
        FAIL() << "hvf accepted";
    } catch (const tarn::Error& e) {
        EXPECT_STREQ(e.what(), "annotation tarn.vm.accel: expected \"auto\", \"kvm\" or \"tcg\", got \"hvf\"");
    }
}

TEST(VmAccel, AutoTakesKvmOnlyWhereItCanRunAGuest) {
    vm::KvmFacts working;
    working.device = true;
    working.hw_virt = true;
    working.modules = {"kvm_amd"};
    vm::AccelChoice c = vm::choose_accel(vm::Accel::automatic, working);
    EXPECT_TRUE(c.kvm);
    EXPECT_TRUE(c.fallback) << "a KVM that auto chose may still fail: TCG is the fallback";
    EXPECT_NE(c.reason.find("kvm_amd"), std::string::npos) << c.reason;

    // The software KVM layer of nested clouds: the device works, the CPU has no vmx/svm.
    vm::KvmFacts pvm = working;
    pvm.hw_virt = false;
    pvm.modules = {"kvm_pvm"};
    c = vm::choose_accel(vm::Accel::automatic, pvm);
    EXPECT_FALSE(c.kvm);
    EXPECT_NE(c.reason.find("no vmx or svm flag"), std::string::npos) << c.reason;
    EXPECT_NE(c.reason.find("kvm_pvm"), std::string::npos) << c.reason;
    // ... unless told to trust it (a guest kernel built for that backend); still with
    // the fallback.
    c = vm::choose_accel(vm::Accel::automatic, pvm, false);
    EXPECT_TRUE(c.kvm);
    EXPECT_TRUE(c.fallback);

    vm::KvmFacts absent;
    absent.device_error = "open: no such file or directory";
    c = vm::choose_accel(vm::Accel::automatic, absent);
    EXPECT_FALSE(c.kvm);
    EXPECT_NE(c.reason.find("/dev/kvm is not usable (open: no such file or directory)"), std::string::npos);

    vm::KvmFacts failed = working;
    failed.failed_before = "qemu stopped the guest (internal-error, KVM)";
    c = vm::choose_accel(vm::Accel::automatic, failed);
    EXPECT_FALSE(c.kvm);
    EXPECT_NE(c.reason.find("earlier on this host: qemu stopped the guest"), std::string::npos) << c.reason;
}

TEST(VmAccel, ForcedValuesAreTakenAsTheyAre) {
    vm::KvmFacts none;  // no device at all
    vm::AccelChoice c = vm::choose_accel(vm::Accel::kvm, none);
    EXPECT_TRUE(c.kvm);
    EXPECT_FALSE(c.fallback) << "forced KVM fails with KVM's error, never silently under TCG";
    vm::KvmFacts working;
    working.device = working.hw_virt = true;
    c = vm::choose_accel(vm::Accel::tcg, working);
    EXPECT_FALSE(c.kvm);
}

TEST(VmAccel, RememberedFailureIsKeyedOnHostQemuAndKernel) {
    std::filesystem::path dir = std::filesystem::temp_directory_path() / "tarn-accel-test";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "qemu") << "q";
    std::ofstream(dir / "vmlinux") << "k";
    std::string key = vm::verdict_key(dir / "qemu", dir / "vmlinux");
    std::string file = vm::verdict_file(dir.string());
    vm::remember_kvm_failure(file, key, "qemu stopped the guest (internal-error, KVM)");
    // A working /dev/kvm is needed for the verdict to matter; where there is none the
    // facts say so first.
    vm::KvmFacts f = vm::kvm_facts(file, key);
    if (f.device) {
        EXPECT_EQ(f.failed_before, "qemu stopped the guest (internal-error, KVM)");
    }
    // A new kernel (another size) is tried under KVM again.
    std::ofstream(dir / "vmlinux") << "kernel 2";
    EXPECT_NE(vm::verdict_key(dir / "qemu", dir / "vmlinux"), key);
    EXPECT_EQ(vm::kvm_facts(file, vm::verdict_key(dir / "qemu", dir / "vmlinux")).failed_before, "");
    std::filesystem::remove_all(dir);
}
