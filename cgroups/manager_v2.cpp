// The cgroup v2 manager, and the v2 tree setup the hybrid manager shares.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

std::set<std::string> words(const std::string& dir, std::string_view file) {
    std::set<std::string> out;
    for (auto& w : split_words(read(dir, file))) {
        // A fake cgroupfs in tests keeps what was written ("+memory"); the kernel
        // shows bare names.
        if (!w.empty() && w[0] == '+') w.erase(0, 1);
        out.insert(std::move(w));
    }
    return out;
}

std::string joined(const std::set<std::string>& s) {
    std::string out;
    for (const auto& w : s) out += (out.empty() ? "" : " ") + w;
    return out.empty() ? "none" : out;
}

// Enables in `dir`'s subtree_control what its children need.
void enable_controllers(const std::string& dir, const std::map<std::string, std::string>& needed) {
    auto available = words(dir, "cgroup.controllers");
    for (const auto& [c, field] : needed) {
        if (!available.count(c))
            throw Error(field + ": the " + c + " controller is not available in cgroup " + dir +
                        " (cgroup.controllers: " + joined(available) + ")");
    }
    auto enabled = words(dir, "cgroup.subtree_control");
    std::vector<std::string> missing;
    auto consider = [&](const std::string& c) {
        if (available.count(c) && !enabled.count(c) &&
            std::find(missing.begin(), missing.end(), c) == missing.end())
            missing.push_back(c);
    };
    for (const auto& c : v2_controllers()) consider(c);
    for (const auto& [c, field] : needed) consider(c);
    if (missing.empty()) return;

    std::string all;
    for (const auto& c : missing) all += (all.empty() ? "+" : " +") + c;
    if (write_errno(dir, "cgroup.subtree_control", all) == 0) return;
    // One refusal fails the whole write: go one by one, and only a needed
    // controller's refusal is an error.
    for (const auto& c : missing) {
        int err = write_errno(dir, "cgroup.subtree_control", "+" + c);
        auto it = needed.find(c);
        if (err == 0 || it == needed.end()) continue;
        std::string hint;
        if (err == EBUSY)
            hint =
                " (the cgroup has processes of its own, and cgroup v2 allows controllers only below cgroups "
                "without processes: pick a cgroupsPath outside it)";
        throw Error(
            "cgroup " + dir + ": enable +" + c + " in cgroup.subtree_control for " + it->second + hint, err);
    }
}

}  // namespace

void create_v2_tree(const std::string& root, const std::string& path,
                    const std::map<std::string, std::string>& needed, std::vector<std::string>& created) {
    std::vector<std::string> parts;
    for (size_t i = 0; i < path.size();) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        if (j > i) parts.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    // Top-down: a controller can be enabled in a cgroup only if its parent has it
    // enabled, so the root goes first and the leaf's own subtree_control is left
    // alone (the leaf holds the processes).
    std::string dir = root;
    for (const auto& part : parts) {
        enable_controllers(dir, needed);
        dir += "/" + part;
        if (::mkdir(dir.c_str(), 0755) == 0) {
            created.push_back(dir);
        } else if (errno != EEXIST) {
            throw_errno("cgroup " + dir + ": mkdir");
        }
    }
}

namespace {

class V2Manager final : public Manager {
public:
    V2Manager(std::string path, std::string root)
        : Manager(Mode::unified, std::move(path)), root_(std::move(root)), dir_(root_ + path_) {}

    std::vector<std::string> directories() const override { return {dir_}; }

    void create(const oci::Resources& needs) override {
        std::vector<std::string> created;
        try {
            create_v2_tree(root_, path_, required_controllers_v2(needs), created);
        } catch (...) {
            remove_created(created);
            throw;
        }
    }

    void apply(const oci::Resources& r) override {
        DirInfo info = probe_v2(dir_);
        std::vector<Write> writes;
        std::optional<DeviceFilter> devices;
        try {
            writes = translate_v2(r, info);
            if (!r.devices.empty()) devices = emulate_device_rules(r.devices);
            if (r.memory && r.memory->check_before_update.value_or(false)) {
                uint64_t mem = parse_uint_or_max(read(dir_, "memory.current"), "memory.current");
                uint64_t swap = 0;
                if (auto s = read_if_exists(dir_, "memory.swap.current"))
                    swap = parse_uint_or_max(*s, "memory.swap.current");
                check_memory_usage(r, mem, mem + swap);
            }
        } catch (const Error& e) {
            throw e.wrapped("cgroup " + dir_);
        }
        for (const auto& w : writes) write(dir_, w);
        pending_devices_.clear();
        if (!devices) return;
        struct statfs sf{};
        if (::statfs(dir_.c_str(), &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
            UniqueFd fd(open_v2_dir_fd());
            attach_device_filter(fd.get(), device_filter_program(*devices), "cgroup " + dir_);
            return;
        }
        // Not a cgroup2 mount (a test's fake cgroupfs): nothing to attach a program to.
        pending_devices_ = r.devices;
        const auto& d = default_device_rules();
        pending_devices_.insert(pending_devices_.end(), d.begin(), d.end());
    }

    void add_process(pid_t pid) override { add_pid(dir_, pid); }

    int open_v2_dir_fd() const override {
        // Not O_PATH: clone3 resolves the fd with fdget(), which refuses O_PATH files.
        int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw_errno("cgroup " + dir_ + ": open");
        return fd;
    }

    void freeze() override { freeze_v2(dir_); }
    void thaw() override { thaw_v2(dir_); }
    bool frozen() const override { return frozen_v2(dir_); }

    void kill_all(int sig) override {
        if (sig == SIGKILL) {
            // Written without checking for the file first: systemd removes a scope's
            // cgroup once its last process has exited, which may be between a check
            // and the write.
            int err = write_errno(dir_, "cgroup.kill", "1");
            if (err == 0 || !is_dir(dir_)) return;  // killed, or gone with its processes
            if (err != ENOENT) throw_errno("cgroup " + dir_ + ": write cgroup.kill", err);
            // No cgroup.kill (before Linux 5.14): freeze and signal each process.
        }
        if (read_procs(dir_, true).empty()) return;  // nothing to signal: skip the freeze
        bool froze = false;
        if (!frozen_v2(dir_)) {
            try {
                freeze_v2(dir_);
                froze = true;
            } catch (const Error&) {
                // Signal them anyway: a racing fork may escape, but most will not.
            }
        }
        try {
            signal_tree(dir_, sig);
        } catch (...) {
            if (froze) write_errno(dir_, "cgroup.freeze", "0");
            throw;
        }
        if (froze) thaw_v2(dir_);
    }

    std::vector<pid_t> pids() const override { return read_procs(dir_, true); }
    void destroy() override { remove_tree(dir_); }
    Stats stats() const override { return read_stats_v2(dir_); }
    Usage usage() const override { return read_usage_v2(dir_); }

    std::unique_ptr<Manager> child(const std::string& name) const override {
        return std::make_unique<V2Manager>(path_ + "/" + name, root_);
    }

    bool vacant() const override {
        if (!is_dir(dir_) || frozen_v2(dir_)) return false;
        // pids.current counts a task until it is reaped; cgroup.procs stops listing it
        // once it exits.
        if (auto current = read_if_exists(dir_, "pids.current")) {
            if (split_words(*current) != std::vector<std::string>{"0"}) return false;
        } else if (!read_procs(dir_, true).empty()) {
            return false;
        }
        return list_subdirs(dir_).empty() && oom_kill_count() == 0;
    }

    uint64_t oom_kill_count() const override {
        auto events = read_if_exists(dir_, "memory.events");
        if (!events) return 0;
        auto m = parse_flat_keyed(*events);
        auto it = m.find("oom_kill");
        return it == m.end() ? 0 : it->second;
    }

private:
    std::string root_;
    std::string dir_;
};

}  // namespace

std::unique_ptr<Manager> open_v2(const std::string& path, const std::string& root) {
    return std::make_unique<V2Manager>(path, root);
}

}  // namespace tarn::cgroups::detail
