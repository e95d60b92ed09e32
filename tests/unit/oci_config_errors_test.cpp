// What a user sees for a config.json the JSON layer rejects: malformed text, wrong types,
// missing required members, integers out of range, unsupported versions. Every message
// names the file and the JSON path.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oci/oci.hpp"
#include "error_of.hpp"

namespace tarn::oci {
namespace {

using nlohmann::json;

std::string error_of(std::string_view text, std::string_view source = "config.json") {
    return test::error_of([&] { parse_config(text, source); });
}

// A minimal valid config with `patch` merged in (RFC 7396: objects merge, arrays are
// replaced, null removes a member).
std::string error_with(std::string_view patch) {
    json doc = json::parse(R"({"ociVersion": "1.3.0", "root": {"path": "rootfs"},
                               "process": {"args": ["sh"], "cwd": "/"}})");
    doc.merge_patch(json::parse(patch));
    return error_of(doc.dump());
}

// ---- malformed JSON: line and column of the offending byte ----

TEST(OciConfigErrors, SyntaxErrorNamesLineAndColumn) {
    EXPECT_EQ(error_of("{\n  \"ociVersion\": \"1.0.0\",\n  \"root\": {\"path\": \"rootfs\",}\n}"),
              "config.json: line 3, column 29: unexpected '}'; expected string literal");
    // A token is reported where it ends: the closing quote of "hostname" (as jq does).
    EXPECT_EQ(error_of("{\"ociVersion\": \"1.0.0\"\n \"hostname\": \"x\"}"),
              "config.json: line 2, column 11: unexpected string literal; expected '}'");
    EXPECT_EQ(error_of("{\"terminal\": tru}"), "config.json: line 1, column 17: invalid literal");
}

TEST(OciConfigErrors, TruncatedAndEmptyInput) {
    EXPECT_EQ(error_of("{\"ociVersion\": \"1.0.0\", \"mounts\": ["),
              "config.json: line 1, column 36: unexpected end of input; expected '[', '{', or a literal");
    EXPECT_EQ(error_of(""),
              "config.json: line 1, column 1: unexpected end of input; expected '[', '{', or a literal");
}

TEST(OciConfigErrors, MessagesNameTheSourceFile) {
    EXPECT_EQ(error_of("[]", "/run/b1/config.json"), "/run/b1/config.json: expected object, got array");
}

// ---- types: the path of the member and what was found there ----

TEST(OciConfigErrors, TypeMismatchNamesPathAndValue) {
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": "1G"}}}})"),
              R"(config.json: linux.resources.memory.limit: expected integer, got string "1G")");
    EXPECT_EQ(error_with(R"({"process": {"args": ["sh", "-c", 3]}})"),
              "config.json: process.args[2]: expected string, got number 3");
    EXPECT_EQ(error_with(R"({"process": {"terminal": "yes"}})"),
              R"(config.json: process.terminal: expected boolean, got string "yes")");
    EXPECT_EQ(error_with(R"({"mounts": {"destination": "/proc"}})"),
              "config.json: mounts: expected array, got object");
    EXPECT_EQ(error_with(R"({"mounts": ["/proc"]})"),
              R"(config.json: mounts[0]: expected object, got string "/proc")");
    EXPECT_EQ(error_with(R"({"linux": []})"), "config.json: linux: expected object, got array");
    EXPECT_EQ(error_with(R"({"process": {"oomScoreAdj": 1.5}})"),
              "config.json: process.oomScoreAdj: expected integer, got number 1.5");
    EXPECT_EQ(error_with(R"({"process": {"env": [null]}})"),
              "config.json: process.env[0]: expected string, got null");
    EXPECT_EQ(error_with(R"({"hostname": false})"),
              "config.json: hostname: expected string, got boolean false");
}

TEST(OciConfigErrors, MapKeysAppearInThePath) {
    EXPECT_EQ(error_with(R"({"annotations": {"team": 7}})"),
              "config.json: annotations.team: expected string, got number 7");
    EXPECT_EQ(error_with(R"({"linux": {"sysctl": {"net.ipv4.ip_forward": 1}}})"),
              R"(config.json: linux.sysctl["net.ipv4.ip_forward"]: expected string, got number 1)");
    EXPECT_EQ(
        error_with(R"({"linux": {"resources": {"rdma": {"mlx5_1": {"hcaHandles": -1}}}}})"),
        "config.json: linux.resources.rdma.mlx5_1.hcaHandles: expected non-negative integer, got number -1");
}

TEST(OciConfigErrors, LongStringsAreCut) {
    std::string value(100, 'x');
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"pids": {"limit": ")" + value + R"("}}}})"),
              "config.json: linux.resources.pids.limit: expected integer, got string \"" +
                  std::string(64, 'x') + "\"...");
    // The cut never splits a UTF-8 character: "é" straddling byte 64 is left out whole.
    std::string accented = std::string(63, 'x') + "\u00e9" + std::string(10, 'y');
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"pids": {"limit": ")" + accented + R"("}}}})"),
              "config.json: linux.resources.pids.limit: expected integer, got string \"" +
                  std::string(63, 'x') + "\"...");
}

// ---- required members ----

TEST(OciConfigErrors, MissingRequiredMembers) {
    EXPECT_EQ(error_with(R"({"mounts": [{"destination": "/proc"}, {"type": "tmpfs"}]})"),
              "config.json: mounts[1].destination: required");
    EXPECT_EQ(error_with(R"({"ociVersion": null})"), "config.json: ociVersion: required");
    EXPECT_EQ(error_with(R"({"root": {"path": null, "readonly": true}})"),
              "config.json: root.path: required");
    EXPECT_EQ(error_with(R"({"process": {"cwd": null}})"), "config.json: process.cwd: required");
    EXPECT_EQ(error_with(R"({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000}]}})"),
              "config.json: linux.uidMappings[0].size: required");
    EXPECT_EQ(error_with(R"({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1}]}})"),
              "config.json: process.rlimits[0].hard: required");
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"devices": [{"access": "rwm"}]}}})"),
              "config.json: linux.resources.devices[0].allow: required");
    EXPECT_EQ(error_with(R"({"linux": {"namespaces": [{"path": "/proc/1/ns/pid"}]}})"),
              "config.json: linux.namespaces[0].type: required");
    EXPECT_EQ(error_with(R"({"linux": {"seccomp": {"syscalls": []}}})"),
              "config.json: linux.seccomp.defaultAction: required");
    EXPECT_EQ(error_with(R"({"hooks": {"poststop": [{"args": ["x"]}]}})"),
              "config.json: hooks.poststop[0].path: required");
}

// config-linux.md "Devices": major and minor are REQUIRED unless type is "p".
TEST(OciConfigErrors, DeviceNumbersRequiredExceptForFifos) {
    EXPECT_EQ(error_with(R"({"linux": {"devices": [{"type": "c", "path": "/dev/fuse", "major": 10}]}})"),
              "config.json: linux.devices[0].minor: required");
    EXPECT_EQ(error_with(R"({"linux": {"devices": [{"type": "p", "path": "/dev/fifo"}]}})"), "(no error)");
}

// ---- integer ranges: the model's types are the spec's (uint16, uint32, int64, ...) ----

TEST(OciConfigErrors, UnsignedRejectsNegative) {
    EXPECT_EQ(error_with(R"({"process": {"user": {"uid": -1, "gid": 0}}})"),
              "config.json: process.user.uid: expected non-negative integer, got number -1");
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"cpu": {"shares": -2}}}})"),
              "config.json: linux.resources.cpu.shares: expected non-negative integer, got number -2");
}

TEST(OciConfigErrors, OutOfRangeNamesTheType) {
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"blockIO": {"weight": 70000}}}})"),
              "config.json: linux.resources.blockIO.weight: 70000 is out of range for uint16 (0 to 65535)");
    EXPECT_EQ(error_with(R"({"process": {"user": {"uid": 4294967296}}})"),
              "config.json: process.user.uid: 4294967296 is out of range for uint32 (0 to 4294967295)");
    EXPECT_EQ(error_with(R"({"process": {"scheduler": {"policy": "SCHED_OTHER", "nice": -3000000000}}})"),
              "config.json: process.scheduler.nice: -3000000000 is out of range for int32 (-2147483648 to "
              "2147483647)");
    EXPECT_EQ(error_with(R"({"linux": {"resources": {"memory": {"limit": 9223372036854775808}}}})"),
              "config.json: linux.resources.memory.limit: 9223372036854775808 is out of range for int64 "
              "(-9223372036854775808 to 9223372036854775807)");
    EXPECT_EQ(
        error_with(
            R"({"process": {"rlimits": [{"type": "RLIMIT_CPU", "hard": 18446744073709551616, "soft": 0}]}})"),
        "config.json: process.rlimits[0].hard: 1.8446744073709552e+19 is out of range for uint64 "
        "(0 to 18446744073709551615)");
}

// ---- ociVersion ----

TEST(OciConfigErrors, UnsupportedVersion) {
    EXPECT_EQ(error_with(R"({"ociVersion": "2.0.0"})"),
              R"(config.json: ociVersion: unsupported version "2.0.0" (supported 1.0.0 to 1.3.x))");
    for (const char* v : {"1.4.0", "0.6.0", "1.0", "v1.0.0", "1.0.0.1", "1.x.0", "latest"})
        EXPECT_NE(error_with(std::string(R"({"ociVersion": ")") + v + R"("})").find("unsupported version"),
                  std::string::npos)
            << v;
}

}  // namespace
}  // namespace tarn::oci
