// The pool daemon: one event loop (epoll) over the listening socket, client
// connections, the sync sockets of sandboxes in setup and the pidfds of running
// workloads. Sandbox setup never blocks the loop: ParkedInit is driven one message
// at a time, so claims are served while other sandboxes are being made.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <memory>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/detail.hpp"
#include "runtime/pool/metrics.hpp"
#include "runtime/pool/pool.hpp"
#include "runtime/pool/sizing.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

enum class Kind { listener, conn, sync, pidfd, timer, signal, spawner, metrics_listener, metrics_conn };
// What an epoll event is about. Events carry a never-reused id, not a pointer: a
// handler may destroy an object a later event of the same batch names.
struct Watch {
    Kind kind;
    void* obj;
};

struct Pool;
struct Conn;

struct Sandbox {
    // leased: handed to `tarn create` for an OCI bundle (its namespaces and cgroup).
    enum class St { starting, idle, running, leased };
    Pool* pool = nullptr;
    std::string name;
    std::string cgroup;                    // its cgroup path
    pid_t spawner = -1;                    // the spawner that made it (and removes it)
    std::unique_ptr<ns::ParkedInit> init;  // null while a spawner makes it
    St st = St::starting;
    uint64_t sync_id = 0, pid_id = 0;  // 0: not watched
    Conn* owner = nullptr;
    std::string error;  // why a claimed workload could not start
    bool exec_done = false;
    Clock::time_point t_make;  // asked of a spawner
};

struct Conn {
    UniqueFd fd;
    uint64_t id = 0;
    Pool* pool = nullptr;
    Sandbox* sb = nullptr;      // running this connection's request
    Sandbox* leased = nullptr;  // lent to this connection (OCI path)
    bool waiting = false;   // queued until a sandbox is free
    bool cold = false;      // found no idle sandbox: its claim waited for one to be made
    json req;
    std::vector<UniqueFd> stdio;
    Clock::time_point t_req, deadline;
};

struct Pool {
    PoolSpec spec;
    detail::Template tmpl;
    std::optional<cgroups::ResourcePool> rp;
    std::map<std::string, std::unique_ptr<Sandbox>> sandboxes;
    std::deque<Sandbox*> idle;
    std::deque<Conn*> waiting;
    unsigned starting = 0, running = 0;
    uint64_t seq = 0, hits = 0, misses = 0, claims = 0, failures = 0, made = 0, leases = 0;
    uint64_t lost = 0;  // ready sandboxes whose init died before any use (OOM killer, kill)
    std::vector<double> latencies;  // claim latency (ms), a ring of the last kLatencies
    size_t lat_next = 0;
    std::deque<Clock::time_point> made_recent;  // sandboxes made in the last kRateWindow
    std::string last_error;
    Clock::time_point backoff_until{};
    unsigned consecutive_failures = 0;
    // Sizing (sizing.hpp). A claim only counts an arrival; the estimates are folded
    // on the timer's tick, and a miss redecides at once (no formatting, no I/O).
    sizing::Limits limits;
    sizing::Input sizing_in;    // what the last decision saw, for `status`
    sizing::Decision sizing;
    uint64_t arrivals = 0;      // claims and leases since the last tick
    double make_s = 0;          // time to make a sandbox (EWMA)
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
// Spawners replaced after they died: at most kMaxRespawns per kRespawnWindow.
constexpr auto kRespawnWindow = std::chrono::seconds(60);
constexpr size_t kMaxRespawns = 5;
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

struct Spawner {
    pid_t pid = -1;
    UniqueFd sock;
    uint64_t id = 0;
    unsigned jobs = 0;                // sandboxes asked for and not yet answered
    std::set<std::string> pending;    // their names
};

class Daemon {
public:
    explicit Daemon(DaemonOptions o) : o_(std::move(o)) {}
    void run();

private:
    void setup();
    void loop();
    // Removes what the daemon made: spawners, pool cgroups, the socket.
    void teardown();
    void reap_leftovers();
    void load_pool(const PoolSpec& spec);
    void listen();
    uint64_t watch(int fd, Kind kind, void* obj, uint32_t events = EPOLLIN);
    void unwatch(int fd, uint64_t& id);

    void start_spawners();
    // Forks one spawner (at setup, or to replace one that died).
    Spawner* start_spawner();
    void on_spawner(Spawner* sp);
    // EOF or a failed send: its sandboxes in the making are lost, and another takes its place.
    void spawner_died(Spawner* sp);
    // False when no spawner could take the job.
    bool start_sandbox(Pool& p);
    void refill();
    void on_sync(Sandbox* sb);
    void on_exit(Sandbox* sb);
    void sandbox_ready(Pool& p, Sandbox* sb);
    void destroy_sandbox(Sandbox* sb);
    // A ready sandbox whose init died before any use: counted as lost and destroyed.
    void lose_sandbox(Sandbox* sb, const std::string& when);
    void tell_spawner(const std::string& path, pid_t spawner, const std::string& op = "destroy");
    // Tells `sp` to remove every sandbox cgroup that is neither a sandbox of ours nor leased.
    void sweep_orphans(Spawner* sp);
    // `oom`: the budget's OOM killer took the sandbox while it was being made.
    void setup_failed(Pool& p, const std::string& msg, bool oom = false);

    void on_accept();
    void on_conn(Conn* c);
    void on_run(Conn* c, json& msg, std::vector<UniqueFd>& fds);
    // The next idle sandbox whose init is alive (dead ones are dropped), or null.
    Sandbox* take_idle(Pool& p);
    // Hands `sb` to the request on `c`. False when the sandbox turned out dead before
    // it got the request: it is gone and `c` still needs one.
    bool claim(Pool& p, Sandbox* sb, Conn* c);
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
    void begin_stop(bool now);
    bool drained() const;

    DaemonOptions o_;
    cgroups::Mode mode_ = cgroups::Mode::unified;
    UniqueFd ep_, listener_, timer_, sigfd_;
    std::map<uint64_t, Watch> watches_;
    uint64_t next_watch_ = 1;
    std::map<std::string, std::unique_ptr<Pool>> pools_;
    std::map<Conn*, std::unique_ptr<Conn>> conns_;
    std::vector<std::unique_ptr<Spawner>> spawners_;
    size_t next_spawner_ = 0;
    std::deque<Clock::time_point> spawner_deaths_;  // within the last kRespawnWindow
    bool serving_ = false;                          // setup is done, the loop runs
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

// ---- set-up ----------------------------------------------------------------

void Daemon::reap_leftovers() {
    // Everything under cgroup_parent belongs to the daemon — sandboxes a crashed
    // daemon left, workloads still running in them — except leased cgroups: those
    // are containers `tarn create` made from a lease, `tarn delete` removes them.
    // Sandbox mounts live in the sandboxes' own mount namespaces and go with them.
    auto top = cgroups::open(o_.cgroup_parent, mode_);
    if (!top->exists()) return;
    auto parent = cgroups::ResourcePool::open(o_.cgroup_parent, mode_);
    size_t killed = 0;
    for (const std::string& pool : parent.sandboxes()) {
        auto rp = cgroups::ResourcePool::open(o_.cgroup_parent + "/" + pool, mode_);
        for (const std::string& name : rp.sandboxes()) {
            auto cg = rp.open_sandbox(name);
            if (leased_.count(cg->path())) continue;
            killed += cg->pids().size();
            cg->kill_all(SIGKILL);
            for (int i = 0; i < 500 && !cg->pids().empty(); ++i) ::usleep(10000);
            cg->destroy();
        }
    }
    if (killed) log_warn("pool: killed " + std::to_string(killed) + " processes a previous daemon left in " + o_.cgroup_parent);
}

void Daemon::load_pool(const PoolSpec& spec) {
    auto p = std::make_unique<Pool>();
    p->spec = spec;
    std::string where = "pool " + spec.name;
    char buf[PATH_MAX];
    if (!::realpath(spec.bundle.c_str(), buf)) throw_errno(where + ": bundle " + spec.bundle);
    std::string bundle = buf, config_path = bundle + "/config.json";
    detail::Template& t = p->tmpl;
    t.pool = spec.name;
    t.config = oci::parse_config(read_file(config_path), config_path);
    if (!t.config.root || t.config.root->path.empty()) throw Error(config_path + ": root.path: required");
    if (!t.config.process) throw Error(config_path + ": process: required");
    if (t.config.process->terminal)
        throw Error(config_path + ": process.terminal: a pool sandbox takes its stdio from each request");
    t.rootfs = t.config.root->path[0] == '/' ? t.config.root->path : bundle + "/" + t.config.root->path;
    struct stat st;
    if (::stat(t.rootfs.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        throw Error(config_path + ": root.path " + t.rootfs + ": not a directory");
    // A writable root is shared by every sandbox of the pool: each gets its own overlay.
    t.overlay = !t.config.root->readonly;
    for (oci::Mount& m : t.config.mounts)
        if (!m.source.empty() && m.source[0] != '/' && (m.type == "bind" || m.type.empty()))
            m.source = bundle + "/" + m.source;
    t.cgroup = o_.cgroup_parent + "/" + spec.name;
    t.mode = mode_;
    p->rp.emplace(cgroups::ResourcePool::create(t.cgroup, spec.budget, mode_));
    p->limits = sizing::Limits{.mode = spec.sizing,
                               .min_idle = spec.min_idle,
                               .max_idle = spec.max_idle ? spec.max_idle : spec.max_total,
                               .max_total = spec.max_total,
                               .headroom = spec.headroom,
                               .decay_s = spec.decay_ms / 1000.0};
    p->last_rate = p->last_decision = Clock::now();
    p->sizing = sizing::decide(p->limits, spec.min_idle, p->sizing_in);
    p->target_max = p->sizing.target;
    pools_[spec.name] = std::move(p);
}

void Daemon::start_spawners() {
    for (unsigned i = 0; i < o_.max_starting; ++i) start_spawner();
}

Spawner* Daemon::start_spawner() {
    std::vector<const detail::Template*> templates;
    for (auto& [n, p] : pools_) templates.push_back(&p->tmpl);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd mine(sv[0]), theirs(sv[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork pool spawner");
    if (pid == 0) {
        mine.reset();
        // Nothing of the daemon's but its own socket: sandboxes are cloned from here.
        if (theirs.get() != 3) {
            ::dup2(theirs.get(), 3);
            theirs.reset();
        } else {
            (void)theirs.release();
        }
        ::close_range(4, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        detail::spawner_main(3, templates);
    }
    auto sp = std::make_unique<Spawner>();
    sp->pid = pid;
    sp->sock = std::move(mine);
    spawners_.push_back(std::move(sp));
    return spawners_.back().get();
}

uint64_t Daemon::watch(int fd, Kind kind, void* obj, uint32_t events) {
    uint64_t id = next_watch_++;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) throw_errno("epoll_ctl");
    watches_[id] = Watch{kind, obj};
    return id;
}

void Daemon::unwatch(int fd, uint64_t& id) {
    if (!id) return;
    (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
    watches_.erase(id);
    id = 0;
}

void Daemon::listen() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (o_.socket.size() >= sizeof addr.sun_path) throw Error("pool socket " + o_.socket + ": path too long");
    std::strcpy(addr.sun_path, o_.socket.c_str());
    std::string dir = o_.socket.substr(0, o_.socket.rfind('/'));
    if (!dir.empty()) {
        std::string cur;
        for (size_t pos = 1; pos <= dir.size(); ++pos)
            if (pos == dir.size() || dir[pos] == '/') {
                cur = dir.substr(0, pos);
                if (::mkdir(cur.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir " + cur);
            }
    }
    listener_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listener_) throw_errno("pool socket");
    // A socket file nobody answers on is a dead daemon's: take it over.
    UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
        throw Error("pool socket " + o_.socket + ": another pool daemon is serving it");
    ::unlink(o_.socket.c_str());
    mode_t old = ::umask(0177);  // root-only: 0600
    int rc = ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::umask(old);
    if (rc < 0) throw_errno("bind pool socket " + o_.socket);
    socket_bound_ = true;
    if (::listen(listener_.get(), 256) < 0) throw_errno("listen on " + o_.socket);
}

// ---- sandboxes -------------------------------------------------------------

bool Daemon::start_sandbox(Pool& p) {
    if (spawners_.empty()) return false;
    Spawner* sp = spawners_[next_spawner_++ % spawners_.size()].get();
    for (auto& cand : spawners_)
        if (cand->jobs < sp->jobs) sp = cand.get();
    auto sb = std::make_unique<Sandbox>();
    sb->pool = &p;
    // The daemon's pid in the name: a restarted daemon never reuses an old name.
    sb->name = p.spec.name + "-" + std::to_string(::getpid()) + "-" + std::to_string(++p.seq);
    sb->cgroup = p.tmpl.cgroup + "/" + sb->name;
    sb->spawner = sp->pid;
    sb->t_make = Clock::now();
    try {
        detail::send_message(sp->sock.get(),
                             json{{"op", "make"}, {"pool", p.spec.name}, {"sandbox", sb->name}});
    } catch (const Error& e) {
        // Dead before the loop read its EOF.
        log_error("pool: spawner " + std::to_string(sp->pid) + ": " + e.what());
        spawner_died(sp);
        return false;
    }
    ++sp->jobs;
    sp->pending.insert(sb->name);
    ++p.starting;
    ++starting_total_;
    p.sandboxes[sb->name] = std::move(sb);
    return true;
}

void Daemon::spawner_died(Spawner* sp) {
    // Its sandboxes in the making are lost; the daemon carries on with the others.
    log_error("pool: spawner " + std::to_string(sp->pid) + " died");
    unwatch(sp->sock.get(), sp->id);
    for (const std::string& name : sp->pending)
        for (auto& [n, p] : pools_)
            if (p->sandboxes.erase(name)) {
                --p->starting;
                --starting_total_;
                setup_failed(*p, "the spawner making it died");
            }
    pid_t dead = sp->pid;
    std::erase_if(spawners_, [sp](const auto& x) { return x.get() == sp; });
    ::kill(dead, SIGKILL);  // EOF is its exit, or a spawner past saving
    while (::waitpid(dead, nullptr, 0) < 0 && errno == EINTR) {
    }
    // A replacement, unless they keep dying: then something breaks every one, and
    // the daemon goes on with those left (or stops when none is). Setup watches the
    // spawners it starts itself.
    auto now = Clock::now();
    while (!spawner_deaths_.empty() && now - spawner_deaths_.front() > kRespawnWindow)
        spawner_deaths_.pop_front();
    spawner_deaths_.push_back(now);
    if (serving_ && !stopping_ && spawner_deaths_.size() <= kMaxRespawns) {
        try {
            Spawner* fresh = start_spawner();
            fresh->id = watch(fresh->sock.get(), Kind::spawner, fresh);
            log_warn("pool: spawner " + std::to_string(fresh->pid) + " replaces it");
            // What the dead one was told to remove may have died unread with it.
            sweep_orphans(fresh);
        } catch (const Error& e) {
            log_error("pool: replacing spawner " + std::to_string(dead) + ": " + e.what());
        }
    }
    if (spawners_.empty()) {
        log_error("pool: every spawner died: stopping");
        begin_stop(true);
    }
}

void Daemon::on_spawner(Spawner* sp) {
    json msg;
    std::vector<UniqueFd> fds;
    bool alive = false;
    try {
        alive = detail::recv_message(sp->sock.get(), msg, &fds);
    } catch (const Error& e) {
        // ECONNRESET: it died with requests unread.
        log_debug(std::string("pool: spawner ") + std::to_string(sp->pid) + ": " + e.what());
    }
    if (!alive) {
        spawner_died(sp);
        return;
    }
    std::string name = msg.contains("made") ? msg.value("made", "") : msg.value("failed", "");
    --sp->jobs;
    sp->pending.erase(name);
    Pool* pool = nullptr;
    for (auto& [n, p] : pools_)
        if (p->sandboxes.count(name)) pool = p.get();
    pid_t pid = msg.value("pid", -1);
    if (!pool) {
        if (pid > 0) ::kill(pid, SIGKILL);
        return;
    }
    Pool& p = *pool;
    Sandbox* sb = p.sandboxes[name].get();
    --p.starting;
    --starting_total_;
    if (msg.contains("failed") || fds.size() != 2) {
        // The spawner killed the init; we are its parent and reap it.
        if (pid > 0) {
            while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        std::string err = msg.value("error", "sandbox setup failed");
        p.sandboxes.erase(name);
        setup_failed(p, err, msg.value("oom", false));
        return;
    }
    sb->init = ns::ParkedInit::adopt(std::move(fds[0]), std::move(fds[1]), pid);
    // Idle, the init only speaks if it dies: watching its socket notices that.
    sb->sync_id = watch(sb->init->fd(), Kind::sync, sb);
    ++p.made;
    p.make_s = sizing::ewma_sample(p.make_s, seconds(Clock::now() - sb->t_make), !p.made_any);
    p.made_any = true;
    p.consecutive_failures = 0;
    p.made_recent.push_back(Clock::now());
    log_debug("pool " + p.spec.name + ": " + name + " ready: " + msg.value("phases", ""));
    sandbox_ready(p, sb);
}

void Daemon::refill() {
    if (stopping_) return;
    auto now = Clock::now();
    for (auto& [name, pp] : pools_) {
        Pool& p = *pp;
        while (starting_total_ < o_.max_starting && now >= p.backoff_until) {
            size_t want = p.sizing.target + p.waiting.size();
            if (p.idle.size() + p.starting >= want || p.total() >= p.spec.max_total) break;
            size_t before = p.failures;
            if (!start_sandbox(p) || p.failures != before) break;
        }
    }
}

void Daemon::setup_failed(Pool& p, const std::string& msg, bool oom) {
    ++p.failures;
    p.last_error = msg;
    // A template that cannot start would otherwise be retried in a tight loop.
    ++p.consecutive_failures;
    auto delay = std::chrono::milliseconds(std::min(5000u, 50u << std::min(p.consecutive_failures, 7u)));
    p.backoff_until = Clock::now() + delay;
    log_error("pool " + p.spec.name + ": sandbox setup failed: " + msg);
    // Out of memory while it was made: the budget is full for now, as when every
    // sandbox is in use. Waiting requests keep waiting (until their deadline) for the
    // memory running workloads give back; another sandbox is tried after the backoff.
    if (oom) return;
    // A request waiting for a sandbox that cannot be made gets the reason.
    if (!p.waiting.empty() && p.starting == 0 && p.idle.empty()) {
        Conn* c = p.waiting.front();
        p.waiting.pop_front();
        c->waiting = false;
        fail(c, "pool " + p.spec.name + ": sandbox setup failed: " + msg);
    }
}

void Daemon::on_sync(Sandbox* sb) {
    Pool& p = *sb->pool;
    if (sb->st == Sandbox::St::idle) {
        // An idle init only speaks if it died.
        lose_sandbox(sb, "while idle");
        return;
    }
    // Claimed: EOF means the workload exec'd; a message says why it did not.
    sb->error = sb->init->claim_outcome();
    sb->exec_done = true;
    unwatch(sb->init->fd(), sb->sync_id);
    if (sb->error.empty() && sb->owner) {
        double ms = ms_since(sb->owner->t_req);
        (sb->owner->cold ? p.cold : p.warm).observe(ms / 1000);
        if (p.latencies.size() < kLatencies) p.latencies.push_back(ms);
        else p.latencies[p.lat_next++ % kLatencies] = ms;
        reply(sb->owner, json{{"event", "started"}, {"pid", sb->init->pid()}, {"sandbox", sb->name}, {"claimMs", ms}});
    }
}

void Daemon::sandbox_ready(Pool& p, Sandbox* sb) {
    sb->st = Sandbox::St::idle;
    if (!p.waiting.empty()) {
        Conn* c = p.waiting.front();
        p.waiting.pop_front();
        c->waiting = false;
        if (claim(p, sb, c)) return;
        c->waiting = true;
        p.waiting.push_front(c);
        return;
    }
    p.idle.push_back(sb);
    if (stopping_) destroy_sandbox(sb);
}

void Daemon::on_exit(Sandbox* sb) {
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(sb->init->pidfd()), &si, WEXITED | WNOHANG) < 0 ||
        si.si_pid == 0)
        return;
    sb->init->release();
    // The exit can come before the socket's news: an error message (the workload
    // never started) is already queued there; EOF means it exec'd.
    if (!sb->exec_done) sb->error = sb->init->claim_outcome();
    if (Conn* c = sb->owner) {
        c->sb = nullptr;
        sb->owner = nullptr;
        if (!sb->error.empty()) {
            fail(c, sb->error);
        } else {
            int sig = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED ? si.si_status : 0;
            int code = sig ? 128 + sig : si.si_status;
            reply(c, json{{"event", "exit"}, {"exitCode", code}, {"signal", sig}});
        }
    }
    destroy_sandbox(sb);
}

void Daemon::destroy_sandbox(Sandbox* sb) {
    Pool& p = *sb->pool;
    if (sb->init) {
        unwatch(sb->init->fd(), sb->sync_id);
        unwatch(sb->init->pidfd(), sb->pid_id);
    }
    if (sb->st == Sandbox::St::running) --p.running;
    if (sb->st == Sandbox::St::idle) std::erase(p.idle, sb);
    if (sb->owner) sb->owner->sb = nullptr;
    sb->init.reset();  // kills and reaps it unless released
    // A lease only becomes a container's at "release" (end_lease), which never comes
    // here: a sandbox destroyed while leased is still the pool's to remove.
    tell_spawner(sb->cgroup, sb->spawner);
    p.sandboxes.erase(sb->name);
}

void Daemon::lose_sandbox(Sandbox* sb, const std::string& when) {
    Pool& p = *sb->pool;
    log_warn("pool " + p.spec.name + ": sandbox " + sb->name + " went away " + when);
    ++p.lost;
    destroy_sandbox(sb);
}

void Daemon::tell_spawner(const std::string& path, pid_t spawner, const std::string& op) {
    // rmdir on every hierarchy (and the mount tree's teardown) is the job of the
    // spawner that made the sandbox, off the daemon's loop; another one's when that
    // one is gone (or dead before the loop read its EOF).
    std::vector<Spawner*> order;
    for (auto& cand : spawners_)
        if (cand->pid == spawner) order.push_back(cand.get());
    for (auto& cand : spawners_)
        if (cand->pid != spawner) order.push_back(cand.get());
    std::string why = "no spawner";
    for (Spawner* sp : order) {
        try {
            detail::send_message(sp->sock.get(), json{{"op", op}, {"cgroup", path}});
            return;
        } catch (const Error& e) {
            why = e.what();
        }
    }
    // A spawner that replaces a dead one sweeps it (sweep_orphans), or teardown does.
    log_debug("pool: cgroup " + path + ": " + op + " waits for a spawner: " + why);
}

void Daemon::sweep_orphans(Spawner* sp) {
    for (auto& [n, p] : pools_) {
        std::vector<std::string> names;
        try {
            names = p->rp->sandboxes();
        } catch (const Error& e) {
            log_warn(std::string("pool: ") + e.what());
            continue;
        }
        for (const std::string& name : names) {
            std::string path = p->rp->open_sandbox(name)->path();
            if (p->sandboxes.count(name) || leased_.count(path)) continue;
            log_debug("pool " + n + ": removing " + path + ", which a dead spawner left");
            tell_spawner(path, sp->pid);
        }
    }
}

// ---- clients ---------------------------------------------------------------

void Daemon::on_accept() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
            (cred.uid != 0 && cred.uid != ::geteuid())) {
            try {
                detail::send_message(fd.get(), json{{"error", "pool: permission denied (uid " + std::to_string(cred.uid) + ")"}});
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
        sb->init->signal(SIGKILL);
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
            if (!msg.contains("signal") || !msg["signal"].is_number_integer()) throw Error("signal: expected integer");
            if (c->sb && c->sb->st == Sandbox::St::running)
                c->sb->init->signal(msg["signal"].get<int>());
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

void Daemon::on_run(Conn* c, json& msg, std::vector<UniqueFd>& fds) {
    if (c->sb || c->waiting) throw Error("one run request per connection");
    if (stopping_) throw Error("the pool daemon is stopping");
    std::string name = msg.value("pool", "");
    auto it = pools_.find(name);
    if (it == pools_.end()) throw Error("pool \"" + name + "\": no such pool");
    Pool& p = *it->second;
    auto args = string_list(msg, "args", true);
    if (args.empty() || args[0].empty()) throw Error("args: must name a command");
    for (const std::string& e : string_list(msg, "env", false))
        if (e.find('=') == std::string::npos || e[0] == '=') throw Error("env \"" + e + "\": not KEY=VALUE");
    if (msg.contains("cwd") && (!msg["cwd"].is_string() || msg["cwd"].get<std::string>().rfind('/', 0) != 0))
        throw Error("cwd: expected an absolute path");
    for (const char* k : {"memory", "pids", "waitMs"})
        if (msg.contains(k) && !msg[k].is_number_integer()) throw Error(std::string(k) + ": expected integer");
    if (msg.contains("binds")) {
        const json& bs = msg["binds"];
        if (!bs.is_array() || bs.size() > ns::kMaxClaimBinds)
            throw Error("binds: expected an array of at most " + std::to_string(ns::kMaxClaimBinds));
        for (const json& b : bs) {
            if (!b.is_object() || !b.contains("source") || !b["source"].is_string() || !b.contains("destination") ||
                !b["destination"].is_string())
                throw Error("binds: each needs a source and a destination");
            for (const char* k : {"source", "destination"})
                if (b[k].get<std::string>().rfind('/', 0) != 0)
                    throw Error(std::string("binds: ") + k + " \"" + b[k].get<std::string>() + "\": not an absolute path");
        }
    }
    if (fds.size() != 3) throw Error("run: expected 3 fds (stdin, stdout, stderr), got " + std::to_string(fds.size()));
    c->pool = &p;
    c->req = std::move(msg);
    c->stdio = std::move(fds);
    c->t_req = Clock::now();
    ++p.claims;
    ++p.arrivals;
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
    bool can_grow = p.total() < p.spec.max_total;
    if (!can_grow && p.starting == 0 && wait_ms <= 0)
        throw Error("pool " + p.spec.name + ": all " + std::to_string(p.spec.max_total) + " sandboxes are in use");
    c->waiting = true;
    // A cold sandbox is coming when the pool can grow: worth waiting for even with waitMs 0.
    c->deadline = c->t_req + std::chrono::milliseconds(can_grow ? std::max<int64_t>(wait_ms, 30000) : wait_ms);
    p.waiting.push_back(c);
}

// An idle init can die before the loop hears of it: the budget's OOM killer picks
// by resident set, and an idle init's counts the pages it shares with its spawner
// (tens of MiB under a sanitizer), so it can be chosen over the workload that
// filled the budget. Such a sandbox is dropped, never handed out.
Sandbox* Daemon::take_idle(Pool& p) {
    while (!p.idle.empty()) {
        Sandbox* sb = p.idle.front();
        p.idle.pop_front();
        pollfd pfd{sb->init->pidfd(), POLLIN, 0};
        if (::poll(&pfd, 1, 0) == 0) return sb;
        lose_sandbox(sb, "while idle");
    }
    return nullptr;
}

bool Daemon::claim(Pool& p, Sandbox* sb, Conn* c) {
    const json& r = c->req;
    sb->st = Sandbox::St::running;
    ++p.running;
    sb->owner = c;
    c->sb = sb;
    try {
        oci::Resources lim;
        if (r.contains("memory")) lim.memory = oci::Memory{.limit = r["memory"].get<int64_t>()};
        if (r.contains("pids")) lim.pids = oci::Pids{r["pids"].get<int64_t>()};
        if (lim.memory || lim.pids) cgroups::open(sb->cgroup, mode_)->apply(lim);
        // Bind sources are opened here, in the host's mount namespace, as detached
        // trees the sandbox attaches inside its root.
        std::vector<UniqueFd> trees;
        ns::Claim cl;
        for (const json& b : r.value("binds", json::array())) {
            std::string src = b["source"].get<std::string>();
            UniqueFd t(::open_tree(AT_FDCWD, src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
            if (!t) throw_errno("bind source " + src);
            if (b.value("readonly", false)) {
                mount_attr attr{};
                attr.attr_set = MOUNT_ATTR_RDONLY;
                if (::mount_setattr(t.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
                    throw_errno("bind source " + src + ": read-only");
            }
            cl.binds.push_back({t.get(), b["destination"].get<std::string>()});
            trees.push_back(std::move(t));
        }
        cl.args = string_list(r, "args", true);
        cl.env = string_list(r, "env", false);
        cl.cwd = r.value("cwd", "");
        for (int i = 0; i < 3; ++i) cl.stdio[i] = c->stdio[i].get();
        sb->pid_id = watch(sb->init->pidfd(), Kind::pidfd, sb);
        // Made at the spawners' background priority; the workload runs at the normal one.
        if (::setpriority(PRIO_PROCESS, static_cast<id_t>(sb->init->pid()), 0) < 0)
            log_debug("pool: sandbox " + sb->name + ": reset priority: " + Error::errno_text(errno));
        try {
            sb->init->claim(cl);
        } catch (const Error& e) {
            // Its init died since take_idle looked (or, from sandbox_ready, since it parked).
            if (e.code() != EPIPE && e.code() != ECONNRESET) throw;
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
    c->stdio.clear();  // the sandbox has its own copies now
    return true;
}

bool valid_container_id(const std::string& id) {
    if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
    for (char ch : id)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') return false;
    return true;
}

// OCI path: `tarn create` for a bundle annotated with the pool borrows an idle
// sandbox's namespaces (network, ipc, uts) and cgroup. The sandbox's cgroup becomes
// the container's (cgroup v2 cannot rename, so it keeps its name) and is recorded
// in the leases file at "release", so neither this daemon nor a restarted one reaps
// it; the parked init goes then too. Until then the sandbox is the daemon's: a caller
// that goes away between "lease" and "release" leaves nothing behind.
void Daemon::on_lease(Conn* c, const json& msg) {
    if (c->sb || c->waiting || c->leased) throw Error("one request per connection");
    if (stopping_) throw Error("the pool daemon is stopping");
    std::string name = msg.value("pool", "");
    auto it = pools_.find(name);
    if (it == pools_.end()) throw Error("pool \"" + name + "\": no such pool");
    Pool& p = *it->second;
    std::string id = msg.value("id", "");
    if (!valid_container_id(id)) throw Error("lease: container id \"" + id + "\": letters, digits, '-', '_' and '.' only");
    json want = detail::lease_key(p.tmpl.config);
    json got = msg.value("key", json::object());
    for (const auto& [k, v] : want.items())
        if (!got.contains(k) || got[k] != v) throw Error("pool " + name + ": config differs from the template in linux." + k);
    for (const auto& [k, v] : got.items())
        if (!want.contains(k)) throw Error("pool " + name + ": config differs from the template in linux." + k);
    ++p.arrivals;
    Sandbox* sb = take_idle(p);
    if (!sb) {
        ++p.misses;
        resize(p, 1);
        throw Error("pool " + name + ": no idle sandbox");
    }
    ++p.hits;
    unwatch(sb->init->fd(), sb->sync_id);
    sb->st = Sandbox::St::leased;
    sb->owner = c;
    c->leased = sb;
    c->pool = &p;
    detail::send_message(c->fd.get(), json{{"sandbox", sb->name}, {"cgroup", sb->cgroup}, {"pid", sb->init->pid()}},
                         {sb->init->pidfd()});
}

void Daemon::load_leases() {
    std::string text;
    try {
        text = read_file(leases_file());
    } catch (const Error&) {
        return;
    }
    // Containers deleted since are dropped from the file.
    std::string kept;
    for (std::string_view line : lines(text)) {
        std::string path(line);
        if (path.empty() || !cgroups::open(path, mode_)->exists()) continue;
        leased_.insert(path);
        kept += path + "\n";
    }
    write_file_atomic(leases_file(), kept, 0600);
}

void Daemon::record_lease(const std::string& cgroup) {
    leased_.insert(cgroup);
    std::string line = cgroup + "\n";
    UniqueFd fd(::open(leases_file().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd || ::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        throw_errno("write " + leases_file());
}

void Daemon::end_lease(Conn* c, bool released) {
    Sandbox* sb = c->leased;
    c->leased = nullptr;
    Pool& p = *sb->pool;
    if (!released) {
        sb->owner = nullptr;
        destroy_sandbox(sb);
        return;
    }
    record_lease(sb->cgroup);
    ++p.leases;
    sb->owner = nullptr;
    sb->init.reset();  // killed and reaped: the caller holds the namespaces now
    tell_spawner(sb->cgroup, sb->spawner, "forget");
    p.sandboxes.erase(sb->name);
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
        cgroups::Stats s = p.rp->cgroup().stats();
        budget["memoryCurrent"] = s.memory.usage.usage;
        if (s.memory.usage.limit) budget["memoryLimit"] = s.memory.usage.limit;
        budget["pidsCurrent"] = s.pids.current;
        if (s.pids.limit) budget["pidsLimit"] = s.pids.limit;
    } catch (const Error& e) {
        budget["error"] = e.what();
    }
    json j = {{"name", p.spec.name},
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

// ---- sizing ----------------------------------------------------------------

void Daemon::resize(Pool& p, unsigned misses) {
    auto now = Clock::now();
    p.sizing_in.dt_s = seconds(now - p.last_decision);
    p.last_decision = now;
    p.sizing_in.make_s = p.make_s;
    p.sizing_in.misses = misses;
    unsigned free = static_cast<unsigned>(p.idle.size()) + p.starting;
    p.sizing_in.busy = p.total() > free ? p.total() - free : 0;
    p.sizing_in.budget_room = p.budget_room;
    unsigned before = p.sizing.target;
    p.sizing = sizing::decide(p.limits, p.sizing.level, p.sizing_in);
    if (p.sizing.target > before) ++p.target_raised;
    if (p.sizing.target < before) ++p.target_lowered;
    p.target_max = std::max(p.target_max, p.sizing.target);
}

void Daemon::tick_sizing(Pool& p, Clock::time_point now) {
    p.sizing_in.rate = sizing::ewma_rate(p.sizing_in.rate, p.arrivals, seconds(now - p.last_rate),
                                         p.spec.rate_window_ms / 1000.0);
    p.arrivals = 0;
    p.last_rate = now;
    if (p.limits.mode == sizing::Mode::adaptive && now - p.last_budget >= kBudgetEvery) {
        p.last_budget = now;
        std::optional<uint64_t> mem, mem_max, pids, pids_max;
        try {
            cgroups::Stats st = p.rp->cgroup().stats();
            mem = st.memory.usage.usage;
            // cgroup v1 reports "no limit" as a number near 2^63.
            if (st.memory.usage.limit && st.memory.usage.limit < (1ULL << 60)) mem_max = st.memory.usage.limit;
            pids = st.pids.current;
            if (st.pids.limit) pids_max = st.pids.limit;
        } catch (const Error& e) {
            log_debug("pool " + p.spec.name + ": budget: " + e.what());
        }
        p.budget_room = sizing::budget_room(mem, mem_max, pids, pids_max, p.total(),
                                            static_cast<unsigned>(p.idle.size()), p.starting);
    }
    resize(p, 0);
    if (p.limits.mode != sizing::Mode::adaptive) return;
    // The target came down: the oldest idle sandboxes beyond it go, a few per tick.
    for (unsigned i = 0; i < kTrimPerTick && p.idle.size() > p.sizing.target; ++i) destroy_sandbox(p.idle.front());
}

// ---- metrics ---------------------------------------------------------------

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
        ssize_t n = ::send(s->fd.get(), s->out.data() + s->sent, s->out.size() - s->sent, MSG_DONTWAIT | MSG_NOSIGNAL);
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
    each("tarn_pool_claims_total", "Run requests received.", "counter", [](const Pool& p) { return p.claims; });
    each("tarn_pool_hits_total", "Run requests and leases served by an idle sandbox.", "counter",
         [](const Pool& p) { return p.hits; });
    each("tarn_pool_misses_total", "Run requests that waited for a sandbox to be made, and leases refused for lack of one.",
         "counter", [](const Pool& p) { return p.misses; });
    each("tarn_pool_sandboxes_made_total", "Sandboxes made ready.", "counter", [](const Pool& p) { return p.made; });
    each("tarn_pool_sandboxes_lost_total", "Ready sandboxes whose init died before any use.", "counter",
         [](const Pool& p) { return p.lost; });
    each("tarn_pool_setup_failures_total", "Sandboxes whose setup failed.", "counter",
         [](const Pool& p) { return p.failures; });
    each("tarn_pool_leases_total", "Sandboxes lent to `tarn create` (the OCI path).", "counter",
         [](const Pool& p) { return p.leases; });
    each("tarn_pool_sandboxes", "Sandboxes in any state (R).", "gauge", [](const Pool& p) { return p.total(); });
    each("tarn_pool_allocated", "Sandboxes running a claim (A).", "gauge", [](const Pool& p) { return p.running; });
    each("tarn_pool_idle", "Sandboxes ready for a claim.", "gauge", [](const Pool& p) { return p.idle.size(); });
    each("tarn_pool_starting", "Sandboxes being made.", "gauge", [](const Pool& p) { return p.starting; });
    each("tarn_pool_waiting_claims", "Run requests waiting for a sandbox.", "gauge",
         [](const Pool& p) { return p.waiting.size(); });
    each("tarn_pool_utilization_ratio", "Allocated over all sandboxes (U = A/R); 0 when there are none.", "gauge",
         [](const Pool& p) { return p.total() ? static_cast<double>(p.running) / p.total() : 0.0; });
    each("tarn_pool_idle_target", "Idle sandboxes the pool keeps ready now (the sizing decision).", "gauge",
         [](const Pool& p) { return p.sizing.target; });
    each("tarn_pool_min_idle", "The idle target's floor (the whole target with fixed sizing).", "gauge",
         [](const Pool& p) { return p.limits.min_idle; });
    each("tarn_pool_max_idle", "The idle target's ceiling.", "gauge", [](const Pool& p) { return p.limits.max_idle; });
    each("tarn_pool_max_total", "Most sandboxes in any state.", "gauge", [](const Pool& p) { return p.limits.max_total; });
    each("tarn_pool_demand_per_second", "Run requests and leases per second, exponentially averaged.", "gauge",
         [](const Pool& p) { return p.sizing_in.rate; });
    each("tarn_pool_make_duration_seconds", "Time to make a sandbox, exponentially averaged.", "gauge",
         [](const Pool& p) { return p.make_s; });
    auto now = Clock::now();
    double window = std::min(seconds(kRateWindow), std::max(1e-3, seconds(now - started_at_)));
    each("tarn_pool_refill_per_second", "Sandboxes made per second over the last 10 s.", "gauge", [&](const Pool& p) {
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
    std::map<std::string, cgroups::Stats> stats;
    for (const auto& [n, p] : pools_) {
        try {
            stats[n] = p->rp->cgroup().stats();
        } catch (const Error& e) {
            log_debug("pool " + n + ": metrics: " + e.what());
        }
    }
    struct Budget {
        const char* name;
        const char* help;
        std::optional<uint64_t> (*get)(const cgroups::Stats&);
    };
    const Budget budgets[] = {
        {"tarn_pool_budget_memory_bytes", "Memory the pool's cgroup uses.",
         [](const cgroups::Stats& s) -> std::optional<uint64_t> { return s.memory.usage.usage; }},
        {"tarn_pool_budget_memory_limit_bytes", "The pool's memory budget.",
         [](const cgroups::Stats& s) -> std::optional<uint64_t> {
             if (!s.memory.usage.limit || s.memory.usage.limit >= (1ULL << 60)) return std::nullopt;
             return s.memory.usage.limit;
         }},
        {"tarn_pool_budget_pids", "Processes in the pool's cgroup.",
         [](const cgroups::Stats& s) -> std::optional<uint64_t> { return s.pids.current; }},
        {"tarn_pool_budget_pids_limit", "The pool's pids budget.",
         [](const cgroups::Stats& s) -> std::optional<uint64_t> {
             if (!s.pids.limit) return std::nullopt;
             return s.pids.limit;
         }},
    };
    for (const Budget& b : budgets) {
        w.family(b.name, b.help, "gauge");
        for (const auto& [n, st] : stats)
            if (auto v = b.get(st)) w.sample(b.name, L{{"pool", n}}, static_cast<double>(*v));
    }
    w.family("tarn_pool_uptime_seconds", "Seconds since the daemon started.", "gauge");
    w.sample("tarn_pool_uptime_seconds", {}, seconds(now - started_at_));
    return w.text();
}

// ---- time and stopping -----------------------------------------------------

void Daemon::on_timer() {
    uint64_t ticks;
    (void)!::read(timer_.get(), &ticks, sizeof ticks);
    auto now = Clock::now();
    for (auto& [n, p] : pools_) {
        while (!p->made_recent.empty() && now - p->made_recent.front() > kRateWindow) p->made_recent.pop_front();
        if (!stopping_) tick_sizing(*p, now);
        std::vector<Conn*> late;
        for (Conn* c : p->waiting)
            if (now >= c->deadline) late.push_back(c);
        for (Conn* c : late) {
            std::erase(p->waiting, c);
            c->waiting = false;
            fail(c, "pool " + p->spec.name + ": no sandbox free within " +
                        std::to_string(c->req.value("waitMs", int64_t{0})) + " ms (all " +
                        std::to_string(p->spec.max_total) + " in use)");
        }
    }
    std::vector<Scrape*> slow;
    for (auto& [s, owned] : scrapes_)
        if (now >= s->deadline) slow.push_back(s);
    for (Scrape* s : slow) close_scrape(s);
}

void Daemon::begin_stop(bool now) {
    stopping_ = true;
    stop_now_ = stop_now_ || now;
    for (auto& [n, p] : pools_) {
        for (Conn* c : std::deque<Conn*>(p->waiting)) {
            p->waiting.clear();
            c->waiting = false;
            fail(c, "the pool daemon is stopping");
        }
        for (Sandbox* sb : std::deque<Sandbox*>(p->idle)) destroy_sandbox(sb);
        if (stop_now_)
            for (auto& [sn, sb] : p->sandboxes)
                if (sb->st == Sandbox::St::running) sb->init->signal(SIGKILL);
    }
}

bool Daemon::drained() const {
    for (const auto& [n, p] : pools_)
        if (!p->sandboxes.empty()) return false;
    return true;
}

void Daemon::setup() {
    mode_ = cgroups::detect();
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    sigfd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd_) throw_errno("signalfd");

    // The socket first: a second daemon on the same socket must stop before it
    // touches the first one's sandboxes. Clients queue until the loop runs.
    listen();
    if (!o_.metrics.empty()) {
        metrics_addr_ = metrics::parse_address(o_.metrics);
        metrics_fd_ = metrics::listen(metrics_addr_);
        metrics_bound_ = metrics::bound_address(metrics_fd_.get(), metrics_addr_);
    }
    load_leases();
    reap_leftovers();
    for (const PoolSpec& s : o_.pools) load_pool(s);
    start_spawners();
    ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep_) throw_errno("epoll_create1");
    // One sandbox per pool, made before the socket is served: a template that cannot
    // start fails here, with its reason, instead of in every claim.
    for (auto& [n, p] : pools_) {
        if (!start_sandbox(*p)) throw Error("pool " + n + ": no spawner took its first sandbox");
        uint64_t failures = p->failures;
        while (p->starting > 0) {
            for (auto& sp : spawners_)
                if (sp->jobs) on_spawner(sp.get());
        }
        if (p->failures != failures) throw Error("pool " + n + ": template " + p->spec.bundle + ": " + p->last_error);
    }
    for (auto& sp : spawners_) sp->id = watch(sp->sock.get(), Kind::spawner, sp.get());
    serving_ = true;
    timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    itimerspec its{{0, 100'000'000}, {0, 100'000'000}};
    ::timerfd_settime(timer_.get(), 0, &its, nullptr);
    watch(listener_.get(), Kind::listener, nullptr);
    watch(timer_.get(), Kind::timer, nullptr);
    watch(sigfd_.get(), Kind::signal, nullptr);
    // Scrapes are served by this loop, never waited for: a slow scraper only holds
    // its own buffer, and is cut off after kScrapeTimeout.
    if (metrics_fd_) {
        watch(metrics_fd_.get(), Kind::metrics_listener, nullptr);
        log_debug("pool: metrics on " + metrics_bound_);
    }
    log_debug("pool: serving " + std::to_string(pools_.size()) + " pools on " + o_.socket);

}

void Daemon::loop() {
    epoll_event evs[64];
    while (!(stopping_ && drained())) {
        refill();
        int n = ::epoll_wait(ep_.get(), evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            auto it = watches_.find(evs[i].data.u64);
            if (it == watches_.end()) continue;  // its object went earlier in this batch
            Watch w = it->second;
            try {
                switch (w.kind) {
                    case Kind::listener: on_accept(); break;
                    case Kind::conn: on_conn(static_cast<Conn*>(w.obj)); break;
                    case Kind::sync: on_sync(static_cast<Sandbox*>(w.obj)); break;
                    case Kind::pidfd: on_exit(static_cast<Sandbox*>(w.obj)); break;
                    case Kind::timer: on_timer(); break;
                    case Kind::spawner: on_spawner(static_cast<Spawner*>(w.obj)); break;
                    case Kind::metrics_listener: on_metrics_accept(); break;
                    case Kind::metrics_conn: on_scrape(static_cast<Scrape*>(w.obj)); break;
                    case Kind::signal: {
                        signalfd_siginfo si;
                        while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
                        }
                        begin_stop(true);
                        break;
                    }
                }
            } catch (const Error& e) {
                log_error(std::string("pool: ") + e.what());
            }
        }
    }
}

void Daemon::teardown() {
    for (auto& [n, p] : pools_) {
        std::vector<Sandbox*> made;
        for (auto& [sn, sb] : p->sandboxes)
            if (sb->init) made.push_back(sb.get());
        for (Sandbox* sb : made) {
            sb->init->signal(SIGKILL);
            destroy_sandbox(sb);
        }
    }
    // The spawners finish the removals queued to them, then see EOF and exit.
    for (auto& sp : spawners_) {
        sp->sock.reset();
        while (::waitpid(sp->pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
    // Pool cgroups go unless a leased container still lives below them.
    bool kept = false;
    for (auto& [n, p] : pools_) {
        for (const std::string& name : p->rp->sandboxes()) {
            auto cg = p->rp->open_sandbox(name);
            if (leased_.count(cg->path())) {
                kept = true;
                continue;
            }
            try {
                cg->destroy();
            } catch (const Error& e) {
                log_warn(e.what());
            }
        }
        try {
            if (p->rp->sandboxes().empty()) p->rp->cgroup().destroy();
        } catch (const Error& e) {
            log_warn(e.what());
        }
    }
    try {
        if (!kept) cgroups::open(o_.cgroup_parent, mode_)->destroy();
    } catch (const Error& e) {
        log_warn(e.what());
    }
    if (socket_bound_) ::unlink(o_.socket.c_str());
    scrapes_.clear();
    if (metrics_fd_ && metrics_addr_.unix_socket) ::unlink(metrics_addr_.path.c_str());
}

void Daemon::run() {
    try {
        setup();
        loop();
    } catch (...) {
        begin_stop(true);
        teardown();
        throw;
    }
    teardown();
}

}  // namespace

void serve(const DaemonOptions& o) { Daemon(o).run(); }

}  // namespace tarn::pool
