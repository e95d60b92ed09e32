#include "oci/base.hpp"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace tarn {

std::string Error::errno_text(int err) {
    char buf[128];
    std::string s = strerror_r(err, buf, sizeof buf);
    // "Operation not permitted" -> "operation not permitted": error text reads as one sentence.
    if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z' && (s.size() < 2 || !(s[1] >= 'A' && s[1] <= 'Z')))
        s[0] = static_cast<char>(s[0] - 'A' + 'a');
    return s;
}

void throw_errno(const std::string& context) { throw Error(context, errno); }
void throw_errno(const std::string& context, int err) { throw Error(context, err); }

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

std::string read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("read " + path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::string read_fd(int fd, std::size_t max_bytes, std::string_view source) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("read " + std::string(source));
        }
        if (n == 0) break;
        if (out.size() + static_cast<size_t>(n) > max_bytes)
            throw Error(std::string(source) + ": larger than " + std::to_string(max_bytes) + " bytes, the limit");
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::string read_file(const std::string& path, std::size_t max_bytes) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + path);
    struct stat st;
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes)
        throw Error(path + ": " + std::to_string(st.st_size) + " bytes, larger than the limit of " +
                    std::to_string(max_bytes));
    return read_fd(fd.get(), max_bytes, path);
}

void check_json_bounds(std::string_view text, std::string_view source, std::size_t max_bytes) {
    if (text.size() > max_bytes)
        throw Error(std::string(source) + ": " + std::to_string(text.size()) + " bytes, larger than the limit of " +
                    std::to_string(max_bytes));
    // Brackets inside strings do not count; a string ends at a quote that is not
    // escaped. Malformed text is left to the parser, which says where.
    std::size_t depth = 0;
    const char* p = text.data();
    const char* end = p + text.size();
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            while (p < end) {
                const void* q = std::memchr(p, '"', static_cast<size_t>(end - p));
                if (!q) return;  // unterminated: the parser's error
                const char* quote = static_cast<const char*>(q);
                std::size_t backslashes = 0;
                for (const char* b = quote; b > p && b[-1] == '\\'; --b) ++backslashes;
                p = quote + 1;
                if (backslashes % 2 == 0) break;
            }
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxJsonDepth) {
                std::string_view before = text.substr(0, static_cast<size_t>(p - text.data()));
                auto line = 1 + std::count(before.begin(), before.end(), '\n');
                throw Error(std::string(source) + ": line " + std::to_string(line) +
                            ": arrays and objects nested deeper than " + std::to_string(kMaxJsonDepth) +
                            " levels, the limit");
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
}

static void write_all(int fd, std::string_view data, const std::string& path) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("write " + path);
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
}

void write_file(const std::string& path, std::string_view data) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC));
    if (!fd) throw_errno("open " + path);
    write_all(fd.get(), data, path);
}

std::vector<std::string_view> lines(std::string_view text) {
    std::vector<std::string_view> out;
    while (!text.empty()) {
        size_t eol = text.find('\n');
        out.push_back(text.substr(0, eol));
        text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    }
    return out;
}

void write_file_atomic(const std::string& path, std::string_view data, unsigned mode) {
    std::string tmp = path + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) throw_errno("create " + tmp);
    try {
        write_all(fd.get(), data, tmp);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw_errno("rename " + tmp + " to " + path, e);
    }
}

}  // namespace tarn
