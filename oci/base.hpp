// Small pieces every tarn library shares: the one error type and RAII for fds.
#pragma once

#include <cerrno>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tarn {

// The project's single error type. `what()` reads like
// "mount proc on /proc: operation not permitted": context first, errno text last.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& msg, int err = 0)
        : std::runtime_error(err ? msg + ": " + errno_text(err) : msg), err_(err) {}
    int code() const noexcept { return err_; }
    static std::string errno_text(int err);
    // Same error with more context in front: "create c1: " + inner, errno kept.
    Error wrapped(const std::string& prefix) const { return Error(prefix + ": " + what(), err_, Raw{}); }

private:
    struct Raw {};
    Error(const std::string& full, int err, Raw) : std::runtime_error(full), err_(err) {}
    int err_;
};

// Throws Error(context, errno) — the call-site idiom after a failed syscall.
[[noreturn]] void throw_errno(const std::string& context);
[[noreturn]] void throw_errno(const std::string& context, int err);


class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

// The lines of `text` without their '\n' (a last line without one included).
std::vector<std::string_view> lines(std::string_view text);

// Whole-file helpers used across libraries; errors name the path.
std::string read_file(const std::string& path);
// The same, refusing a file larger than `max_bytes` before it is read (a regular file's
// size) or as soon as more arrives (a pipe, a device).
std::string read_file(const std::string& path, std::size_t max_bytes);
// What `fd` has until EOF, at most `max_bytes`; `source` names it in errors.
std::string read_fd(int fd, std::size_t max_bytes, std::string_view source);

// Bounds on every JSON document tarn reads: the parser builds a node per value (tens of
// bytes each) and recurses per nesting level, so a small hostile file could cost
// hundreds of megabytes and a deep stack before any error. The deepest document the
// runtime spec defines nests 7 levels (linux.seccomp.syscalls[].args[]); 64 leaves
// room for extensions. runc (Go's encoding/json) allows 10000.
inline constexpr std::size_t kMaxJsonDepth = 64;
// config.json, process.json, update's resources, state.json: real configs are tens of
// KiB (a seccomp profile and annotations, which Kubernetes caps at 256 KiB).
inline constexpr std::size_t kMaxJsonDocument = 4u << 20;
// Throws "<source>: ..." naming the limit when `text` is larger than `max_bytes` or
// nests arrays/objects deeper than kMaxJsonDepth. One pass, no allocation: it runs
// before every parse, config.json's on every create included.
void check_json_bounds(std::string_view text, std::string_view source, std::size_t max_bytes = kMaxJsonDocument);
void write_file(const std::string& path, std::string_view data);
// Writes to a temporary file in the same directory and renames it into place.
void write_file_atomic(const std::string& path, std::string_view data, unsigned mode = 0600);

}  // namespace tarn
