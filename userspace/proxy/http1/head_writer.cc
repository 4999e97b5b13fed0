#include "proxy/http1/head_writer.h"

#include <charconv>

namespace meshd::proxy::http1 {
namespace {

void appendField(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

void appendNumber(std::string* out, uint64_t n, int base) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n, base);
  out->append(buf, end);
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// End-to-end fields, minus the ones the writer produces itself.
void appendForwarded(std::string* out, absl::Span<const HeaderField> fields) {
  for (const HeaderField& f : fields) {
    if (f.hop_by_hop || equalsIgnoreCase(f.name, "host") ||
        equalsIgnoreCase(f.name, "content-length")) {
      continue;
    }
    appendField(out, f.name, f.value);
  }
}

void appendExtra(std::string* out, absl::Span<const ExtraField> extra) {
  for (const ExtraField& f : extra) appendField(out, f.name, f.value);
}

void appendFraming(std::string* out, const Framing& framing) {
  if (framing.body == BodyKind::kContentLength) {
    out->append("Content-Length: ");
    appendNumber(out, framing.content_length, 10);
    out->append("\r\n");
  } else if (framing.body == BodyKind::kChunked) {
    out->append("Transfer-Encoding: chunked\r\n");
  }
}

// The origin-form of an absolute-form target: "http://a/b?c" -> "/b?c", "http://a" -> "/".
std::string_view originForm(std::string_view target) {
  size_t scheme = target.find("://");
  size_t path = scheme == std::string_view::npos ? 0 : target.find_first_of("/?", scheme + 3);
  if (path == std::string_view::npos) return "/";
  return target.substr(path);
}

}  // namespace

void writeRequestHead(const RequestHead& head, const RequestWriteOptions& options,
                      std::string* out) {
  out->append(head.method);
  out->push_back(' ');
  if (head.form == TargetForm::kAbsolute) {
    std::string_view origin = originForm(head.target);
    if (origin.front() == '?') out->push_back('/');
    out->append(origin);
  } else {
    out->append(head.target);
  }
  out->append(" HTTP/1.1\r\n");
  appendField(out, "Host", head.authority);
  appendForwarded(out, head.headers);
  appendFraming(out, head.framing);
  if (head.upgrade_requested) {
    appendField(out, "Connection", "upgrade");
    appendField(out, "Upgrade", head.upgrade);
  } else if (!options.upstream_keep_alive) {
    appendField(out, "Connection", "close");
  }
  appendExtra(out, options.extra);
  out->append("\r\n");
}

void writeResponseHead(const ResponseHead& head, const ResponseWriteOptions& options,
                       std::string* out) {
  out->append("HTTP/1.1 ");
  appendNumber(out, head.status, 10);
  out->push_back(' ');
  out->append(head.reason);
  out->append("\r\n");
  appendForwarded(out, head.headers);
  appendFraming(out, head.framing);
  if (head.framing.body == BodyKind::kTunnel && head.status == 101) {
    for (const HeaderField& f : head.headers) {
      if (equalsIgnoreCase(f.name, "upgrade")) appendField(out, "Upgrade", f.value);
    }
    appendField(out, "Connection", "upgrade");
  } else if (!options.keep_alive || head.framing.body == BodyKind::kCloseDelimited) {
    appendField(out, "Connection", "close");
  }
  appendExtra(out, options.extra);
  out->append("\r\n");
}

void writeChunkHeader(uint64_t size, std::string* out) {
  appendNumber(out, size, 16);
  out->append("\r\n");
}

void writeLastChunk(std::string* out) { out->append("0\r\n\r\n"); }

}  // namespace meshd::proxy::http1
