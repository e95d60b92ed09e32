// The VM isolation mode's pure parts: the line protocol, the initramfs writer, the
// guest's view of the config, and how linux.resources size the VM.
#include <gtest/gtest.h>

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

TEST(VmConfig, GuestConfigRootsAtTheShareAndDropsHostPaths) {
    json cfg = {{"ociVersion", "1.0.2"},
                {"root", {{"path", "rootfs"}, {"readonly", true}}},
                {"process", {{"args", {"sh"}}, {"cwd", "/"}}},
                {"mounts",
                 {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
                  {{"destination", "/data"}, {"type", "bind"}, {"source", "/srv/data"}},
                  {{"destination", "/etc/hosts"}, {"source", "/etc/hosts"}, {"options", {"rbind", "ro"}}}}},
                {"hooks", {{"prestart", {{{"path", "/bin/true"}}}}}}};
    std::vector<std::string> dropped;
    json g = json::parse(vm::guest_config(cfg.dump(), dropped));
    EXPECT_EQ(g["root"]["path"], "/run/tarn/rootfs");
    EXPECT_EQ(g["root"]["readonly"], true);
    ASSERT_EQ(g["mounts"].size(), 1u);
    EXPECT_EQ(g["mounts"][0]["destination"], "/proc");
    EXPECT_FALSE(g.contains("hooks"));
    ASSERT_EQ(dropped.size(), 3u);
    EXPECT_NE(dropped[0].find("/srv/data on /data"), std::string::npos);
    EXPECT_THROW(vm::guest_config("[1]", dropped), tarn::Error);
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
    std::vector<std::string> a = vm::qemu_argv(s, "c1", "/b/root,fs", true);
    std::string line;
    for (const auto& x : a) line += x + " ";
    EXPECT_NE(line.find("-accel tcg -M microvm -cpu qemu64 -smp 1 -m 256 -nodefaults"), std::string::npos)
        << line;
    EXPECT_NE(line.find("-name tarn-vm:c1"), std::string::npos);
    EXPECT_NE(line.find("tsc_early_khz=2000000"), std::string::npos);
    EXPECT_NE(line.find("pci=off"), std::string::npos);
    EXPECT_NE(line.find("path=/b/root,,fs,security_model=none,readonly=on"), std::string::npos) << line;
    s.kvm = true;
    a = vm::qemu_argv(s, "c1", "/b", false);
    line.clear();
    for (const auto& x : a) line += x + " ";
    EXPECT_NE(line.find("-accel kvm -M microvm -cpu host"), std::string::npos) << line;
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
