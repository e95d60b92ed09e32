#include "runtime/container.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "namespaces/namespaces.hpp"
#include "runtime/cgroup.hpp"

namespace tarn::runtime::detail {

void validate_id(const std::string& id) {
    if (id.empty()) throw Error("container id: must not be empty");
    if (id.size() > 1024) throw Error("container id: too long");
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.' || c == '+';
        if (!ok) throw Error("container id \"" + id + "\": only letters, digits and _ - . + are allowed");
    }
    if (id == "." || id == "..") throw Error("container id \"" + id + "\": not allowed");
}

void ensure_root(const std::string& root) {
    if (::mkdir(root.c_str(), 0700) < 0 && errno != EEXIST) {
        if (errno == ENOENT) {
            std::error_code ec;
            std::filesystem::create_directories(root, ec);
            if (ec) throw Error("create state root " + root, ec.value());
            ::chmod(root.c_str(), 0700);
            return;
        }
        throw_errno("create state root " + root);
    }
}

static UniqueFd lock_dir(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return fd;
    // Commands on one id are serialised; different ids never wait for each other.
    while (::flock(fd.get(), LOCK_EX) < 0) {
        if (errno != EINTR) throw_errno("lock " + path);
    }
    return fd;
}

ContainerDir ContainerDir::create(const std::string& root, const std::string& id) {
    validate_id(id);
    ensure_root(root);
    std::string path = root + "/" + id;
    if (::mkdir(path.c_str(), 0700) < 0) {
        if (errno == EEXIST) throw Error("container " + id + " already exists");
        throw_errno("create state dir " + path);
    }
    UniqueFd lock = lock_dir(path);
    if (!lock) throw_errno("open state dir " + path);
    return ContainerDir(id, path, std::move(lock));
}

bool ContainerDir::exists(const std::string& root, const std::string& id) {
    struct stat st;
    return ::stat((root + "/" + id).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

ContainerDir ContainerDir::open(const std::string& root, const std::string& id) {
    validate_id(id);
    std::string path = root + "/" + id;
    UniqueFd lock = lock_dir(path);
    if (!lock) {
        if (errno == ENOENT) throw Error("container " + id + " does not exist");
        throw_errno("open state dir " + path);
    }
    return ContainerDir(id, path, std::move(lock));
}

Record ContainerDir::load() const {
    std::string text;
    try {
        text = read_file(path_ + "/state.json", kMaxJsonDocument);
    } catch (const Error& e) {
        if (e.code() == ENOENT) {
            // A create killed before it wrote anything: only `delete --force` applies.
            Record r;
            r.state.id = id_;
            r.state.status = oci::Status::creating;
            return r;
        }
        throw;
    }
    check_json_bounds(text, path_ + "/state.json");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) throw Error("container " + id_ + ": state.json is corrupt");
    Record r;
    r.state.id = j.value("id", id_);
    r.state.pid = j.value("pid", 0);
    r.state.bundle = j.value("bundle", "");
    r.state.rootfs = j.value("rootfs", "");
    r.state.created = j.value("created", "");
    r.state.owner = j.value("owner", "");
    r.state.status = j.value("status", "creating") == "creating" ? oci::Status::creating : oci::Status::created;
    if (j.contains("annotations")) r.state.annotations = j["annotations"].get<std::map<std::string, std::string>>();
    r.pid_start = j.value("pidStart", uint64_t{0});
    r.cgroup_path = j.value("cgroupPath", "");
    r.systemd_unit = j.value("systemdUnit", "");
    r.systemd_user = j.value("systemdManager", "") == "user";
    r.vm = j.value("isolation", "") == "vm";
    r.no_new_keyring = j.value("noNewKeyring", false);
    r.pool_vm_dir = j.value("poolVmDir", "");
    return r;
}

void ContainerDir::save(const Record& r) const {
    nlohmann::json j = {
        {"id", r.state.id},          {"pid", r.state.pid},         {"pidStart", r.pid_start},
        {"bundle", r.state.bundle},  {"rootfs", r.state.rootfs},   {"created", r.state.created},
        {"owner", r.state.owner},    {"cgroupPath", r.cgroup_path},
        {"status", r.state.status == oci::Status::creating ? "creating" : "created"},
    };
    if (!r.state.annotations.empty()) j["annotations"] = r.state.annotations;
    if (!r.systemd_unit.empty()) j["systemdUnit"] = r.systemd_unit;
    if (r.systemd_user) j["systemdManager"] = "user";
    if (r.vm) j["isolation"] = "vm";
    if (r.no_new_keyring) j["noNewKeyring"] = true;
    if (!r.pool_vm_dir.empty()) j["poolVmDir"] = r.pool_vm_dir;
    write_file_atomic(path_ + "/state.json", j.dump());
}

void ContainerDir::save_config(std::string_view text) const { write_file_atomic(path_ + "/config.json", text); }

oci::Config ContainerDir::load_config() const {
    return oci::parse_config(read_file(path_ + "/config.json", kMaxJsonDocument), path_ + "/config.json");
}

void ContainerDir::remove() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) throw Error("remove state dir " + path_, ec.value());
    lock_.reset();
}

oci::Status current_status(const ContainerDir& dir, const Record& r) {
    if (r.state.status == oci::Status::creating) return oci::Status::creating;
    if (r.state.pid <= 0 || r.pid_start == 0 || ns::process_start_time(r.state.pid) != r.pid_start)
        return oci::Status::stopped;
    struct stat st;
    if (::stat(dir.fifo_path().c_str(), &st) == 0) return oci::Status::created;
    try {
        if (auto cg = open_cgroup(r); cg && cg->frozen()) return oci::Status::paused;
    } catch (const Error&) {
        // No freezer to ask: it cannot be paused either.
    }
    return oci::Status::running;
}

oci::State live_state(const ContainerDir& dir, const Record& r) {
    oci::State s = r.state;
    s.status = current_status(dir, r);
    if (s.status == oci::Status::stopped) s.pid = 0;
    return s;
}

std::string rfc3339_now() {
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return rfc3339(ts);
}

std::string rfc3339(const timespec& ts) {
    // The calendar by arithmetic: gmtime and strftime would load the host's time zone
    // file first (glibc sets its zone up on the first call of either).
    using namespace std::chrono;
    sys_seconds secs{seconds{ts.tv_sec}};
    sys_days day = floor<days>(secs);
    year_month_day ymd{day};
    hh_mm_ss hms{secs - day};
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ld.%09ldZ", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                  static_cast<long>(hms.hours().count()), static_cast<long>(hms.minutes().count()),
                  static_cast<long>(hms.seconds().count()), ts.tv_nsec);
    return buf;
}

}  // namespace tarn::runtime::detail
