#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>

#include "namespaces/steps.hpp"

namespace tarn::ns {

void send_fd(int sock, int fd, std::string_view name) {
    char buf[CMSG_SPACE(sizeof(int))]{};
    std::string payload(name.empty() ? std::string_view("fd") : name);
    iovec iov{payload.data(), payload.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf;
    msg.msg_controllen = sizeof buf;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) throw_errno("send fd over console socket");
    }
}

int recv_fd(int sock) {
    char data[4096];
    char buf[CMSG_SPACE(sizeof(int))]{};
    iovec iov{data, sizeof data};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf;
    msg.msg_controllen = sizeof buf;
    ssize_t n;
    while ((n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0) {
        if (errno != EINTR) throw_errno("receive fd");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
            return fd;
        }
    }
    throw Error("receive fd: message carried no fd");
}

namespace detail {

UniqueFd setup_console(const oci::Process& p) {
    UniqueFd master(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) throw_errno("open /dev/ptmx");
    if (::unlockpt(master.get()) < 0) throw_errno("unlockpt");
    // TIOCGPTPEER opens the slave through the master, never by a path a hostile
    // /dev/pts could redirect.
    int slave = ::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0) throw_errno("open pty slave");
    if (p.console_size) {
        struct winsize ws{};
        ws.ws_row = static_cast<unsigned short>(p.console_size->height);
        ws.ws_col = static_cast<unsigned short>(p.console_size->width);
        ::ioctl(slave, TIOCSWINSZ, &ws);
    }
    if (::setsid() < 0 && errno != EPERM) throw_errno("setsid");
    if (::ioctl(slave, TIOCSCTTY, 0) < 0) throw_errno("set controlling terminal");
    for (int fd = 0; fd < 3; ++fd)
        if (::dup2(slave, fd) < 0) throw_errno("dup pty slave to stdio");
    if (slave > 2) ::close(slave);
    return master;
}

}  // namespace detail
}  // namespace tarn::ns
