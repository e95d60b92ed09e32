// The tarn command line: parse flags, call one runtime function, print.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <cctype>
#include <iostream>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/pool.hpp"
#include "runtime/runtime.hpp"

namespace rt = tarn::runtime;

namespace {

void add_create_flags(CLI::App* c, rt::CreateOptions& o, rt::GlobalOptions& g) {
    c->add_option("--isolation", g.isolation, "container (default) or vm")->check(CLI::IsMember({"container", "vm"}));
    c->add_option("-b,--bundle", o.bundle, "path to the bundle directory");
    c->add_option("--pid-file", o.pid_file, "write the init's pid to this file");
    c->add_option("--console-socket", o.console_socket, "unix socket to send the pty master to");
    c->add_flag("--no-pivot", o.no_pivot, "chroot instead of pivot_root");
    c->add_flag("--no-new-keyring", o.no_new_keyring, "keep the caller's session keyring");
    c->add_option("--preserve-fds", o.preserve_fds, "pass this many fds after stdio");
    c->add_option("id", o.id, "container id")->required();
}

// The subcommand: the first argument that is neither an option nor the value of one.
// `takes_value` says which options do. Empty when unsure (the parser then decides).
template <typename TakesValue>
std::string_view subcommand_of(int argc, char** argv, TakesValue takes_value) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--") return {};
        if (a.empty() || a[0] != '-') return a;
        if (a.find('=') != std::string_view::npos) continue;
        if (a == "--rootless") {
            // An optional value: taken only when it is one of these.
            if (i + 1 < argc && (std::string_view(argv[i + 1]) == "true" || std::string_view(argv[i + 1]) == "false" ||
                                 std::string_view(argv[i + 1]) == "auto"))
                ++i;
        } else if (takes_value(a)) {
            ++i;
        }
    }
    return {};
}

// Before the parser exists: the global options that take a value, by name.
std::string_view subcommand_before_parser(int argc, char** argv) {
    return subcommand_of(argc, argv, [](std::string_view a) {
        for (std::string_view o : {"--root", "--log", "--log-format", "--criu", "--isolation", "--vm-kernel",
                                   "--vm-initrd", "--vm-config", "--vm-accel"})
            if (a == o) return true;
        return false;
    });
}

// `tarn pool run`: the flags, and the call once parsed.
struct PoolRun {
    tarn::pool::RunRequest req;
    std::string memory;
    int64_t pids = 0;
    std::vector<std::string> command;

    int call(const std::string& socket) {
        req.args = command;
        if (!memory.empty()) req.memory = rt::parse_bytes(memory, "--memory");
        if (pids) req.pids = pids;
        return tarn::pool::run_command(socket, req);
    }
};

CLI::App* add_pool_run(CLI::App* pool, PoolRun& o, std::string& socket) {
    CLI::App* r = pool->add_subcommand("run", "run a command in a sandbox from a pool");
    r->add_option("--socket", socket, "the daemon's socket")->capture_default_str();
    r->add_option("-e,--env", o.req.env, "environment variable K=V")->allow_extra_args(false);
    r->add_option("--cwd", o.req.cwd, "working directory");
    r->add_option("--memory", o.memory, "this sandbox's memory limit (k/m/g suffixes)");
    r->add_option("--pids", o.pids, "this sandbox's pids limit");
    r->add_option("--bind", o.req.binds, "bind mount SOURCE:DESTINATION[:ro]")->allow_extra_args(false);
    r->add_option("--wait", o.req.wait_ms, "ms to wait for a free sandbox when the pool is full")->capture_default_str();
    r->add_option("pool", o.req.pool, "pool name")->required();
    r->add_option("command", o.command, "command and arguments (after --)")->required();
    return r;
}

// `tarn pool run ...` is the warm pool's hot path: its parser is built alone, not
// with every other command's (which costs more than the rest of the client).
int pool_run_main(int argc, char** argv) {
    CLI::App app{"tarn: an OCI container runtime"};
    CLI::App* pool = app.add_subcommand("pool", "the warm pool of pre-created sandboxes");
    std::string socket = tarn::pool::kDefaultSocket;
    PoolRun o;
    add_pool_run(pool, o, socket);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::cerr << "tarn: " << e.what() << "\nRun 'tarn pool run --help' for usage.\n";
        return 1;
    }
    try {
        rt::log_setup(rt::GlobalOptions{});
        return o.call(socket);
    } catch (const std::exception& e) {
        rt::log_error(e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    // Re-exec from the sealed binary before anything else: building the parser twice
    // would double its cost. A failure here is reported after parsing (with --log).
    std::string_view early = subcommand_before_parser(argc, argv);
    if (early == "create" || early == "run" || early == "exec") {
        try {
            rt::reexec_sealed(argv);
        } catch (const std::exception&) {
        }
    }
    if (argc > 2 && std::string_view(argv[1]) == "pool" && std::string_view(argv[2]) == "run")
        return pool_run_main(argc, argv);
    CLI::App app{"tarn: an OCI container runtime"};
    app.set_version_flag("-v,--version", [] { return rt::version_text(); });
    app.require_subcommand(1);
    rt::GlobalOptions g;
    std::string log_format = "text";
    bool rootless_flag = false;
    std::string rootless_value;
    CLI::Option* root_opt =
        app.add_option("--root", g.root, "directory for container state (unprivileged: $XDG_RUNTIME_DIR/tarn)")
            ->capture_default_str();
    app.add_option("--log", g.log, "log file (default: stderr)");
    app.add_option("--log-format", log_format, "text or json")->check(CLI::IsMember({"text", "json"}));
    app.add_flag("--debug", g.debug, "log debug messages, including setup phase timings");
    app.add_flag("--systemd-cgroup", g.systemd_cgroup, "use systemd for cgroups (cgroupsPath slice:prefix:name)");
    CLI::Option* rootless_opt =
        app.add_option("--rootless", rootless_value, "true, false or auto (unprivileged caller)")->expected(0, 1);
    (void)rootless_flag;
    app.add_option("--criu", "ignored, for runc compatibility");
    app.add_option("--isolation", g.isolation, "container (default) or vm: run the bundle in a QEMU microVM")
        ->check(CLI::IsMember({"container", "vm"}));
    app.add_option("--vm-kernel", g.vm_kernel, "vm mode: guest kernel (uncompressed vmlinux)");
    app.add_option("--vm-initrd", g.vm_initrd, "vm mode: initramfs holding tarn-agent");
    app.add_option("--vm-config", g.vm_config, "vm mode: settings file (default /etc/tarn/vm.json)");
    app.add_option("--vm-accel", g.vm_accel, "vm mode: accelerator, auto (KVM where it can run the guest), kvm or tcg")
        ->check(CLI::IsMember({"auto", "kvm", "tcg"}));

    // Only the chosen command's flags are built (all of them when the command is not
    // known yet, for --help and errors): building every command's costs a cold start
    // about a millisecond and forty page faults.
    constexpr std::string_view kCommands[] = {"create", "start", "run",    "state",  "kill",     "delete",
                                              "list",   "ls",    "ps",     "exec",   "pause",    "resume",
                                              "update", "events", "spec",  "features", "vm",     "pool"};
    // The global options are defined by now: the parser itself says which take a value.
    std::string_view command = subcommand_of(argc, argv, [&app](std::string_view a) {
        for (const CLI::Option* opt : app.get_options())
            if (opt->check_name(std::string(a))) return opt->get_expected_min() > 0;
        return false;
    });
    bool known = std::find(std::begin(kCommands), std::end(kCommands), command) != std::end(kCommands);
    auto want = [&](std::string_view name) {
        return !known || command == name || (name == "list" && command == "ls");
    };

    rt::CreateOptions create_o;
    CLI::App* create = app.add_subcommand("create", "create a container from a bundle; it waits for start");
    if (want("create")) add_create_flags(create, create_o, g);

    std::string start_id;
    CLI::App* start = app.add_subcommand("start", "start the workload of a created container");
    if (want("start")) start->add_option("id", start_id, "container id")->required();

    rt::RunOptions run_o;
    CLI::App* run = app.add_subcommand("run", "create and start a container in the foreground");
    if (want("run")) {
        add_create_flags(run, run_o, g);
        run->add_flag("-d,--detach", run_o.detach, "do not wait for the container");
        run->add_flag("--keep", run_o.keep, "keep the container's state after it exits");
    }

    std::string state_id;
    CLI::App* state = app.add_subcommand("state", "print the state of a container as JSON");
    if (want("state")) state->add_option("id", state_id, "container id")->required();

    rt::KillOptions kill_o;
    CLI::App* kill = app.add_subcommand("kill", "send a signal to a container's init");
    if (want("kill")) {
        kill->add_flag("-a,--all", kill_o.all, "signal every process of the container");
        kill->add_option("id", kill_o.id, "container id")->required();
        kill->add_option("signal", kill_o.signal, "signal name or number (default SIGTERM)");
    }

    std::string delete_id;
    bool delete_force = false;
    CLI::App* del = app.add_subcommand("delete", "delete a container and everything it holds");
    if (want("delete")) {
        del->add_flag("-f,--force", delete_force, "kill it first if it runs");
        del->add_option("id", delete_id, "container id")->required();
    }

    std::string list_format = "table";
    bool list_quiet = false;
    CLI::App* list = app.add_subcommand("list", "list containers");
    list->alias("ls");
    if (want("list")) {
        list->add_option("-f,--format", list_format, "table or json");
        list->add_flag("-q,--quiet", list_quiet, "print ids only");
    }

    std::string ps_format = "table";
    std::string ps_id;
    std::vector<std::string> ps_args;
    CLI::App* ps = app.add_subcommand("ps", "list the processes of a container");
    if (want("ps")) {
        ps->add_option("-f,--format", ps_format, "table or json");
        ps->add_option("id", ps_id, "container id")->required();
        ps->add_option("ps-args", ps_args, "arguments for ps(1)");
    }

    rt::ExecOptions exec_o;
    std::string exec_user;
    std::vector<std::string> exec_rest;
    CLI::App* exec = app.add_subcommand("exec", "run a new process inside a container");
    if (want("exec")) {
        exec->add_option("-p,--process", exec_o.process_file, "process.json to run");
        exec->add_flag("-t,--tty", exec_o.tty, "allocate a pty");
        exec->add_flag("-d,--detach", exec_o.detach, "do not wait for the process");
        exec->add_option("--pid-file", exec_o.pid_file, "write the process's pid to this file");
        exec->add_option("--console-socket", exec_o.console_socket, "unix socket to send the pty master to");
        exec->add_option("--cwd", exec_o.cwd, "working directory");
        exec->add_option("-e,--env", exec_o.env, "environment variable K=V")->allow_extra_args(false);
        exec->add_option("-u,--user", exec_user, "UID[:GID]");
        exec->add_option("-g,--additional-gids", exec_o.additional_gids, "additional gids")->allow_extra_args(false);
        exec->add_option("-c,--cap", exec_o.caps, "add a capability")->allow_extra_args(false);
        exec->add_flag("--no-new-privs", exec_o.no_new_privs, "set no_new_privs");
        exec->add_option("--preserve-fds", exec_o.preserve_fds, "pass this many fds after stdio");
        exec->add_option("--process-label,--apparmor", "accepted for runc compatibility");
        // Everything after the id is the command, flags included: `exec ID sh -c 'x'`.
        exec->prefix_command();
    }

    std::string pause_id, resume_id;
    CLI::App* pause = app.add_subcommand("pause", "freeze every process of a container");
    if (want("pause")) pause->add_option("id", pause_id, "container id")->required();
    CLI::App* resume = app.add_subcommand("resume", "thaw a paused container");
    if (want("resume")) resume->add_option("id", resume_id, "container id")->required();

    rt::UpdateOptions update_o;
    CLI::App* update = app.add_subcommand("update", "change a container's resource limits");
    if (want("update")) {
        update->add_option("-r,--resources", update_o.resources, "linux.resources JSON file, - for stdin");
        update->add_option("--memory", update_o.memory, "memory limit (k/m/g suffixes)");
        update->add_option("--memory-swap", update_o.memory_swap, "memory+swap limit");
        update->add_option("--memory-reservation", update_o.memory_reservation, "memory soft limit");
        update->add_option("--cpu-quota", update_o.cpu_quota, "CFS quota in microseconds");
        update->add_option("--cpu-period", update_o.cpu_period, "CFS period in microseconds");
        update->add_option("--cpu-share", update_o.cpu_share, "CPU shares (relative weight)");
        update->add_option("--cpu-rt-runtime", update_o.cpu_rt_runtime, "realtime runtime in microseconds");
        update->add_option("--cpu-rt-period", update_o.cpu_rt_period, "realtime period in microseconds");
        update->add_option("--cpuset-cpus", update_o.cpuset_cpus, "CPUs to allow");
        update->add_option("--cpuset-mems", update_o.cpuset_mems, "memory nodes to allow");
        update->add_option("--pids-limit", update_o.pids_limit, "maximum number of processes");
        update->add_option("--blkio-weight", update_o.blkio_weight, "block IO weight (10-1000)");
        update->add_option("id", update_o.id, "container id")->required();
    }

    std::string events_id, events_interval = "5s";
    bool events_stats = false;
    CLI::App* events = app.add_subcommand("events", "stream OOM and stats events as JSON lines");
    if (want("events")) {
        events->add_flag("--stats", events_stats, "print one stats document and exit");
        events->add_option("--interval", events_interval, "stats interval (e.g. 5s, 500ms)");
        events->add_option("id", events_id, "container id")->required();
    }

    std::string spec_bundle = ".";
    bool spec_rootless = false;
    CLI::App* spec = app.add_subcommand("spec", "write a default config.json");
    if (want("spec")) {
        spec->add_option("-b,--bundle", spec_bundle, "where to write config.json");
        spec->add_flag("--rootless", spec_rootless, "a config for an unprivileged user");
    }

    CLI::App* features = app.add_subcommand("features", "print what this runtime supports, as JSON");

    rt::VmSetupOptions vm_setup_o;
    CLI::App* vm = app.add_subcommand("vm", "VM isolation mode");
    vm->require_subcommand(1);
    CLI::App* vm_setup = vm->add_subcommand("setup", "prepare the guest kernel and the initramfs with tarn-agent");
    if (want("vm")) {
        vm_setup->add_option("--dir", vm_setup_o.dir, "where to write vmlinux and initrd.cpio (default /var/lib/tarn/vm)");
        vm_setup->add_option("--from", vm_setup_o.from, "kernel directory (vmlinux, modules/order); default: fetch Debian's");
        vm_setup->add_option("--agent", vm_setup_o.agent, "tarn-agent binary (default: beside tarn)");
    }
    // ---- the warm pool
    CLI::App* pool = app.add_subcommand("pool", "the warm pool of pre-created sandboxes");
    pool->require_subcommand(1);
    std::string pool_socket = tarn::pool::kDefaultSocket;
    std::string serve_config, serve_bundle, serve_name = "default", serve_memory, serve_sizing = "adaptive",
                serve_metrics;
    tarn::pool::PoolSpec serve_spec;
    int64_t serve_pids = 0;
    CLI::App* pool_serve = pool->add_subcommand("serve", "run the pool daemon");
    if (want("pool")) {
        pool_serve->add_option("--socket", pool_socket, "unix socket to serve")->capture_default_str();
        pool_serve->add_option("-c,--config", serve_config, "daemon configuration file (JSON)");
        pool_serve->add_option("--bundle", serve_bundle, "one pool from this template bundle (without --config)");
        pool_serve->add_option("--name", serve_name, "that pool's name")->capture_default_str();
        pool_serve->add_option("--min-idle", serve_spec.min_idle, "sandboxes kept ready")->capture_default_str();
        pool_serve->add_option("--max-total", serve_spec.max_total, "most sandboxes at once")->capture_default_str();
        pool_serve->add_option("--memory", serve_memory, "the pool's memory budget (k/m/g suffixes)");
        pool_serve->add_option("--pids", serve_pids, "the pool's pids budget");
        pool_serve->add_option("--vm-refill", serve_spec.vm_refill,
                               "a VM pool's VMs: restore (from a snapshot, the default) or boot")
            ->check(CLI::IsMember({"restore", "boot"}));
        pool_serve->add_option("--sizing", serve_sizing, "idle target: fixed (--min-idle) or adaptive (follows demand)")
            ->check(CLI::IsMember({"fixed", "adaptive"}))
            ->capture_default_str();
        pool_serve->add_option("--max-idle", serve_spec.max_idle, "adaptive: most sandboxes kept idle (default --max-total)");
        pool_serve->add_option("--headroom", serve_spec.headroom, "adaptive: idle target = claims/s x make time x this")
            ->capture_default_str();
        pool_serve->add_option("--rate-window-ms", serve_spec.rate_window_ms, "adaptive: time constant of the claim rate")
            ->capture_default_str();
        pool_serve->add_option("--decay-ms", serve_spec.decay_ms, "adaptive: time constant of the idle target's shrink")
            ->capture_default_str();
        pool_serve->add_flag(
            "!--no-reuse-cgroups", serve_spec.reuse_cgroups,
            "remove every used sandbox's cgroup instead of resetting it for the next sandbox");
        pool_serve->add_option("--metrics", serve_metrics,
                               "serve Prometheus metrics on unix:PATH or IPV4:PORT (default: off)");
    }

    PoolRun pool_run_o;
    CLI::App* pool_run = want("pool") ? add_pool_run(pool, pool_run_o, pool_socket)
                                      : pool->add_subcommand("run", "run a command in a sandbox from a pool");

    std::string status_pool;
    bool status_json = false;
    CLI::App* pool_status = pool->add_subcommand("status", "print each pool's size, use and latencies");
    if (want("pool")) {
        pool_status->add_option("--socket", pool_socket, "the daemon's socket")->capture_default_str();
        pool_status->add_flag("--json", status_json, "as JSON");
        pool_status->add_option("pool", status_pool, "only this pool");
    }

    bool stop_now = false;
    CLI::App* pool_stop = pool->add_subcommand("stop", "stop the daemon after running sandboxes finish");
    if (want("pool")) {
        pool_stop->add_option("--socket", pool_socket, "the daemon's socket")->capture_default_str();
        pool_stop->add_flag("--now", stop_now, "kill running sandboxes instead of waiting");
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        std::cerr << "tarn: " << e.what() << "\nRun 'tarn --help' for usage.\n";
        return 1;
    }

    g.log_format = log_format == "json" ? rt::LogFormat::json : rt::LogFormat::text;
    if (rootless_opt->count() > 0 && rootless_value != "auto") {
        if (!rootless_value.empty() && rootless_value != "true" && rootless_value != "false") {
            std::cerr << "tarn: --rootless: expected true, false or auto, got \"" << rootless_value << "\"\n";
            return 1;
        }
        g.rootless = rootless_value != "false";
    }
    // An unprivileged caller cannot write /run; its state goes where its session's
    // runtime files go (pam_systemd's /run/user/<uid>), as runc's does.
    // Root of a user namespace (rootless podman runs the runtime there) counts as that
    // user too, unless it says it is root.
    if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); root_opt->count() == 0 && xdg && *xdg) {
        const char* user = std::getenv("USER");
        if (::geteuid() != 0 || ((!user || std::string_view(user) != "root") && tarn::ns::in_user_namespace()))
            g.root = std::string(xdg) + "/tarn";
    }
    try {
        rt::log_setup(g);
        // The commands whose processes enter a container run from a sealed copy of tarn.
        // The pool daemon too: its sandboxes are clones of it, parked inside namespaces.
        if (*create || *run || *exec || *pool_serve) rt::reexec_sealed(argv);
        if (*create) return rt::create(g, create_o);
        if (*start) return rt::start(g, start_id);
        if (*run) return rt::run(g, run_o);
        if (*state) return rt::state(g, state_id);
        if (*kill) return rt::kill(g, kill_o);
        if (*del) return rt::remove(g, delete_id, delete_force);
        if (*list) return rt::list(g, list_format, list_quiet);
        if (*ps) return rt::ps(g, ps_id, ps_format, ps_args);
        if (*exec) {
            std::vector<std::string> rest = exec->remaining();
            if (!rest.empty() && rest[0] == "--") rest.erase(rest.begin());
            if (rest.empty()) throw tarn::Error("exec: container id required");
            exec_o.id = rest[0];
            for (size_t i = 1; i < rest.size(); ++i)
                if (!(i == 1 && rest[i] == "--")) exec_o.args.push_back(rest[i]);
            if (!exec_user.empty()) exec_o.user = exec_user;
            return rt::exec(g, exec_o);
        }
        if (*pause) return rt::pause(g, pause_id);
        if (*resume) return rt::resume(g, resume_id);
        if (*update) return rt::update(g, update_o);
        if (*events) return rt::events(g, events_id, events_stats, events_interval);
        if (*spec) return rt::spec(spec_bundle, spec_rootless);
        if (*features) return rt::features(g);
        if (*vm_setup) return rt::vm_setup(g, vm_setup_o);
        if (*pool_serve) {
            tarn::pool::DaemonOptions d;
            if (!serve_config.empty()) {
                if (!serve_bundle.empty()) throw tarn::Error("pool serve: --config and --bundle exclude each other");
                d = tarn::pool::load_config(serve_config);
            } else {
                if (serve_bundle.empty()) throw tarn::Error("pool serve: --config FILE or --bundle DIR required");
                serve_spec.name = serve_name;
                serve_spec.bundle = serve_bundle;
                if (!serve_memory.empty()) serve_spec.budget.memory_max = rt::parse_bytes(serve_memory, "--memory");
                if (serve_pids) serve_spec.budget.pids_max = serve_pids;
                if (serve_spec.min_idle > serve_spec.max_total)
                    throw tarn::Error("pool serve: --min-idle is more than --max-total");
                serve_spec.sizing = serve_sizing == "fixed" ? tarn::pool::sizing::Mode::fixed
                                                            : tarn::pool::sizing::Mode::adaptive;
                if (serve_spec.rate_window_ms == 0) throw tarn::Error("pool serve: --rate-window-ms: must be >= 1");
                if (serve_spec.decay_ms == 0) throw tarn::Error("pool serve: --decay-ms: must be >= 1");
                tarn::pool::check_sizing(serve_spec, "pool serve: ", [](const char* field) {
                    std::string flag = "--";
                    for (const char* c = field; *c; ++c) {
                        if (std::isupper(static_cast<unsigned char>(*c))) flag += '-';
                        flag += static_cast<char>(std::tolower(static_cast<unsigned char>(*c)));
                    }
                    return flag;
                });
                d.pools.push_back(serve_spec);
            }
            if (pool_serve->count("--socket")) d.socket = pool_socket;
            if (!serve_metrics.empty()) {
                try {
                    tarn::pool::check_metrics_address(serve_metrics);
                } catch (const tarn::Error& e) {
                    throw tarn::Error(std::string("pool serve: --metrics: ") + e.what());
                }
                d.metrics = serve_metrics;
            }
            d.global = g;
            return tarn::pool::serve_command(d);
        }
        if (*pool_run) return pool_run_o.call(pool_socket);
        if (*pool_status) return tarn::pool::status_command(pool_socket, status_pool, status_json);
        if (*pool_stop) return tarn::pool::stop_command(pool_socket, stop_now);
    } catch (const std::exception& e) {
        rt::log_error(e.what());
        return 1;
    }
    return 1;
}
