#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "namespaces/mount_options.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

unsigned long propagation_of(const std::string& p) {
    if (p.empty()) return MS_SLAVE | MS_REC;  // host mount events may reach the container, never back
    MountOptions o = parse_mount_options({p});
    if (!o.propagation) throw Error("linux.rootfsPropagation: unknown value \"" + p + "\"");
    return o.propagation | MS_REC;
}

// An overlay with `rootfs` as its lower layer and a fresh tmpfs holding upper and
// work, mounted over `rootfs` in this (private) mount namespace. The tmpfs is mounted
// on `rootfs` first, under the overlay: overlayfs takes its upper layer only from a
// mount attached in the caller's namespace. Layers are named through fds (the lower
// one opened before the tmpfs hides it), so no path needs escaping.
void mount_overlay_root(const std::string& rootfs) {
    UniqueFd lower(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!lower) throw_errno("overlay rootfs: open " + rootfs);
    struct stat st;
    if (::fstat(lower.get(), &st) < 0) throw_errno("stat " + rootfs);
    if (::mount("tmpfs", rootfs.c_str(), "tmpfs", MS_NODEV | MS_NOSUID, "mode=0700") < 0)
        throw_errno("overlay rootfs: mount tmpfs on " + rootfs);
    std::string upper = rootfs + "/upper", work = rootfs + "/work";
    // The upper root takes the lower root's owner and mode, or / would turn root:0755.
    if (::mkdir(upper.c_str(), st.st_mode & 07777) < 0 || ::mkdir(work.c_str(), 0700) < 0 ||
        ::chown(upper.c_str(), st.st_uid, st.st_gid) < 0 || ::chmod(upper.c_str(), st.st_mode & 07777) < 0)
        throw_errno("overlay rootfs: upper and work directories");
    UniqueFd ufd(::open(upper.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)), wfd(::open(work.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!ufd || !wfd) throw_errno("overlay rootfs: open upper and work directories");
    std::string opts = "lowerdir=" + fd_path(lower.get()) + ",upperdir=" + fd_path(ufd.get()) + ",workdir=" + fd_path(wfd.get());
    if (::mount("overlay", rootfs.c_str(), "overlay", 0, opts.c_str()) < 0)
        throw_errno("overlay rootfs: mount overlay of " + rootfs);
}

}  // namespace

void prepare_rootfs(const oci::Config& c, const std::string& rootfs, bool overlay) {
    const std::string& prop = c.linux ? c.linux->rootfs_propagation : std::string();
    unsigned long flags = propagation_of(prop);
    // A shared root would leak the container's mounts back to the host; the spec's
    // "shared" is applied to the container's own root after pivot (finish_rootfs).
    if (flags & MS_SHARED) flags = MS_SLAVE | MS_REC;
    if (::mount(nullptr, "/", nullptr, flags, nullptr) < 0) throw_errno("make / " + (prop.empty() ? "rslave" : prop));
    if (overlay) mount_overlay_root(rootfs);
    if (::mount(rootfs.c_str(), rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
        throw_errno("bind rootfs " + rootfs);
    // pivot_root refuses a new root whose parent mount is shared; the bind just made
    // inherits the slave propagation set above, so making it private is enough.
    if (::mount(nullptr, rootfs.c_str(), nullptr, MS_PRIVATE, nullptr) < 0)
        throw_errno("make rootfs " + rootfs + " private");
}

void enter_rootfs(const std::string& rootfs, bool no_pivot) {
    if (::chdir(rootfs.c_str()) < 0) throw_errno("chdir " + rootfs);
    if (no_pivot) {
        if (::mount(rootfs.c_str(), "/", nullptr, MS_MOVE, nullptr) < 0) throw_errno("move rootfs to /");
        if (::chroot(".") < 0) throw_errno("chroot " + rootfs);
    } else {
        // pivot_root(".", ".") stacks the old root under the new one; detaching it
        // afterwards needs no directory inside the rootfs to hold it.
        if (::syscall(SYS_pivot_root, ".", ".") < 0) throw_errno("pivot_root " + rootfs);
        if (::mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) < 0) throw_errno("make old root rslave");
        if (::umount2(".", MNT_DETACH) < 0) throw_errno("detach old root");
    }
    if (::chdir("/") < 0) throw_errno("chdir /");
}

}  // namespace tarn::ns::detail
