// runtime.md "Lifecycle" and runc's command contract: create parks, start releases,
// state follows the live process, run returns the workload's status.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

TEST(Run, PrintsWorkloadOutputAndReturnsItsExitCode) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("echo hello from inside; exit 3").run();
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_EQ(r.out, "hello from inside\n");
}

// Runs `tarn run` in the background and returns its pid once the container runs.
static pid_t run_in_background(const Bundle& b, const std::string& id) {
    b.write();
    pid_t runner = fork();
    if (runner == 0) {
        execl(TARN_BINARY, TARN_BINARY, "--root", b.root().c_str(), "run", "--bundle", b.dir().c_str(), id.c_str(),
              nullptr);
        _exit(127);
    }
    for (int i = 0; i < 300; ++i) {
        Result st = b.tarn({"state", id});
        if (st.code == 0 && json::parse(st.out)["status"] == "running") break;
        usleep(10000);
    }
    usleep(50000);
    return runner;
}

static int wait_exit_code(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

TEST(Run, ExitBySignalIs128PlusSignal) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity");
    pid_t runner = run_in_background(b, "sig");
    ASSERT_EQ(b.tarn({"kill", "sig", "KILL"}).code, 0);
    EXPECT_EQ(wait_exit_code(runner), 128 + SIGKILL);
}

TEST(Run, RemovesStateAfterExitUnlessKeep) {
    REQUIRE_ROOT();
    Bundle b;
    ASSERT_EQ(b.cmd("true").run("gone").code, 0);
    EXPECT_FALSE(path_exists(b.root() + "/gone"));
    ASSERT_EQ(b.cmd("true").run("kept", {"--keep"}).code, 0);
    Result st = b.tarn({"state", "kept"});
    ASSERT_EQ(st.code, 0) << st.err;
    EXPECT_EQ(json::parse(st.out)["status"], "stopped");
}

TEST(CreateStart, CreateParksTheInitUntilStart) {
    REQUIRE_ROOT();
    Bundle b;
    std::string out = b.scratch("out");
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    b.cmd("echo started > /out/marker; sleep infinity");
    std::string pidfile = b.dir() + "/init.pid";
    Result c = b.create("c1", {"--pid-file", pidfile});
    ASSERT_EQ(c.code, 0) << c.err;

    json st = json::parse(b.tarn({"state", "c1"}).out);
    EXPECT_EQ(st["status"], "created");
    EXPECT_EQ(st["id"], "c1");
    EXPECT_EQ(st["bundle"], b.dir());
    EXPECT_EQ(st["ociVersion"], "1.3.0");
    // containerd's shim parses the pid file as a bare decimal with no newline.
    std::string pid = read_text(pidfile);
    EXPECT_EQ(pid, std::to_string(st["pid"].get<int>()));
    EXPECT_FALSE(path_exists(out + "/marker")) << "the workload ran before start";

    Result s = b.tarn({"start", "c1"});
    ASSERT_EQ(s.code, 0) << s.err;
    for (int i = 0; i < 100 && read_text(out + "/marker") != "started\n"; ++i) usleep(20000);
    EXPECT_EQ(read_text(out + "/marker"), "started\n");
    EXPECT_EQ(json::parse(b.tarn({"state", "c1"}).out)["status"], "running");

    Result again = b.tarn({"start", "c1"});
    EXPECT_NE(again.code, 0);
    EXPECT_NE(again.err.find("start c1: cannot start a container that is running"), std::string::npos) << again.err;

    ASSERT_EQ(b.tarn({"kill", "c1", "KILL"}).code, 0);
    for (int i = 0; i < 100 && json::parse(b.tarn({"state", "c1"}).out)["status"] != "stopped"; ++i) usleep(20000);
    json stopped = json::parse(b.tarn({"state", "c1"}).out);
    EXPECT_EQ(stopped["status"], "stopped");
    EXPECT_FALSE(stopped.contains("pid")) << "runtime.md: pid only while created or running";
    EXPECT_EQ(b.tarn({"delete", "c1"}).code, 0);
    EXPECT_FALSE(path_exists(b.root() + "/c1"));
}

TEST(CreateStart, SecondCreateOfALiveIdFails) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.create("dup").code, 0);
    Result r = b.create("dup");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("container dup already exists"), std::string::npos) << r.err;
    EXPECT_EQ(json::parse(b.tarn({"state", "dup"}).out)["status"], "created") << "the first one is untouched";
}

TEST(Delete, RefusesARunningContainerWithoutForce) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "r1"}).code, 0);
    int pid = json::parse(b.tarn({"state", "r1"}).out)["pid"];
    Result r = b.tarn({"delete", "r1"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("running"), std::string::npos) << r.err;
    ASSERT_EQ(b.tarn({"delete", "--force", "r1"}).code, 0);
    EXPECT_FALSE(alive(pid)) << "delete --force left the init alive";
    EXPECT_FALSE(path_exists(b.root() + "/r1"));
    EXPECT_EQ(b.tarn({"delete", "--force", "r1"}).code, 0) << "containerd deletes twice";
    Result missing = b.tarn({"delete", "r1"});
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.err.find("container r1 does not exist"), std::string::npos) << missing.err;
}

TEST(Kill, DeliversTheNamedSignalToInit) {
    REQUIRE_ROOT();
    Bundle b;
    std::string out = b.scratch("out");
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    b.cmd("trap 'echo got USR1 > /out/sig; exit 0' USR1; echo ready > /out/ready; while true; do sleep 0.05; done");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "k1"}).code, 0);
    for (int i = 0; i < 200 && !path_exists(out + "/ready"); ++i) usleep(10000);
    ASSERT_EQ(b.tarn({"kill", "k1", "USR1"}).code, 0);
    for (int i = 0; i < 200 && !path_exists(out + "/sig"); ++i) usleep(10000);
    EXPECT_EQ(read_text(out + "/sig"), "got USR1\n");
    Result bad = b.tarn({"kill", "k1", "SIGNOPE"});
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.err.find("unknown signal"), std::string::npos) << bad.err;
}

TEST(Kill, RunForwardsSignalsToTheContainer) {
    REQUIRE_ROOT();
    Bundle b;
    // The shell is pid 1 in its pid namespace: a TERM that comes before its trap is
    // dropped, so the signal goes only once the trap is in place.
    std::string out = b.scratch("out");
    b.config["mounts"].push_back({{"destination", "/out"}, {"type", "bind"}, {"source", out}, {"options", {"rbind"}}});
    b.cmd("trap 'exit 7' TERM; echo > /out/ready; while true; do sleep 0.05; done");
    pid_t runner = run_in_background(b, "fw");
    for (int i = 0; i < 1000 && !path_exists(out + "/ready"); ++i) usleep(10000);
    ::kill(runner, SIGTERM);
    EXPECT_EQ(wait_exit_code(runner), 7);
}

TEST(Cli, GlobalOptionsWithValuesBeforeTheCommand) {
    REQUIRE_ROOT();
    // Only the chosen command's flags are built: an option value that names a command
    // ("--isolation container", a log file called "run") must not be taken for it.
    Bundle b;
    std::string log = b.scratch("logs") + "/run";
    Result r = b.cmd("echo ok").tarn({"--isolation", "container", "--log-format", "json", "--log", log, "--debug", "run",
                                      "--bundle", b.dir(), "globals"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "ok\n");
    EXPECT_NE(read_text(log).find("\"level\":\"debug\""), std::string::npos);
    // Unknown commands and --help still see every command.
    Result help = b.tarn({"--help"});
    EXPECT_EQ(help.code, 0);
    for (const char* cmd : {"create", "exec", "update", "pool"}) EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
    Result bad = b.tarn({"--log-format", "text", "frobnicate"});
    EXPECT_NE(bad.code, 0);
}

TEST(List, ShowsEveryContainerWithItsStatus) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity");
    ASSERT_EQ(b.create("a").code, 0);
    ASSERT_EQ(b.create("b").code, 0);
    ASSERT_EQ(b.tarn({"start", "b"}).code, 0);
    Result q = b.tarn({"list", "-q"});
    EXPECT_EQ(q.out, "a\nb\n");
    json arr = json::parse(b.tarn({"list", "--format", "json"}).out);
    ASSERT_EQ(arr.size(), 2u);
    EXPECT_EQ(arr[0]["status"], "created");
    EXPECT_EQ(arr[1]["status"], "running");
    Result table = b.tarn({"list"});
    EXPECT_NE(table.out.find("STATUS"), std::string::npos);
}

TEST(Ps, JsonIsAnArrayOfTheContainersPids) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep infinity & sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "p1"}).code, 0);
    usleep(100000);
    Result r = b.tarn({"ps", "--format", "json", "p1"});
    ASSERT_EQ(r.code, 0) << r.err;
    json pids = json::parse(r.out);
    ASSERT_TRUE(pids.is_array());
    EXPECT_EQ(pids.size(), 2u) << r.out;
    int init = json::parse(b.tarn({"state", "p1"}).out)["pid"];
    EXPECT_NE(std::find(pids.begin(), pids.end(), init), pids.end());
}

TEST(Ps, TableListsTheContainersProcessesLikePsEf) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("sleep 1001 & exec sleep 1002");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "pt1"}).code, 0);
    int init = json::parse(b.tarn({"state", "pt1"}).out)["pid"];
    json pids;
    for (int i = 0; i < 50 && pids.size() < 2; ++i, usleep(20000))
        pids = json::parse(b.tarn({"ps", "--format", "json", "pt1"}).out);
    ASSERT_EQ(pids.size(), 2u) << pids.dump();
    Result r = b.tarn({"ps", "pt1"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string header;
    std::getline(lines, header);
    EXPECT_EQ(header, "UID        PID  PPID  C STIME TTY          TIME CMD");
    std::map<int, std::vector<std::string>> rows;
    for (std::string line; std::getline(lines, line);) {
        std::istringstream cols(line);
        std::vector<std::string> c;
        for (std::string t; cols >> t;) c.push_back(t);
        ASSERT_GE(c.size(), 8u) << line;
        rows[std::stoi(c[1])] = c;
    }
    ASSERT_EQ(rows.size(), 2u) << r.out;
    ASSERT_TRUE(rows.contains(init)) << r.out;
    const auto& row = rows[init];
    EXPECT_EQ(row[0], "root");
    EXPECT_EQ(row[5], "?") << "no terminal";
    EXPECT_EQ(row[6], "00:00:00");
    EXPECT_EQ(row[7] + " " + row[8], "sleep 1002");
    for (auto& [pid, c] : rows)
        if (pid != init) {
            EXPECT_EQ(std::stoi(c[2]), init) << "the other sleep is the init's child";
            EXPECT_EQ(c[7] + " " + c[8], "sleep 1001");
        }
}

TEST(Ps, ExplicitArgumentsGoToPs) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("exec sleep 1003");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "pt2"}).code, 0);
    int init = json::parse(b.tarn({"state", "pt2"}).out)["pid"];
    Result r = b.tarn({"ps", "pt2", "--", "-o", "pid,comm"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string header, row;
    std::getline(lines, header);
    std::getline(lines, row);
    EXPECT_EQ(header.substr(header.find_first_not_of(' ')), "PID COMMAND");
    std::istringstream cols(row);
    int pid = 0;
    std::string comm;
    cols >> pid >> comm;
    EXPECT_EQ(pid, init) << r.out;
    EXPECT_EQ(comm, "sleep");
    std::string rest;
    EXPECT_FALSE(std::getline(lines, rest)) << "only the container's process: " << r.out;
}

TEST(Exec, RunsInTheContainersNamespaces) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["hostname"] = "exec-host";
    b.cmd("sleep infinity");
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "e1"}).code, 0);
    Result r = b.tarn({"exec", "e1", "sh", "-c", "hostname; echo $$; ps | wc -l"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "exec-host");
    Result code = b.tarn({"exec", "e1", "sh", "-c", "exit 42"});
    EXPECT_EQ(code.code, 42);
    Result env = b.tarn({"exec", "--cwd", "/tmp", "--env", "FOO=bar", "--user", "65534:65534", "e1", "sh", "-c",
                         "pwd; echo $FOO; id -u; id -g"});
    EXPECT_EQ(env.out, "/tmp\nbar\n65534\n65534\n") << env.err;
    std::string proc = b.dir() + "/process.json";
    write_text(proc, json{{"args", {"sh", "-c", "echo from process.json"}}, {"cwd", "/"}, {"env", {"PATH=/bin"}}}.dump());
    Result pj = b.tarn({"exec", "--process", proc, "e1"});
    EXPECT_EQ(pj.out, "from process.json\n") << pj.err;
    Result detached = b.tarn({"exec", "--detach", "--pid-file", b.dir() + "/exec.pid", "e1", "sleep", "infinity"});
    ASSERT_EQ(detached.code, 0) << detached.err;
    int epid = std::stoi(read_text(b.dir() + "/exec.pid"));
    EXPECT_TRUE(alive(epid));
    Result missing = b.tarn({"exec", "e1", "no-such-binary"});
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.err.find("executable file not found"), std::string::npos) << missing.err;
}
