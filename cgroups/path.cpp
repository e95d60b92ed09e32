// linux.cgroupsPath -> the cgroup path inside the hierarchies.
#include <algorithm>
#include <vector>

#include "cgroups/detail.hpp"

namespace tarn::cgroups {

namespace detail {

namespace {

std::vector<std::string_view> components(std::string_view p) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i <= p.size()) {
        size_t j = p.find('/', i);
        if (j == std::string_view::npos) j = p.size();
        if (j > i) out.push_back(p.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

std::string quoted(std::string_view s) {
    return "\"" + std::string(s) + "\"";
}

}  // namespace

std::string own_cgroup(std::string_view text) {
    // Lines are "hierarchy-id:controllers:path"; the path may itself hold ':'.
    std::string first, systemd;
    for (std::string_view line : lines(text)) {
        size_t c1 = line.find(':');
        if (c1 == std::string_view::npos) continue;
        size_t c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) continue;
        std::string_view id = line.substr(0, c1), ctrls = line.substr(c1 + 1, c2 - c1 - 1);
        std::string path(line.substr(c2 + 1));
        if (id == "0" && ctrls.empty()) return path;  // the cgroup2 entry
        if (ctrls == "name=systemd" && systemd.empty()) systemd = path;
        if (first.empty()) first = path;
    }
    if (!systemd.empty()) return systemd;
    if (!first.empty()) return first;
    return "/";
}

std::string join_clean(std::string_view base, std::string_view rel, std::string_view what) {
    std::vector<std::string_view> parts;
    for (auto c : components(base)) {
        if (c == ".") continue;
        if (c == "..") {
            if (!parts.empty()) parts.pop_back();
            continue;
        }
        parts.push_back(c);
    }
    const size_t floor = parts.size();
    for (auto c : components(rel)) {
        if (c == ".") continue;
        if (c == "..") {
            if (parts.size() <= floor)
                throw Error(std::string(what) + ": \"..\" climbs above " +
                            (floor ? quoted(base) : "the cgroup root"));
            parts.pop_back();
            continue;
        }
        parts.push_back(c);
    }
    std::string out;
    for (auto c : parts) {
        out += '/';
        out += c;
    }
    return out.empty() ? "/" : out;
}

std::string resolve_path(std::string_view cgroups_path, std::string_view id, bool systemd,
                         std::string_view own) {
    std::string what = "linux.cgroupsPath " + quoted(cgroups_path);
    if (systemd) return unit_for(cgroups_path, id).path;
    if (cgroups_path.empty()) {
        if (id.empty() || id == "." || id == ".." || id.find('/') != std::string_view::npos)
            throw Error("container id " + quoted(id) + ": not usable as a cgroup name");
        return "/tarn/" + std::string(id);
    }
    if (cgroups_path.front() != '/' && std::count(cgroups_path.begin(), cgroups_path.end(), ':') == 2)
        throw Error(what +
                    ": \"slice:prefix:name\" is the systemd driver's syntax: run with --systemd-cgroup, or use a "
                    "path such as \"/tarn/" +
                    std::string(id) + "\"");
    std::string out = cgroups_path.front() == '/' ? join_clean("/", cgroups_path, what)
                                                  : join_clean(own, cgroups_path, what);
    if (out == "/") throw Error(what + ": names the root cgroup");
    return out;
}

}  // namespace detail

std::string resolve_path(std::string_view cgroups_path, std::string_view id, bool systemd) {
    std::string own = "/";
    if (!cgroups_path.empty() && cgroups_path.front() != '/' && !systemd)
        own = detail::own_cgroup(read_file("/proc/self/cgroup"));
    return detail::resolve_path(cgroups_path, id, systemd, own);
}

}  // namespace tarn::cgroups
