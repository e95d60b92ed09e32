// The systemd driver's pure parts: linux.cgroupsPath "slice:prefix:name" -> unit and
// cgroup, linux.resources -> unit properties, and their D-Bus encoding; which sockets
// reach the system manager and an unprivileged caller's user manager.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "cgroups/dbus.hpp"
#include "cgroups/detail.hpp"

using namespace tarn;
using namespace tarn::cgroups;
using detail::Property;

namespace {

systemd::Unit unit(std::string_view path, std::string_view id = "c1") {
    return detail::unit_for(path, id);
}

std::string unit_error(std::string_view path, std::string_view id = "c1") {
    try {
        detail::unit_for(path, id);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

std::vector<Property> props(const oci::Resources& r, unsigned version = 252, bool unified = true) {
    return detail::unit_properties(r, version, unified);
}

constexpr uint64_t kInfinity = UINT64_MAX;

}  // namespace

// ---- slice:prefix:name ----------------------------------------------------------------

TEST(SystemdUnit, UserManagerDefaultsToUserSlice) {
    // An unprivileged caller's unit is in its own user manager, whose tree has user.slice
    // (runc's and crun's rootless default parent).
    EXPECT_EQ(detail::unit_for("", "web", true),
              (systemd::Unit{"tarn-web.scope", "user.slice", "/user.slice/tarn-web.scope", true}));
    EXPECT_EQ(detail::unit_for(":tarn:c1", "c1", true).path, "/user.slice/tarn-c1.scope");
    EXPECT_EQ(detail::unit_for("app.slice:box:c1", "c1", true),
              (systemd::Unit{"box-c1.scope", "app.slice", "/app.slice/box-c1.scope", true}));
    EXPECT_EQ(detail::unit_for("-:tarn:c1", "c1", true).path, "/tarn-c1.scope");
    EXPECT_FALSE(detail::unit_for("", "web").user);
    try {
        detail::unit_for("/tarn/c1", "c1", true);
        ADD_FAILURE() << "a cgroupfs path was taken";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("\"user.slice:tarn:c1\""), std::string::npos) << e.what();
    }
}

TEST(SystemdUnit, ScopeInTheNamedSlice) {
    EXPECT_EQ(unit("system.slice:tarn:c1"),
              (systemd::Unit{"tarn-c1.scope", "system.slice", "/system.slice/tarn-c1.scope"}));
    EXPECT_EQ(unit("machine.slice:cri-containerd:abc"),
              (systemd::Unit{"cri-containerd-abc.scope", "machine.slice",
                             "/machine.slice/cri-containerd-abc.scope"}));
}

TEST(SystemdUnit, EmptyCgroupsPathIsSystemSliceTarnId) {
    EXPECT_EQ(unit("", "web"),
              (systemd::Unit{"tarn-web.scope", "system.slice", "/system.slice/tarn-web.scope"}));
}

TEST(SystemdUnit, EmptySliceIsSystemSlice) {
    EXPECT_EQ(unit(":tarn:c1").path, "/system.slice/tarn-c1.scope");
}

TEST(SystemdUnit, EmptyPrefixIsJustTheName) {
    EXPECT_EQ(unit("system.slice::c1").name, "c1.scope");
}

TEST(SystemdUnit, DashedSlicesNest) {
    // kubelet's layout: pods under kubepods-burstable-pod<uid>.slice.
    EXPECT_EQ(
        unit("kubepods-burstable-pod12.slice:cri-containerd:abc").path,
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope");
    EXPECT_EQ(detail::expand_slice("a-b.slice", "x"), "/a.slice/a-b.slice");
    EXPECT_EQ(detail::expand_slice("user-1000.slice", "x"), "/user.slice/user-1000.slice");
}

TEST(SystemdUnit, RootSlice) {
    EXPECT_EQ(unit("-:tarn:c1"), (systemd::Unit{"tarn-c1.scope", "-.slice", "/tarn-c1.scope"}));
    EXPECT_EQ(unit("-.slice:tarn:c1").path, "/tarn-c1.scope");
    EXPECT_EQ(detail::expand_slice("-.slice", "x"), "/");
}

TEST(SystemdUnit, NameEndingInSliceMakesASlice) {
    // The prefix is not used, and a slice's place follows from its own name.
    EXPECT_EQ(unit("system.slice:tarn:box.slice"), (systemd::Unit{"box.slice", "-.slice", "/box.slice"}));
    EXPECT_EQ(unit(":x:pool-box.slice"),
              (systemd::Unit{"pool-box.slice", "pool.slice", "/pool.slice/pool-box.slice"}));
}

TEST(SystemdUnit, MalformedPathsNameTheField) {
    EXPECT_EQ(unit_error("/tarn/c1"),
              "linux.cgroupsPath \"/tarn/c1\": expected \"slice:prefix:name\" with --systemd-cgroup (e.g. "
              "\"system.slice:tarn:c1\")");
    EXPECT_EQ(unit_error("a:b:c:d"),
              "linux.cgroupsPath \"a:b:c:d\": expected \"slice:prefix:name\" with --systemd-cgroup (e.g. "
              "\"system.slice:tarn:c1\")");
    EXPECT_EQ(unit_error("system.slice:tarn:"),
              "linux.cgroupsPath \"system.slice:tarn:\": the name part is empty");
    EXPECT_EQ(unit_error("user.slice/user-1000.slice:tarn:c1"),
              "linux.cgroupsPath \"user.slice/user-1000.slice:tarn:c1\": slice "
              "\"user.slice/user-1000.slice\": must "
              "not contain '/' (a sub-slice is written with dashes: \"a-b.slice\")");
    EXPECT_EQ(
        unit_error("system:tarn:c1"),
        "linux.cgroupsPath \"system:tarn:c1\": slice \"system\": not a slice unit name (\"name.slice\")");
    EXPECT_EQ(unit_error("a--b.slice:tarn:c1"),
              "linux.cgroupsPath \"a--b.slice:tarn:c1\": slice \"a--b.slice\": invalid dashes");
    EXPECT_EQ(unit_error("-a.slice:tarn:c1"),
              "linux.cgroupsPath \"-a.slice:tarn:c1\": slice \"-a.slice\": invalid dashes");
    EXPECT_EQ(
        unit_error("system.slice:tarn:a b"),
        "linux.cgroupsPath \"system.slice:tarn:a b\": prefix and name may hold only letters, digits and "
        "\":_.-\\@\"");
    EXPECT_EQ(unit_error("", "a/b"), "container id \"a/b\": not usable in a systemd unit name");
}

// ---- linux.resources -> properties ------------------------------------------------------

TEST(SystemdProperties, NothingForNoResources) {
    EXPECT_TRUE(props({}).empty());
}

TEST(SystemdProperties, Memory) {
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = 64 << 20;
    r.memory->reservation = 32 << 20;
    r.memory->swap = 96 << 20;  // memory+swap: 32 MiB of swap
    EXPECT_EQ(props(r), (std::vector<Property>{{"MemoryMax", uint64_t(64 << 20)},
                                               {"MemorySwapMax", uint64_t(32 << 20)},
                                               {"MemoryLow", uint64_t(32 << 20)}}));
    r.memory->limit = -1;
    r.memory->swap = -1;
    r.memory->reservation.reset();
    EXPECT_EQ(props(r), (std::vector<Property>{{"MemoryMax", kInfinity}, {"MemorySwapMax", kInfinity}}));
    // limit 0 is "unset"; a swap below the limit is left for the cgroupfs translation to refuse.
    r.memory->limit = 0;
    r.memory->swap = 10;
    EXPECT_TRUE(props(r).empty());
}

TEST(SystemdProperties, MemoryOnV1UsesMemoryLimitAndNoSwap) {
    oci::Resources r;
    r.memory = oci::Memory{};
    r.memory->limit = 1 << 20;
    r.memory->swap = 2 << 20;
    r.memory->reservation = 1 << 19;
    EXPECT_EQ(props(r, 252, false), (std::vector<Property>{{"MemoryLimit", uint64_t(1 << 20)}}));
}

TEST(SystemdProperties, CpuWeightFromShares) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->shares = 1024;
    EXPECT_EQ(props(r), (std::vector<Property>{{"CPUWeight", uint64_t(100)}}));
    EXPECT_EQ(props(r, 252, false), (std::vector<Property>{{"CPUShares", uint64_t(1024)}}));
    r.cpu->shares = 0;  // unset
    EXPECT_TRUE(props(r).empty());
}

TEST(SystemdProperties, CpuQuotaPerSecondAndPeriod) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->quota = 10000;
    r.cpu->period = 100000;
    EXPECT_EQ(props(r), (std::vector<Property>{{"CPUQuotaPerSecUSec", uint64_t(100000)},
                                               {"CPUQuotaPeriodUSec", uint64_t(100000)}}));
    // Rounded up, so that systemd's quota * period / 1 s (floored) is the quota again.
    r.cpu->quota = 1000;
    r.cpu->period = 300000;
    auto p = props(r);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0], (Property{"CPUQuotaPerSecUSec", uint64_t(3334)}));
    EXPECT_EQ(std::get<uint64_t>(p[0].value) * 300000 / 1000000, 1000u);
    // No period: the kernel's default, 100 ms.
    r.cpu->period.reset();
    r.cpu->quota = 50000;
    EXPECT_EQ(props(r), (std::vector<Property>{{"CPUQuotaPerSecUSec", uint64_t(500000)}}));
    r.cpu->quota = -1;
    EXPECT_EQ(props(r), (std::vector<Property>{{"CPUQuotaPerSecUSec", kInfinity}}));
    // systemd before 242 has no CPUQuotaPeriodUSec.
    r.cpu->quota = 20000;
    r.cpu->period = 50000;
    EXPECT_EQ(props(r, 241), (std::vector<Property>{{"CPUQuotaPerSecUSec", uint64_t(400000)}}));
}

TEST(SystemdProperties, Cpuset) {
    oci::Resources r;
    r.cpu = oci::Cpu{};
    r.cpu->cpus = "0-2,9";
    r.cpu->mems = "0";
    EXPECT_EQ(props(r), (std::vector<Property>{{"AllowedCPUs", std::vector<uint8_t>{0x07, 0x02}},
                                               {"AllowedMemoryNodes", std::vector<uint8_t>{0x01}}}));
    // systemd 243 and v1 hosts: written to cgroupfs only.
    EXPECT_TRUE(props(r, 243).empty());
    EXPECT_TRUE(props(r, 252, false).empty());
    r.cpu->cpus = "3-1";
    try {
        props(r);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "linux.resources.cpu.cpus: \"3-1\": range 3-1 runs backwards");
    }
    r.cpu->cpus = "x";
    EXPECT_THROW(props(r), Error);
}

TEST(SystemdProperties, TasksMax) {
    oci::Resources r;
    r.pids = oci::Pids{16};
    EXPECT_EQ(props(r), (std::vector<Property>{{"TasksMax", uint64_t(16)}}));
    r.pids = oci::Pids{0};  // <= 0: unlimited
    EXPECT_EQ(props(r), (std::vector<Property>{{"TasksMax", kInfinity}}));
    r.pids = oci::Pids{-1};
    EXPECT_EQ(props(r), (std::vector<Property>{{"TasksMax", kInfinity}}));
}

TEST(SystemdProperties, Version) {
    EXPECT_EQ(detail::parse_systemd_version("252.38-1~deb12u1"), 252u);
    EXPECT_EQ(detail::parse_systemd_version("\"v256.1\""), 256u);
    EXPECT_EQ(detail::parse_systemd_version("249"), 249u);
    EXPECT_EQ(detail::parse_systemd_version(""), 0u);
}

// ---- encoding -------------------------------------------------------------------------

TEST(SystemdProperties, MarshalledAsASvArray) {
    std::vector<Property> in = {{"Description", std::string("tarn container c1")},
                                {"Delegate", true},
                                {"PIDs", std::vector<uint32_t>{4242}},
                                {"MemoryMax", uint64_t(1) << 26},
                                {"AllowedCPUs", std::vector<uint8_t>{0x03}}};
    dbus::Writer w;
    w.byte(7);  // misaligned on purpose: the array must pad itself
    detail::marshal_properties(in, w);
    size_t pos = 0;
    auto v = dbus::parse("ya(sv)", w.data(), pos);
    EXPECT_EQ(pos, w.data().size());
    ASSERT_EQ(v.size(), 2u);
    const auto& a = v[1].items;
    ASSERT_EQ(a.size(), 5u);
    EXPECT_EQ(a[0].items[0].s, "Description");
    EXPECT_EQ(a[0].items[1].s, "s");
    EXPECT_EQ(a[0].items[1].inner().s, "tarn container c1");
    EXPECT_EQ(a[1].items[1].inner().type, 'b');
    EXPECT_EQ(a[1].items[1].inner().u, 1u);
    EXPECT_EQ(a[2].items[1].s, "au");
    ASSERT_EQ(a[2].items[1].inner().items.size(), 1u);
    EXPECT_EQ(a[2].items[1].inner().items[0].u, 4242u);
    EXPECT_EQ(a[3].items[1].inner().u, uint64_t(1) << 26);
    EXPECT_EQ(a[4].items[1].s, "ay");
    EXPECT_EQ(a[4].items[1].inner().items.at(0).u, 3u);
}

TEST(DBus, MethodCallRoundTrip) {
    dbus::Writer body;
    body.string("tarn-c1.scope");
    body.string("replace");
    std::string msg = dbus::method_call(7, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                        "org.freedesktop.systemd1.Manager", "StopUnit", "ss", body.data());
    EXPECT_EQ(msg.size() % 8, body.data().size() % 8);  // header padded to 8
    EXPECT_EQ(dbus::message_size(msg), msg.size());
    dbus::Message m = dbus::parse_message(msg);
    EXPECT_EQ(m.type, dbus::MessageType::method_call);
    EXPECT_EQ(m.serial, 7u);
    EXPECT_EQ(m.destination, "org.freedesktop.systemd1");
    EXPECT_EQ(m.path, "/org/freedesktop/systemd1");
    EXPECT_EQ(m.interface, "org.freedesktop.systemd1.Manager");
    EXPECT_EQ(m.member, "StopUnit");
    EXPECT_EQ(m.signature, "ss");
    ASSERT_EQ(m.body.size(), 2u);
    EXPECT_EQ(m.body[0].s, "tarn-c1.scope");
    EXPECT_EQ(m.body[1].s, "replace");
}

TEST(DBus, MalformedInputIsAnError) {
    std::string msg = dbus::method_call(1, "d", "/p", "i.f", "M", "s", std::string("\x03\0\0\0abc\0", 8));
    EXPECT_THROW(dbus::parse_message(msg.substr(0, msg.size() - 1)), Error);
    std::string big = msg;
    big[0] = 'B';
    EXPECT_THROW(dbus::message_size(big), Error);
    size_t pos = 0;
    EXPECT_THROW(dbus::parse("s", std::string("\xff\xff\xff\x7f", 4), pos), Error);
    pos = 0;
    EXPECT_THROW(dbus::parse("(s", std::string(16, '\0'), pos), Error);
    pos = 0;
    EXPECT_THROW(dbus::parse("b", std::string("\x02\0\0\0", 4), pos), Error);
}

TEST(DBus, DictEntriesAndVariantsParse) {
    dbus::Writer w;
    w.begin_array(8);
    w.begin_struct();
    w.string("k");
    w.variant("t");
    w.u64(5);
    w.end_array();
    size_t pos = 0;
    auto v = dbus::parse("a{sv}", w.data(), pos);
    ASSERT_EQ(v.at(0).items.size(), 1u);
    EXPECT_EQ(v[0].items[0].type, '{');
    EXPECT_EQ(v[0].items[0].items[1].uint("k"), 5u);
    EXPECT_THROW(v[0].items[0].items[1].str("k"), Error);
}

// ---- where the manager is reached -----------------------------------------------------

namespace {

using Env = std::map<std::string, std::string>;

std::vector<detail::ManagerSocket> sockets(bool user, uid_t euid, const Env& env) {
    return detail::manager_sockets(user, euid, [&](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    });
}

using S = detail::ManagerSocket;

}  // namespace

TEST(SystemdSockets, SystemManagerBusThenPrivateSocketForRoot) {
    EXPECT_EQ(sockets(false, 0, {}),
              (std::vector<S>{{"/run/dbus/system_bus_socket", true}, {"/run/systemd/private", false}}));
    // Only root may use systemd's private socket: not offered to anyone else.
    EXPECT_EQ(sockets(false, 1000, {}), (std::vector<S>{{"/run/dbus/system_bus_socket", true}}));
    EXPECT_EQ(sockets(false, 0, {{"DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/x/bus"}}).at(0), (S{"/x/bus", true}));
}

TEST(SystemdSockets, UserManagerSessionBusThenItsPrivateSocket) {
    EXPECT_EQ(sockets(true, 1000, {{"XDG_RUNTIME_DIR", "/run/user/1000"}}),
              (std::vector<S>{{"/run/user/1000/bus", true}, {"/run/user/1000/systemd/private", false}}));
    // No XDG_RUNTIME_DIR (su, sudo -u): where systemd-logind makes it.
    EXPECT_EQ(sockets(true, 1234, {}),
              (std::vector<S>{{"/run/user/1234/bus", true}, {"/run/user/1234/systemd/private", false}}));
    EXPECT_EQ(sockets(true, 1000, {{"XDG_RUNTIME_DIR", ""}}).at(0).path, "/run/user/1000/bus");
    // The session bus address wins over the runtime dir's socket; the private socket is
    // still the runtime dir's.
    EXPECT_EQ(sockets(true, 1000,
                      {{"XDG_RUNTIME_DIR", "/tmp/xdg"},
                       {"DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus,guid=0123456789abcdef"}}),
              (std::vector<S>{{"/run/user/1000/bus", true}, {"/tmp/xdg/systemd/private", false}}));
    // An address tarn cannot use (abstract, tcp) falls back to the runtime dir's socket.
    EXPECT_EQ(sockets(true, 1000, {{"XDG_RUNTIME_DIR", "/tmp/xdg"}, {"DBUS_SESSION_BUS_ADDRESS", "unix:abstract=/b"}})
                  .at(0)
                  .path,
              "/tmp/xdg/bus");
    // Root forced into rootless mode still asks its own user manager, never the system's.
    EXPECT_EQ(sockets(true, 0, {}).at(0).path, "/run/user/0/bus");
}

TEST(SystemdSockets, DBusAddresses) {
    EXPECT_EQ(detail::unix_path_of("unix:path=/run/user/1000/bus"), "/run/user/1000/bus");
    EXPECT_EQ(detail::unix_path_of("tcp:host=h,port=1;unix:guid=x,path=/a%20b"), "/a b");
    EXPECT_EQ(detail::unix_path_of("unix:abstract=/tmp/dbus-x"), std::nullopt);
    EXPECT_EQ(detail::unix_path_of(""), std::nullopt);
    EXPECT_EQ(detail::unix_path_of("unix:path="), std::nullopt);
}

// A unix socket listening in a temporary directory: a stand-in for a D-Bus server.
struct Listener {
    std::string dir, path;
    int fd = -1;
    Listener() {
        dir = ::testing::TempDir() + "tarn-dbus-XXXXXX";
        if (!::mkdtemp(dir.data())) return;
        path = dir + "/peer";
        fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(fd, 1) < 0) {
            if (fd >= 0) ::close(fd);
            fd = -1;
        }
    }
    ~Listener() {
        if (fd >= 0) ::close(fd);
        ::unlink(path.c_str());
        ::rmdir(dir.c_str());
    }
};

// The handshake as systemd's and dbus-daemon's servers answer it: no uid of our own in
// AUTH EXTERNAL (the server takes the socket's), DATA challenge, then OK.
TEST(DBus, AuthenticatesWithoutNamingAUid) {
    Listener lis;
    ASSERT_GE(lis.fd, 0);
    const std::string& path = lis.path;
    int l = lis.fd;
    std::string seen;
    std::thread server([&] {
        int c = ::accept(l, nullptr, nullptr);
        if (c < 0) return;
        char buf[256];
        while (seen.find("BEGIN\r\n") == std::string::npos) {
            ssize_t n = ::read(c, buf, sizeof buf);
            if (n <= 0) break;
            seen.append(buf, static_cast<size_t>(n));
        }
        std::string reply = "DATA\r\nOK 0123456789abcdef0123456789abcdef\r\n";
        (void)!::write(c, reply.data(), reply.size());
        ::close(c);
    });
    EXPECT_NO_THROW(dbus::Connection::open(path, false, std::chrono::milliseconds(5000)));
    server.join();
    EXPECT_EQ(seen, std::string("\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n", 29));
}

TEST(DBus, RefusedAuthenticationIsAnErrorNamingTheSocket) {
    Listener lis;
    ASSERT_GE(lis.fd, 0);
    const std::string& path = lis.path;
    int l = lis.fd;
    std::thread server([&] {
        int c = ::accept(l, nullptr, nullptr);
        if (c < 0) return;
        std::string reply = "DATA\r\nREJECTED EXTERNAL\r\n";
        (void)!::write(c, reply.data(), reply.size());
        char buf[256];
        while (::read(c, buf, sizeof buf) > 0) {
        }
        ::close(c);
    });
    try {
        dbus::Connection::open(path, false, std::chrono::milliseconds(5000));
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "D-Bus " + path + ": authentication refused: REJECTED EXTERNAL");
    }
    server.join();
}
