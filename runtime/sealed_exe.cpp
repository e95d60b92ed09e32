// Running from a sealed copy of the tarn binary (the CVE-2019-5736 class).
//
// Every tarn process that enters a container (the init of `create`/`run`, the
// process `exec` starts) is visible there until it execs the workload, and so is its
// /proc/<pid>/exe. A workload that opens that link (or execs `#!/proc/self/exe`, which
// runs the runtime binary as a container process) holds the host's tarn binary, and
// once tarn exits it can reopen it for writing through /proc/self/fd and replace the
// runtime every later container start runs as host root. So those commands switch
// to a copy nothing can write to before they touch any container:
//  - a detached read-only bind mount of the binary (open_tree + mount_setattr):
//    no copy, nothing visible in any mount table, and every open for writing through
//    the /proc link fails with EROFS;
//  - where that is refused (no CAP_SYS_ADMIN: rootless), a memfd copy sealed against
//    writes, growing and shrinking.
// The switch needs no exec: the process maps the copy where its own binary was and
// makes it its executable with PR_SET_MM_MAP (adopt_exe). Only where the kernel
// refuses that (no CAP_CHECKPOINT_RESTORE, no CONFIG_CHECKPOINT_RESTORE) does tarn
// re-exec from the copy, which costs a whole second start of the binary.
// The processes that join a container are also made non-dumpable (spawn.cpp,
// exec_spawn.cpp), so the link cannot even be opened while they set up.
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

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

// The part of the binary's image the loader wrote to and then made read-only
// (PT_GNU_RELRO): its pages differ from the file.
struct Range {
    uintptr_t begin = 0, end = 0;
};

Range relro() {
    Range r;
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* out) {
            for (int i = 0; i < info->dlpi_phnum; ++i)
                if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO) {
                    auto* range = static_cast<Range*>(out);
                    range->begin = (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr) & ~uintptr_t{0xfff};
                    range->end = (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz +
                                  0xfff) & ~uintptr_t{0xfff};
                }
            return 1;  // the first object is the program itself
        },
        &r);
    return r;
}

struct Mapping {
    uintptr_t begin, end;
    int prot;
    off_t offset;
};

// This process's mappings of the file `st` describes, from /proc/self/maps.
std::vector<Mapping> mappings_of(const struct stat& st) {
    std::vector<Mapping> out;
    FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f) return out;
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
        unsigned long begin, end, offset, ino;
        unsigned maj, min;
        char perms[5];
        if (std::sscanf(line, "%lx-%lx %4s %lx %x:%x %lu", &begin, &end, perms, &offset, &maj, &min, &ino) != 7)
            continue;
        if (ino != st.st_ino || makedev(maj, min) != st.st_dev) continue;
        int prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                   (perms[2] == 'x' ? PROT_EXEC : 0);
        out.push_back({begin, end, prot, static_cast<off_t>(offset)});
    }
    std::fclose(f);
    return out;
}

// Makes `target` (the same bytes as the running binary) this process's executable
// without an exec. The kernel changes mm->exe_file only once no mapping of the old
// file is left, so each one is replaced in place first: a range the process never
// wrote by the same range of `target`, one it wrote (data, relocated read-only data)
// by an anonymous copy of its current contents. Both keep every byte where it was,
// code included, so execution goes on across the switch. Raw syscalls: a sanitizer's
// interceptors would check the copy against its own poisoned red zones. False when
// the kernel refuses; the process is then unchanged but for which file backs
// identical pages.
bool adopt_exe(int exe, int target) {
    struct stat st;
    if (::fstat(exe, &st) < 0) return false;
    std::vector<Mapping> maps = mappings_of(st);
    if (maps.empty()) return false;
    Range written = relro();
    // No signal handler may write the data between its copy and its replacement.
    sigset_t all, old;
    sigfillset(&all);
    ::sigprocmask(SIG_SETMASK, &all, &old);
    bool ok = true;
    for (const Mapping& m : maps) {
        // The new pages are made aside, then moved over the old in one step: at no
        // moment is the range unmapped (it holds the code running this).
        size_t len = m.end - m.begin;
        bool dirty = (m.prot & PROT_WRITE) || (m.begin < written.end && written.begin < m.end);
        long tmp = dirty ? ::syscall(SYS_mmap, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                         : ::syscall(SYS_mmap, 0, len, m.prot, MAP_PRIVATE, target, m.offset);
        if (tmp == -1) {
            ok = false;
            break;
        }
        iovec local{reinterpret_cast<void*>(tmp), len}, remote{reinterpret_cast<void*>(m.begin), len};
        if ((dirty && (::syscall(SYS_process_vm_readv, ::getpid(), &local, 1, &remote, 1, 0) != static_cast<long>(len) ||
                       ::syscall(SYS_mprotect, tmp, len, m.prot) < 0)) ||
            ::syscall(SYS_mremap, tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, m.begin) !=
                static_cast<long>(m.begin)) {
            ::syscall(SYS_munmap, tmp, len);
            ok = false;
            break;
        }
    }
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    if (!ok) return false;

    // PR_SET_MM_MAP sets every field: give it the current ones (/proc/self/stat's
    // fields 26-28 and 45-51), changing only the executable.
    std::string stat = read_file("/proc/self/stat");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) return false;
    std::vector<unsigned long> field(53, 0);
    const char* p = stat.c_str() + paren + 2;
    for (int i = 3; i < 53 && *p; ++i) {
        char* end;
        field[i] = std::strtoul(p, &end, 10);
        if (end == p) {  // the state letter (field 3)
            while (*end && *end != ' ') ++end;
        }
        p = *end ? end + 1 : end;
    }
    prctl_mm_map mm{};
    mm.start_code = field[26];
    mm.end_code = field[27];
    mm.start_stack = field[28];
    mm.start_data = field[45];
    mm.end_data = field[46];
    mm.start_brk = field[47];
    mm.brk = static_cast<unsigned long>(::syscall(SYS_brk, 0));
    mm.arg_start = field[48];
    mm.arg_end = field[49];
    mm.env_start = field[50];
    mm.env_end = field[51];
    mm.exe_fd = static_cast<uint32_t>(target);
    return ::prctl(PR_SET_MM, PR_SET_MM_MAP, &mm, sizeof mm, 0) == 0;
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
    // The bind is a path handle; mapping it takes the file opened through it.
    UniqueFd file(::open(("/proc/self/fd/" + std::to_string(target.get())).c_str(), O_RDONLY | O_CLOEXEC));
    if (file && adopt_exe(exe.get(), file.get())) {
        sealed = true;
        return;
    }
    // All these fds are close-on-exec: the kernel holds the file once the exec starts,
    // and no fd of it reaches the container.
    ::execveat(target.get(), "", argv, environ, AT_EMPTY_PATH);
    throw_errno("re-exec tarn from a sealed copy");
}

}  // namespace tarn::runtime
