// The VM isolation mode, host side: which bundles run in a microVM, the VM's
// settings, the guest's view of the config, QEMU's command line, and the monitor
// process that owns QEMU for the container's life. Internal to runtime/.
//
// The monitor is what `state` sees as the container's pid: it lives exactly as long
// as the workload in the guest, forwards the signals it gets to it, copies stdio
// between its own fds and the guest, and exits with the workload's exit code.
#pragma once

#include <sys/types.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "namespaces/namespaces.hpp"
#include "oci/oci.hpp"
#include "runtime/runtime.hpp"

namespace tarn::runtime::vm {

inline constexpr std::string_view kDefaultConfigFile = "/etc/tarn/vm.json";
inline constexpr std::string_view kDefaultDir = "/var/lib/tarn/vm";

// --isolation, else the tarn.isolation annotation, else the config file's
// "isolation"; "container" unless one of them says "vm". Other values are errors.
bool selected(const GlobalOptions& g, const oci::Config& cfg);

// The accelerator asked for: `auto` (the default) uses KVM only where it can run the
// guest (accel.cpp); `kvm` and `tcg` force one.
enum class Accel { automatic, kvm, tcg };

// "auto", "kvm" or "tcg"; anything else throws naming `what` (the flag, annotation or
// vm.json key it came from).
Accel parse_accel(const std::string& value, const std::string& what);

// What decides whether KVM can run a guest on this host.
struct KvmFacts {
    bool device = false;       // /dev/kvm opens read-write and speaks KVM API 12
    std::string device_error;  // why not, when !device
    // vmx or svm among the CPU's flags: hardware virtualization, native or nested.
    // Without it /dev/kvm is served by a software layer (kvm_pvm: a paravirtual
    // backend for guest kernels built for it) that cannot run an ordinary kernel.
    bool hw_virt = false;
    std::vector<std::string> modules;  // loaded KVM backends: kvm_intel, kvm_amd, kvm_pvm...
    std::string failed_before;         // a remembered failed KVM boot (its reason); empty: none
};

struct AccelChoice {
    bool kvm = false;
    bool fallback = false;  // auto chose KVM: a boot that fails under it is retried under TCG
    std::string reason;     // why, for the debug log, `features` and `vm setup`
};

// The decision alone (unit-tested): forced values are taken as they are; `auto` takes
// KVM when the device works, the CPU has hardware virtualization (unless `hw_check` is
// off: vm.json "kvm_hw_check": false, for a paravirtual KVM running a kernel built for
// it) and no earlier boot with this kernel and QEMU failed under KVM on this host.
AccelChoice choose_accel(Accel want, const KvmFacts& f, bool hw_check = true);

// The facts on this host; `verdict_file`/`verdict_key` name the remembered failure.
KvmFacts kvm_facts(const std::string& verdict_file, const std::string& verdict_key);

// A remembered KVM failure is keyed on the host (kernel release and boot), QEMU and the
// guest kernel (each by path, size and mtime): a change to any of them tries KVM again.
std::string verdict_key(const std::string& qemu, const std::string& kernel);
// Remembers (atomically) that KVM failed to boot the guest for `key`, and why.
void remember_kvm_failure(const std::string& verdict_file, const std::string& key, const std::string& why);
// <root>/vm-accel.json: the state root is per boot (a tmpfs under /run), as a KVM
// module's state is.
std::string verdict_file(const std::string& root);

struct Settings {
    std::string qemu;    // absolute path of qemu-system-x86_64
    std::string kernel;  // uncompressed vmlinux (PVH entry)
    std::string initrd;  // initramfs holding tarn-agent as /init
    bool kvm = false;    // boot under KVM (choose_accel)
    bool kvm_fallback = false;  // a KVM boot that fails before the agent answers is retried under TCG
    std::string accel_reason;   // why KVM or TCG
    std::string verdict_file, verdict_key;  // where a KVM failure found by the fallback is remembered
    unsigned memory_mib = 256;
    unsigned cpus = 1;
    unsigned timeout_seconds = 60;  // boot to agent ready
    unsigned tsc_khz = 0;           // host TSC rate for the guest's early calibration; 0: unknown
    std::string kvm_cpu = "host";   // QEMU's -cpu under KVM (vm.json "kvm_cpu"); TCG emulates qemu64
    // The rootfs goes over virtio-fs when this names virtiofsd, else over virtio-9p
    // (vm.json "share": "auto", the default, picks virtio-fs when virtiofsd is found).
    std::string virtiofsd;
    // More kernel command line, after tarn's own (a pool's snapshot guest: init_on_free).
    std::string extra_append;
};

// The virtiofsd used when vm.json names none: /usr/libexec/virtiofsd (the Rust one:
// Debian 13, Fedora), /usr/lib/qemu/virtiofsd (Debian 12's C one), else virtiofsd on
// PATH; empty if none is there.
std::string default_virtiofsd();

// Flags, then annotations (tarn.vm.kernel, tarn.vm.initrd, tarn.vm.timeout, tarn.vm.accel), then the
// config file (--vm-config, default /etc/tarn/vm.json, optional), then defaults under
// /var/lib/tarn/vm. Memory and vCPUs come from linux.resources. Every file named is
// checked here, so a missing one is an error that names it before anything starts.
Settings resolve(const GlobalOptions& g, const oci::Config& cfg);

// The accelerator `auto` would use for a bundle with no VM annotations, and why (for
// `features` and `vm setup`): "kvm" or "tcg", and a reason.
AccelChoice default_accel(const GlobalOptions& g);

// The pure parts of resolve(), separated for tests.
unsigned memory_mib_for(const oci::Config& cfg, unsigned default_mib);
unsigned cpus_for(const oci::Config& cfg, unsigned default_cpus, unsigned host_cpus);

// A host path a bind mount brings into the guest: one virtio-9p device, which the
// agent mounts at guest_path. 9p shares directories; a file is staged by the monitor
// (monitor.cpp) in a directory of its own, so its siblings stay on the host.
struct Share {
    std::string tag;         // the 9p mount tag: bind0, bind1, ...
    std::string source;      // absolute host path, a directory or a file
    bool file = false;       // source is not a directory
    bool readonly = false;   // the mount has "ro": the device is read-only too
    std::string guest_path;  // /run/tarn/shares/<N>, where the agent mounts the tag
};

// A mount's destination in the rootfs, unless it lies in an earlier mount (/dev/pts
// in /dev's tmpfs): with root.readonly the guest cannot create a missing one, so the
// host does, as a host container's init would before it remounts the root read-only.
struct MountPoint {
    std::string path;
    bool file = false;  // a bind of a file: an empty file to bind onto
};

struct GuestConfig {
    std::string text;                      // the config.json the agent runs
    std::vector<Share> shares;             // one per distinct bind source (and ro-ness)
    std::vector<MountPoint> mount_points;  // in the rootfs, in mount order
};

// microvm has 24 virtio-mmio transports (with its second I/O APIC, on by default) and
// the rootfs takes one: every share beyond that fails create.
inline constexpr size_t kMaxShares = 23;

// The config.json the agent runs, from the bundle's: the root is the shared rootfs at
// /run/tarn/rootfs; each bind mount's source becomes a share (relative sources are
// relative to `bundle`, as in runc) and the mount binds the share's guest path
// instead. Hooks (host programs) are left out. Errors name the mount (a missing
// source, more shares than kMaxShares).
GuestConfig guest_config(const std::string& config_text, const std::string& bundle);

// Where the guest mounts the shared rootfs, and the shares.
inline constexpr std::string_view kGuestRootfs = "/run/tarn/rootfs";
inline constexpr std::string_view kGuestShares = "/run/tarn/shares";

// The devices of one VM: the rootfs over virtio-fs (QEMU's end of virtiofsd's socket
// in virtiofs_fd, the guest memory then a shared memfd, which vhost-user needs) or
// over virtio-9p (virtiofs_fd -1), and one 9p device per share, exporting `dirs[i]`
// (the source, or the directory a file is staged in).
struct Devices {
    int qmp_fd = -1;  // QEMU's end of the QMP socket (events: the guest stopped)
    std::string rootfs;
    bool rootfs_readonly = false;
    int virtiofs_fd = -1;
    std::vector<Share> shares;
    std::vector<std::string> dirs;
    bool incoming = false;  // wait for a snapshot to restore (-incoming defer)
    // A pool VM's staging share (tag "staging"): an empty directory private to its
    // monitor, into which a lease attaches the borrowing bundle's rootfs and bind
    // sources (docs/pool.md, VM pools on the OCI path). Empty: none.
    std::string staging;
    // The guest's memory as a file (a pool's template memory): written through
    // (shared) by the snapshot's QEMU, mapped copy-on-write (private) by each VM
    // restored from it. Empty: anonymous memory.
    std::string memory_file;
    bool memory_shared = false;
};

// `id` names the QEMU process (-name tarn-vm:ID) for ps and for tests.
std::vector<std::string> qemu_argv(const Settings& s, const std::string& id, const Devices& d);

struct Launch {
    std::string id;
    std::string state_dir;                 // qemu.log goes here
    std::string config;                    // guest_config().text
    std::vector<Share> shares;             // guest_config().shares
    std::vector<MountPoint> mount_points;  // guest_config().mount_points
    std::string rootfs;                    // host path shared as the guest's root
    bool rootfs_readonly = false;
    std::string exec_fifo;  // empty: start at once (run)
    Settings settings;
    std::function<void(pid_t)> place_in_cgroup;
    // process.terminal: the slave of a host pty (terminal()), which becomes the
    // monitor's stdio and controlling terminal; -1 without a terminal.
    int terminal = -1;
    // A warm pool's VM (pooled()): the container is parked in the guest until a
    // claim hands it the request.
    bool pooled = false;
    // The guest's root is an overlay of `rootfs` with a tmpfs upper layer, private to
    // this VM: one template root serves many VMs, and each one's writes stay its own.
    bool overlay = false;
    // Snapshots (pool refill by restore, docs/pool.md): with `snapshot_out`, the
    // monitor boots the guest to "ready", has the agent load what a create would,
    // saves the paused VM there and exits (no container); with `restore_from`, QEMU
    // starts from that file instead of booting, and the agent is reseeded. Both need
    // the same command line, hence the 9p root (vhost-user-fs cannot migrate).
    std::string snapshot_out, restore_from;
    // With either: the template guest's memory lives in this file, not in the
    // snapshot (QEMU's x-ignore-shared), and restored VMs share its pages until they
    // write them (docs/pool.md, Idle cost).
    std::string memory_file;
    // A leased pool VM (docs/pool.md, VM pools on the OCI path): the guest is up and
    // its QEMU is the pool monitor's child. This monitor adopts the guest's channel
    // and stands for the container; QEMU is not started, and the root and the bind
    // sources are already attached to the VM's staging share.
    struct Adopted {
        UniqueFd serial, qmp, qemu_pidfd;  // the agent's line, QMP, QEMU (not our child)
        UniqueFd lifeline;                 // held for the VM's life: its close powers the VM off
        std::string qemu_log;              // QEMU's log, in the pool VM's directory
    };
    std::shared_ptr<Adopted> adopted;
};

// process.terminal in a VM: the workload's pty is in the guest, and the caller gets the
// master of a host pty whose slave the monitor relays to and from it (and whose window
// size it forwards). Sized from process.consoleSize.
struct HostPty {
    UniqueFd master, slave;
};
HostPty open_host_pty(const oci::Process& p);

// Forks the monitor, which starts QEMU, waits for the agent and has it create the
// container; returns when the workload is parked (or running, without exec_fifo).
// On failure the monitor and QEMU are gone and the error says what failed.
ns::Spawned spawn(const Launch& l);

// A warm pool's VM: the monitor (a child of the caller, killed with it) boots the
// guest and has the agent park the container, then waits on `ctl` for a claim.
//
// On `ctl` (SOCK_SEQPACKET), monitor → caller: "ok TIMINGS" once parked, or
// "error WHY"; after a claim, "started" or "error WHY"; when the workload has exited,
// "exit {"code":N,"signal":S}" (then the monitor exits with the shell's status).
// Caller → monitor: one claim, {"args":[...],"env":[...],"cwd":C,"memory":M,"pids":P}
// with the workload's stdin, stdout and stderr as SCM_RIGHTS. EOF on `ctl` while the
// VM waits makes the monitor power it off and exit.
struct PooledVm {
    pid_t pid = -1;
    UniqueFd pidfd, ctl;
};
// Returns at once, with the monitor booting; `l.place_in_cgroup` has placed it.
PooledVm start_pooled(const Launch& l);
// `ctl` is readable while the VM boots: "" once it is parked (timings, for the log,
// in `timings`), else why it failed (the monitor is exiting).
std::string pooled_ready(int ctl, std::string& timings);
// Hands a claim to a parked VM. False when the monitor is gone.
bool claim_pooled(int ctl, const nlohmann::json& request, const std::array<int, 3>& stdio);
// After a claim, `ctl` is readable: "" when the workload runs, else why not; `lost`
// tells a VM that died under the claim (another VM can serve it) from a request the
// guest refused.
std::string pooled_outcome(int ctl, bool& lost);

// What a pool VM fixes at boot and a borrowing bundle must match: QEMU, kernel,
// initrd, accelerator, memory and vCPUs. The container in the guest is made from the
// bundle's own config, so nothing else of it has to match the template's.
nlohmann::json lease_key(const Settings& s);

// The borrower's side of a pool VM's lease (the pool daemon passed it `peer`, a
// socket to the VM's monitor): the bundle's rootfs and bind sources are cloned as
// detached mount trees (read-only where the config says so) and sent to the monitor,
// which attaches them to the VM's staging share and has the agent discard the
// template's parked container. Fills the Adopted part of a Launch (lifeline = peer).
// Throws naming what failed; the monitor then powers the VM off.
std::shared_ptr<Launch::Adopted> attach_to_pool_vm(UniqueFd peer, const std::string& rootfs, bool rootfs_readonly,
                                                    const std::vector<Share>& shares,
                                                    const std::vector<MountPoint>& mount_points);

// The monitor's socket, in the state dir: `exec` talks to the guest through it.
inline constexpr std::string_view kMonitorSocket = "monitor.sock";

// `exec` in a VM-mode container: the process runs in the guest, started by the agent
// with the namespaces library's spawn_exec; this process stands for it on the host
// (stdio, signals, exit code). With `detach`, a forked child does, and its pid goes to
// `pid_file`. With a terminal and a connected `console` socket, the master of a host
// pty goes to that socket and a forked child relays between the pty's slave and the
// guest's pty. Returns the exit code (0 when detached).
int exec(const std::string& state_dir, const std::string& id, const oci::Process& process, bool detach,
         const std::string& pid_file, int console = -1);

// `kill --all` with a signal other than SIGKILL (which the monitor's death delivers):
// the agent sends it to every process in the guest container's cgroup.
void signal_all(const std::string& state_dir, int sig);

// Connects to (or, with `listen`, binds) <dir>/monitor.sock, however long <dir> is.
UniqueFd monitor_socket(const std::string& dir, bool listen);

}  // namespace tarn::runtime::vm
