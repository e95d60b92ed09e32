// A small D-Bus client: the wire protocol (marshalling, SASL EXTERNAL, method calls,
// signals) for the few calls the systemd driver makes. Internal to cgroups/.
//
// Why not libsystemd's sd-bus: tarn is a static-pie binary (fast start, no loader, one
// file to copy next to containerd), and Debian ships libsystemd only as a shared
// library. dlopen()ing it from a static binary loads a second libc into the process and
// only works with the exact glibc tarn was linked against, which breaks the one thing a
// static binary is for. The subset of D-Bus systemd's Manager API needs is small, stable
// (the spec has not changed in a decade) and testable on its own, so tarn speaks it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "oci/base.hpp"

namespace tarn::cgroups::dbus {

// Appends D-Bus values to a little-endian message body with the protocol's alignment
// (relative to the start of the buffer, which the message puts at an 8-byte boundary).
class Writer {
public:
    void align(size_t n);
    void byte(uint8_t v);
    void boolean(bool v) { u32(v ? 1 : 0); }
    void u32(uint32_t v);
    void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
    void u64(uint64_t v);
    void string(std::string_view s);  // also an object path
    void signature(std::string_view s);
    // An array: end_array patches in the length of the innermost open one. `elem_align`
    // is the element type's alignment (8 for structs and dict entries).
    void begin_array(size_t elem_align);
    void end_array();
    void begin_struct() { align(8); }
    // A variant: its signature; the caller writes one value of that type next.
    void variant(std::string_view sig) { signature(sig); }

    const std::string& data() const { return buf_; }
    std::string& data() { return buf_; }

private:
    std::string buf_;
    std::vector<std::pair<size_t, size_t>> arrays_;  // open arrays: (length offset, first element)
};

// A received value, parsed by its signature.
struct Value {
    char type = 0;             // the D-Bus type code; '(' for a struct, '{' for a dict entry
    uint64_t u = 0;            // y b n q u t (and the bits of i x)
    int64_t i = 0;             // n i x
    double d = 0;              // d
    std::string s;             // s o g; a variant's signature
    std::vector<Value> items;  // array elements, struct fields, a variant's one value

    // What a caller expects, or an Error naming what came instead (`what` prefixes it).
    const std::string& str(std::string_view what) const;
    uint64_t uint(std::string_view what) const;
    // A variant's value (or the value itself if it is not a variant).
    const Value& inner() const;
};

// Parses `sig` (one or more complete types) from `data` starting at `pos`; alignment is
// relative to the buffer's start. Throws on truncated or malformed input.
std::vector<Value> parse(std::string_view sig, std::string_view data, size_t& pos);

enum class MessageType : uint8_t { invalid = 0, method_call = 1, method_return = 2, error = 3, signal = 4 };

struct Message {
    MessageType type = MessageType::invalid;
    uint8_t flags = 0;
    uint32_t serial = 0, reply_serial = 0;
    std::string path, interface, member, error_name, destination, sender, signature;
    std::vector<Value> body;
    // An error reply's text: "org.freedesktop.systemd1.NoSuchUnit: Unit x not found."
    std::string error_text() const;
};

// A whole method call message, ready to send.
std::string method_call(uint32_t serial, std::string_view destination, std::string_view path,
                        std::string_view interface, std::string_view member, std::string_view body_sig,
                        std::string_view body);
// Parses one whole message (as framed by message_size).
Message parse_message(std::string_view bytes);
// The total size of the message whose first 16 bytes are `head`; throws if malformed.
size_t message_size(std::string_view head);

// One connection to a bus (or to a peer, such as systemd's private socket).
class Connection {
public:
    // Connects to the unix socket `path` and authenticates (EXTERNAL: as the uid the
    // kernel reports for the socket, whatever user namespace we are in). A
    // bus gets the Hello call every bus client must make first; a peer does not.
    static Connection open(const std::string& path, bool is_bus, std::chrono::milliseconds timeout);

    Connection(Connection&&) = default;
    Connection& operator=(Connection&&) = default;

    // Sends a call and waits for its reply (queueing signals that arrive meanwhile). An
    // error reply is returned as such: callers check type, or use check().
    Message call(std::string_view destination, std::string_view path, std::string_view interface,
                 std::string_view member, std::string_view body_sig, std::string_view body,
                 std::chrono::milliseconds timeout);
    // The first signal (queued or new) for which `match` holds; others are dropped. An
    // Error after `timeout`.
    Message wait_signal(const std::function<bool(const Message&)>& match, std::chrono::milliseconds timeout);

    const std::string& path() const { return path_; }
    // A bus (through a broker that routes signals by match rules), not a direct peer.
    bool is_bus() const { return is_bus_; }

private:
    Connection(UniqueFd fd, std::string path, bool is_bus)
        : fd_(std::move(fd)), path_(std::move(path)), is_bus_(is_bus) {}
    Message receive(std::chrono::steady_clock::time_point deadline);
    void send(std::string_view bytes);

    UniqueFd fd_;
    std::string path_;
    bool is_bus_ = false;
    std::string in_;  // bytes received, not yet parsed
    uint32_t serial_ = 0;
    std::vector<Message> signals_;
};

// Throws Error("<what>: <error name>: <text>") for an error reply.
const Message& check(const Message& m, std::string_view what);

}  // namespace tarn::cgroups::dbus
