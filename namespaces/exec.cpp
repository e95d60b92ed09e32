#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include "namespaces/steps.hpp"

namespace tarn::ns::detail {
namespace {

bool is_executable_file(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

}  // namespace

std::string find_executable(const std::vector<std::string>& args, const std::vector<std::string>& env) {
    if (args.empty() || args[0].empty()) throw Error("process.args: empty");
    const std::string& name = args[0];
    if (name.find('/') != std::string::npos) {
        struct stat st;
        if (::stat(name.c_str(), &st) < 0) throw_errno("exec: \"" + name + "\"");
        if (S_ISDIR(st.st_mode)) throw Error("exec: \"" + name + "\": is a directory");
        return name;
    }
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const std::string& e : env)
        if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    size_t pos = 0;
    while (pos <= path.size()) {
        size_t colon = path.find(':', pos);
        std::string dir = path.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
        pos = colon == std::string::npos ? path.size() + 1 : colon + 1;
        if (dir.empty()) dir = ".";
        std::string cand = dir + "/" + name;
        if (is_executable_file(cand)) return cand;
    }
    throw Error("exec: \"" + name + "\": executable file not found in $PATH");
}

void close_inherited_fds(unsigned preserve_fds, const std::vector<int>& keep) {
    std::vector<int> k = keep;
    std::sort(k.begin(), k.end());
    unsigned from = 3 + preserve_fds;
    for (int fd : k) {
        if (fd < 0 || static_cast<unsigned>(fd) < from) continue;
        if (static_cast<unsigned>(fd) > from) ::close_range(from, static_cast<unsigned>(fd) - 1, 0);
        from = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(from, ~0U, 0);
}

void close_fds_on_exec(unsigned preserve_fds) { ::close_range(3 + preserve_fds, ~0U, CLOSE_RANGE_CLOEXEC); }

void exec_process(const std::string& path, const std::vector<std::string>& args, const std::vector<std::string>& env) {
    std::vector<char*> argv, envp;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    // The runtime blocks the signals it forwards; the workload starts with none blocked
    // and default dispositions.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(path.c_str(), argv.data(), envp.data());
    throw_errno("exec \"" + args[0] + "\"");
}

}  // namespace tarn::ns::detail
