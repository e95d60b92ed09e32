// A container's directory under --root: its record, config snapshot and exec.fifo,
// and the status derived from the live process. Internal to runtime/.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <string>

#include "oci/oci.hpp"
#include "runtime/runtime.hpp"

namespace tarn::runtime::detail {

struct Record {
    oci::State state;        // status is stored as "creating" until create finishes
    uint64_t pid_start = 0;  // /proc/<pid>/stat start time: a reused pid never matches
    std::string cgroup_path;
    std::string systemd_unit;  // --systemd-cgroup: the container's transient unit
    bool systemd_user = false;  // ... in the caller's systemd user manager (rootless)
    bool vm = false;  // VM isolation mode: pid is the VM monitor's (runtime/vm/)
    bool no_new_keyring = false;  // created with --no-new-keyring: exec keeps its caller's too
    // A pool VM lent to this container: its directory (QEMU's log), removed by delete.
    std::string pool_vm_dir;
};

class ContainerDir {
public:
    // mkdir <root>/<id> (0700); an existing id is an error.
    static ContainerDir create(const std::string& root, const std::string& id);
    // Opens and locks an existing container; a missing one is an error naming the id.
    static ContainerDir open(const std::string& root, const std::string& id);
    static bool exists(const std::string& root, const std::string& id);

    ContainerDir(ContainerDir&&) = default;
    ContainerDir& operator=(ContainerDir&&) = default;

    const std::string& id() const { return id_; }
    const std::string& path() const { return path_; }
    std::string fifo_path() const { return path_ + "/exec.fifo"; }
    // What the released init reports to `start` (InitOptions::report_fifo).
    std::string report_fifo_path() const { return path_ + "/report.fifo"; }

    Record load() const;
    void save(const Record& r) const;
    void save_config(std::string_view text) const;
    oci::Config load_config() const;
    // Removes the directory and everything in it.
    void remove();
    // Lets other commands on this id proceed (a foreground run must not block kill/state).
    void unlock() { lock_.reset(); }

private:
    ContainerDir(std::string id, std::string path, UniqueFd lock)
        : id_(std::move(id)), path_(std::move(path)), lock_(std::move(lock)) {}
    std::string id_, path_;
    UniqueFd lock_;
};

void validate_id(const std::string& id);

// created / running / paused / stopped, from the process and exec.fifo, never from
// what was last written.
oci::Status current_status(const ContainerDir& dir, const Record& r);

// The oci state document as `state` prints it, status filled in live.
oci::State live_state(const ContainerDir& dir, const Record& r);

// UTC with nanoseconds, as runc writes `created`: 2024-02-29T23:59:59.000000001Z.
std::string rfc3339(const timespec& ts);
std::string rfc3339_now();

// Ensures the state root exists (0700).
void ensure_root(const std::string& root);

}  // namespace tarn::runtime::detail
