// Leases (the OCI path): an idle sandbox's namespaces and cgroup lent to `tarn
// create`, and the leases file that keeps leased cgroups from being reaped.
#include <fcntl.h>
#include <unistd.h>

#include <cctype>

#include "runtime/pool/daemon.hpp"
#include "runtime/runtime.hpp"

namespace tarn::pool::detail {

namespace {

bool valid_container_id(const std::string& id) {
    if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
    for (char ch : id)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
            return false;
    return true;
}

}  // namespace

// OCI path: `tarn create` for a bundle annotated with the pool borrows an idle
// sandbox's namespaces (network, ipc, uts) and cgroup. The sandbox's cgroup becomes
// the container's (cgroup v2 cannot rename, so it keeps its name) and is recorded
// in the leases file at "release", so neither this daemon nor a restarted one reaps
// it; the parked init goes then too. Until then the sandbox is the daemon's: a caller
// that goes away between "lease" and "release" leaves nothing behind.
void Daemon::on_lease(Conn* c, const json& msg) {
    if (c->sb || c->waiting || c->leased) throw Error("one request per connection");
    if (stopping_) throw Error("the pool daemon is stopping");
    std::string name = msg.value("pool", "");
    auto it = pools_.find(name);
    if (it == pools_.end()) throw Error("pool \"" + name + "\": no such pool");
    Pool& p = *it->second;
    std::string id = msg.value("id", "");
    if (!valid_container_id(id))
        throw Error("lease: container id \"" + id + "\": letters, digits, '-', '_' and '.' only");
    std::string kind = p.kind->name();
    if (msg.value("isolation", "container") != (kind == "vm" ? "vm" : "container"))
        throw Error("pool " + name + ": its sandboxes are " + (kind == "vm" ? "VMs" : "processes") +
                    ", the bundle " + (kind == "vm" ? "is not VM-isolated" : "is VM-isolated"));
    json want = p.kind->lease_key(p);
    json got = msg.value("key", json::object());
    auto differs = [&](const std::string& k) {
        if (kind == "vm")
            return Error("pool " + name + ": the bundle's VM differs from the pool's in " + k + " (" +
                         (got.contains(k) ? got[k].dump() : "none") + " against " +
                         (want.contains(k) ? want[k].dump() : "none") + ")");
        return Error("pool " + name + ": config differs from the template in linux." + k);
    };
    for (const auto& [k, v] : want.items())
        if (!got.contains(k) || got[k] != v) throw differs(k);
    for (const auto& [k, v] : got.items())
        if (!want.contains(k)) throw differs(k);
    if (!p.kind->lendable()) throw Error("pool " + name + ": its sandboxes cannot be lent");
    ++p.arrivals;
    Sandbox* sb = take_idle(p);
    if (!sb) {
        ++p.misses;
        resize(p, 1);
        throw Error("pool " + name + ": no idle sandbox");
    }
    ++p.hits;
    unwatch(sb->control_fd(), sb->control_id);
    sb->st = Sandbox::St::leased;
    sb->owner = c;
    c->leased = sb;
    c->pool = &p;
    json lent = {{"sandbox", sb->name}};
    std::vector<int> fds;
    sb->lend(lent, fds);
    detail::send_message(c->fd.get(), lent, fds);
}

void Daemon::load_leases() {
    std::string text;
    try {
        text = read_file(leases_file());
    } catch (const Error&) {
        return;
    }
    // Containers deleted since are dropped from the file.
    std::string kept;
    for (std::string_view line : lines(text)) {
        std::string path(line);
        if (path.empty() || !cgroups::open(path, mode_)->exists()) continue;
        leased_.insert(path);
        kept += path + "\n";
    }
    write_file_atomic(leases_file(), kept, 0600);
}

void Daemon::record_lease(const std::string& cgroup) {
    leased_.insert(cgroup);
    std::string line = cgroup + "\n";
    UniqueFd fd(::open(leases_file().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd || ::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        throw_errno("write " + leases_file());
}

void Daemon::end_lease(Conn* c, bool released) {
    Sandbox* sb = c->leased;
    c->leased = nullptr;
    Pool& p = *sb->pool;
    if (!released) {
        sb->owner = nullptr;
        destroy_sandbox(sb);
        return;
    }
    record_lease(sb->cgroup());
    ++p.leases;
    sb->owner = nullptr;
    sb->hand_over();
    p.sandboxes.erase(sb->name);
}

}  // namespace tarn::pool::detail
