// The borrower's side of a pool VM's lease (docs/pool.md, VM pools on the OCI path):
// `tarn create` of a VM-isolated bundle annotated with a pool hands the pool VM's
// monitor its rootfs and bind sources as detached mount trees, and gets the guest's
// channel back for the container's own monitor.
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include "namespaces/namespaces.hpp"
#include "namespaces/syscalls.hpp"
#include "runtime/vm/vm.hpp"

namespace tarn::runtime::vm {
namespace {

using nlohmann::json;

// A private copy of the tree at `path`, read-only throughout when asked: nothing
// done with it in the VM monitor's namespace reaches the host's mounts, and a guest
// cannot write through it what the config keeps read-only.
UniqueFd clone_tree(const std::string& path, bool readonly, const std::string& what) {
    UniqueFd tree(::open_tree(AT_FDCWD, path.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!tree) throw_errno("clone " + what + " " + path);
    struct mount_attr attr {};
    attr.propagation = MS_PRIVATE;
    if (readonly) attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        throw_errno("set the attributes of " + what + " " + path);
    return tree;
}

}  // namespace

std::shared_ptr<Launch::Adopted> attach_to_pool_vm(UniqueFd peer, const std::string& rootfs, bool rootfs_readonly,
                                                    const std::vector<Share>& shares,
                                                    const std::vector<MountPoint>& mount_points) {
    if (rootfs_readonly) {
        // As for a cold VM: the guest cannot make mount points in a read-only root.
        UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!root) throw_errno("open root.path " + rootfs);
        for (const MountPoint& mp : mount_points) {
            try {
                ns::detail::mkdir_all_in_root(root.get(), mp.path, mp.file);
            } catch (const Error& e) {
                throw e.wrapped("mount point " + mp.path + " in root.path " + rootfs);
            }
        }
    }
    std::vector<UniqueFd> trees;
    trees.push_back(clone_tree(rootfs, rootfs_readonly, "root.path"));
    json list = json::array();
    for (const Share& sh : shares) {
        trees.push_back(clone_tree(sh.source, sh.readonly, "the bind source"));
        list.push_back({{"tag", sh.tag}, {"file", sh.file ? sh.source.substr(sh.source.find_last_of('/') + 1) : ""}});
    }
    std::vector<int> fds;
    for (const UniqueFd& t : trees) fds.push_back(t.get());
    ns::send_with_fds(peer.get(), json{{"op", "attach"}, {"shares", list}}.dump(), fds, "send the trees to the pool VM");
    trees.clear();

    pollfd p{peer.get(), POLLIN, 0};
    int ready;
    while ((ready = ::poll(&p, 1, 60000)) < 0 && errno == EINTR) {
    }
    if (ready == 0) throw Error("the pool VM did not answer within 60 s");
    std::string buf(64 * 1024, '\0');
    std::vector<UniqueFd> got;
    ns::Received r = ns::recv_with_fds(peer.get(), std::span<char>(buf.data(), buf.size()), &got, "pool VM");
    json reply = r.truncated ? json() : json::parse(buf.substr(0, r.bytes), nullptr, false);
    if (r.bytes == 0) throw Error("the pool VM's monitor exited");
    if (!reply.is_object()) throw Error("the pool VM's monitor sent a malformed reply");
    if (reply.contains("error")) throw Error("pool VM: " + reply["error"].get<std::string>());
    if (got.size() != 3) throw Error("the pool VM's monitor sent " + std::to_string(got.size()) + " fds, not 3");
    auto a = std::make_shared<Launch::Adopted>();
    a->serial = std::move(got[0]);
    a->qmp = std::move(got[1]);
    a->qemu_pidfd = std::move(got[2]);
    a->lifeline = std::move(peer);
    a->qemu_log = reply.value("qemuLog", "");
    return a;
}

}  // namespace tarn::runtime::vm
