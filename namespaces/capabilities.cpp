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

namespace {

bool listed(const std::vector<int>& set, int v) { return std::find(set.begin(), set.end(), v) != set.end(); }

}  // namespace

FinalCapabilities::~FinalCapabilities() {
    if (caps_) cap_free(caps_);
}

FinalCapabilities& FinalCapabilities::operator=(FinalCapabilities&& o) noexcept {
    std::swap(caps_, o.caps_);
    return *this;
}

void FinalCapabilities::release() {
    if (!caps_) return;
    // The filter is in force: this capset is the one syscall of ours it must allow.
    if (cap_set_proc(static_cast<cap_t>(caps_)) < 0)
        throw_errno("drop CAP_SYS_ADMIN held to load the seccomp filter (does linux.seccomp allow capset?)");
    cap_free(caps_);
    caps_ = nullptr;
}

namespace {

// Sets `final`, or, with `hold`, `final` plus CAP_SYS_ADMIN in effective and permitted;
// what is held is dropped by FinalCapabilities::release.
FinalCapabilities set_with_hold(cap_t final, bool hold) {
    cap_flag_value_t admin = CAP_CLEAR;
    if (hold) cap_get_flag(final, CAP_SYS_ADMIN, CAP_EFFECTIVE, &admin);
    if (!hold || admin == CAP_SET) {
        int r = cap_set_proc(final);
        int err = errno;
        cap_free(final);
        if (r < 0) throw_errno("apply capabilities (effective must be within permitted)", err);
        return {};
    }
    FinalCapabilities kept(final);
    cap_t held = cap_dup(final);
    if (!held) throw_errno("cap_dup");
    cap_value_t v = CAP_SYS_ADMIN;
    cap_set_flag(held, CAP_EFFECTIVE, 1, &v, CAP_SET);
    cap_set_flag(held, CAP_PERMITTED, 1, &v, CAP_SET);
    int r = cap_set_proc(held);
    int err = errno;
    cap_free(held);
    if (r < 0)
        throw_errno("linux.seccomp: without process.noNewPrivileges the filter needs CAP_SYS_ADMIN to load, and it is "
                    "no longer permitted",
                    err);
    return kept;
}

}  // namespace

FinalCapabilities apply_capabilities(const oci::Capabilities& caps, bool hold_sys_admin) {
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
        std::vector<int> nums;
        try {
            nums = capability_numbers(s.names, s.field);
        } catch (...) {
            cap_free(c);
            throw;
        }
        std::vector<cap_value_t> vals(nums.begin(), nums.end());
        if (!vals.empty() && cap_set_flag(c, s.flag, static_cast<int>(vals.size()), vals.data(), CAP_SET) < 0) {
            cap_free(c);
            throw_errno(std::string("set ") + s.field);
        }
    }
    std::vector<std::string> left_out = unraisable_ambient(caps);
    FinalCapabilities held = set_with_hold(c, hold_sys_admin);
    if (CAP_AMBIENT_SUPPORTED()) {
        // One call: libcap's reset asks about every capability first.
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) throw_errno("clear ambient capabilities");
        for (size_t i = 0; i < caps.ambient.size(); ++i) {
            // The kernel raises an ambient capability only if it is also permitted and
            // inheritable. Configs written by older `runc spec` and by podman list
            // ambient capabilities that are not inheritable; runc leaves those out of
            // the ambient set rather than failing, and so do we (the runtime says so
            // at debug level).
            if (std::find(left_out.begin(), left_out.end(), caps.ambient[i]) != left_out.end()) continue;
            int v = capability_numbers({caps.ambient[i]}, "process.capabilities.ambient").front();
            if (cap_set_ambient(v, CAP_SET) < 0) throw_errno(std::string("raise ambient capability ") + cap_to_name(v));
        }
    }
    return held;
}

FinalCapabilities hold_sys_admin() {
    cap_t c = cap_get_proc();
    if (!c) throw_errno("cap_get_proc");
    return set_with_hold(c, true);
}

}  // namespace tarn::ns::detail

namespace tarn::ns {

std::vector<std::string> unraisable_ambient(const oci::Capabilities& caps) {
    std::vector<std::string> out;
    std::vector<int> inh = detail::capability_numbers(caps.inheritable, "process.capabilities.inheritable");
    std::vector<int> perm = detail::capability_numbers(caps.permitted, "process.capabilities.permitted");
    std::vector<int> amb = detail::capability_numbers(caps.ambient, "process.capabilities.ambient");
    for (size_t i = 0; i < amb.size(); ++i)
        if (!detail::listed(inh, amb[i]) || !detail::listed(perm, amb[i])) out.push_back(caps.ambient[i]);
    return out;
}

}  // namespace tarn::ns

