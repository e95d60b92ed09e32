// linux.resources.devices -> v1 devices.allow / devices.deny writes.
#include "cgroups/detail.hpp"

namespace tarn::cgroups {

const std::vector<oci::DeviceCgroupRule>& default_device_rules() {
    auto rule = [](const char* type, std::optional<int64_t> major, std::optional<int64_t> minor,
                   const char* access) {
        return oci::DeviceCgroupRule{true, type, major, minor, access};
    };
    static const std::vector<oci::DeviceCgroupRule> rules = {
        rule("c", std::nullopt, std::nullopt, "m"),  // mknod of any device; opening is what is checked
        rule("b", std::nullopt, std::nullopt, "m"),
        rule("c", 1, 3, "rwm"),               // /dev/null
        rule("c", 1, 5, "rwm"),               // /dev/zero
        rule("c", 1, 7, "rwm"),               // /dev/full
        rule("c", 1, 8, "rwm"),               // /dev/random
        rule("c", 1, 9, "rwm"),               // /dev/urandom
        rule("c", 5, 0, "rwm"),               // /dev/tty
        rule("c", 5, 1, "rwm"),               // /dev/console
        rule("c", 5, 2, "rwm"),               // /dev/ptmx
        rule("c", 136, std::nullopt, "rwm"),  // /dev/pts/*
        rule("c", 10, 200, "rwm"),            // /dev/net/tun
    };
    return rules;
}

namespace detail {

namespace {

std::string id(const std::optional<int64_t>& v) {
    return v ? std::to_string(*v) : "*";
}

void one(const oci::DeviceCgroupRule& r, const std::string& field, std::vector<Write>& out) {
    std::string type = r.type.empty() ? "a" : r.type;
    if (type != "a" && type != "c" && type != "b")
        throw Error(field + ".type: must be \"a\", \"c\" or \"b\", got \"" + r.type + "\"");
    std::string access = r.access.empty() ? "rwm" : r.access;
    for (size_t i = 0; i < access.size(); ++i) {
        if (std::string_view("rwm").find(access[i]) == std::string_view::npos || access.find(access[i]) != i)
            throw Error(field + ".access: must be a subset of \"rwm\", got \"" + r.access + "\"");
    }
    if ((r.major && *r.major < 0) || (r.minor && *r.minor < 0))
        throw Error(field + ": major and minor must not be negative");
    const char* file = r.allow ? "devices.allow" : "devices.deny";
    if (type == "a") {
        // The kernel reads a bare "a" as "every device, every access" and switches
        // the default; a partial access on all devices is a rule per device type.
        if (access.size() == 3) {
            out.push_back(Write{"devices", file, "a", field, false, false});
        } else {
            out.push_back(Write{"devices", file, "c *:* " + access, field, false, false});
            out.push_back(Write{"devices", file, "b *:* " + access, field, false, false});
        }
        return;
    }
    out.push_back(Write{"devices", file, type + " " + id(r.major) + ":" + id(r.minor) + " " + access, field,
                        false, false});
}

}  // namespace

std::vector<Write> translate_devices_v1(const std::vector<oci::DeviceCgroupRule>& rules) {
    // In order: a config that starts with "deny all" (the usual one) switches the
    // cgroup to default-deny first, then opens what it allows. The default rules
    // follow, as runc and crun append them.
    std::vector<Write> out;
    for (size_t i = 0; i < rules.size(); ++i)
        one(rules[i], "linux.resources.devices[" + std::to_string(i) + "]", out);
    for (const auto& r : default_device_rules()) one(r, "default device rules", out);
    return out;
}

}  // namespace detail
}  // namespace tarn::cgroups
