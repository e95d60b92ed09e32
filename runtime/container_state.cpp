#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/lifecycle.hpp"

namespace tarn::runtime {

int state(const GlobalOptions& g, const std::string& id) {
    try {
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        std::string out = oci::to_json_text(detail::live_state(dir, rec), 2) + "\n";
        (void)!::write(1, out.data(), out.size());
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("state " + id);
    }
}

int list(const GlobalOptions& g, const std::string& format, bool quiet) {
    if (format != "table" && format != "json") throw Error("list: --format must be table or json, got \"" + format + "\"");
    std::vector<oci::State> states;
    if (DIR* d = ::opendir(g.root.c_str())) {
        while (dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name == "." || name == ".." || e->d_type != DT_DIR) continue;
            try {
                detail::ContainerDir dir = detail::ContainerDir::open(g.root, name);
                states.push_back(detail::live_state(dir, dir.load()));
            } catch (const Error&) {
                // Deleted while we listed: not an error for `list`.
            }
        }
        ::closedir(d);
    }
    std::sort(states.begin(), states.end(), [](const oci::State& a, const oci::State& b) { return a.id < b.id; });
    std::string out;
    if (quiet) {
        for (const oci::State& s : states) out += s.id + "\n";
    } else if (format == "json") {
        nlohmann::json arr = nlohmann::json::array();
        for (const oci::State& s : states) arr.push_back(oci::to_json(s));
        out = arr.dump() + "\n";
    } else {
        char line[4096];
        std::snprintf(line, sizeof line, "%-12s %-8s %-10s %-40s %-32s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER");
        out += line;
        for (const oci::State& s : states) {
            std::snprintf(line, sizeof line, "%-12s %-8d %-10s %-40s %-32s %s\n", s.id.c_str(), s.pid,
                          std::string(oci::to_string(s.status)).c_str(), s.bundle.c_str(), s.created.c_str(),
                          s.owner.c_str());
            out += line;
        }
    }
    (void)!::write(1, out.data(), out.size());
    return 0;
}

}  // namespace tarn::runtime
