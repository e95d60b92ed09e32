#include "harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#ifndef TARN_BINARY
#error "TARN_BINARY must name the tarn binary under test"
#endif
#ifndef TARN_SOURCE_DIR
#error "TARN_SOURCE_DIR must name the source tree"
#endif

namespace tarn::test {
namespace {

std::string make_temp_dir(const char* prefix) {
    std::string tmpl = std::string("/tmp/") + prefix + "XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    // Reachable by a container's root mapped to an unprivileged host uid.
    ::chmod(tmpl.c_str(), 0755);
    return tmpl;
}

Result spawn(const std::vector<std::string>& argv, const std::string& cwd, const std::string& input) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) std::abort();
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(in[0], 0);
        ::dup2(out[1], 1);
        ::dup2(err[1], 2);
        if (::chdir(cwd.c_str()) < 0) ::_exit(126);
        std::vector<char*> a;
        for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        ::execvp(a[0], a.data());
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    if (!input.empty()) (void)!::write(in[1], input.data(), input.size());
    ::close(in[1]);
    Result r;
    // Read until the command exits, not until EOF: a created container keeps the
    // create's stdio open, exactly as it would under containerd.
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    pollfd p[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
    bool exited = false;
    for (;;) {
        if (::poll(p, 3, exited ? 0 : -1) <= 0) {
            if (exited) break;
            continue;
        }
        if (p[2].revents & POLLIN) {
            exited = true;
            p[2].fd = -1;
        }
        bool any = false;
        for (int i = 0; i < 2; ++i) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[8192];
            ssize_t n = ::read(p[i].fd, buf, sizeof buf);
            if (n <= 0) {
                p[i].fd = -1;
            } else {
                any = true;
                (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
            }
        }
        if (p[0].fd < 0 && p[1].fd < 0) break;
        if (exited && !any) break;
    }
    ::close(out[0]);
    ::close(err[0]);
    ::close(pidfd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

}  // namespace

bool is_root() { return ::geteuid() == 0; }

Result tarn(const std::vector<std::string>& args, const std::string& root, const std::string& cwd,
            const std::string& input) {
    std::vector<std::string> argv = {TARN_BINARY, "--root", root};
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn(argv, cwd, input);
}

Result sh(const std::string& script) { return spawn({"/bin/sh", "-c", script}, ".", ""); }

const std::string& busybox_rootfs() {
    // Built once per tarn binary and shared by every test process (ctest runs each
    // test in its own): keyed by the binary's path and mtime, guarded by a lock.
    static const std::string dir = [] {
        struct stat st;
        if (::stat(TARN_BINARY, &st) < 0) std::abort();
        std::string key = std::to_string(std::hash<std::string>{}(TARN_BINARY)) + "-" + std::to_string(st.st_mtime);
        std::string d = "/tmp/tarn-test-busybox-" + key;
        int lock = ::open((d + ".lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        if (lock < 0 || ::flock(lock, LOCK_EX) < 0) std::abort();
        if (!path_exists(d + "/config.json")) {
            std::string tmp = make_temp_dir("tarn-busybox-");
            Result r = spawn({"/bin/sh", std::string(TARN_SOURCE_DIR) + "/bundles/busybox-bundle.sh", tmp, TARN_BINARY}, ".", "");
            if (r.code != 0 || ::rename(tmp.c_str(), d.c_str()) < 0) {
                std::fprintf(stderr, "building the busybox bundle failed: %s%s\n", r.out.c_str(), r.err.c_str());
                std::abort();
            }
        }
        ::close(lock);
        return d + "/rootfs";
    }();
    return dir;
}

Bundle::Bundle() {
    dir_ = make_temp_dir("tarn-bundle-");
    root_ = dir_ + "/state";
    if (::symlink(busybox_rootfs().c_str(), (dir_ + "/rootfs").c_str()) < 0) std::abort();
    config = nlohmann::json::parse(read_text(busybox_rootfs() + "/../config.json"));
    config["process"]["terminal"] = false;
}

Bundle::~Bundle() {
    // Anything a test left running is removed with its state.
    if (path_exists(root_)) {
        if (DIR* d = ::opendir(root_.c_str())) {
            while (dirent* e = ::readdir(d)) {
                std::string n = e->d_name;
                if (n != "." && n != "..") test::tarn({"delete", "--force", n}, root_);
            }
            ::closedir(d);
        }
    }
    sh("rm -rf '" + dir_ + "'");
}

Bundle& Bundle::cmd(const std::string& script) { return args({"sh", "-c", script}); }

Bundle& Bundle::private_tmp() {
    config["mounts"].push_back({{"destination", "/tmp"},
                                {"type", "tmpfs"},
                                {"source", "tmpfs"},
                                {"options", {"nosuid", "nodev", "mode=1777"}}});
    return *this;
}

Bundle& Bundle::args(const std::vector<std::string>& argv) {
    config["process"]["args"] = argv;
    return *this;
}

void Bundle::write() const { write_text(dir_ + "/config.json", config.dump(2)); }

Result Bundle::run(const std::string& id, const std::vector<std::string>& extra) const {
    write();
    std::vector<std::string> a = {"run"};
    a.insert(a.end(), extra.begin(), extra.end());
    a.push_back(id);
    return test::tarn(a, root_, dir_);
}

Result Bundle::create(const std::string& id, const std::vector<std::string>& extra) const {
    write();
    std::vector<std::string> a = {"create", "--bundle", dir_};
    a.insert(a.end(), extra.begin(), extra.end());
    a.push_back(id);
    return test::tarn(a, root_, dir_);
}

Result Bundle::tarn(const std::vector<std::string>& args, const std::string& input) const {
    write();
    return test::tarn(args, root_, dir_, input);
}

std::string Bundle::scratch(const std::string& name) const {
    std::string p = dir_ + "/" + name;
    ::mkdir(p.c_str(), 0755);
    return p;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
    {
        std::ofstream out(path, std::ios::trunc);
        out << text;
    }
    ::chmod(path.c_str(), mode);
}

bool path_exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

bool alive(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    size_t close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

std::vector<pid_t> processes_matching(const std::string& needle) {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    while (dirent* e = ::readdir(d)) {
        pid_t pid = std::atoi(e->d_name);
        if (pid <= 0 || pid == ::getpid()) continue;
        std::string cmd = read_text("/proc/" + std::string(e->d_name) + "/cmdline");
        for (char& c : cmd)
            if (c == '\0') c = ' ';
        if (cmd.find(needle) != std::string::npos) out.push_back(pid);
    }
    ::closedir(d);
    return out;
}

}  // namespace tarn::test
