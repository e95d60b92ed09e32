#include <signal.h>

#include "namespaces/syscalls.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime {

int kill(const GlobalOptions& g, const KillOptions& o) {
    try {
        int sig = parse_signal(o.signal);
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, o.id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        // containerd sends `kill --all ID 9` to clean up containers that already stopped.
        if (o.all && st == oci::Status::stopped) return 0;
        if (st != oci::Status::created && st != oci::Status::running && st != oci::Status::paused) {
            // containerd's shim matches "container not running" to treat the task as gone.
            throw Error("container not running (" + std::string(oci::to_string(st)) + ")");
        }
        // In a VM the host cgroup holds the monitor and QEMU, not the workload. SIGKILL
        // goes to the monitor, which takes QEMU and the whole guest with it; any other
        // signal for all goes to the guest container's cgroup through the agent.
        if (o.all && rec.vm && sig != SIGKILL) {
            std::string state_dir = dir.path();
            dir.unlock();
            vm::signal_all(state_dir, sig);
            return 0;
        }
        if (o.all && !rec.vm) {
            if (auto cg = detail::open_cgroup(rec)) {
                // A frozen task would only see SIGKILL after a thaw.
                cg->kill_all(sig);
                if (sig == SIGKILL && cg->frozen()) cg->thaw();
                return 0;
            }
        }
        UniqueFd pidfd(detail::open_init_pidfd(rec));
        if (!pidfd) throw Error("container not running (stopped)");
        // Through the pidfd: the signal reaches the process opened above and no other,
        // even if the pid were reused in between.
        if (ns::detail::pidfd_send_signal(pidfd.get(), sig) < 0) throw_errno("signal " + o.signal);
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("kill " + o.id);
    }
}

}  // namespace tarn::runtime
