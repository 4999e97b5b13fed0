#include "proxy/resilience/registry.h"

#include <algorithm>

namespace meshd::proxy::resilience {

ClusterStatePtr ClusterRegistry::attach(std::string_view name, const state::RequestPolicy& policy,
                                        absl::Span<const SocketAddress> endpoints) {
  auto it = entries_.find(absl::string_view(name.data(), name.size()));
  if (it == entries_.end()) {
    auto st = std::make_shared<ClusterState>();
    st->breaker = std::make_shared<CircuitBreaker>(policy.limits);
    st->outlier = std::make_shared<L7Outlier>(policy.outlier, endpoints);
    Entry e{st, policy.outlier, std::vector<SocketAddress>(endpoints.begin(), endpoints.end())};
    entries_.emplace(std::string(name), std::move(e));
    return st;
  }
  Entry& e = it->second;
  e.state->breaker->configure(policy.limits);
  const bool same_endpoints =
      std::equal(e.endpoints.begin(), e.endpoints.end(), endpoints.begin(), endpoints.end());
  if (same_endpoints && e.settings == policy.outlier) return e.state;
  auto st = std::make_shared<ClusterState>();
  st->breaker = e.state->breaker;
  st->outlier = std::make_shared<L7Outlier>(*e.state->outlier, policy.outlier, endpoints);
  e.state = st;
  e.settings = policy.outlier;
  e.endpoints.assign(endpoints.begin(), endpoints.end());
  return st;
}

void ClusterRegistry::retain(const absl::flat_hash_set<std::string>& names) {
  absl::erase_if(entries_, [&](const auto& kv) { return !names.contains(kv.first); });
}

}  // namespace meshd::proxy::resilience
