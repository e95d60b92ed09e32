// Resource pools: a parent cgroup carrying an aggregate budget, one child cgroup
// per sandbox below it (the warm pool's layout).
#include "cgroups/detail.hpp"

namespace tarn::cgroups {

namespace {

oci::Resources budget_resources(const PoolBudget& b, Mode mode) {
    oci::Resources r;
    if (b.memory_max) {
        oci::Memory m;
        m.limit = b.memory_max;
        r.memory = m;
    }
    if (b.cpu_quota || b.cpu_period || b.cpu_weight) {
        oci::Cpu c;
        c.quota = b.cpu_quota;
        c.period = b.cpu_period;
        if (b.cpu_weight) {
            if (*b.cpu_weight < 1 || *b.cpu_weight > 10000)
                throw Error("pool budget: cpu weight must be between 1 and 10000, got " +
                            std::to_string(*b.cpu_weight));
            // v2 takes the weight as is; v1 gets the shares the kernel would store.
            if (mode == Mode::unified)
                r.unified["cpu.weight"] = std::to_string(*b.cpu_weight);
            else
                c.shares = detail::weight_to_shares(*b.cpu_weight);
        }
        r.cpu = c;
    }
    if (b.pids_max) r.pids = oci::Pids{b.pids_max};
    return r;
}

void check_name(const std::string& name) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        throw Error("sandbox name \"" + name + "\": must be a single path component");
}

}  // namespace

ResourcePool ResourcePool::create(const std::string& path, const PoolBudget& budget, Mode mode,
                                  const std::string& root) {
    oci::Resources r = budget_resources(budget, mode);
    auto mgr = cgroups::open(path, mode, root);
    mgr->create(r);
    try {
        mgr->apply(r);
    } catch (...) {
        try {
            mgr->destroy();
        } catch (const Error&) {
        }
        throw;
    }
    return ResourcePool(std::move(mgr), root);
}

ResourcePool ResourcePool::open(const std::string& path, Mode mode, const std::string& root) {
    auto mgr = cgroups::open(path, mode, root);
    if (!mgr->exists()) throw Error("resource pool " + path + ": no such cgroup", ENOENT);
    return ResourcePool(std::move(mgr), root);
}

void ResourcePool::set_budget(const PoolBudget& budget) {
    mgr_->apply(budget_resources(budget, mgr_->mode()));
}

std::unique_ptr<Manager> ResourcePool::create_sandbox(const std::string& name,
                                                      const oci::Resources& resources) {
    auto sb = open_sandbox(name);
    sb->create(resources);
    try {
        sb->apply(resources);
    } catch (...) {
        try {
            sb->destroy();
        } catch (const Error&) {
        }
        throw;
    }
    return sb;
}

std::unique_ptr<Manager> ResourcePool::open_sandbox(const std::string& name) const {
    check_name(name);
    if (auto sb = mgr_->child(name)) return sb;
    return cgroups::open(mgr_->path() + "/" + name, mgr_->mode(), root_);
}

bool ResourcePool::recycle_sandbox(const std::string& name, const oci::Resources& resources) {
    auto sb = open_sandbox(name);
    if (!sb->vacant()) return false;
    // What a sandbox's claim sets (memory, pids) goes back to the template's value, or
    // to no limit; nothing else of a sandbox's cgroup is written after it is made.
    oci::Resources reset;
    reset.memory = resources.memory.value_or(oci::Memory{});
    if (reset.memory->limit.value_or(0) == 0) reset.memory->limit = -1;
    reset.memory->check_before_update = false;  // usage left by the last sandbox is no reason to fail
    reset.pids = resources.pids.value_or(oci::Pids{});
    if (reset.pids->limit.value_or(0) == 0) reset.pids->limit = -1;
    sb->apply(reset);
    sb->reset_counters();
    return true;
}

std::vector<std::string> ResourcePool::sandboxes() const {
    // The first directory is representative: every hierarchy has the same children.
    auto dirs = mgr_->directories();
    if (dirs.empty() || !detail::is_dir(dirs.front())) return {};
    return detail::list_subdirs(dirs.front());
}

void ResourcePool::destroy() {
    std::optional<Error> first;
    for (const auto& name : sandboxes()) {
        try {
            open_sandbox(name)->destroy();
        } catch (const Error& e) {
            if (!first) first = e;
        }
    }
    if (first) throw first->wrapped("resource pool " + mgr_->path());
    mgr_->destroy();
}

}  // namespace tarn::cgroups
