#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/stat.h>
#include <unistd.h>

#include "namespaces/mount_options.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

// rootfsPropagation as mount(2) flags; 0 when unset.
unsigned long propagation_of(const std::string& p) {
    if (p.empty()) return 0;
    MountOptions o = parse_mount_options({p});
    if (!o.propagation) throw Error("linux.rootfsPropagation: unknown value \"" + p + "\"");
    return o.propagation;
}

// What the mounts this namespace copied from the host become before anything is bound
// (always the whole tree, so no host mount keeps a propagation the config did not ask
// for). shared keeps their peer groups: a volume bound from a shared host mount joins
// its source's group, and mounts travel both ways (Kubernetes' Bidirectional). slave,
// and the default, let host mounts in and none out. private and unbindable cut both
// ways; unbindable itself waits for the pivot (finish_rootfs), or the rootfs could not
// be bound onto itself.
unsigned long host_side_propagation(unsigned long root) {
    if (root & MS_SHARED) return MS_SHARED | MS_REC;
    if (root & (MS_PRIVATE | MS_UNBINDABLE)) return MS_PRIVATE | MS_REC;
    return MS_SLAVE | MS_REC;
}

// The mount holding `path` (its root directory), found by walking up to a mount root.
UniqueFd mount_root_of(const std::string& path) {
    UniqueFd cur(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_errno("open " + path);
    for (;;) {
        struct statx stx{};
        if (::statx(cur.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, 0, &stx) < 0) throw_errno("statx " + path);
        if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) throw Error("statx " + path + ": no mount root attribute");
        if (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) return cur;
        UniqueFd up(::openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!up) throw_errno("open the parent of " + path);
        cur = std::move(up);
    }
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
    unsigned long host_side = host_side_propagation(propagation_of(prop));
    const char* what = host_side & MS_SHARED ? "rshared" : host_side & MS_PRIVATE ? "rprivate" : "rslave";
    if (::mount(nullptr, "/", nullptr, host_side, nullptr) < 0) throw_errno("make / " + std::string(what));
    if (host_side & MS_SHARED) {
        // The mount holding the rootfs may now be a peer of the host's: the rootfs bind
        // (and the overlay) made on it would appear on the host. Private, it keeps them
        // here, and pivot_root takes a new root whose parent is not shared.
        UniqueFd holder = mount_root_of(rootfs);
        if (::mount(nullptr, fd_path(holder.get()).c_str(), nullptr, MS_PRIVATE, nullptr) < 0)
            throw_errno("make the mount holding " + rootfs + " private");
    }
    if (overlay) mount_overlay_root(rootfs);
    if (::mount(rootfs.c_str(), rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
        throw_errno("bind rootfs " + rootfs);
    // pivot_root refuses a new root that is shared; a bind of a slave is a slave.
    if (::mount(nullptr, rootfs.c_str(), nullptr, MS_PRIVATE, nullptr) < 0)
        throw_errno("make rootfs " + rootfs + " private");
}

void enter_rootfs(const std::string& rootfs, bool no_pivot) {
    if (::chdir(rootfs.c_str()) < 0) throw_errno("chdir " + rootfs);
    if (no_pivot) {
        // A move onto a shared `/` (rootfsPropagation shared) would be copied onto the
        // host's `/` too.
        if (::mount(nullptr, "/", nullptr, MS_PRIVATE, nullptr) < 0) throw_errno("make / private");
        if (::mount(rootfs.c_str(), "/", nullptr, MS_MOVE, nullptr) < 0) throw_errno("move rootfs to /");
        if (::chroot(".") < 0) throw_errno("chroot " + rootfs);
    } else {
        // pivot_root(".", ".") stacks the old root over the new one; detaching it
        // afterwards needs no directory inside the rootfs to hold it.
        UniqueFd old_root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!old_root) throw_errno("open /");
        if (::syscall(SYS_pivot_root, ".", ".") < 0) throw_errno("pivot_root " + rootfs);
        // The old root is reached through its own fd: "." is still the new root's mount
        // (a propagation change does not cross onto the mount stacked there), and making
        // that one rslave would cut the container's volumes from their host peers.
        // Slave, the old root's unmount does not propagate to the host.
        if (::fchdir(old_root.get()) < 0) throw_errno("chdir to the old root");
        if (::mount(nullptr, ".", nullptr, MS_SLAVE | MS_REC, nullptr) < 0) throw_errno("make old root rslave");
        if (::umount2(".", MNT_DETACH) < 0) throw_errno("detach old root");
    }
    if (::chdir("/") < 0) throw_errno("chdir /");
}

void enter_detached_root(int mnt_ns) {
    // A recursive clone of the root: masks, read-only flags and all. The scratch
    // namespace, and every mount in it, dies once no process is left in it.
    UniqueFd tree(::open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!tree) throw_errno("clone the container's root");
    if (::setns(mnt_ns, CLONE_NEWNS) < 0) throw_errno("return to the runtime's mount namespace");
    if (::fchdir(tree.get()) < 0) throw_errno("chdir to the container's root");
    if (::chroot(".") < 0) throw_errno("chroot to the container's root");
    if (::chdir("/") < 0) throw_errno("chdir /");
}

}  // namespace tarn::ns::detail
