// Message framing shared by the pool daemon and client. Internal to runtime/pool/.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cgroups/cgroups.hpp"
#include "oci/oci.hpp"

namespace tarn::pool::detail {

// What a sandbox is made from: a pool's template, resolved once by the daemon.
struct Template {
    std::string pool;
    oci::Config config;
    std::string rootfs;    // absolute
    bool overlay = true;   // a writable root gets a private overlay per sandbox
    std::string cgroup;    // the pool's cgroup path; sandboxes are its children
    cgroups::Mode mode = cgroups::Mode::unified;
    // Why a used sandbox's cgroup is not kept for another sandbox of the pool (the
    // pool's reuseCgroups is off, or cgroup_reuse_refusal says why); empty: it is.
    std::string no_cgroup_reuse;
};

// Why the cgroups of this template's sandboxes must not be reused: its workload could
// write to its own cgroup (docs/pool.md, Cgroups of used sandboxes), which the next
// sandbox would inherit. Empty when it cannot. `mountinfo`: the daemon's
// /proc/self/mountinfo, for the template's bind sources.
std::string cgroup_reuse_refusal(const oci::Config& c, const std::string& mountinfo);
// Whether a recursive bind of host path `source` (resolved) shows a cgroup
// filesystem: the source is on one, or one is mounted at or below it.
bool reaches_cgroupfs(const std::string& source, const std::string& mountinfo);

// A spawner: a process forked from the daemon that makes sandboxes (cgroup, clone
// with CLONE_PARENT so the daemon is their parent, the whole setup handshake) and
// removes used sandboxes' cgroups, so none of that blocks the daemon's loop.
// Requests on `sock`: {"op":"make","pool":P,"sandbox":S} answered by
// {"made":S,"pid":N,"phases":"..."} with the init's sync socket and pidfd, or
// {"failed":S,"pid":N,"error":"..."}; with "cgroup":PATH, the sandbox is made in that
// used cgroup instead of a new one. {"op":"recycle","pool":P,"cgroup":PATH} readies a
// used sandbox's cgroup for another sandbox, or removes it when it cannot be, and is
// answered {"recycled":PATH,"reused":B}. {"op":"destroy","pool":P,"cgroup":PATH} and
// {"op":"forget","cgroup":PATH} (a leased sandbox: drop what is held for it) are
// unanswered. Every sandbox goes to the spawner that made it.
// Exits when the daemon's end closes.
[[noreturn]] void spawner_main(int sock, const std::vector<const Template*>& templates);

// The CPU priority of making sandboxes ahead of requests. Background work must not
// take a CPU from the workloads it serves or from the daemon reporting their exits.
// Where the daemon may raise it again (CAP_SYS_NICE), a spawner runs SCHED_IDLE,
// which the scheduler runs only on a CPU nothing else wants; otherwise nice 10.
// `urgent`: the pool runs low or a request waits, and makes run at SCHED_OTHER nice 10
// so a CPU busy with workloads cannot starve them. Set by the daemon only (a spawner
// setting its own could race the daemon's change). A sandbox's init inherits its
// spawner's policy for its setup. False when refused (errno set).
bool set_make_priority(pid_t pid, bool urgent);
// A claimed sandbox's workload: SCHED_OTHER at nice 0.
bool set_workload_priority(pid_t pid);

// One JSON object per SOCK_SEQPACKET message, with fds as SCM_RIGHTS.
void send_message(int sock, const nlohmann::json& msg, const std::vector<int>& fds = {});
// False on EOF. A message over kMaxMessage, or one that is not a JSON object, throws.
bool recv_message(int sock, nlohmann::json& msg, std::vector<UniqueFd>* fds = nullptr);

// The parts of a config a leased sandbox has already fixed (namespace types, id
// maps, sysctl, resources): a bundle is served from a pool only when these equal
// the template's.
nlohmann::json lease_key(const oci::Config& c);

// Percentile (0..100) of unsorted samples; 0 when empty.
double percentile(std::vector<double> v, double p);

}  // namespace tarn::pool::detail
