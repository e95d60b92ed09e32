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
    std::span<const int> fds;
    if (pass_fd >= 0) fds = {&pass_fd, 1};
    send_with_fds(fd_, {reinterpret_cast<const char*>(&p), sizeof p}, fds, "sync with container init");
}

bool SyncSocket::recv(Packet& p, int* fd_out) {
    std::vector<UniqueFd> fds;
    Received r = recv_with_fds(fd_, {reinterpret_cast<char*>(&p), sizeof p}, &fds, "sync with container init");
    if (r.bytes == 0 && fds.empty()) return false;
    if (fd_out && !fds.empty()) *fd_out = fds.front().release();
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

Packet SyncSocket::expect_ready(UniqueFd& pty_master, const char* eof_what) {
    Packet p;
    for (;;) {
        int pty = -1;
        if (!recv(p, &pty)) throw Error(eof_what);
        if (p.type == MsgType::error) throw Error(p.text);
        if (p.type == MsgType::pty) {
            pty_master.reset(pty);
            continue;
        }
        if (p.type == MsgType::ready) return p;
    }
}

void SyncSocket::expect_exec() {
    Packet p;
    if (recv(p) && p.type == MsgType::error) throw Error(p.text);
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
