#include "runtime/hooks.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "runtime/runtime.hpp"

namespace tarn::runtime::detail {
namespace {

void run_one(const oci::Hook& h, const std::string& state_json, const char* kind) {
    int in[2];
    if (::pipe2(in, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd rd(in[0]), wr(in[1]);
    std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = h.env;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork hook");
    if (pid == 0) {
        ::dup2(rd.get(), 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(h.path.c_str(), argv.data(), envp.data());
        ::_exit(127);
    }
    rd.reset();
    // A hook that does not read its stdin must not block us: the state is small, and
    // a closed pipe only costs the hook its input.
    ::signal(SIGPIPE, SIG_IGN);
    (void)!::write(wr.get(), state_json.data(), state_json.size());
    wr.reset();
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (h.timeout && pidfd) {
        pollfd p{pidfd.get(), POLLIN, 0};
        int r;
        while ((r = ::poll(&p, 1, *h.timeout * 1000)) < 0 && errno == EINTR) {
        }
        if (r == 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            throw Error(std::string(kind) + " hook " + h.path + ": timed out after " + std::to_string(*h.timeout) + "s");
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw_errno(std::string(kind) + " hook " + h.path + ": wait");
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        throw Error(std::string(kind) + " hook " + h.path + ": could not execute (exit status 127)");
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        throw Error(std::string(kind) + " hook " + h.path + ": exit status " + std::to_string(WEXITSTATUS(status)));
    if (WIFSIGNALED(status))
        throw Error(std::string(kind) + " hook " + h.path + ": killed by signal " + std::to_string(WTERMSIG(status)));
}

}  // namespace

void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind) {
    for (const oci::Hook& h : hooks) run_one(h, state_json, kind);
}

void run_hooks_warn(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind) {
    for (const oci::Hook& h : hooks) {
        try {
            run_one(h, state_json, kind);
        } catch (const Error& e) {
            log_warn(e.what());
        }
    }
}

}  // namespace tarn::runtime::detail
