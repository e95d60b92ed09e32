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

}  // namespace tarn::oci
