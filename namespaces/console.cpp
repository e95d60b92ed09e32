#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>

#include "namespaces/steps.hpp"

namespace tarn::ns {

void send_fd(int sock, int fd, std::string_view name) {
    send_with_fds(sock, name.empty() ? std::string_view("fd") : name, {&fd, 1}, "send fd over console socket");
}

int recv_fd(int sock) {
    char data[4096];
    std::vector<UniqueFd> fds;
    recv_with_fds(sock, data, &fds, "receive fd");
    if (fds.empty()) throw Error("receive fd: message carried no fd");
    return fds.front().release();
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
