// The config `tarn spec` writes: runc's example spec (libcontainer/specconv.Example), with
// the rootless adjustments of specconv.ToRootless.
#include <algorithm>

#include "oci/oci.hpp"

namespace tarn::oci {

namespace {

// Plain assignments rather than designated initializers: GCC 12 -Wextra flags every
// member a designated initializer leaves out.
Mount mount(std::string destination, std::string type, std::string source, std::vector<std::string> options) {
    Mount m;
    m.destination = std::move(destination);
    m.type = std::move(type);
    m.source = std::move(source);
    m.options = std::move(options);
    return m;
}

Namespace new_namespace(NamespaceType t) {
    Namespace ns;
    ns.type = t;
    return ns;
}

IdMapping map_one(uint32_t host_id) {
    IdMapping m;
    m.container_id = 0;
    m.host_id = host_id;
    m.size = 1;
    return m;
}

Config privileged_spec() {
    Config c;
    c.oci_version = std::string(kSpecVersion);
    c.root.emplace();
    c.root->path = "rootfs";
    c.root->readonly = true;
    c.hostname = "tarn";

    Process& p = c.process.emplace();
    p.terminal = true;
    p.args = {"sh"};
    p.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"};
    p.cwd = "/";
    // Docker's historical minimum: enough for a shell, nothing that reaches into the host.
    const std::vector<std::string> caps = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"};
    Capabilities& pc = p.capabilities.emplace();
    pc.bounding = pc.effective = pc.permitted = caps;
    Rlimit& nofile = p.rlimits.emplace_back();
    nofile.type = "RLIMIT_NOFILE";
    nofile.hard = nofile.soft = 1024;
    p.no_new_privileges = true;

    c.mounts = {
        mount("/proc", "proc", "proc", {}),
        mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
        mount("/dev/pts", "devpts", "devpts",
              {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
        mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
        mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
        mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}),
    };

    Linux& l = c.linux.emplace();
    // Deny every device; the runtime's default devices are allowed on top of this rule.
    DeviceCgroupRule& deny_all = l.resources.emplace().devices.emplace_back();
    deny_all.allow = false;
    deny_all.access = "rwm";
    for (auto t : {NamespaceType::pid, NamespaceType::network, NamespaceType::ipc, NamespaceType::uts,
                   NamespaceType::mount, NamespaceType::cgroup})
        l.namespaces.push_back(new_namespace(t));
    l.masked_paths = {"/proc/acpi",
                      "/proc/asound",
                      "/proc/kcore",
                      "/proc/keys",
                      "/proc/latency_stats",
                      "/proc/timer_list",
                      "/proc/timer_stats",
                      "/proc/sched_debug",
                      "/sys/firmware",
                      "/proc/scsi",
                      "/sys/devices/virtual/powercap"};
    l.readonly_paths = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
    return c;
}

// What an unprivileged user cannot have: a new network namespace it could connect (the
// container keeps the host's network), a cgroup namespace and cgroup mount without a
// delegated hierarchy, device cgroup rules, or files owned by ids it has not mapped.
void make_rootless(Config& c, uint32_t uid, uint32_t gid) {
    auto& ns = c.linux->namespaces;
    std::erase_if(ns, [](const Namespace& n) {
        return n.type == NamespaceType::network || n.type == NamespaceType::cgroup ||
               n.type == NamespaceType::user;
    });
    ns.push_back(new_namespace(NamespaceType::user));
    c.linux->uid_mappings = {map_one(uid)};
    c.linux->gid_mappings = {map_one(gid)};

    std::vector<Mount> mounts;
    for (auto m : c.mounts) {
        if (m.destination == "/sys/fs/cgroup") continue;
        if (m.destination == "/sys") {
            // sysfs can only be mounted by the owner of the network namespace, and the
            // container shares the host's; bind the host's /sys instead.
            mounts.push_back(mount("/sys", "none", "/sys", {"rbind", "nosuid", "noexec", "nodev", "ro"}));
            continue;
        }
        // Only the caller's own ids are mapped, so gid=5 (tty) would make devpts fail.
        std::erase_if(m.options,
                      [](const std::string& o) { return o.starts_with("uid=") || o.starts_with("gid="); });
        mounts.push_back(std::move(m));
    }
    c.mounts = std::move(mounts);
    c.linux->resources.reset();
}

}  // namespace

Config default_spec(bool rootless, uint32_t uid, uint32_t gid) {
    Config c = privileged_spec();
    if (rootless) make_rootless(c, uid, gid);
    return c;
}

}  // namespace tarn::oci
