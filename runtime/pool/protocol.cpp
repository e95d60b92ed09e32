#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"
#include "oci/oci.hpp"

namespace tarn::pool::detail {

void send_message(int sock, const nlohmann::json& msg, const std::vector<int>& fds) {
    std::string text = msg.dump();
    if (text.size() > kMaxMessage) throw Error("pool message of " + std::to_string(text.size()) + " bytes is too large");
    iovec iov{text.data(), text.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    std::vector<char> cbuf;
    if (!fds.empty()) {
        cbuf.resize(CMSG_SPACE(fds.size() * sizeof(int)));
        m.msg_control = cbuf.data();
        m.msg_controllen = cbuf.size();
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    while (::sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
        if (errno != EINTR) throw_errno("pool socket: send");
}

bool recv_message(int sock, nlohmann::json& msg, std::vector<UniqueFd>* fds) {
    // Uninitialised: only the bytes a message fills are ever touched.
    std::unique_ptr<char[]> buf(new char[kMaxMessage]);
    iovec iov{buf.get(), kMaxMessage};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(8 * sizeof(int))];
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    ssize_t n;
    while ((n = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0)
        if (errno != EINTR) throw_errno("pool socket: receive");
    std::vector<UniqueFd> got;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            got.emplace_back(fd);
        }
    }
    if (n == 0 && got.empty()) return false;
    if (m.msg_flags & MSG_TRUNC) throw Error("pool message larger than " + std::to_string(kMaxMessage) + " bytes");
    if (m.msg_flags & MSG_CTRUNC) throw Error("pool message with too many fds");
    msg = nlohmann::json::parse(buf.get(), buf.get() + n, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) throw Error("pool message is not a JSON object");
    if (fds) *fds = std::move(got);
    return true;
}

nlohmann::json lease_key(const oci::Config& c) {
    nlohmann::json full = oci::to_json(c);
    nlohmann::json key = nlohmann::json::object();
    if (!full.contains("linux")) return key;
    const nlohmann::json& l = full["linux"];
    std::vector<std::string> types;
    for (const auto& n : l.value("namespaces", nlohmann::json::array())) {
        // A namespace joined by path is the bundle's own choice: no lease can match it.
        if (n.contains("path")) types.push_back(n["type"].get<std::string>() + "=" + n["path"].get<std::string>());
        else types.push_back(n["type"].get<std::string>());
    }
    std::sort(types.begin(), types.end());
    key["namespaces"] = types;
    for (const char* k : {"uidMappings", "gidMappings", "sysctl", "resources"})
        if (l.contains(k)) key[k] = l[k];
    return key;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) ;
    return v[std::clamp<size_t>(i == 0 ? 0 : i - 1, 0, v.size() - 1)];
}

}  // namespace tarn::pool::detail
