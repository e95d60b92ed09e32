// OCI mount options ("ro", "rbind", "rnosuid", "mode=755", ...) split into what
// mount(2), mount_setattr(2) and the propagation change each need.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tarn::ns {

struct MountOptions {
    unsigned long flags = 0;        // MS_* for mount(2) of a filesystem
    uint64_t attr_set = 0;          // MOUNT_ATTR_* for the mount itself
    uint64_t attr_clr = 0;
    uint64_t rec_attr_set = 0;      // MOUNT_ATTR_* applied recursively ("rro", "rnosuid", ...)
    uint64_t rec_attr_clr = 0;
    unsigned long propagation = 0;  // MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE, maybe | MS_REC
    bool bind = false;
    bool recursive_bind = false;
    bool idmap = false;
    bool recursive_idmap = false;
    std::string data;               // everything the kernel parses itself, comma-joined
};

// Unknown options are filesystem data (e.g. "size=64k"); "X-mount.*" hints are dropped.
MountOptions parse_mount_options(const std::vector<std::string>& options);

// The flag names this build understands, for `tarn features`.
std::vector<std::string> known_mount_options();

}  // namespace tarn::ns
