// Helpers for tests that run real bundles through the tarn binary, as root, on the
// real kernel. A test builds a bundle in a few lines, runs a tarn command, and
// asserts what the process inside saw.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace tarn::test {

struct Result {
    int code = -1;
    std::string out;
    std::string err;
};

// Runs `tarn --root <root> ARGS...` with `cwd`, stdin from `input`; waits for it.
Result tarn(const std::vector<std::string>& args, const std::string& root, const std::string& cwd = ".",
            const std::string& input = "");
// Runs any command (argv[0] is searched in PATH).
Result sh(const std::string& script);

// The busybox rootfs, built once per test binary by bundles/busybox-bundle.sh.
const std::string& busybox_rootfs();

// A bundle directory whose rootfs links to the shared busybox rootfs and whose
// config.json starts as `tarn spec` writes it, with terminal off.
class Bundle {
public:
    Bundle();
    ~Bundle();
    Bundle(const Bundle&) = delete;
    Bundle& operator=(const Bundle&) = delete;

    nlohmann::json config;
    const std::string& dir() const { return dir_; }
    const std::string& root() const { return root_; }  // the --root for this test

    // process.args = {"sh", "-c", script}
    Bundle& cmd(const std::string& script);
    Bundle& args(const std::vector<std::string>& argv);
    // Writes config.json; called by run/create.
    void write() const;

    Result run(const std::string& id = "t", const std::vector<std::string>& extra = {}) const;
    Result create(const std::string& id = "t", const std::vector<std::string>& extra = {}) const;
    Result tarn(const std::vector<std::string>& args, const std::string& input = "") const;

    // A writable scratch dir beside the bundle (for hook output, bind sources...).
    std::string scratch(const std::string& name) const;
    // A tmpfs at /tmp, for a container that writes there: the busybox rootfs is
    // shared by every test, and a file left in it would change the next run.
    Bundle& private_tmp();

private:
    std::string dir_;
    std::string root_;
};

bool is_root();
std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text, mode_t mode = 0644);
bool path_exists(const std::string& path);
// A live process (not a zombie waiting to be reaped).
bool alive(pid_t pid);
// Processes whose cmdline contains `needle` (to check nothing was left running).
std::vector<pid_t> processes_matching(const std::string& needle);

// Polls `pred` for up to `limit`; true once it holds.
template <class F>
bool eventually(F pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

// A process started in the background with its output in a file.
struct Background {
    pid_t pid = -1;
    int code = -1;
    std::string out;
    Background(const std::vector<std::string>& argv, const std::string& out_file) : out(out_file) {
        pid = ::fork();
        if (pid == 0) {
            int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int nul = ::open("/dev/null", O_RDONLY);
            ::dup2(nul, 0);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::setpgid(0, 0);
            std::vector<char*> a;
            for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
            a.push_back(nullptr);
            ::execv(a[0], a.data());
            ::_exit(127);
        }
    }
    // Exit code as a shell reports it; -1 if it did not exit within `limit`.
    int wait(std::chrono::milliseconds limit = std::chrono::milliseconds(20000)) {
        if (pid < 0) return code;
        auto end = std::chrono::steady_clock::now() + limit;
        int st = 0;
        do {
            if (::waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;
                code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return code;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        } while (std::chrono::steady_clock::now() < end);
        return -1;
    }
    void kill(int sig) {
        if (pid > 0) ::kill(pid, sig);
    }
    ~Background() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
    std::string output() const { return read_text(out); }
};

}  // namespace tarn::test

#define REQUIRE_ROOT()                                                    \
    do {                                                                  \
        if (!::tarn::test::is_root()) GTEST_SKIP() << "needs root";       \
    } while (0)
