#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "runtime/container.hpp"
#include "runtime/runtime.hpp"

namespace tarn::runtime {
namespace {

struct Logger {
    int fd = -1;  // --log file; -1: none
    LogFormat format = LogFormat::text;
    bool debug = false;
};

Logger& logger() {
    static Logger l;
    return l;
}

void emit(const char* level, const std::string& msg) {
    Logger& l = logger();
    std::string line;
    if (l.fd >= 0) {
        if (l.format == LogFormat::json) {
            nlohmann::json j = {{"level", level}, {"msg", msg}, {"time", detail::rfc3339_now()}};
            line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        } else {
            line = detail::rfc3339_now() + " " + level + " " + msg + "\n";
        }
        (void)!::write(l.fd, line.data(), line.size());
    }
    // Errors always reach stderr in plain words; with no log file, so do warnings and debug.
    if (std::string_view(level) == "error" || l.fd < 0) {
        line = std::string("tarn: ") + (std::string_view(level) == "error" ? "" : std::string(level) + ": ") + msg + "\n";
        (void)!::write(2, line.data(), line.size());
    }
}

}  // namespace

void log_setup(const GlobalOptions& g) {
    Logger& l = logger();
    l.format = g.log_format;
    l.debug = g.debug;
    if (!g.log.empty()) {
        l.fd = ::open(g.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (l.fd < 0) throw_errno("open log file " + g.log);
    }
}

bool log_debug_enabled() { return logger().debug; }
int log_file_fd() { return logger().fd; }
void log_debug(const std::string& msg) {
    if (logger().debug) emit("debug", msg);
}
void log_warn(const std::string& msg) { emit("warning", msg); }
void log_error(const std::string& msg) { emit("error", msg); }

}  // namespace tarn::runtime
