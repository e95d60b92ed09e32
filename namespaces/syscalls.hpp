// Thin wrappers for the syscalls glibc 2.36 does not wrap (clone3, openat2) and
// the secure path resolution every mount and mknod goes through. Internal to namespaces/.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "oci/base.hpp"

namespace tarn::ns::detail {

struct CloneArgs {
    uint64_t flags = 0;
    uint64_t pidfd = 0;
    uint64_t child_tid = 0;
    uint64_t parent_tid = 0;
    uint64_t exit_signal = 0;
    uint64_t stack = 0;
    uint64_t stack_size = 0;
    uint64_t tls = 0;
    uint64_t set_tid = 0;
    uint64_t set_tid_size = 0;
    uint64_t cgroup = 0;
};

// fork-like clone3: returns 0 in the child, the pid in the parent, -1 with errno.
pid_t clone3(CloneArgs& args);

// The arguments of a container init's clone: `flags` (new namespaces) with a pidfd
// written to `*pidfd`, straight into the cgroup `cgroup_fd` when there is one (>= 0).
CloneArgs init_clone_args(uint64_t flags, int* pidfd, int cgroup_fd);

int pidfd_open(pid_t pid);
int pidfd_send_signal(int pidfd, int sig);

// openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `path` is resolved as if
// `root` were "/", so no symlink (absolute or "..") can lead outside it.
// Returns -1 with errno on failure.
int open_in_root(int root, const std::string& path, int flags, bool no_symlinks = false);

// Creates the missing directories of `path` inside `root` (each component resolved
// in root) and returns an O_PATH fd of the last one. With `last_is_file` the final
// component is created as an empty regular file instead (bind mounts of files).
UniqueFd mkdir_all_in_root(int root, const std::string& path, bool last_is_file = false);

// "/proc/self/fd/N": a path the classic mount(2) accepts for an O_PATH fd, so the
// mount lands exactly where the fd points, not where a path would re-resolve to.
std::string fd_path(int fd);

}  // namespace tarn::ns::detail
