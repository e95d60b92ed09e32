#include <sys/capability.h>
#include <sys/prctl.h>

#include <algorithm>

#include "namespaces/steps.hpp"

namespace tarn::ns::detail {

std::vector<int> capability_numbers(const std::vector<std::string>& names, const char* field) {
    std::vector<int> out;
    for (const std::string& n : names) {
        cap_value_t v;
        // cap_from_name also takes numbers and lower case; the spec names are upper case.
        if (n.rfind("CAP_", 0) != 0 || cap_from_name(n.c_str(), &v) < 0 || v > static_cast<int>(cap_max_bits()) - 1)
            throw Error(std::string(field) + ": unknown capability \"" + n + "\"");
        out.push_back(v);
    }
    return out;
}

void drop_bounding(const oci::Capabilities& caps) {
    std::vector<int> keep = capability_numbers(caps.bounding, "process.capabilities.bounding");
    int last = static_cast<int>(cap_max_bits());
    for (int c = 0; c < last; ++c) {
        if (std::find(keep.begin(), keep.end(), c) != keep.end()) continue;
        if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            throw_errno(std::string("drop bounding capability ") + cap_to_name(c));
    }
}

void apply_capabilities(const oci::Capabilities& caps) {
    struct Set {
        cap_flag_t flag;
        const std::vector<std::string>& names;
        const char* field;
    };
    const Set sets[] = {
        {CAP_EFFECTIVE, caps.effective, "process.capabilities.effective"},
        {CAP_PERMITTED, caps.permitted, "process.capabilities.permitted"},
        {CAP_INHERITABLE, caps.inheritable, "process.capabilities.inheritable"},
    };
    cap_t c = cap_init();
    if (!c) throw_errno("cap_init");
    for (const Set& s : sets) {
        std::vector<int> nums = capability_numbers(s.names, s.field);
        std::vector<cap_value_t> vals(nums.begin(), nums.end());
        if (!vals.empty() && cap_set_flag(c, s.flag, static_cast<int>(vals.size()), vals.data(), CAP_SET) < 0) {
            cap_free(c);
            throw_errno(std::string("set ") + s.field);
        }
    }
    int r = cap_set_proc(c);
    int err = errno;
    cap_free(c);
    if (r < 0) throw_errno("apply capabilities (effective must be within permitted)", err);
    if (CAP_AMBIENT_SUPPORTED()) {
        // One call: libcap's reset asks about every capability first.
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) throw_errno("clear ambient capabilities");
        for (int v : capability_numbers(caps.ambient, "process.capabilities.ambient")) {
            // Ambient needs the capability permitted and inheritable; the kernel says EPERM otherwise.
            if (cap_set_ambient(v, CAP_SET) < 0)
                throw_errno(std::string("raise ambient capability ") + cap_to_name(v));
        }
    }
}

}  // namespace tarn::ns::detail
