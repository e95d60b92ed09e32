// Unit conversions between the v1 numbers the OCI spec uses and the v2 files.
#include <cmath>

#include "cgroups/detail.hpp"

namespace tarn::cgroups::detail {

uint64_t shares_to_weight(uint64_t shares) {
    // runc >= 1.3 / crun >= 1.23: a quadratic in log2(shares) through the three
    // points that matter, (2, 1), (1024, 100) and (262144, 10000), so the default
    // share maps to the default weight. The older linear map sent 1024 to 39.
    if (shares == 0) return 0;
    if (shares <= 2) return 1;
    if (shares >= 262144) return 10000;
    double l = std::log2(static_cast<double>(shares));
    double exponent = (l * l + 125 * l) / 612.0 - 7.0 / 34.0;
    return static_cast<uint64_t>(std::ceil(std::pow(10.0, exponent)));
}

uint64_t blkio_weight_to_io_weight(uint64_t weight) {
    // Linear from [10, 1000] to [1, 10000], as runc and crun convert it.
    if (weight == 0) return 0;
    if (weight < 10) weight = 10;
    if (weight > 1000) weight = 1000;
    return 1 + (weight - 10) * 9999 / 990;
}

uint64_t weight_to_shares(uint64_t weight) {
    // kernel/sched: cpu.weight is stored as shares = round(weight * 1024 / 100).
    return (weight * 1024 + 50) / 100;
}

const std::vector<std::string>& v2_controllers() {
    static const std::vector<std::string> c = {"cpuset",  "cpu",  "io",   "memory",
                                               "hugetlb", "pids", "rdma", "misc"};
    return c;
}

const std::vector<std::string>& v1_hierarchies() {
    // "systemd" is the name=systemd hierarchy: no controller, but joining it keeps
    // the container out of the caller's systemd scope, as runc does.
    static const std::vector<std::string> h = {"cpuset",   "cpu",        "cpuacct", "memory",  "devices",
                                               "freezer",  "blkio",      "pids",    "hugetlb", "net_cls",
                                               "net_prio", "perf_event", "rdma",    "misc",    "systemd"};
    return h;
}

}  // namespace tarn::cgroups::detail
