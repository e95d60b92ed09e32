// Every JSON document tarn reads is bounded in size and nesting before it is parsed:
// the parser's memory and recursion grow with both, so the check comes first and says
// which document and which limit.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "error_of.hpp"
#include "oci/base.hpp"
#include "oci/oci.hpp"
#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"
#include "runtime/vm/protocol.hpp"

using tarn::test::error_of;

namespace {

std::string nested(std::size_t depth, const std::string& inner = "1") {
    return std::string(depth, '[') + inner + std::string(depth, ']');
}

// A valid config whose unknown key (ignored by the spec's rules) holds `depth` levels.
std::string config_with_deep_extension(std::size_t depth) {
    nlohmann::json c = {{"ociVersion", "1.3.0"},
                        {"root", {{"path", "rootfs"}}},
                        {"process", {{"args", {"sh"}}, {"cwd", "/"}, {"user", {{"uid", 0}, {"gid", 0}}}}}};
    std::string text = c.dump();
    text.pop_back();
    return text + ",\"org.example.extension\":" + nested(depth) + "}";
}

}  // namespace

TEST(JsonBounds, DepthUpToTheLimitIsAccepted) {
    EXPECT_EQ(error_of([] { tarn::check_json_bounds(nested(tarn::kMaxJsonDepth), "doc"); }), "(no error)");
    std::string objects;
    for (std::size_t i = 0; i < tarn::kMaxJsonDepth; ++i) objects += "{\"a\":";
    objects += "1" + std::string(tarn::kMaxJsonDepth, '}');
    EXPECT_EQ(error_of([&] { tarn::check_json_bounds(objects, "doc"); }), "(no error)");
}

TEST(JsonBounds, DeeperThanTheLimitNamesTheSourceLineAndLimit) {
    EXPECT_EQ(error_of([] { tarn::check_json_bounds(nested(tarn::kMaxJsonDepth + 1), "doc"); }),
              "doc: line 1: arrays and objects nested deeper than 64 levels, the limit");
    std::string text = "{\n\"a\":\n" + nested(100) + "}";
    EXPECT_EQ(error_of([&] { tarn::check_json_bounds(text, "x.json"); }),
              "x.json: line 3: arrays and objects nested deeper than 64 levels, the limit");
}

TEST(JsonBounds, BracketsInStringsDoNotCount) {
    std::string deep_string = "[\"" + std::string(1000, '[') + "\"]";
    EXPECT_EQ(error_of([&] { tarn::check_json_bounds(deep_string, "doc"); }), "(no error)");
    // An escaped quote does not end the string; an escaped backslash before a quote does.
    std::string escaped = "[\"\\\"" + std::string(100, '{') + "\"]";
    EXPECT_EQ(error_of([&] { tarn::check_json_bounds(escaped, "doc"); }), "(no error)");
    std::string ends = "[\"\\\\\"," + nested(100) + "]";
    EXPECT_NE(error_of([&] { tarn::check_json_bounds(ends, "doc"); }).find("nested deeper than 64"),
              std::string::npos);
}

TEST(JsonBounds, SizeOverTheLimitNamesBoth) {
    EXPECT_EQ(error_of([] { tarn::check_json_bounds(std::string(11, ' '), "doc", 10); }),
              "doc: 11 bytes, larger than the limit of 10");
    EXPECT_EQ(error_of([] { tarn::check_json_bounds(std::string(10, ' '), "doc", 10); }), "(no error)");
    std::string big(tarn::kMaxJsonDocument + 1, ' ');
    EXPECT_EQ(error_of([&] { tarn::oci::parse_config(big, "config.json"); }),
              "config.json: " + std::to_string(big.size()) + " bytes, larger than the limit of " +
                  std::to_string(tarn::kMaxJsonDocument));
}

// The document that took a second and 400 MB before: refused by the scan alone.
TEST(JsonBounds, TenMegabytesOfNestedArraysIsRefusedByConfigProcessAndResources) {
    std::string bomb = nested(5u << 20);
    EXPECT_NE(error_of([&] { tarn::oci::parse_config(bomb, "config.json"); }).find("config.json: "),
              std::string::npos);
    std::string deep = nested(200);
    EXPECT_EQ(error_of([&] { tarn::oci::parse_config(deep, "config.json"); }),
              "config.json: line 1: arrays and objects nested deeper than 64 levels, the limit");
    EXPECT_EQ(error_of([&] { tarn::oci::parse_process(deep, "p.json"); }),
              "p.json: line 1: arrays and objects nested deeper than 64 levels, the limit");
    EXPECT_EQ(error_of([&] { tarn::oci::parse_resources(deep, "resources (stdin)"); }),
              "resources (stdin): line 1: arrays and objects nested deeper than 64 levels, the limit");
}

TEST(JsonBounds, AValidConfigWithADeepUnknownKeyIsRefused) {
    EXPECT_EQ(error_of([] { tarn::oci::parse_config(config_with_deep_extension(10), "config.json"); }),
              "(no error)");
    EXPECT_EQ(error_of([] { tarn::oci::parse_config(config_with_deep_extension(100), "config.json"); }),
              "config.json: line 1: arrays and objects nested deeper than 64 levels, the limit");
}

TEST(JsonBounds, ReadFileRefusesAFileOverTheLimitBeforeReadingIt) {
    char path[] = "/tmp/tarn-bounds-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 1000), 0);
    ::close(fd);
    EXPECT_EQ(error_of([&] { tarn::read_file(path, 999); }),
              std::string(path) + ": 1000 bytes, larger than the limit of 999");
    EXPECT_EQ(tarn::read_file(path, 1000).size(), 1000u);
    ::unlink(path);
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    ASSERT_EQ(::write(p[1], "0123456789", 10), 10);
    ::close(p[1]);
    EXPECT_EQ(error_of([&] { tarn::read_fd(p[0], 9, "stdin"); }), "stdin: larger than 9 bytes, the limit");
    ::close(p[0]);
}

TEST(JsonBounds, PoolMessagesAreBoundedInDepth) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    std::string deep = "{\"op\":" + nested(100) + "}";
    ASSERT_EQ(::send(sv[0], deep.data(), deep.size(), 0), static_cast<ssize_t>(deep.size()));
    nlohmann::json msg;
    EXPECT_EQ(error_of([&] { tarn::pool::detail::recv_message(sv[1], msg); }),
              "pool message: line 1: arrays and objects nested deeper than 64 levels, the limit");
    std::string ok = "{\"op\":" + nested(10) + "}";
    ASSERT_EQ(::send(sv[0], ok.data(), ok.size(), 0), static_cast<ssize_t>(ok.size()));
    EXPECT_TRUE(tarn::pool::detail::recv_message(sv[1], msg));
    ::close(sv[0]);
    ::close(sv[1]);
}

TEST(JsonBounds, VmProtocolLinesAreBoundedInLengthAndDepth) {
    EXPECT_FALSE(tarn::vm::decode("{\"t\":\"x\",\"d\":" + nested(100) + "}"));
    EXPECT_TRUE(tarn::vm::decode("{\"t\":\"x\",\"d\":" + nested(10) + "}"));
    tarn::vm::LineReader r;
    std::string chunk(64 * 1024, 'x');
    for (std::size_t n = 0; n <= tarn::vm::LineReader::kMaxLine; n += chunk.size()) r.feed(chunk);
    EXPECT_LE(r.pending().size(), tarn::vm::LineReader::kMaxLine + chunk.size());
    r.feed("tail of the long line\n{\"t\":\"ok\"}\n");
    auto line = r.next();
    ASSERT_TRUE(line);
    EXPECT_EQ(*line, "{\"t\":\"ok\"}");
}
