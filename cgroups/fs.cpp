// cgroupfs file helpers: every error names the cgroup directory and the file.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <thread>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

namespace {

std::string join(const std::string& dir, std::string_view file) {
    std::string p = dir;
    if (p.empty() || p.back() != '/') p += '/';
    p += file;
    return p;
}

}  // namespace

std::optional<std::string> read_if_exists(const std::string& dir, std::string_view file) {
    std::string p = join(dir, file);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno("cgroup " + dir + ": open " + std::string(file));
    }
    std::string out;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("cgroup " + dir + ": read " + std::string(file));
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::string read(const std::string& dir, std::string_view file) {
    auto s = read_if_exists(dir, file);
    if (!s) throw Error("cgroup " + dir + ": open " + std::string(file), ENOENT);
    return *s;
}

int write_errno(const std::string& dir, std::string_view file, std::string_view value) noexcept {
    std::string p = join(dir, file);
    // O_TRUNC is what the kernel ignores on cgroupfs and what keeps a fake
    // cgroupfs (a plain directory in tests) holding only the last value.
    int fd = ::open(p.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    for (;;) {
        ssize_t n = ::write(fd, value.data(), value.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            err = errno;
        else if (static_cast<size_t>(n) != value.size())
            err = EIO;
        break;
    }
    ::close(fd);
    return err;
}

void write(const std::string& dir, std::string_view file, std::string_view value) {
    if (int err = write_errno(dir, file, value))
        throw Error("cgroup " + dir + ": write " + std::string(file), err);
}

void write(const std::string& dir, const Write& w) {
    if (int err = write_errno(dir, w.file, w.value))
        throw Error("cgroup " + dir + ": write " + w.file + " \"" + w.value + "\" (" + w.field + ")", err);
}

bool is_dir(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& dir, std::string_view file) {
    return ::access(join(dir, file).c_str(), F_OK) == 0;
}

namespace {

template <typename F>
void for_each_entry(const std::string& dir, F&& f) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) throw_errno("cgroup " + dir + ": list directory");
    while (struct dirent* e = ::readdir(d)) {
        std::string_view name = e->d_name;
        if (name == "." || name == "..") continue;
        bool directory;
        if (e->d_type == DT_UNKNOWN) {
            struct stat st;
            directory =
                ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        } else {
            directory = e->d_type == DT_DIR;
        }
        f(std::string(name), directory);
    }
    ::closedir(d);
}

}  // namespace

std::set<std::string> list_files(const std::string& dir) {
    std::set<std::string> out;
    for_each_entry(dir, [&](std::string name, bool directory) {
        if (!directory) out.insert(std::move(name));
    });
    return out;
}

const std::set<std::string>& V1Layout::files_of(const std::string& controller) const {
    if (auto it = files.find(controller); it != files.end()) return it->second;
    auto [it, fresh] = listed_.try_emplace(controller);
    if (fresh) {
        auto d = dirs.find(controller);
        if (d != dirs.end() && is_dir(d->second)) it->second = list_files(d->second);
    }
    return it->second;
}

std::vector<std::string> list_subdirs(const std::string& dir) {
    std::vector<std::string> out;
    for_each_entry(dir, [&](std::string name, bool directory) {
        if (directory) out.push_back(std::move(name));
    });
    std::sort(out.begin(), out.end());
    return out;
}

DirInfo probe_v2(const std::string& dir) {
    DirInfo info;
    info.files = list_files(dir);
    if (auto c = read_if_exists(dir, "cgroup.controllers"))
        for (auto& w : split_words(*c)) info.controllers.insert(w);
    return info;
}

void make_dirs(const std::string& root, const std::string& path, std::vector<std::string>& created) {
    std::string cur = root;
    size_t i = 0;
    while (i < path.size()) {
        while (i < path.size() && path[i] == '/') ++i;
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        if (j > i) {
            cur += "/" + path.substr(i, j - i);
            if (::mkdir(cur.c_str(), 0755) == 0) {
                created.push_back(cur);
            } else if (errno != EEXIST) {
                throw_errno("cgroup " + cur + ": mkdir");
            }
        }
        i = j;
    }
}

void remove_tree(const std::string& dir, std::chrono::milliseconds patience) {
    // The common case, a cgroup with no children and no processes, is one rmdir;
    // the directory is listed only when that is refused.
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY && errno != ENOTEMPTY) throw_errno("cgroup " + dir + ": rmdir");
    for (const auto& sub : list_subdirs(dir)) remove_tree(dir + "/" + sub, patience);
    auto deadline = std::chrono::steady_clock::now() + patience;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
        // EBUSY: processes still inside (or exiting: a dying task leaves its cgroup
        // a little after it is reaped); anything else will not get better.
        if (errno != EBUSY || std::chrono::steady_clock::now() >= deadline)
            throw_errno("cgroup " + dir + ": rmdir");
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
}

void remove_created(const std::vector<std::string>& created) noexcept {
    for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
}

std::vector<pid_t> read_procs(const std::string& dir, bool recursive) {
    std::vector<pid_t> out;
    auto text = read_if_exists(dir, "cgroup.procs");
    if (!text) {
        if (!is_dir(dir)) return out;  // the cgroup (or a child) vanished under us
        throw Error("cgroup " + dir + ": open cgroup.procs", ENOENT);
    }
    for (auto& w : split_words(*text)) {
        pid_t pid = 0;
        auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), pid);
        if (ec != std::errc() || p != w.data() + w.size())
            throw Error("cgroup " + dir + ": cgroup.procs: unexpected \"" + w + "\"");
        out.push_back(pid);
    }
    if (recursive) {
        std::vector<std::string> subs;
        try {
            subs = list_subdirs(dir);
        } catch (const Error& e) {
            if (e.code() != ENOENT) throw;
        }
        for (const auto& sub : subs) {
            auto more = read_procs(dir + "/" + sub, true);
            out.insert(out.end(), more.begin(), more.end());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

void add_pid(const std::string& dir, pid_t pid) {
    std::string value = std::to_string(pid);
    int err = 0;
    for (int attempt = 0; attempt < 5; ++attempt) {
        err = write_errno(dir, "cgroup.procs", value);
        // EINVAL can mean the task is still TASK_NEW (runc retries the same way).
        if (err != EINVAL) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (err) throw Error("cgroup " + dir + ": write cgroup.procs \"" + value + "\"", err);
}

void signal_tree(const std::string& dir, int sig) {
    for (pid_t pid : read_procs(dir, true)) {
        if (::kill(pid, sig) < 0 && errno != ESRCH)
            throw_errno("cgroup " + dir + ": kill " + std::to_string(pid) + " with signal " +
                        std::to_string(sig));
    }
}

std::vector<std::string> split_words(std::string_view text) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t')) ++i;
        size_t j = i;
        while (j < text.size() && text[j] != ' ' && text[j] != '\n' && text[j] != '\t') ++j;
        if (j > i) out.emplace_back(text.substr(i, j - i));
        i = j;
    }
    return out;
}

uint64_t parse_uint_or_max(std::string_view text, std::string_view what) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (text == "max") return UINT64_MAX;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || p != text.data() + text.size() || text.empty())
        throw Error(std::string(what) + ": expected a number or \"max\", got \"" + std::string(text) + "\"");
    return v;
}

std::map<std::string, uint64_t> parse_flat_keyed(std::string_view text) {
    std::map<std::string, uint64_t> out;
    for (std::string_view line : lines(text)) {
        size_t sp = line.find(' ');
        if (sp == std::string_view::npos) continue;
        std::string_view key = line.substr(0, sp), val = line.substr(sp + 1);
        uint64_t v = 0;
        if (val == "max") {
            v = UINT64_MAX;
        } else {
            auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
            if (ec != std::errc()) continue;  // not a number: not a flat-keyed line we use
        }
        out[std::string(key)] = v;
    }
    return out;
}

}  // namespace tarn::cgroups::detail
