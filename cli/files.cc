#include "cli/files.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <istream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace meshd::cli {
namespace {

namespace fs = std::filesystem;

bool isResourceFile(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

absl::StatusOr<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return out.str();
}

}  // namespace

absl::StatusOr<std::vector<InputFile>> collectFiles(const std::vector<std::string>& args,
                                                    std::istream& stdin_stream) {
  std::vector<InputFile> out;
  bool stdin_used = false;
  for (const std::string& arg : args) {
    if (arg == "-") {
      if (stdin_used) return absl::InvalidArgumentError("\"-\" (stdin) given more than once");
      stdin_used = true;
      std::ostringstream buf;
      buf << stdin_stream.rdbuf();
      out.push_back({"-", buf.str()});
      continue;
    }
    std::error_code ec;
    const fs::file_status st = fs::status(arg, ec);
    if (ec || !fs::exists(st)) {
      return absl::NotFoundError(absl::StrCat(arg, ": no such file or directory"));
    }
    if (!fs::is_directory(st)) {
      auto content = readFile(arg);
      if (!content.ok()) return content.status();
      out.push_back({arg, std::move(*content)});
      continue;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(
             arg, fs::directory_options::follow_directory_symlink, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file() && isResourceFile(it->path())) found.push_back(it->path().string());
    }
    if (ec) return absl::InternalError(absl::StrCat(arg, ": cannot list: ", ec.message()));
    if (found.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(arg, ": no .yaml, .yml or .json files in this directory"));
    }
    std::sort(found.begin(), found.end());
    for (std::string& path : found) {
      auto content = readFile(path);
      if (!content.ok()) return content.status();
      out.push_back({std::move(path), std::move(*content)});
    }
  }
  return out;
}

}  // namespace meshd::cli
