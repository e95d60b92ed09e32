// Prometheus metrics (metrics.hpp holds the format): scrapes served by the daemon's
// own loop without blocking, and the exposition of every pool's figures.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;

void Daemon::on_metrics_accept() {
    for (;;) {
        UniqueFd fd(::accept4(metrics_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) return;
        // Beyond a few scrapers at once, more are turned away rather than queued.
        if (scrapes_.size() >= kMaxScrapers) continue;
        auto owned = std::make_unique<Scrape>();
        Scrape* s = owned.get();
        s->fd = std::move(fd);
        s->deadline = Clock::now() + kScrapeTimeout;
        s->id = watch(s->fd.get(), Kind::metrics_conn, s, EPOLLIN | EPOLLRDHUP);
        scrapes_[s] = std::move(owned);
    }
}

void Daemon::on_scrape(Scrape* s) {
    if (s->out.empty()) {
        char buf[2048];
        for (;;) {
            size_t room = metrics::kMaxRequest - s->in.size();
            ssize_t n = ::recv(s->fd.get(), buf, std::min(room, sizeof buf), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                close_scrape(s);
                return;
            }
            if (n < 0) {
                if (errno == EINTR) continue;
                break;
            }
            s->in.append(buf, static_cast<size_t>(n));
            if (s->in.size() >= metrics::kMaxRequest) break;
        }
        metrics::Request r = metrics::parse_request(s->in);
        if (r.state == metrics::Request::State::incomplete) return;
        s->out = metrics::response(r.status, r.status == 200 ? render_metrics() : "", r.head);
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = s->id;
        if (::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, s->fd.get(), &ev) < 0) throw_errno("epoll_ctl");
    }
    while (s->sent < s->out.size()) {
        ssize_t n = ::send(s->fd.get(), s->out.data() + s->sent, s->out.size() - s->sent,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;  // the rest when the scraper has read some
            break;
        }
        s->sent += static_cast<size_t>(n);
    }
    close_scrape(s);
}

void Daemon::close_scrape(Scrape* s) {
    // Unread bytes at close make the kernel send a reset, which can cost the client
    // the response it has not read yet: drop them first.
    char buf[512];
    ::shutdown(s->fd.get(), SHUT_WR);
    for (int i = 0; i < 16 && ::recv(s->fd.get(), buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
    }
    unwatch(s->fd.get(), s->id);
    scrapes_.erase(s);
}

std::string Daemon::render_metrics() const {
    metrics::Writer w;
    using L = metrics::Labels;
    auto each = [&](const char* name, const char* help, const char* type, auto value) {
        w.family(name, help, type);
        for (const auto& [n, p] : pools_) w.sample(name, L{{"pool", n}}, static_cast<double>(value(*p)));
    };
    w.family("tarn_pool_claim_duration_seconds",
             "Time from a run request's arrival to its workload's execve; kind=warm found an idle sandbox, "
             "kind=cold waited for one to be made.",
             "histogram");
    for (const auto& [n, p] : pools_) {
        w.histogram("tarn_pool_claim_duration_seconds", L{{"pool", n}, {"kind", "warm"}}, p->warm);
        w.histogram("tarn_pool_claim_duration_seconds", L{{"pool", n}, {"kind", "cold"}}, p->cold);
    }
    each("tarn_pool_claims_total", "Run requests received.", "counter",
         [](const Pool& p) { return p.claims; });
    each("tarn_pool_hits_total", "Run requests and leases served by an idle sandbox.", "counter",
         [](const Pool& p) { return p.hits; });
    each("tarn_pool_misses_total",
         "Run requests that waited for a sandbox to be made, and leases refused for lack of one.", "counter",
         [](const Pool& p) { return p.misses; });
    each("tarn_pool_sandboxes_made_total", "Sandboxes made ready.", "counter",
         [](const Pool& p) { return p.made; });
    each("tarn_pool_sandboxes_lost_total", "Ready sandboxes whose init died before any use.", "counter",
         [](const Pool& p) { return p.lost; });
    each("tarn_pool_cgroups_reused_total", "Sandboxes made in the reset cgroup of a used one.", "counter",
         [](const Pool& p) { return p.reused_cgroups; });
    each("tarn_pool_setup_failures_total", "Sandboxes whose setup failed.", "counter",
         [](const Pool& p) { return p.failures; });
    each("tarn_pool_leases_total", "Sandboxes lent to `tarn create` (the OCI path).", "counter",
         [](const Pool& p) { return p.leases; });
    each("tarn_pool_sandboxes", "Sandboxes in any state (R).", "gauge",
         [](const Pool& p) { return p.total(); });
    each("tarn_pool_allocated", "Sandboxes running a claim (A).", "gauge",
         [](const Pool& p) { return p.running; });
    each("tarn_pool_idle", "Sandboxes ready for a claim.", "gauge",
         [](const Pool& p) { return p.idle.size(); });
    each("tarn_pool_starting", "Sandboxes being made.", "gauge", [](const Pool& p) { return p.starting; });
    each("tarn_pool_waiting_claims", "Run requests waiting for a sandbox.", "gauge",
         [](const Pool& p) { return p.waiting.size(); });
    each("tarn_pool_utilization_ratio", "Allocated over all sandboxes (U = A/R); 0 when there are none.",
         "gauge", [](const Pool& p) { return p.total() ? static_cast<double>(p.running) / p.total() : 0.0; });
    each("tarn_pool_idle_target", "Idle sandboxes the pool keeps ready now (the sizing decision).", "gauge",
         [](const Pool& p) { return p.sizing.target; });
    each("tarn_pool_min_idle", "The idle target's floor (the whole target with fixed sizing).", "gauge",
         [](const Pool& p) { return p.limits.min_idle; });
    each("tarn_pool_max_idle", "The idle target's ceiling.", "gauge",
         [](const Pool& p) { return p.limits.max_idle; });
    each("tarn_pool_max_total", "Most sandboxes in any state.", "gauge",
         [](const Pool& p) { return p.limits.max_total; });
    each("tarn_pool_demand_per_second", "Run requests and leases per second, exponentially averaged.",
         "gauge", [](const Pool& p) { return p.sizing_in.rate; });
    each("tarn_pool_make_duration_seconds", "Time to make a sandbox, exponentially averaged.", "gauge",
         [](const Pool& p) { return p.make_s; });
    auto now = Clock::now();
    double window = std::min(seconds(kRateWindow), std::max(1e-3, seconds(now - started_at_)));
    each("tarn_pool_refill_per_second", "Sandboxes made per second over the last 10 s.", "gauge",
         [&](const Pool& p) {
             size_t recent = 0;
             for (auto t : p.made_recent)
                 if (now - t <= kRateWindow) ++recent;
             return static_cast<double>(recent) / window;
         });
    w.family("tarn_pool_idle_target_changes_total", "Times the idle target went up or down.", "counter");
    for (const auto& [n, p] : pools_) {
        w.sample("tarn_pool_idle_target_changes_total", L{{"pool", n}, {"direction", "up"}},
                 static_cast<double>(p->target_raised));
        w.sample("tarn_pool_idle_target_changes_total", L{{"pool", n}, {"direction", "down"}},
                 static_cast<double>(p->target_lowered));
    }
    // The budget: read from the pool's cgroup; a series is left out where the
    // kernel reports no limit or the read fails.
    std::map<std::string, cgroups::Usage> use;
    for (const auto& [n, p] : pools_) {
        try {
            use[n] = p->rp->cgroup().usage();
        } catch (const Error& e) {
            log_debug("pool " + n + ": metrics: " + e.what());
        }
    }
    struct Budget {
        const char* name;
        const char* help;
        std::optional<uint64_t> cgroups::Usage::*field;
    };
    const Budget budgets[] = {
        {"tarn_pool_budget_memory_bytes", "Memory the pool's cgroup uses.", &cgroups::Usage::memory},
        {"tarn_pool_budget_memory_limit_bytes", "The pool's memory budget.", &cgroups::Usage::memory_limit},
        {"tarn_pool_budget_pids", "Processes in the pool's cgroup.", &cgroups::Usage::pids},
        {"tarn_pool_budget_pids_limit", "The pool's pids budget.", &cgroups::Usage::pids_limit},
    };
    for (const Budget& b : budgets) {
        w.family(b.name, b.help, "gauge");
        for (const auto& [n, u] : use)
            if (const auto& v = u.*b.field) w.sample(b.name, L{{"pool", n}}, static_cast<double>(*v));
    }
    w.family("tarn_pool_uptime_seconds", "Seconds since the daemon started.", "gauge");
    w.sample("tarn_pool_uptime_seconds", {}, seconds(now - started_at_));
    return w.text();
}

}  // namespace tarn::pool::detail
