// The state's `created` timestamp: calendar arithmetic checked against the C library's.
#include <gtest/gtest.h>

#include <ctime>

#include "runtime/container.hpp"

namespace tarn::runtime::detail {
namespace {

std::string via_libc(time_t secs, long nsec) {
    tm t;
    ::gmtime_r(&secs, &t);
    char date[32], out[64];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &t);
    std::snprintf(out, sizeof out, "%s.%09ldZ", date, nsec);
    return out;
}

TEST(Rfc3339, KnownInstants) {
    EXPECT_EQ(rfc3339({0, 0}), "1970-01-01T00:00:00.000000000Z");
    EXPECT_EQ(rfc3339({1709251199, 1}), "2024-02-29T23:59:59.000000001Z");
    EXPECT_EQ(rfc3339({4107542400, 999999999}), "2100-03-01T00:00:00.999999999Z");
}

TEST(Rfc3339, AgreesWithGmtimeAcrossYears) {
    // Every 1000003 s from 1970 to past 2100: month ends, leap days, 2000 and 2100.
    for (time_t s = 0; s < 4200000000; s += 1000003) ASSERT_EQ(rfc3339({s, 123}), via_libc(s, 123)) << s;
}

TEST(Rfc3339, NowIsNow) {
    timespec before, after;
    ::clock_gettime(CLOCK_REALTIME, &before);
    std::string now = rfc3339_now();
    ::clock_gettime(CLOCK_REALTIME, &after);
    // To the second: the same as one of the two readings around it.
    std::string got = now.substr(0, 19);
    EXPECT_TRUE(got == via_libc(before.tv_sec, 0).substr(0, 19) ||
                got == via_libc(after.tv_sec, 0).substr(0, 19))
        << now;
}

}  // namespace
}  // namespace tarn::runtime::detail
