// The pool daemon's state and its event loop's handlers, shared by the files that
// implement them (docs/pool.md, Code map). Internal to runtime/pool/.
#pragma once

#include <sys/epoll.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cgroups/cgroups.hpp"
#include "runtime/pool/detail.hpp"
#include "runtime/pool/metrics.hpp"
#include "runtime/pool/pool.hpp"
#include "runtime/pool/sandbox.hpp"
#include "runtime/pool/sizing.hpp"

namespace tarn::pool::detail {

using nlohmann::json;

inline double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
inline double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

// control, exit: a sandbox's fds; maker: one of a sandbox kind's own.
enum class Kind { listener, conn, control, exit, timer, signal, maker, metrics_listener, metrics_conn };
// What an epoll event is about. Events carry a never-reused id, not a pointer: a
// handler may destroy an object a later event of the same batch names.
struct Watch {
    Kind kind;
    void* obj;
    SandboxKind* maker = nullptr;  // Kind::maker: whose fd
};

struct Conn {
    UniqueFd fd;
    uint64_t id = 0;
    Pool* pool = nullptr;
    Sandbox* sb = nullptr;      // running this connection's request
    Sandbox* leased = nullptr;  // lent to this connection (OCI path)
    bool waiting = false;       // queued until a sandbox is free
    bool cold = false;          // found no idle sandbox: its claim waited for one to be made
    // "started" goes out when the workload exec'd; without it (the request's
    // "started":false) its fields ride on the exit report, and the client sleeps
    // through the workload's run.
    bool report_started = true;
    json started;
    json req;
    Request run;  // req, checked; its stdio are those below
    std::vector<UniqueFd> stdio;
    Clock::time_point t_req, deadline;
};

struct Pool {
    PoolSpec spec;
    detail::Template tmpl;
    SandboxKind* kind = nullptr;  // makes its sandboxes
    std::optional<cgroups::ResourcePool> rp;
    std::map<std::string, std::unique_ptr<Sandbox>> sandboxes;
    std::deque<Sandbox*> idle;
    std::deque<Conn*> waiting;
    unsigned starting = 0, running = 0;
    uint64_t seq = 0, hits = 0, misses = 0, claims = 0, failures = 0, made = 0, leases = 0;
    uint64_t lost = 0;              // ready sandboxes whose init died before any use (OOM killer, kill)
    // Cgroups of used sandboxes, vacant and reset, for the next ones (its kind keeps
    // them; oldest first), and how many sandboxes were made in one.
    struct Spare {
        std::string path;
        Clock::time_point since;
    };
    std::deque<Spare> spare_cgroups;
    uint64_t reused_cgroups = 0;
    std::vector<double> latencies;  // claim latency (ms), a ring of the last kLatencies
    size_t lat_next = 0;
    std::deque<Clock::time_point> made_recent;  // sandboxes made in the last kRateWindow
    std::string last_error;
    Clock::time_point backoff_until{};
    unsigned consecutive_failures = 0;
    // Sizing (sizing.hpp). A claim only counts an arrival; the estimates are folded
    // on the timer's tick, and a miss redecides at once (no formatting, no I/O).
    sizing::Limits limits;
    sizing::Input sizing_in;  // what the last decision saw, for `status`
    sizing::Decision sizing;
    uint64_t arrivals = 0;  // claims and leases since the last tick
    double make_s = 0;      // time to make a sandbox (EWMA)
    bool made_any = false;
    std::optional<unsigned> budget_room;
    Clock::time_point last_rate{}, last_decision{}, last_budget{};
    uint64_t target_raised = 0, target_lowered = 0;
    unsigned target_max = 0;
    metrics::Histogram warm, cold;  // claim latency, seconds

    unsigned total() const { return static_cast<unsigned>(sandboxes.size()); }
};

constexpr size_t kLatencies = 4096;
constexpr auto kRateWindow = std::chrono::seconds(10);
// The budget is read (cgroup files) at most this often for sizing.
constexpr auto kBudgetEvery = std::chrono::seconds(1);
// Excess idle sandboxes removed per tick when the target comes down.
constexpr unsigned kTrimPerTick = 4;
// Metrics scrapers: at most this many at once, each given this long to ask and read.
constexpr size_t kMaxScrapers = 8;
constexpr auto kScrapeTimeout = std::chrono::seconds(5);

struct Scrape {
    UniqueFd fd;
    uint64_t id = 0;
    std::string in, out;
    size_t sent = 0;
    Clock::time_point deadline;
};

class Daemon {
public:
    explicit Daemon(DaemonOptions o) : o_(std::move(o)) {}
    void run();

    // ---- for sandbox kinds (sandbox.hpp) ----
    // Watches `fd` for `kind`: its events go to kind->on_event(obj).
    uint64_t watch_for(SandboxKind* kind, int fd, void* obj) {
        return watch(fd, Kind::maker, obj, EPOLLIN, kind);
    }
    void unwatch(int fd, uint64_t& id);
    // The sandbox being made under this name, or null.
    Sandbox* starting(const std::string& name);
    // A sandbox is ready; `phases`: its setup timings, for the debug log.
    void made(Sandbox* sb, const std::string& phases);
    // Making it failed (`oom`: the budget's OOM killer took it); it is gone.
    void make_failed(Sandbox* sb, const std::string& why, bool oom = false);
    const std::map<std::string, std::unique_ptr<Pool>>& pools() const { return pools_; }
    bool leased(const std::string& cgroup) const { return leased_.count(cgroup) != 0; }
    const std::set<std::string>& leased() const { return leased_; }
    bool stopping() const { return stopping_; }
    void begin_stop(bool now);

private:
    void setup();
    void loop();
    // Removes what the daemon made: sandboxes, their kinds' helpers, pool cgroups, the socket.
    void teardown();
    void reap_leftovers();
    // One daemon per cgroup parent: reap_leftovers() would kill another live
    // daemon's sandboxes. An flock on the parent's directory, held for life.
    void lock_cgroup_parent();
    UniqueFd cgroup_lock_;
    void load_pool(const PoolSpec& spec);
    void listen();
    uint64_t watch(int fd, Kind kind, void* obj, uint32_t events = EPOLLIN, SandboxKind* maker = nullptr);

    // False when the pool's kind could not take the job.
    bool start_sandbox(Pool& p);
    void refill();
    // The pool's pids budget (if any) has no room for another sandbox.
    bool pids_budget_full(Pool& p);
    // Why the pool cannot make another sandbox now (maxTotal, the pids budget), or "".
    std::string cannot_grow(Pool& p);
    void on_control(Sandbox* sb);
    // The claimed workload exec'd: its claim latency, and "started" or what the exit
    // report will carry instead.
    void workload_started(Sandbox* sb);
    void on_exit(Sandbox* sb);
    void sandbox_ready(Pool& p, Sandbox* sb);
    void destroy_sandbox(Sandbox* sb);
    // A ready sandbox that died before any use: counted as lost and destroyed.
    void lose_sandbox(Sandbox* sb, const std::string& when);
    // `oom`: the budget's OOM killer took the sandbox while it was being made.
    void setup_failed(Pool& p, const std::string& msg, bool oom = false);

    void on_accept();
    void on_conn(Conn* c);
    void on_run(Conn* c, json& msg, std::vector<UniqueFd>& fds);
    // The next idle sandbox that is alive (dead ones are dropped), or null.
    Sandbox* take_idle(Pool& p);
    // Hands `sb` to the request on `c`. False when the sandbox turned out dead before
    // it got the request: it is gone and `c` still needs one.
    bool claim(Pool& p, Sandbox* sb, Conn* c);
    // Finds `c` a sandbox: an idle one, else it waits for one to be made (a miss).
    void assign(Pool& p, Conn* c);
    // A claimed sandbox died before its workload started: it is lost, and its request
    // goes to another sandbox. False when there is no such request.
    bool reassign(Sandbox* sb);
    void on_lease(Conn* c, const json& msg);
    // released: the caller holds the namespaces and the cgroup is its container's;
    // otherwise (the caller went away first) the sandbox is destroyed like any other.
    void end_lease(Conn* c, bool released);
    // The leases file (<socket>.leases): cgroups lent to containers, one per line.
    std::string leases_file() const { return o_.socket + ".leases"; }
    void load_leases();
    void record_lease(const std::string& cgroup);
    void reply(Conn* c, const json& msg);
    void fail(Conn* c, const std::string& msg);
    void close_conn(Conn* c);
    json pool_status(Pool& p) const;
    // A new sizing decision for `p`; `misses` just happened.
    void resize(Pool& p, unsigned misses);
    // The timer's part: rates, the budget, the decision, excess idle sandboxes.
    void tick_sizing(Pool& p, Clock::time_point now);

    void on_metrics_accept();
    void on_scrape(Scrape* s);
    void close_scrape(Scrape* s);
    std::string render_metrics() const;

    void on_timer();
    bool drained() const;

    DaemonOptions o_;
    cgroups::Mode mode_ = cgroups::Mode::unified;
    UniqueFd ep_, listener_, timer_, sigfd_;
    std::map<uint64_t, Watch> watches_;
    uint64_t next_watch_ = 1;
    std::map<std::string, std::unique_ptr<Pool>> pools_;
    std::vector<std::unique_ptr<SandboxKind>> kinds_;
    std::map<Conn*, std::unique_ptr<Conn>> conns_;
    unsigned starting_total_ = 0;
    bool stopping_ = false, stop_now_ = false;
    bool socket_bound_ = false;
    std::set<std::string> leased_;  // cgroup paths of containers made from leases
    Clock::time_point started_at_ = Clock::now();
    metrics::Address metrics_addr_;
    UniqueFd metrics_fd_;
    std::string metrics_bound_;  // what scrapers connect to
    std::map<Scrape*, std::unique_ptr<Scrape>> scrapes_;
};

}  // namespace tarn::pool::detail
