#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "namespaces/syscalls.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/hooks.hpp"
#include "runtime/lifecycle.hpp"
#include "runtime/vm/vm.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::runtime::detail {
namespace {

std::string absolute(const std::string& base, const std::string& p) {
    if (!p.empty() && p[0] == '/') return p;
    return base + "/" + p;
}

std::string owner_name(uid_t uid) {
    // /etc/passwd read by hand: the static binary does not load NSS modules.
    try {
        std::string text = read_file("/etc/passwd");
        for (std::string_view line : lines(text)) {
            size_t c1 = line.find(':'), c2 = line.find(':', c1 + 1), c3 = line.find(':', c2 + 1);
            if (c3 == std::string::npos) continue;
            if (line.substr(c2 + 1, c3 - c2 - 1) == std::to_string(uid)) return std::string(line.substr(0, c1));
        }
    } catch (const Error&) {
    }
    return std::to_string(uid);
}

}  // namespace

std::string hook_state(const Record& r, oci::Status status, int pid) {
    oci::State s = r.state;
    s.status = status;
    s.pid = pid;
    return oci::to_json_text(s, -1);
}

namespace {

UniqueFd connect_unix(const std::string& path, const std::string& what) {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno(what);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw Error(what + " " + path + ": path too long");
    std::strcpy(addr.sun_path, path.c_str());
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw_errno("connect to " + what + " " + path);
    return s;
}

bool has_notify(const oci::Seccomp& s) {
    for (const oci::SeccompSyscall& sc : s.syscalls)
        if (sc.action == "SCMP_ACT_NOTIFY") return true;
    return false;
}

}  // namespace

UniqueFd connect_console_socket(const std::string& path) { return connect_unix(path, "console socket"); }

UniqueFd connect_seccomp_listener(const oci::Config& c) {
    if (!c.linux || !c.linux->seccomp || c.linux->seccomp->listener_path.empty() || !has_notify(*c.linux->seccomp))
        return {};
    return connect_unix(c.linux->seccomp->listener_path, "linux.seccomp.listenerPath");
}

std::function<std::string(pid_t)> seccomp_state_for(const oci::Config& c, const oci::State& state, bool init) {
    if (!c.linux || !c.linux->seccomp) return {};
    std::string metadata = c.linux->seccomp->listener_metadata;
    return [state, metadata, init](pid_t pid) {
        oci::State s = state;
        if (init) s.pid = pid;
        return oci::process_state_json(s, pid, metadata);
    };
}

void log_unraisable_ambient(const oci::Capabilities& caps, const std::string& who) {
    if (!log_debug_enabled()) return;
    for (const std::string& name : ns::unraisable_ambient(caps))
        log_debug(who + ": process.capabilities.ambient: " + name +
                  " is not also inheritable and permitted: left out of the ambient set, as runc does");
}

void write_pid_file(const std::string& path, pid_t pid) {
    // A bare decimal with no newline: containerd's shim parses exactly that.
    write_file_atomic(path, std::to_string(pid), 0644);
}

namespace {

// The first linux.resources field that sets a limit (devices rules aside: without a
// cgroup the device nodes the container gets are its only devices); empty if none.
std::string limited_field(const oci::Resources& r) {
    if (r.memory) return "memory";
    if (r.cpu) return "cpu";
    if (r.pids) return "pids";
    if (r.block_io) return "blockIO";
    if (!r.hugepage_limits.empty()) return "hugepageLimits";
    if (r.network) return "network";
    if (!r.rdma.empty()) return "rdma";
    if (!r.unified.empty()) return "unified";
    return "";
}

Launched launch_unwrapped(const GlobalOptions& g, const CreateOptions& o, bool park, bool want_pty) {
    char buf[PATH_MAX];
    if (!::realpath(o.bundle.c_str(), buf)) throw_errno("bundle " + o.bundle);
    std::string bundle = buf;
    std::string config_path = bundle + "/config.json";
    std::string text = read_file(config_path, kMaxJsonDocument);
    oci::Config cfg = oci::parse_config(text, config_path);
    if (!cfg.root || cfg.root->path.empty()) throw Error(config_path + ": root.path: required");
    if (!cfg.process) throw Error(config_path + ": process: required");
    std::string rootfs = absolute(bundle, cfg.root->path);
    struct stat st;
    if (::stat(rootfs.c_str(), &st) < 0) throw_errno("root.path " + rootfs);
    if (!S_ISDIR(st.st_mode)) throw Error("root.path " + rootfs + ": not a directory");
    if (g.rootless.value_or(true) && ::geteuid() != 0) {
        // Namespaces, mounts and devices are only an unprivileged user's to make inside a
        // user namespace of its own.
        bool userns = cfg.linux && cfg.linux->find_namespace(oci::NamespaceType::user);
        if (!userns)
            throw Error(config_path +
                        ": linux.namespaces: an unprivileged user needs a user namespace (`tarn spec "
                        "--rootless` writes one)");
    }
    // VM isolation: the settings are resolved (and their files checked) before
    // anything is made, so a missing kernel or QEMU leaves nothing to clean up.
    bool in_vm = vm::selected(g, cfg);
    std::optional<vm::Settings> vm_settings;
    std::optional<vm::GuestConfig> guest;
    if (in_vm) {
        vm_settings = vm::resolve(g, cfg);
        guest = vm::guest_config(text, bundle);  // a bind source missing, too many shares
        // createContainer and startContainer hooks run in the container's namespaces,
        // which are the guest's: a host program cannot. The runtime-namespace hooks
        // (prestart, createRuntime; poststart, poststop) run on the host as usual.
        if (cfg.hooks && (!cfg.hooks->create_container.empty() || !cfg.hooks->start_container.empty()))
            throw Error(std::string(cfg.hooks->create_container.empty() ? "hooks.startContainer"
                                                                        : "hooks.createContainer") +
                        ": not available in vm mode (they run inside the container, which is in the guest)");
    }
    ns::check_lsm(&*cfg.process, cfg.linux ? &*cfg.linux : nullptr);
    if (cfg.process->capabilities) log_unraisable_ambient(*cfg.process->capabilities, "create " + o.id);
    if (cfg.process->terminal && o.console_socket.empty() && !want_pty)
        throw Error("process.terminal is true: a detached container needs --console-socket");
    if (!cfg.process->terminal && !o.console_socket.empty())
        throw Error("--console-socket given but process.terminal is false");
    // Bind sources are relative to the bundle (config.md "mounts").
    for (oci::Mount& m : cfg.mounts)
        if (!m.source.empty() && m.source[0] != '/' && (m.type == "bind" || m.type.empty() ||
                                                         std::find(m.options.begin(), m.options.end(), "bind") != m.options.end() ||
                                                         std::find(m.options.begin(), m.options.end(), "rbind") != m.options.end()))
            m.source = absolute(bundle, m.source);

    auto t_cgroup = std::chrono::steady_clock::now();
    cgroups::Mode mode = cgroups::detect();
    const std::string cgroups_path = cfg.linux ? cfg.linux->cgroups_path : std::string();
    std::string cgroup_path = cgroups::resolve_path(cgroups_path, o.id, g.systemd_cgroup);
    const oci::Resources no_resources;
    const oci::Resources& resources = cfg.linux && cfg.linux->resources ? *cfg.linux->resources : no_resources;
    std::unique_ptr<cgroups::Manager> cgroup;
    std::string systemd_unit;
    bool systemd_user = false;
    if (g.systemd_cgroup) {
        // Connects to systemd before anything exists, so an unreachable systemd leaves
        // nothing behind; the unit itself is started around the init (add_process). An
        // unprivileged caller's unit is its own user manager's, as with runc and crun.
        systemd_user = g.rootless.value_or(::geteuid() != 0 || ns::in_user_namespace());
        cgroups::systemd::Unit unit = cgroups::systemd::unit_for(cgroups_path, o.id, systemd_user);
        systemd_unit = unit.name;
        cgroup = cgroups::systemd::open(unit, mode, std::string(cgroups::kDefaultRoot), "tarn container " + o.id);
        cgroup->create(resources);
        cgroup_path = cgroup->path();  // a user unit's is below its manager's cgroup
    }

    auto cgroup_time = std::chrono::steady_clock::now() - t_cgroup;
    auto t_state = std::chrono::steady_clock::now();
    ContainerDir dir = ContainerDir::create(g.root, o.id);
    std::chrono::steady_clock::duration lease_time{};
    // A bundle annotated with a pool borrows a ready sandbox's network, ipc and uts
    // namespaces and cgroup; anything in the way means a cold start, as without it.
    std::optional<pool::Lease> leased;
    // A VM-isolated bundle borrows a pool VM instead: booted, its guest's channel
    // handed to this container's monitor, the bundle's trees attached to its share.
    std::optional<pool::VmLease> vm_lease;
    std::shared_ptr<vm::Launch::Adopted> adopted;
    // A VM has its own kernel: a host sandbox's namespaces are no use to it.
    // A pool's sandboxes live in its own cgroups, not in systemd units.
    if (auto a = cfg.annotations.find(pool::kPoolAnnotation);
        !in_vm && !g.systemd_cgroup && a != cfg.annotations.end()) {
        auto sa = cfg.annotations.find(pool::kPoolSocketAnnotation);
        std::string why;
        auto t_lease = std::chrono::steady_clock::now();
        try {
            leased = pool::lease(sa != cfg.annotations.end() ? sa->second : pool::kDefaultSocket, a->second, o.id, cfg, why);
        } catch (const Error& e) {
            why = e.what();
        }
        lease_time = std::chrono::steady_clock::now() - t_lease;
        if (leased) {
            log_debug("create " + o.id + ": from pool " + a->second + " (sandbox " + leased->sandbox + ")");
            cgroup_path = leased->cgroup;
            for (auto& [type, fd] : leased->namespaces)
                for (oci::Namespace& n : cfg.linux->namespaces)
                    if (n.type == type && n.path.empty()) n.path = "/proc/self/fd/" + std::to_string(fd.get());
        } else {
            log_debug("create " + o.id + ": cold start, not from pool " + a->second + ": " + why);
        }
    } else if (a != cfg.annotations.end() && in_vm) {
        auto sa = cfg.annotations.find(pool::kPoolSocketAnnotation);
        std::string why;
        auto t_lease = std::chrono::steady_clock::now();
        if (g.systemd_cgroup) {
            why = "a pool's VMs live in its own cgroups, not in systemd units";
        } else if (::geteuid() != 0) {
            why = "attaching the bundle's rootfs to a pool VM takes root";
        } else {
            try {
                vm_lease = pool::lease_vm(sa != cfg.annotations.end() ? sa->second : pool::kDefaultSocket, a->second,
                                          o.id, vm::lease_key(*vm_settings), why);
                if (vm_lease) {
                    char real[PATH_MAX];
                    if (!::realpath(rootfs.c_str(), real)) throw_errno("root.path " + rootfs);
                    adopted = vm::attach_to_pool_vm(std::move(vm_lease->peer), real, cfg.root->readonly,
                                                    guest->shares, guest->mount_points);
                    pool::release_vm(*vm_lease);
                }
            } catch (const Error& e) {
                // The daemon powers off a VM whose lease was not released.
                why = e.what();
                adopted.reset();
            }
        }
        lease_time = std::chrono::steady_clock::now() - t_lease;
        if (adopted) {
            log_debug("create " + o.id + ": from pool " + a->second + " (VM " + vm_lease->sandbox + ")");
            cgroup_path = vm_lease->cgroup;
        } else {
            vm_lease.reset();
            log_debug("create " + o.id + ": cold start, not from pool " + a->second + ": " + why);
        }
    }
    Record rec;
    bool cgroup_existed = false;
    ns::Spawned sp;  // out here so a failure after the spawn can still stop the init
    try {
        rec.state.id = o.id;
        rec.state.bundle = bundle;
        rec.state.rootfs = rootfs;
        rec.state.created = rfc3339_now();
        rec.state.owner = owner_name(::geteuid());
        rec.state.annotations = cfg.annotations;
        rec.state.status = oci::Status::creating;
        // Recorded before it exists, so `delete --force` after a killed create finds it.
        rec.cgroup_path = cgroup_path;
        rec.systemd_unit = systemd_unit;
        rec.systemd_user = systemd_user;
        rec.vm = in_vm;
        rec.no_new_keyring = o.no_new_keyring;
        if (adopted) rec.pool_vm_dir = vm_lease->vm_dir;
        dir.save(rec);
        dir.save_config(text);
        auto state_time = std::chrono::steady_clock::now() - t_state - lease_time;

        t_cgroup = std::chrono::steady_clock::now();
        if (!cgroup) {
            cgroup = cgroups::open(cgroup_path, mode);
            // A leased cgroup is this container's alone: a failed create removes it.
            cgroup_existed = !leased && !adopted && cgroup->exists();
            try {
                cgroup->create(resources);
            } catch (const Error& e) {
                // Rootless unless told otherwise: not root, or root of a user namespace
                // (rootless podman runs the runtime there).
                bool rootless = g.rootless.value_or(::geteuid() != 0 || ns::in_user_namespace());
                if (!rootless || (e.code() != EACCES && e.code() != EPERM && e.code() != EROFS)) throw;
                // No cgroup delegated to this user (a v1 or hybrid host, or a v2 one
                // without a systemd user slice): as runc's rootless mode does, the
                // container runs in its caller's cgroup, unless it asks for limits that
                // only a cgroup of its own could hold.
                if (std::string field = limited_field(resources); !field.empty())
                    throw Error("linux.resources." + field + ": no cgroup is delegated to uid " +
                                std::to_string(::geteuid()) + " (" + e.what() + ")");
                log_debug("create " + o.id + ": no cgroup (" + e.what() + "): unprivileged, no limits asked for");
                cgroup.reset();
                rec.cgroup_path.clear();
                dir.save(rec);
            }
        }
        // In a VM, linux.resources apply inside the guest (and size the VM): on the
        // host cgroup, which holds QEMU, a memory limit would OOM-kill the VM itself.
        if (cgroup && !in_vm) cgroup->apply(resources);
        if (cgroup && !cgroup->pending_device_rules().empty())
            log_warn("create " + o.id + ": linux.resources.devices is not enforced: " + cgroup_path +
                     " is not on a cgroup2 mount");
        // A container's init enters its cgroup without an attach where it can
        // (Manager::open_entry: born in it on v2, moving itself on v1); a VM monitor
        // is placed by add_process.
        cgroups::Manager::Entry entry;
        if (cgroup && !in_vm) entry = cgroup->open_entry();
        UniqueFd cgroup_fd(cgroup && in_vm ? cgroup->open_v2_dir_fd() : entry.clone_into.release());
        cgroup_time += std::chrono::steady_clock::now() - t_cgroup;

        ns::InitOptions io;
        io.rootfs = rootfs;
        io.no_pivot = o.no_pivot;
        io.preserve_fds = o.preserve_fds;
        io.want_pty_master = want_pty && cfg.process->terminal;
        io.cgroup_fd = cgroup_fd.get();
        for (const auto& [fd, path] : entry.self_join) io.cgroup_self_join.emplace_back(fd.get(), path);
        if (cgroup) io.cgroup_path = cgroup->path();
        if (!o.no_new_keyring) io.session_keyring = "_ses." + o.id;
        if (park) {
            io.exec_fifo = dir.fifo_path();
            if (::mkfifo(io.exec_fifo.c_str(), 0600) < 0) throw_errno("mkfifo " + io.exec_fifo);
            // A VM monitor holds exec.fifo as an init would, but reports nothing.
            if (!in_vm) {
                io.report_fifo = dir.report_fifo_path();
                if (::mkfifo(io.report_fifo.c_str(), 0600) < 0) throw_errno("mkfifo " + io.report_fifo);
            }
        }
        UniqueFd console;
        if (!o.console_socket.empty()) {
            console = connect_console_socket(o.console_socket);
            io.console_socket = console.get();
        }
        UniqueFd listener = connect_seccomp_listener(cfg);
        if (listener) {
            io.seccomp_listener = listener.get();
            // The init's filter is loaded as the container starts, as runc reports it.
            oci::State st = rec.state;
            st.status = oci::Status::creating;
            io.seccomp_state = seccomp_state_for(cfg, st, true);
        }
        const oci::Hooks no_hooks;
        const oci::Hooks& hooks = cfg.hooks ? *cfg.hooks : no_hooks;
        ns::ParentSteps ps;
        ps.place_in_cgroup = [&](pid_t pid) {
            if (cgroup) cgroup->add_process(pid);
        };
        ps.create_runtime = [&](pid_t pid) {
            std::string st = hook_state(rec, oci::Status::creating, pid);
            run_hooks(hooks.prestart, st, "prestart");
            run_hooks(hooks.create_runtime, st, "createRuntime");
        };
        ns::ChildSteps cs;
        if (!hooks.create_container.empty())
            cs.create_container = [&](pid_t pid) {
                run_hooks(hooks.create_container, hook_state(rec, oci::Status::creating, pid), "createContainer");
            };
        if (!hooks.start_container.empty())
            cs.start_container = [&](pid_t pid) {
                run_hooks(hooks.start_container, hook_state(rec, oci::Status::created, pid), "startContainer");
            };
        if (in_vm) {
            // prestart and createRuntime run on the host with the guest's container made
            // and its workload not yet started: even `run` parks it on exec.fifo for them.
            bool host_hooks = !hooks.prestart.empty() || !hooks.create_runtime.empty();
            if (host_hooks && !park) {
                io.exec_fifo = dir.fifo_path();
                if (::mkfifo(io.exec_fifo.c_str(), 0600) < 0) throw_errno("mkfifo " + io.exec_fifo);
            }
            vm::Launch vl;
            vl.id = o.id;
            vl.state_dir = dir.path();
            vl.config = std::move(guest->text);
            vl.shares = std::move(guest->shares);
            vl.mount_points = std::move(guest->mount_points);
            char real[PATH_MAX];
            if (!::realpath(rootfs.c_str(), real)) throw_errno("root.path " + rootfs);
            vl.rootfs = real;
            vl.rootfs_readonly = cfg.root->readonly;
            vl.exec_fifo = io.exec_fifo;
            vl.settings = *vm_settings;
            vl.adopted = adopted;
            vl.place_in_cgroup = [&](pid_t pid) {
                if (cgroup) cgroup->add_process(pid);
            };
            std::optional<vm::HostPty> pty;
            if (cfg.process->terminal) {
                pty = vm::open_host_pty(*cfg.process);
                vl.terminal = pty->slave.get();
            }
            sp = vm::spawn(vl);
            // The guest's channel and the VM's lifeline are the monitor's alone.
            vl.adopted.reset();
            adopted.reset();
            if (host_hooks) {
                try {
                    ps.create_runtime(sp.pid);
                    if (!park) release_exec_fifo(io.exec_fifo, sp.pidfd.get());
                } catch (...) {
                    // The monitor takes QEMU with it (PR_SET_PDEATHSIG).
                    ns::detail::pidfd_send_signal(sp.pidfd.get(), SIGKILL);
                    while (::waitpid(sp.pid, nullptr, 0) < 0 && errno == EINTR) {
                    }
                    throw;
                }
            }
            if (pty) {
                // As a container init does: the master goes to the console socket, or to
                // `run`, which proxies it.
                if (console) ns::send_fd(console.get(), pty->master.get(), "console");
                if (io.want_pty_master) sp.pty_master = std::move(pty->master);
            }
        } else {
            sp = ns::spawn_init(cfg, io, ps, cs);
        }
        sp.timings.add(ns::Phase::state, state_time);
        sp.timings.add(ns::Phase::lease, lease_time);
        sp.timings.add(ns::Phase::cgroup, cgroup_time);
        rec.state.pid = sp.pid;
        rec.pid_start = ns::process_start_time(sp.pid);
        if (cgroup) rec.cgroup_path = cgroup->path();  // systemd's ControlGroup for a unit
        rec.state.status = oci::Status::created;
        dir.save(rec);
        if (!o.pid_file.empty()) write_pid_file(o.pid_file, sp.pid);
        log_debug("create " + o.id + ": pid " + std::to_string(sp.pid) + " phases: " + sp.timings.report());
        return Launched{std::move(dir), std::move(rec), std::move(cfg), std::move(sp)};
    } catch (...) {
        // A failed spawn_init has killed and reaped the init (vm::spawn its monitor and
        // QEMU). A failure after it (the state, the pid file) leaves an init that would
        // keep its cgroup busy and, as pid 1 of its namespace, ignore the SIGTERM a
        // stopping systemd unit sends: it is killed here.
        if (sp.pidfd) {
            ns::detail::pidfd_send_signal(sp.pidfd.get(), SIGKILL);
            while (::waitpid(sp.pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
        if (vm_lease) {
            // A lent VM: its lifeline closes (the pool VM's monitor kills QEMU), and
            // whatever is still in its cgroup goes with the cgroup and its directory.
            adopted.reset();
            try {
                // Failed before it was opened here: the VM's cgroup is this container's all the same.
                if (!cgroup) cgroup = cgroups::open(vm_lease->cgroup, mode);
                cgroup->kill_all(SIGKILL);
                for (int i = 0; i < 1000 && !cgroup->pids().empty(); ++i) ::usleep(2000);
            } catch (const Error& e2) {
                log_warn(e2.what());
            }
            std::error_code ec;
            std::filesystem::remove_all(vm_lease->vm_dir, ec);
        }
        try {
            if (cgroup && !cgroup_existed) cgroup->destroy();
        } catch (const Error& e2) {
            log_warn(e2.what());
        }
        try {
            dir.remove();
        } catch (const Error& e2) {
            log_warn(e2.what());
        }
        throw;
    }
}

}  // namespace

Launched launch(const GlobalOptions& g, const CreateOptions& o, bool park, bool want_pty) {
    try {
        return launch_unwrapped(g, o, park, want_pty);
    } catch (const Error& e) {
        throw e.wrapped("create " + o.id);
    }
}

}  // namespace tarn::runtime::detail

namespace tarn::runtime {

int create(const GlobalOptions& g, const CreateOptions& o) {
    detail::launch(g, o, /*park=*/true, /*want_pty=*/false);
    return 0;
}

}  // namespace tarn::runtime
