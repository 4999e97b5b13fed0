#include "store/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace meshd::store {
namespace {

// Creates `dir` with `mode` and any missing parents with 0755. The store
// directory itself gets 0700: resources name internal addresses and only root
// needs to read them.
absl::Status makeDirs(const std::string& dir, mode_t mode) {
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("store path ", dir, " exists but is not a directory"));
    }
    return absl::OkStatus();
  }
  if (errno != ENOENT) return errnoError(errno, absl::StrCat("stat store directory ", dir));
  size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    RETURN_IF_ERROR(makeDirs(dir.substr(0, slash), 0755));
  }
  if (mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return errnoError(errno, absl::StrCat("create store directory ", dir,
                                          " (is the parent writable? run meshd as root or "
                                          "choose another store directory)"));
  }
  return absl::OkStatus();
}

absl::Status writeAll(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errnoError(errno, absl::StrCat("write ", path, " (is the disk full?)"));
    }
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status corrupt(const std::string& path, std::string_view what) {
  return absl::DataLossError(absl::StrCat(
      "store file ", path, " is corrupt: ", absl::string_view(what.data(), what.size()),
      "\n(move it aside to start with an empty store, or restore it from a backup)"));
}

}  // namespace

absl::StatusOr<StorePtr> Store::open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("store directory is empty");
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  RETURN_IF_ERROR(makeDirs(clean, 0700));
  std::string lock_path = absl::StrCat(clean, "/", kLockName);
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errnoError(errno, absl::StrCat("open store lock ", lock_path));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("store directory ", clean, " is in use by another meshd (", lock_path,
                       " is locked); give each meshd instance its own --state-dir"));
    }
    return errnoError(err, absl::StrCat("lock ", lock_path));
  }
  // A leftover temporary file is from a save interrupted before its rename:
  // the real file is still the last complete save.
  std::string tmp = absl::StrCat(clean, "/", kFileName, ".tmp");
  ::unlink(tmp.c_str());
  return StorePtr(new Store(clean, fd));
}

Store::~Store() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string Store::filePath() const { return absl::StrCat(dir_, "/", kFileName); }

absl::StatusOr<std::vector<resources::Resource>> Store::load() {
  const std::string path = filePath();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::vector<resources::Resource>{};
    return errnoError(errno, absl::StrCat("open store file ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return errnoError(EIO, absl::StrCat("read store file ", path));

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(buf.str());
  } catch (const nlohmann::json::parse_error& e) {
    return corrupt(path, absl::StrCat("not valid JSON at byte ", e.byte, ": ", e.what()));
  }
  if (!doc.is_object()) return corrupt(path, "top level is not a JSON object");
  auto format = doc.find("format");
  if (format == doc.end() || !format->is_string() || *format != kFormat) {
    return corrupt(path, absl::StrCat("\"format\" is not \"", kFormat, "\""));
  }
  auto list = doc.find("resources");
  if (list == doc.end() || !list->is_array()) {
    return corrupt(path, "\"resources\" is missing or not a list");
  }
  std::vector<std::string> problems;
  std::vector<resources::Resource> out;
  absl::flat_hash_map<resources::ResourceKey, size_t> seen;
  for (size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& entry = (*list)[i];
    std::string where = absl::StrCat("resources[", i, "]");
    if (!entry.is_object() || !entry.contains("object")) {
      problems.push_back(absl::StrCat(where, ": not an object with an \"object\" field"));
      continue;
    }
    std::string source;
    int line = 0;
    if (auto s = entry.find("source"); s != entry.end() && s->is_string()) source = *s;
    if (auto l = entry.find("line"); l != entry.end() && l->is_number_integer()) {
      line = l->get<int>();
    }
    // Validate without the original file name so messages do not blame it.
    auto r = resources::resourceFromJson(entry["object"]);
    if (!r.ok()) {
      problems.push_back(absl::StrCat(where, ": ", r.status().message()));
      continue;
    }
    r->source = std::move(source);
    r->line = line;
    auto [it, inserted] = seen.emplace(r->key, i);
    if (!inserted) {
      problems.push_back(absl::StrCat(where, ": ", r->key.toString(),
                                      " is stored twice (also resources[", it->second, "])"));
      continue;
    }
    out.push_back(std::move(*r));
  }
  if (!problems.empty()) return corrupt(path, absl::StrJoin(problems, "\n"));
  return out;
}

absl::Status Store::save(const std::vector<resources::Resource>& resources) {
  nlohmann::json doc;
  doc["format"] = kFormat;
  doc["resources"] = nlohmann::json::array();
  for (const auto& r : resources) {
    nlohmann::json entry;
    entry["source"] = r.source;
    entry["line"] = r.line;
    entry["object"] = r.object;
    doc["resources"].push_back(std::move(entry));
  }
  std::string data = doc.dump(1);
  data += '\n';

  const std::string path = filePath();
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errnoError(errno, absl::StrCat("create ", tmp));
  absl::Status st = writeAll(fd, data, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = errnoError(errno, absl::StrCat("fsync ", tmp));
  if (::close(fd) != 0 && st.ok()) st = errnoError(errno, absl::StrCat("close ", tmp));
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errnoError(err, absl::StrCat("rename ", tmp, " to ", path));
  }
  // The rename is durable only once the directory entry is on disk.
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return errnoError(errno, absl::StrCat("open store directory ", dir_));
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0) return errnoError(err, absl::StrCat("fsync store directory ", dir_));
  return absl::OkStatus();
}

}  // namespace meshd::store
