// One message with file descriptors over a unix socket (SCM_RIGHTS): the console
// socket, the init's sync socket, the seccomp listener, a sandbox's claim and the
// pool protocol all go through here.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "namespaces/namespaces.hpp"

namespace tarn::ns {

size_t send_with_fds(int sock, std::string_view data, std::span<const int> fds, const char* what) {
    if (fds.size() > kMaxPassedFds) throw Error(std::string(what) + ": more than " + std::to_string(kMaxPassedFds) + " fds");
    iovec iov{const_cast<char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(kMaxPassedFds * sizeof(int))]{};
    if (!fds.empty()) {
        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    ssize_t n;
    while ((n = ::sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0)
        if (errno != EINTR) throw_errno(what);
    return static_cast<size_t>(n);
}

Received recv_with_fds(int sock, std::span<char> buf, std::vector<UniqueFd>* fds, const char* what) {
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(kMaxPassedFds * sizeof(int))];
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n;
    while ((n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0)
        if (errno != EINTR) throw_errno(what);
    Received r;
    r.bytes = static_cast<size_t>(n);
    r.truncated = msg.msg_flags & MSG_TRUNC;
    r.fds_truncated = msg.msg_flags & MSG_CTRUNC;
    // Every fd that arrived is owned here, so none leaks whatever the caller wanted.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            UniqueFd owned(fd);
            if (fds) fds->push_back(std::move(owned));
        }
    }
    return r;
}

}  // namespace tarn::ns
