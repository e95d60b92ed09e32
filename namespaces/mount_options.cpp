#include "namespaces/mount_options.hpp"

#include <sys/mount.h>

#include <string_view>

namespace tarn::ns {
namespace {

// MOUNT_ATTR_* as in <linux/mount.h>, which cannot be included beside glibc's <sys/mount.h>
// on every glibc; the values are ABI.
constexpr uint64_t kAttrRdonly = 0x1, kAttrNosuid = 0x2, kAttrNodev = 0x4, kAttrNoexec = 0x8,
                   kAttrAtimeMask = 0x70, kAttrRelatime = 0x0, kAttrNoatime = 0x10,
                   kAttrStrictatime = 0x20, kAttrNodiratime = 0x80, kAttrNosymfollow = 0x200000;

struct FlagOpt {
    std::string_view name;
    bool clear;           // "rw" clears what "ro" sets
    unsigned long flag;   // MS_* for a filesystem mount
    uint64_t attr;        // MOUNT_ATTR_* for a bind mount
};

constexpr FlagOpt kFlags[] = {
    {"ro", false, MS_RDONLY, kAttrRdonly},
    {"rw", true, MS_RDONLY, kAttrRdonly},
    {"nosuid", false, MS_NOSUID, kAttrNosuid},
    {"suid", true, MS_NOSUID, kAttrNosuid},
    {"nodev", false, MS_NODEV, kAttrNodev},
    {"dev", true, MS_NODEV, kAttrNodev},
    {"noexec", false, MS_NOEXEC, kAttrNoexec},
    {"exec", true, MS_NOEXEC, kAttrNoexec},
    {"sync", false, MS_SYNCHRONOUS, 0},
    {"async", true, MS_SYNCHRONOUS, 0},
    {"dirsync", false, MS_DIRSYNC, 0},
    {"mand", false, MS_MANDLOCK, 0},
    {"nomand", true, MS_MANDLOCK, 0},
    {"noatime", false, MS_NOATIME, kAttrNoatime},
    {"atime", true, MS_NOATIME, kAttrNoatime},
    {"nodiratime", false, MS_NODIRATIME, kAttrNodiratime},
    {"diratime", true, MS_NODIRATIME, kAttrNodiratime},
    {"relatime", false, MS_RELATIME, kAttrRelatime},
    {"norelatime", true, MS_RELATIME, 0},
    {"strictatime", false, MS_STRICTATIME, kAttrStrictatime},
    {"nostrictatime", true, MS_STRICTATIME, 0},
    {"lazytime", false, MS_LAZYTIME, 0},
    {"nolazytime", true, MS_LAZYTIME, 0},
    {"silent", false, MS_SILENT, 0},
    {"loud", true, MS_SILENT, 0},
    {"iversion", false, MS_I_VERSION, 0},
    {"noiversion", true, MS_I_VERSION, 0},
    {"nosymfollow", false, MS_NOSYMFOLLOW, kAttrNosymfollow},
    {"symfollow", true, MS_NOSYMFOLLOW, kAttrNosymfollow},
    {"remount", false, MS_REMOUNT, 0},
};

struct RecOpt {
    std::string_view name;
    bool clear;
    uint64_t attr;
};

constexpr RecOpt kRecursive[] = {
    {"rro", false, kAttrRdonly},           {"rrw", true, kAttrRdonly},
    {"rnosuid", false, kAttrNosuid},       {"rsuid", true, kAttrNosuid},
    {"rnodev", false, kAttrNodev},         {"rdev", true, kAttrNodev},
    {"rnoexec", false, kAttrNoexec},       {"rexec", true, kAttrNoexec},
    {"rnodiratime", false, kAttrNodiratime}, {"rdiratime", true, kAttrNodiratime},
    {"rrelatime", false, kAttrRelatime},   {"rnorelatime", true, 0},
    {"rnoatime", false, kAttrNoatime},     {"ratime", true, kAttrNoatime},
    {"rstrictatime", false, kAttrStrictatime}, {"rnostrictatime", true, 0},
    {"rnosymfollow", false, kAttrNosymfollow}, {"rsymfollow", true, kAttrNosymfollow},
};

struct PropOpt {
    std::string_view name;
    unsigned long flags;
};

constexpr PropOpt kPropagation[] = {
    {"private", MS_PRIVATE},   {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},     {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},       {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

// The atime options as mount_setattr(2) takes them: one three-bit field, changed only by
// clearing the whole MOUNT_ATTR__ATIME mask and setting the new mode (anything else is
// EINVAL). "atime"/"nostrictatime" go back to the default, relatime; "norelatime" is
// strictatime.
struct AtimeOpt {
    std::string_view name;
    uint64_t mode;
};
constexpr AtimeOpt kAtime[] = {
    {"noatime", kAttrNoatime},   {"atime", kAttrRelatime},         {"relatime", kAttrRelatime},
    {"norelatime", kAttrStrictatime}, {"strictatime", kAttrStrictatime}, {"nostrictatime", kAttrRelatime},
};

const AtimeOpt* atime_option(std::string_view name) {
    for (const AtimeOpt& a : kAtime)
        if (a.name == name) return &a;
    return nullptr;
}

void set_atime(uint64_t& set, uint64_t& clr, uint64_t mode) {
    set = (set & ~kAttrAtimeMask) | mode;
    clr |= kAttrAtimeMask;
}

}  // namespace

MountOptions parse_mount_options(const std::vector<std::string>& options) {
    MountOptions m;
    for (const std::string& o : options) {
        if (o == "bind" || o == "rbind") {
            m.bind = true;
            m.recursive_bind = m.recursive_bind || o == "rbind";
            continue;
        }
        if (o == "idmap" || o == "ridmap") {
            m.idmap = true;
            m.recursive_idmap = m.recursive_idmap || o == "ridmap";
            continue;
        }
        if (o == "tmpcopyup" || o.rfind("X-mount.", 0) == 0 || o == "defaults") continue;
        bool matched = false;
        for (const FlagOpt& f : kFlags) {
            if (o != f.name) continue;
            matched = true;
            if (f.clear) m.flags &= ~f.flag;
            else m.flags |= f.flag;
            if (const AtimeOpt* a = atime_option(o)) {
                set_atime(m.attr_set, m.attr_clr, a->mode);
            } else if (f.clear) {
                m.attr_set &= ~f.attr;
                m.attr_clr |= f.attr;
            } else {
                m.attr_set |= f.attr;
                m.attr_clr &= ~f.attr;
            }
            break;
        }
        for (const RecOpt& r : kRecursive) {
            if (matched || o != r.name) continue;
            matched = true;
            if (const AtimeOpt* a = atime_option(o.substr(1))) {
                set_atime(m.rec_attr_set, m.rec_attr_clr, a->mode);
            } else if (r.clear) {
                m.rec_attr_set &= ~r.attr;
                m.rec_attr_clr |= r.attr;
            } else {
                m.rec_attr_set |= r.attr;
                m.rec_attr_clr &= ~r.attr;
            }
        }
        for (const PropOpt& p : kPropagation) {
            if (matched || o != p.name) continue;
            matched = true;
            m.propagation = p.flags;
        }
        if (!matched) {
            if (!m.data.empty()) m.data += ',';
            m.data += o;
        }
    }
    return m;
}

std::vector<std::string> known_mount_options() {
    std::vector<std::string> out = {"bind", "rbind", "idmap", "ridmap"};
    for (const FlagOpt& f : kFlags) out.emplace_back(f.name);
    for (const RecOpt& r : kRecursive) out.emplace_back(r.name);
    for (const PropOpt& p : kPropagation) out.emplace_back(p.name);
    return out;
}

}  // namespace tarn::ns
