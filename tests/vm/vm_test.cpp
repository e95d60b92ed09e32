// The VM isolation mode end to end: the busybox bundle runs in Debian's kernel under
// QEMU (TCG here, KVM where /dev/kvm exists) through the real tarn and tarn-agent.
// TARN_VM_DIR names a directory with vmlinux and initrd.cpio (tests/vm/setup.sh makes
// it; ctest runs that first), TARN_VM_KERNEL_DIR the kernel directory it came from.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <chrono>
#include <iostream>
#include <thread>

#include "../integration/harness.hpp"
#include "namespaces/namespaces.hpp"
#include "runtime/vm/vm.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

std::string vm_dir() {
    return TARN_VM_DIR;
}

#define REQUIRE_VM()                                                                              \
    do {                                                                                          \
        REQUIRE_ROOT();                                                                           \
        if (vm_dir().empty() || !path_exists(vm_dir() + "/initrd.cpio"))                          \
            GTEST_SKIP() << "TARN_VM_DIR has no vmlinux and initrd.cpio (run tests/vm/setup.sh)"; \
    } while (0)

// A bundle that asks for a VM through its annotations, as containerd passes them.
// TCG: these tests are about the VM mode, not the accelerator (VmAccel tests that), and
// run the same on hosts with no KVM, a broken one and a working one.
void vm_annotations(Bundle& b) {
    b.config["annotations"]["tarn.isolation"] = "vm";
    b.config["annotations"]["tarn.vm.accel"] = "tcg";
    b.config["annotations"]["tarn.vm.kernel"] = vm_dir() + "/vmlinux";
    b.config["annotations"]["tarn.vm.initrd"] = vm_dir() + "/initrd.cpio";
}

// Global flags selecting the VM mode, for tests that go the flag way.
std::vector<std::string> vm_flags(std::vector<std::string> rest) {
    std::vector<std::string> a = {"--isolation", "vm",          "--vm-accel",          "tcg",
                                  "--vm-kernel", vm_dir() + "/vmlinux", "--vm-initrd", vm_dir() + "/initrd.cpio"};
    a.insert(a.end(), rest.begin(), rest.end());
    return a;
}

// Nothing of container `id` is left: no state, no QEMU, no virtiofsd, no mount, no
// cgroup.
void expect_nothing_left(const Bundle& b, const std::string& id) {
    EXPECT_FALSE(path_exists(b.root() + "/" + id)) << "state dir left behind";
    EXPECT_TRUE(processes_matching("tarn-vm:" + id).empty()) << "a QEMU process is left";
    // A read-only root is served from a bind in the state dir: virtiofsd names it.
    EXPECT_TRUE(processes_matching(b.root() + "/" + id + "/").empty()) << "a virtiofsd process is left";
    EXPECT_EQ(read_text("/proc/self/mountinfo").find(b.root() + "/" + id), std::string::npos)
        << "a mount is left on the host";
    Result cg = sh("ls -d /sys/fs/cgroup/*/tarn/" + id + " /sys/fs/cgroup/tarn/" + id + " 2>/dev/null");
    EXPECT_EQ(cg.out, "") << "cgroup left behind";
}

bool have_virtiofsd() {
    return !tarn::runtime::vm::default_virtiofsd().empty();
}

std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

// A console socket, as containerd's shim listens on one: it accepts one connection and
// takes the pty master sent over it.
class ConsoleSocket {
public:
    explicit ConsoleSocket(std::string path) : path_(std::move(path)) {
        listener_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            listen(listener_.get(), 1) == 0)
            receiver_ = std::thread([this] {
                int c = accept(listener_.get(), nullptr, nullptr);
                if (c < 0) return;
                try {
                    master_ = tarn::ns::recv_fd(c);
                } catch (const tarn::Error&) {
                    // The sender gave up (create failed) after connecting: no master,
                    // which the test asserts; an exception here would end the binary.
                }
                close(c);
            });
    }
    ~ConsoleSocket() {
        if (receiver_.joinable()) {
            shutdown(listener_.get(), SHUT_RDWR);
            receiver_.join();
        }
    }
    const std::string& path() const { return path_; }
    // The master, once sent (-1 if the sender failed: `sent` false stops waiting).
    tarn::UniqueFd take(bool sent) {
        if (!sent) shutdown(listener_.get(), SHUT_RDWR);
        if (receiver_.joinable()) receiver_.join();
        return tarn::UniqueFd(master_);
    }

private:
    std::string path_;
    tarn::UniqueFd listener_;
    std::thread receiver_;
    int master_ = -1;
};

// Reads `fd` into `out` until it holds `want`; false on EOF or a minute without output.
bool read_until(int fd, std::string& out, const std::string& want) {
    while (out.find(want) == std::string::npos) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 60000) <= 0) return false;
        char buf[512];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return false;
        out.append(buf, static_cast<size_t>(n));
    }
    return true;
}

}  // namespace

TEST(VmRun, WorkloadSeesTheGuestKernelAndQemuCpu) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.cmd("uname -r; grep -m1 'model name' /proc/cpuinfo");
    Result r = b.run("vmkernel");
    ASSERT_EQ(r.code, 0) << r.err;
    utsname u;
    ::uname(&u);
    EXPECT_NE(first_line(r.out), std::string(u.release)) << r.out;
    EXPECT_NE(first_line(r.out), "");
    EXPECT_NE(r.out.find("QEMU"), std::string::npos) << r.out;
    expect_nothing_left(b, "vmkernel");
}

TEST(VmRun, ExitCodeComesBack) {
    REQUIRE_VM();
    Bundle b;
    b.cmd("echo to stderr >&2; exit 7");
    Result r = b.tarn(vm_flags({"run", "--bundle", b.dir(), "vmexit"}));
    EXPECT_EQ(r.code, 7) << r.err;
    EXPECT_NE(r.err.find("to stderr"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmexit");
}

TEST(VmRun, StdinReachesTheWorkload) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.cmd("read line; echo \"got: $line\"; wc -c");
    Result r = b.tarn({"run", "--bundle", b.dir(), "vmstdin"}, "hello vm\n0123456789\n");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "got: hello vm\n11\n");
}

TEST(VmRun, ResourcesSizeTheVmAndApplyInside) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.config["linux"]["resources"]["memory"]["limit"] = 64 * 1024 * 1024;
    b.config["linux"]["resources"]["cpu"] = {{"quota", 150000}, {"period", 100000}};
    b.cmd("grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo; cat /sys/fs/cgroup/memory.max");
    Result r = b.run("vmres");
    ASSERT_EQ(r.code, 0) << r.err;
    // 1.5 CPUs round up to 2 vCPUs (at most the host's); 64 MiB + 96 MiB overhead of VM.
    unsigned want_cpus = std::min(2L, sysconf(_SC_NPROCESSORS_ONLN));
    EXPECT_EQ(first_line(r.out), std::to_string(want_cpus)) << r.out;
    long kb = 0;
    std::sscanf(r.out.c_str() + r.out.find("MemTotal:"), "MemTotal: %ld", &kb);
    EXPECT_GT(kb, 100 * 1024) << r.out;
    EXPECT_LT(kb, 161 * 1024) << r.out;
    EXPECT_NE(r.out.find("\n67108864\n"), std::string::npos) << "memory.max in the guest: " << r.out;
}

TEST(VmLifecycle, CreateStartKillDelete) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string out = b.scratch("out") + "/create.out";
    // The trap first: the shell is pid 1 in its pid namespace, where a TERM that comes
    // before a handler is installed is dropped.
    b.cmd("trap 'echo got TERM; exit 3' TERM; sleep 1000 & echo started; while :; do sleep 1; done");
    b.write();
    std::string tarn = std::string(TARN_BINARY) + " --root " + b.root();
    // The monitor keeps create's stdout: send it to a file, as a shim would to a fifo.
    Result c = sh(tarn + " create --bundle " + b.dir() + " vmlife > " + out + " 2>&1 < /dev/null");
    ASSERT_EQ(c.code, 0) << read_text(out);
    json st = json::parse(b.tarn({"state", "vmlife"}).out);
    EXPECT_EQ(st["status"], "created");
    pid_t pid = st["pid"];
    EXPECT_TRUE(alive(pid));
    auto qemu = processes_matching("tarn-vm:vmlife");
    ASSERT_EQ(qemu.size(), 1u);
    // QEMU lives in the container's host cgroup (default cgroupsPath /tarn/<id>).
    std::string cg = read_text("/proc/" + std::to_string(qemu[0]) + "/cgroup");
    EXPECT_NE(cg.find("/tarn/vmlife\n"), std::string::npos) << cg;

    ASSERT_EQ(b.tarn({"start", "vmlife"}).code, 0);
    EXPECT_EQ(json::parse(b.tarn({"state", "vmlife"}).out)["status"], "running");
    for (int i = 0; i < 200 && read_text(out).find("started") == std::string::npos; ++i) usleep(50000);
    EXPECT_NE(read_text(out).find("started"), std::string::npos) << read_text(out);

    // kill --all reaches every process of the guest container: the background sleep
    // dies of SIGUSR1; the shell, its pid 1 without a handler, ignores it.
    // (A line of its own: the init's command line holds the words too.)
    auto sleeping = [&] {
        return b.tarn({"exec", "vmlife", "ps", "-o", "args"}).out.find("\nsleep 1000") != std::string::npos;
    };
    ASSERT_TRUE(sleeping());
    ASSERT_EQ(b.tarn({"kill", "--all", "vmlife", "USR1"}).code, 0);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
        usleep(100000);
        gone = !sleeping();
    }
    EXPECT_TRUE(gone) << "kill --all did not reach a process other than the init";
    EXPECT_EQ(json::parse(b.tarn({"state", "vmlife"}).out)["status"], "running");

    // SIGTERM reaches the shell inside the guest, whose trap answers.
    ASSERT_EQ(b.tarn({"kill", "vmlife", "TERM"}).code, 0);
    std::string status;
    for (int i = 0; i < 300 && status != "stopped"; ++i) {
        usleep(50000);
        status = json::parse(b.tarn({"state", "vmlife"}).out)["status"];
    }
    EXPECT_EQ(status, "stopped");
    EXPECT_NE(read_text(out).find("got TERM"), std::string::npos) << read_text(out);
    EXPECT_TRUE(processes_matching("tarn-vm:vmlife").empty()) << "QEMU outlived the workload";

    ASSERT_EQ(b.tarn({"delete", "vmlife"}).code, 0);
    expect_nothing_left(b, "vmlife");
}

TEST(VmLifecycle, DeleteForceStopsARunningVm) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.cmd("sleep infinity");
    b.write();
    Result c = sh(std::string(TARN_BINARY) + " --root " + b.root() + " create --bundle " + b.dir() +
                  " vmforce > /dev/null 2>&1 < /dev/null");
    ASSERT_EQ(c.code, 0);
    ASSERT_EQ(b.tarn({"start", "vmforce"}).code, 0);
    EXPECT_EQ(processes_matching("tarn-vm:vmforce").size(), 1u);
    Result d = b.tarn({"delete", "--force", "vmforce"});
    EXPECT_EQ(d.code, 0) << d.err;
    for (int i = 0; i < 100 && !processes_matching("tarn-vm:vmforce").empty(); ++i) usleep(20000);
    expect_nothing_left(b, "vmforce");
}

// QEMU killed under a running workload (by the OOM killer, or an operator): `run`
// ends with an error naming QEMU rather than waiting for a guest that is gone, and
// nothing is left.
TEST(VmLifecycle, QemuKilledUnderTheWorkloadEndsRun) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.cmd("echo up; sleep infinity");
    b.write();
    std::string dir = b.scratch("run");
    sh("(" + std::string(TARN_BINARY) + " --root " + b.root() + " run --bundle " + b.dir() + " vmgone > " + dir +
       "/out 2> " + dir + "/err < /dev/null; echo $? > " + dir + "/rc.tmp; mv " + dir + "/rc.tmp " + dir +
       "/rc) > /dev/null 2>&1 &");
    for (int i = 0; i < 600 && read_text(dir + "/out").find("up") == std::string::npos; ++i) usleep(100000);
    ASSERT_NE(read_text(dir + "/out").find("up"), std::string::npos) << read_text(dir + "/err");
    auto qemu = processes_matching("tarn-vm:vmgone");
    ASSERT_EQ(qemu.size(), 1u);
    ::kill(qemu[0], SIGKILL);
    for (int i = 0; i < 300 && !path_exists(dir + "/rc"); ++i) usleep(100000);
    EXPECT_TRUE(path_exists(dir + "/rc")) << "run still waits for a guest that is gone";
    EXPECT_NE(read_text(dir + "/rc"), "0\n");
    EXPECT_NE(read_text(dir + "/err").find("qemu exited before the workload did"), std::string::npos)
        << read_text(dir + "/err");
    b.tarn({"delete", "--force", "vmgone"});
    for (int i = 0; i < 100 && !path_exists(dir + "/rc"); ++i) usleep(20000);
    expect_nothing_left(b, "vmgone");
}

TEST(VmLifecycle, ExecRunsInTheGuestContainer) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.cmd("echo $$ > /dev/null; exec sleep infinity");
    b.write();
    ASSERT_EQ(sh(std::string(TARN_BINARY) + " --root " + b.root() + " create --bundle " + b.dir() +
                 " vmexec > /dev/null 2>&1 < /dev/null")
                  .code,
              0);
    ASSERT_EQ(b.tarn({"start", "vmexec"}).code, 0);

    // Foreground: stdio both ways, the exit code, and the container's pid namespace.
    Result e =
        b.tarn({"exec", "vmexec", "sh", "-c", "cat; echo err >&2; ps -o pid,comm | grep -c sleep; exit 4"},
               "through stdin\n");
    EXPECT_EQ(e.code, 4) << e.err;
    EXPECT_EQ(e.out, "through stdin\n1\n");
    EXPECT_NE(e.err.find("err"), std::string::npos);

    // --tty: a pty in the guest; "\n" comes back as "\r\n" from its line discipline.
    Result t =
        b.tarn({"exec", "-t", "vmexec", "sh", "-c", "tty; [ -t 0 ] && echo stdin is a terminal; exit 6"});
    EXPECT_EQ(t.code, 6) << t.err;
    EXPECT_NE(t.out.find("/dev/pts/"), std::string::npos) << t.out;
    EXPECT_NE(t.out.find("stdin is a terminal\r\n"), std::string::npos) << t.out;

    Result missing = b.tarn({"exec", "vmexec", "/no/such/binary"});
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.err.find("/no/such/binary"), std::string::npos) << missing.err;

    // Detached, as containerd's shim does it: the pid file names a host process that
    // stands for the one in the guest; killing it kills that one.
    std::string pid_file = b.scratch("exec") + "/pid";
    ASSERT_EQ(b.tarn({"exec", "-d", "--pid-file", pid_file, "vmexec", "sleep", "12345"}).code, 0);
    pid_t pid = std::stoi(read_text(pid_file));
    EXPECT_TRUE(alive(pid));
    Result ps = b.tarn({"exec", "vmexec", "ps", "-o", "args"});
    EXPECT_NE(ps.out.find("sleep 12345"), std::string::npos) << ps.out;
    ::kill(pid, SIGKILL);
    std::string after;
    for (int i = 0; i < 50; ++i) {
        usleep(100000);
        after = b.tarn({"exec", "vmexec", "ps", "-o", "args"}).out;
        if (after.find("sleep 12345") == std::string::npos) break;
    }
    EXPECT_EQ(after.find("sleep 12345"), std::string::npos) << after;

    // -t -d with a console socket, as the shim execs with a terminal: the master of a
    // host pty reaches the guest's, resizes included, and the pid file's process lives
    // as long as the guest process.
    ConsoleSocket console(b.dir() + "/exec-console.sock");
    std::string tty_pid_file = b.scratch("exec") + "/tty-pid";
    Result d = b.tarn({"exec", "-t", "-d", "--console-socket", console.path(), "--pid-file", tty_pid_file,
                       "vmexec", "sh", "-c", "echo ready; read line; stty size; echo \"got $line\"; sleep 1"});
    tarn::UniqueFd m = console.take(d.code == 0);
    ASSERT_EQ(d.code, 0) << d.err;
    ASSERT_TRUE(m);
    pid_t relay = std::stoi(read_text(tty_pid_file));
    EXPECT_TRUE(alive(relay));
    std::string out;
    ASSERT_TRUE(read_until(m.get(), out, "ready")) << out;
    winsize ws{};
    ws.ws_row = 33;
    ws.ws_col = 77;
    ASSERT_EQ(ioctl(m.get(), TIOCSWINSZ, &ws), 0);
    ASSERT_EQ(write(m.get(), "typed\r", 6), 6);
    EXPECT_TRUE(read_until(m.get(), out, "got typed")) << out;
    EXPECT_NE(out.find("33 77"), std::string::npos) << out;
    for (int i = 0; i < 100 && alive(relay); ++i) usleep(100000);
    EXPECT_FALSE(alive(relay)) << "the host process outlived the guest one";
    Result no_tty = b.tarn({"exec", "--console-socket", console.path(), "vmexec", "true"});
    EXPECT_NE(no_tty.code, 0);
    EXPECT_NE(no_tty.err.find("--console-socket"), std::string::npos) << no_tty.err;

    EXPECT_EQ(b.tarn({"delete", "--force", "vmexec"}).code, 0);
    expect_nothing_left(b, "vmexec");
}

// ---- process.terminal: a pty in the guest, relayed to a host pty ---------------------

TEST(VmTerminal, RunProxiesTheGuestPty) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.config["process"]["terminal"] = true;
    b.config["process"]["consoleSize"] = {{"height", 30}, {"width", 101}};
    b.cmd("tty; [ -t 0 ] && [ -t 1 ] && echo stdin and stdout are terminals; stty size; exit 5");
    Result r = b.run("vmtty");
    EXPECT_EQ(r.code, 5) << r.err;
    EXPECT_NE(r.out.find("/dev/pts/0"), std::string::npos) << r.out;
    // The guest's line discipline turns "\n" into "\r\n"; the host pty is raw and adds nothing.
    EXPECT_NE(r.out.find("stdin and stdout are terminals\r\n"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("\r\r\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("30 101"), std::string::npos) << r.out;
    expect_nothing_left(b, "vmtty");
}

TEST(VmTerminal, ConsoleSocketGetsAMasterThatReachesTheGuest) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    ConsoleSocket console(b.dir() + "/console.sock");
    b.config["process"]["terminal"] = true;
    b.config["process"]["consoleSize"] = {{"height", 40}, {"width", 123}};
    b.cmd("stty size; echo ready; read line; stty size; echo \"got $line\"; exit 3");
    Result r = b.create("vmtty2", {"--console-socket", console.path()});
    tarn::UniqueFd m = console.take(r.code == 0);
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(m);
    ASSERT_EQ(b.tarn({"start", "vmtty2"}).code, 0);
    std::string out;
    ASSERT_TRUE(read_until(m.get(), out, "ready")) << out;
    EXPECT_NE(out.find("40 123"), std::string::npos) << out;
    // A resize of the host master reaches the guest pty (the monitor relays SIGWINCH)
    // before the line typed after it.
    winsize ws{};
    ws.ws_row = 50;
    ws.ws_col = 132;
    ASSERT_EQ(ioctl(m.get(), TIOCSWINSZ, &ws), 0);
    ASSERT_EQ(write(m.get(), "hello\r", 6), 6);
    EXPECT_TRUE(read_until(m.get(), out, "got hello")) << out;
    EXPECT_NE(out.find("50 132"), std::string::npos) << out;
    std::string status;
    for (int i = 0; i < 300 && status != "stopped"; ++i) {
        usleep(50000);
        status = json::parse(b.tarn({"state", "vmtty2"}).out)["status"];
    }
    EXPECT_EQ(status, "stopped");
    EXPECT_EQ(b.tarn({"delete", "vmtty2"}).code, 0);
    expect_nothing_left(b, "vmtty2");
}

// ---- hooks: the runtime-namespace ones run on the host --------------------------------

TEST(VmHooks, HostHooksRunAroundTheGuestWorkload) {
    REQUIRE_VM();
    auto hook = [](const std::string& script, const std::string& name) {
        return json{{"path", "/bin/sh"}, {"args", {"sh", "-c", script, name}}};
    };
    Bundle b;
    vm_annotations(b);
    std::string log = b.scratch("hooks") + "/log";
    std::string host = "read -r s; echo \"$0 $(echo \"$s\" | grep -o '\"status\":\"[a-z]*\"')\" >> " + log;
    // createRuntime leaves a file in the rootfs the guest shares: the workload sees it
    // only if the hook ran before it started.
    std::string marker = "/vmhook-" + std::to_string(getpid());
    b.config["hooks"] = {
        {"prestart", {hook(host, "prestart")}},
        {"createRuntime", {hook(host + "; echo from-the-hook > " + busybox_rootfs() + marker, "createRuntime")}},
        {"poststart", {hook(host, "poststart")}},
        {"poststop", {hook(host, "poststop")}},
    };
    Result r = b.cmd("cat " + marker).run("vmhooks");
    ::unlink((busybox_rootfs() + marker).c_str());
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "from-the-hook\n");
    EXPECT_EQ(read_text(log),
              "prestart \"status\":\"creating\"\n"
              "createRuntime \"status\":\"creating\"\n"
              "poststart \"status\":\"running\"\n"
              "poststop \"status\":\"stopped\"\n");
    expect_nothing_left(b, "vmhooks");

    // A hook that would run inside the container cannot: refused before anything is made.
    Bundle c;
    vm_annotations(c);
    c.config["hooks"] = {{"createContainer", {hook("true", "cc")}}};
    Result refused = c.cmd("true").run("vmhooks2");
    EXPECT_NE(refused.code, 0);
    EXPECT_NE(refused.err.find("hooks.createContainer: not available in vm mode"), std::string::npos) << refused.err;
    expect_nothing_left(c, "vmhooks2");

    // A failing createRuntime hook fails the start and takes the VM down.
    Bundle f;
    vm_annotations(f);
    f.config["hooks"] = {{"createRuntime", {hook("exit 9", "bad")}}};
    Result failed = f.cmd("sleep 100").run("vmhooks3");
    EXPECT_NE(failed.code, 0);
    EXPECT_NE(failed.err.find("createRuntime hook /bin/sh: exit status 9"), std::string::npos) << failed.err;
    expect_nothing_left(f, "vmhooks3");
}

// ---- failures: each names what is missing, and leaves nothing behind ----------------

TEST(VmErrors, MissingKernelIsNamed) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.config["annotations"]["tarn.vm.kernel"] = "/nonexistent/tarn/vmlinux";
    Result r = b.run("vmnokernel");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("vm kernel /nonexistent/tarn/vmlinux: no such file or directory"), std::string::npos)
        << r.err;
    expect_nothing_left(b, "vmnokernel");
}

TEST(VmErrors, MissingQemuIsNamed) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string cfg = b.scratch("etc") + "/vm.json";
    write_text(cfg, R"({"qemu": "/nonexistent/qemu-system-x86_64"})");
    Result r = b.tarn({"--vm-config", cfg, "run", "--bundle", b.dir(), "vmnoqemu"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("qemu /nonexistent/qemu-system-x86_64: not found"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmnoqemu");
}

TEST(VmErrors, KernelQemuCannotLoadIsReported) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string bogus = b.scratch("k") + "/vmlinux";
    write_text(bogus, "not a kernel\n");
    b.config["annotations"]["tarn.vm.kernel"] = bogus;
    Result r = b.run("vmbadkernel");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("exited (status 1) before the guest agent answered"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmbadkernel");
}

TEST(VmErrors, AgentThatNeverAnswersTimesOut) {
    REQUIRE_VM();
    // An initramfs whose /init is busybox's init: it boots, and never speaks the protocol.
    Bundle b;
    std::string dir = b.scratch("silent");
    Result s = tarn::test::tarn(
        {"vm", "setup", "--dir", dir, "--from", TARN_VM_KERNEL_DIR, "--agent", "/bin/busybox"}, b.root());
    ASSERT_EQ(s.code, 0) << s.err;
    vm_annotations(b);
    b.config["annotations"]["tarn.vm.initrd"] = dir + "/initrd.cpio";
    b.config["annotations"]["tarn.vm.timeout"] = "5";
    Result r = b.run("vmsilent");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("the guest agent did not answer within 5 s"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmsilent");
}

// ---- the accelerator ---------------------------------------------------------------
// The host itself is the fixture: where /dev/kvm opens but the CPU has no hardware
// virtualization (a software KVM layer such as kvm_pvm), KVM cannot run the guest, and
// these tests check that auto avoids it and that a forced KVM fails at once.

namespace vm = tarn::runtime::vm;

// /dev/kvm opens, yet KVM cannot run an ordinary guest here.
bool kvm_is_broken_here() {
    vm::KvmFacts f = vm::kvm_facts("", "");
    return f.device && !f.hw_virt;
}

std::string accel_line(const std::string& log) {
    size_t at = log.find("vm: accelerator ");
    return at == std::string::npos ? std::string() : log.substr(at, log.find('\n', at) - at);
}

TEST(VmAccel, AutoRunsTheGuestWithTheAcceleratorThatWorks) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.config["annotations"].erase("tarn.vm.accel");  // auto, the default
    b.cmd("echo ran");
    std::string log = b.scratch("log") + "/tarn.log";
    Result r = b.tarn({"--debug", "--log", log, "run", "--bundle", b.dir(), "vmauto"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "ran\n");
    std::string line = accel_line(read_text(log));
    vm::KvmFacts f = vm::kvm_facts("", "");
    if (!f.device) {
        EXPECT_NE(line.find("accelerator tcg: /dev/kvm is not usable"), std::string::npos) << line;
    } else if (!f.hw_virt) {
        // What auto says on the host whose KVM is broken: why it took TCG.
        EXPECT_NE(line.find("accelerator tcg: /dev/kvm opens, but the CPU has no vmx or svm flag"),
                  std::string::npos)
            << line;
        EXPECT_NE(read_text(log).find(": vm (tcg)"), std::string::npos);
    } else {
        EXPECT_NE(line.find("accelerator kvm"), std::string::npos) << line;
    }
    expect_nothing_left(b, "vmauto");
}

TEST(VmAccel, ForcedKvmThatCannotRunTheGuestFailsCreateAtOnce) {
    REQUIRE_VM();
    if (!kvm_is_broken_here()) GTEST_SKIP() << "KVM here is absent or has hardware virtualization";
    Bundle b;
    vm_annotations(b);
    b.config["annotations"]["tarn.vm.accel"] = "kvm";
    b.cmd("echo ran");
    auto t0 = std::chrono::steady_clock::now();
    Result r = b.create("vmkvm");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    RecordProperty("create_fails_after_s", std::to_string(s));
    EXPECT_EQ(r.code, 1) << r.out;
    // QEMU's own words (an MSR it could not set, a KVM internal error), not the agent's
    // timeout (60 s).
    EXPECT_NE(r.err.find("KVM"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("did not answer"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmkvm");
}

// A KVM internal error pauses the guest and leaves QEMU running: the monitor hears the
// STOP event on QMP. On the broken KVM here this CPU model gets further into the boot
// than `host` (no MSR failure at start), slowly, until the kernel's first cmpxchg16b.
TEST(VmAccel, GuestStoppedByKvmIsReportedWithQemusReason) {
    REQUIRE_VM();
    if (!kvm_is_broken_here()) GTEST_SKIP() << "KVM here is absent or has hardware virtualization";
    Bundle b;
    vm_annotations(b);
    std::string cfg = b.scratch("etc") + "/vm.json";
    write_text(cfg, R"({"accel": "kvm", "kvm_cpu": "host,-arch-capabilities", "timeout_seconds": 400})");
    b.config["annotations"].erase("tarn.vm.accel");
    b.cmd("echo ran");
    b.write();
    Result r = b.tarn({"--vm-config", cfg, "create", "--bundle", b.dir(), "vmstop"});
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.err.find("KVM"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("did not answer"), std::string::npos) << r.err;
    if (r.err.find("qemu stopped the guest (internal-error, KVM): KVM internal error") == std::string::npos)
        std::cout << "KVM failed otherwise than by an internal error here: " << r.err;
    expect_nothing_left(b, "vmstop");
}

TEST(VmAccel, AutoFallsBackToTcgOnceAndRemembers) {
    REQUIRE_VM();
    if (!vm::kvm_facts("", "").device) GTEST_SKIP() << "no usable /dev/kvm";
    Bundle b;
    vm_annotations(b);
    b.config["annotations"].erase("tarn.vm.accel");
    // Trust /dev/kvm without the CPU flags, as for a paravirtual KVM: auto takes it.
    std::string cfg = b.scratch("etc") + "/vm.json";
    write_text(cfg, R"({"kvm_hw_check": false})");
    b.cmd("echo ran");
    b.write();
    std::string log1 = b.scratch("log") + "/1.log", log2 = b.scratch("log") + "/2.log";
    Result r = b.tarn({"--debug", "--log", log1, "--vm-config", cfg, "run", "--bundle", b.dir(), "vmfall1"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "ran\n");
    std::string first = read_text(log1);
    EXPECT_NE(accel_line(first).find("accelerator kvm"), std::string::npos) << accel_line(first);
    if (first.find(": vm (kvm)") != std::string::npos) GTEST_SKIP() << "KVM runs the guest here: nothing to fall back from";
    EXPECT_NE(first.find("KVM failed to boot the guest"), std::string::npos) << first;
    EXPECT_NE(first.find("retrying under TCG"), std::string::npos);
    EXPECT_NE(first.find(": vm (tcg)"), std::string::npos);
    EXPECT_TRUE(path_exists(b.root() + "/vm-accel.json"));
    // The next create goes straight to TCG, saying why.
    r = b.tarn({"--debug", "--log", log2, "--vm-config", cfg, "run", "--bundle", b.dir(), "vmfall2"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::string second = read_text(log2);
    EXPECT_NE(accel_line(second).find("accelerator tcg: KVM failed to boot this kernel earlier on this host"),
              std::string::npos)
        << accel_line(second);
    EXPECT_EQ(second.find("retrying under TCG"), std::string::npos);
    expect_nothing_left(b, "vmfall1");
    expect_nothing_left(b, "vmfall2");
}

TEST(VmAccel, BadValueNamesWhereItCameFrom) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    b.config["annotations"]["tarn.vm.accel"] = "hvf";
    Result r = b.create("vmbadaccel");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("annotation tarn.vm.accel: expected \"auto\", \"kvm\" or \"tcg\", got \"hvf\""),
              std::string::npos)
        << r.err;
    expect_nothing_left(b, "vmbadaccel");
}

// ---- the shared root and host bind mounts ------------------------------------------

// One boot for all of it (each costs seconds under TCG): the root over virtio-fs where
// virtiofsd is installed, a read-write and a read-only directory bind and a file bind
// over 9p, and, after delete, nothing of it on the host.
TEST(VmShares, RootAndBindMountsReachTheGuest) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string rw = b.scratch("rw"), ro = b.scratch("ro");
    write_text(ro + "/hello", "from host\n");
    write_text(b.dir() + "/hosts", "10.1.2.3 vmhost\n");
    // The root is read-only (the busybox bundle's): the host makes the missing mount
    // point, which the guest cannot.
    b.config["mounts"].push_back(
        {{"destination", "/vmshare/rw"}, {"type", "bind"}, {"source", rw}, {"options", {"rbind"}}});
    b.config["mounts"].push_back(
        {{"destination", "/var"}, {"type", "bind"}, {"source", ro}, {"options", {"rbind", "ro"}}});
    b.config["mounts"].push_back(
        {{"destination", "/etc/hosts"}, {"type", "bind"}, {"source", "hosts"}, {"options", {"bind", "ro"}}});
    std::string out = b.scratch("out") + "/create.out";
    b.cmd(
        "grep ' / ' /proc/mounts; echo written > /vmshare/rw/by-guest; cat /var/hello; "
        "touch /var/x 2>/dev/null || echo ro-denied; cat /etc/hosts");
    b.write();
    std::string tarn = std::string(TARN_BINARY) + " --root " + b.root();
    Result c = sh(tarn + " create --bundle " + b.dir() + " vmshares > " + out + " 2>&1 < /dev/null");
    ASSERT_EQ(c.code, 0) << read_text(out);
    if (have_virtiofsd()) {
        // virtiofsd runs beside QEMU, in the container's host cgroup, with no socket file.
        auto vfs = processes_matching(b.root() + "/vmshares/shares/rootfs");
        ASSERT_FALSE(vfs.empty());
        EXPECT_NE(read_text("/proc/" + std::to_string(vfs[0]) + "/cgroup").find("/tarn/vmshares\n"),
                  std::string::npos);
        Result socks = sh("find " + b.root() + "/vmshares -type s ! -name monitor.sock");
        EXPECT_EQ(socks.out, "") << "a socket file besides monitor.sock";
    }
    // The staging is in the monitor's mount namespace only.
    EXPECT_EQ(read_text("/proc/self/mountinfo").find(b.root() + "/vmshares"), std::string::npos);

    ASSERT_EQ(b.tarn({"start", "vmshares"}).code, 0);
    std::string status;
    for (int i = 0; i < 300 && status != "stopped"; ++i) {
        usleep(50000);
        status = json::parse(b.tarn({"state", "vmshares"}).out)["status"];
    }
    ASSERT_EQ(status, "stopped");
    std::string o = read_text(out);
    EXPECT_NE(o.find(have_virtiofsd() ? " / virtiofs ro," : " / 9p ro,"), std::string::npos) << o;
    EXPECT_NE(o.find("from host\nro-denied\n10.1.2.3 vmhost\n"), std::string::npos) << o;
    EXPECT_EQ(read_text(rw + "/by-guest"), "written\n");
    EXPECT_FALSE(path_exists(ro + "/x"));
    Result d = b.tarn({"delete", "vmshares"});
    EXPECT_EQ(d.code, 0) << d.err;
    expect_nothing_left(b, "vmshares");
}

TEST(VmShares, ConfigFileChooses9p) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string cfg = b.scratch("etc") + "/vm.json";
    write_text(cfg, R"({"share": "9p"})");
    b.cmd("grep ' / ' /proc/mounts; exit 3");
    Result r = b.tarn({"--vm-config", cfg, "run", "--bundle", b.dir(), "vm9p"});
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_NE(r.out.find(" / 9p ro,"), std::string::npos) << r.out;
    expect_nothing_left(b, "vm9p");
}

TEST(VmShares, TooManyBindMountsFailCreate) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    for (int i = 0; i < 24; ++i)
        b.config["mounts"].push_back({{"destination", "/m" + std::to_string(i)},
                                      {"type", "bind"},
                                      {"source", b.scratch("d" + std::to_string(i))},
                                      {"options", {"bind"}}});
    Result r = b.run("vmmany");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("mount /m23: more than 23 host bind mounts"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmmany");
}

TEST(VmShares, VirtiofsdThatIsMissingOrFailsIsNamed) {
    REQUIRE_VM();
    Bundle b;
    vm_annotations(b);
    std::string cfg = b.scratch("etc") + "/vm.json";
    write_text(cfg, R"({"share": "virtiofs", "virtiofsd": "/nonexistent/virtiofsd"})");
    Result r = b.tarn({"--vm-config", cfg, "run", "--bundle", b.dir(), "vmnovfs"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("virtiofsd /nonexistent/virtiofsd: not found"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmnovfs");
    // One that exits at once: QEMU's vhost-user set-up fails, and the error says why.
    write_text(cfg, R"({"virtiofsd": "/bin/false"})");
    r = b.tarn({"--vm-config", cfg, "run", "--bundle", b.dir(), "vmbadvfs"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("virtiofsd /bin/false exited (status 1)"), std::string::npos) << r.err;
    expect_nothing_left(b, "vmbadvfs");
}
