// The pool daemon's metrics in the Prometheus text exposition format (0.0.4), and
// the little HTTP it takes to serve them: where to listen, one request parsed,
// one response. The daemon drives the sockets from its own event loop
// (exporter.cpp). Internal to runtime/pool/.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "oci/base.hpp"

namespace tarn::pool::metrics {

// ---- where ------------------------------------------------------------------

struct Address {
    bool unix_socket = false;
    std::string path;   // unix:PATH
    std::string host;   // IPV4:PORT, a literal address
    uint16_t port = 0;  // 0: any free port (status names the one chosen)
};

// "unix:/run/tarn/metrics.sock" or "127.0.0.1:9464"; the message names what is wrong.
Address parse_address(const std::string& s);
// A listening, non-blocking socket. A unix socket file is made mode 0600 (as the
// pool's own socket), replacing a stale one nobody answers on.
UniqueFd listen(const Address& a);
// What clients connect to: "unix:PATH" or "IPV4:PORT" with the port the kernel chose.
std::string bound_address(int fd, const Address& a);

// ---- the exposition format -----------------------------------------------------

using Labels = std::vector<std::pair<std::string_view, std::string>>;

// Bucket upper bounds (seconds) of the claim latency histograms: a warm claim takes
// well under a millisecond to a few; a cold one, a sandbox's making (several ms to
// hundreds under load).
inline constexpr std::array<double, 14> kLatencyBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                          0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};

// Counts per bucket (not cumulative: observe stays O(1) in the bucket count and the
// writer adds them up); observations above the last bound count only in `count`.
struct Histogram {
    std::array<uint64_t, kLatencyBounds.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
    void observe(double seconds);
};

class Writer {
public:
    // Starts a metric family: `# HELP` and `# TYPE` (counter, gauge, histogram).
    void family(std::string_view name, std::string_view help, std::string_view type);
    void sample(std::string_view name, const Labels& labels, double value);
    // name_bucket{...,le="..."} for every bound and +Inf, name_sum, name_count.
    void histogram(std::string_view name, const Labels& labels, const Histogram& h);
    const std::string& text() const { return out_; }

private:
    void series(std::string_view name, const Labels& labels, std::string_view le = {});
    std::string out_;
};

// A number as the format writes it: integers without a fraction, +Inf, -Inf, NaN.
std::string format_value(double v);
// A label value with \\, \" and \n escaped.
std::string escape_label(std::string_view v);

// ---- HTTP --------------------------------------------------------------------

// A request larger than this is answered 431 and closed: the daemon never buffers
// more for a client it does not know.
inline constexpr size_t kMaxRequest = 8192;

struct Request {
    enum class State { incomplete, complete };
    State state = State::incomplete;
    int status = 0;  // 200, or the error to answer (400, 404, 405, 431, 505)
    bool head = false;
};

// Looks at what has arrived so far: the request line and headers up to the blank
// line. Only GET (or HEAD) of /metrics over HTTP/1.0 or 1.1 is served.
Request parse_request(std::string_view buf);

// The whole response, `Connection: close`; the body only when `head` is false.
std::string response(int status, std::string_view body, bool head = false);

inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace tarn::pool::metrics
