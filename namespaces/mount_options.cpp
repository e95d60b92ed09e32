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

bool is_atime_attr(uint64_t a) { return a == kAttrNoatime || a == kAttrStrictatime || a == kAttrRelatime; }

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
            if (f.clear) {
                m.flags &= ~f.flag;
                m.attr_set &= ~f.attr;
                m.attr_clr |= f.attr;
            } else {
                m.flags |= f.flag;
                if (is_atime_attr(f.attr)) {
                    // The atime modes are one field: choosing one clears the others.
                    m.attr_set &= ~kAttrAtimeMask;
                    m.attr_clr |= kAttrAtimeMask;
                }
                m.attr_set |= f.attr;
                m.attr_clr &= ~f.attr;
            }
            break;
        }
        for (const RecOpt& r : kRecursive) {
            if (matched || o != r.name) continue;
            matched = true;
            if (r.clear) {
                m.rec_attr_set &= ~r.attr;
                m.rec_attr_clr |= r.attr == 0 ? 0 : r.attr;
            } else {
                if (is_atime_attr(r.attr)) {
                    m.rec_attr_set &= ~kAttrAtimeMask;
                    m.rec_attr_clr |= kAttrAtimeMask;
                }
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
    std::vector<std::string> out = {"bind", "rbind"};
    for (const FlagOpt& f : kFlags) out.emplace_back(f.name);
    for (const RecOpt& r : kRecursive) out.emplace_back(r.name);
    for (const PropOpt& p : kPropagation) out.emplace_back(p.name);
    return out;
}

}  // namespace tarn::ns
