#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {
namespace {

// Processes of the container: everything sharing the init's pid namespace when it
// has its own; otherwise the init alone.
std::vector<int> container_pids(const detail::Record& rec, const oci::Config& cfg) {
    std::vector<int> out;
    if (auto cg = detail::open_cgroup(rec); cg && cg->exists()) {
        for (pid_t p : cg->pids()) out.push_back(p);
        return out;
    }
    bool own_pidns = false;
    if (cfg.linux)
        if (const oci::Namespace* n = cfg.linux->find_namespace(oci::NamespaceType::pid)) own_pidns = n->path.empty();
    if (!own_pidns) return {rec.state.pid};
    struct stat init_ns;
    if (::stat(("/proc/" + std::to_string(rec.state.pid) + "/ns/pid").c_str(), &init_ns) < 0) return out;
    DIR* d = ::opendir("/proc");
    if (!d) throw_errno("open /proc");
    while (dirent* e = ::readdir(d)) {
        int pid = std::atoi(e->d_name);
        if (pid <= 0) continue;
        struct stat st;
        if (::stat(("/proc/" + std::string(e->d_name) + "/ns/pid").c_str(), &st) == 0 && st.st_ino == init_ns.st_ino &&
            st.st_dev == init_ns.st_dev)
            out.push_back(pid);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

// One row of `ps -ef` for a process, read from /proc, in procps's column widths.
// Empty when the process is gone (it may exit between listing and reading).
struct ProcRow {
    std::string uid, stime, tty, time, cmd;
    long pid = 0, ppid = 0, c = 0;
};

std::string two(long v) {
    char b[8];
    std::snprintf(b, sizeof b, "%02ld", v);
    return b;
}

// [DD-]HH:MM:SS of CPU time, as procps prints TIME.
std::string cpu_time(unsigned long long secs) {
    std::string out;
    if (secs >= 86400) out = std::to_string(secs / 86400) + "-";
    secs %= 86400;
    return out + two(static_cast<long>(secs / 3600)) + ":" + two(static_cast<long>(secs / 60 % 60)) + ":" +
           two(static_cast<long>(secs % 60));
}

// STIME: the time of day for today's processes, else month and day, else the year.
std::string start_time(time_t started, time_t now) {
    std::tm s{};
    std::tm n{};
    ::localtime_r(&started, &s);
    ::localtime_r(&now, &n);
    char b[16];
    if (s.tm_year == n.tm_year && s.tm_yday == n.tm_yday)
        std::strftime(b, sizeof b, "%H:%M", &s);
    else if (s.tm_year == n.tm_year)
        std::strftime(b, sizeof b, "%b%d", &s);
    else
        std::strftime(b, sizeof b, "%Y", &s);
    return b;
}

// The controlling terminal from stat's tty_nr (devices.txt: 136-143 are the Unix98
// pty slaves, 4 the virtual consoles and serial ports).
std::string tty_name(unsigned long tty_nr) {
    if (tty_nr == 0) return "?";
    unsigned major = (tty_nr >> 8) & 0xfff, minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    if (major >= 136 && major <= 143) return "pts/" + std::to_string((major - 136) * 256 + minor);
    if (major == 4 && minor < 64) return "tty" + std::to_string(minor);
    if (major == 4) return "ttyS" + std::to_string(minor - 64);
    return "?";
}

// The name /etc/passwd gives `uid` (read directly: this binary is static, without NSS
// modules); procps prints the number when the name does not fit the column.
std::string user_name(uid_t uid, const std::string& passwd) {
    std::istringstream in(passwd);
    for (std::string line; std::getline(in, line);) {
        size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
        size_t c = b == std::string::npos ? b : line.find(':', b + 1);
        if (c == std::string::npos || line.compare(b + 1, c - b - 1, std::to_string(uid)) != 0) continue;
        if (a <= 8) return line.substr(0, a);
        break;
    }
    return std::to_string(uid);
}

std::optional<ProcRow> read_proc_row(int pid, double uptime, time_t boot, time_t now,
                                     const std::string& passwd) {
    std::string base = "/proc/" + std::to_string(pid) + "/";
    std::string stat, status, cmdline;
    try {
        stat = read_file(base + "stat");
        status = read_file(base + "status");
        cmdline = read_file(base + "cmdline");
    } catch (const Error&) {
        return std::nullopt;
    }
    ProcRow r;
    r.pid = pid;
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 2 > stat.size())
        return std::nullopt;
    std::string comm = stat.substr(open + 1, close - open - 1);
    // Fields after comm, numbered from 3 (state) as in proc(5).
    std::vector<std::string> f{"", "", ""};
    std::istringstream rest(stat.substr(close + 2));
    for (std::string v; rest >> v;) f.push_back(v);
    if (f.size() < 23) return std::nullopt;
    long hz = ::sysconf(_SC_CLK_TCK);
    r.ppid = std::stol(f[4]);
    r.tty = tty_name(std::stoul(f[7]));
    unsigned long long ticks = std::stoull(f[14]) + std::stoull(f[15]);
    double started = static_cast<double>(std::stoull(f[22])) / static_cast<double>(hz);
    r.time = cpu_time(ticks / static_cast<unsigned long long>(hz));
    r.stime = start_time(boot + static_cast<time_t>(started), now);
    // C: integer percent of one CPU over the process's lifetime, capped like procps.
    double alive = uptime - started;
    if (alive > 0)
        r.c = std::min(99L,
                       static_cast<long>(static_cast<double>(ticks) / static_cast<double>(hz) * 100 / alive));
    uid_t euid = 0;
    if (size_t u = status.find("\nUid:"); u != std::string::npos) {
        std::istringstream ids(status.substr(u + 5));
        unsigned long real = 0, effective = 0;
        ids >> real >> effective;
        euid = static_cast<uid_t>(effective);
    }
    r.uid = user_name(euid, passwd);
    while (!cmdline.empty() && cmdline.back() == '\0') cmdline.pop_back();
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    // No command line: a zombie (or a kernel thread), shown by its name as procps does.
    r.cmd = cmdline.empty() ? "[" + comm + "]" + (f[3] == "Z" ? " <defunct>" : "") : cmdline;
    return r;
}

// The default `ps -ef` table, without running ps(1): its columns and widths.
std::string native_table(const std::vector<int>& pids) {
    double uptime = 0;
    std::istringstream(read_file("/proc/uptime")) >> uptime;
    time_t now = ::time(nullptr);
    time_t boot = now - static_cast<time_t>(uptime);
    std::string passwd;
    try {
        passwd = read_file("/etc/passwd");
    } catch (const Error&) {
    }
    std::vector<int> sorted = pids;
    std::sort(sorted.begin(), sorted.end());
    std::string out = "UID        PID  PPID  C STIME TTY          TIME CMD\n";
    for (int pid : sorted) {
        std::optional<ProcRow> r = read_proc_row(pid, uptime, boot, now, passwd);
        if (!r) continue;
        char line[256];
        std::snprintf(line, sizeof line, "%-8s %5ld %5ld %2ld %-5s %-8s %8s ", r->uid.c_str(), r->pid,
                      r->ppid, r->c, r->stime.c_str(), r->tty.c_str(), r->time.c_str());
        out += line + r->cmd + "\n";
    }
    return out;
}

// ps(1) with the caller's arguments (no shell), its whole output.
std::string run_ps(const std::vector<std::string>& args) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
    std::vector<char*> argv{const_cast<char*>("ps")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    int err = ::posix_spawnp(&pid, "ps", &fa, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    if (err) throw_errno("run ps", err);
    wr.reset();
    std::string out;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error("ps exited with status " + std::to_string(WEXITSTATUS(status)));
    return out;
}

// runc's behaviour with explicit ps arguments: the host's ps, its header, and the rows
// whose PID column is one of the container's.
std::string filtered_ps(const std::vector<int>& pids, const std::vector<std::string>& args) {
    std::istringstream in(run_ps(args));
    std::string line, out;
    int pid_col = -1;
    while (std::getline(in, line)) {
        std::istringstream cols(line);
        std::vector<std::string> c;
        for (std::string t; cols >> t;) c.push_back(t);
        if (pid_col < 0) {
            auto it = std::find(c.begin(), c.end(), "PID");
            if (it == c.end()) throw Error("ps output has no PID column");
            pid_col = static_cast<int>(it - c.begin());
            out += line + "\n";
            continue;
        }
        if (static_cast<int>(c.size()) > pid_col &&
            std::find(pids.begin(), pids.end(), std::atoi(c[static_cast<size_t>(pid_col)].c_str())) !=
                pids.end())
            out += line + "\n";
    }
    return out;
}

}  // namespace

int ps(const GlobalOptions& g, const std::string& id, const std::string& format, const std::vector<std::string>& ps_args) {
    try {
        if (format != "table" && format != "json") throw Error("--format must be table or json, got \"" + format + "\"");
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        std::vector<int> pids;
        if (st != oci::Status::stopped && st != oci::Status::creating) pids = container_pids(rec, dir.load_config());
        if (format == "json") {
            // containerd parses this output (stdout and stderr together) as a JSON array of ints.
            std::string out = nlohmann::json(pids).dump() + "\n";
            (void)!::write(1, out.data(), out.size());
            return 0;
        }
        // Table: runc runs `ps -ef` and keeps the container's rows; the default is read
        // from /proc instead (no ps(1) needed), explicit arguments still go to ps(1).
        std::string out = ps_args.empty() ? native_table(pids) : filtered_ps(pids, ps_args);
        (void)!::write(1, out.data(), out.size());
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("ps " + id);
    }
}

}  // namespace tarn::runtime
