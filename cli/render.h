// How meshctl prints what meshd returns: aligned tables (like kubectl), JSON
// or YAML. meshd answers with JSON; the table layout for each view lives here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

namespace meshd::cli {

// Keeps the key order meshd sent (nlohmann::json would sort keys).
using Json = nlohmann::ordered_json;

enum class OutputFormat { kTable, kJson, kYaml };

// Columns left-aligned, separated by three spaces, no trailing spaces;
// a row shorter than the header is padded with empty cells.
std::string renderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);

// A JSON value as one table cell: strings as is, numbers and booleans as
// written, null as "<none>", arrays of scalars joined by ",", other values as
// compact JSON.
std::string cellText(const Json& value);

// One table for a view: "services", "backends", "policies", "endpointslices",
// "resources", "maps", "progs", "dump". `data` is an array of objects. Views
// without a fixed layout use the keys of the first object, upper-cased.
std::string renderView(std::string_view view, const Json& data);

// An object (status) as "Key: value" lines; nested objects indented.
// `meshctl explain`: one block of sentences per frontend (see api::explainView).
std::string renderExplain(const Json& data);

std::string renderKeyValues(const Json& data);

// JSON (indented 2) or YAML; for tables use renderView / renderKeyValues.
std::string renderJson(const Json& data);
std::string renderYaml(const Json& data);

}  // namespace meshd::cli
