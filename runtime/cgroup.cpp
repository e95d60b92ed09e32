#include "runtime/cgroup.hpp"

namespace tarn::runtime::detail {

std::unique_ptr<cgroups::Manager> open_cgroup(const Record& r) {
    if (r.cgroup_path.empty()) return nullptr;
    // The unit's cgroup was read from systemd at create; systemd is asked again only to
    // change or stop the unit.
    if (!r.systemd_unit.empty())
        return cgroups::systemd::open({r.systemd_unit, "", r.cgroup_path, r.systemd_user}, cgroups::detect());
    return cgroups::open(r.cgroup_path, cgroups::detect());
}

}  // namespace tarn::runtime::detail
