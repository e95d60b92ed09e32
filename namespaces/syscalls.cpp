#include "namespaces/syscalls.hpp"

#include <fcntl.h>
#include <sched.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

namespace tarn::ns::detail {

pid_t clone3(CloneArgs& args) { return static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args)); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int pidfd_send_signal(int pidfd, int sig) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

CloneArgs init_clone_args(uint64_t flags, int* pidfd, int cgroup_fd) {
    CloneArgs a;
    a.flags = flags | CLONE_PIDFD;
    a.pidfd = reinterpret_cast<uint64_t>(pidfd);
    if (cgroup_fd >= 0) {
        a.flags |= CLONE_INTO_CGROUP;
        a.cgroup = static_cast<uint64_t>(cgroup_fd);
    }
    return a;
}

int open_in_root(int root, const std::string& path, int flags, bool no_symlinks) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    if (no_symlinks) how.resolve |= RESOLVE_NO_SYMLINKS;
    std::string rel = path;
    while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
    if (rel.empty()) rel = ".";
    for (;;) {
        long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
        if (fd < 0 && errno == EAGAIN) continue;  // a concurrent rename raced the lookup
        return static_cast<int>(fd);
    }
}

namespace {

UniqueFd mkdir_all_depth(int root, const std::string& path, bool last_is_file, int depth) {
    // Symlinks inside the rootfs may point at missing paths; following them to create
    // their targets is bounded like the kernel's own link limit.
    if (depth > 40) throw Error("create " + path + " in rootfs", ELOOP);
    UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 3));
    if (!cur) throw_errno("dup root fd");
    size_t pos = 0;
    std::string done;
    while (pos < path.size()) {
        while (pos < path.size() && path[pos] == '/') ++pos;
        if (pos >= path.size()) break;
        size_t end = path.find('/', pos);
        if (end == std::string::npos) end = path.size();
        std::string comp = path.substr(pos, end - pos);
        pos = end;
        std::string parent_path = done.empty() ? "/" : done;
        done += "/" + comp;
        bool last = path.find_first_not_of('/', pos) == std::string::npos;
        // Each step resolves from the container root, so a symlink planted at any
        // component is followed only within the rootfs.
        int fd = open_in_root(root, done, O_PATH);
        if (fd < 0 && errno == ENOENT) {
            int parent = cur.get();
            struct stat st;
            if (::fstatat(parent, comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                // A dangling symlink: create what it points to, still inside the root.
                char target[4096];
                ssize_t n = ::readlinkat(parent, comp.c_str(), target, sizeof target - 1);
                if (n < 0) throw_errno("readlink " + done);
                target[n] = '\0';
                std::string resolved = target[0] == '/' ? std::string(target) : parent_path + "/" + target;
                mkdir_all_depth(root, resolved, last && last_is_file, depth + 1);
            } else if (last && last_is_file) {
                int f = ::openat(parent, comp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (f < 0 && errno != EEXIST) throw_errno("create " + done);
                if (f >= 0) ::close(f);
            } else if (::mkdirat(parent, comp.c_str(), 0755) < 0 && errno != EEXIST) {
                throw_errno("mkdir " + done);
            }
            fd = open_in_root(root, done, O_PATH);
        }
        if (fd < 0) throw_errno("open " + done + " in rootfs");
        cur.reset(fd);
    }
    return cur;
}

}  // namespace

UniqueFd mkdir_all_in_root(int root, const std::string& path, bool last_is_file) {
    return mkdir_all_depth(root, path, last_is_file, 0);
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace tarn::ns::detail
