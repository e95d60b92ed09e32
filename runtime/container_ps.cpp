#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace {

// Processes of the container: everything sharing the init's pid namespace when it
// has its own; otherwise the init alone.
std::vector<int> container_pids(const detail::Record& rec, const oci::Config& cfg) {
    std::vector<int> out;
    if (auto cg = detail::open_cgroup(rec); cg && cg->exists()) {
        for (pid_t p : cg->pids()) out.push_back(p);
        return out;
    }
    bool own_pidns = false;
    if (cfg.linux)
        if (const oci::Namespace* n = cfg.linux->find_namespace(oci::NamespaceType::pid)) own_pidns = n->path.empty();
    if (!own_pidns) return {rec.state.pid};
    struct stat init_ns;
    if (::stat(("/proc/" + std::to_string(rec.state.pid) + "/ns/pid").c_str(), &init_ns) < 0) return out;
    DIR* d = ::opendir("/proc");
    if (!d) throw_errno("open /proc");
    while (dirent* e = ::readdir(d)) {
        int pid = std::atoi(e->d_name);
        if (pid <= 0) continue;
        struct stat st;
        if (::stat(("/proc/" + std::string(e->d_name) + "/ns/pid").c_str(), &st) == 0 && st.st_ino == init_ns.st_ino &&
            st.st_dev == init_ns.st_dev)
            out.push_back(pid);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

int ps(const GlobalOptions& g, const std::string& id, const std::string& format, const std::vector<std::string>& ps_args) {
    try {
        if (format != "table" && format != "json") throw Error("--format must be table or json, got \"" + format + "\"");
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        std::vector<int> pids;
        if (st != oci::Status::stopped && st != oci::Status::creating) pids = container_pids(rec, dir.load_config());
        if (format == "json") {
            // containerd parses this output (stdout and stderr together) as a JSON array of ints.
            std::string out = nlohmann::json(pids).dump() + "\n";
            (void)!::write(1, out.data(), out.size());
            return 0;
        }
        // Table: the host's ps, filtered to the container's pids, as runc does.
        std::string cmd = "ps";
        std::vector<std::string> args = ps_args.empty() ? std::vector<std::string>{"-ef"} : ps_args;
        for (const std::string& a : args) cmd += " '" + a + "'";
        FILE* p = ::popen(cmd.c_str(), "r");
        if (!p) throw_errno("run ps");
        char line[8192];
        int pid_col = -1;
        bool header = true;
        std::string out;
        while (std::fgets(line, sizeof line, p)) {
            std::string l = line;
            if (header) {
                header = false;
                out += l;
                std::vector<std::string> cols;
                char* save = nullptr;
                for (char* t = strtok_r(line, " \t\n", &save); t; t = strtok_r(nullptr, " \t\n", &save)) cols.push_back(t);
                auto it = std::find(cols.begin(), cols.end(), "PID");
                if (it == cols.end()) {
                    ::pclose(p);
                    throw Error("ps output has no PID column");
                }
                pid_col = static_cast<int>(it - cols.begin());
                continue;
            }
            char copy[8192];
            std::snprintf(copy, sizeof copy, "%s", l.c_str());
            char* save = nullptr;
            int i = 0;
            for (char* t = strtok_r(copy, " \t\n", &save); t; t = strtok_r(nullptr, " \t\n", &save), ++i) {
                if (i != pid_col) continue;
                if (std::find(pids.begin(), pids.end(), std::atoi(t)) != pids.end()) out += l;
                break;
            }
        }
        ::pclose(p);
        (void)!::write(1, out.data(), out.size());
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("ps " + id);
    }
}

}  // namespace tarn::runtime
