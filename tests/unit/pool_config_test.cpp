// The pool daemon's configuration file, the lease key and the latency percentiles.
#include <gtest/gtest.h>

#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"
#include "error_of.hpp"

namespace tarn::pool {
namespace {

using nlohmann::json;

// Empty when the configuration is accepted.
std::string error_of(const json& j) {
    std::string e = test::error_of([&] { parse_config(j, "pool.json"); });
    return e == "(no error)" ? "" : e;
}

json one_pool(json p = json::object()) {
    json base = {{"name", "fn"}, {"bundle", "/srv/b"}};
    base.update(p);
    return {{"pools", {base}}};
}

TEST(PoolConfig, DefaultsAndEveryField) {
    DaemonOptions o = parse_config(one_pool(), "pool.json");
    EXPECT_EQ(o.socket, kDefaultSocket);
    EXPECT_EQ(o.cgroup_parent, "/tarn-pool");
    EXPECT_EQ(o.max_starting, default_max_starting());
    EXPECT_GE(o.max_starting, 2u);
    EXPECT_LE(o.max_starting, 8u);
    ASSERT_EQ(o.pools.size(), 1u);
    EXPECT_EQ(o.pools[0].min_idle, 2u);
    EXPECT_EQ(o.pools[0].max_total, 16u);
    EXPECT_FALSE(o.pools[0].budget.memory_max);

    json j = one_pool({{"minIdle", 4}, {"maxTotal", 8},
                       {"budget", {{"memory", 1 << 26}, {"cpuQuota", 50000}, {"cpuPeriod", 100000}, {"cpuWeight", 50}, {"pids", 64}}}});
    j["socket"] = "/run/x.sock";
    j["cgroupParent"] = "/pools";
    j["maxStarting"] = 3;
    o = parse_config(j, "pool.json");
    EXPECT_EQ(o.socket, "/run/x.sock");
    EXPECT_EQ(o.cgroup_parent, "/pools");
    EXPECT_EQ(o.max_starting, 3u);
    EXPECT_EQ(o.pools[0].min_idle, 4u);
    EXPECT_EQ(o.pools[0].max_total, 8u);
    EXPECT_EQ(*o.pools[0].budget.memory_max, 1 << 26);
    EXPECT_EQ(*o.pools[0].budget.cpu_quota, 50000);
    EXPECT_EQ(*o.pools[0].budget.cpu_period, 100000u);
    EXPECT_EQ(*o.pools[0].budget.cpu_weight, 50u);
    EXPECT_EQ(*o.pools[0].budget.pids_max, 64);
}

TEST(PoolConfig, ErrorsNameTheFileAndField) {
    EXPECT_EQ(error_of(json::array()), "pool.json: expected object");
    EXPECT_EQ(error_of(json::object()), "pool.json.pools: expected a non-empty array");
    EXPECT_EQ(error_of(json{{"pools", json::array()}, {"sockets", "x"}}), "pool.json.sockets: unknown field");
    EXPECT_EQ(error_of(one_pool({{"bogus", 1}})), "pool.json.pools[0].bogus: unknown field");
    EXPECT_EQ(error_of(json{{"pools", {{{"bundle", "/b"}}}}}), "pool.json.pools[0].name: required");
    EXPECT_EQ(error_of(one_pool({{"name", "a/b"}})),
              "pool.json.pools[0].name: \"a/b\": letters, digits, '-', '_' and '.' only");
    EXPECT_EQ(error_of(one_pool({{"minIdle", "2"}})), "pool.json.pools[0].minIdle: expected integer");
    EXPECT_EQ(error_of(one_pool({{"maxTotal", 0}})), "pool.json.pools[0].maxTotal: must be >= 1, got 0");
    EXPECT_EQ(error_of(one_pool({{"minIdle", 9}, {"maxTotal", 4}})), "pool.json.pools[0].minIdle: 9 is more than maxTotal 4");
    EXPECT_EQ(error_of(one_pool({{"budget", {{"memory", -2}}}})), "pool.json.pools[0].budget.memory: must be >= -1, got -2");
    EXPECT_EQ(error_of(one_pool({{"budget", {{"swap", 1}}}})), "pool.json.pools[0].budget.swap: unknown field");
    json twice = one_pool();
    twice["pools"].push_back(twice["pools"][0]);
    EXPECT_EQ(error_of(twice), "pool.json.pools[1].name: \"fn\" appears twice");
    json rel = one_pool();
    rel["cgroupParent"] = "pools";
    EXPECT_EQ(error_of(rel), "pool.json.cgroupParent: must be an absolute cgroup path");
}

TEST(PoolConfig, VmPoolFields) {
    DaemonOptions o = parse_config(one_pool(), "pool.json");
    EXPECT_EQ(o.pools[0].isolation, "");
    EXPECT_EQ(o.pools[0].vm_refill, "restore");
    o = parse_config(one_pool({{"isolation", "vm"}, {"vmRefill", "boot"}}), "pool.json");
    EXPECT_EQ(o.pools[0].isolation, "vm");
    EXPECT_EQ(o.pools[0].vm_refill, "boot");
    EXPECT_EQ(error_of(one_pool({{"isolation", "kvm"}})),
              "pool.json.pools[0].isolation: \"kvm\": expected \"vm\" or \"container\"");
    EXPECT_EQ(error_of(one_pool({{"vmRefill", "clone"}})),
              "pool.json.pools[0].vmRefill: \"clone\": expected \"restore\" or \"boot\"");
}

TEST(PoolConfig, CgroupReuseIsOnUnlessTurnedOff) {
    EXPECT_TRUE(parse_config(one_pool(), "pool.json").pools[0].reuse_cgroups);
    EXPECT_FALSE(parse_config(one_pool({{"reuseCgroups", false}}), "pool.json").pools[0].reuse_cgroups);
    EXPECT_EQ(error_of(one_pool({{"reuseCgroups", "no"}})),
              "pool.json.pools[0].reuseCgroups: expected true or false");
}

TEST(PoolConfig, SizingAndMetrics) {
    DaemonOptions o = parse_config(one_pool(), "pool.json");
    // Adaptive unless asked otherwise: it never keeps fewer idle than minIdle.
    EXPECT_EQ(o.pools[0].sizing, sizing::Mode::adaptive);
    EXPECT_EQ(o.pools[0].max_idle, 0u);
    EXPECT_EQ(o.pools[0].headroom, 2.0);
    EXPECT_EQ(o.pools[0].rate_window_ms, 3000u);
    EXPECT_EQ(o.pools[0].decay_ms, 30000u);
    EXPECT_EQ(o.metrics, "");

    json j = one_pool({{"sizing", "fixed"}, {"maxIdle", 6}, {"headroom", 1.5}, {"rateWindowMs", 500}, {"decayMs", 700}});
    j["metrics"] = "127.0.0.1:9464";
    o = parse_config(j, "pool.json");
    EXPECT_EQ(o.pools[0].sizing, sizing::Mode::fixed);
    EXPECT_EQ(o.pools[0].max_idle, 6u);
    EXPECT_EQ(o.pools[0].headroom, 1.5);
    EXPECT_EQ(o.pools[0].rate_window_ms, 500u);
    EXPECT_EQ(o.pools[0].decay_ms, 700u);
    EXPECT_EQ(o.metrics, "127.0.0.1:9464");

    EXPECT_EQ(error_of(one_pool({{"sizing", "auto"}})),
              "pool.json.pools[0].sizing: \"auto\": expected \"fixed\" or \"adaptive\"");
    EXPECT_EQ(error_of(one_pool({{"maxIdle", 20}})), "pool.json.pools[0].maxIdle: 20 is more than maxTotal 16");
    EXPECT_EQ(error_of(one_pool({{"minIdle", 5}, {"maxIdle", 4}})),
              "pool.json.pools[0].minIdle: 5 is more than maxIdle 4");
    EXPECT_EQ(error_of(one_pool({{"headroom", 0.5}})), "pool.json.pools[0].headroom: must be between 1 and 100, got 0.5");
    EXPECT_EQ(error_of(one_pool({{"headroom", "2"}})), "pool.json.pools[0].headroom: expected a number");
    EXPECT_EQ(error_of(one_pool({{"decayMs", 0}})), "pool.json.pools[0].decayMs: must be >= 1, got 0");
    json bad = one_pool();
    bad["metrics"] = "localhost:1";
    EXPECT_EQ(error_of(bad), "pool.json.metrics: \"localhost:1\": \"localhost\" is not an IPv4 address");
}

oci::Config config_with(const std::string& linux_json) {
    return oci::parse_config(R"({"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"},"linux":)" +
                                 linux_json + "}",
                             "config.json");
}

TEST(PoolLeaseKey, HoldsWhatASandboxFixesAheadAndNothingElse) {
    auto a = config_with(R"({"namespaces":[{"type":"pid"},{"type":"network"}],"sysctl":{"net.ipv4.ip_forward":"1"}})");
    auto b = config_with(R"({"namespaces":[{"type":"network"},{"type":"pid"}],"sysctl":{"net.ipv4.ip_forward":"1"}})");
    b.hostname = "other";
    b.process->args = {"true"};
    b.annotations["x"] = "y";
    // Order of namespaces, hostname, args and annotations do not matter.
    EXPECT_EQ(detail::lease_key(a), detail::lease_key(b));
    auto c = config_with(R"({"namespaces":[{"type":"pid"},{"type":"network"}],"sysctl":{"net.ipv4.ip_forward":"0"}})");
    EXPECT_NE(detail::lease_key(a), detail::lease_key(c));
    auto d = config_with(R"({"namespaces":[{"type":"pid"},{"type":"network","path":"/proc/1/ns/net"}],"sysctl":{"net.ipv4.ip_forward":"1"}})");
    EXPECT_NE(detail::lease_key(a), detail::lease_key(d));
    auto e = config_with(R"({"namespaces":[{"type":"pid"},{"type":"network"}],"sysctl":{"net.ipv4.ip_forward":"1"},"resources":{"pids":{"limit":5}}})");
    EXPECT_NE(detail::lease_key(a), detail::lease_key(e));
}

TEST(PoolStats, Percentiles) {
    EXPECT_EQ(detail::percentile({}, 50), 0);
    std::vector<double> v;
    for (int i = 100; i >= 1; --i) v.push_back(i);
    EXPECT_EQ(detail::percentile(v, 50), 50);
    EXPECT_EQ(detail::percentile(v, 99), 99);
    EXPECT_EQ(detail::percentile(v, 100), 100);
    EXPECT_EQ(detail::percentile({7}, 99), 7);
}

}  // namespace
}  // namespace tarn::pool
