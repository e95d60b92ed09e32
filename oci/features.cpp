// The features document (features.md, features-linux.md) that `features` prints.
#include "oci/json_io.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

// Lists are always written: the struct states what this build supports, so an empty list
// means "none", which the spec distinguishes from an absent member ("unknown").
nlohmann::json to_json(const Features& f) {
    using nlohmann::json;
    json linux = {
        {"namespaces", f.namespaces},
        {"capabilities", f.capabilities},
        {"cgroup",
         {{"v1", f.cgroup_v1},
          {"v2", f.cgroup_v2},
          {"systemd", f.cgroup_systemd},
          {"systemdUser", f.cgroup_systemd_user},
          {"rdma", f.cgroup_rdma}}},
        {"seccomp",
         {{"enabled", f.seccomp_enabled},
          {"actions", f.seccomp_actions},
          {"operators", f.seccomp_operators},
          {"archs", f.seccomp_archs},
          {"knownFlags", f.seccomp_known_flags},
          {"supportedFlags", f.seccomp_supported_flags}}},
        {"apparmor", {{"enabled", f.apparmor}}},
        {"selinux", {{"enabled", f.selinux}}},
        {"intelRdt", {{"enabled", f.intel_rdt}}},
        {"mountExtensions", {{"idmap", {{"enabled", f.mount_idmap}}}}},
        {"netDevices", {{"enabled", f.net_devices}}},
    };
    // memoryPolicy has no "enabled" member; a build without it recognises no modes or flags.
    std::vector<std::string> none;
    linux["memoryPolicy"] = {{"modes", f.memory_policy ? f.memory_policy_modes : none},
                             {"flags", f.memory_policy ? f.memory_policy_flags : none}};

    json j = {
        {"ociVersionMin", f.oci_version_min},
        {"ociVersionMax", f.oci_version_max},
        {"hooks", f.hooks},
        {"mountOptions", f.mount_options},
        {"linux", std::move(linux)},
        {"potentiallyUnsafeConfigAnnotations", f.potentially_unsafe_annotations},
    };
    detail::put_if(j, "annotations", f.annotations);
    return j;
}

}  // namespace tarn::oci
