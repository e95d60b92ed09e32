#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::pool {
namespace {

using nlohmann::json;

UniqueFd connect_to(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Error("pool socket " + path + ": path too long");
    std::strcpy(addr.sun_path, path.c_str());
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("pool socket");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw_errno("connect to the pool daemon at " + path + " (is `tarn pool serve` running?)");
    return s;
}

json expect_reply(int sock) {
    json reply;
    if (!detail::recv_message(sock, reply)) throw Error("pool daemon closed the connection");
    if (reply.contains("error")) throw Error(reply["error"].get<std::string>());
    return reply;
}

// The client side of one claim, printed on stderr when TARN_POOL_TIMELINE is set:
// when the caller started the client (the variable's value, if it is a time in
// seconds since the epoch as bash's $EPOCHREALTIME gives it; otherwise run() itself),
// run() entered, connected, request sent, "started" received and the exit report
// received. With the daemon's claim time (request → workload exec'd) it shows where
// a claim's time goes without a tracer.
class Timeline {
public:
    Timeline() {
        const char* v = std::getenv("TARN_POOL_TIMELINE");
        on_ = v != nullptr && *v != '\0';
        if (!on_) return;
        entered_ = now();
        char* end = nullptr;
        double given = std::strtod(v, &end);
        origin_ = end != v && *end == '\0' && given > 1e9 ? given : entered_;
    }
    bool on() const { return on_; }
    void mark(double& at) {
        if (on_) at = now();
    }
    void print(double claim_ms) const {
        if (!on_) return;
        auto ms = [&](double t) { return t > 0 ? (t - origin_) * 1000.0 : -1.0; };
        std::fprintf(
            stderr,
            "pool timeline (ms since client start): run %.3f, connected %.3f, sent %.3f, started %.3f,"
            " exit %.3f; daemon claim (request to exec) %.3f\n",
            ms(entered_), ms(connected), ms(sent), ms(started), ms(exited), claim_ms);
    }
    double connected = 0, sent = 0, started = 0, exited = 0;

private:
    static double now() {
        timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
    }
    bool on_ = false;
    double origin_ = 0, entered_ = 0;
};

}  // namespace

Client::Client(const std::string& socket) : socket_(socket) {}

RunResult Client::run(const RunRequest& r, int signal_fd) {
    Timeline tl;
    UniqueFd s;
    {
        std::lock_guard lock(mu_);
        if (!idle_.empty()) {
            s = std::move(idle_.back());
            idle_.pop_back();
        }
    }
    const bool reused = static_cast<bool>(s);
    if (!reused) s = connect_to(socket_);
    tl.mark(tl.connected);
    json req = {{"op", "run"}, {"pool", r.pool}, {"args", r.args}, {"waitMs", r.wait_ms}};
    // Nothing here needs the workload's start before its exit but the timeline: the
    // exit report carries the same fields, and the client is not woken in between.
    if (!tl.on()) req["started"] = false;
    if (!r.env.empty()) req["env"] = r.env;
    if (!r.cwd.empty()) req["cwd"] = r.cwd;
    if (r.memory) req["memory"] = *r.memory;
    if (r.pids) req["pids"] = *r.pids;
    for (const std::string& b : r.binds) {
        size_t c1 = b.find(':');
        if (c1 == std::string::npos) throw Error("--bind " + b + ": expected SOURCE:DESTINATION[:ro]");
        size_t c2 = b.find(':', c1 + 1);
        std::string opt = c2 == std::string::npos ? "" : b.substr(c2 + 1);
        if (!opt.empty() && opt != "ro" && opt != "rw") throw Error("--bind " + b + ": option must be ro or rw");
        req["binds"].push_back({{"source", b.substr(0, c1)},
                                {"destination", b.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1)},
                                {"readonly", opt == "ro"}});
    }
    try {
        detail::send_message(s.get(), req, {r.stdio[0], r.stdio[1], r.stdio[2]});
    } catch (const Error& e) {
        // A kept connection whose daemon has gone (stopped, restarted): a new one.
        if (!reused || (e.code() != EPIPE && e.code() != ECONNRESET && e.code() != ENOTCONN)) throw;
        s = connect_to(socket_);
        detail::send_message(s.get(), req, {r.stdio[0], r.stdio[1], r.stdio[2]});
    }
    tl.mark(tl.sent);
    RunResult out;
    pollfd pf[2] = {{s.get(), POLLIN, 0}, {signal_fd, POLLIN, 0}};
    for (;;) {
        if (::poll(pf, signal_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll");
        }
        if (signal_fd >= 0 && (pf[1].revents & POLLIN)) {
            signalfd_siginfo si;
            while (::read(signal_fd, &si, sizeof si) == sizeof si)
                detail::send_message(s.get(), json{{"op", "signal"}, {"signal", si.ssi_signo}});
        }
        if (!pf[0].revents) continue;
        json m = expect_reply(s.get());
        std::string ev = m.value("event", "");
        if (ev == "started") {
            tl.mark(tl.started);
            out.pid = m.value("pid", -1);
            out.sandbox = m.value("sandbox", "");
            out.claim_ms = m.value("claimMs", 0.0);
        } else if (ev == "exit") {
            if (m.contains("pid")) {
                out.pid = m.value("pid", -1);
                out.sandbox = m.value("sandbox", "");
                out.claim_ms = m.value("claimMs", 0.0);
            }
            out.exit_code = m.value("exitCode", 0);
            out.signal = m.value("signal", 0);
            tl.mark(tl.exited);
            tl.print(out.claim_ms);
            std::lock_guard lock(mu_);
            if (idle_.size() < kIdleConnections) idle_.push_back(std::move(s));
            return out;
        }
    }
}

json Client::status(const std::string& pool) {
    UniqueFd s = connect_to(socket_);
    json req = {{"op", "status"}};
    if (!pool.empty()) req["pool"] = pool;
    detail::send_message(s.get(), req);
    return expect_reply(s.get());
}

void Client::stop(bool now) {
    UniqueFd s = connect_to(socket_);
    detail::send_message(s.get(), json{{"op", "stop"}, {"now", now}});
    expect_reply(s.get());
    // The daemon closes the socket file when it is done: wait for that, so `stop`
    // returning means every sandbox is gone.
    for (int i = 0; i < 3000; ++i) {
        UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, socket_.c_str());
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return;
        ::usleep(10000);
    }
    throw Error("pool daemon at " + socket_ + " did not stop within 30 s");
}

}  // namespace tarn::pool
