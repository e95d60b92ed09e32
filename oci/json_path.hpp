// JSON paths as they appear in error messages ("linux.namespaces[3].type"), shared by the
// parser and the validator so both name a field the same way.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace tarn::oci::detail {

// A string as it would appear in JSON, so odd bytes in a user's value stay visible.
inline std::string quote(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

// "linux" + "resources" -> "linux.resources". Map keys that are not plain words (sysctl
// names, annotation keys) are bracketed so the path stays unambiguous:
// linux.sysctl["net.ipv4.ip_forward"].
inline std::string member_path(std::string_view parent, std::string_view key) {
    bool plain = !key.empty();
    for (char c : key) {
        bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-';
        if (!word) plain = false;
    }
    if (!plain) return std::string(parent) + "[" + quote(key) + "]";
    if (parent.empty()) return std::string(key);
    return std::string(parent) + "." + std::string(key);
}

inline std::string element_path(std::string_view parent, std::size_t index) {
    return std::string(parent) + "[" + std::to_string(index) + "]";
}

}  // namespace tarn::oci::detail
