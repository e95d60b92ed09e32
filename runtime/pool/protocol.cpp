#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "namespaces/namespaces.hpp"
#include "runtime/pool/detail.hpp"
#include "runtime/pool/pool.hpp"
#include "oci/oci.hpp"

namespace tarn::pool::detail {

void send_message(int sock, const nlohmann::json& msg, const std::vector<int>& fds) {
    std::string text = msg.dump();
    if (text.size() > kMaxMessage) throw Error("pool message of " + std::to_string(text.size()) + " bytes is too large");
    ns::send_with_fds(sock, text, fds, "pool socket: send");
}

bool recv_message(int sock, nlohmann::json& msg, std::vector<UniqueFd>* fds) {
    // One buffer per thread, reused: a fresh 160 KiB allocation per message is an
    // mmap/munmap pair or a heap grown and trimmed each time.
    thread_local std::unique_ptr<char[]> buf(new char[kMaxMessage]);
    std::vector<UniqueFd> got;
    ns::Received r = ns::recv_with_fds(sock, {buf.get(), kMaxMessage}, &got, "pool socket: receive");
    if (r.bytes == 0 && got.empty()) return false;
    if (r.truncated) throw Error("pool message larger than " + std::to_string(kMaxMessage) + " bytes");
    if (r.fds_truncated) throw Error("pool message with too many fds");
    // The size is bounded by the buffer; the depth is not.
    check_json_bounds(std::string_view(buf.get(), r.bytes), "pool message", kMaxMessage);
    msg = nlohmann::json::parse(buf.get(), buf.get() + r.bytes, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) throw Error("pool message is not a JSON object");
    if (fds) *fds = std::move(got);
    return true;
}

nlohmann::json lease_key(const oci::Config& c) {
    nlohmann::json full = oci::to_json(c);
    nlohmann::json key = nlohmann::json::object();
    if (!full.contains("linux")) return key;
    const nlohmann::json& l = full["linux"];
    std::vector<std::string> types;
    for (const auto& n : l.value("namespaces", nlohmann::json::array())) {
        // A namespace joined by path is the bundle's own choice: no lease can match it.
        if (n.contains("path")) types.push_back(n["type"].get<std::string>() + "=" + n["path"].get<std::string>());
        else types.push_back(n["type"].get<std::string>());
    }
    std::sort(types.begin(), types.end());
    key["namespaces"] = types;
    for (const char* k : {"uidMappings", "gidMappings", "sysctl", "resources"})
        if (l.contains(k)) key[k] = l[k];
    return key;
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) ;
    return v[std::clamp<size_t>(i == 0 ? 0 : i - 1, 0, v.size() - 1)];
}

}  // namespace tarn::pool::detail
