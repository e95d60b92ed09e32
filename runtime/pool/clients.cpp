// Client connections: the request protocol (docs/pool.md, Protocol), run requests
// and their claims, signal, status and stop.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;

void Daemon::on_accept() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
            (cred.uid != 0 && cred.uid != ::geteuid())) {
            try {
                detail::send_message(fd.get(), json{{"error", "pool: permission denied (uid " +
                                                                  std::to_string(cred.uid) + ")"}});
            } catch (const Error&) {
            }
            continue;
        }
        auto owned = std::make_unique<Conn>();
        Conn* c = owned.get();
        c->fd = std::move(fd);
        c->id = watch(c->fd.get(), Kind::conn, c, EPOLLIN | EPOLLRDHUP);
        conns_[c] = std::move(owned);
        // A client sends its request as soon as it connects: serve it in this turn
        // rather than after another round through epoll.
        pollfd pfd{c->fd.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 0) == 1) on_conn(c);
    }
}

void Daemon::reply(Conn* c, const json& msg) {
    try {
        detail::send_message(c->fd.get(), msg);
    } catch (const Error& e) {
        log_debug(std::string("pool: client went away: ") + e.what());
    }
}

void Daemon::fail(Conn* c, const std::string& msg) {
    reply(c, json{{"error", msg}});
    close_conn(c);
}

void Daemon::close_conn(Conn* c) {
    if (c->waiting && c->pool) std::erase(c->pool->waiting, c);
    if (c->leased) end_lease(c, false);
    if (Sandbox* sb = c->sb) {
        // Nobody is left to receive the result: the workload goes.
        sb->owner = nullptr;
        sb->signal(SIGKILL);
    }
    unwatch(c->fd.get(), c->id);
    conns_.erase(c);
}

void Daemon::on_conn(Conn* c) {
    json msg;
    std::vector<UniqueFd> fds;
    try {
        if (!detail::recv_message(c->fd.get(), msg, &fds)) {
            close_conn(c);
            return;
        }
    } catch (const Error& e) {
        fail(c, std::string("pool: bad request: ") + e.what());
        return;
    }
    std::string op = msg.value("op", "");
    try {
        if (op == "run") {
            on_run(c, msg, fds);
        } else if (op == "signal") {
            if (!msg.contains("signal") || !msg["signal"].is_number_integer())
                throw Error("signal: expected integer");
            if (c->sb && c->sb->st == Sandbox::St::running) c->sb->signal(msg["signal"].get<int>());
        } else if (op == "status") {
            std::string name = msg.value("pool", "");
            json pools = json::array();
            for (auto& [n, p] : pools_)
                if (name.empty() || name == n) pools.push_back(pool_status(*p));
            if (!name.empty() && pools.empty()) throw Error("pool \"" + name + "\": no such pool");
            json st = {{"pools", pools}, {"uptimeSec", ms_since(started_at_) / 1000}};
            if (!metrics_bound_.empty()) st["metrics"] = metrics_bound_;
            reply(c, st);
        } else if (op == "lease") {
            on_lease(c, msg);
        } else if (op == "release") {
            if (!c->leased) throw Error("release: nothing leased on this connection");
            end_lease(c, true);
            reply(c, json{{"ok", true}});
        } else if (op == "stop") {
            reply(c, json{{"ok", true}});
            begin_stop(msg.value("now", false));
        } else {
            throw Error("unknown op \"" + op + "\"");
        }
    } catch (const nlohmann::json::exception& e) {
        fail(c, std::string("pool: bad request: ") + e.what());
    } catch (const Error& e) {
        fail(c, e.what());
    }
}

namespace {

std::vector<std::string> string_list(const json& msg, const char* key, bool required) {
    std::vector<std::string> out;
    if (!msg.contains(key)) {
        if (required) throw Error(std::string(key) + ": required");
        return out;
    }
    const json& a = msg[key];
    if (!a.is_array()) throw Error(std::string(key) + ": expected an array of strings");
    for (const json& s : a) {
        if (!s.is_string()) throw Error(std::string(key) + ": expected an array of strings");
        std::string v = s.get<std::string>();
        if (v.find('\0') != std::string::npos) throw Error(std::string(key) + ": NUL byte in \"" + v + "\"");
        out.push_back(std::move(v));
    }
    return out;
}

}  // namespace

void Daemon::on_run(Conn* c, json& msg, std::vector<UniqueFd>& fds) {
    // A connection carries one run at a time; after its exit report, another.
    if (c->sb || c->waiting || c->leased) throw Error("one run request at a time per connection");
    if (stopping_) throw Error("the pool daemon is stopping");
    std::string name = msg.value("pool", "");
    auto it = pools_.find(name);
    if (it == pools_.end()) throw Error("pool \"" + name + "\": no such pool");
    Pool& p = *it->second;
    Request& r = c->run = Request{};
    r.args = string_list(msg, "args", true);
    if (r.args.empty() || r.args[0].empty()) throw Error("args: must name a command");
    r.env = string_list(msg, "env", false);
    for (const std::string& e : r.env)
        if (e.find('=') == std::string::npos || e[0] == '=') throw Error("env \"" + e + "\": not KEY=VALUE");
    if (msg.contains("cwd") && (!msg["cwd"].is_string() || msg["cwd"].get<std::string>().rfind('/', 0) != 0))
        throw Error("cwd: expected an absolute path");
    for (const char* k : {"memory", "pids", "waitMs"})
        if (msg.contains(k) && !msg[k].is_number_integer())
            throw Error(std::string(k) + ": expected integer");
    if (msg.contains("binds")) {
        const json& bs = msg["binds"];
        if (!bs.is_array() || bs.size() > ns::kMaxClaimBinds)
            throw Error("binds: expected an array of at most " + std::to_string(ns::kMaxClaimBinds));
        for (const json& b : bs) {
            if (!b.is_object() || !b.contains("source") || !b["source"].is_string() ||
                !b.contains("destination") || !b["destination"].is_string())
                throw Error("binds: each needs a source and a destination");
            for (const char* k : {"source", "destination"})
                if (b[k].get<std::string>().rfind('/', 0) != 0)
                    throw Error(std::string("binds: ") + k + " \"" + b[k].get<std::string>() +
                                "\": not an absolute path");
            r.binds.push_back({b["source"].get<std::string>(), b["destination"].get<std::string>(),
                               b.value("readonly", false)});
        }
    }
    if (msg.contains("started") && !msg["started"].is_boolean()) throw Error("started: expected boolean");
    c->report_started = msg.value("started", true);
    c->cold = false;
    c->started = json();
    if (fds.size() != 3)
        throw Error("run: expected 3 fds (stdin, stdout, stderr), got " + std::to_string(fds.size()));
    r.cwd = msg.value("cwd", "");
    if (msg.contains("memory")) r.memory = msg["memory"].get<int64_t>();
    if (msg.contains("pids")) r.pids = msg["pids"].get<int64_t>();
    for (int i = 0; i < 3; ++i) r.stdio[i] = fds[i].get();
    c->pool = &p;
    c->req = std::move(msg);
    c->stdio = std::move(fds);
    c->t_req = Clock::now();
    ++p.claims;
    ++p.arrivals;
    assign(p, c);
}

void Daemon::assign(Pool& p, Conn* c) {
    while (Sandbox* sb = take_idle(p)) {
        if (claim(p, sb, c)) {
            ++p.hits;
            return;
        }
    }
    ++p.misses;
    c->cold = true;
    resize(p, 1);
    int64_t wait_ms = c->req.value("waitMs", int64_t{10000});
    std::string full = cannot_grow(p);
    bool can_grow = full.empty();
    if (!can_grow && p.starting == 0 && wait_ms <= 0) throw Error("pool " + p.spec.name + ": " + full);
    c->waiting = true;
    // A cold sandbox is coming when the pool can grow: worth waiting for even with waitMs 0.
    c->deadline =
        c->t_req + std::chrono::milliseconds(can_grow ? std::max<int64_t>(wait_ms, 30000) : wait_ms);
    p.waiting.push_back(c);
}

bool Daemon::claim(Pool& p, Sandbox* sb, Conn* c) {
    sb->st = Sandbox::St::running;
    ++p.running;
    sb->owner = c;
    c->sb = sb;
    try {
        sb->exit_id = watch(sb->exit_fd(), Kind::exit, sb);
        if (!sb->claim(c->run)) {
            sb->owner = nullptr;
            c->sb = nullptr;
            lose_sandbox(sb, "before its claim");
            return false;
        }
    } catch (const Error& e) {
        sb->owner = nullptr;
        c->sb = nullptr;
        destroy_sandbox(sb);
        fail(c, "pool " + p.spec.name + ": " + e.what());
        return true;
    }
    // The sandbox has its own copies of the stdio now; the connection keeps its own
    // until the workload runs, for another sandbox should this one die first.
    return true;
}

json Daemon::pool_status(Pool& p) const {
    unsigned total = p.total(), allocated = p.running;
    json lat = {{"p50", detail::percentile(p.latencies, 50)},
                {"p99", detail::percentile(p.latencies, 99)},
                {"samples", p.latencies.size()}};
    auto now = Clock::now();
    size_t recent = 0;
    for (auto t : p.made_recent)
        if (now - t <= kRateWindow) ++recent;
    double window = std::min(std::chrono::duration<double>(kRateWindow).count(),
                             std::max(1e-3, std::chrono::duration<double>(now - started_at_).count()));
    json budget = {{"cgroup", p.rp->path()}};
    try {
        cgroups::Usage u = p.rp->cgroup().usage();
        if (u.memory) budget["memoryCurrent"] = *u.memory;
        if (u.memory_limit) budget["memoryLimit"] = *u.memory_limit;
        if (u.pids) budget["pidsCurrent"] = *u.pids;
        if (u.pids_limit) budget["pidsLimit"] = *u.pids_limit;
    } catch (const Error& e) {
        budget["error"] = e.what();
    }
    json j = {{"name", p.spec.name},
              {"kind", p.kind ? p.kind->name() : "process"},
              {"minIdle", p.spec.min_idle},
              {"maxTotal", p.spec.max_total},
              {"total", total},
              {"allocated", allocated},
              {"idle", p.idle.size()},
              {"starting", p.starting},
              {"waiting", p.waiting.size()},
              {"utilization", total ? static_cast<double>(allocated) / total : 0.0},
              {"claims", p.claims},
              {"hits", p.hits},
              {"misses", p.misses},
              {"made", p.made},
              {"leases", p.leases},
              {"failures", p.failures},
              {"lost", p.lost},
              {"cgroups",
               {{"reused", p.reused_cgroups},
                {"spare", p.spare_cgroups.size()},
                {"noReuse", p.tmpl.no_cgroup_reuse}}},
              {"refillPerSec", static_cast<double>(recent) / window},
              {"claimLatencyMs", lat},
              {"budget", budget}};
    j["sizing"] = {{"mode", sizing::mode_name(p.limits.mode)},
                   {"target", p.sizing.target},
                   {"level", p.sizing.level},
                   {"demandPerSec", p.sizing_in.rate},
                   {"makeMs", p.sizing_in.make_s * 1000},
                   {"headroom", p.limits.headroom},
                   {"maxIdle", p.limits.max_idle},
                   {"decayMs", p.spec.decay_ms},
                   {"rateWindowMs", p.spec.rate_window_ms},
                   {"raised", p.target_raised},
                   {"lowered", p.target_lowered},
                   {"targetMax", p.target_max},
                   {"why", sizing::explain(p.limits, p.sizing_in, p.sizing)}};
    if (!p.last_error.empty()) j["lastError"] = p.last_error;
    return j;
}

}  // namespace tarn::pool::detail
