#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace {

int set_frozen(const GlobalOptions& g, const std::string& id, bool freeze) {
    const char* verb = freeze ? "pause" : "resume";
    try {
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        if (freeze && st != oci::Status::running)
            throw Error("cannot pause a container that is " + std::string(oci::to_string(st)));
        if (!freeze && st != oci::Status::paused)
            throw Error("cannot resume a container that is " + std::string(oci::to_string(st)));
        auto cg = detail::open_cgroup(rec);
        if (!cg) throw Error("container has no cgroup");
        if (freeze) cg->freeze();
        else cg->thaw();
        return 0;
    } catch (const Error& e) {
        throw e.wrapped(std::string(verb) + " " + id);
    }
}

}  // namespace

int pause(const GlobalOptions& g, const std::string& id) { return set_frozen(g, id, true); }
int resume(const GlobalOptions& g, const std::string& id) { return set_frozen(g, id, false); }

}  // namespace tarn::runtime
