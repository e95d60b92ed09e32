// Sandbox kinds: what the daemon needs of a sandbox, whatever isolates it. Internal
// to runtime/pool/.
//
// The daemon (loop, clients, leases, sizing) keeps the same bookkeeping for every
// sandbox: its pool, name, state and the connection it serves. How a sandbox is
// made, claimed, watched and removed belongs to its kind. process_sandbox.cpp is
// the first kind (a container init parked in its namespaces, made by spawner
// processes); another kind is one more file implementing these two classes, chosen
// per pool in Daemon::setup.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/pool/pool.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

using Clock = std::chrono::steady_clock;

struct Pool;
struct Conn;
class Daemon;

// The per-request part of a run request, checked by the daemon (clients.cpp).
struct Request {
    std::vector<std::string> args;
    std::vector<std::string> env;         // KEY=VALUE, over the template's process.env
    std::string cwd;                      // empty: the template's
    std::optional<int64_t> memory, pids;  // per-sandbox limits
    struct Bind {
        std::string source, destination;  // absolute; source on the host
        bool readonly = false;
    };
    std::vector<Bind> binds;
    std::array<int, 3> stdio{-1, -1, -1};  // borrowed from the connection
};

// How a workload ended, as a shell reports it: 128+N for signal N.
struct ExitStatus {
    int code = 0;
    int signal = 0;
};

// One sandbox. A kind's methods never block the loop, except claim(), which may
// take as long as handing over a request does.
class Sandbox {
public:
    // leased: handed to `tarn create` for an OCI bundle (its namespaces and cgroup).
    enum class St { starting, idle, running, leased };

    virtual ~Sandbox() = default;

    // Readable when the sandbox has news: idle, that it died; claimed, whether its
    // workload started (claim_outcome). -1 until it is made.
    virtual int control_fd() const = 0;
    // Readable once the workload (or the sandbox) has exited: exit_status().
    virtual int exit_fd() const = 0;
    // The workload as the host sees it (for a VM, the process running the guest),
    // reported to the client when it starts.
    virtual pid_t pid() const = 0;
    // Where everything the sandbox costs is charged: its cgroup, below the pool's
    // budget cgroup. Per-request limits go there too.
    virtual const std::string& cgroup() const = 0;
    // Whether a ready sandbox is still there to be claimed (it can die unnoticed).
    virtual bool alive() const = 0;
    // Applies the request's limits and hands it over; the workload starts. False when
    // the sandbox turned out dead before it got the request; throws on other errors.
    virtual bool claim(const Request& r) = 0;
    // After claim(), when control_fd() is readable: "" once the workload runs,
    // otherwise why it could not start.
    virtual std::string claim_outcome() = 0;
    // The workload's status once it has exited (and is reaped), else nothing.
    virtual std::optional<ExitStatus> exit_status() = 0;
    virtual void signal(int sig) = 0;
    // Kills what is left and has the rest (cgroup, mounts) removed, off the loop.
    virtual void destroy() = 0;
    // The OCI path: what `tarn create` borrows, as fields of the lease reply and fds
    // sent with it. Only for kinds that are lendable().
    virtual void lend(nlohmann::json& reply, std::vector<int>& fds) = 0;
    // The borrower holds what it needs: the sandbox's cgroup is its container's now,
    // and nothing else of the sandbox is kept.
    virtual void hand_over() = 0;

    // The daemon's bookkeeping, the same for every kind.
    Pool* pool = nullptr;
    std::string name;
    St st = St::starting;
    uint64_t control_id = 0, exit_id = 0;  // watches on the fds above; 0: not watched
    Conn* owner = nullptr;
    std::string error;  // why a claimed workload could not start
    // Set by claim_outcome(): the sandbox died under the claim before the workload
    // started (not the request's fault), so another sandbox can serve it.
    bool lost_under_claim = false;
    bool exec_done = false;
    Clock::time_point t_make;  // asked of its kind
};

// Makes the sandboxes of the pools that use it. The kind tells the daemon how each
// make ended through Daemon::made and Daemon::make_failed, from on_event (or from
// settle, during set-up).
class SandboxKind {
public:
    virtual ~SandboxKind() = default;
    // "process" or "vm": shown per pool by `pool status` and the metrics.
    virtual const char* name() const = 0;
    // Starts whatever makes this kind's sandboxes; pools are loaded by then.
    virtual void start() = 0;
    // Starts making sandbox `name` of `p`, or null when nothing can take the job now.
    virtual std::unique_ptr<Sandbox> make(Pool& p, const std::string& name) = 0;
    // Set-up only: blocks until some make in flight has ended.
    virtual void settle() = 0;
    // The loop runs: the kind's own fds are watched (Daemon::watch_for) from now on.
    virtual void serve() = 0;
    // One of the kind's fds is ready; `obj` is what it passed to Daemon::watch_for.
    virtual void on_event(void* obj) = 0;
    // Whether `tarn create` can borrow this kind's sandboxes (Sandbox::lend).
    virtual bool lendable() const = 0;
    // What a borrowing bundle's config must match (the borrower sends its own): for a
    // process sandbox, the parts of the template's config made ahead (namespaces, id
    // maps, sysctl, resources); for a VM, the VM itself (vm::lease_key).
    virtual nlohmann::json lease_key(const Pool& p) const = 0;
    // The daemon's timer ticked (every 100 ms), after each pool's sizing decision.
    virtual void tick() {}
    // Whether some request waits for a sandbox of this kind to be made: its makes
    // then run at a priority that a CPU busy with workloads cannot starve.
    virtual void urgency(bool /*urgent*/) {}
    // Teardown: the removals asked for are finished; nothing of the kind is left running.
    virtual void stop() = 0;
};

// The process sandbox (process_sandbox.cpp), made by `spawners` spawner processes.
std::unique_ptr<SandboxKind> process_sandboxes(Daemon& d, unsigned spawners);
// The VM sandbox (vm_sandbox.cpp): a microVM booted ahead with the template's
// container parked in the guest. Per-VM files live under `dir`; `global` holds the
// daemon's --vm-* flags.
std::unique_ptr<SandboxKind> vm_sandboxes(Daemon& d, const std::string& dir, const runtime::GlobalOptions& global);
// Whether a pool's sandboxes are VMs: its spec says "vm", or the daemon's --isolation
// or the template's tarn.isolation annotation does, as for `tarn create`.
bool vm_isolated(const PoolSpec& spec, const runtime::GlobalOptions& global, const oci::Config& tmpl);

}  // namespace tarn::pool::detail
