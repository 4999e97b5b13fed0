// A set of resources keyed by (kind, namespace, name), kept in key order so
// everything computed from it is deterministic.
#pragma once

#include <map>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "resources/resource.h"

namespace meshd::resources {

class ResourceSet {
 public:
  using Map = std::map<ResourceKey, Resource>;

  // Inserts or replaces the resource with r.key.
  void upsert(Resource r);
  // Returns false when the key was absent.
  bool erase(const ResourceKey& key);
  // nullptr when absent.
  const Resource* find(const ResourceKey& key) const;
  bool contains(const ResourceKey& key) const { return map_.contains(key); }
  // Resources of one kind (optionally one namespace), in key order.
  std::vector<const Resource*> list(std::string_view kind) const;
  std::vector<const Resource*> list(std::string_view kind, std::string_view ns) const;
  const Map& all() const { return map_; }
  // A copy of every resource, in key order (what the store saves).
  std::vector<Resource> toVector() const;
  size_t size() const { return map_.size(); }
  bool empty() const { return map_.empty(); }

  friend bool operator==(const ResourceSet& a, const ResourceSet& b);

 private:
  Map map_;
};

// Checks that need the whole set, not one document:
//  - no two Services share a clusterIP + port + protocol;
//  - at most one TrafficPolicy targets a Service;
//  - at most one RateLimitPolicy targets a Service, and a RateLimitPolicy setting
//    connections.connectRate (or connectRatePerClient) conflicts with a TrafficPolicy of the
//    same Service setting connectionLimits.connectRate (or connectRatePerClient): both program
//    the same kernel bucket, so the apply is refused naming both;
//  - no two Workloads share an address.
// HTTPRoutes and GRPCRoutes get no set check: Kubernetes accepts a route whose
// parent or backend Service is missing (the Gateway API reports it in the route's
// status), and so does meshd (such a backend's share of requests gets 500).
// InvalidArgument with one line per problem, each naming both resources. The
// line is reported against the resource that has source positions (the one
// just applied) when only one of the pair has them.
absl::Status validateSet(const ResourceSet& set);

}  // namespace meshd::resources
