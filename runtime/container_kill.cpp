#include <signal.h>

#include "namespaces/syscalls.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

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
        // In a VM the cgroup holds the monitor and QEMU, not the workload: the monitor
        // forwards the signal to the container's init in the guest, whose pid
        // namespace dies with it.
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
