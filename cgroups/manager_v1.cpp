// The cgroup v1 manager: one directory per mounted hierarchy. On hybrid hosts it
// also keeps a directory in the cgroup2 hierarchy (for what only v2 offers there,
// e.g. hugetlb on this project's build machine, and its freezer and cgroup.kill).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <optional>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

struct Hierarchy {
    std::vector<std::string> controllers;  // co-mounted ones share a directory
    std::string mount;
};

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

// A v1 cpuset cgroup starts with empty cpus and mems (unless clone_children is
// set), and the kernel refuses tasks there: copy the parent's, level by level.
void init_cpuset(const std::string& mount, const std::string& path) {
    std::string parent = mount;
    for (size_t i = 0; i < path.size();) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        if (j > i) {
            std::string dir = parent + "/" + path.substr(i, j - i);
            for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
                if (trim(read(dir, f)).empty()) write(dir, f, trim(read(parent, f)));
            }
            parent = dir;
        }
        i = j + 1;
    }
}

class V1Manager final : public Manager {
public:
    V1Manager(std::string path, Mode mode, std::string root)
        : Manager(mode, std::move(path)), root_(std::move(root)) {
        std::vector<std::pair<dev_t, ino_t>> seen;
        for (const auto& name : v1_hierarchies()) {
            std::string mount = root_ + "/" + name;
            struct stat st;
            if (::stat(mount.c_str(), &st) < 0 || !S_ISDIR(st.st_mode) ||
                !detail::exists(mount, "cgroup.procs"))
                continue;
            // "cpu" and "cpuacct" are often symlinks to one "cpu,cpuacct" mount.
            bool merged = false;
            for (size_t i = 0; i < seen.size(); ++i) {
                if (seen[i] == std::pair{st.st_dev, st.st_ino}) {
                    hierarchies_[i].controllers.push_back(name);
                    merged = true;
                }
            }
            if (merged) continue;
            seen.emplace_back(st.st_dev, st.st_ino);
            hierarchies_.push_back(Hierarchy{{name}, mount});
        }
        if (mode == Mode::hybrid && detail::exists(root_ + "/unified", "cgroup.controllers"))
            unified_root_ = root_ + "/unified";
    }

    // The child cgroup `path` of `parent`, in the hierarchies the parent found.
    V1Manager(const V1Manager& parent, std::string path)
        : Manager(parent.mode_, std::move(path)),
          root_(parent.root_),
          hierarchies_(parent.hierarchies_),
          unified_root_(parent.unified_root_) {}

    std::unique_ptr<Manager> child(const std::string& name) const override {
        return std::make_unique<V1Manager>(*this, path_ + "/" + name);
    }

    std::vector<std::string> directories() const override {
        std::vector<std::string> out;
        for (const auto& h : hierarchies_) out.push_back(h.mount + path_);
        if (!unified_root_.empty()) out.push_back(unified_dir());
        return out;
    }

    void create(const oci::Resources& needs) override {
        if (hierarchies_.empty())
            throw Error("cgroup " + path_ + ": no cgroup v1 hierarchy is mounted under " + root_);
        std::map<std::string, std::string> unified_needs;
        for (const auto& [c, field] : required_controllers_v1(needs)) {
            if (find(c)) continue;
            if ((c == "hugetlb" || c == "rdma") && !unified_root_.empty()) {
                unified_needs.emplace(c, field);
                continue;
            }
            throw Error(field + ": the " + c + " controller is not mounted under " + root_);
        }
        if (!needs.unified.empty()) {
            if (unified_root_.empty())
                throw Error(
                    "linux.resources.unified: not supported on a cgroup v1 host (there is no cgroup2 "
                    "hierarchy)");
            oci::Resources only_unified;
            only_unified.unified = needs.unified;
            for (const auto& [c, field] : required_controllers_v2(only_unified))
                unified_needs.emplace(c, field);
        }

        std::vector<std::string> created;
        try {
            for (const auto& h : hierarchies_) {
                make_dirs(h.mount, path_, created);
                if (has(h, "cpuset")) init_cpuset(h.mount, path_);
            }
            if (!unified_root_.empty()) {
                std::vector<std::string> made;
                try {
                    create_v2_tree(unified_root_, path_, unified_needs, made);
                    created.insert(created.end(), made.begin(), made.end());
                } catch (const Error&) {
                    // Nothing asked for the cgroup2 side: the v1 hierarchies suffice.
                    remove_created(made);
                    if (!unified_needs.empty()) throw;
                    unified_root_.clear();
                }
            }
        } catch (...) {
            remove_created(created);
            throw;
        }
    }

    void apply(const oci::Resources& r) override {
        V1Layout layout;
        // A missing directory still counts as mounted: the write then fails naming
        // the directory, which says more than "not mounted".
        for (const auto& h : hierarchies_)
            for (const auto& c : h.controllers) layout.dirs[c] = h.mount + path_;
        layout.dirs.erase("systemd");
        // Only these go to the cgroup2 side (translate_v1): the others need no listing of it.
        bool to_unified = !r.hugepage_limits.empty() || !r.rdma.empty() || !r.unified.empty();
        if (to_unified && has_unified()) layout.unified = probe_v2(unified_dir());

        std::vector<Write> writes;
        try {
            writes = translate_v1(r, layout);
            if (r.memory && r.memory->check_before_update.value_or(false)) {
                if (const Hierarchy* m = find("memory")) {
                    std::string dir = m->mount + path_;
                    uint64_t mem =
                        parse_uint_or_max(read(dir, "memory.usage_in_bytes"), "memory.usage_in_bytes");
                    uint64_t memsw = mem;
                    if (auto s = read_if_exists(dir, "memory.memsw.usage_in_bytes"))
                        memsw = parse_uint_or_max(*s, "memory.memsw.usage_in_bytes");
                    check_memory_usage(r, mem, memsw);
                }
            }
        } catch (const Error& e) {
            throw e.wrapped("cgroup " + path_);
        }
        std::vector<const Write*> deferred;
        for (const auto& w : writes) {
            std::string dir = dir_for(w);
            int err = write_errno(dir, w.file, w.value);
            if (err == EINVAL && w.retry_on_einval) {
                deferred.push_back(&w);
            } else if (err) {
                throw Error("cgroup " + dir + ": write " + w.file + " \"" + w.value + "\" (" + w.field + ")",
                            err);
            }
        }
        for (const Write* w : deferred) write(dir_for(*w), *w);
    }

    void add_process(pid_t pid) override {
        for (const auto& h : hierarchies_) add_pid(h.mount + path_, pid);
        if (has_unified()) add_pid(unified_dir(), pid);
    }

    int open_v2_dir_fd() const override { return -1; }

    Entry open_entry() const override {
        Entry e;
        for (const auto& h : hierarchies_) {
            std::string file = h.mount + path_ + "/tasks";
            UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
            if (!fd) throw_errno("cgroup " + h.mount + path_ + ": open tasks");
            e.self_join.emplace_back(std::move(fd), file);
        }
        if (has_unified()) {
            // The hybrid host's cgroup2 side is the default hierarchy, which clone3 can
            // place a child in.
            e.clone_into.reset(::open(unified_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!e.clone_into) throw_errno("cgroup " + unified_dir() + ": open");
        }
        return e;
    }

    void freeze() override {
        if (const Hierarchy* f = find("freezer")) return freeze_v1(f->mount + path_);
        if (has_unified()) return freeze_v2(unified_dir());
        throw Error("cgroup " + path_ + ": freeze: the freezer controller is not mounted");
    }
    void thaw() override {
        if (const Hierarchy* f = find("freezer")) return thaw_v1(f->mount + path_);
        if (has_unified()) return thaw_v2(unified_dir());
        throw Error("cgroup " + path_ + ": thaw: the freezer controller is not mounted");
    }
    bool frozen() const override {
        // A create killed between its mkdirs leaves some hierarchies without the
        // directory: a cgroup that is not there is not frozen (and delete must go on).
        if (const Hierarchy* f = find("freezer")) return is_dir(f->mount + path_) && frozen_v1(f->mount + path_);
        if (has_unified()) return frozen_v2(unified_dir());
        return false;
    }

    void kill_all(int sig) override {
        // v1 has no cgroup.kill: freeze so nothing forks past the iteration. An empty
        // cgroup stays empty (nothing forks into it), and freezing costs milliseconds:
        // the common case of a container whose processes have all exited skips it.
        if (read_procs(primary_dir(), true).empty()) return;
        bool froze = false;
        bool can_freeze = find("freezer") || has_unified();
        if (can_freeze && !frozen()) {
            try {
                freeze();
                froze = true;
            } catch (const Error&) {
            }
        }
        try {
            signal_tree(primary_dir(), sig);
        } catch (...) {
            if (froze) {
                try {
                    thaw();
                } catch (const Error&) {
                }
            }
            throw;
        }
        if (froze) thaw();
    }

    std::vector<pid_t> pids() const override { return read_procs(primary_dir(), true); }

    void destroy() override {
        std::optional<Error> first;
        for (const auto& dir : directories()) {
            try {
                remove_tree(dir);
            } catch (const Error& e) {
                if (!first) first = e;
            }
        }
        if (first) throw *first;
    }

    Stats stats() const override {
        std::map<std::string, std::string> dirs;
        for (const auto& h : hierarchies_)
            for (const auto& c : h.controllers) dirs[c] = h.mount + path_;
        return read_stats_v1(dirs, has_unified() ? unified_dir() : "");
    }

    Usage usage() const override {
        std::string memory, pids;
        for (const auto& h : hierarchies_)
            for (const auto& c : h.controllers) {
                if (c == "memory") memory = h.mount + path_;
                if (c == "pids") pids = h.mount + path_;
            }
        return read_usage_v1(memory, pids);
    }

    bool vacant() const override {
        std::string primary = primary_dir();
        if (!is_dir(primary) || frozen()) return false;
        // pids.current counts a task until it is reaped; cgroup.procs stops listing it
        // once it exits. Both are hierarchical.
        const Hierarchy* p = find("pids");
        if (auto current =
                p ? read_if_exists(p->mount + path_, "pids.current") : std::optional<std::string>()) {
            if (split_words(*current) != std::vector<std::string>{"0"}) return false;
        } else if (!read_procs(primary, true).empty()) {
            return false;
        }
        return list_subdirs(primary).empty() && oom_kill_count() == 0;
    }

    void reset_counters() override {
        auto reset = [&](const char* controller, std::initializer_list<const char*> files,
                         const char* value) {
            const Hierarchy* h = find(controller);
            if (!h) return;
            std::string dir = h->mount + path_;
            for (const char* f : files) {
                // Swap, kernel and TCP memory files exist only where the kernel has them.
                int err = write_errno(dir, f, value);
                if (err && err != ENOENT) throw Error("cgroup " + dir + ": reset " + f, err);
            }
        };
        reset("memory",
              {"memory.max_usage_in_bytes", "memory.failcnt", "memory.memsw.max_usage_in_bytes",
               "memory.memsw.failcnt", "memory.kmem.max_usage_in_bytes", "memory.kmem.failcnt",
               "memory.kmem.tcp.max_usage_in_bytes", "memory.kmem.tcp.failcnt"},
              "0");
        reset("cpuacct", {"cpuacct.usage"}, "0");
        reset("blkio", {"blkio.reset_stats"}, "1");
    }

    uint64_t oom_kill_count() const override {
        const Hierarchy* m = find("memory");
        if (!m) return 0;
        auto text = read_if_exists(m->mount + path_, "memory.oom_control");
        if (!text) return 0;
        auto kv = parse_flat_keyed(*text);
        auto it = kv.find("oom_kill");
        return it == kv.end() ? 0 : it->second;
    }

private:
    static bool has(const Hierarchy& h, const std::string& c) {
        return std::find(h.controllers.begin(), h.controllers.end(), c) != h.controllers.end();
    }
    const Hierarchy* find(const std::string& c) const {
        for (const auto& h : hierarchies_)
            if (has(h, c)) return &h;
        return nullptr;
    }
    std::string unified_dir() const { return unified_root_ + path_; }
    bool has_unified() const { return !unified_root_.empty() && is_dir(unified_dir()); }
    std::string dir_for(const Write& w) const {
        if (w.unified) return unified_dir();
        const Hierarchy* h = find(w.controller);
        // translate_v1 only emits writes for mounted controllers.
        return h ? h->mount + path_ : root_ + "/" + w.controller + path_;
    }
    // Where to list processes: every process of the container is in each hierarchy
    // that has its directory. After a create killed half-way some do not; the first
    // that does is as good as any (a process is placed in all of them in one go).
    std::string primary_dir() const {
        std::string first;
        for (const char* c : {"pids", "freezer", "memory", "cpu", "devices"})
            if (const Hierarchy* h = find(c)) {
                std::string dir = h->mount + path_;
                if (is_dir(dir)) return dir;
                if (first.empty()) first = std::move(dir);
            }
        for (const auto& h : hierarchies_)
            if (is_dir(h.mount + path_)) return h.mount + path_;
        if (has_unified()) return unified_dir();
        if (!first.empty()) return first;
        return hierarchies_.empty() ? unified_dir() : hierarchies_.front().mount + path_;
    }

    std::string root_;
    std::vector<Hierarchy> hierarchies_;
    std::string unified_root_;
};

}  // namespace

std::unique_ptr<Manager> open_v1(const std::string& path, Mode mode, const std::string& root) {
    return std::make_unique<V1Manager>(path, mode, root);
}

}  // namespace tarn::cgroups::detail
