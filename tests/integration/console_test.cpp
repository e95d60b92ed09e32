// runtime.md / runc's console socket: with process.terminal the pty master is sent
// over --console-socket; the workload has a controlling terminal.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "harness.hpp"
#include "namespaces/namespaces.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Console, PtyMasterArrivesOnTheConsoleSocket) {
    REQUIRE_ROOT();
    Bundle b;
    std::string path = b.dir() + "/console.sock";
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    ASSERT_EQ(bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(listen(ls, 1), 0);
    int master = -1;
    std::thread receiver([&] {
        int c = accept(ls, nullptr, nullptr);
        if (c < 0) return;
        try {
            master = tarn::ns::recv_fd(c);
        } catch (const tarn::Error&) {
            // Connected and sent nothing: master stays -1, which the test asserts.
        }
        close(c);
    });
    b.config["process"]["terminal"] = true;
    b.config["process"]["consoleSize"] = {{"height", 40}, {"width", 123}};
    b.cmd("tty; stty size");
    Result r = b.create("tty1", {"--console-socket", path});
    receiver.join();
    close(ls);
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_GE(master, 0);
    ASSERT_EQ(b.tarn({"start", "tty1"}).code, 0);
    std::string out;
    for (;;) {
        pollfd p{master, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0) break;
        char buf[512];
        ssize_t n = read(master, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    close(master);
    EXPECT_NE(out.find("/dev/pts/0"), std::string::npos) << out;
    EXPECT_NE(out.find("40 123"), std::string::npos) << out;
}

TEST(Console, TerminalWithoutSocketWhenDetachedIsAnError) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["terminal"] = true;
    Result r = b.cmd("true").create("tty2");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("--console-socket"), std::string::npos) << r.err;
    EXPECT_FALSE(path_exists(b.root() + "/tty2"));
}

TEST(Console, RunProxiesThePty) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["process"]["terminal"] = true;
    Result r = b.cmd("tty; echo done").run("tty3");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("/dev/pts/0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("done"), std::string::npos) << r.out;
}
