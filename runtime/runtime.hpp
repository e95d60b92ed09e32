// The container lifecycle, runc-compatible: one function per command. The CLI
// (runtime/cli.cpp) parses flags into these option structs and calls exactly one.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "oci/oci.hpp"

namespace tarn::runtime {

enum class LogFormat { text, json };

struct GlobalOptions {
    std::string root = "/run/tarn";
    std::string log;  // empty: stderr only
    LogFormat log_format = LogFormat::text;
    bool debug = false;
    bool systemd_cgroup = false;
    std::optional<bool> rootless;  // unset: auto (euid != 0)
    // VM isolation mode (runtime/vm/): "vm" or "container"; empty: the bundle's
    // tarn.isolation annotation or the VM config file decides.
    std::string isolation;
    std::string vm_kernel, vm_initrd;  // override the annotation and the config file
    std::string vm_config;             // empty: /etc/tarn/vm.json (optional)
    std::string vm_accel;              // auto|kvm|tcg; empty: the annotation or the config file decides
};

struct CreateOptions {
    std::string id;
    std::string bundle = ".";
    std::string pid_file;
    std::string console_socket;
    bool no_pivot = false;
    bool no_new_keyring = false;
    unsigned preserve_fds = 0;
};

struct RunOptions : CreateOptions {
    bool detach = false;
    bool keep = false;
};

struct ExecOptions {
    std::string id;
    std::string process_file;             // --process
    std::vector<std::string> args;        // flag form
    bool tty = false;
    bool detach = false;
    std::string pid_file;
    std::string console_socket;
    std::string cwd;
    std::vector<std::string> env;
    std::optional<std::string> user;      // "UID[:GID]"
    std::vector<uint32_t> additional_gids;
    std::vector<std::string> caps;
    bool no_new_privs = false;
    unsigned preserve_fds = 0;
};

struct KillOptions {
    std::string id;
    std::string signal = "SIGTERM";
    bool all = false;
};

struct UpdateOptions {
    std::string id;
    std::string resources;  // --resources FILE, "-" for stdin: a linux.resources JSON object
    // runc's flags; memory sizes take k/m/g suffixes.
    std::optional<std::string> memory, memory_swap, memory_reservation;
    std::optional<int64_t> cpu_quota, cpu_rt_runtime;
    std::optional<uint64_t> cpu_period, cpu_share, cpu_rt_period;
    std::optional<std::string> cpuset_cpus, cpuset_mems;
    std::optional<int64_t> pids_limit;
    std::optional<uint16_t> blkio_weight;
};

// Each returns the process exit code the CLI should exit with; errors are thrown as
// tarn::Error with the message users see.
int create(const GlobalOptions& g, const CreateOptions& o);
int start(const GlobalOptions& g, const std::string& id);
int run(const GlobalOptions& g, const RunOptions& o);
int state(const GlobalOptions& g, const std::string& id);
int kill(const GlobalOptions& g, const KillOptions& o);
int remove(const GlobalOptions& g, const std::string& id, bool force);
int list(const GlobalOptions& g, const std::string& format, bool quiet);
int ps(const GlobalOptions& g, const std::string& id, const std::string& format, const std::vector<std::string>& ps_args);
int exec(const GlobalOptions& g, const ExecOptions& o);
int pause(const GlobalOptions& g, const std::string& id);
int resume(const GlobalOptions& g, const std::string& id);
int update(const GlobalOptions& g, const UpdateOptions& o);
// `events`: OOM and stats events as JSON lines until the container stops; with
// `stats_once`, one stats document.
int events(const GlobalOptions& g, const std::string& id, bool stats_once, const std::string& interval);
int spec(const std::string& bundle, bool rootless);
int features(const GlobalOptions& g);
// `vm setup`: writes <dir>/vmlinux and <dir>/initrd.cpio (tarn-agent + modules) from
// a kernel directory as tests/guest/prepare.sh leaves it (vmlinux, modules/order).
struct VmSetupOptions {
    std::string dir;         // default /var/lib/tarn/vm
    std::string from;        // kernel directory; empty: run the fetch script into <dir>/kernel
    std::string agent;       // default: tarn-agent beside this binary
};
int vm_setup(const GlobalOptions& g, const VmSetupOptions& o);
std::string version_text();

// Re-execs tarn (same argv and environment) from a copy no container can write to,
// unless it already runs from one (runtime/sealed_exe.cpp, the CVE-2019-5736 class).
void reexec_sealed(char** argv);
// "512m", "1G", "1024" -> bytes; "-1" stays -1 (unlimited), as runc's flags take it.
// Errors name the flag.
int64_t parse_bytes(const std::string& s, const char* flag);

// Parses "SIGKILL", "KILL", "kill" or "9"; errors name the bad value.
int parse_signal(const std::string& s);

// Logging (runtime/log.cpp): text to stderr, or --log file in text/json. containerd reads
// the last "level":"error" line of the json log as the message its users see.
void log_setup(const GlobalOptions& g);
void log_debug(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);
bool log_debug_enabled();
// The --log file's descriptor, -1 without one (processes that outlive the command keep it).
int log_file_fd();

}  // namespace tarn::runtime
