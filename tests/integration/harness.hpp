// Helpers for tests that run real bundles through the tarn binary, as root, on the
// real kernel. A test builds a bundle in a few lines, runs a tarn command, and
// asserts what the process inside saw.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
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

}  // namespace tarn::test

#define REQUIRE_ROOT()                                                    \
    do {                                                                  \
        if (!::tarn::test::is_root()) GTEST_SKIP() << "needs root";       \
    } while (0)
