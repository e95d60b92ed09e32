// The D-Bus wire protocol, as much of it as the systemd driver needs (see dbus.hpp).
#include "cgroups/dbus.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace tarn::cgroups::dbus {

namespace {

// The protocol's limit on a message (and so on anything we are asked to buffer).
constexpr size_t kMaxMessage = 128u << 20;

size_t align_of(char type) {
    switch (type) {
        case 'y':
        case 'g':
        case 'v':
            return 1;
        case 'n':
        case 'q':
            return 2;
        case 'x':
        case 't':
        case 'd':
        case '(':
        case '{':
            return 8;
        default:
            return 4;  // b i u h s o a
    }
}

size_t align_up(size_t pos, size_t n) {
    return (pos + n - 1) / n * n;
}

Error malformed(std::string_view why) {
    return Error("D-Bus message: malformed (" + std::string(why) + ")");
}

// Where the complete type starting at sig[i] ends.
size_t type_end(std::string_view sig, size_t i) {
    if (i >= sig.size()) throw malformed("incomplete signature \"" + std::string(sig) + "\"");
    char c = sig[i];
    if (c == 'a') return type_end(sig, i + 1);
    if (c == '(' || c == '{') {
        char close = c == '(' ? ')' : '}';
        size_t j = i + 1;
        while (j < sig.size() && sig[j] != close) j = type_end(sig, j);
        if (j >= sig.size())
            throw malformed("unclosed '" + std::string(1, c) + "' in \"" + std::string(sig) + "\"");
        return j + 1;
    }
    if (std::string_view("ybnqiuxtdhsogv").find(c) == std::string_view::npos)
        throw malformed("type '" + std::string(1, c) + "' in \"" + std::string(sig) + "\"");
    return i + 1;
}

class Reader {
public:
    Reader(std::string_view data, size_t& pos) : d_(data), pos_(pos) {}

    Value one(std::string_view type, int depth = 0) {
        if (depth > 64) throw malformed("nesting too deep");
        Value v;
        v.type = type[0];
        switch (type[0]) {
            case 'y':
                v.u = fixed(1);
                break;
            case 'b':
                v.u = fixed(4);
                if (v.u > 1) throw malformed("boolean " + std::to_string(v.u));
                break;
            case 'n':
                v.u = fixed(2);
                v.i = static_cast<int16_t>(v.u);
                break;
            case 'q':
                v.u = fixed(2);
                break;
            case 'i':
                v.u = fixed(4);
                v.i = static_cast<int32_t>(v.u);
                break;
            case 'u':
            case 'h':
                v.u = fixed(4);
                break;
            case 'x':
                v.u = fixed(8);
                v.i = static_cast<int64_t>(v.u);
                break;
            case 't':
                v.u = fixed(8);
                break;
            case 'd': {
                v.u = fixed(8);
                std::memcpy(&v.d, &v.u, sizeof v.d);
                break;
            }
            case 's':
            case 'o':
                v.s = text(fixed(4));
                break;
            case 'g':
                v.s = text(fixed(1));
                break;
            case 'v': {
                v.s = text(fixed(1));
                if (v.s.empty() || type_end(v.s, 0) != v.s.size())
                    throw malformed("variant signature \"" + v.s + "\"");
                v.items.push_back(one(v.s, depth + 1));
                break;
            }
            case 'a': {
                uint64_t len = fixed(4);
                std::string_view elem = type.substr(1, type_end(type, 1) - 1);
                skip_to(align_of(elem[0]));
                need(len);
                size_t end = pos_ + len;
                while (pos_ < end) v.items.push_back(one(elem, depth + 1));
                if (pos_ != end) throw malformed("array overruns its length");
                break;
            }
            case '(':
            case '{': {
                skip_to(8);
                size_t i = 1;
                while (type[i] != ')' && type[i] != '}') {
                    size_t j = type_end(type, i);
                    v.items.push_back(one(type.substr(i, j - i), depth + 1));
                    i = j;
                }
                break;
            }
            default:
                throw malformed("type '" + std::string(1, type[0]) + "'");
        }
        return v;
    }

private:
    void need(uint64_t n) {
        if (n > d_.size() - pos_) throw malformed("truncated");
    }
    void skip_to(size_t n) {
        size_t p = align_up(pos_, n);
        need(p - pos_);
        pos_ = p;
    }
    uint64_t fixed(size_t n) {
        skip_to(n);
        need(n);
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k) v |= uint64_t(static_cast<uint8_t>(d_[pos_ + k])) << (8 * k);
        pos_ += n;
        return v;
    }
    std::string text(uint64_t len) {
        need(len + 1);
        std::string s(d_.substr(pos_, len));
        if (d_[pos_ + len] != '\0') throw malformed("string without its NUL");
        pos_ += len + 1;
        return s;
    }

    std::string_view d_;
    size_t& pos_;
};

std::string type_name(char t) {
    return t ? std::string("'") + t + "'" : std::string("nothing");
}

}  // namespace

// ---- Writer -----------------------------------------------------------------------

void Writer::align(size_t n) {
    buf_.resize(align_up(buf_.size(), n), '\0');
}

void Writer::byte(uint8_t v) {
    buf_.push_back(static_cast<char>(v));
}

void Writer::u32(uint32_t v) {
    align(4);
    for (int k = 0; k < 4; ++k) buf_.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
}

void Writer::u64(uint64_t v) {
    align(8);
    for (int k = 0; k < 8; ++k) buf_.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
}

void Writer::string(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    buf_.append(s);
    buf_.push_back('\0');
}

void Writer::signature(std::string_view s) {
    byte(static_cast<uint8_t>(s.size()));
    buf_.append(s);
    buf_.push_back('\0');
}

void Writer::begin_array(size_t elem_align) {
    u32(0);
    size_t mark = buf_.size() - 4;
    // The length counts from the first element: the padding before it is not included.
    align(elem_align);
    arrays_.emplace_back(mark, buf_.size());
}

void Writer::end_array() {
    auto [mark, start] = arrays_.back();
    arrays_.pop_back();
    uint32_t len = static_cast<uint32_t>(buf_.size() - start);
    for (int k = 0; k < 4; ++k) buf_[mark + k] = static_cast<char>((len >> (8 * k)) & 0xff);
}

// ---- values and messages ----------------------------------------------------------

const std::string& Value::str(std::string_view what) const {
    const Value& v = inner();
    if (v.type != 's' && v.type != 'o' && v.type != 'g')
        throw Error(std::string(what) + ": expected a string, got " + type_name(v.type));
    return v.s;
}

uint64_t Value::uint(std::string_view what) const {
    const Value& v = inner();
    if (std::string_view("ybqutnix").find(v.type) == std::string_view::npos || v.type == 0)
        throw Error(std::string(what) + ": expected a number, got " + type_name(v.type));
    return v.u;
}

const Value& Value::inner() const {
    return type == 'v' && !items.empty() ? items[0] : *this;
}

std::vector<Value> parse(std::string_view sig, std::string_view data, size_t& pos) {
    std::vector<Value> out;
    Reader r(data, pos);
    for (size_t i = 0; i < sig.size();) {
        size_t j = type_end(sig, i);
        out.push_back(r.one(sig.substr(i, j - i)));
        i = j;
    }
    return out;
}

std::string Message::error_text() const {
    std::string out = error_name;
    if (!body.empty() && body[0].type == 's') out += ": " + body[0].s;
    return out;
}

std::string method_call(uint32_t serial, std::string_view destination, std::string_view path,
                        std::string_view interface, std::string_view member, std::string_view body_sig,
                        std::string_view body) {
    Writer w;
    w.byte('l');  // little-endian, as everything tarn runs on
    w.byte(static_cast<uint8_t>(MessageType::method_call));
    w.byte(0);  // flags
    w.byte(1);  // protocol version
    w.u32(static_cast<uint32_t>(body.size()));
    w.u32(serial);
    auto field = [&](uint8_t code, std::string_view type, std::string_view value) {
        if (value.empty()) return;
        w.begin_struct();
        w.byte(code);
        w.variant(type);
        if (type == "g")
            w.signature(value);
        else
            w.string(value);
    };
    w.begin_array(8);
    field(1, "o", path);
    field(2, "s", interface);
    field(3, "s", member);
    field(6, "s", destination);
    field(8, "g", body_sig);
    w.end_array();
    w.align(8);
    w.data().append(body);
    return std::move(w.data());
}

size_t message_size(std::string_view head) {
    if (head.size() < 16) throw malformed("short header");
    if (head[0] != 'l') throw malformed("not little-endian");
    size_t pos = 4;
    auto body = parse("uuu", head, pos);
    uint64_t total = align_up(16 + body[2].u, 8) + body[0].u;
    if (total > kMaxMessage) throw malformed("message of " + std::to_string(total) + " bytes");
    return static_cast<size_t>(total);
}

Message parse_message(std::string_view bytes) {
    size_t total = message_size(bytes);
    if (bytes.size() < total) throw malformed("truncated");
    Message m;
    m.type = static_cast<MessageType>(static_cast<uint8_t>(bytes[1]));
    m.flags = static_cast<uint8_t>(bytes[2]);
    size_t pos = 4;
    auto fixed = parse("uu", bytes, pos);
    uint64_t body_len = fixed[0].u;
    m.serial = static_cast<uint32_t>(fixed[1].u);
    auto fields = parse("a(yv)", bytes, pos);
    for (const Value& f : fields[0].items) {
        const Value& v = f.items[1].inner();
        switch (f.items[0].u) {
            case 1:
                m.path = v.s;
                break;
            case 2:
                m.interface = v.s;
                break;
            case 3:
                m.member = v.s;
                break;
            case 4:
                m.error_name = v.s;
                break;
            case 5:
                m.reply_serial = static_cast<uint32_t>(v.u);
                break;
            case 6:
                m.destination = v.s;
                break;
            case 7:
                m.sender = v.s;
                break;
            case 8:
                m.signature = v.s;
                break;
            default:
                break;  // unix fds and fields from later versions of the protocol
        }
    }
    pos = align_up(pos, 8);
    std::string_view body = bytes.substr(pos, body_len);
    size_t bpos = 0;
    m.body = parse(m.signature, body, bpos);
    if (bpos != body.size()) throw malformed("body longer than its signature");
    return m;
}

const Message& check(const Message& m, std::string_view what) {
    if (m.type == MessageType::error) throw Error(std::string(what) + ": " + m.error_text());
    return m;
}

// ---- the connection ---------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

void send_all(int fd, std::string_view bytes, const std::string& what) {
    while (!bytes.empty()) {
        ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(what + ": send");
        }
        bytes.remove_prefix(static_cast<size_t>(n));
    }
}

// Reads once into `buf` (waiting until `deadline`); false at end of file.
bool read_some(int fd, std::string& buf, Clock::time_point deadline, const std::string& what) {
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, ms_left(deadline));
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_errno(what + ": poll");
        }
        if (r == 0) throw Error(what + ": timed out");
        char chunk[16384];
        ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            throw_errno(what + ": read");
        }
        if (n == 0) return false;
        buf.append(chunk, static_cast<size_t>(n));
        return true;
    }
}

}  // namespace

Connection Connection::open(const std::string& path, bool is_bus, std::chrono::milliseconds timeout) {
    const std::string what = "D-Bus " + path;
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno(what + ": socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Error(what + ": path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw_errno(what + ": connect");

    // SASL EXTERNAL without an identity of our own: "AUTH EXTERNAL", an empty DATA
    // response to the server's DATA challenge, and the server takes the uid the kernel
    // reports for the socket (SO_PEERCRED). Naming a uid ourselves would name it as this
    // process sees it: inside a user namespace (rootless podman runs the runtime as its
    // root) that is 0, which the server, outside it, sees as someone else and refuses.
    // The leading NUL byte is where a client could pass credentials; the kernel supplies
    // them for us. Everything goes in one write (the protocol allows it), so the server has
    // left its authentication state before it answers and before our first message
    // arrives: systemd's own server (the private socket) leaves a message that comes in
    // right behind a separate BEGIN unread until more data arrives.
    auto deadline = Clock::now() + timeout;
    const std::string hello = std::string(1, '\0') + "AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n";
    send_all(fd.get(), hello, what);
    // The replies: "DATA" (the challenge we answered in advance), then "OK <guid>".
    std::string in;
    for (;;) {
        size_t eol = in.find("\r\n");
        if (eol == std::string::npos) {
            if (in.size() > 4096) throw Error(what + ": authentication: overlong reply");
            if (!read_some(fd.get(), in, deadline, what + ": authentication"))
                throw Error(what + ": authentication: connection closed");
            continue;
        }
        std::string line = in.substr(0, eol);
        in.erase(0, eol + 2);
        if (line == "DATA") continue;
        if (line.rfind("OK ", 0) != 0) throw Error(what + ": authentication refused: " + line);
        break;
    }
    if (!in.empty()) throw Error(what + ": authentication: unexpected data after OK");

    Connection c(std::move(fd), path, is_bus);
    if (is_bus)
        check(c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", "", "",
                     timeout),
              what + ": Hello");
    return c;
}

void Connection::send(std::string_view bytes) {
    send_all(fd_.get(), bytes, "D-Bus " + path_);
}

Message Connection::receive(Clock::time_point deadline) {
    const std::string what = "D-Bus " + path_;
    for (;;) {
        if (in_.size() >= 16) {
            size_t total = message_size(in_);
            if (in_.size() >= total) {
                Message m = parse_message(std::string_view(in_).substr(0, total));
                in_.erase(0, total);
                return m;
            }
        }
        if (!read_some(fd_.get(), in_, deadline, what)) throw Error(what + ": connection closed by the peer");
    }
}

Message Connection::call(std::string_view destination, std::string_view path, std::string_view interface,
                         std::string_view member, std::string_view body_sig, std::string_view body,
                         std::chrono::milliseconds timeout) {
    uint32_t serial = ++serial_;
    send(method_call(serial, destination, path, interface, member, body_sig, body));
    auto deadline = Clock::now() + timeout;
    for (;;) {
        Message m;
        try {
            m = receive(deadline);
        } catch (const Error& e) {
            throw e.wrapped(std::string(interface) + "." + std::string(member));
        }
        if ((m.type == MessageType::method_return || m.type == MessageType::error) &&
            m.reply_serial == serial)
            return m;
        if (m.type == MessageType::signal) signals_.push_back(std::move(m));
    }
}

Message Connection::wait_signal(const std::function<bool(const Message&)>& match,
                                std::chrono::milliseconds timeout) {
    for (auto it = signals_.begin(); it != signals_.end(); ++it) {
        if (match(*it)) {
            Message m = std::move(*it);
            signals_.erase(it);
            return m;
        }
    }
    signals_.clear();
    auto deadline = Clock::now() + timeout;
    for (;;) {
        Message m = receive(deadline);
        if (m.type == MessageType::signal && match(m)) return m;
    }
}

}  // namespace tarn::cgroups::dbus
