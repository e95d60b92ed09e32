// The OCI path's borrower: `tarn create` asks a pool daemon for an idle sandbox's
// namespaces and cgroup (the daemon's side is leases.cpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::pool {

namespace {

// Connects to the daemon and asks for a lease; nothing (with `why`) when it refuses.
UniqueFd ask(const std::string& socket, const nlohmann::json& request, nlohmann::json& reply,
             std::vector<UniqueFd>& fds, std::string& why) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket.size() >= sizeof addr.sun_path) {
        why = "pool socket " + socket + ": path too long";
        return {};
    }
    std::strcpy(addr.sun_path, socket.c_str());
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        why = "no pool daemon at " + socket + ": " + std::strerror(errno);
        return {};
    }
    detail::send_message(s.get(), request);
    if (!detail::recv_message(s.get(), reply, &fds)) {
        why = "pool daemon closed the connection";
        return {};
    }
    if (reply.contains("error")) {
        why = reply["error"].get<std::string>();
        return {};
    }
    return s;
}

void release_on(int s, const std::string& sandbox) {
    nlohmann::json reply;
    detail::send_message(s, nlohmann::json{{"op", "release"}});
    if (!detail::recv_message(s, reply) || reply.contains("error"))
        throw Error("lease: pool daemon did not confirm the release of " + sandbox);
}

}  // namespace

std::optional<Lease> lease(const std::string& socket, const std::string& pool, const std::string& id,
                           const oci::Config& c, std::string& why) {
    nlohmann::json reply;
    std::vector<UniqueFd> fds;
    UniqueFd s = ask(socket, nlohmann::json{{"op", "lease"}, {"pool", pool}, {"id", id}, {"key", detail::lease_key(c)}},
                     reply, fds, why);
    if (!s) return std::nullopt;
    if (fds.size() != 1 || !reply.contains("pid") || !reply.contains("cgroup"))
        throw Error("pool daemon: malformed lease reply");
    Lease l;
    l.sandbox = reply.value("sandbox", "");
    l.cgroup = reply["cgroup"].get<std::string>();
    pid_t pid = reply["pid"].get<pid_t>();
    // The sandbox is the daemon's child and not reaped before "release": the pid is
    // still its own; the pidfd confirms it is alive while the namespaces are opened.
    for (const oci::Namespace& n : c.linux ? c.linux->namespaces : std::vector<oci::Namespace>{}) {
        if (!n.path.empty()) continue;
        if (n.type != oci::NamespaceType::network && n.type != oci::NamespaceType::ipc &&
            n.type != oci::NamespaceType::uts)
            continue;
        const char* file = n.type == oci::NamespaceType::network ? "net" : n.type == oci::NamespaceType::ipc ? "ipc" : "uts";
        std::string path = "/proc/" + std::to_string(pid) + "/ns/" + file;
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("lease: open " + path);
        l.namespaces.emplace_back(n.type, std::move(fd));
    }
    if (::syscall(SYS_pidfd_send_signal, fds[0].get(), 0, nullptr, 0) < 0)
        throw Error("lease: sandbox " + l.sandbox + " died while its namespaces were opened");
    release_on(s.get(), l.sandbox);
    return l;
}

std::optional<VmLease> lease_vm(const std::string& socket, const std::string& pool, const std::string& id,
                                const nlohmann::json& key, std::string& why) {
    nlohmann::json reply;
    std::vector<UniqueFd> fds;
    UniqueFd s = ask(socket,
                     nlohmann::json{{"op", "lease"}, {"pool", pool}, {"id", id}, {"isolation", "vm"}, {"key", key}},
                     reply, fds, why);
    if (!s) return std::nullopt;
    if (fds.size() != 1 || !reply.contains("cgroup") || !reply.contains("vmDir"))
        throw Error("pool daemon: malformed lease reply");
    VmLease l;
    l.sandbox = reply.value("sandbox", "");
    l.cgroup = reply["cgroup"].get<std::string>();
    l.vm_dir = reply["vmDir"].get<std::string>();
    l.peer = std::move(fds[0]);
    l.daemon = std::move(s);
    return l;
}

void release_vm(VmLease& l) {
    release_on(l.daemon.get(), l.sandbox);
    l.daemon.reset();
}

}  // namespace tarn::pool
