// The runtime's use of the cgroups library: which cgroup a container has, opened
// from its record. Internal to runtime/.
#pragma once

#include <memory>

#include "cgroups/cgroups.hpp"
#include "runtime/container.hpp"

namespace tarn::runtime::detail {

// The container's cgroup, or null when it has none recorded (a create killed early).
std::unique_ptr<cgroups::Manager> open_cgroup(const Record& r);

}  // namespace tarn::runtime::detail
