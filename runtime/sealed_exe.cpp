// Running from a sealed copy of the tarn binary (the CVE-2019-5736 class).
//
// Every tarn process that enters a container (the init of `create`/`run`, the
// process `exec` starts) is visible there until it execs the workload, and so is its
// /proc/<pid>/exe. A workload that opens that link (or execs `#!/proc/self/exe`, which
// runs the runtime binary as a container process) holds the host's tarn binary, and
// once tarn exits it can reopen it for writing through /proc/self/fd and replace the
// runtime every later container start runs as host root. So those commands re-exec
// tarn from a copy nothing can write to before they touch any container:
//  - a detached read-only bind mount of the binary (open_tree + mount_setattr):
//    no copy, nothing visible in any mount table, and every open for writing through
//    the /proc link fails with EROFS;
//  - where that is refused (no CAP_SYS_ADMIN: rootless), a memfd copy sealed against
//    writes, growing and shrinking.
// The processes that join a container are also made non-dumpable (spawn.cpp,
// exec_spawn.cpp), so the link cannot even be opened while they set up.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "runtime/runtime.hpp"

extern char** environ;

namespace tarn::runtime {
namespace {

constexpr unsigned kSeals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

// Already safe: a binary on a read-only mount (our own bind, or a read-only /usr),
// or our sealed memfd.
bool exe_is_sealed(int exe) {
    struct statvfs sv;
    if (::fstatvfs(exe, &sv) == 0 && (sv.f_flag & ST_RDONLY)) return true;
    int seals = ::fcntl(exe, F_GET_SEALS);
    return seals >= 0 && (static_cast<unsigned>(seals) & kSeals) == kSeals;
}

UniqueFd readonly_bind(int exe) {
    UniqueFd tree(::open_tree(exe, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (!tree) return {};
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
    if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) return {};
    return tree;
}

UniqueFd sealed_memfd(int exe) {
    UniqueFd mem(::memfd_create("tarn", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!mem) throw_errno("sealed copy of the tarn binary: memfd_create");
    struct stat st;
    if (::fstat(exe, &st) < 0) throw_errno("sealed copy of the tarn binary: stat");
    off_t off = 0;
    while (off < st.st_size) {
        ssize_t n = ::sendfile(mem.get(), exe, &off, static_cast<size_t>(st.st_size - off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw_errno("sealed copy of the tarn binary: copy");
    }
    if (::fcntl(mem.get(), F_ADD_SEALS, kSeals) < 0) throw_errno("sealed copy of the tarn binary: seal");
    return mem;
}

}  // namespace

void reexec_sealed(char** argv) {
    static bool sealed = false;  // main checks before parsing, the command again after
    if (sealed) return;
    UniqueFd exe(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
    if (!exe) throw_errno("open /proc/self/exe");
    if (exe_is_sealed(exe.get())) {
        sealed = true;
        return;
    }
    UniqueFd target = readonly_bind(exe.get());
    if (!target) target = sealed_memfd(exe.get());
    // Both fds are close-on-exec: the kernel holds the file once the exec starts, and
    // no fd of it reaches the container.
    ::execveat(target.get(), "", argv, environ, AT_EMPTY_PATH);
    throw_errno("re-exec tarn from a sealed copy");
}

}  // namespace tarn::runtime
