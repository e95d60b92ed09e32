// When a used sandbox's cgroup may serve the next sandbox (docs/pool.md, Cgroups of
// used sandboxes): only if no workload could have written to it. The spawner resets
// what a claim sets (memory and pids limits) and the counters the kernel lets be
// reset; anything else a workload wrote to its own cgroup (cpu shares, blkio
// weights, freezer state, notify_on_release...) would pass to the next sandbox.
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <sstream>

#include "runtime/pool/detail.hpp"

namespace tarn::pool::detail {
namespace {

// A mount point as mountinfo escapes it (space, tab, newline, backslash as \NNN octal).
std::string unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        bool octal =
            s[i] == '\\' && i + 3 < s.size() &&
            std::all_of(s.begin() + i + 1, s.begin() + i + 4, [](char c) { return c >= '0' && c <= '7'; });
        if (octal) {
            out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

// `path` is `dir` or below it.
bool at_or_below(const std::string& path, const std::string& dir) {
    if (dir == "/") return true;
    return path == dir ||
           (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

bool has_option(const oci::Mount& m, std::string_view o) {
    return std::find(m.options.begin(), m.options.end(), o) != m.options.end();
}

bool is_bind(const oci::Mount& m) {
    return m.type == "bind" || has_option(m, "bind") || has_option(m, "rbind");
}

}  // namespace

bool reaches_cgroupfs(const std::string& source, const std::string& mountinfo) {
    std::istringstream in(mountinfo);
    std::string line;
    while (std::getline(in, line)) {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        std::istringstream f(line);
        std::string id, parent, dev, root, point, field;
        if (!(f >> id >> parent >> dev >> root >> point)) continue;
        while (f >> field && field != "-") {
        }
        std::string fstype;
        if (!(f >> fstype) || (fstype != "cgroup" && fstype != "cgroup2")) continue;
        std::string mnt = unescape(point);
        // A cgroup filesystem at or below the source comes with a recursive bind; a
        // source inside one is part of it.
        if (at_or_below(mnt, source) || at_or_below(source, mnt)) return true;
    }
    return false;
}

std::string cgroup_reuse_refusal(const oci::Config& c, const std::string& mountinfo) {
    if (!c.linux || !c.linux->find_namespace(oci::NamespaceType::pid))
        return "the template has no pid namespace of its own";
    if (!c.process || !c.process->capabilities)
        return "process.capabilities is absent: the workload keeps every capability";
    const auto& bounding = c.process->capabilities->bounding;
    auto has = [&](std::string_view cap) {
        return std::find(bounding.begin(), bounding.end(), cap) != bounding.end();
    };
    // With CAP_SYS_ADMIN it can mount a cgroup filesystem, or remount the template's
    // read-write. With CAP_SETFCAP, in a user namespace of its own (which needs no
    // privilege) it can map host root, whose files a cgroup's are, and there mount its
    // own cgroup's hierarchies (Linux 5.12 made mapping host root need CAP_SETFCAP).
    if (has("CAP_SYS_ADMIN"))
        return "process.capabilities.bounding has CAP_SYS_ADMIN: the workload could mount its cgroup "
               "read-write";
    if (has("CAP_SETFCAP"))
        return "process.capabilities.bounding has CAP_SETFCAP: in a user namespace of its own the workload "
               "could write its cgroup";
    for (size_t i = 0; i < c.mounts.size(); ++i) {
        const oci::Mount& m = c.mounts[i];
        std::string where = "mounts[" + std::to_string(i) + "] (" + m.destination + ")";
        if ((m.type == "cgroup" || m.type == "cgroup2") && !has_option(m, "ro"))
            return where + ": the cgroup filesystem is mounted read-write";
        // Whatever its options: a read-only rbind may leave the mounts below it writable.
        char real[PATH_MAX];
        std::string source = ::realpath(m.source.c_str(), real) ? real : m.source;
        if (is_bind(m) && !m.source.empty() && reaches_cgroupfs(source, mountinfo))
            return where + ": a bind of " + m.source + ", which reaches a cgroup filesystem";
    }
    return "";
}

}  // namespace tarn::pool::detail
