// The systemd cgroup driver: a container's cgroup is a transient unit that systemd
// creates (StartTransientUnit over D-Bus) with Delegate=yes, so systemd knows the cgroup
// is taken and leaves what is below it alone. Limits systemd can express are passed as
// unit properties (so a daemon-reload re-applies them rather than resetting them); the
// cgroupfs manager then writes every limit into the delegated cgroup, which covers what
// systemd has no property for (swap on v1, hugetlb, rdma, io throttles, unified, devices).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>

#include "cgroups/dbus.hpp"
#include "cgroups/detail.hpp"

namespace tarn::cgroups {

namespace detail {

namespace {

std::string quoted(std::string_view s) {
    return "\"" + std::string(s) + "\"";
}

bool valid_unit_chars(std::string_view s) {
    // systemd's unit name alphabet; anything else it would refuse, or escape, and then
    // the cgroup would not be where tarn expects it.
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
               c == '_' || c == '.' || c == '-' || c == '\\' || c == '@';
    });
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string expand_slice(std::string_view slice, std::string_view what) {
    const std::string_view suffix = ".slice";
    if (slice.find('/') != std::string_view::npos)
        throw Error(std::string(what) + ": slice " + quoted(slice) +
                    ": must not contain '/' (a sub-slice is written with dashes: \"a-b.slice\")");
    if (!ends_with(slice, suffix) || !valid_unit_chars(slice))
        throw Error(std::string(what) + ": slice " + quoted(slice) +
                    ": not a slice unit name (\"name.slice\")");
    if (slice == "-.slice") return "/";
    std::string_view stem = slice.substr(0, slice.size() - suffix.size());
    if (stem.empty() || stem.front() == '-' || stem.back() == '-' ||
        stem.find("--") != std::string_view::npos)
        throw Error(std::string(what) + ": slice " + quoted(slice) + ": invalid dashes");
    // systemd nests slices by their dashes: "a-b-c.slice" is "a.slice/a-b.slice/a-b-c.slice".
    std::string out;
    for (size_t i = 0;; ++i) {
        i = stem.find('-', i);
        std::string_view part = stem.substr(0, i);
        out += "/" + std::string(part) + ".slice";
        if (i == std::string_view::npos) break;
    }
    return out;
}

systemd::Unit unit_for(std::string_view cgroups_path, std::string_view id, bool user) {
    const std::string what = "linux.cgroupsPath " + quoted(cgroups_path);
    // A user manager's units live in its own tree; user.slice there is where runc's and
    // crun's rootless containers go too.
    const std::string default_slice = user ? "user.slice" : "system.slice";
    std::string slice, prefix, name;
    if (cgroups_path.empty()) {
        slice = default_slice;
        prefix = "tarn";
        name = std::string(id);
        if (!valid_unit_chars(name))
            throw Error("container id " + quoted(id) + ": not usable in a systemd unit name");
    } else {
        size_t c1 = cgroups_path.find(':');
        size_t c2 = c1 == std::string_view::npos ? c1 : cgroups_path.find(':', c1 + 1);
        if (c2 == std::string_view::npos || cgroups_path.find(':', c2 + 1) != std::string_view::npos)
            throw Error(what +
                        ": expected \"slice:prefix:name\" with --systemd-cgroup (e.g. \"" + default_slice + ":tarn:" +
                        std::string(id) + "\")");
        slice = cgroups_path.substr(0, c1);
        prefix = cgroups_path.substr(c1 + 1, c2 - c1 - 1);
        name = cgroups_path.substr(c2 + 1);
        if (name.empty()) throw Error(what + ": the name part is empty");
        if (slice.empty()) slice = default_slice;
        if (slice == "-") slice = "-.slice";  // the root slice, as runc writes it
    }
    systemd::Unit u;
    u.user = user;
    if (ends_with(name, ".slice")) {
        // A slice of its own: systemd places a slice by its name alone, so the slice part
        // cannot move it; the prefix is not used (runc's rule).
        u.name = name;
        u.path = expand_slice(name, what);
        if (u.path == "/") throw Error(what + ": names the root slice");
        size_t last = u.path.rfind('/');
        size_t before = last == 0 ? std::string::npos : u.path.rfind('/', last - 1);
        u.slice = last == 0 ? "-.slice" : u.path.substr(before + 1, last - before - 1);
        return u;
    }
    if (!valid_unit_chars(name) || (!prefix.empty() && !valid_unit_chars(prefix)))
        throw Error(what + ": prefix and name may hold only letters, digits and \":_.-\\@\"");
    // An empty prefix gives "<name>.scope" rather than "-<name>.scope".
    u.name = (prefix.empty() ? "" : prefix + "-") + name + ".scope";
    u.slice = slice;
    std::string parent = expand_slice(slice, what);
    u.path = (parent == "/" ? "" : parent) + "/" + u.name;
    return u;
}

std::vector<uint8_t> cpu_mask(std::string_view list, std::string_view field) {
    std::vector<uint8_t> mask;
    auto bad = [&](std::string_view why) {
        return Error(std::string(field) + ": " + quoted(list) + ": " + std::string(why));
    };
    auto number = [&](std::string_view s) {
        unsigned v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size())
            throw bad("not a list such as \"0-3,6\"");
        if (v >= 8192) throw bad("cpu or node " + std::string(s) + " is out of range");
        return v;
    };
    size_t i = 0;
    while (i < list.size()) {
        size_t j = list.find(',', i);
        if (j == std::string_view::npos) j = list.size();
        std::string_view item = list.substr(i, j - i);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\n')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\n')) item.remove_suffix(1);
        if (!item.empty()) {
            size_t dash = item.find('-');
            unsigned lo = number(item.substr(0, dash));
            unsigned hi = dash == std::string_view::npos ? lo : number(item.substr(dash + 1));
            if (hi < lo) throw bad("range " + std::string(item) + " runs backwards");
            // systemd's byte order: cpu n is bit n % 8 of byte n / 8.
            if (mask.size() <= hi / 8) mask.resize(hi / 8 + 1, 0);
            for (unsigned c = lo; c <= hi; ++c) mask[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
        }
        i = j + 1;
    }
    return mask;
}

std::vector<Property> unit_properties(const oci::Resources& r, unsigned version, bool unified) {
    constexpr uint64_t infinity = UINT64_MAX;
    const std::string f = "linux.resources.";
    std::vector<Property> out;
    if (r.memory) {
        const oci::Memory& m = *r.memory;
        int64_t limit = m.limit.value_or(0);
        if (limit > 0 || limit == -1)
            out.push_back({unified ? "MemoryMax" : "MemoryLimit", limit == -1 ? infinity : uint64_t(limit)});
        // Only v2 has a separate swap limit; OCI swap is memory+swap.
        if (unified && m.swap && version >= 232) {
            if (*m.swap == -1)
                out.push_back({"MemorySwapMax", infinity});
            else if (*m.swap > 0 && limit > 0 && *m.swap >= limit)
                out.push_back({"MemorySwapMax", uint64_t(*m.swap - limit)});
            // Other combinations are the cgroupfs translation's to refuse or handle.
        }
        int64_t low = m.reservation.value_or(0);
        if (unified && (low > 0 || low == -1))
            out.push_back({"MemoryLow", low == -1 ? infinity : uint64_t(low)});
    }
    if (r.cpu) {
        const oci::Cpu& c = *r.cpu;
        if (c.shares && *c.shares > 0) {
            if (unified)
                out.push_back({"CPUWeight", shares_to_weight(*c.shares)});
            else
                out.push_back({"CPUShares", *c.shares});
        }
        if (c.quota && (*c.quota > 0 || *c.quota == -1)) {
            uint64_t per_sec = infinity;
            if (*c.quota > 0) {
                uint64_t period = c.period && *c.period > 0 ? *c.period : 100000;
                // Rounded up: systemd turns it back into a quota per period by flooring,
                // and must arrive at the same cpu.max as the cgroupfs write.
                per_sec = (uint64_t(*c.quota) * 1000000 + period - 1) / period;
            }
            out.push_back({"CPUQuotaPerSecUSec", per_sec});
        }
        if (c.period && *c.period > 0 && version >= 242) out.push_back({"CPUQuotaPeriodUSec", *c.period});
        // systemd manages cpusets on the unified hierarchy only.
        if (unified && version >= 244) {
            if (!c.cpus.empty()) out.push_back({"AllowedCPUs", cpu_mask(c.cpus, f + "cpu.cpus")});
            if (!c.mems.empty()) out.push_back({"AllowedMemoryNodes", cpu_mask(c.mems, f + "cpu.mems")});
        }
    }
    if (r.pids && r.pids->limit) {
        int64_t l = *r.pids->limit;
        out.push_back({"TasksMax", l > 0 ? uint64_t(l) : infinity});
    }
    return out;
}

void marshal_properties(const std::vector<Property>& props, dbus::Writer& w) {
    w.begin_array(8);
    for (const Property& p : props) {
        w.begin_struct();
        w.string(p.name);
        std::visit(
            [&](const auto& v) {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, bool>) {
                    w.variant("b");
                    w.boolean(v);
                } else if constexpr (std::is_same_v<T, uint64_t>) {
                    w.variant("t");
                    w.u64(v);
                } else if constexpr (std::is_same_v<T, std::string>) {
                    w.variant("s");
                    w.string(v);
                } else if constexpr (std::is_same_v<T, std::vector<uint32_t>>) {
                    w.variant("au");
                    w.begin_array(4);
                    for (uint32_t x : v) w.u32(x);
                    w.end_array();
                } else {
                    w.variant("ay");
                    w.begin_array(1);
                    for (uint8_t x : v) w.byte(x);
                    w.end_array();
                }
            },
            p.value);
    }
    w.end_array();
}

std::optional<std::string> unix_path_of(std::string_view address) {
    // "unix:path=/run/user/1000/bus,guid=...;tcp:host=..." : the first entry with a
    // path; values escape bytes as %xx.
    while (!address.empty()) {
        size_t semi = address.find(';');
        std::string_view entry = address.substr(0, semi);
        address = semi == std::string_view::npos ? std::string_view() : address.substr(semi + 1);
        if (entry.rfind("unix:", 0) != 0) continue;
        entry.remove_prefix(5);
        while (!entry.empty()) {
            size_t comma = entry.find(',');
            std::string_view kv = entry.substr(0, comma);
            entry = comma == std::string_view::npos ? std::string_view() : entry.substr(comma + 1);
            if (kv.rfind("path=", 0) != 0) continue;
            std::string out;
            for (size_t i = 5; i < kv.size(); ++i) {
                unsigned byte = 0;
                if (kv[i] == '%' && i + 2 < kv.size() &&
                    std::from_chars(kv.data() + i + 1, kv.data() + i + 3, byte, 16).ptr == kv.data() + i + 3) {
                    out += static_cast<char>(byte);
                    i += 2;
                } else {
                    out += kv[i];
                }
            }
            if (!out.empty()) return out;
        }
    }
    return std::nullopt;
}

std::vector<ManagerSocket> manager_sockets(bool user, uid_t euid,
                                           const std::function<const char*(const char*)>& env) {
    auto var = [&](const char* name) {
        const char* v = env(name);
        return std::string(v ? v : "");
    };
    std::vector<ManagerSocket> out;
    if (!user) {
        out.push_back({unix_path_of(var("DBUS_SYSTEM_BUS_ADDRESS")).value_or("/run/dbus/system_bus_socket"), true});
        // systemd's own socket: no dbus-daemon needed (early boot, minimal hosts), root only.
        if (euid == 0) out.push_back({"/run/systemd/private", false});
        return out;
    }
    // The user manager: the session bus (dbus-user-session's socket, which the user
    // manager itself runs), then the manager's private socket, which it always has.
    std::string runtime_dir = var("XDG_RUNTIME_DIR");
    if (runtime_dir.empty()) runtime_dir = "/run/user/" + std::to_string(euid);
    out.push_back({unix_path_of(var("DBUS_SESSION_BUS_ADDRESS")).value_or(runtime_dir + "/bus"), true});
    out.push_back({runtime_dir + "/systemd/private", false});
    return out;
}

unsigned parse_systemd_version(std::string_view v) {
    // "252", "252.38-1~deb12u1", "v256.1": the leading number is the release.
    while (!v.empty() && (v.front() < '0' || v.front() > '9')) v.remove_prefix(1);
    unsigned n = 0;
    std::from_chars(v.data(), v.data() + v.size(), n);
    return n;
}

}  // namespace detail

namespace {

using namespace std::chrono_literals;
constexpr auto kCallTimeout = 25s;  // the D-Bus default for a method call
constexpr auto kJobTimeout = 30s;   // a unit start or stop, as runc waits for one

constexpr const char* kService = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManagerIface = "org.freedesktop.systemd1.Manager";

bool path_exists(const char* p) {
    struct stat st;
    return ::stat(p, &st) == 0;
}

// Either manager is reached over the bus (what sd-bus, runc and crun use) or over the
// private socket the manager listens on itself (detail::manager_sockets says which,
// in order). The uid the manager sees is the one the kernel reports for our socket: the
// caller's, before any user namespace of the container's exists.
dbus::Connection connect_systemd(bool user, std::chrono::milliseconds timeout) {
    if (!path_exists("/run/systemd/system"))
        throw Error("systemd cgroup driver: systemd is not running on this host (no /run/systemd/system)");
    std::string why;
    for (const detail::ManagerSocket& s : detail::manager_sockets(user, ::geteuid(), ::getenv)) {
        try {
            return dbus::Connection::open(s.path, s.is_bus, timeout);
        } catch (const Error& e) {
            why += (why.empty() ? "" : "; ") + std::string(e.what());
        }
    }
    if (user) {
        std::string uid = std::to_string(::geteuid());
        throw Error("systemd cgroup driver: cannot reach the systemd user manager of uid " + uid +
                    " over D-Bus (" + why + "); it runs as user@" + uid +
                    ".service while the user is logged in, or always with `loginctl enable-linger`");
    }
    throw Error("systemd cgroup driver: cannot reach systemd over D-Bus (" + why + ")");
}

class Systemd {
public:
    explicit Systemd(bool user, std::chrono::milliseconds timeout = kCallTimeout)
        : c_(connect_systemd(user, timeout)), timeout_(timeout) {}

    // The manager's own cgroup: "" for the system manager (the root), and for a user
    // manager "/user.slice/user-1000.slice/user@1000.service", below which its units are.
    std::string root_cgroup() {
        dbus::Writer w;
        w.string(kManagerIface);
        w.string("ControlGroup");
        auto m = dbus::check(c_.call(kService, kManagerPath, "org.freedesktop.DBus.Properties", "Get", "ss",
                                     w.data(), timeout_),
                             "systemd ControlGroup");
        std::string cg = m.body.empty() ? "" : m.body[0].str("systemd ControlGroup");
        return cg == "/" ? "" : cg;
    }

    unsigned version() {
        if (!version_) {
            dbus::Writer w;
            w.string(kManagerIface);
            w.string("Version");
            auto m = dbus::check(c_.call(kService, kManagerPath, "org.freedesktop.DBus.Properties", "Get",
                                         "ss", w.data(), timeout_),
                                 "systemd Version");
            version_ = m.body.empty() ? 0 : detail::parse_systemd_version(m.body[0].str("systemd Version"));
        }
        return version_;
    }

    // Starts the unit and waits for its job; throws naming the unit and systemd's words.
    void start(const std::string& unit, const std::vector<detail::Property>& props) {
        subscribe();
        dbus::Writer w;
        w.string(unit);
        w.string("replace");
        detail::marshal_properties(props, w);
        w.begin_array(8);  // aux units: none
        w.end_array();
        auto m = c_.call(kService, kManagerPath, kManagerIface, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                         w.data(), timeout_);
        dbus::check(m, "systemd: start " + unit);
        wait_job(m, "start " + unit);
    }

    // False if systemd has no such unit (any more).
    bool stop(const std::string& unit) {
        subscribe();
        dbus::Writer w;
        w.string(unit);
        w.string("replace");
        auto m = c_.call(kService, kManagerPath, kManagerIface, "StopUnit", "ss", w.data(), timeout_);
        if (m.type == dbus::MessageType::error && m.error_name == "org.freedesktop.systemd1.NoSuchUnit")
            return false;
        dbus::check(m, "systemd: stop " + unit);
        wait_job(m, "stop " + unit);
        return true;
    }

    // A unit that failed (its scope OOM-killed, say) stays loaded until reset, and would
    // block a new container of the same name.
    void reset_failed(const std::string& unit) {
        dbus::Writer w;
        w.string(unit);
        c_.call(kService, kManagerPath, kManagerIface, "ResetFailedUnit", "s", w.data(), timeout_);
    }

    void set_properties(const std::string& unit, const std::vector<detail::Property>& props) {
        dbus::Writer w;
        w.string(unit);
        w.boolean(true);  // runtime: gone at reboot, like the unit itself
        detail::marshal_properties(props, w);
        dbus::check(c_.call(kService, kManagerPath, kManagerIface, "SetUnitProperties", "sba(sv)", w.data(),
                            timeout_),
                    "systemd: set properties of " + unit);
    }

    std::string control_group(const std::string& unit) {
        dbus::Writer w;
        w.string(unit);
        auto m =
            dbus::check(c_.call(kService, kManagerPath, kManagerIface, "GetUnit", "s", w.data(), timeout_),
                        "systemd: unit " + unit);
        std::string object = m.body.at(0).str("systemd GetUnit");
        std::string type = unit.substr(unit.rfind('.') + 1);
        type[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(type[0])));
        dbus::Writer g;
        g.string("org.freedesktop.systemd1." + type);
        g.string("ControlGroup");
        auto r = dbus::check(
            c_.call(kService, object, "org.freedesktop.DBus.Properties", "Get", "ss", g.data(), timeout_),
            "systemd: ControlGroup of " + unit);
        return r.body.at(0).str("systemd ControlGroup");
    }

private:
    void subscribe() {
        if (subscribed_) return;
        // On the bus, signals reach us only through a match rule, and systemd sends job
        // signals only while someone is subscribed. A private connection gets them anyway.
        if (c_.is_bus()) {
            dbus::Writer w;
            w.string(
                "type='signal',sender='org.freedesktop.systemd1',path='/org/freedesktop/systemd1',"
                "interface='org.freedesktop.systemd1.Manager',member='JobRemoved'");
            dbus::check(c_.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                "AddMatch", "s", w.data(), timeout_),
                        "D-Bus AddMatch");
        }
        dbus::check(c_.call(kService, kManagerPath, kManagerIface, "Subscribe", "", "", timeout_),
                    "systemd Subscribe");
        subscribed_ = true;
    }

    void wait_job(const dbus::Message& reply, const std::string& what) {
        std::string job = reply.body.at(0).str("systemd job");
        dbus::Message done;
        try {
            done = c_.wait_signal(
                [&](const dbus::Message& s) {
                    return s.member == "JobRemoved" && s.interface == kManagerIface && s.body.size() == 4 &&
                           s.body[1].s == job;
                },
                kJobTimeout);
        } catch (const Error& e) {
            throw Error("systemd: " + what + ": no result from job " + job + " (" + e.what() + ")");
        }
        const std::string& result = done.body[3].s;
        if (result != "done")
            throw Error("systemd: " + what + ": job " + result + " (see `journalctl -u " + done.body[2].s +
                        "` or `systemctl status " + done.body[2].s + "`)");
    }

    dbus::Connection c_;
    std::chrono::milliseconds timeout_;
    unsigned version_ = 0;
    bool subscribed_ = false;
};

// A container's unit. Until its init exists there is nothing for systemd to start (a
// scope is made around processes), so create() only connects, apply() keeps the
// resources, and add_process() starts the unit with the init in it. Opened again for a
// created container, it reads and signals the cgroup directly and talks to systemd only
// to change (update) or stop (delete) the unit.
class SystemdManager final : public Manager {
public:
    SystemdManager(systemd::Unit unit, Mode mode, std::string root, std::string description)
        : Manager(mode, unit.path),
          unit_(std::move(unit)),
          root_(std::move(root)),
          description_(std::move(description)),
          fs_(cgroups::open(path_, mode, root_)) {}

    std::vector<std::string> directories() const override { return fs_->directories(); }

    void create(const oci::Resources& needs) override {
        if (unit_.user && mode_ != Mode::unified)
            throw Error("systemd cgroup driver: an unprivileged user's containers need cgroup v2 (on a v1 or "
                        "hybrid host systemd delegates no controllers to a user manager)");
        systemd();  // fail here, before anything exists, if systemd cannot be reached
        if (unit_.user) {
            // A user manager's units are below its own cgroup; the unit's cgroup is then
            // known before it exists (recorded for a `delete` after a killed create).
            std::string base = systemd().root_cgroup();
            path_ = base + unit_.path;
            fs_ = cgroups::open(path_, mode_, root_);
            // What the user can limit is what systemd delegated to its manager
            // (user@.service's Delegate=, "pids memory cpu" by default): say so before
            // anything exists rather than fail half-way.
            std::string dir = root_ + base;
            std::set<std::string> have;
            for (auto& w : detail::split_words(detail::read(dir, "cgroup.controllers"))) have.insert(w);
            for (const auto& [c, field] : detail::required_controllers_v2(needs)) {
                if (have.count(c)) continue;
                std::string list;
                for (const auto& h : have) list += (list.empty() ? "" : " ") + h;
                throw Error(field + ": the " + c + " controller is not delegated to the systemd user manager of uid " +
                            std::to_string(::geteuid()) + " (" + dir + "/cgroup.controllers: " +
                            (list.empty() ? "none" : list) + ")");
            }
        }
        needs_ = needs;
        creating_ = true;
    }

    void apply(const oci::Resources& r) override {
        if (creating_ && !started_) {
            // Checked now, so a bad value fails before the unit exists.
            detail::unit_properties(r, systemd().version(), mode_ == Mode::unified);
            pending_ = r;
            return;
        }
        auto props = detail::unit_properties(r, systemd().version(), mode_ == Mode::unified);
        if (!props.empty()) systemd().set_properties(unit_.name, props);
        fs_->apply(r);
        pending_devices_ = fs_->pending_device_rules();
    }

    void add_process(pid_t pid) override {
        if (!creating_ || started_) {
            fs_->add_process(pid);
            return;
        }
        Systemd& sd = systemd();
        std::vector<detail::Property> props = {{"Description", description_}, {"DefaultDependencies", false}};
        bool scope = unit_.name.size() > 6 && unit_.name.ends_with(".scope");
        if (scope) {
            props.push_back({"Slice", unit_.slice});
            // The cgroup below the unit is ours to manage: systemd leaves it alone.
            props.push_back({"Delegate", true});
            props.push_back({"PIDs", std::vector<uint32_t>{static_cast<uint32_t>(pid)}});
        }
        // Accounting on, as runc does: systemd then enables the controllers for the unit.
        const bool unified = mode_ == Mode::unified;
        for (const char* a : {"MemoryAccounting", "CPUAccounting", "TasksAccounting"})
            props.push_back({a, true});
        props.push_back({unified ? "IOAccounting" : "BlockIOAccounting", true});
        for (auto& p : detail::unit_properties(pending_, sd.version(), unified))
            props.push_back(std::move(p));
        sd.start(unit_.name, props);
        started_ = true;
        // Where systemd put it is what counts (a slice's place follows from its name).
        std::string cg = sd.control_group(unit_.name);
        if (!cg.empty() && cg != path_) {
            path_ = cg;
            fs_ = cgroups::open(path_, mode_, root_);
        }
        // Controllers systemd does not manage (hugetlb, rdma, misc) are enabled down to
        // the unit as the cgroupfs driver would; a slice gets its process from us.
        fs_->create(needs_);
        fs_->add_process(pid);
        fs_->apply(pending_);
        pending_devices_ = fs_->pending_device_rules();
    }

    int open_v2_dir_fd() const override {
        // No CLONE_INTO_CGROUP while the unit does not exist: add_process places the init.
        if (creating_ && !started_) return -1;
        return fs_->open_v2_dir_fd();
    }

    void freeze() override { fs_->freeze(); }
    void thaw() override { fs_->thaw(); }
    bool frozen() const override { return fs_->frozen(); }
    void kill_all(int sig) override { fs_->kill_all(sig); }
    std::vector<pid_t> pids() const override { return fs_->pids(); }
    Stats stats() const override { return fs_->stats(); }
    Usage usage() const override { return fs_->usage(); }
    uint64_t oom_kill_count() const override { return fs_->oom_kill_count(); }

    void destroy() override {
        // A create that failed before its unit started has nothing of its own to remove
        // (a unit of the same name would be another container's).
        if (creating_ && !started_) return;
        std::optional<Systemd> sd;
        try {
            sd.emplace(unit_.user);
        } catch (const Error&) {
            // No systemd to ask: an emptied scope is gone with systemd anyway; remove
            // what is left of the cgroup ourselves.
        }
        if (sd) {
            sd->stop(unit_.name);
            sd->reset_failed(unit_.name);
        }
        fs_->destroy();
    }

private:
    Systemd& systemd() {
        if (!sd_) sd_.emplace(unit_.user);
        return *sd_;
    }

    systemd::Unit unit_;
    std::string root_;
    std::string description_;
    std::unique_ptr<Manager> fs_;
    std::optional<Systemd> sd_;
    oci::Resources needs_, pending_;
    bool creating_ = false, started_ = false;
};

}  // namespace

namespace systemd {

Unit unit_for(std::string_view cgroups_path, std::string_view id, bool user) {
    return detail::unit_for(cgroups_path, id, user);
}

bool available(bool user, std::string* why) {
    try {
        if (user && detect() != Mode::unified)
            throw Error("an unprivileged user's systemd cgroups need cgroup v2");
        // Short: `features` should not hang on a wedged bus.
        Systemd sd(user, std::chrono::milliseconds(2000));
        sd.version();
        return true;
    } catch (const Error& e) {
        if (why) *why = e.what();
        return false;
    }
}

std::unique_ptr<Manager> open(const Unit& unit, Mode mode, const std::string& root,
                              const std::string& description) {
    return std::make_unique<SystemdManager>(
        unit, mode, root, description.empty() ? "tarn container " + unit.name : description);
}

}  // namespace systemd

}  // namespace tarn::cgroups
