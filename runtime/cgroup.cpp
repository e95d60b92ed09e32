#include "runtime/cgroup.hpp"

namespace tarn::runtime::detail {

std::unique_ptr<cgroups::Manager> open_cgroup(const Record& r) {
    if (r.cgroup_path.empty()) return nullptr;
    return cgroups::open(r.cgroup_path, cgroups::detect());
}

}  // namespace tarn::runtime::detail
