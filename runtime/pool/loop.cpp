// The daemon's event loop: set-up (socket, leftovers, pools, the first sandbox of
// each), one epoll loop over every fd the daemon watches, the timer's tick, stopping
// and teardown. Sandbox setup never blocks the loop: it happens in the spawners, so
// claims are served while other sandboxes are being made.
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using runtime::log_debug;
using runtime::log_error;
using runtime::log_warn;

// ---- set-up ----------------------------------------------------------------

void Daemon::lock_cgroup_parent() {
    auto top = cgroups::open(o_.cgroup_parent, mode_);
    try {
        top->create();
    } catch (const Error& e) {
        // Nothing to lock (no cgroup delegated to this user): the pools say why soon.
        log_debug("pool: cgroup parent " + o_.cgroup_parent + ": " + e.what());
        return;
    }
    for (const std::string& dir : top->directories()) {
        UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) continue;
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) < 0) {
            if (errno == EWOULDBLOCK)
                throw Error("cgroup parent " + o_.cgroup_parent +
                            ": another pool daemon serves it (it holds the lock on " + dir +
                            "); give this one its own \"cgroupParent\" in its configuration file");
            throw_errno("lock " + dir);
        }
        cgroup_lock_ = std::move(fd);
        return;
    }
}

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
    if (killed)
        log_warn("pool: killed " + std::to_string(killed) + " processes a previous daemon left in " +
                 o_.cgroup_parent);
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
    t.no_cgroup_reuse = spec.reuse_cgroups ? cgroup_reuse_refusal(t.config, read_file("/proc/self/mountinfo"))
                                           : "reuseCgroups is off";
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

uint64_t Daemon::watch(int fd, Kind kind, void* obj, uint32_t events, SandboxKind* maker) {
    uint64_t id = next_watch_++;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) throw_errno("epoll_ctl");
    watches_[id] = Watch{kind, obj, maker};
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

// ---- time and stopping -----------------------------------------------------

void Daemon::on_timer() {
    uint64_t ticks;
    (void)!::read(timer_.get(), &ticks, sizeof ticks);
    auto now = Clock::now();
    for (auto& [n, p] : pools_) {
        while (!p->made_recent.empty() && now - p->made_recent.front() > kRateWindow)
            p->made_recent.pop_front();
        if (!stopping_) tick_sizing(*p, now);
        std::vector<Conn*> late;
        for (Conn* c : p->waiting)
            if (now >= c->deadline) late.push_back(c);
        for (Conn* c : late) {
            std::erase(p->waiting, c);
            c->waiting = false;
            std::string why = cannot_grow(*p);
            if (why.empty())
                why = p->consecutive_failures > 0 ? "making one failed: " + p->last_error : "none was made in time";
            fail(c, "pool " + p->spec.name + ": no sandbox free within " +
                        std::to_string(c->req.value("waitMs", int64_t{0})) + " ms (" + why + ")");
        }
    }
    if (!stopping_)
        for (auto& k : kinds_) k->tick();
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
                if (sb->st == Sandbox::St::running) sb->signal(SIGKILL);
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
    lock_cgroup_parent();
    load_leases();
    reap_leftovers();
    for (const PoolSpec& s : o_.pools) load_pool(s);
    // Each pool's kind, from its spec and template: VMs where VM isolation is asked
    // for, as `tarn create` would decide for the bundle; processes otherwise.
    SandboxKind* processes = nullptr;
    SandboxKind* vms = nullptr;
    for (auto& [n, p] : pools_) {
        bool vm = vm_isolated(p->spec, o_.global, p->tmpl.config);
        SandboxKind*& k = vm ? vms : processes;
        if (vm) p->tmpl.no_cgroup_reuse = "a VM's cgroup is removed with it";
        if (!k) {
            kinds_.push_back(&k == &vms ? vm_sandboxes(*this, o_.socket + ".vm", o_.global)
                                        : process_sandboxes(*this, o_.max_starting));
            k = kinds_.back().get();
        }
        p->kind = k;
    }
    for (auto& [n, p] : pools_)
        if (!p->tmpl.no_cgroup_reuse.empty())
            log_debug("pool " + n + ": every used sandbox's cgroup is removed: " + p->tmpl.no_cgroup_reuse);
    for (auto& k : kinds_) k->start();
    ep_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep_) throw_errno("epoll_create1");
    // One sandbox per pool, made before the socket is served: a template that cannot
    // start fails here, with its reason, instead of in every claim.
    for (auto& [n, p] : pools_) {
        if (!start_sandbox(*p)) throw Error("pool " + n + ": no spawner took its first sandbox");
        uint64_t failures = p->failures;
        while (p->starting > 0) p->kind->settle();
        if (p->failures != failures)
            throw Error("pool " + n + ": template " + p->spec.bundle + ": " + p->last_error);
    }
    for (auto& k : kinds_) k->serve();
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
                    case Kind::listener:
                        on_accept();
                        break;
                    case Kind::conn:
                        on_conn(static_cast<Conn*>(w.obj));
                        break;
                    case Kind::control:
                        on_control(static_cast<Sandbox*>(w.obj));
                        break;
                    case Kind::exit:
                        on_exit(static_cast<Sandbox*>(w.obj));
                        break;
                    case Kind::timer:
                        on_timer();
                        break;
                    case Kind::maker:
                        w.maker->on_event(w.obj);
                        break;
                    case Kind::metrics_listener:
                        on_metrics_accept();
                        break;
                    case Kind::metrics_conn:
                        on_scrape(static_cast<Scrape*>(w.obj));
                        break;
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
            if (sb->st != Sandbox::St::starting) made.push_back(sb.get());
        for (Sandbox* sb : made) {
            sb->signal(SIGKILL);
            destroy_sandbox(sb);
        }
    }
    for (auto& k : kinds_) k->stop();
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

}  // namespace tarn::pool::detail

namespace tarn::pool {

void serve(const DaemonOptions& o) {
    detail::Daemon(o).run();
}

}  // namespace tarn::pool
