#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

struct DefaultDevice {
    const char* path;
    unsigned major, minor;
};

// The devices runtime-spec config-linux.md says every container gets.
constexpr DefaultDevice kDefaults[] = {
    {"/dev/null", 1, 3},    {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
    {"/dev/random", 1, 8},  {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
};

bool dev_is_fresh_mount(const oci::Config& c) {
    for (const oci::Mount& m : c.mounts)
        if (m.destination == "/dev") return m.type != "bind";
    return false;
}

std::pair<std::string, std::string> split(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return {"/", path};
    return {path.substr(0, slash).empty() ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

void make_device(int root, const std::string& path, mode_t type, unsigned major, unsigned minor, mode_t perm,
                 uint32_t uid, uint32_t gid, bool in_userns) {
    auto [dir, name] = split(path);
    if (name.empty() || name == "." || name == "..") throw Error("device path " + path + ": not a file name");
    UniqueFd parent = mkdir_all_in_root(root, dir);
    // A file planted at the device path is replaced, never followed: unlinkat does not
    // follow a final symlink, and mknodat refuses one.
    if (::unlinkat(parent.get(), name.c_str(), 0) < 0 && errno != ENOENT) throw_errno("remove " + path);
    // mknod needs CAP_MKNOD in the initial user namespace: in a user namespace (the
    // container's, or the runtime's own, as under rootless podman) the host's node is
    // bound instead.
    if (!in_userns) {
        if (::mknodat(parent.get(), name.c_str(), type | perm, makedev(major, minor)) == 0) {
            if (::fchownat(parent.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0) throw_errno("chown " + path);
            return;
        }
        if (errno != EPERM) throw_errno("mknod " + path);
    }
    {
        int f = ::openat(parent.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (f < 0) throw_errno("create " + path);
        ::close(f);
        UniqueFd target(::openat(parent.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!target) throw_errno("open " + path);
        if (::mount(path.c_str(), fd_path(target.get()).c_str(), nullptr, MS_BIND, nullptr) < 0)
            throw_errno("bind device " + path);
    }
}

void make_symlink(int root, const char* target, const std::string& link) {
    auto [dir, name] = split(link);
    UniqueFd parent = mkdir_all_in_root(root, dir);
    if (::symlinkat(target, parent.get(), name.c_str()) < 0 && errno != EEXIST) throw_errno("symlink " + link);
}

mode_t device_type(const std::string& t, const std::string& path) {
    if (t == "c" || t == "u") return S_IFCHR;
    if (t == "b") return S_IFBLK;
    if (t == "p") return S_IFIFO;
    throw Error("linux.devices: " + path + ": unknown type \"" + t + "\"");
}

}  // namespace

void create_devices(const oci::Config& c, const std::string& rootfs, bool in_userns) {
    UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open rootfs " + rootfs);
    mode_t old = ::umask(0);
    try {
        if (dev_is_fresh_mount(c)) {
            for (const DefaultDevice& d : kDefaults)
                make_device(root.get(), d.path, S_IFCHR, d.major, d.minor, 0666, 0, 0, in_userns);
            make_symlink(root.get(), "/proc/self/fd", "/dev/fd");
            make_symlink(root.get(), "/proc/self/fd/0", "/dev/stdin");
            make_symlink(root.get(), "/proc/self/fd/1", "/dev/stdout");
            make_symlink(root.get(), "/proc/self/fd/2", "/dev/stderr");
            make_symlink(root.get(), "pts/ptmx", "/dev/ptmx");
            if (::access("/proc/kcore", F_OK) == 0) make_symlink(root.get(), "/proc/kcore", "/dev/core");
        }
        if (c.linux) {
            for (const oci::Device& d : c.linux->devices) {
                mode_t type = device_type(d.type, d.path);
                make_device(root.get(), d.path, type, static_cast<unsigned>(d.major), static_cast<unsigned>(d.minor),
                            d.file_mode.value_or(0666) & 07777, d.uid.value_or(0), d.gid.value_or(0), in_userns);
            }
        }
    } catch (...) {
        ::umask(old);
        throw;
    }
    ::umask(old);
}

}  // namespace tarn::ns::detail
