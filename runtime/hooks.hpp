// OCI hooks (config.md "POSIX-platform Hooks"): each gets the container state on
// stdin, runs with its own args and env, and is killed at its timeout. Internal to runtime/.
#pragma once

#include <string>
#include <vector>

#include "oci/oci.hpp"

namespace tarn::runtime::detail {

// Runs hooks in order; the first failure throws "<kind> hook <path>: ..." and the rest
// are not run (prestart, createRuntime, createContainer, startContainer).
void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind);
// Runs every hook; failures are logged as warnings (poststart, poststop).
void run_hooks_warn(const std::vector<oci::Hook>& hooks, const std::string& state_json, const char* kind);

}  // namespace tarn::runtime::detail
