// meshctl: the operator's CLI for meshd. Talks to meshd's gRPC API on its unix
// socket. Exit codes: 0 ok, 1 failure (meshd's error text on stderr), 2 usage.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "cli/client.h"
#include "cli/files.h"
#include "cli/render.h"

namespace meshd::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Globals {
  std::string socket;
  std::string output = "table";
};

int fail(const absl::Status& s) {
  std::cerr << s.message();
  if (s.message().empty() || s.message().back() != '\n') std::cerr << '\n';
  return kExitFailure;
}

int usage(const std::string& msg) {
  std::cerr << msg << "\nRun with --help for more information.\n";
  return kExitUsage;
}

// Prints `data` in the chosen format; `view` picks the table layout.
int print(const Globals& g, std::string_view view, const Json& data) {
  if (g.output == "json") {
    std::cout << renderJson(data);
  } else if (g.output == "yaml") {
    std::cout << renderYaml(data);
  } else if (view == "explain") {
    std::cout << renderExplain(data);
  } else if (data.is_array()) {
    if (data.empty()) {
      std::cerr << "No resources found.\n";
    } else {
      std::cout << renderView(view, data);
    }
  } else {
    std::cout << renderKeyValues(data);
  }
  return kExitOk;
}

int printJsonText(const Globals& g, std::string_view view, const std::string& text) {
  Json data = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded()) {
    return fail(absl::InternalError("meshd sent a reply that is not JSON (version mismatch?)"));
  }
  return print(g, view, data);
}

// Canonical kind for `delete KIND NAME` (accepts kubectl-like short forms).
std::string canonicalKind(std::string kind) {
  kind = absl::AsciiStrToLower(kind);
  if (kind == "service" || kind == "services" || kind == "svc") return "Service";
  if (kind == "endpointslice" || kind == "endpointslices") return "EndpointSlice";
  if (kind == "trafficpolicy" || kind == "trafficpolicies" || kind == "policy" ||
      kind == "policies") {
    return "TrafficPolicy";
  }
  if (kind == "httproute" || kind == "httproutes") return "HTTPRoute";
  if (kind == "grpcroute" || kind == "grpcroutes") return "GRPCRoute";
  if (kind == "workload" || kind == "workloads") return "Workload";
  if (kind == "peerauthentication" || kind == "peerauthentications" || kind == "pa") {
    return "PeerAuthentication";
  }
  if (kind == "authorizationpolicy" || kind == "authorizationpolicies" || kind == "ap") {
    return "AuthorizationPolicy";
  }
  if (kind == "ratelimitpolicy" || kind == "ratelimitpolicies") return "RateLimitPolicy";
  if (kind == "node" || kind == "nodes") return "Node";
  return "";
}

// Canonical view for `get WHAT`.
std::string canonicalView(std::string what) {
  what = absl::AsciiStrToLower(what);
  if (what == "service" || what == "services" || what == "svc") return "services";
  if (what == "backend" || what == "backends") return "backends";
  if (what == "policy" || what == "policies" || what == "trafficpolicy" ||
      what == "trafficpolicies") {
    return "policies";
  }
  if (what == "endpointslice" || what == "endpointslices") return "endpointslices";
  if (what == "resource" || what == "resources" || what == "all") return "resources";
  return "";
}

absl::StatusOr<std::vector<api::v1::SourceFile>> protoFiles(const std::vector<std::string>& args) {
  auto files = collectFiles(args, std::cin);
  if (!files.ok()) return files.status();
  std::vector<api::v1::SourceFile> out;
  for (InputFile& f : *files) {
    api::v1::SourceFile p;
    p.set_name(std::move(f.name));
    p.set_content(std::move(f.content));
    out.push_back(std::move(p));
  }
  return out;
}

std::string refText(const api::v1::ResourceRef& r) {
  return absl::StrCat(r.kind(), "/", r.namespace_(), "/", r.name());
}

}  // namespace

int run(int argc, char** argv) {
  Globals g;
  const char* env_socket = std::getenv("MESHD_SOCKET");
  g.socket = env_socket != nullptr && *env_socket != '\0' ? env_socket : "/run/meshd/meshd.sock";

  CLI::App app{"meshctl: operate meshd, the sidecar-less service mesh", "meshctl"};
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--socket", g.socket, "meshd's API socket (env MESHD_SOCKET)")
      ->capture_default_str();
  app.add_option("-o,--output", g.output, "Output format: table, json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}))
      ->capture_default_str();

  std::vector<std::string> apply_files;
  bool dry_run = false;
  auto* apply = app.add_subcommand("apply", "Create or update resources from files");
  apply->add_option("-f,--filename", apply_files, "FILE, DIR (recursive) or - for stdin")
      ->required();
  apply->add_flag("--dry-run", dry_run, "Validate and show what would change; change nothing");

  std::string get_what;
  std::string get_name;
  std::string ns = "default";
  bool all_ns = false;
  auto* get = app.add_subcommand("get", "Show services, backends, policies, endpointslices");
  get->add_option("what", get_what, "services | backends | policies | endpointslices | resources")
      ->required();
  get->add_option("name", get_name, "Name (for backends: the service's name)");
  get->add_option("-n,--namespace", ns, "Namespace")->capture_default_str();
  get->add_flag("-A,--all-namespaces", all_ns, "All namespaces");

  std::vector<std::string> delete_files;
  std::string delete_kind;
  std::string delete_name;
  auto* del = app.add_subcommand("delete", "Delete resources named by files or by KIND NAME");
  del->add_option("-f,--filename", delete_files, "FILE, DIR (recursive) or - for stdin");
  del->add_option("kind", delete_kind,
                  "Service | EndpointSlice | TrafficPolicy | HTTPRoute | GRPCRoute | Workload | "
                  "PeerAuthentication | AuthorizationPolicy | RateLimitPolicy | Node");
  del->add_option("name", delete_name, "Name");
  del->add_option("-n,--namespace", ns, "Namespace")->capture_default_str();

  std::string explain_name;
  auto* explain = app.add_subcommand(
      "explain", "Say whether a service admits new connections, and why connects were refused");
  explain->add_option("name", explain_name, "Service name")->required();
  explain->add_option("-n,--namespace", ns, "Namespace")->capture_default_str();

  auto* status = app.add_subcommand("status", "Show meshd's state");

  std::string dump_map;
  auto* bpf = app.add_subcommand("bpf", "Inspect meshd's BPF maps and programs");
  bpf->require_subcommand(1);
  auto* bpf_maps = bpf->add_subcommand("maps", "List the pinned maps");
  auto* bpf_progs = bpf->add_subcommand("progs", "List the attached programs");
  auto* bpf_dump = bpf->add_subcommand("dump", "Dump one map's entries");
  bpf_dump->add_option("map", dump_map, "Map name (see `meshctl bpf maps`)")->required();

  auto* version = app.add_subcommand("version", "Show meshctl's and meshd's versions");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;  // --help is not an error
  }

  MeshdClient client(g.socket);

  if (*apply) {
    auto files = protoFiles(apply_files);
    if (!files.ok()) return fail(files.status());
    api::v1::ApplyRequest req;
    for (auto& f : *files) *req.add_files() = std::move(f);
    req.set_dry_run(dry_run);
    auto resp = client.apply(req);
    if (!resp.ok()) return fail(resp.status());
    if (g.output != "table") {
      Json out = Json::array();
      for (const auto& r : resp->results()) {
        out.push_back({{"kind", r.ref().kind()},
                       {"namespace", r.ref().namespace_()},
                       {"name", r.ref().name()},
                       {"action", r.action()},
                       {"dryRun", dry_run}});
      }
      return print(g, "apply", out);
    }
    for (const auto& r : resp->results()) {
      std::cout << refText(r.ref()) << " " << r.action() << (dry_run ? " (dry run)" : "") << "\n";
    }
    return kExitOk;
  }

  if (*get) {
    const std::string view = canonicalView(get_what);
    if (view.empty()) {
      return usage(absl::StrCat("unknown resource type \"", get_what,
                                "\"; expected services, backends, policies, endpointslices "
                                "or resources"));
    }
    api::v1::GetRequest req;
    req.set_what(view);
    req.set_namespace_(all_ns ? "" : ns);
    req.set_name(get_name);
    auto resp = client.get(req);
    if (!resp.ok()) return fail(resp.status());
    return printJsonText(g, view, resp->json());
  }

  if (*explain) {
    api::v1::GetRequest req;
    req.set_what("explain");
    req.set_namespace_(ns);
    req.set_name(explain_name);
    auto resp = client.get(req);
    if (!resp.ok()) return fail(resp.status());
    return printJsonText(g, "explain", resp->json());
  }

  if (*del) {
    api::v1::DeleteRequest req;
    if (!delete_files.empty()) {
      if (!delete_kind.empty()) return usage("give either -f FILE|DIR or KIND NAME, not both");
      auto files = protoFiles(delete_files);
      if (!files.ok()) return fail(files.status());
      for (auto& f : *files) *req.add_files() = std::move(f);
    } else {
      if (delete_kind.empty() || delete_name.empty()) {
        return usage("delete needs -f FILE|DIR or KIND NAME");
      }
      const std::string kind = canonicalKind(delete_kind);
      if (kind.empty()) {
        return usage(absl::StrCat(
            "unknown kind \"", delete_kind,
            "\"; expected Service, EndpointSlice, TrafficPolicy, HTTPRoute, GRPCRoute, "
            "Workload, PeerAuthentication, AuthorizationPolicy, RateLimitPolicy or Node"));
      }
      auto* ref = req.add_refs();
      ref->set_kind(kind);
      ref->set_namespace_(ns);
      ref->set_name(delete_name);
    }
    auto resp = client.remove(req);
    if (!resp.ok()) return fail(resp.status());
    if (g.output != "table") {
      Json out = Json::array();
      for (const auto& r : resp->deleted()) {
        out.push_back({{"kind", r.kind()}, {"namespace", r.namespace_()}, {"name", r.name()}});
      }
      return print(g, "delete", out);
    }
    for (const auto& r : resp->deleted()) std::cout << refText(r) << " deleted\n";
    return kExitOk;
  }

  if (*status) {
    auto resp = client.status();
    if (!resp.ok()) return fail(resp.status());
    return printJsonText(g, "status", resp->json());
  }

  if (*bpf) {
    api::v1::BpfRequest req;
    std::string view;
    if (*bpf_maps) view = "maps";
    if (*bpf_progs) view = "progs";
    if (*bpf_dump) {
      view = "dump";
      req.set_map(dump_map);
    }
    req.set_what(view);
    auto resp = client.bpf(req);
    if (!resp.ok()) return fail(resp.status());
    return printJsonText(g, view, resp->json());
  }

  if (*version) {
    Json out = {{"client", MESHD_VERSION}};
    auto resp = client.status();
    std::string server_error;
    if (resp.ok()) {
      Json s = Json::parse(resp->json(), nullptr, false);
      if (!s.is_discarded() && s.contains("version")) out["server"] = s["version"];
    } else {
      server_error = std::string(resp.status().message());
    }
    if (g.output != "table") return print(g, "version", out);
    std::cout << "meshctl " << MESHD_VERSION << "\n";
    if (out.contains("server")) {
      std::cout << "meshd " << cellText(out["server"]) << "\n";
    } else {
      std::cerr << "meshd: " << server_error << "\n";
    }
    return kExitOk;
  }
  return usage("no command given");
}

}  // namespace meshd::cli

int main(int argc, char** argv) { return meshd::cli::run(argc, argv); }
