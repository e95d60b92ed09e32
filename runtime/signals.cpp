#include <signal.h>

#include <cctype>
#include <cstdlib>
#include <string_view>

#include "runtime/runtime.hpp"

namespace tarn::runtime {
namespace {

struct SigName {
    std::string_view name;
    int num;
};

constexpr SigName kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT},   {"ILL", SIGILL},     {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"IOT", SIGIOT},     {"BUS", SIGBUS},     {"FPE", SIGFPE},     {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},   {"PIPE", SIGPIPE},   {"ALRM", SIGALRM},
    {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},   {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},   {"TTOU", SIGTTOU},   {"URG", SIGURG},     {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"POLL", SIGPOLL}, {"PWR", SIGPWR},     {"SYS", SIGSYS},
};

}  // namespace

int parse_signal(const std::string& s) {
    if (s.empty()) throw Error("signal: empty");
    if (std::isdigit(static_cast<unsigned char>(s[0]))) {
        char* end = nullptr;
        long n = std::strtol(s.c_str(), &end, 10);
        if (*end || n <= 0 || n > SIGRTMAX) throw Error("signal \"" + s + "\": unknown signal");
        return static_cast<int>(n);
    }
    std::string up;
    for (char c : s) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string_view name = up;
    if (name.substr(0, 3) == "SIG") name.remove_prefix(3);
    for (const SigName& sn : kSignals)
        if (sn.name == name) return sn.num;
    if (name.substr(0, 5) == "RTMIN" || name.substr(0, 5) == "RTMAX") {
        int base = name.substr(0, 5) == "RTMIN" ? SIGRTMIN : SIGRTMAX;
        std::string_view rest = name.substr(5);
        int off = rest.empty() ? 0 : std::atoi(std::string(rest).c_str());
        int n = base + off;
        if (n >= SIGRTMIN && n <= SIGRTMAX) return n;
    }
    throw Error("signal \"" + s + "\": unknown signal");
}

}  // namespace tarn::runtime
