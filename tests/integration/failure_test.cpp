// A failed create says what failed, exits non-zero and leaves nothing behind: no
// state dir, no process, no mount. `delete --force` cleans up after a killed create.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.hpp"

using namespace tarn::test;
using nlohmann::json;

namespace {

void expect_nothing_left(const Bundle& b, const std::string& id) {
    EXPECT_FALSE(path_exists(b.root() + "/" + id)) << "state dir left behind";
    EXPECT_TRUE(processes_matching(b.dir()).empty()) << "a process of the bundle is still running";
    EXPECT_EQ(read_text("/proc/self/mountinfo").find(b.dir()), std::string::npos) << "a mount is left on the host";
}

}  // namespace

TEST(Failure, MissingBindSourceNamesTheMount) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["mounts"].push_back({{"destination", "/data"}, {"type", "bind"}, {"source", "/no/such/dir"}, {"options", {"bind"}}});
    Result r = b.cmd("true").run("m1");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("create m1: mount /no/such/dir on /data: stat mount source /no/such/dir: no such file or directory"),
              std::string::npos)
        << r.err;
    expect_nothing_left(b, "m1");
}

TEST(Failure, BadConfigNamesTheField) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["linux"]["resources"] = {{"memory", {{"limit", "1G"}}}};
    Result r = b.cmd("true").run("bad");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("linux.resources.memory.limit"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("\"1G\""), std::string::npos) << r.err;
    expect_nothing_left(b, "bad");
}

TEST(Failure, MalformedJsonGivesLineAndColumn) {
    REQUIRE_ROOT();
    Bundle b;
    b.write();
    write_text(b.dir() + "/config.json", "{\n  \"ociVersion\": \"1.3.0\",\n  oops\n}\n");
    Result r = tarn::test::tarn({"run", "--bundle", b.dir(), "mj"}, b.root(), b.dir());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
    expect_nothing_left(b, "mj");
}

TEST(Failure, MissingExecutableFailsCreateNotStart) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.args({"/bin/not-here"}).create("nx");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("create nx: exec: \"/bin/not-here\": no such file or directory"), std::string::npos) << r.err;
    expect_nothing_left(b, "nx");
}

TEST(Failure, JsonLogCarriesTheErrorForContainerd) {
    REQUIRE_ROOT();
    Bundle b;
    b.config["mounts"].push_back({{"destination", "/data"}, {"type", "bind"}, {"source", "/no/such/dir"}, {"options", {"bind"}}});
    b.cmd("true").write();
    std::string log = b.dir() + "/log.json";
    Result r = tarn::test::tarn({"--log", log, "--log-format", "json", "create", "--bundle", b.dir(), "lj"}, b.root(), b.dir());
    EXPECT_NE(r.code, 0);
    std::string text = read_text(log);
    std::string last = text.substr(text.rfind('\n', text.size() - 2) + 1);
    json j = json::parse(last);
    EXPECT_EQ(j["level"], "error");
    EXPECT_NE(j["msg"].get<std::string>().find("mount /no/such/dir on /data"), std::string::npos);
    EXPECT_TRUE(j.contains("time"));
    expect_nothing_left(b, "lj");
}

TEST(Failure, DeleteForceCleansUpAfterCreateWasKilled) {
    REQUIRE_ROOT();
    Bundle b;
    // createRuntime hangs; the create is SIGKILLed half-way.
    b.config["hooks"] = {{"createRuntime", {{{"path", "/bin/sleep"}, {"args", {"sleep", "infinity"}}}}}};
    b.cmd("true").write();
    pid_t creator = fork();
    if (creator == 0) {
        execl(TARN_BINARY, TARN_BINARY, "--root", b.root().c_str(), "create", "--bundle", b.dir().c_str(), "half", nullptr);
        _exit(127);
    }
    for (int i = 0; i < 300 && !path_exists(b.root() + "/half/state.json"); ++i) usleep(10000);
    usleep(100000);
    kill(creator, SIGKILL);
    waitpid(creator, nullptr, 0);
    ASSERT_TRUE(path_exists(b.root() + "/half"));
    json st = json::parse(b.tarn({"state", "half"}).out);
    EXPECT_EQ(st["status"], "creating");
    Result d = b.tarn({"delete", "--force", "half"});
    EXPECT_EQ(d.code, 0) << d.err;
    sh("pkill -f 'sleep infinity'");
    expect_nothing_left(b, "half");
}

namespace {

json idmapped_bind(const std::string& source, json uids, json gids) {
    json m = {{"destination", "/data"}, {"type", "bind"}, {"source", source}, {"options", {"bind", "idmap"}}};
    if (!uids.is_null()) m["uidMappings"] = uids;
    if (!gids.is_null()) m["gidMappings"] = gids;
    return m;
}

// The container's cgroup on this host (v1 memory hierarchy, hybrid or unified).
bool cgroup_exists(const std::string& path) {
    return path_exists("/sys/fs/cgroup/memory" + path) || path_exists("/sys/fs/cgroup/unified" + path) ||
           path_exists("/sys/fs/cgroup" + path + "/cgroup.procs");
}

}  // namespace

TEST(Failure, BadIdmapNamesTheMountField) {
    REQUIRE_ROOT();
    Bundle b;
    std::string src = b.scratch("src");
    json one = {{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}};
    json overlapping = {{{"containerID", 0}, {"hostID", 1000}, {"size", 10}},
                        {{"containerID", 5}, {"hostID", 5000}, {"size", 1}}};
    struct Case {
        json mount;
        std::string message;
    } cases[] = {
        {idmapped_bind(src, one, nullptr), "mounts[1].gidMappings: required with uidMappings"},
        {idmapped_bind(src, overlapping, one),
         "mounts[1].uidMappings[1]: containerID range overlaps entry 0"},
        {idmapped_bind(src, {{{"containerID", 0}, {"hostID", 1000}, {"size", 0}}}, one),
         "mounts[1].uidMappings[0].size: must be greater than zero"},
        {idmapped_bind(src, nullptr, nullptr),
         "mounts[1].options: idmap needs uidMappings and gidMappings, or a user namespace"},
        {{{"destination", "/t"},
          {"type", "tmpfs"},
          {"source", "tmpfs"},
          {"uidMappings", one},
          {"gidMappings", one}},
         "mounts[1].uidMappings: only bind mounts can be idmapped"},
    };
    int n = 0;
    for (const Case& c : cases) {
        std::string id = "bad-idmap-" + std::to_string(n++);
        b.config["mounts"] =
            json::array({{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}}, c.mount});
        Result r = b.cmd("true").run(id);
        EXPECT_NE(r.code, 0) << c.message;
        EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
        expect_nothing_left(b, id);
        EXPECT_FALSE(cgroup_exists("/tarn/" + id));
    }
}

TEST(Failure, IdmapOnAFilesystemWithoutSupportSaysSo) {
    REQUIRE_ROOT();
    // procfs has no FS_ALLOW_IDMAP: the mount is refused, named, and nothing is left.
    Bundle b;
    json one = {{{"containerID", 0}, {"hostID", 1000}, {"size", 1}}};
    b.config["mounts"].push_back(idmapped_bind("/proc/sys", one, one));
    size_t index = b.config["mounts"].size() - 1;
    Result r = b.cmd("true").run("idmap-nofs");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("mounts[" + std::to_string(index) +
                         "]: idmapped mount /proc/sys on /data: the filesystem of "
                         "/proc/sys (proc) does not support idmapped mounts"),
              std::string::npos)
        << r.err;
    expect_nothing_left(b, "idmap-nofs");
    EXPECT_FALSE(cgroup_exists("/tarn/idmap-nofs"));
}

TEST(Failure, BadIdIsRejected) {
    REQUIRE_ROOT();
    Bundle b;
    Result r = b.cmd("true").run("../escape");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("container id \"../escape\""), std::string::npos) << r.err;
}

TEST(Failure, UnknownCommandIsAUsageError) {
    Result r = tarn::test::tarn({"frobnicate"}, "/tmp/tarn-none");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("tarn --help"), std::string::npos) << r.err;
}

// `delete --force` finishes from whatever a killed create left: any subset of the v1
// hierarchies made, a record with or without a config, a directory with no record.
namespace {

// Every cgroup directory of `path` on this host: each v1 hierarchy, the cgroup2 side.
std::vector<std::string> cgroup_dirs_left(const std::string& path) {
    std::vector<std::string> out;
    for (const char* h : {"blkio", "cpu,cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "net_cls,net_prio",
                          "perf_event", "pids", "rdma", "misc", "systemd", "unified", ""}) {
        std::string dir = "/sys/fs/cgroup/" + std::string(h) + path;
        if (path_exists(dir + "/cgroup.procs")) out.push_back(dir);
    }
    return out;
}

// A SIGKILLed create's init gets SIGKILL from its parent's death; it may take a moment.
bool no_process_of(const Bundle& b) {
    for (int i = 0; i < 200; ++i) {
        if (processes_matching(b.dir()).empty()) return true;
        usleep(10000);
    }
    return false;
}

void expect_deleted_completely(const Bundle& b, const std::string& id, const std::string& when) {
    Result d = b.tarn({"delete", "--force", id});
    EXPECT_EQ(d.code, 0) << when << ": " << d.err;
    EXPECT_FALSE(path_exists(b.root() + "/" + id)) << when << ": state dir left behind";
    std::vector<std::string> left = cgroup_dirs_left("/tarn/" + id);
    EXPECT_TRUE(left.empty()) << when << ": cgroup left: " << (left.empty() ? "" : left.front());
    EXPECT_TRUE(no_process_of(b)) << when << ": a process of the bundle is still running";
}

}  // namespace

TEST(Failure, DeleteForceFinishesAfterCreateKilledAtAnyPoint) {
    REQUIRE_ROOT();
    Bundle b;
    b.cmd("true").write();
    // A sweep of kill times across the whole of create (about 15-30 ms here): the
    // record, each v1 hierarchy's mkdir, the clone, the placement, the park.
    int n = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (int us = 0; us <= 14000; us += 200, ++n) {
            // Cgroup paths are host-wide: an id of this run alone.
            std::string id = "k" + std::to_string(getpid()) + "-" + std::to_string(n);
            pid_t creator = fork();
            if (creator == 0) {
                execl(TARN_BINARY, TARN_BINARY, "--root", b.root().c_str(), "create", "--bundle", b.dir().c_str(),
                      id.c_str(), nullptr);
                _exit(127);
            }
            usleep(us + pass * 100);
            kill(creator, SIGKILL);
            waitpid(creator, nullptr, 0);
            expect_deleted_completely(b, id, "killed after " + std::to_string(us + pass * 100) + " us");
            if (HasFailure()) return;
        }
    }
}

TEST(Failure, DeleteForceFinishesFromHandMadePartialStates) {
    REQUIRE_ROOT();
    Bundle b;
    const std::vector<std::string> v1 = {"blkio", "cpu,cpuacct", "cpuset", "devices", "freezer", "memory", "pids"};
    auto record = [&](const std::string& id, const json& j) {
        ASSERT_EQ(sh("mkdir -p " + b.root() + "/" + id).code, 0);
        write_text(b.root() + "/" + id + "/state.json", j.dump(), 0600);
    };
    auto creating = [](const std::string& id) {
        return json{{"id", id}, {"pid", 0}, {"status", "creating"}, {"cgroupPath", "/tarn/" + id}};
    };
    // Each single hierarchy made, and each hierarchy missing: the freezer among them
    // (its freezer.state is what a delete used to insist on reading).
    const std::string run = std::to_string(getpid());
    int n = 0;
    for (const std::string& h : v1) {
        if (!path_exists("/sys/fs/cgroup/" + h)) continue;
        std::string only = "only" + run + "-" + std::to_string(n), but = "but" + run + "-" + std::to_string(n);
        ++n;
        record(only, creating(only));
        sh("mkdir -p /sys/fs/cgroup/" + h + "/tarn/" + only);
        expect_deleted_completely(b, only, "only " + h + " made");
        record(but, creating(but));
        for (const std::string& other : v1)
            if (other != h && path_exists("/sys/fs/cgroup/" + other)) sh("mkdir -p /sys/fs/cgroup/" + other + "/tarn/" + but);
        expect_deleted_completely(b, but, "all but " + h + " made");
    }
    // A process inside some hierarchies only (the pids one missing): it is killed and
    // the directories go.
    {
        const std::string busy = "busy" + run;
        record(busy, creating(busy));
        pid_t sleeper = fork();
        if (sleeper == 0) {
            // argv[0] names the bundle, so no_process_of() sees it.
            execl("/bin/sleep", b.dir().c_str(), "infinity", nullptr);
            _exit(127);
        }
        for (const char* h : {"memory", "freezer", "devices"}) {
            sh(std::string("mkdir -p /sys/fs/cgroup/") + h + "/tarn/" + busy);
            write_text(std::string("/sys/fs/cgroup/") + h + "/tarn/" + busy + "/cgroup.procs", std::to_string(sleeper));
        }
        expect_deleted_completely(b, busy, "a process in some hierarchies");
        kill(sleeper, SIGKILL);  // should be gone already: the test must not hang if not
        waitpid(sleeper, nullptr, 0);
        for (const char* h : {"memory", "freezer", "devices"}) rmdir((std::string("/sys/fs/cgroup/") + h + "/tarn/" + busy).c_str());
    }
    // A directory with no record; a record without a config; a record with a pid that
    // is not the container's any more; a record that cannot be read.
    sh("mkdir -p " + b.root() + "/bare");
    expect_deleted_completely(b, "bare", "no record");
    record("nocg", creating("nocg"));
    expect_deleted_completely(b, "nocg", "record, no cgroup made");
    json created = creating("dead");
    created["status"] = "created";
    created["pid"] = 1;
    created["pidStart"] = 12345;
    record("dead", created);
    expect_deleted_completely(b, "dead", "created record, init gone");
    record("corrupt", creating("corrupt"));
    write_text(b.root() + "/corrupt/state.json", "{\"id\": \"corr", 0600);
    expect_deleted_completely(b, "corrupt", "corrupt record");
}

// Every JSON document tarn reads is bounded before it is parsed (oci/base.hpp): the
// error names the document and the limit, and nothing is left behind.
TEST(Failure, DeepOrHugeJsonIsRefusedNamingTheDocumentAndLimit) {
    REQUIRE_ROOT();
    const std::string deep = std::string(100, '[') + std::string(100, ']');
    const std::string too_deep = "arrays and objects nested deeper than 64 levels, the limit";
    Bundle b;
    // A valid config with a deep value under a key the spec lets runtimes ignore.
    b.cmd("sleep infinity").write();
    std::string cfg = read_text(b.dir() + "/config.json");
    std::string with_ext = cfg.substr(0, cfg.rfind('}')) + ",\"org.example.ext\":" + deep + "}";
    write_text(b.dir() + "/config.json", with_ext);
    // (tarn::test::tarn: Bundle::tarn would write config.json again)
    Result r = tarn::test::tarn({"create", "--bundle", b.dir(), "deep"}, b.root(), b.dir());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find(b.dir() + "/config.json: line "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(too_deep), std::string::npos) << r.err;
    expect_nothing_left(b, "deep");
    // 10 MB of nested arrays: refused for its size before it is read.
    write_text(b.dir() + "/config.json", std::string(5u << 20, '[') + std::string(5u << 20, ']'));
    r = tarn::test::tarn({"create", "--bundle", b.dir(), "huge"}, b.root(), b.dir());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find(b.dir() + "/config.json: 10485760 bytes, larger than the limit of 4194304"), std::string::npos)
        << r.err;
    expect_nothing_left(b, "huge");

    // exec --process, update --resources from stdin and from a file, a state.json.
    b.write();
    ASSERT_EQ(b.tarn({"run", "-d", "--bundle", b.dir(), "live"}).code, 0);
    std::string proc = b.dir() + "/process.json";
    write_text(proc, "{\"args\":[\"true\"],\"cwd\":\"/\",\"x\":" + deep + "}");
    r = b.tarn({"exec", "--process", proc, "live"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find(proc + ": line 1: " + too_deep), std::string::npos) << r.err;
    r = b.tarn({"update", "--resources", "-", "live"}, "{\"x\":" + deep + "}");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("resources (stdin): line 1: " + too_deep), std::string::npos) << r.err;
    // tarn stops reading at the limit: the rest of the write gets EPIPE, not a signal.
    sighandler_t old_pipe = signal(SIGPIPE, SIG_IGN);
    r = b.tarn({"update", "--resources", "-", "live"}, std::string(5u << 20, ' '));
    signal(SIGPIPE, old_pipe);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("resources (stdin): larger than 4194304 bytes, the limit"), std::string::npos) << r.err;
    EXPECT_EQ(b.tarn({"delete", "--force", "live"}).code, 0);

    ASSERT_EQ(sh("mkdir -p " + b.root() + "/badstate").code, 0);
    write_text(b.root() + "/badstate/state.json", "{\"id\":\"badstate\",\"x\":" + deep + "}", 0600);
    r = b.tarn({"state", "badstate"});
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find(b.root() + "/badstate/state.json: line 1: " + too_deep), std::string::npos) << r.err;
    EXPECT_EQ(b.tarn({"delete", "--force", "badstate"}).code, 0);
    EXPECT_FALSE(path_exists(b.root() + "/badstate"));
}
