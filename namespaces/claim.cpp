// The claim a warm-pool daemon sends a parked sandbox: the per-request part of the
// process, and its stdio.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "namespaces/steps.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns::detail {
namespace {

static_assert(kMaxPassedFds >= 3 + kMaxClaimBinds, "a claim passes stdio and its binds in one message");

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

void put_str(std::string& out, const std::string& s) {
    put_u32(out, static_cast<uint32_t>(s.size()));
    out += s;
}

struct Reader {
    std::string_view in;
    uint32_t u32() {
        if (in.size() < 4) throw Error("claim: truncated");
        uint32_t v;
        std::memcpy(&v, in.data(), 4);
        in.remove_prefix(4);
        return v;
    }
    std::string str() {
        uint32_t n = u32();
        if (in.size() < n) throw Error("claim: truncated");
        std::string s(in.substr(0, n));
        in.remove_prefix(n);
        return s;
    }
};

}  // namespace

void send_claim(int sock, const Claim& c) {
    std::string buf;
    put_str(buf, c.cwd);
    put_u32(buf, static_cast<uint32_t>(c.args.size()));
    for (const std::string& a : c.args) put_str(buf, a);
    put_u32(buf, static_cast<uint32_t>(c.env.size()));
    for (const std::string& e : c.env) put_str(buf, e);
    put_u32(buf, static_cast<uint32_t>(c.binds.size()));
    for (const Claim::Bind& b : c.binds) put_str(buf, b.destination);
    if (c.binds.size() > kMaxClaimBinds) throw Error("claim: more than " + std::to_string(kMaxClaimBinds) + " bind mounts");
    std::vector<int> fds(c.stdio.begin(), c.stdio.end());
    for (const Claim::Bind& b : c.binds) fds.push_back(b.tree);
    if (buf.size() > kMaxClaimBytes)
        throw Error("claim: " + std::to_string(buf.size()) + " bytes of args and env, more than the " +
                    std::to_string(kMaxClaimBytes) + " a sandbox takes");
    send_with_fds(sock, buf, fds, "claim: send to sandbox");
}

bool recv_claim(int sock, Claim& claim) {
    // Static: an init receives one claim. A heap buffer this large would be an mmap and
    // a munmap on the claim path; here only the pages the claim fills are touched.
    static char buf[kMaxClaimBytes];
    std::vector<UniqueFd> fds;
    Received got = recv_with_fds(sock, {buf, kMaxClaimBytes}, &fds, "claim: receive");
    if (got.bytes == 0 && fds.empty()) return false;
    if (fds.size() < 3 || got.truncated || got.fds_truncated) throw Error("claim: malformed message");
    for (int i = 0; i < 3; ++i) claim.stdio[i] = fds[i].release();
    Reader r{std::string_view(buf, got.bytes)};
    claim.cwd = r.str();
    for (uint32_t i = 0, k = r.u32(); i < k; ++i) claim.args.push_back(r.str());
    for (uint32_t i = 0, k = r.u32(); i < k; ++i) claim.env.push_back(r.str());
    uint32_t nb = r.u32();
    if (nb != fds.size() - 3) throw Error("claim: malformed message");
    for (uint32_t i = 0; i < nb; ++i) claim.binds.push_back({fds[3 + i].release(), r.str()});
    return true;
}

void mount_claim_binds(Claim& claim) {
    if (claim.binds.empty()) return;
    UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("claim: open /");
    for (Claim::Bind& b : claim.binds) {
        UniqueFd tree(b.tree);
        b.tree = -1;
        struct stat st;
        if (::fstat(tree.get(), &st) < 0) throw_errno("claim: bind onto " + b.destination);
        // Resolved inside the container's root: no symlink in the image leads out.
        UniqueFd target = mkdir_all_in_root(root.get(), b.destination, !S_ISDIR(st.st_mode));
        if (::move_mount(tree.get(), "", target.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            throw_errno("claim: bind onto " + b.destination);
    }
}

void apply_claim(Claim& claim, std::vector<std::string>& args, std::vector<std::string>& env) {
    for (int i = 0; i < 3; ++i) {
        if (::dup2(claim.stdio[i], i) < 0) throw_errno("claim: stdio");
        if (claim.stdio[i] > 2) ::close(claim.stdio[i]);
    }
    args = std::move(claim.args);
    for (std::string& kv : claim.env) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw Error("claim: env \"" + kv + "\": not KEY=VALUE");
        std::string_view key = std::string_view(kv).substr(0, eq + 1);
        auto same = std::find_if(env.begin(), env.end(), [&](const std::string& e) { return e.starts_with(key); });
        if (same != env.end()) *same = std::move(kv);
        else env.push_back(std::move(kv));
    }
    if (!claim.cwd.empty()) change_cwd(claim.cwd);
}

}  // namespace tarn::ns::detail
