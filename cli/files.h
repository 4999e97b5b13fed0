// Turning meshctl's -f arguments into the files sent to meshd.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace meshd::cli {

struct InputFile {
  std::string name;  // as the user typed it (a directory's files as DIR/sub/x.yaml); "-" for stdin
  std::string content;
};

// Expands each -f argument in the order given: a file is read as is; a
// directory contributes every *.yaml, *.yml and *.json below it (recursively,
// sorted by path); "-" reads `stdin_stream` (once). Fails with NotFound naming
// a path that does not exist, InvalidArgument when a directory holds no
// such files or "-" is given twice, and the errno text when a read fails.
absl::StatusOr<std::vector<InputFile>> collectFiles(const std::vector<std::string>& args,
                                                    std::istream& stdin_stream);

}  // namespace meshd::cli
