#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <span>
#include <sstream>

#include "namespaces/mount_options.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

struct MountAttr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

void set_attrs(int tree, uint64_t set, uint64_t clr, bool recursive, const std::string& what) {
    if (!set && !clr) return;
    struct mount_attr attr{};
    attr.attr_set = set;
    attr.attr_clr = clr;
    unsigned flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
    if (::mount_setattr(tree, "", flags, &attr, sizeof attr) < 0) throw_errno("set mount attributes of " + what);
}

bool is_bind(const oci::Mount& m, const MountOptions& o) { return o.bind || m.type == "bind"; }

}  // namespace

// Bind mounts through the new mount API: the tree is cloned and given its attributes
// while still detached, then moved onto the target fd — there is no moment when the
// mount is visible with the wrong flags, and no path is resolved twice.
UniqueFd clone_bind_tree(const oci::Mount& m, const MountOptions& o) {
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (o.recursive_bind ? AT_RECURSIVE : 0);
    UniqueFd tree(::open_tree(AT_FDCWD, m.source.c_str(), flags));
    if (!tree) throw_errno("bind " + m.source);
    set_attrs(tree.get(), o.attr_set, o.attr_clr, false, m.destination);
    set_attrs(tree.get(), o.rec_attr_set, o.rec_attr_clr, true, m.destination);
    return tree;
}

namespace {

void attach_tree(int tree, int target, const std::string& dest) {
    if (::move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        throw_errno("move mount onto " + dest);
}

bool source_is_dir(const std::string& src) {
    struct stat st;
    if (::stat(src.c_str(), &st) < 0) throw_errno("stat mount source " + src);
    return S_ISDIR(st.st_mode);
}

bool host_is_unified() {
    struct statfs s;
    return ::statfs("/sys/fs/cgroup", &s) == 0 && s.f_type == 0x63677270;  // CGROUP2_SUPER_MAGIC
}

// v1 hierarchies mounted on the host: mount point name -> super options ("cpu", "name=systemd").
std::vector<std::pair<std::string, std::string>> host_v1_hierarchies() {
    std::vector<std::pair<std::string, std::string>> out;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        size_t dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        std::istringstream rest(line.substr(dash + 3));
        std::string fstype, source, super;
        rest >> fstype >> source >> super;
        std::istringstream head(line.substr(0, dash));
        std::string id, parent, devno, root, mnt;
        head >> id >> parent >> devno >> root >> mnt;
        if (mnt.rfind("/sys/fs/cgroup/", 0) != 0) continue;
        std::string name = mnt.substr(strlen("/sys/fs/cgroup/"));
        if (name.find('/') != std::string::npos) continue;
        if (fstype == "cgroup") {
            std::string opts;
            std::istringstream ss(super);
            for (std::string o; std::getline(ss, o, ',');)
                if (o != "rw" && o != "ro") opts += (opts.empty() ? "" : ",") + o;
            out.emplace_back(name, opts);
        } else if (fstype == "cgroup2") {
            out.emplace_back(name, "");
        }
    }
    return out;
}

void fs_mount(const std::string& source, int target, const std::string& type, unsigned long flags,
              const std::string& data, const std::string& dest) {
    const char* src = source.empty() ? type.c_str() : source.c_str();
    if (::mount(src, fd_path(target).c_str(), type.c_str(), flags, data.empty() ? nullptr : data.c_str()) < 0)
        throw_errno("mount " + type + " on " + dest);
}

// The spec's "cgroup" mount: on a unified host a cgroup2 mount in a cgroup namespace,
// else a bind of the container's cgroup; on v1 and hybrid hosts a tmpfs holding, per
// hierarchy, a bind of the container's own cgroup directory (the `binds` make_plan
// found). A fresh v1 cgroup mount would show the hierarchy's root,
// and so every cgroup on the host, to a container without a cgroup namespace, and a
// root that could write there could move itself out of its limits; a bind shows its
// own cgroup and what is below it, whatever the namespaces. It also needs no privilege
// over the host's cgroup namespace, which a user namespace's root lacks.
void cgroup_mount(int root, const oci::Mount& m, const MountOptions& o, int target,
                  std::span<const CgroupBind> binds) {
    unsigned long flags = o.flags & ~MS_RDONLY;
    if (host_is_unified() && binds.empty()) {
        fs_mount("cgroup2", target, "cgroup2", o.flags, "", m.destination);
        return;
    }
    if (host_is_unified()) {
        // No cgroup namespace: the container's own cgroup, bound.
        UniqueFd tree(::open_tree(AT_FDCWD, binds[0].source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
        if (!tree) throw_errno("bind " + binds[0].source + " on " + m.destination);
        set_attrs(tree.get(), o.attr_set | o.rec_attr_set, o.attr_clr | o.rec_attr_clr, false, m.destination);
        attach_tree(tree.get(), target, m.destination);
        return;
    }
    fs_mount("tmpfs", target, "tmpfs", flags, "mode=755", m.destination);
    // The tmpfs is new and empty and nothing in the container runs yet: its
    // directories are made and opened straight from its root, without a resolution
    // from the rootfs each.
    UniqueFd top(open_in_root(root, m.destination, O_PATH | O_DIRECTORY));
    if (!top) throw_errno("open " + m.destination + " in rootfs");
    for (const CgroupBind& b : binds) {
        std::string sub = m.destination + "/" + b.name;
        // The init is in its cgroup by now (a systemd scope is made around it): a
        // hierarchy the cgroup has no directory in is left out, never shown whole.
        UniqueFd tree(::open_tree(AT_FDCWD, b.source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
        if (!tree && errno == ENOENT) continue;
        if (!tree) throw_errno("bind " + b.source + " on " + sub);
        if (::mkdirat(top.get(), b.name.c_str(), 0755) < 0) throw_errno("mkdir " + sub);
        UniqueFd t(::openat(top.get(), b.name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!t) throw_errno("open " + sub);
        set_attrs(tree.get(), o.attr_set | o.rec_attr_set, o.attr_clr | o.rec_attr_clr, false, sub);
        attach_tree(tree.get(), t.get(), sub);
    }
    if (o.flags & MS_RDONLY) {
        if (::mount(nullptr, fd_path(top.get()).c_str(), nullptr, MS_REMOUNT | MS_RDONLY | flags, "mode=755") < 0)
            throw_errno("remount " + m.destination + " read-only");
    }
}

void set_propagation(int root, const std::string& dest, unsigned long prop) {
    if (!prop) return;
    UniqueFd top(open_in_root(root, dest, O_PATH));
    if (!top) throw_errno("open " + dest + " in rootfs");
    if (::mount(nullptr, fd_path(top.get()).c_str(), nullptr, prop, nullptr) < 0)
        throw_errno("set propagation of " + dest);
}

}  // namespace

std::vector<CgroupBind> cgroup_binds(const oci::Config& c, const std::string& cgroup_path) {
    std::vector<CgroupBind> out;
    bool wanted = std::any_of(c.mounts.begin(), c.mounts.end(),
                              [](const oci::Mount& m) { return m.type == "cgroup" || m.type == "cgroup2"; });
    if (!wanted) return out;
    // Without a cgroup of its own (rootless, none delegated) the container is in ours.
    std::vector<std::pair<std::string, std::string>> own;  // controllers ("" for cgroup2) -> path
    if (cgroup_path.empty()) {
        std::ifstream in("/proc/self/cgroup");
        for (std::string line; std::getline(in, line);) {
            size_t a = line.find(':'), b = line.find(':', a + 1);
            if (a == std::string::npos || b == std::string::npos) continue;
            own.emplace_back(line.substr(a + 1, b - a - 1), line.substr(b + 1));
        }
    }
    if (host_is_unified()) {
        // With a cgroup namespace a fresh cgroup2 mount is rooted at the container's
        // cgroup already; without one it would be the host's root.
        if (c.linux && c.linux->find_namespace(oci::NamespaceType::cgroup)) return out;
        std::string path = cgroup_path;
        for (const auto& [controllers, p] : own)
            if (path.empty() && controllers.empty()) path = p;
        if (!path.empty()) out.push_back({"", "/sys/fs/cgroup" + (path == "/" ? std::string() : path)});
        return out;
    }
    for (const auto& [name, opts] : host_v1_hierarchies()) {
        std::string path = cgroup_path;
        if (path.empty()) {
            // The line whose controllers are all among the hierarchy's mount options
            // ("cpu,cpuacct", "name=systemd"); cgroup2's line has none.
            for (const auto& [controllers, p] : own) {
                bool match = controllers.empty() == opts.empty();
                std::istringstream ss(controllers);
                for (std::string ctl; match && std::getline(ss, ctl, ',');)
                    match = ("," + opts + ",").find("," + ctl + ",") != std::string::npos;
                if (match) {
                    path = p;
                    break;
                }
            }
            if (path.empty()) continue;
        }
        out.push_back({name, "/sys/fs/cgroup/" + name + (path == "/" ? "" : path)});
    }
    return out;
}

void mount_all(const oci::Config& c, const std::string& rootfs, std::span<const int> idmapped,
               std::span<const CgroupBind> cgroups) {
    UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open rootfs " + rootfs);
    for (size_t i = 0; i < c.mounts.size(); ++i) {
        const oci::Mount& m = c.mounts[i];
        MountOptions o = parse_mount_options(m.options);
        bool bind = is_bind(m, o);
        try {
            if (bind) {
                bool dir = source_is_dir(m.source);
                UniqueFd target = mkdir_all_in_root(root.get(), m.destination, !dir);
                if (wants_idmap(m, o)) {
                    // Built by the runtime before clone (prepare_idmapped_mounts); ours
                    // to close once attached.
                    if (i >= idmapped.size() || idmapped[i] < 0)
                        throw Error("idmapped mount was not prepared");
                    UniqueFd tree(idmapped[i]);
                    attach_tree(tree.get(), target.get(), m.destination);
                } else {
                    attach_tree(clone_bind_tree(m, o).get(), target.get(), m.destination);
                }
            } else if (m.type == "cgroup" || m.type == "cgroup2") {
                UniqueFd target = mkdir_all_in_root(root.get(), m.destination);
                cgroup_mount(root.get(), m, o, target.get(), cgroups);
            } else {
                // proc and sysfs over a symlink would let a hostile image place them where
                // maskedPaths do not look (CVE-2019-16884 class): they need a real directory.
                bool strict = m.type == "proc" || m.type == "sysfs";
                UniqueFd target = mkdir_all_in_root(root.get(), m.destination);
                if (strict) {
                    UniqueFd check(open_in_root(root.get(), m.destination, O_PATH | O_DIRECTORY, true));
                    if (!check) throw_errno(m.type + " mount target " + m.destination + " must be a directory");
                }
                std::string data = o.data;
                // linux.mountLabel labels the filesystems the runtime creates for the
                // container (check_lsm has made sure SELinux is there to read it).
                if (c.linux && !c.linux->mount_label.empty() &&
                    (m.type == "tmpfs" || m.type == "devpts" || m.type == "mqueue"))
                    data += (data.empty() ? "" : ",") + std::string("context=\"") + c.linux->mount_label + "\"";
                fs_mount(m.source, target.get(), m.type, o.flags, data, m.destination);
            }
            set_propagation(root.get(), m.destination, o.propagation);
        } catch (const Error& e) {
            throw e.wrapped("mount " + (m.source.empty() ? m.type : m.source) + " on " + m.destination);
        }
    }
}

void finish_rootfs(const oci::Config& c) {
    UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open /");
    if (c.linux) {
        // The mask source is the container's /dev/null: it must be the null device, not
        // a symlink or a file an image or a racing container put there, or the "mask"
        // would bind something writable (/proc/sys/kernel/core_pattern) over the masked
        // path (CVE-2025-31133). It is bound through this verified fd, never by path.
        UniqueFd null_dev;
        auto null_source = [&]() -> std::string {
            if (!null_dev) {
                null_dev.reset(::open("/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC));
                if (!null_dev) throw_errno("mask: open /dev/null");
                struct stat st;
                if (::fstat(null_dev.get(), &st) < 0) throw_errno("mask: stat /dev/null");
                if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
                    throw Error("mask: /dev/null in the container is not the null device");
            }
            return fd_path(null_dev.get());
        };
        for (const std::string& p : c.linux->masked_paths) {
            // A symlink must not move the mask elsewhere, so nothing is followed at all.
            UniqueFd fd(open_in_root(root.get(), p, O_PATH | O_NOFOLLOW, true));
            if (!fd) {
                if (errno == ENOENT || errno == ELOOP) continue;
                throw_errno("mask " + p);
            }
            struct stat st;
            if (::fstat(fd.get(), &st) < 0) throw_errno("stat " + p);
            int r;
            if (S_ISDIR(st.st_mode))
                r = ::mount("tmpfs", fd_path(fd.get()).c_str(), "tmpfs", MS_RDONLY, "size=0k,nr_inodes=1");
            else
                r = ::mount(null_source().c_str(), fd_path(fd.get()).c_str(), nullptr, MS_BIND, nullptr);
            if (r < 0) throw_errno("mask " + p);
        }
        for (const std::string& p : c.linux->readonly_paths) {
            UniqueFd fd(open_in_root(root.get(), p, O_PATH | O_NOFOLLOW, true));
            if (!fd) {
                if (errno == ENOENT || errno == ELOOP) continue;
                throw_errno("make " + p + " read-only");
            }
            UniqueFd tree(::open_tree(fd.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH));
            if (!tree) throw_errno("make " + p + " read-only");
            set_attrs(tree.get(), 0x1 | 0x2 | 0x4 | 0x8, 0, true, p);  // ro, nosuid, nodev, noexec
            if (::move_mount(tree.get(), "", fd.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                throw_errno("make " + p + " read-only");
        }
    }
    if (c.root && c.root->readonly) {
        UniqueFd top(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        set_attrs(top.get(), 0x1, 0, false, "/");
    }
    // rootfsPropagation of the container's own root, now that `/` is it (before the
    // pivot it would have reached the host's mounts). private is already so. The
    // r-forms reach every mount in the container; then each mount's own propagation
    // option is applied again, so it wins over the root's.
    const std::string& prop = c.linux ? c.linux->rootfs_propagation : std::string();
    if (prop.empty()) return;
    MountOptions ro = parse_mount_options({prop});
    if (ro.propagation & MS_PRIVATE) return;
    if (::mount(nullptr, "/", nullptr, ro.propagation, nullptr) < 0) throw_errno("make / " + prop);
    for (const oci::Mount& m : c.mounts) {
        MountOptions o = parse_mount_options(m.options);
        try {
            set_propagation(root.get(), m.destination, o.propagation);
        } catch (const Error& e) {
            throw e.wrapped("mount " + (m.source.empty() ? m.type : m.source) + " on " + m.destination);
        }
    }
}

}  // namespace tarn::ns::detail
