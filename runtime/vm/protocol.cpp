#include "runtime/vm/protocol.hpp"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "oci/base.hpp"

namespace tarn::vm {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int value_of(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (size_t rest = bytes.size() - i; rest > 0) {
        uint32_t v = uint8_t(bytes[i]) << 16;
        if (rest == 2) v |= uint8_t(bytes[i + 1]) << 8;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::string base64_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size() / 4 * 3);
    uint32_t acc = 0;
    int bits = 0;
    for (char c : text) {
        if (c == '=') break;
        int v = value_of(c);
        if (v < 0) throw Error("base64: unexpected character in data");
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return out;
}

std::string encode(const nlohmann::json& msg) {
    return msg.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void LineReader::feed(std::string_view bytes) {
    buf_.append(bytes);
    if (buf_.size() > kMaxLine && buf_.find('\n') == std::string::npos) {
        buf_.clear();
        discarding_ = true;
    }
}

std::optional<std::string> LineReader::next() {
    size_t nl = buf_.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    if (discarding_) {
        discarding_ = false;
        buf_.erase(0, nl + 1);
        return next();
    }
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

std::optional<nlohmann::json> decode(std::string_view line) {
    // A kernel message can land in front of a message on the same line: the object
    // starts at the first '{'.
    size_t start = line.find('{');
    if (start == std::string_view::npos) return std::nullopt;
    try {
        check_json_bounds(line.substr(start), "vm protocol line", LineReader::kMaxLine);
    } catch (const Error&) {
        return std::nullopt;
    }
    nlohmann::json j = nlohmann::json::parse(line.substr(start), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    if ((j.contains("t") && j["t"].is_string()) || (j.contains("op") && j["op"].is_string())) return j;
    return std::nullopt;
}

std::optional<nlohmann::json> stdin_request(int fd) {
    char buf[16384];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) return nlohmann::json{{"op", "stdin"}, {"data", base64_encode(std::string_view(buf, static_cast<size_t>(n)))}};
    if (n == 0 || (errno != EINTR && errno != EAGAIN)) return nlohmann::json{{"op", "stdin"}, {"eof", true}};
    return std::nullopt;
}

bool forwarded_signal(int sig) { return sig != SIGCHLD && sig != SIGPIPE && sig != SIGWINCH && sig != SIGURG; }

}  // namespace tarn::vm
