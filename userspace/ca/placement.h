// Where workloads run, as far as the CA is concerned: a node agent may only obtain the
// identities of workloads that the source of truth places on its node.
#pragma once

#include <string>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace meshd::ca {

class WorkloadPlacement {
 public:
  virtual ~WorkloadPlacement() = default;
  // True when a workload of namespace `ns` running as `service_account` is placed on `node`.
  // Called from gRPC's threads concurrently.
  virtual bool hasWorkload(std::string_view node, std::string_view ns,
                           std::string_view service_account) const = 0;
};

// A fixed placement read from a YAML file (meshd-ca --workloads): a sequence of
// Workload-like entries
//   - {name: web-1, namespace: default, serviceAccount: web, node: n1}
// (serviceAccount defaults to "default", as in Kubernetes). Stand-in until the model's
// Workload resources back the CA.
class StaticWorkloadPlacement final : public WorkloadPlacement {
 public:
  struct Entry {
    std::string name;
    std::string ns;
    std::string service_account;
    std::string node;
  };
  explicit StaticWorkloadPlacement(const std::vector<Entry>& entries);
  // InvalidArgument naming the file, line and column of what is wrong.
  static absl::StatusOr<StaticWorkloadPlacement> fromYaml(std::string_view yaml,
                                                          std::string_view source);
  static absl::StatusOr<StaticWorkloadPlacement> fromFile(const std::string& path);

  bool hasWorkload(std::string_view node, std::string_view ns,
                   std::string_view service_account) const override;
  size_t size() const { return placed_.size(); }

 private:
  absl::flat_hash_set<std::string> placed_;  // node '\0' ns '\0' service account
};

}  // namespace meshd::ca
