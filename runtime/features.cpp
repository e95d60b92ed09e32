#include <seccomp.h>
#include <sys/capability.h>
#include <unistd.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "namespaces/mount_options.hpp"
#include "runtime/runtime.hpp"

#ifndef TARN_VERSION
#define TARN_VERSION "0.0.0"
#endif
#ifndef TARN_COMMIT
#define TARN_COMMIT "unknown"
#endif

namespace tarn::runtime {

int spec(const std::string& bundle, bool rootless) {
    std::string path = bundle + "/config.json";
    if (::access(path.c_str(), F_OK) == 0) throw Error("spec: " + path + " already exists");
    oci::Config c = oci::default_spec(rootless, ::geteuid(), ::getegid());
    write_file_atomic(path, oci::to_json_text(c, 2) + "\n", 0644);
    return 0;
}

int features() {
    oci::Features f;
    f.hooks = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};
    f.mount_options = ns::known_mount_options();
    f.namespaces = {"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"};
    for (int c = 0; c < static_cast<int>(cap_max_bits()); ++c) {
        char* n = cap_to_name(c);
        if (!n) continue;
        std::string name = n;
        cap_free(n);
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (name.rfind("CAP_", 0) == 0) f.capabilities.push_back(name);
    }
    f.annotations["io.github.tarn.version"] = TARN_VERSION;
    const scmp_version* v = seccomp_version();
    f.annotations["io.github.seccomp.libseccomp.version"] =
        std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->micro);
    std::string out = oci::to_json(f).dump(4) + "\n";
    (void)!::write(1, out.data(), out.size());
    return 0;
}

std::string version_text() {
    const scmp_version* v = seccomp_version();
    return std::string("tarn version ") + TARN_VERSION + "\ncommit: " + TARN_COMMIT + "\nspec: " +
           std::string(oci::kSpecVersion) + "\nlibseccomp: " + std::to_string(v->major) + "." +
           std::to_string(v->minor) + "." + std::to_string(v->micro) + "\n";
}

}  // namespace tarn::runtime
