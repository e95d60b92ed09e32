// Internals of cgroups/ shared between its files and its unit tests: the pure
// OCI -> cgroupfs translation, path arithmetic, cgroupfs file helpers and the
// stats readers. Not part of the library's interface.
#pragma once

#include <linux/bpf.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cgroups/cgroups.hpp"

namespace tarn::cgroups::dbus {
class Writer;
}

namespace tarn::cgroups::detail {

// ---- translation --------------------------------------------------------------

// One write of one value to one cgroup file.
struct Write {
    std::string controller;  // v1: the hierarchy; v2: the file's prefix ("cgroup" for core files)
    std::string file;        // "memory.max"
    std::string value;       // written with a single write(2)
    std::string field;       // the OCI field it comes from, for messages
    bool unified = false;    // hybrid: goes to the cgroup2 hierarchy, not a v1 one
    // v1 limits whose valid order depends on the current values (memory vs
    // memory+swap, cfs period vs quota): on EINVAL, retry after the other writes.
    bool retry_on_einval = false;
    bool operator==(const Write&) const = default;
};

// What one cgroup2 directory offers.
struct DirInfo {
    std::set<std::string> files;        // directory entries
    std::set<std::string> controllers;  // its cgroup.controllers
};

// What a v1 (or hybrid) cgroup offers: the files of its directory in every mounted
// hierarchy, keyed by controller, and on hybrid hosts the cgroup2 part. A controller
// is given either its files or its directory, listed the first time a translation
// asks about it: most configs touch two or three of the ten hierarchies.
struct V1Layout {
    std::map<std::string, std::set<std::string>> files;
    std::map<std::string, std::string> dirs;
    std::optional<DirInfo> unified;

    bool mounted(const std::string& controller) const { return files.count(controller) || dirs.count(controller); }
    // Empty for a controller that is not mounted, or whose directory is missing.
    const std::set<std::string>& files_of(const std::string& controller) const;

private:
    mutable std::map<std::string, std::set<std::string>> listed_;
};

// Both translations name fields from here: "linux.resources.memory.limit", "...[2]".
inline const std::string kResourcesField = "linux.resources.";
inline std::string indexed(const std::string& base, size_t i) {
    return base + "[" + std::to_string(i) + "]";
}

std::vector<Write> translate_v2(const oci::Resources& r, const DirInfo& dir);
std::vector<Write> translate_v1(const oci::Resources& r, const V1Layout& layout);
// Pieces of the v2 translation the hybrid (v1) translation reuses for the cgroup2
// hierarchy; `unified` marks the writes for it.
std::string check_page_size(const std::string& page_size, const std::string& field);
void translate_hugetlb_v2(const std::vector<oci::HugepageLimit>& limits, const DirInfo& dir, bool unified,
                          std::vector<Write>& out);
void translate_rdma_v2(const std::map<std::string, oci::Rdma>& r, const DirInfo& dir, bool unified,
                       std::vector<Write>& out);
void translate_unified(const std::map<std::string, std::string>& unified, const DirInfo& dir, bool to_unified,
                       std::vector<Write>& out);
// ---- devices on v2 (devices_v2.cpp) ----
// One exception to the default of a device filter: BPF_DEVCG_DEV_CHAR/BLOCK, a major
// and minor (absent: any), and BPF_DEVCG_ACC_* bits.
struct DeviceException {
    uint32_t type = 0;
    std::optional<uint32_t> major, minor;
    uint32_t access = 0;
    bool operator==(const DeviceException&) const = default;
};
struct DeviceFilter {
    bool default_allow = true;
    std::vector<DeviceException> exceptions;
};
// The rules followed by default_device_rules(), with v1's semantics; errors name the field.
DeviceFilter emulate_device_rules(const std::vector<oci::DeviceCgroupRule>& rules);
// The BPF_PROG_TYPE_CGROUP_DEVICE program for a filter: 1 allows, 0 denies.
std::vector<bpf_insn> device_filter_program(const DeviceFilter& f);
// Loads the program and attaches it to the cgroup (BPF_F_ALLOW_MULTI), then detaches
// the device programs attached there before. `what` prefixes errors.
void attach_device_filter(int cgroup_fd, const std::vector<bpf_insn>& prog, const std::string& what);

// devices.deny/devices.allow writes for the rules followed by default_device_rules().
std::vector<Write> translate_devices_v1(const std::vector<oci::DeviceCgroupRule>& rules);

// Controllers a config needs, each with the first field that needs it.
std::map<std::string, std::string> required_controllers_v2(const oci::Resources& r);
std::map<std::string, std::string> required_controllers_v1(const oci::Resources& r);

// cpu.shares (2..262144) -> cpu.weight (1..10000); 0 stays 0 ("unset").
uint64_t shares_to_weight(uint64_t shares);
// blkio.weight (10..1000) -> io.weight (1..10000).
uint64_t blkio_weight_to_io_weight(uint64_t weight);
// cpu.weight -> cpu.shares as the kernel itself maps them (weight 100 = 1024 shares).
uint64_t weight_to_shares(uint64_t weight);

// The controllers tarn enables in a v2 subtree when the kernel offers them.
const std::vector<std::string>& v2_controllers();
// The v1 hierarchies tarn joins when mounted (directory names under the root).
const std::vector<std::string>& v1_hierarchies();

// ---- paths ----------------------------------------------------------------------

// The runtime's own cgroup from /proc/self/cgroup text.
std::string own_cgroup(std::string_view proc_self_cgroup);
std::string resolve_path(std::string_view cgroups_path, std::string_view id, bool systemd,
                         std::string_view own);
// Joins and normalises; throws if ".." climbs above `base`.
std::string join_clean(std::string_view base, std::string_view rel, std::string_view what);

// ---- the systemd driver (systemd.cpp) ----

// One property of a transient unit, as StartTransientUnit and SetUnitProperties take it:
// b, t, s, au (PIDs) or ay (cpu and node masks).
struct Property {
    std::string name;
    std::variant<bool, uint64_t, std::string, std::vector<uint32_t>, std::vector<uint8_t>> value;
    bool operator==(const Property&) const = default;
};
// "a-b.slice" -> "/a.slice/a-b.slice", "-.slice" -> "/"; `what` prefixes errors.
std::string expand_slice(std::string_view slice, std::string_view what);
systemd::Unit unit_for(std::string_view cgroups_path, std::string_view id, bool user = false);
// The unix socket path of the first "unix:path=..." entry of a D-Bus address list.
std::optional<std::string> unix_path_of(std::string_view address);
// A way to systemd's manager: a bus (Hello, match rules) or the manager's own socket.
struct ManagerSocket {
    std::string path;
    bool is_bus = false;
    bool operator==(const ManagerSocket&) const = default;
};
// Where to reach the manager, in the order to try. The system manager: the system bus
// (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket), then, for root,
// /run/systemd/private. The caller's user manager: the session bus
// (DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus), then
// $XDG_RUNTIME_DIR/systemd/private; XDG_RUNTIME_DIR defaults to /run/user/<euid>.
std::vector<ManagerSocket> manager_sockets(bool user, uid_t euid,
                                           const std::function<const char*(const char*)>& env);
// "0-2,5" -> systemd's byte mask (cpu n is bit n % 8 of byte n / 8); errors name `field`.
std::vector<uint8_t> cpu_mask(std::string_view list, std::string_view field);
// The unit properties for linux.resources that systemd `version` has (MemoryMax,
// MemoryLow, MemorySwapMax, CPUWeight, CPUQuotaPerSecUSec, CPUQuotaPeriodUSec, TasksMax,
// AllowedCPUs, AllowedMemoryNodes; on v1 hosts MemoryLimit and CPUShares). The cgroupfs
// manager writes the exact values afterwards; these keep systemd's view the same.
std::vector<Property> unit_properties(const oci::Resources& r, unsigned version, bool unified);
// Appends the a(sv) array StartTransientUnit and SetUnitProperties take.
void marshal_properties(const std::vector<Property>& props, dbus::Writer& w);
// The leading release number of systemd's Version property ("252.38-1~deb12u1" -> 252).
unsigned parse_systemd_version(std::string_view v);

// ---- cgroupfs files ---------------------------------------------------------------

std::string read(const std::string& dir, std::string_view file);
std::optional<std::string> read_if_exists(const std::string& dir, std::string_view file);
// One write(2); returns 0 or an errno.
int write_errno(const std::string& dir, std::string_view file, std::string_view value) noexcept;
// Throws "cgroup DIR: write FILE: <errno>".
void write(const std::string& dir, std::string_view file, std::string_view value);
// Throws "cgroup DIR: write FILE \"VALUE\" (FIELD): <errno>".
void write(const std::string& dir, const Write& w);

bool is_dir(const std::string& path);
bool exists(const std::string& dir, std::string_view file);
std::set<std::string> list_files(const std::string& dir);
std::vector<std::string> list_subdirs(const std::string& dir);
DirInfo probe_v2(const std::string& dir);

// mkdir -p below `root`, appending the directories it made to `created`.
void make_dirs(const std::string& root, const std::string& path, std::vector<std::string>& created);
// rmdir of `dir` and everything below it, deepest first; EBUSY is retried until
// `patience` runs out; a missing directory is fine.
void remove_tree(const std::string& dir,
                 std::chrono::milliseconds patience = std::chrono::milliseconds(2000));
// Best-effort removal of directories this library made, in reverse order.
void remove_created(const std::vector<std::string>& created) noexcept;

// The pids in cgroup.procs of `dir` (and of every descendant when recursive).
std::vector<pid_t> read_procs(const std::string& dir, bool recursive);
// Writes the pid to cgroup.procs, retrying EINVAL from a task still being born.
void add_pid(const std::string& dir, pid_t pid);
// kill(2) for every pid in the subtree; ESRCH is fine.
void signal_tree(const std::string& dir, int sig);

// "key value" lines to a map (cpu.stat, memory.stat, memory.events, ...).
std::map<std::string, uint64_t> parse_flat_keyed(std::string_view text);
// A decimal number or "max" (UINT64_MAX); surrounding whitespace ignored.
uint64_t parse_uint_or_max(std::string_view text, std::string_view what);
// Space-separated words.
std::vector<std::string> split_words(std::string_view text);

// ---- v2 tree setup (used by the v2 manager and the unified part of hybrid) --------

// Makes `root`/`path`, enabling controllers in every ancestor's subtree_control.
// `needed` (controller -> field) must be available; the rest of v2_controllers()
// are best effort. Directories made are appended to `created`.
void create_v2_tree(const std::string& root, const std::string& path,
                    const std::map<std::string, std::string>& needed, std::vector<std::string>& created);

// ---- managers ---------------------------------------------------------------------

std::unique_ptr<Manager> open_v2(const std::string& path, const std::string& root);
// Legacy and hybrid hosts.
std::unique_ptr<Manager> open_v1(const std::string& path, Mode mode, const std::string& root);

// linux.resources.memory.checkBeforeUpdate: refuses a limit at or below what the
// cgroup uses now (memory alone, or memory+swap when swap is limited).
void check_memory_usage(const oci::Resources& r, uint64_t memory_usage, uint64_t memory_swap_usage);

// ---- freezer ----------------------------------------------------------------------

inline constexpr std::chrono::milliseconds kFreezeTimeout{5000};
void freeze_v2(const std::string& dir);
void thaw_v2(const std::string& dir);
bool frozen_v2(const std::string& dir);
void freeze_v1(const std::string& dir);
void thaw_v1(const std::string& dir);
bool frozen_v1(const std::string& dir);

// ---- stats --------------------------------------------------------------------------

Stats read_stats_v2(const std::string& dir);
Usage read_usage_v2(const std::string& dir);
// `dirs`: controller -> directory of the cgroup in that hierarchy; `unified`: the
// cgroup2 directory on hybrid hosts ("" if none).
Stats read_stats_v1(const std::map<std::string, std::string>& dirs, const std::string& unified);
// `memory` and `pids`: the hierarchies' directories, or empty where not mounted.
Usage read_usage_v1(const std::string& memory, const std::string& pids);

}  // namespace tarn::cgroups::detail
