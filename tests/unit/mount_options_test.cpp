// Mount options as mount_setattr(2) takes them for bind mounts: the atime modes are one
// field, changed only by clearing the whole MOUNT_ATTR__ATIME mask (else EINVAL).
#include <gtest/gtest.h>

#include "namespaces/mount_options.hpp"

using tarn::ns::parse_mount_options;

namespace {
constexpr uint64_t kMask = 0x70, kNoatime = 0x10, kStrict = 0x20, kRelatime = 0x0, kNosuid = 0x2;
}

TEST(MountOptions, AtimeModesClearTheWholeField) {
    auto m = parse_mount_options({"rbind", "noatime"});
    EXPECT_EQ(m.attr_set & kMask, kNoatime);
    EXPECT_EQ(m.attr_clr & kMask, kMask);
    m = parse_mount_options({"strictatime", "atime"});
    EXPECT_EQ(m.attr_set & kMask, kRelatime);
    EXPECT_EQ(m.attr_clr & kMask, kMask);
    m = parse_mount_options({"norelatime"});
    EXPECT_EQ(m.attr_set & kMask, kStrict);
    m = parse_mount_options({"rnoatime"});
    EXPECT_EQ(m.rec_attr_set & kMask, kNoatime);
    EXPECT_EQ(m.rec_attr_clr & kMask, kMask);
    EXPECT_EQ(m.attr_clr, 0u);
}

TEST(MountOptions, FlagsWithoutAnAttributeLeaveAtimeAlone) {
    auto m = parse_mount_options({"bind", "sync", "nosuid"});
    EXPECT_EQ(m.attr_clr & kMask, 0u) << "sync must not reset the atime mode";
    EXPECT_EQ(m.attr_set, kNosuid);
}
