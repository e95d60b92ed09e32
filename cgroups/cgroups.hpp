// The cgroup manager: one container's (or one pool's) cgroup on a cgroup v2 host,
// with a fallback for v1 ("legacy") and hybrid hosts.
//
// A Manager is opened for a path inside the hierarchy ("/tarn/c1"), then
// create()d, fed linux.resources with apply(), joined with add_process() (or with
// CLONE_INTO_CGROUP through open_v2_dir_fd()), and finally destroy()ed.
//
// Translation follows runc/crun where the spec leaves room; where tarn decides
// differently the function comment says so. Every error is a tarn::Error whose
// message names the cgroup directory and file ("cgroup /sys/fs/cgroup/tarn/c1:
// write memory.max \"1\" (linux.resources.memory.limit): device or resource busy")
// or, for a value tarn rejects itself, the OCI field
// ("linux.resources.memory.swap: must be >= memory.limit (swap 1024 < limit 4096)").
//
// Devices: on v1 linux.resources.devices becomes devices.deny/devices.allow writes.
// On v2 the device controller is an eBPF program: apply() builds one from the rules
// (plus the default allow list, with v1's semantics) and attaches it to the cgroup
// (devices_v2.cpp). Only where there is no cgroup2 to attach to (a fake cgroupfs)
// are the rules left in pending_device_rules(); they are never dropped silently.
//
// All paths are relative to a mount root ("/sys/fs/cgroup" unless told otherwise),
// so tests can point the library at a fake cgroupfs in a temporary directory.
#pragma once

#include <sys/types.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/oci.hpp"

namespace tarn::cgroups {

inline constexpr std::string_view kDefaultRoot = "/sys/fs/cgroup";

// unified: cgroup2 mounted at the root. hybrid: v1 controllers under the root plus
// a cgroup2 hierarchy at <root>/unified (often holding few or no controllers).
// legacy: v1 only.
enum class Mode { unified, hybrid, legacy };
std::string_view to_string(Mode m);

// Looks at the file system types (statfs) of <root> and <root>/unified.
Mode detect(const std::string& root = std::string(kDefaultRoot));

// The cgroup path (inside every hierarchy) for linux.cgroupsPath of container `id`:
//   "/a/b"  absolute: used as is (relative to the hierarchy root or cgroup namespace);
//   "a/b"   relative: below the runtime's own cgroup (from /proc/self/cgroup: the
//           cgroup2 "0::" entry, else name=systemd, else the first v1 entry);
//   ""      "/tarn/<id>". Not runc's "<own cgroup>/<id>": on v2 the runtime's own
//           cgroup usually holds processes (a login scope, a service), and v2 forbids
//           enabling controllers below a cgroup with processes; a fixed absolute
//           parent also keeps `delete` from depending on where `create` ran.
// "." and empty components are dropped; ".." that would climb above the starting
// point is an error, as is "slice:prefix:name" (the systemd driver's syntax) without
// systemd = true. With systemd = true: the cgroup systemd will give the unit
// (systemd::unit_for(...).path).
std::string resolve_path(std::string_view cgroups_path, std::string_view id, bool systemd = false);

// ---- stats (shaped after runc's `events --stats`) ---------------------------

struct CpuStats {
    uint64_t total_ns = 0, user_ns = 0, kernel_ns = 0;
    std::vector<uint64_t> percpu_ns, percpu_kernel_ns, percpu_user_ns;  // v1 only
    uint64_t periods = 0, throttled_periods = 0, throttled_ns = 0;
};

struct MemoryEntry {
    uint64_t usage = 0, max_usage = 0, limit = 0, failcnt = 0;
};

struct MemoryStats {
    uint64_t cache = 0;
    MemoryEntry usage;
    MemoryEntry swap;                     // memory + swap, as v1 reports it (v2 numbers are added up)
    MemoryEntry kernel, kernel_tcp;       // v1 only
    uint64_t oom = 0;                     // v2 memory.events "oom" (v1 has no counter: 0)
    uint64_t oom_kill = 0;                // v2 memory.events "oom_kill", v1 memory.oom_control "oom_kill"
    std::map<std::string, uint64_t> raw;  // memory.stat
};

struct PidsStats {
    uint64_t current = 0;
    uint64_t limit = 0;  // 0: unlimited
};

struct BlkioEntry {
    uint64_t major = 0, minor = 0;
    std::string op;  // "Read", "Write", ...
    uint64_t value = 0;
};

struct BlkioStats {
    std::vector<BlkioEntry> service_bytes, serviced;
};

struct HugetlbStats {
    uint64_t usage = 0, max_usage = 0, failcnt = 0, limit = 0;
};

struct Stats {
    CpuStats cpu;
    MemoryStats memory;
    PidsStats pids;
    BlkioStats blkio;
    std::map<std::string, HugetlbStats> hugetlb;  // by page size, "2MB"
};

// What a cgroup uses of the limits a budget sets: memory in bytes and tasks, with
// their limits (none: no limit, or no such controller).
struct Usage {
    std::optional<uint64_t> memory, memory_limit;
    std::optional<uint64_t> pids, pids_limit;
};

// {"type":"stats","id":id,"data":{...}} with runc's field names (types/events.go),
// zero values left out where runc leaves them out.
nlohmann::json to_runc_json(const Stats& s, std::string_view id);

// ---- the manager ------------------------------------------------------------

class Manager {
public:
    virtual ~Manager() = default;
    Manager(const Manager&) = delete;
    Manager& operator=(const Manager&) = delete;

    Mode mode() const { return mode_; }
    // The cgroup path inside the hierarchy, e.g. "/tarn/c1".
    const std::string& path() const { return path_; }
    // Every directory the cgroup occupies (one on v2, one per hierarchy otherwise).
    virtual std::vector<std::string> directories() const = 0;
    // True if any of the cgroup's directories exists.
    bool exists() const;

    // Makes the cgroup. v2: enables controllers top-down in every ancestor's
    // cgroup.subtree_control (a controller the kernel does not offer is skipped
    // unless `needs` uses it). v1: a directory in every mounted hierarchy, cpuset
    // cpus/mems copied from the parent; hybrid: also in the unified hierarchy.
    // An existing cgroup is reused; on failure what this call made is removed.
    virtual void create(const oci::Resources& needs = {}) = 0;
    // Writes linux.resources (also `update`). Values are checked before anything is
    // written; a kernel refusal names the file, the value and the field.
    virtual void apply(const oci::Resources& r) = 0;
    // Moves a process (all its threads) into the cgroup.
    virtual void add_process(pid_t pid) = 0;
    // A new O_RDONLY|O_DIRECTORY fd on the cgroup for clone3's CLONE_INTO_CGROUP,
    // owned by the caller; -1 unless the host is unified.
    virtual int open_v2_dir_fd() const = 0;

    // How a new process can enter the cgroup without add_process. Writing another
    // process's pid to cgroup.procs takes the kernel's threadgroup rwsem for writing,
    // which waits for an RCU grace period whenever the rwsem was idle (5-15 ms here)
    // while holding cgroup_mutex, so every other cgroup operation on the host waits
    // too. Two ways in skip that lock: being born in the cgroup (CLONE_INTO_CGROUP,
    // cgroup2 only) and a single thread moving itself (writing "0" to a v1
    // hierarchy's `tasks` file). A child that is still single-threaded is cloned into
    // `clone_into` (when open) and writes "0" to each of `self_join` before it runs
    // anything else. Files opened here by the caller: the kernel checks the opener's
    // credentials, so the child needs no privilege of its own.
    struct Entry {
        UniqueFd clone_into;                              // cgroup2 directory, or closed
        std::vector<std::pair<UniqueFd, std::string>> self_join;  // v1 `tasks` files and their paths
    };
    virtual Entry open_entry() const {
        Entry e;
        e.clone_into.reset(open_v2_dir_fd());
        return e;
    }

    // Freezes every process (waits, bounded, until the kernel reports it frozen).
    virtual void freeze() = 0;
    virtual void thaw() = 0;
    virtual bool frozen() const = 0;
    // Signals every process in the cgroup and its descendants. SIGKILL on v2 uses
    // cgroup.kill when the kernel has it; otherwise the processes are frozen (when
    // a freezer is available), signalled one by one and thawed, so a fork loop
    // cannot outrun the iteration. Does not wait for them to exit.
    virtual void kill_all(int sig) = 0;
    // Every process in the cgroup and its descendants, sorted.
    virtual std::vector<pid_t> pids() const = 0;
    // Removes the cgroup's directories, descendants first (those the workload made
    // too). Processes are not killed: a busy cgroup is retried briefly, then an
    // error. A cgroup that is already gone is fine.
    virtual void destroy() = 0;

    virtual Stats stats() const = 0;
    // Memory and pids use alone: four files, where stats() reads every controller's
    // (a pool daemon reads this between claims).
    virtual Usage usage() const = 0;
    virtual uint64_t oom_kill_count() const = 0;

    // The manager of child cgroup "<path>/<name>", built from what this one found of
    // the host (the mounted hierarchies) instead of probing it again: every hierarchy
    // has the same children. Null where the manager cannot (the systemd driver).
    virtual std::unique_ptr<Manager> child(const std::string& name) const;

    // Whether a cgroup that held one workload can hold another as it is: nothing in it
    // or below it, exiting and unreaped tasks included (the pids controller counts a
    // task until it is reaped; where it is missing, the process lists), no child
    // cgroup, not frozen, and no OOM kill ever counted in it (that count cannot be
    // reset, and the next user would read it as its own). False where the manager
    // cannot tell.
    virtual bool vacant() const;
    // Sets back to zero the usage peaks and failure counts the kernel lets be reset:
    // on v1 memory's maximum usage and failcnt (memory+swap, kernel and TCP memory
    // where present), cpuacct's usage and blkio's statistics. cgroup v2 resets none
    // of its counters; this does nothing there.
    virtual void reset_counters();

    // v2 on something that is not a cgroup2 mount: the device rules of the last apply()
    // plus the default allow rules, which no filter enforces. Otherwise empty.
    const std::vector<oci::DeviceCgroupRule>& pending_device_rules() const { return pending_devices_; }

protected:
    Manager(Mode mode, std::string path) : mode_(mode), path_(std::move(path)) {}
    Mode mode_;
    std::string path_;
    std::vector<oci::DeviceCgroupRule> pending_devices_;
};

// The manager for cgroup `path` (as from resolve_path) on a host in `mode`. Nothing
// is created until create().
std::unique_ptr<Manager> open(const std::string& path, Mode mode,
                              const std::string& root = std::string(kDefaultRoot));

// The allow rules every container gets after its own (runtime-spec "Default
// Devices" plus mknod of anything), as runc and crun add them: null, zero, full,
// random, urandom, tty, console, ptmx, pts/*, net/tun.
const std::vector<oci::DeviceCgroupRule>& default_device_rules();

// ---- the systemd driver (systemd.cpp) ------------------------------------------

namespace systemd {

// The transient unit for a container, from linux.cgroupsPath "slice:prefix:name" (runc's
// syntax): unit "<prefix>-<name>.scope" ("<name>.scope" without a prefix) in `slice`
// (empty: "system.slice", or "user.slice" in a user manager; "-": the root slice), or the
// slice unit `name` itself when it ends in ".slice" (the prefix is then unused). Slices
// nest by their dashes: "a-b.slice" is the cgroup "/a.slice/a-b.slice". An empty
// cgroupsPath is "system.slice:tarn:<id>" ("user.slice:tarn:<id>").
//
// `user`: the unit belongs to the caller's own systemd user manager (user@UID.service),
// as an unprivileged caller's do. Its `path` from unit_for is then in the manager's tree,
// below the manager's own cgroup ("/user.slice/user-1000.slice/user@1000.service");
// create() puts the two together.
struct Unit {
    std::string name;   // "tarn-c1.scope"
    std::string slice;  // "system.slice"
    std::string path;   // "/system.slice/tarn-c1.scope"
    bool user = false;
    bool operator==(const Unit&) const = default;
};
Unit unit_for(std::string_view cgroups_path, std::string_view id, bool user = false);

// Whether systemd runs here and its manager answers over D-Bus (the system manager on
// the system bus or, as root, its private socket; with `user` the caller's user manager
// on the session bus or its private socket, on a cgroup v2 host); if not, `why` says
// what failed.
bool available(bool user = false, std::string* why = nullptr);

// The manager for a container's unit. create() only connects to systemd (an Error naming
// the cause if it cannot); apply() before the init exists keeps the resources;
// add_process(init) starts the unit around the init (StartTransientUnit with Delegate,
// the resources systemd has properties for), waits for the job and writes every limit
// into the unit's cgroup with the cgroupfs manager; open_v2_dir_fd() is -1 until then.
// A user unit: create() also refuses (before anything exists) limits on controllers
// systemd did not delegate to the user manager, and any host without cgroup v2.
// Opened for an existing unit: apply() is SetUnitProperties plus the cgroupfs writes,
// destroy() stops the unit and removes what is left; the rest reads the cgroup directly.
std::unique_ptr<Manager> open(const Unit& unit, Mode mode, const std::string& root = std::string(kDefaultRoot),
                              const std::string& description = "");

}  // namespace systemd

// ---- resource pools ---------------------------------------------------------

// The aggregate budget of a pool's parent cgroup. Absent: left as it is.
struct PoolBudget {
    std::optional<int64_t> memory_max;   // bytes; -1: unlimited
    std::optional<int64_t> cpu_quota;    // microseconds per period; -1: unlimited
    std::optional<uint64_t> cpu_period;  // microseconds
    std::optional<uint64_t> cpu_weight;  // 1..10000 (v2 units; v1 gets the kernel's shares equivalent)
    std::optional<int64_t> pids_max;     // <= 0: unlimited
};

// A parent cgroup with an aggregate budget and one child cgroup per sandbox.
class ResourcePool {
public:
    // Creates (or adopts) the pool's cgroup at `path` and applies the budget.
    static ResourcePool create(const std::string& path, const PoolBudget& budget, Mode mode,
                               const std::string& root = std::string(kDefaultRoot));
    // An existing pool, budget untouched.
    static ResourcePool open(const std::string& path, Mode mode,
                             const std::string& root = std::string(kDefaultRoot));

    void set_budget(const PoolBudget& budget);
    // A new child cgroup "<pool>/<name>", created, with `resources` applied.
    std::unique_ptr<Manager> create_sandbox(const std::string& name, const oci::Resources& resources = {});
    std::unique_ptr<Manager> open_sandbox(const std::string& name) const;
    // Names of the child cgroups that exist now.
    std::vector<std::string> sandboxes() const;
    // Readies the cgroup of a used sandbox for another one, in place of a removal and
    // a create (on a v1 host an rmdir and a mkdir in every hierarchy): when it is
    // vacant (Manager::vacant), the limits a request or anything else may have changed
    // go back to `resources` (memory and pids: unlimited where they set none) and the
    // counters that can be reset are. False when it is not vacant, an Error when a
    // write fails: either way the caller removes it instead.
    bool recycle_sandbox(const std::string& name, const oci::Resources& resources);
    // Removes every sandbox's cgroup, then the pool's own.
    void destroy();

    Manager& cgroup() { return *mgr_; }
    const std::string& path() const { return mgr_->path(); }

private:
    ResourcePool(std::unique_ptr<Manager> mgr, std::string root)
        : mgr_(std::move(mgr)), root_(std::move(root)) {}
    std::unique_ptr<Manager> mgr_;
    std::string root_;
};

}  // namespace tarn::cgroups
