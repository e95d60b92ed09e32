// Idmapped bind mounts (config.md "Mounts": uidMappings, gidMappings, idmap, ridmap).
//
// The runtime builds them before the init is cloned, in its own user namespace:
// mount_setattr(MOUNT_ATTR_IDMAP) needs CAP_SYS_ADMIN over the filesystem's user
// namespace, which an init inside a user namespace of its own no longer has. The init
// inherits the finished, still detached trees and only attaches them (mount_all).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "namespaces/mount_options.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns {
namespace detail {
namespace {

// Reaps the helper whatever happens to the caller: closing our end of the pipe is
// what lets it exit.
struct HelperReaper {
    pid_t pid;
    UniqueFd& release;
    ~HelperReaper() {
        release.reset();
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
};

// A user namespace whose only job is to carry a mapping: a child is cloned into it,
// we write its maps and keep /proc/<pid>/ns/user open, and the child exits. The fd
// keeps the namespace alive without any process in it.
UniqueFd userns_with_maps(const std::vector<oci::IdMapping>& uids, const std::vector<oci::IdMapping>& gids,
                          const std::string& field) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd wait_end(p[0]), release(p[1]);
    CloneArgs a;
    a.flags = CLONE_NEWUSER;
    a.exit_signal = SIGCHLD;
    pid_t pid = clone3(a);
    if (pid < 0) throw_errno("clone3 user namespace for an idmapped mount");
    if (pid == 0) {
        // Only async-signal-safe calls from here: this is a fork of a runtime that may
        // hold locks. EOF (our parent done or gone) ends it.
        ::close(release.get());
        char b;
        while (::read(wait_end.get(), &b, 1) < 0 && errno == EINTR) {
        }
        ::_exit(0);
    }
    wait_end.reset();
    HelperReaper reaper{pid, release};
    std::string base = "/proc/" + std::to_string(pid) + "/";
    try {
        write_file(base + "uid_map", format_id_map(uids));
    } catch (const Error& e) {
        throw e.wrapped(field + "uidMappings");
    }
    try {
        write_file(base + "gid_map", format_id_map(gids));
    } catch (const Error& e) {
        throw e.wrapped(field + "gidMappings");
    }
    UniqueFd ns(::open((base + "ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw_errno("open " + base + "ns/user");
    return ns;
}

// The type of the filesystem `path` is on, as mountinfo names it ("devtmpfs" and
// "tmpfs" share a magic number but not idmap support). Only on the error path.
std::string fs_type(const std::string& path) {
    struct statx stx {};
    if (::statx(AT_FDCWD, path.c_str(), 0, STATX_MNT_ID, &stx) == 0 && (stx.stx_mask & STATX_MNT_ID)) {
        std::ifstream in("/proc/self/mountinfo");
        std::string prefix = std::to_string(stx.stx_mnt_id) + " ";
        for (std::string line; std::getline(in, line);) {
            size_t dash = line.find(" - ");
            if (line.rfind(prefix, 0) != 0 || dash == std::string::npos) continue;
            std::istringstream rest(line.substr(dash + 3));
            std::string type;
            rest >> type;
            return type;
        }
    }
    struct statfs s;
    if (::statfs(path.c_str(), &s) < 0) return "unknown";
    char buf[32];
    std::snprintf(buf, sizeof buf, "magic 0x%lx", static_cast<unsigned long>(s.f_type));
    return buf;
}

UniqueFd idmapped_tree(const oci::Mount& m, const MountOptions& o, int userns) {
    UniqueFd tree = clone_bind_tree(m, o);
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns);
    unsigned flags = AT_EMPTY_PATH | (o.recursive_idmap ? AT_RECURSIVE : 0);
    if (::mount_setattr(tree.get(), "", flags, &attr, sizeof attr) < 0) {
        int err = errno;
        // The kernel's answer for a filesystem without FS_ALLOW_IDMAP (or, with ridmap,
        // a mount beneath the source on one).
        if (err == EINVAL || err == EOPNOTSUPP)
            throw Error(std::string("the filesystem of ") + m.source + " (" + fs_type(m.source) + ")" +
                        (o.recursive_idmap ? " or one mounted beneath it" : "") +
                        " does not support idmapped mounts");
        throw_errno("idmap " + m.source, err);
    }
    return tree;
}

std::string map_key(const std::vector<oci::IdMapping>& uids, const std::vector<oci::IdMapping>& gids) {
    return format_id_map(uids) + "/" + format_id_map(gids);
}

}  // namespace

std::string format_id_map(const std::vector<oci::IdMapping>& m) {
    std::string s;
    for (const oci::IdMapping& e : m)
        s += std::to_string(e.container_id) + " " + std::to_string(e.host_id) + " " + std::to_string(e.size) +
             "\n";
    return s;
}

bool wants_idmap(const oci::Mount& m, const MountOptions& o) {
    return o.idmap || !m.uid_mappings.empty() || !m.gid_mappings.empty();
}

std::vector<UniqueFd> prepare_idmapped_mounts(const oci::Config& c) {
    std::vector<UniqueFd> trees;
    // Mounts with the same mappings share one user namespace.
    std::map<std::string, UniqueFd> userns;
    for (size_t i = 0; i < c.mounts.size(); ++i) {
        const oci::Mount& m = c.mounts[i];
        MountOptions o = parse_mount_options(m.options);
        if (!wants_idmap(m, o)) continue;
        std::string field = "mounts[" + std::to_string(i) + "].";
        int ns = -1;
        if (!m.uid_mappings.empty()) {
            UniqueFd& fd = userns[map_key(m.uid_mappings, m.gid_mappings)];
            if (!fd) fd = userns_with_maps(m.uid_mappings, m.gid_mappings, field);
            ns = fd.get();
        } else {
            // idmap/ridmap alone: the container's own mapping (validate made sure there
            // is a user namespace to take it from).
            const oci::Namespace* user =
                c.linux ? c.linux->find_namespace(oci::NamespaceType::user) : nullptr;
            if (!user)
                throw Error(field + "options: idmap needs uidMappings and gidMappings, or a user namespace");
            if (!user->path.empty()) {
                UniqueFd& fd = userns["path:" + user->path];
                if (!fd) fd.reset(::open(user->path.c_str(), O_RDONLY | O_CLOEXEC));
                if (!fd) throw_errno("linux.namespaces: open user namespace " + user->path);
                ns = fd.get();
            } else {
                UniqueFd& fd = userns[map_key(c.linux->uid_mappings, c.linux->gid_mappings)];
                if (!fd) fd = userns_with_maps(c.linux->uid_mappings, c.linux->gid_mappings, "linux.");
                ns = fd.get();
            }
        }
        if (trees.size() < c.mounts.size()) trees.resize(c.mounts.size());
        try {
            trees[i] = idmapped_tree(m, o, ns);
        } catch (const Error& e) {
            throw e.wrapped("mounts[" + std::to_string(i) + "]: idmapped mount " + m.source + " on " +
                            m.destination);
        }
    }
    return trees;
}

}  // namespace detail

bool idmapped_mounts_supported() {
    // Asking for an idmapping by the initial user namespace fails with EPERM in
    // build_mount_idmapped(), before any path is looked up, on kernels that know
    // MOUNT_ATTR_IDMAP (5.12); older ones answer ENOSYS or EINVAL. Nothing is changed,
    // and no privilege is needed to ask.
    UniqueFd self(::open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC));
    if (!self) return false;
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(self.get());
    return ::mount_setattr(AT_FDCWD, "/", 0, &attr, sizeof attr) < 0 && errno == EPERM;
}

}  // namespace tarn::ns
