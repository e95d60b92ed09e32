// The warm pool: a daemon that keeps sandboxes set up ahead of their requests, the
// protocol it speaks, and a client.
//
// A sandbox is a container init parked after every request-independent phase
// (namespaces, its own cgroup under the pool's budget cgroup, the template's rootfs
// behind a private overlay, mounts, devices, pivot, user and capabilities, the
// seccomp filter built). A claim hands it args, env, cwd and stdio; it loads
// seccomp and execs. Sandboxes are used once and destroyed; the daemon refills.
//
// Protocol (docs/pool.md): a SOCK_SEQPACKET unix socket, one JSON object per
// message, stdio fds with SCM_RIGHTS on a run request.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cgroups/cgroups.hpp"
#include "oci/oci.hpp"
#include "runtime/pool/sizing.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool {

inline constexpr const char* kDefaultSocket = "/run/tarn/pool.sock";
// The largest message either side accepts; larger ones are refused, not truncated.
inline constexpr size_t kMaxMessage = 160 * 1024;

struct PoolSpec {
    std::string name;
    std::string bundle;  // the template: config.json and its rootfs
    unsigned min_idle = 2;
    unsigned max_total = 16;
    cgroups::PoolBudget budget;  // the aggregate limits of the pool's parent cgroup
    // How many sandboxes are kept idle (docs/pool.md, Sizing): min_idle when fixed;
    // adaptive follows demand between min_idle and max_idle.
    sizing::Mode sizing = sizing::Mode::adaptive;
    unsigned max_idle = 0;        // 0: max_total
    double headroom = 2.0;        // idle target = claims/s × make time × headroom
    unsigned rate_window_ms = 3000;  // time constant of the claim-rate average
    unsigned decay_ms = 30000;       // time constant of the target's shrink
    // "vm": every sandbox is a microVM (docs/pool.md, VM pools); "container" or empty:
    // the template's tarn.isolation annotation (and the daemon's --isolation) decide.
    std::string isolation;
    // How a VM pool makes its VMs: "restore" (the default) from a snapshot of the
    // template's guest booted once, or "boot" each one.
    std::string vm_refill = "restore";
    // A used process sandbox's cgroup, once vacant, is reset and kept for the next
    // sandbox instead of being removed (docs/pool.md, Cgroups of used sandboxes),
    // where the template lets no workload write to its own cgroup.
    bool reuse_cgroups = true;
};

// Checks the sizing fields against each other. Messages start with `where` and
// name fields as `name` spells them: "maxIdle" in a file, "--max-idle" on the command line.
void check_sizing(const PoolSpec& s, const std::string& where, const std::function<std::string(const char*)>& name);

// Spawners (sandboxes in the making at once) unless configured: two per CPU, from 2
// to 8. A make is mostly kernel work that waits on little, so one spawner per CPU
// leaves CPUs idle while others sleep between steps; more than a few only queue.
unsigned default_max_starting();

struct DaemonOptions {
    std::string socket = kDefaultSocket;
    std::string cgroup_parent = "/tarn-pool";  // a pool's cgroup is <parent>/<name>
    std::vector<PoolSpec> pools;
    unsigned max_starting = default_max_starting();  // sandboxes in setup at once (all pools)
    // Where to serve Prometheus metrics: "unix:PATH" or "IPV4:PORT"; empty: nowhere.
    std::string metrics;
    // The daemon's own global flags: --isolation and the --vm-* settings apply to
    // its VM pools' templates as they would to `tarn create` of the bundle.
    runtime::GlobalOptions global;
};

// Throws when `address` is not "unix:/PATH" or "IPV4:PORT" (DaemonOptions::metrics).
void check_metrics_address(const std::string& address);

// A daemon configuration file (JSON, docs/pool.md). Errors name the file and field.
DaemonOptions load_config(const std::string& path);
DaemonOptions parse_config(const nlohmann::json& j, const std::string& what);

// Runs the daemon until a stop request. First removes every sandbox a previous
// daemon left under cgroup_parent (processes, cgroups); a broken template fails here,
// before the socket is served.
void serve(const DaemonOptions& o);

// ---- client ----------------------------------------------------------------

struct RunRequest {
    std::string pool;
    std::vector<std::string> args;
    std::vector<std::string> env;  // KEY=VALUE, over the template's process.env
    std::string cwd;               // empty: the template's process.cwd
    std::optional<int64_t> memory;  // per-sandbox memory limit, bytes
    std::optional<int64_t> pids;    // per-sandbox pids limit
    // Extra bind mounts "SOURCE:DESTINATION[:ro]" (recursive; SOURCE on the host).
    std::vector<std::string> binds;
    // When the pool is at its maximum: how long to wait for a sandbox (0: fail at once).
    unsigned wait_ms = 10000;
    std::array<int, 3> stdio{0, 1, 2};
};

struct RunResult {
    pid_t pid = -1;     // the workload, as the host sees it
    std::string sandbox;  // which sandbox ran it (its cgroup's name)
    int exit_code = 0;  // as a shell reports it: 128+N for signal N
    int signal = 0;
    double claim_ms = 0;  // request received → workload exec'd, measured by the daemon
};

class Client {
public:
    explicit Client(const std::string& socket = kDefaultSocket);
    // Claims a sandbox, runs the request in it and waits for the exit. Signals read
    // from `signal_fd` (a signalfd, -1: none) are forwarded to the workload. A
    // connection whose run ended with its exit report is kept for the next run (up to
    // kIdleConnections): a Client kept between requests saves a connect per claim.
    // Safe to call from several threads at once.
    RunResult run(const RunRequest& r, int signal_fd = -1);
    // {"pools":[...]}: one object per pool (docs/pool.md); `pool` empty for all.
    nlohmann::json status(const std::string& pool = {});
    // Stops the daemon: idle sandboxes go at once; running ones are waited for
    // (drain) or, with `now`, killed.
    void stop(bool now);

    static constexpr size_t kIdleConnections = 64;

private:
    std::string socket_;
    std::mutex mu_;
    std::vector<UniqueFd> idle_;  // connections between runs
};

// ---- the OCI path -----------------------------------------------------------

// Annotations that ask `tarn create`/`run` to start a bundle from a pool.
inline constexpr const char* kPoolAnnotation = "tarn.pool";
inline constexpr const char* kPoolSocketAnnotation = "tarn.pool.socket";

// What `tarn create` borrows from a pool: a sandbox's cgroup (renamed for the
// container) and its network, ipc and uts namespaces as open fds.
struct Lease {
    std::string sandbox;
    std::string cgroup;
    std::vector<std::pair<oci::NamespaceType, UniqueFd>> namespaces;
};

// Borrows an idle sandbox of `pool` for container `id` with config `c`. Returns
// nothing, with the reason in `why`, when there is no daemon, the config differs
// from the pool's template (namespaces, id maps, sysctl, resources) or no sandbox is
// idle: the caller then starts the container cold.
std::optional<Lease> lease(const std::string& socket, const std::string& pool, const std::string& id,
                           const oci::Config& c, std::string& why);

// A VM-isolated bundle's lease of a pool VM (docs/pool.md, VM pools on the OCI path):
// `peer` is a socket to the VM's monitor (runtime::vm::attach_to_pool_vm talks over
// it), `cgroup` the VM's cgroup (QEMU and its monitor are in it), `vm_dir` its files.
// Until release_vm(), the VM is the daemon's: closing `daemon` gives it back, and the
// daemon powers it off.
struct VmLease {
    std::string sandbox, cgroup, vm_dir;
    UniqueFd peer, daemon;
};
// `key` is runtime::vm::lease_key of the bundle's VM settings. Nothing, with the
// reason in `why`, when no daemon answers, the pool's VMs differ or none is idle.
std::optional<VmLease> lease_vm(const std::string& socket, const std::string& pool, const std::string& id,
                                const nlohmann::json& key, std::string& why);
// The VM is the container's now: the daemon records its cgroup as leased.
void release_vm(VmLease& l);

// ---- commands (the CLI's `tarn pool ...`): each returns the exit code -------

int serve_command(const DaemonOptions& o);
// Exits with the workload's status; SIGINT/SIGTERM/... are forwarded to it.
int run_command(const std::string& socket, const RunRequest& r);
int status_command(const std::string& socket, const std::string& pool, bool as_json);
int stop_command(const std::string& socket, bool now);

}  // namespace tarn::pool
