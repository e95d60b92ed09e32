// The message of the tarn::Error a call throws, for tests that assert on it.
#pragma once
#include <string>

#include "oci/base.hpp"

namespace tarn::test {

// "(no error)" when the call returns normally.
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace tarn::test
