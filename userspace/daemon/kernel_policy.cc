#include "daemon/kernel_policy.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policy/authz.h"
#include "resources/resource.h"
#include "spdlog/spdlog.h"

namespace meshd::daemon {
namespace {

using datapath::AuthzVerdict;
using resources::MtlsMode;

AuthzVerdict verdictOf(const policy::Decision& d) {
  return d.allowed ? AuthzVerdict::kAllow : AuthzVerdict::kDeny;
}

std::string nameOf(const policy::Workload& w) { return absl::StrCat(w.ns, "/", w.name); }

}  // namespace

uint32_t IdentityIds::idOf(std::string_view ns, std::string_view service_account) {
  auto [it, inserted] = ids_.try_emplace({std::string(ns), std::string(service_account)}, 0);
  if (inserted) {
    while (taken_.contains(next_) || next_ == 0) ++next_;
    it->second = next_;
    taken_.insert(next_);
  }
  return it->second;
}

bool IdentityIds::seed(std::string_view ns, std::string_view service_account, uint32_t id) {
  if (id == 0 || taken_.contains(id)) return false;
  auto [it, inserted] = ids_.try_emplace({std::string(ns), std::string(service_account)}, id);
  if (!inserted) return false;
  taken_.insert(id);
  return true;
}

absl::StatusOr<uint64_t> cgroupIdOfPath(const std::string& cgroup2_mount, const std::string& path) {
  std::string full;
  if (path == cgroup2_mount || path.starts_with(cgroup2_mount + "/")) {
    full = path;
  } else {
    full = absl::StrCat(cgroup2_mount, path.starts_with('/') ? "" : "/", path);
  }
  struct stat st {};
  if (stat(full.c_str(), &st) != 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat("cgroup directory ", full, ": ", std::strerror(err)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("cgroup ", full, " is not a directory"));
  }
  struct statfs fs {};
  if (statfs(full.c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC) {
    return absl::FailedPreconditionError(
        absl::StrCat("cgroup ", full, " is not on the cgroup v2 mount ", cgroup2_mount));
  }
  return static_cast<uint64_t>(st.st_ino);  // cgroup v2 id == kernfs inode
}

absl::StatusOr<KernelPolicyPlan> computeKernelPolicy(const KernelPolicyInput& in,
                                                     IdentityIds& ids) {
  KernelPolicyPlan plan;
  if (in.node_name.empty() || in.resources == nullptr || in.desired == nullptr) return plan;
  auto authz = policy::Authorizer::build(*in.resources, in.trust_domain);
  if (!authz.ok()) return authz.status();

  // Backend ports per address: what the connect hook authorizes (TCP service backends).
  absl::flat_hash_map<IpAddress, std::set<uint16_t>> ports_of;
  for (const state::Frontend& f : in.desired->frontends) {
    if (f.protocol != state::Protocol::kTcp) continue;
    for (const state::Backend& b : f.backends) ports_of[b.address].insert(b.port);
  }

  std::vector<const policy::Workload*> local;
  for (const auto& w : (*authz)->workloads()) {
    if (w->node == in.node_name) local.push_back(w.get());
  }
  std::sort(local.begin(), local.end(), [](const policy::Workload* a, const policy::Workload* b) {
    return std::tie(a->ns, a->name) < std::tie(b->ns, b->name);
  });
  plan.local_workloads = local.size();

  // Identities: cgroup id -> identity id; the source identities the rules are written for.
  struct Source {
    uint32_t id;
    std::string ns, principal;
  };
  std::map<uint32_t, Source> sources;  // by id: deterministic rule order
  absl::flat_hash_map<uint64_t, std::pair<uint32_t, std::string>> cgroups;  // id, workload
  for (const policy::Workload* w : local) {
    const resources::Resource* r = in.resources->find({"Workload", w->ns, w->name});
    if (r == nullptr) continue;
    auto spec = resources::workloadSpec(*r);
    if (!spec.ok()) return spec.status();
    if (spec->cgroup.empty()) continue;
    const uint32_t id = ids.idOf(w->ns, w->service_account);
    if (!in.cgroup_id) continue;
    auto cg = in.cgroup_id(spec->cgroup);
    if (!cg.ok()) {
      plan.warnings.push_back(absl::StrCat("Workload ", nameOf(*w), ": ", cg.status().message(),
                                           "; its connects count as unauthenticated in the "
                                           "kernel's L4 authorization"));
      continue;
    }
    auto [it, inserted] = cgroups.try_emplace(*cg, id, nameOf(*w));
    if (!inserted) {
      if (it->second.first != id) {
        plan.warnings.push_back(absl::StrCat("Workload ", nameOf(*w), ": cgroup ", spec->cgroup,
                                             " is also Workload ", it->second.second,
                                             "'s, with another identity; the kernel keeps ",
                                             it->second.second, "'s"));
      }
      continue;
    }
    plan.policy.identities.emplace_back(*cg, id);
    sources.try_emplace(id, Source{id, w->ns, w->principal});
  }
  std::sort(plan.policy.identities.begin(), plan.policy.identities.end());

  for (const policy::Workload* w : local) {
    const resources::Resource* r = in.resources->find({"Workload", w->ns, w->name});
    auto spec = r != nullptr ? resources::workloadSpec(*r)
                             : absl::StatusOr<resources::WorkloadSpec>(resources::WorkloadSpec{});
    if (!spec.ok()) return spec.status();

    // The ports services send to, over all of the workload's addresses.
    std::set<uint16_t> service_ports;
    for (const IpAddress& a : w->addresses) {
      if (auto it = ports_of.find(a); it != ports_of.end()) {
        service_ports.insert(it->second.begin(), it->second.end());
      }
    }

    // STRICT entries.
    std::vector<uint16_t> strict_ports;  // 0 = every port
    bool exempt = false;
    for (const auto& [port, mode] : w->port_mtls) {
      if (mode != MtlsMode::kStrict) exempt = true;
    }
    if (w->mtls == MtlsMode::kStrict && !exempt) {
      strict_ports.push_back(0);
    } else {
      std::set<uint16_t> ports;
      for (const auto& [port, mode] : w->port_mtls) {
        if (mode == MtlsMode::kStrict) ports.insert(port);
      }
      if (w->mtls == MtlsMode::kStrict) {
        // Workload-wide STRICT with exempt ports: a port-0 entry cannot express the
        // exemption, so the ports its services use are listed one by one.
        for (uint16_t p : service_ports) {
          if (policy::effectiveMtlsMode(*w, p) == MtlsMode::kStrict) ports.insert(p);
        }
        plan.warnings.push_back(absl::StrCat(
            "Workload ", nameOf(*w),
            ": STRICT with port-level exceptions; the kernel enforces STRICT on its service "
            "ports only (",
            ports.empty() ? "none" : absl::StrJoin(ports, ","), ")"));
      }
      strict_ports.assign(ports.begin(), ports.end());
    }
    for (const IpAddress& a : w->addresses) {
      for (uint16_t p : strict_ports) plan.policy.strict.push_back({a, p});
    }
    const bool strict = !strict_ports.empty();
    if (strict) plan.strict_workloads.push_back({nameOf(*w), spec->netns});

    // Authorization.
    bool governed = !w->deny.empty() || !w->allow.empty();
    if (governed) {
      bool by_ip = false;
      for (const auto* lists : {&w->deny, &w->allow}) {
        for (const policy::CompiledPolicy* p : *lists)
          by_ip = by_ip || policy::dependsOnSourceIp(*p);
      }
      if (by_ip) {
        governed = false;
        plan.meshd_only.push_back(nameOf(*w));
        plan.warnings.push_back(absl::StrCat(
            "Workload ", nameOf(*w),
            ": an AuthorizationPolicy selecting it depends on the source address (ipBlocks or "
            "source.ip); the kernel leaves it ungoverned, it is enforced in meshd only"));
      }
    }
    bool any_dst = false;
    for (const IpAddress& a : w->addresses) {
      auto it = ports_of.find(a);
      if (it == ports_of.end()) continue;  // backs no service: the connect hook never asks
      if (!governed && !strict) continue;
      any_dst = true;
      datapath::AuthzDst dst{a, governed, AuthzVerdict::kAllow, strict};
      if (governed) {
        // Unauthenticated peers (id 0, and every identity without a rule): the default
        // verdict when it is the same for every port, else DENY plus id-0 rules.
        std::vector<std::pair<uint16_t, AuthzVerdict>> unauth;
        bool uniform = true;
        for (uint16_t port : it->second) {
          policy::Request req;
          req.port = port;
          req.http = false;
          unauth.emplace_back(port, verdictOf(policy::evaluate(*w, req)));
          uniform = uniform && unauth.back().second == unauth.front().second;
        }
        dst.default_verdict = uniform ? unauth.front().second : AuthzVerdict::kDeny;
        for (const auto& [port, v] : unauth) {
          if (v != dst.default_verdict) plan.policy.rules.push_back({0, a, port, v});
        }
        for (const auto& [id, src] : sources) {
          for (uint16_t port : it->second) {
            policy::Request req;
            req.principal = src.principal;
            req.ns = src.ns;
            req.port = port;
            req.http = false;
            plan.policy.rules.push_back({id, a, port, verdictOf(policy::evaluate(*w, req))});
          }
        }
      }
      plan.policy.dsts.push_back(dst);
    }
    if (governed && any_dst) plan.governed.push_back(nameOf(*w));
  }
  return plan;
}

KernelPolicySync::KernelPolicySync(datapath::Datapath& datapath, absl::Mutex& datapath_mu,
                                   std::string node_name, std::string trust_domain,
                                   std::string cgroup2_mount)
    : datapath_(datapath),
      datapath_mu_(datapath_mu),
      node_name_(std::move(node_name)),
      trust_domain_(std::move(trust_domain)),
      cgroup2_mount_(std::move(cgroup2_mount)) {}

absl::StatusOr<KernelPolicyPlan> KernelPolicySync::computePlan(
    const resources::ResourceSet& resources, const state::DesiredLbState& desired) {
  if (node_name_.empty() && !warned_no_node_) {
    warned_no_node_ = true;
    spdlog::warn(
        "no --node-name: no kernel policy (PeerAuthentication STRICT and L4 "
        "AuthorizationPolicy are not programmed into the kernel)");
  }
  const CgroupIdResolver resolve = [this](const std::string& path) {
    return cgroupIdOfPath(cgroup2_mount_, path);
  };

  // A restarted meshd keeps the identity ids the maps hold.
  if (!seeded_ && !node_name_.empty()) {
    seeded_ = true;
    absl::StatusOr<datapath::KernelPolicy> held;
    {
      absl::MutexLock lock(&datapath_mu_);
      held = datapath_.policy().read();
    }
    if (held.ok() && !held->identities.empty()) {
      absl::flat_hash_map<uint64_t, uint32_t> by_cgroup(held->identities.begin(),
                                                        held->identities.end());
      for (const resources::Resource* r : resources.list("Workload")) {
        auto spec = resources::workloadSpec(*r);
        if (!spec.ok() || spec->node != node_name_ || spec->cgroup.empty()) continue;
        auto cg = resolve(spec->cgroup);
        if (!cg.ok()) continue;
        if (auto it = by_cgroup.find(*cg); it != by_cgroup.end()) {
          ids_.seed(r->key.ns, spec->service_account, it->second);
        }
      }
    }
  }

  KernelPolicyInput in;
  in.resources = &resources;
  in.desired = &desired;
  in.node_name = node_name_;
  in.trust_domain = trust_domain_;
  in.cgroup_id = resolve;
  return computeKernelPolicy(in, ids_);
}

void KernelPolicySync::prepare(const resources::ResourceSet& resources,
                               const state::DesiredLbState& current,
                               const state::DesiredLbState& next) {
  if (node_name_.empty()) return;
  state::DesiredLbState both = current;
  both.frontends.insert(both.frontends.end(), next.frontends.begin(), next.frontends.end());
  auto p = computePlan(resources, both);
  if (!p.ok()) return;  // sync() reports it
  absl::MutexLock lock(&datapath_mu_);
  if (absl::Status s = datapath_.policy().replaceAll(p->policy); !s.ok()) {
    spdlog::warn("kernel policy: programming the maps before the services: {}",
                 std::string(s.message()));
  }
}

absl::Status KernelPolicySync::sync(const resources::ResourceSet& resources,
                                    const state::DesiredLbState& desired) {
  auto plan = computePlan(resources, desired);
  std::vector<std::string> errors;
  const bool computed = plan.ok();  // else the kernel keeps what it has
  if (!computed) {
    errors.push_back(absl::StrCat("computing the kernel policy: ", plan.status().message()));
  }

  std::vector<std::string> interfaces;
  if (computed) {
    // The STRICT links: the host end of each STRICT workload's veth (found before taking
    // the datapath lock: each lookup enters the pod's namespace from a short-lived thread).
    std::vector<std::pair<int, const StrictWorkload*>> veths;
    // A STRICT workload whose veth cannot be found now keeps the link it had (a failed
    // lookup must not take STRICT away).
    absl::flat_hash_set<int> keep;
    absl::flat_hash_map<std::string, int> ifindex_of;
    for (const StrictWorkload& sw : plan->strict_workloads) {
      if (auto it = strict_ifindex_.find(sw.workload); it != strict_ifindex_.end()) {
        keep.insert(it->second);
        ifindex_of[sw.workload] = it->second;
      }
      if (sw.netns.empty()) {
        errors.push_back(absl::StrCat("Workload ", sw.workload,
                                      ": STRICT needs spec.netns (its veth is not known); not "
                                      "enforced in the kernel"));
        continue;
      }
      auto ifindex = datapath::hostIfindexOfPod(sw.netns);
      if (!ifindex.ok()) {
        errors.push_back(absl::StrCat("Workload ", sw.workload, ": finding the veth of ", sw.netns,
                                      ": ", ifindex.status().message(),
                                      "; STRICT not enforced in the kernel"));
        continue;
      }
      veths.emplace_back(*ifindex, &sw);
      ifindex_of[sw.workload] = *ifindex;
    }
    absl::MutexLock lock(&datapath_mu_);
    if (absl::Status s = datapath_.policy().replaceAll(plan->policy); !s.ok()) {
      errors.push_back(absl::StrCat("programming the policy maps: ", s.message()));
    }
    absl::flat_hash_set<int> needed;
    for (const auto& [ifindex, sw] : veths) {
      if (absl::Status s = datapath_.attachStrict(ifindex); !s.ok()) {
        errors.push_back(absl::StrCat("Workload ", sw->workload, ": attaching STRICT to ifindex ",
                                      ifindex, ": ", s.message()));
        continue;
      }
      if (needed.insert(ifindex).second) {
        interfaces.push_back(absl::StrCat(ifindex, " (", sw->workload, ")"));
      }
    }
    for (int ifindex : datapath_.strictInterfaces()) {
      if (needed.contains(ifindex) || keep.contains(ifindex)) continue;
      if (absl::Status s = datapath_.detachStrict(ifindex); !s.ok()) {
        errors.push_back(
            absl::StrCat("detaching STRICT from ifindex ", ifindex, ": ", s.message()));
      }
    }
    strict_ifindex_ = std::move(ifindex_of);
  }
  absl::MutexLock lock(&mu_);
  // Logged when they change (the retry loop calls sync() again while something fails).
  const std::string joined = absl::StrJoin(errors, "; ");
  if (computed && plan->warnings != warnings_) {
    for (const std::string& w : plan->warnings) spdlog::warn("kernel policy: {}", w);
  }
  if (joined != last_error_) {
    for (const std::string& e : errors) spdlog::error("kernel policy: {}", e);
  }
  if (computed) {
    interfaces_ = std::move(interfaces);
    governed_ = plan->governed;
    meshd_only_ = plan->meshd_only;
    warnings_ = plan->warnings;
    identities_ = plan->policy.identities.size();
    strict_entries_ = plan->policy.strict.size();
    local_workloads_ = plan->local_workloads;
  }
  state_ = node_name_.empty() ? "off: no --node-name" : absl::StrCat("node ", node_name_);
  last_error_ = joined;
  if (!errors.empty()) return absl::InternalError(errors.front());
  return absl::OkStatus();
}

nlohmann::ordered_json KernelPolicySync::status() const {
  nlohmann::ordered_json out;
  absl::StatusOr<datapath::PolicyCounters> c;
  {
    absl::MutexLock lock(&datapath_mu_);
    c = datapath_.policy().counters();
  }
  absl::MutexLock lock(&mu_);
  out["state"] = state_;
  out["localWorkloads"] = local_workloads_;
  out["identities"] = identities_;
  out["strictEntries"] = strict_entries_;
  out["strictInterfaces"] = interfaces_;
  out["governedDestinations"] = governed_;
  out["meshdOnly"] = meshd_only_;
  out["warnings"] = warnings_;
  out["lastError"] = last_error_;
  if (c.ok()) {
    out["counters"] = {
        {"strictDropped", c->strict_dropped},    {"strictUnparsed", c->strict_unparsed},
        {"strictFastPass", c->strict_fast_pass}, {"strictPassFailed", c->strict_pass_failed},
        {"authzDenied", c->authz_denied},        {"authzSkipped", c->authz_skipped}};
  } else {
    out["counters"] = std::string(c.status().message());
  }
  return out;
}

std::vector<telemetry::StrictSample> KernelPolicySync::strictSamples() const {
  std::vector<telemetry::StrictSample> out;
  absl::StatusOr<datapath::PolicyCounters> c;
  {
    absl::MutexLock lock(&datapath_mu_);
    c = datapath_.policy().counters();
  }
  if (!c.ok()) {
    spdlog::warn("reading mesh_strict: {}", std::string(c.status().message()));
    return out;
  }
  for (const datapath::StrictCounter& s : c->strict) {
    out.push_back({s.entry.addr.toString(), s.entry.port, s.syn_dropped});
  }
  return out;
}

}  // namespace meshd::daemon
