#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <map>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/detail.hpp"

namespace tarn::pool::detail {
namespace {

constexpr int kSpawnerNice = 10;

// Whether this process may raise a priority, which SCHED_IDLE → SCHED_OTHER needs:
// CAP_SYS_NICE in the initial user namespace (or a generous RLIMIT_NICE). Tried
// rather than read from the capability sets, which a user namespace's root also has.
bool can_raise_priority() {
    errno = 0;
    int nice = ::getpriority(PRIO_PROCESS, 0);
    if (nice == -1 && errno != 0) return false;
    if (nice <= -20) return true;
    if (::setpriority(PRIO_PROCESS, 0, nice - 1) < 0) return false;
    (void)::setpriority(PRIO_PROCESS, 0, nice);
    return true;
}

using nlohmann::json;

// Namespaces of the sandboxes this spawner made, held open until their sandbox is
// destroyed, which is after its exit report. The last process leaving a mount
// namespace unmounts its whole tree before its parent learns it exited; the last
// leaving a network namespace queues its cleanup to a kworker, whose wake-up can take
// the CPU from the exiting process. Without this hold both would sit between a
// workload's exit and its exit report. Keyed by cgroup path.
struct HeldNamespaces {
    UniqueFd mnt, net;
};
std::map<std::string, HeldNamespaces> held_ns;

const oci::Resources& resources(const Template& t) {
    static const oci::Resources none;
    return t.config.linux && t.config.linux->resources ? *t.config.linux->resources : none;
}

std::string base_name(const std::string& path) {
    return path.substr(path.rfind('/') + 1);
}

// The pools' cgroups, opened once: a sandbox's manager is then built from its pool's
// (ResourcePool::open_sandbox), without probing every hierarchy again.
class Pools {
public:
    cgroups::ResourcePool& of(const Template& t) {
        auto it = pools_.find(t.pool);
        if (it == pools_.end())
            it = pools_.emplace(t.pool, cgroups::ResourcePool::open(t.cgroup, t.mode)).first;
        return it->second;
    }

private:
    std::map<std::string, cgroups::ResourcePool> pools_;
};

// Makes sandbox `name` in a new cgroup, or in `reuse`, a used one the daemon had
// recycled (already vacant, with the template's limits).
void make(int sock, const Template& t, Pools& pools, const std::string& name, const std::string& reuse) {
    std::unique_ptr<cgroups::Manager> cg;
    pid_t pid = -1;
    try {
        cgroups::ResourcePool& rp = pools.of(t);
        cg = reuse.empty() ? rp.create_sandbox(name, resources(t)) : rp.open_sandbox(base_name(reuse));
        // The init enters its cgroup without an attach (Manager::open_entry): on a v1
        // host the attach would wait for an RCU grace period holding the kernel's
        // cgroup lock, which made that wait most of a sandbox's making.
        cgroups::Manager::Entry entry = cg->open_entry();
        ns::InitOptions io;
        io.rootfs = t.rootfs;
        io.await_claim = true;
        io.rootfs_overlay = t.overlay;
        io.clone_parent = true;
        io.cgroup_fd = entry.clone_into.get();
        for (const auto& [fd, path] : entry.self_join) io.cgroup_self_join.emplace_back(fd.get(), path);
        io.cgroup_path = cg->path();
        io.session_keyring = "_ses." + name;
        cgroups::Manager* m = cg.get();
        ns::ParkedInit init(t.config, io, [m](pid_t p) { m->add_process(p); });
        pid = init.pid();
        while (!init.advance()) {
            pollfd pf{init.fd(), POLLIN, 0};
            while (::poll(&pf, 1, -1) < 0 && errno == EINTR) {
            }
        }
        std::string phases = init.timings().report();
        std::string ns_dir = "/proc/" + std::to_string(pid) + "/ns/";
        held_ns[cg->path()] = {UniqueFd(::open((ns_dir + "mnt").c_str(), O_RDONLY | O_CLOEXEC)),
                               UniqueFd(::open((ns_dir + "net").c_str(), O_RDONLY | O_CLOEXEC))};
        auto [s, p] = init.take_fds();
        send_message(sock, json{{"made", name}, {"pid", pid}, {"phases", phases}}, {s.get(), p.get()});
    } catch (const std::exception& e) {
        // The init (if any) was killed; the daemon, its parent, reaps it. An OOM kill
        // is counted in the sandbox's own cgroup (on v1 not in the budget's above it).
        std::string error = e.what();
        bool oom = false;
        if (cg) {
            try {
                oom = cg->oom_kill_count() > 0;
            } catch (const Error&) {
            }
            if (oom) error += " (killed for memory: the pool's budget is full)";
            try {
                cg->destroy();
            } catch (const Error&) {
            }
        }
        send_message(sock, json{{"failed", name}, {"pid", pid}, {"error", error}, {"oom", oom}});
    }
}

// One attempt: the pid namespace died with its init, anything still inside is a
// leftover and is killed; a cgroup whose last task is still exiting refuses rmdir
// (EBUSY) for a moment. Returns false to be tried again later.
bool destroy(const std::string& path, cgroups::Mode mode, bool last_try,
             std::unique_ptr<cgroups::Manager> cg = nullptr) {
    if (!cg) cg = cgroups::open(path, mode);
    try {
        if (!cg->pids().empty()) cg->kill_all(SIGKILL);
        cg->destroy();
        return true;
    } catch (const Error& e) {
        if (last_try) std::cerr << "tarn: pool: " << e.what() << "\n";
        return false;
    }
}

}  // namespace

bool set_make_priority(pid_t pid, bool urgent) {
    static const bool idle_ok = can_raise_priority();
    sched_param none{};
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), kSpawnerNice) < 0) return false;
    if (!idle_ok) return true;
    return ::sched_setscheduler(pid, urgent ? SCHED_OTHER : SCHED_IDLE, &none) == 0;
}

bool set_workload_priority(pid_t pid) {
    sched_param none{};
    if (::sched_getscheduler(pid) == SCHED_IDLE && ::sched_setscheduler(pid, SCHED_OTHER, &none) < 0) return false;
    return ::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), 0) == 0;
}

void spawner_main(int sock, const std::vector<const Template*>& templates) {
    try {
        ::prctl(PR_SET_NAME, "tarn-spawner", 0, 0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        std::map<std::string, const Template*> by_name;
        for (const Template* t : templates) by_name[t->pool] = t;
        Pools pools;
        cgroups::Mode mode = templates.empty() ? cgroups::Mode::unified : templates[0]->mode;
        // Cgroups whose rmdir was refused, with the attempts left: retried between
        // requests, never by sleeping in the middle of one (making sandboxes waits
        // for nothing else).
        std::map<std::string, int> retry;
        auto retry_all = [&] {
            for (auto it = retry.begin(); it != retry.end();)
                it = destroy(it->first, mode, it->second == 1) || --it->second == 0 ? retry.erase(it) : std::next(it);
        };
        auto last_retry = std::chrono::steady_clock::now();
        json msg;
        for (;;) {
            if (!retry.empty()) {
                auto now = std::chrono::steady_clock::now();
                if (now - last_retry >= std::chrono::milliseconds(10)) {
                    retry_all();
                    last_retry = now;
                }
                pollfd pf{sock, POLLIN, 0};
                if (!retry.empty() && ::poll(&pf, 1, 10) == 0) continue;
            }
            if (!recv_message(sock, msg)) break;
            std::string op = msg.value("op", "");
            auto tmpl = by_name.find(msg.value("pool", ""));
            const Template* t = tmpl == by_name.end() ? nullptr : tmpl->second;
            if (op == "make") {
                if (t) make(sock, *t, pools, msg.value("sandbox", ""), msg.value("cgroup", ""));
            } else if (op == "destroy" || op == "recycle") {
                std::string path = msg.value("cgroup", "");
                held_ns.erase(path);  // the mount tree goes here, off the daemon's loop
                std::unique_ptr<cgroups::Manager> cg;
                bool reused = false;
                try {
                    if (t) {
                        cgroups::ResourcePool& rp = pools.of(*t);
                        cg = rp.open_sandbox(base_name(path));
                        if (op == "recycle") reused = rp.recycle_sandbox(base_name(path), resources(*t));
                    }
                } catch (const Error& e) {
                    // The cgroup is removed instead; said once, as it would likely
                    // recur for every sandbox.
                    static bool said = false;
                    if (!said) std::cerr << "tarn: pool: recycling a sandbox cgroup: " << e.what() << "\n";
                    said = true;
                }
                if (reused) cg.reset();
                if (!reused && !destroy(path, mode, false, std::move(cg))) retry[path] = 200;
                if (op == "recycle") {
                    // Not answered while the daemon stops (its end is closed): it removes
                    // what is left of its pools itself.
                    try {
                        send_message(
                            sock,
                            json{{"recycled", path}, {"pool", msg.value("pool", "")}, {"reused", reused}});
                    } catch (const Error&) {
                    }
                }
            } else if (op == "forget") {
                held_ns.erase(msg.value("cgroup", ""));
            }
        }
        // The daemon is done with us (stop): what is left is waited for here.
        while (!retry.empty()) {
            ::usleep(10000);
            retry_all();
        }
    } catch (const std::exception& e) {
        std::cerr << "tarn: pool spawner: " << e.what() << "\n";
        ::_exit(1);
    }
    ::_exit(0);
}

}  // namespace tarn::pool::detail
