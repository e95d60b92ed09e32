// The parent <-> init handshake: fixed-size packets over a SOCK_SEQPACKET pair.
// Internal to namespaces/.
#pragma once

#include <cstdint>
#include <string>

#include "namespaces/namespaces.hpp"

namespace tarn::ns::detail {

enum class MsgType : uint32_t {
    go = 1,       // parent -> child: continue
    mounted,      // child -> parent: mounts done, run createRuntime hooks
    ready,        // child -> parent: set up (parked, or about to exec); carries timings
    error,        // child -> parent: setup failed; carries the message
    pty,          // child -> parent: the pty master, as SCM_RIGHTS
    pid,          // intermediate -> parent: the init's pid
};

struct Packet {
    MsgType type{};
    int32_t value = 0;  // pid for MsgType::pid
    Timings timings;
    char text[3072] = {};
};

class SyncSocket {
public:
    explicit SyncSocket(int fd) : fd_(fd) {}
    void send(MsgType t, const std::string& text = {}, const Timings* timings = nullptr, int value = 0,
              int pass_fd = -1);
    // Returns false on EOF (the peer exec'd or died). With `fd_out`, an SCM_RIGHTS fd is kept.
    bool recv(Packet& p, int* fd_out = nullptr);
    // Waits for `want`; an error packet throws its text; EOF throws `eof_what`.
    Packet expect(MsgType want, const char* eof_what, int* fd_out = nullptr);
    // Waits for `ready` (returned: it carries the child's timings); a pty master sent
    // before it goes to `pty_master`. An error packet throws its text; EOF `eof_what`.
    Packet expect_ready(UniqueFd& pty_master, const char* eof_what);
    // After `ready`, the socket closes on exec: EOF means the workload runs; an error
    // packet (the exec failed) throws its text.
    void expect_exec();
    int fd() const { return fd_; }

private:
    int fd_;
};

int clone_flag(oci::NamespaceType t);
// SIGKILL (through the pidfd when there is one) and reap a child that failed setup.
void kill_and_reap(int pidfd, pid_t pid);

// Runs `fn` in the child; any error goes to the parent as MsgType::error and the child exits.
[[noreturn]] void run_child(SyncSocket& sock, const std::function<void()>& fn);

}  // namespace tarn::ns::detail
