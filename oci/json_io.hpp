// Reading and writing the spec's JSON documents with the field path kept at hand, so every
// error a user can trigger names the field at fault:
//   linux.resources.memory.limit: expected integer, got string "1G"
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "oci/base.hpp"
#include "oci/json_path.hpp"

namespace tarn::oci::detail {

using nlohmann::json;

// Parses JSON text. A syntax error becomes "<source>: line L, column C: <reason>", computed
// from the byte offset nlohmann reports: the last byte it read, so an unexpected token is
// located by its end (the same convention as jq).
inline json parse_json(std::string_view text, std::string_view source) {
    check_json_bounds(text, source);
    try {
        return json::parse(text);
    } catch (const json::parse_error& e) {
        std::size_t pos = std::min<std::size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
        std::string_view before = text.substr(0, pos);
        auto line = 1 + std::count(before.begin(), before.end(), '\n');
        std::size_t line_start = before.rfind('\n');
        line_start = line_start == std::string_view::npos ? 0 : line_start + 1;
        std::size_t column = pos - line_start + 1;

        // nlohmann says "[json.exception.parse_error.101] parse error at line 1, column 9:
        // syntax error while parsing object key - unexpected '}'; expected string literal";
        // keep the part after " - " and drop the "last read" echo, which can be a whole line.
        std::string reason = e.what();
        if (auto dash = reason.find(" - "); dash != std::string::npos) reason.erase(0, dash + 3);
        if (auto lr = reason.find("; last read: '"); lr != std::string::npos) {
            auto end = reason.find("'; expected ", lr + 14);
            reason.erase(lr, end == std::string::npos ? std::string::npos : end + 1 - lr);
        }
        throw Error(std::string(source) + ": line " + std::to_string(line) + ", column " +
                    std::to_string(column) + ": " + reason);
    }
}

// "string \"1G\"", "number 3", "boolean true", "null", "object", "array".
inline std::string describe(const json& j) {
    switch (j.type()) {
        case json::value_t::string: {
            std::string s = j.get_ref<const std::string&>();
            bool cut = s.size() > 64;
            if (cut) {
                // Back off to a character boundary so the message stays valid UTF-8.
                std::size_t n = 64;
                while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
                s.resize(n);
            }
            return "string " + quote(s) + (cut ? "..." : "");
        }
        case json::value_t::boolean:
            return j.get<bool>() ? "boolean true" : "boolean false";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned:
        case json::value_t::number_float:
            return "number " + j.dump();
        case json::value_t::null:
            return "null";
        case json::value_t::object:
            return "object";
        case json::value_t::array:
            return "array";
        default:
            return "value";
    }
}

template <std::integral T>
constexpr const char* int_type_name() {
    if constexpr (std::is_unsigned_v<T>) {
        if constexpr (sizeof(T) == 1) return "uint8";
        if constexpr (sizeof(T) == 2) return "uint16";
        if constexpr (sizeof(T) == 4) return "uint32";
        return "uint64";
    } else {
        if constexpr (sizeof(T) == 1) return "int8";
        if constexpr (sizeof(T) == 2) return "int16";
        if constexpr (sizeof(T) == 4) return "int32";
        return "int64";
    }
}

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
struct is_string_map : std::false_type {};
template <class T>
struct is_string_map<std::map<std::string, T>> : std::true_type {};

// One node of a parsed document plus its path. Absent and null members are the same thing
// here: the spec's optional fields may be written as null by some generators.
class Reader {
public:
    Reader(const json& j, std::string path) : j_(&j), path_(std::move(path)) {}

    const std::string& path() const { return path_; }

    [[noreturn]] void fail(std::string_view msg) const {
        throw Error(path_.empty() ? std::string(msg) : path_ + ": " + std::string(msg));
    }
    void expect_object() const {
        if (!j_->is_object()) fail("expected object, got " + describe(*j_));
    }
    void expect_array() const {
        if (!j_->is_array()) fail("expected array, got " + describe(*j_));
    }

    // The member `key` of this object, or nullopt when absent or null.
    std::optional<Reader> field(std::string_view key) const {
        auto it = j_->find(key);
        if (it == j_->end() || it->is_null()) return std::nullopt;
        return Reader(*it, member_path(path_, key));
    }
    Reader required(std::string_view key) const {
        auto f = field(key);
        if (!f) throw Error(member_path(path_, key) + ": required");
        return *f;
    }

    std::string string() const {
        if (!j_->is_string()) fail("expected string, got " + describe(*j_));
        return j_->get<std::string>();
    }
    bool boolean() const {
        if (!j_->is_boolean()) fail("expected boolean, got " + describe(*j_));
        return j_->get<bool>();
    }
    template <std::integral T>
    T integer() const;

    // Reads a scalar, optional scalar, list of scalars or string-keyed map of scalars.
    template <class T>
    void load(T& out) const;

    // Optional member: `out` keeps its default when the member is absent.
    template <class T>
    void read(std::string_view key, T& out) const {
        if (auto f = field(key)) f->load(out);
    }
    template <class T>
    void require(std::string_view key, T& out) const {
        required(key).load(out);
    }

    // Structured members, each read by `fn(const Reader&)` from an object.
    template <class F>
    auto object(std::string_view key, F fn) const -> std::optional<decltype(fn(*this))> {
        auto f = field(key);
        if (!f) return std::nullopt;
        f->expect_object();
        return fn(*f);
    }
    template <class F>
    auto list_of(std::string_view key, F fn) const -> std::vector<decltype(fn(*this))> {
        std::vector<decltype(fn(*this))> out;
        auto f = field(key);
        if (!f) return out;
        f->expect_array();
        for (std::size_t i = 0; i < f->j_->size(); ++i) {
            Reader e((*f->j_)[i], element_path(f->path_, i));
            e.expect_object();
            out.push_back(fn(e));
        }
        return out;
    }
    template <class F>
    auto map_of(std::string_view key, F fn) const -> std::map<std::string, decltype(fn(*this))> {
        std::map<std::string, decltype(fn(*this))> out;
        auto f = field(key);
        if (!f) return out;
        f->expect_object();
        for (const auto& [k, v] : f->j_->items()) {
            Reader e(v, member_path(f->path_, k));
            e.expect_object();
            out.emplace(k, fn(e));
        }
        return out;
    }

private:
    template <std::integral T>
    [[noreturn]] void out_of_range() const {
        fail(j_->dump() + " is out of range for " + int_type_name<T>() + " (" +
             std::to_string(std::numeric_limits<T>::min()) + " to " +
             std::to_string(std::numeric_limits<T>::max()) + ")");
    }

    const json* j_;
    std::string path_;
};

template <std::integral T>
T Reader::integer() const {
    // nlohmann stores every non-negative integer literal as unsigned and only negative ones
    // as signed, so each branch below has one sign.
    if (j_->is_number_unsigned()) {
        auto v = j_->get<std::uint64_t>();
        if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) out_of_range<T>();
        return static_cast<T>(v);
    }
    if (j_->is_number_integer()) {
        auto v = j_->get<std::int64_t>();
        if constexpr (std::is_unsigned_v<T>) {
            fail("expected non-negative integer, got " + describe(*j_));
        } else {
            if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min())) out_of_range<T>();
            return static_cast<T>(v);
        }
    }
    // Literals beyond 64 bits arrive as doubles; say "out of range" rather than "not an
    // integer" for those.
    if (j_->is_number_float()) {
        double d = j_->get<double>();
        if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) >= 9.2e18) out_of_range<T>();
    }
    fail("expected integer, got " + describe(*j_));
}

template <class T>
void Reader::load(T& out) const {
    if constexpr (std::same_as<T, std::string>) {
        out = string();
    } else if constexpr (std::same_as<T, bool>) {
        out = boolean();
    } else if constexpr (std::integral<T>) {
        out = integer<T>();
    } else if constexpr (is_optional<T>::value) {
        typename T::value_type v{};
        load(v);
        out = std::move(v);
    } else if constexpr (is_vector<T>::value) {
        expect_array();
        out.clear();
        for (std::size_t i = 0; i < j_->size(); ++i)
            Reader((*j_)[i], element_path(path_, i)).load(out.emplace_back());
    } else if constexpr (is_string_map<T>::value) {
        expect_object();
        out.clear();
        for (const auto& [k, v] : j_->items()) Reader(v, member_path(path_, k)).load(out[k]);
    } else {
        static_assert(!sizeof(T), "no JSON reading for this type");
    }
}

// ---- writing: members are emitted only when set, so absent stays absent on a round trip.

inline void put_if(json& j, const char* key, const std::string& v) {
    if (!v.empty()) j[key] = v;
}
template <class T>
void put_if(json& j, const char* key, const std::optional<T>& v) {
    if (v) j[key] = *v;
}
template <class T>
void put_if(json& j, const char* key, const std::vector<T>& v) {
    if (!v.empty()) j[key] = v;
}
inline void put_if(json& j, const char* key, const std::map<std::string, std::string>& v) {
    if (!v.empty()) j[key] = v;
}
template <class T, class F>
void put_list(json& j, const char* key, const std::vector<T>& v, F fn) {
    if (v.empty()) return;
    json arr = json::array();
    for (const auto& e : v) arr.push_back(fn(e));
    j[key] = std::move(arr);
}
template <class T, class F>
void put_map(json& j, const char* key, const std::map<std::string, T>& v, F fn) {
    if (v.empty()) return;
    json obj = json::object();
    for (const auto& [k, e] : v) obj[k] = fn(e);
    j[key] = std::move(obj);
}

// Serialises with a tarn::Error rather than nlohmann's exception when a string is not UTF-8
// (only possible for values set in code, never for parsed ones).
inline std::string dump_text(const json& j, int indent, std::string_view what) {
    try {
        return j.dump(indent);
    } catch (const json::exception& e) {
        throw Error("encode " + std::string(what) + ": " + e.what());
    }
}

}  // namespace tarn::oci::detail
