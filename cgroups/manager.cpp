// open(): the manager for the host's layout, and what both managers share.
#include "cgroups/detail.hpp"

namespace tarn::cgroups {

bool Manager::exists() const {
    // Any of them: a v1 create killed between its mkdirs leaves a subset, which is
    // still this cgroup to kill and remove.
    for (const std::string& d : directories())
        if (detail::is_dir(d)) return true;
    return false;
}

std::unique_ptr<Manager> Manager::child(const std::string&) const {
    return nullptr;
}

bool Manager::vacant() const {
    return false;
}

void Manager::reset_counters() {}

std::unique_ptr<Manager> open(const std::string& path, Mode mode, const std::string& root) {
    if (path.empty() || path.front() != '/' || path == "/")
        throw Error("cgroup path \"" + path +
                    "\": expected an absolute path below the root (see resolve_path)");
    if (mode == Mode::unified) return detail::open_v2(path, root);
    return detail::open_v1(path, mode, root);
}

namespace detail {

void check_memory_usage(const oci::Resources& r, uint64_t memory_usage, uint64_t memory_swap_usage) {
    if (!r.memory || !r.memory->check_before_update.value_or(false)) return;
    int64_t limit = r.memory->limit.value_or(0), swap = r.memory->swap.value_or(0);
    const std::string f = "linux.resources.memory.";
    if (limit > 0 && static_cast<uint64_t>(limit) <= memory_usage)
        throw Error(f + "limit: " + std::to_string(limit) + " is not above the current usage (" +
                    std::to_string(memory_usage) + " bytes; checkBeforeUpdate is set)");
    if (swap > 0 && static_cast<uint64_t>(swap) <= memory_swap_usage)
        throw Error(f + "swap: " + std::to_string(swap) + " is not above the current memory+swap usage (" +
                    std::to_string(memory_swap_usage) + " bytes; checkBeforeUpdate is set)");
}

}  // namespace detail
}  // namespace tarn::cgroups
