// Which cgroup layout the host has, from the file system types under the root.
#include <linux/magic.h>
#include <sys/vfs.h>

#include <cstdio>

#include "cgroups/cgroups.hpp"

namespace tarn::cgroups {

std::string_view to_string(Mode m) {
    switch (m) {
        case Mode::unified:
            return "unified";
        case Mode::hybrid:
            return "hybrid";
        case Mode::legacy:
            return "legacy";
    }
    return "unknown";
}

Mode detect(const std::string& root) {
    struct statfs fs;
    if (::statfs(root.c_str(), &fs) < 0) throw_errno("detect cgroup mode: statfs " + root);
    if (fs.f_type == CGROUP2_SUPER_MAGIC) return Mode::unified;
    // A v1 layout is a tmpfs holding one mount per hierarchy; a single v1 hierarchy
    // mounted at the root itself is unusual but still v1.
    if (fs.f_type == CGROUP_SUPER_MAGIC) return Mode::legacy;
    if (fs.f_type != TMPFS_MAGIC) {
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(fs.f_type));
        throw Error("detect cgroup mode: " + root +
                    ": neither cgroup2 nor a tmpfs of v1 hierarchies (file system type " + hex + ")");
    }
    std::string unified = root + "/unified";
    if (::statfs(unified.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) return Mode::hybrid;
    return Mode::legacy;
}

}  // namespace tarn::cgroups
