#include "runtime/pool/metrics.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>

namespace tarn::pool::metrics {

// ---- where ------------------------------------------------------------------

Address parse_address(const std::string& s) {
    Address a;
    auto bad = [&](const std::string& why) { return Error("\"" + s + "\": " + why); };
    if (s.rfind("unix:", 0) == 0) {
        a.unix_socket = true;
        a.path = s.substr(5);
        if (a.path.empty() || a.path[0] != '/') throw bad("unix: needs an absolute socket path");
        if (a.path.size() >= sizeof(sockaddr_un{}.sun_path)) throw bad("socket path too long");
        return a;
    }
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) throw bad("expected unix:PATH or IPV4:PORT");
    a.host = s.substr(0, colon);
    in_addr ip{};
    if (::inet_pton(AF_INET, a.host.c_str(), &ip) != 1)
        throw bad("\"" + a.host + "\" is not an IPv4 address");
    std::string port = s.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(port) > 65535)
        throw bad("port \"" + port + "\": expected 0 to 65535");
    a.port = static_cast<uint16_t>(std::stoul(port));
    return a;
}

UniqueFd listen(const Address& a) {
    std::string where =
        "metrics " + (a.unix_socket ? "unix:" + a.path : a.host + ":" + std::to_string(a.port));
    if (a.unix_socket) {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, a.path.c_str());
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) throw_errno(where + ": socket");
        // A socket file nobody answers on is a dead daemon's: take it over.
        UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
            throw Error(where + ": something is serving it already");
        ::unlink(a.path.c_str());
        mode_t old = ::umask(0177);
        int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        ::umask(old);
        if (rc < 0) throw_errno(where + ": bind");
        if (::listen(fd.get(), 16) < 0) throw_errno(where + ": listen");
        return fd;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(a.port);
    ::inet_pton(AF_INET, a.host.c_str(), &addr.sin_addr);
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw_errno(where + ": socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) throw_errno(where + ": bind");
    if (::listen(fd.get(), 16) < 0) throw_errno(where + ": listen");
    return fd;
}

std::string bound_address(int fd, const Address& a) {
    if (a.unix_socket) return "unix:" + a.path;
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0)
        return a.host + ":" + std::to_string(a.port);
    return a.host + ":" + std::to_string(ntohs(addr.sin_port));
}

// ---- the exposition format -----------------------------------------------------

void Histogram::observe(double seconds) {
    ++count;
    sum += seconds;
    for (size_t i = 0; i < kLatencyBounds.size(); ++i)
        if (seconds <= kLatencyBounds[i]) {
            ++buckets[i];
            return;
        }
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[64];
    if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0)
        std::snprintf(buf, sizeof buf, "%.0f", v);
    else
        std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string escape_label(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

void Writer::family(std::string_view name, std::string_view help, std::string_view type) {
    out_.append("# HELP ").append(name).append(" ");
    // HELP text escapes only backslash and newline.
    for (char c : help) {
        if (c == '\\')
            out_ += "\\\\";
        else if (c == '\n')
            out_ += "\\n";
        else
            out_ += c;
    }
    out_.append("\n# TYPE ").append(name).append(" ").append(type).append("\n");
}

void Writer::series(std::string_view name, const Labels& labels, std::string_view le) {
    out_.append(name);
    if (!labels.empty() || !le.empty()) {
        out_ += '{';
        bool first = true;
        for (const auto& [k, v] : labels) {
            if (!first) out_ += ',';
            first = false;
            out_.append(k).append("=\"").append(escape_label(v)).append("\"");
        }
        if (!le.empty()) {
            if (!first) out_ += ',';
            out_.append("le=\"").append(le).append("\"");
        }
        out_ += '}';
    }
    out_ += ' ';
}

void Writer::sample(std::string_view name, const Labels& labels, double value) {
    series(name, labels);
    out_.append(format_value(value)).append("\n");
}

void Writer::histogram(std::string_view name, const Labels& labels, const Histogram& h) {
    std::string base(name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kLatencyBounds.size(); ++i) {
        cumulative += h.buckets[i];
        series(base + "_bucket", labels, format_value(kLatencyBounds[i]));
        out_.append(format_value(static_cast<double>(cumulative))).append("\n");
    }
    series(base + "_bucket", labels, "+Inf");
    out_.append(format_value(static_cast<double>(h.count))).append("\n");
    sample(base + "_sum", labels, h.sum);
    sample(base + "_count", labels, static_cast<double>(h.count));
}

// ---- HTTP --------------------------------------------------------------------

Request parse_request(std::string_view buf) {
    Request r;
    size_t end = buf.find("\r\n\r\n");
    if (end == std::string_view::npos) end = buf.find("\n\n");
    if (end == std::string_view::npos) {
        if (buf.size() >= kMaxRequest) {
            r.state = Request::State::complete;
            r.status = 431;
        }
        return r;
    }
    r.state = Request::State::complete;
    std::string_view line = buf.substr(0, buf.find('\n'));
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) {
        r.status = 400;
        return r;
    }
    std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                     version = line.substr(sp2 + 1);
    if (version != "HTTP/1.0" && version != "HTTP/1.1") {
        r.status = version.rfind("HTTP/", 0) == 0 ? 505 : 400;
        return r;
    }
    r.head = method == "HEAD";
    if (method != "GET" && !r.head) {
        r.status = 405;
        return r;
    }
    // A query string (Prometheus adds none, a person might) does not change the answer.
    target = target.substr(0, target.find('?'));
    r.status = target == "/metrics" ? 200 : 404;
    return r;
}

std::string response(int status, std::string_view body, bool head) {
    const char* reason = "Bad Request";
    switch (status) {
        case 200:
            reason = "OK";
            break;
        case 404:
            reason = "Not Found";
            break;
        case 405:
            reason = "Method Not Allowed";
            break;
        case 431:
            reason = "Request Header Fields Too Large";
            break;
        case 505:
            reason = "HTTP Version Not Supported";
            break;
        default:
            break;
    }
    std::string text;
    std::string err;
    if (status != 200) {
        err = std::string(reason) + "\n";
        body = err;
    }
    text = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
    text +=
        std::string("Content-Type: ") + (status == 200 ? kContentType : "text/plain; charset=utf-8") + "\r\n";
    text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (status == 405) text += "Allow: GET, HEAD\r\n";
    text += "Connection: close\r\n\r\n";
    if (!head) text.append(body);
    return text;
}

}  // namespace tarn::pool::metrics
