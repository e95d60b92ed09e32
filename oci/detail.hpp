// Pieces of the oci library shared between its .cpp files; not part of the public header.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string_view>

#include "oci/oci.hpp"

namespace tarn::oci::detail {

class Reader;

// process.cpp: the process object, as found in config.json and in process.json.
Process read_process(const Reader& r);

// config_parse.cpp / config_json.cpp: linux.resources, also read alone by parse_resources.
Resources read_resources(const Reader& r);
nlohmann::json resources_to_json(const Resources& r);

// validate.cpp. `base` is the JSON path of the object ("process", or "" for a
// process.json document); errors name paths below it.
void validate_process(const Process& p, std::string_view base);
void validate_resources(const Resources& r, std::string_view base);

}  // namespace tarn::oci::detail
