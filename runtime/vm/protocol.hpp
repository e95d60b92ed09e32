// The line protocol between tarn (the host's VM monitor) and tarn-agent (pid 1 in the
// guest), shared by both sides. One JSON object per line, over the guest's first
// serial port; docs/vm-protocol.md describes every message.
//
// Lines that are not JSON objects (kernel messages on the same port) are skipped by
// the reader, so the channel needs no framing beyond '\n'.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace tarn::vm {

// Standard base64 (RFC 4648, with padding): stdio bytes travel as JSON strings.
std::string base64_encode(std::string_view bytes);
// Throws tarn::Error on a character outside the alphabet.
std::string base64_decode(std::string_view text);

// Encodes one message as a line ("...}\n").
std::string encode(const nlohmann::json& msg);

// Splits a byte stream into lines. feed() appends bytes; next() returns the next
// complete line without its '\n' (and a trailing '\r'), or nothing yet.
class LineReader {
public:
    // No message comes near this (stdio travels in chunks of at most 64 KiB, base64):
    // a longer line is noise or a peer gone wrong, dropped up to its '\n' so the
    // buffer stays bounded.
    static constexpr std::size_t kMaxLine = 1u << 20;
    void feed(std::string_view bytes);
    std::optional<std::string> next();
    // Bytes of an unfinished line (for error messages when the peer goes away).
    const std::string& pending() const { return buf_; }

private:
    std::string buf_;
    bool discarding_ = false;  // inside an overlong line: drop up to its end
};

// A line as a message: the object when it is one with a string "t" (event) or "op"
// (request) member, else nothing (a kernel message, noise, or an object nested deeper
// than kMaxJsonDepth, which no message is).
std::optional<nlohmann::json> decode(std::string_view line);

// The host side's stdin: reads what `fd` has and returns the `stdin` request carrying
// it, or the one saying EOF (also after a read error); nothing when the read would
// block or was interrupted.
std::optional<nlohmann::json> stdin_request(int fd);

// Whether a signal the host side receives goes on to the workload: all but those of
// its own plumbing (SIGCHLD, SIGPIPE, SIGWINCH, which becomes a resize, SIGURG).
bool forwarded_signal(int sig);

}  // namespace tarn::vm
