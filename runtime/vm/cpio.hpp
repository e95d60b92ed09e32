// A writer for the initramfs format the kernel unpacks: cpio "newc" (SVR4 with no
// CRC), as in the kernel's Documentation/driver-api/early-userspace/buffer-format.rst.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace tarn::runtime::vm {

class CpioWriter {
public:
    void directory(std::string_view path, mode_t perm = 0755);
    void file(std::string_view path, std::string_view data, mode_t perm = 0644);
    void char_device(std::string_view path, unsigned major, unsigned minor, mode_t perm = 0600);
    // Appends the trailer and returns the archive.
    std::string finish();

private:
    void entry(std::string_view path, mode_t mode, std::string_view data, unsigned rmajor = 0,
               unsigned rminor = 0);
    std::string out_;
    unsigned ino_ = 1;
};

}  // namespace tarn::runtime::vm
