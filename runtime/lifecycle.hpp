// Pieces shared by the lifecycle commands. Internal to runtime/.
#pragma once

#include <functional>

#include <string>

#include "namespaces/namespaces.hpp"
#include "runtime/container.hpp"
#include "runtime/runtime.hpp"

namespace tarn::runtime::detail {

struct Launched {
    ContainerDir dir;
    Record record;
    oci::Config config;
    ns::Spawned spawned;
};

// The create half of create/run: state dir, config snapshot, init spawned and set up.
// `park`: the init waits on exec.fifo for `start`; otherwise it execs at once.
// On failure nothing is left behind and the error reads "create ID: ...".
Launched launch(const GlobalOptions& g, const CreateOptions& o, bool park, bool want_pty);

// The state JSON hooks get on stdin.
std::string hook_state(const Record& r, oci::Status status, int pid);

// Waits for a foreground process (run, exec): forwards signals, proxies the pty if
// any, and returns its exit code (128+N for a signal).
int wait_foreground(pid_t pid, int pidfd, int pty_master);

// Opens a pidfd for the container's init, verifying it is still the process recorded
// (start time), so a recycled pid is never signalled. Returns -1 when it is gone.
int open_init_pidfd(const Record& r);

// Kills a container's processes and removes its cgroup and state (delete, run's end).
void destroy(ContainerDir& dir, const Record& r, const oci::Config* config);

void write_pid_file(const std::string& path, pid_t pid);

// Names at debug level the ambient capabilities the process will run without
// (ns::unraisable_ambient). `who`: "create c1", "exec c1".
void log_unraisable_ambient(const oci::Capabilities& caps, const std::string& who);

// Releases an init parked on `fifo` and returns once its workload has exec'd; throws
// the init's own error when it failed first. With `report` (the init's report fifo,
// see InitOptions::report_fifo) that is what the init wrote there; without (a VM
// monitor), the init's end of `fifo` closing on exec, or `pidfd` (-1 if unknown)
// showing that it died. The fifos are removed.
void release_exec_fifo(const std::string& fifo, int pidfd, const std::string& report = {});

// SIGKILLs the container's init (`pidfd`, -1 if gone) and whatever else runs in its
// cgroup, and waits until the init has exited: the container reads `stopped` after.
void kill_container(const Record& r, int pidfd);

// Connects to the --console-socket the pty master is sent to.
UniqueFd connect_console_socket(const std::string& path);

// With linux.seccomp.listenerPath and some SCMP_ACT_NOTIFY rule: the connected listener
// socket, and the containerProcessState for a process of this container (`init`: the
// process is the container's init, so it is also the state's pid). Otherwise -1.
UniqueFd connect_seccomp_listener(const oci::Config& c);
std::function<std::string(pid_t)> seccomp_state_for(const oci::Config& c, const oci::State& state, bool init);

}  // namespace tarn::runtime::detail
