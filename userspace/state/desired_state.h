// From applied resources to what the kernel fast path should know.
#pragma once

#include "absl/status/statusor.h"
#include "resources/resource_set.h"
#include "state/lb_state.h"

namespace meshd::state {

using resources::ResourceSet;

// Pure: one Frontend per Service x clusterIP x port (headless Services have
// none). Backends are the ready endpoints, of the clusterIP's family, of every
// EndpointSlice in the Service's namespace labelled with its name; their port
// is the slice port named like the Service port (same protocol), else the
// slice port named like a named targetPort, else the numeric targetPort (a
// slice giving none of these contributes nothing to that port). Weights and
// algorithm come from the Service's TrafficPolicy (default WeightedRandom,
// weight 1). Frontends are sorted by (vip, port, protocol), backends by
// (address, port), duplicates removed (the first slice in key order wins).
// `l7` is set on the TCP frontends an HTTPRoute or GRPCRoute binds through a
// parentRef (port unset: every port of the Service; port or sectionName set:
// that port). A route whose Service does not exist binds nothing. `l7` is also set on
// every TCP frontend of a Service whose TrafficPolicy sets a request-level field
// (requestLimits, retries, faultInjection, a non-zero consecutive5xxErrors or
// consecutiveGatewayErrors): only the proxy can apply them. `request` is the policy's
// request-level settings (defaults without a policy).
// A RateLimitPolicy of the Service sets connect_rate / client_connect_rate (its
// spec.connections; validateSet refuses one that a TrafficPolicy sets too) and makes the TCP
// frontends L7 when it limits requests (requests, perClient or routes).
// With `mesh.mtls` (the node agent runs), `l7` is also set on every TCP frontend with a
// backend address of a Workload on another node that has a Node (an InternalIP): the connect
// hook then sends its connections to meshd, which carries them through the mTLS tunnel (L4
// services included: relayed opaquely). A DISABLE PeerAuthentication is decided in meshd
// (plaintext through meshd), not here.
// Fails with InvalidArgument when a resource does not validate or two
// Services/TrafficPolicies conflict (see resources::validateSet).
struct MeshSettings {
  bool mtls = false;      // identities and the tunnel are on (meshd --ca-address)
  std::string node_name;  // this node (meshd --node-name)
};
absl::StatusOr<DesiredLbState> computeDesiredState(const ResourceSet& set,
                                                   const MeshSettings& mesh = {});

}  // namespace meshd::state
