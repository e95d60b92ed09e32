#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "namespaces/syscalls.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/hooks.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace detail {

namespace {

void kill_init(const Record& r, int pidfd) {
    if (pidfd < 0) return;
    ns::detail::pidfd_send_signal(pidfd, SIGKILL);
    // The init is usually not our child (the shim or a subreaper reaps it); its
    // pidfd turns readable when it has exited either way.
    pollfd p{pidfd, POLLIN, 0};
    while (::poll(&p, 1, 10000) < 0 && errno == EINTR) {
    }
    if (!(p.revents & POLLIN)) throw Error("container init " + std::to_string(r.state.pid) + " did not exit after SIGKILL");
}

// What else runs in the cgroup (a shared pid namespace, exec'd processes that outlived
// init) goes too.
void kill_rest(cgroups::Manager& cg) {
    cg.kill_all(SIGKILL);
    for (int i = 0; i < 1000 && !cg.pids().empty(); ++i) ::usleep(2000);
}

}  // namespace

void kill_container(const Record& r, int pidfd) {
    auto cg = open_cgroup(r);
    if (cg && !cg->exists()) cg.reset();
    if (cg && cg->frozen()) {
        cg->kill_all(SIGKILL);
        cg->thaw();
    }
    kill_init(r, pidfd);
    if (cg) kill_rest(*cg);
}

void destroy(ContainerDir& dir, const Record& r, const oci::Config* config) {
    auto cg = open_cgroup(r);
    // A cgroup that is gone still gets destroy(): a systemd unit can outlive its cgroup
    // (an OOM-killed scope stays loaded as "failed" and would block the id's next unit).
    std::unique_ptr<cgroups::Manager> gone;
    if (cg && !cg->exists()) gone = std::move(cg);
    // A frozen task only acts on SIGKILL once thawed: queue the kill, then thaw.
    if (cg && cg->frozen()) {
        cg->kill_all(SIGKILL);
        cg->thaw();
    }
    UniqueFd pidfd(open_init_pidfd(r));
    kill_init(r, pidfd.get());
    if (cg) {
        kill_rest(*cg);
        cg->destroy();
    }
    if (gone) gone->destroy();
    if (!r.pool_vm_dir.empty()) {
        // Its monitor removes it when the VM ends, unless it was killed first. Nothing
        // is mounted there in this namespace (the VM's mounts were its monitor's own).
        std::error_code ec;
        std::filesystem::remove_all(r.pool_vm_dir, ec);
    }
    if (config && config->hooks && !config->hooks->poststop.empty())
        run_hooks_warn(config->hooks->poststop, hook_state(r, oci::Status::stopped, 0), "poststop");
    dir.remove();
}

}  // namespace detail

int remove(const GlobalOptions& g, const std::string& id, bool force) {
    try {
        if (force && !detail::ContainerDir::exists(g.root, id)) return 0;
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec;
        try {
            rec = dir.load();
        } catch (const Error& e) {
            // Records are replaced atomically, so only something outside tarn corrupts
            // one; without it there is no pid or cgroup to clean, but the id must not
            // stay blocked.
            if (!force) throw;
            log_warn("delete " + id + ": " + e.what() + "; removing the state dir only");
            rec.state.id = id;
            rec.state.status = oci::Status::creating;
        }
        oci::Status st = detail::current_status(dir, rec);
        if (!force && (st == oci::Status::running || st == oci::Status::paused))
            throw Error("cannot delete a container that is " + std::string(oci::to_string(st)) + " (use --force)");
        if (!force && st == oci::Status::creating)
            throw Error("cannot delete a container that is being created (use --force)");
        std::optional<oci::Config> cfg;
        try {
            cfg = dir.load_config();
        } catch (const Error& e) {
            // A create killed half-way may have left no config; force cleans up regardless.
            if (!force) throw;
        }
        detail::destroy(dir, rec, cfg ? &*cfg : nullptr);
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("delete " + id);
    }
}

}  // namespace tarn::runtime
