#include "namespaces/sync.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace tarn::ns::detail {

void SyncSocket::send(MsgType t, const std::string& text, const Timings* timings, int value, int pass_fd) {
    Packet p;
    p.type = t;
    p.value = value;
    if (timings) p.timings = *timings;
    std::strncpy(p.text, text.c_str(), sizeof p.text - 1);
    iovec iov{&p, sizeof p};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char cbuf[CMSG_SPACE(sizeof(int))]{};
    if (pass_fd >= 0) {
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof cbuf;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &pass_fd, sizeof pass_fd);
    }
    while (::sendmsg(fd_, &msg, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) throw_errno("sync with container init");
    }
}

bool SyncSocket::recv(Packet& p, int* fd_out) {
    iovec iov{&p, sizeof p};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char cbuf[CMSG_SPACE(sizeof(int))]{};
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n;
    while ((n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC)) < 0) {
        if (errno != EINTR) throw_errno("sync with container init");
    }
    if (n == 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
            if (fd_out) *fd_out = fd;
            else ::close(fd);
        }
    }
    p.text[sizeof p.text - 1] = '\0';
    return true;
}

Packet SyncSocket::expect(MsgType want, const char* eof_what, int* fd_out) {
    Packet p;
    if (!recv(p, fd_out)) throw Error(eof_what);
    if (p.type == MsgType::error) throw Error(p.text);
    if (p.type != want) throw Error("sync with container init: unexpected message");
    return p;
}

void run_child(SyncSocket& sock, const std::function<void()>& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        try {
            sock.send(MsgType::error, e.what());
        } catch (...) {
            // The parent is gone; stderr is the last place the message can go.
            (void)!::write(2, e.what(), std::strlen(e.what()));
            (void)!::write(2, "\n", 1);
        }
        ::_exit(1);
    }
    ::_exit(0);
}

}  // namespace tarn::ns::detail
