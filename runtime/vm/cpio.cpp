#include "runtime/vm/cpio.hpp"

#include <sys/stat.h>

#include <cstdio>

namespace tarn::runtime::vm {
namespace {

void pad4(std::string& s) {
    while (s.size() % 4) s += '\0';
}

}  // namespace

void CpioWriter::entry(std::string_view path, mode_t mode, std::string_view data, unsigned rmajor,
                       unsigned rminor) {
    // Names are relative ("init", "lib/modules"): the kernel unpacks them under /.
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    char hdr[111];
    std::snprintf(hdr, sizeof hdr, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ino_++,
                  static_cast<unsigned>(mode), 0u, 0u, S_ISDIR(mode) ? 2u : 1u, 0u, data.size(), 0u, 0u,
                  rmajor, rminor, path.size() + 1, 0u);
    out_.append(hdr, 110);
    out_.append(path);
    out_ += '\0';
    pad4(out_);
    out_.append(data);
    pad4(out_);
}

void CpioWriter::directory(std::string_view path, mode_t perm) {
    entry(path, S_IFDIR | perm, {});
}

void CpioWriter::file(std::string_view path, std::string_view data, mode_t perm) {
    entry(path, S_IFREG | perm, data);
}

void CpioWriter::char_device(std::string_view path, unsigned major, unsigned minor, mode_t perm) {
    entry(path, S_IFCHR | perm, {}, major, minor);
}

std::string CpioWriter::finish() {
    entry("TRAILER!!!", 0, {});
    std::string archive = std::move(out_);
    out_.clear();
    ino_ = 1;
    return archive;
}

}  // namespace tarn::runtime::vm
