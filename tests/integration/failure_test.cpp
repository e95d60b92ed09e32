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
