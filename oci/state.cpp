// The state document (runtime.md "State") that `state` prints, with runc's extra members.
#include "oci/json_io.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

std::string_view to_string(Status s) {
    switch (s) {
        case Status::creating:
            return "creating";
        case Status::created:
            return "created";
        case Status::running:
            return "running";
        case Status::stopped:
            return "stopped";
        case Status::paused:
            return "paused";
    }
    return "unknown";
}

nlohmann::json to_json(const State& s) {
    nlohmann::json j = {
        {"ociVersion", s.oci_version},
        {"id", s.id},
        {"status", to_string(s.status)},
        {"bundle", s.bundle},
        {"rootfs", s.rootfs},
        {"created", s.created},
        {"owner", s.owner},
    };
    // runtime.md: pid is REQUIRED only while created or running; 0 means there is none.
    if (s.pid > 0) j["pid"] = s.pid;
    detail::put_if(j, "annotations", s.annotations);
    return j;
}

std::string to_json_text(const State& s, int indent) {
    return detail::dump_text(to_json(s), indent, "state");
}

std::string process_state_json(const State& state, int pid, const std::string& metadata) {
    nlohmann::json j = {
        {"ociVersion", state.oci_version},
        // Names of the fds sent with this message, in SCM_RIGHTS order.
        {"fds", {"seccompFd"}},
        {"pid", pid},
        {"state", to_json(state)},
    };
    detail::put_if(j, "metadata", metadata);
    return detail::dump_text(j, -1, "container process state");
}

}  // namespace tarn::oci
