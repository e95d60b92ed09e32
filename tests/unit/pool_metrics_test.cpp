// The pool's metrics: the Prometheus text exposition format (0.0.4) and the
// little HTTP that serves it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "error_of.hpp"
#include "runtime/pool/metrics.hpp"
#include "runtime/pool/pool.hpp"

namespace tarn::pool::metrics {
namespace {

TEST(PoolMetrics, ValuesAreWrittenAsTheFormatReadsThem) {
    EXPECT_EQ(format_value(0), "0");
    EXPECT_EQ(format_value(42), "42");
    EXPECT_EQ(format_value(-3), "-3");
    EXPECT_EQ(format_value(0.25), "0.25");
    EXPECT_EQ(format_value(0.0001), "0.0001");
    EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(format_value(std::nan("")), "NaN");
    EXPECT_EQ(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

TEST(PoolMetrics, FamiliesHaveHelpTypeAndLabelledSamples) {
    Writer w;
    w.family("tarn_pool_hits_total", "Claims served\nwarm.", "counter");
    w.sample("tarn_pool_hits_total", {{"pool", "fn"}}, 7);
    w.sample("tarn_pool_hits_total", {{"pool", "a\"b"}}, 0);
    w.family("tarn_pool_uptime_seconds", "Up.", "gauge");
    w.sample("tarn_pool_uptime_seconds", {}, 1.5);
    EXPECT_EQ(w.text(),
              "# HELP tarn_pool_hits_total Claims served\\nwarm.\n"
              "# TYPE tarn_pool_hits_total counter\n"
              "tarn_pool_hits_total{pool=\"fn\"} 7\n"
              "tarn_pool_hits_total{pool=\"a\\\"b\"} 0\n"
              "# HELP tarn_pool_uptime_seconds Up.\n"
              "# TYPE tarn_pool_uptime_seconds gauge\n"
              "tarn_pool_uptime_seconds 1.5\n");
}

TEST(PoolMetrics, HistogramBucketsAreCumulativeAndEndInInf) {
    Histogram h;
    h.observe(0.0002);  // ≤ 0.00025
    h.observe(0.0002);
    h.observe(0.003);  // ≤ 0.005
    h.observe(10);     // above every bound: only +Inf
    EXPECT_EQ(h.count, 4u);
    Writer w;
    w.histogram("lat_seconds", {{"pool", "p"}, {"kind", "warm"}}, h);
    const std::string& t = w.text();
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"0.0001\"} 0\n"), std::string::npos)
        << t;
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"0.00025\"} 2\n"), std::string::npos)
        << t;
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"0.0025\"} 2\n"), std::string::npos)
        << t;
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"0.005\"} 3\n"), std::string::npos)
        << t;
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"2.5\"} 3\n"), std::string::npos) << t;
    EXPECT_NE(t.find("lat_seconds_bucket{pool=\"p\",kind=\"warm\",le=\"+Inf\"} 4\n"), std::string::npos) << t;
    EXPECT_NE(t.find("lat_seconds_sum{pool=\"p\",kind=\"warm\"} 10.0034\n"), std::string::npos) << t;
    EXPECT_NE(t.find("lat_seconds_count{pool=\"p\",kind=\"warm\"} 4\n"), std::string::npos) << t;
    // The +Inf bucket comes after every finite one.
    EXPECT_LT(t.find("le=\"2.5\""), t.find("le=\"+Inf\""));
}

TEST(PoolMetrics, OnlyAGetOfMetricsIsServed) {
    auto status = [](std::string_view req) {
        Request r = parse_request(req);
        return r.state == Request::State::complete ? r.status : 0;
    };
    EXPECT_EQ(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    EXPECT_EQ(status("GET /metrics HTTP/1.0\r\n\r\n"), 200);
    EXPECT_EQ(status("GET /metrics?x=1 HTTP/1.1\n\n"), 200);
    EXPECT_TRUE(parse_request("HEAD /metrics HTTP/1.1\r\n\r\n").head);
    EXPECT_EQ(status("GET / HTTP/1.1\r\n\r\n"), 404);
    EXPECT_EQ(status("POST /metrics HTTP/1.1\r\n\r\n"), 405);
    EXPECT_EQ(status("GET /metrics HTTP/2.0\r\n\r\n"), 505);
    EXPECT_EQ(status("GET /metrics\r\n\r\n"), 400);
    EXPECT_EQ(status("nonsense\r\n\r\n"), 400);
    // Not all there yet: wait for more, up to the limit.
    EXPECT_EQ(status("GET /metrics HTTP/1.1\r\nHost: x\r\n"), 0);
    EXPECT_EQ(status(std::string(kMaxRequest - 1, 'a')), 0);
    EXPECT_EQ(status(std::string(kMaxRequest, 'a')), 431);
}

TEST(PoolMetrics, ResponsesCarryTheExpositionContentTypeAndLength) {
    std::string r = response(200, "a 1\n");
    EXPECT_EQ(r,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Content-Length: 4\r\nConnection: close\r\n\r\na 1\n");
    EXPECT_EQ(response(200, "a 1\n", true).find("a 1"), std::string::npos);
    r = response(404, "");
    EXPECT_EQ(r.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << r;
    EXPECT_NE(response(405, "").find("Allow: GET, HEAD\r\n"), std::string::npos);
}

TEST(PoolMetrics, AddressesAreAUnixPathOrAnIpv4Port) {
    Address a = parse_address("unix:/run/tarn/metrics.sock");
    EXPECT_TRUE(a.unix_socket);
    EXPECT_EQ(a.path, "/run/tarn/metrics.sock");
    a = parse_address("127.0.0.1:9464");
    EXPECT_FALSE(a.unix_socket);
    EXPECT_EQ(a.host, "127.0.0.1");
    EXPECT_EQ(a.port, 9464);
    EXPECT_EQ(parse_address("127.0.0.1:0").port, 0);
    EXPECT_EQ(test::error_of([] { parse_address("unix:rel.sock"); }),
              "\"unix:rel.sock\": unix: needs an absolute socket path");
    EXPECT_EQ(test::error_of([] { parse_address("localhost:9464"); }),
              "\"localhost:9464\": \"localhost\" is not an IPv4 address");
    EXPECT_EQ(test::error_of([] { parse_address("127.0.0.1:99999"); }),
              "\"127.0.0.1:99999\": port \"99999\": expected 0 to 65535");
    EXPECT_EQ(test::error_of([] { parse_address("9464"); }), "\"9464\": expected unix:PATH or IPV4:PORT");
}

}  // namespace
}  // namespace tarn::pool::metrics
