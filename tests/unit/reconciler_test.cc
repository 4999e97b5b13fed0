// The reconciler against FakeLbMaps: what it writes, in which order, what it
// leaves alone, adoption, capacities and failures. Every test runs with the
// fake's consistency check on: after each single write call, every service a
// racing connect() could look up must resolve to existing slots, tables and
// active backends.
#include "datapath/reconciler.h"

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "datapath/alias.h"
#include "fake_lb_maps.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::datapath {
namespace {

using ::meshd::datapath::testing::FakeLbMaps;
using Op = FakeLbMaps::Op;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

IpAddress ip(const char* text) { return IpAddress::parse(text).value(); }

state::Backend be(const char* addr, uint16_t port, uint32_t weight = 1) {
  state::Backend b;
  b.address = ip(addr);
  b.port = port;
  b.weight = weight;
  b.node = "node-1";
  b.target = absl::StrCat("Pod/default/", addr);
  return b;
}

state::Frontend fe(const char* name, const char* vip, uint16_t port,
                   std::vector<state::Backend> backends,
                   state::LbAlgorithm algo = state::LbAlgorithm::kWeightedRandom) {
  state::Frontend f;
  f.ns = "default";
  f.service = name;
  f.vip = ip(vip);
  f.port = port;
  f.algorithm = algo;
  f.backends = std::move(backends);
  return f;
}

mesh_svc_key svcKey(const char* vip, uint16_t port, uint8_t proto = MESH_PROTO_TCP) {
  mesh_svc_key k{};
  const IpAddress a = ip(vip);
  a.toAbi(k.addr);
  k.port = htons(port);
  k.proto = proto;
  k.family = static_cast<__u8>(a.family);
  return k;
}

// The maps as a connect() would resolve them: VIP -> (algo, [(backend, weight)]),
// with Maglev tables as backend strings. Independent of the ids chosen.
using Semantic =
    std::map<std::string,
             std::tuple<int, uint32_t, std::vector<std::string>, std::vector<std::string>>>;
Semantic semantic(const FakeLbMaps& maps) {
  auto backendText = [&](uint32_t id) {
    auto it = maps.backends().find(id);
    if (it == maps.backends().end()) return std::string("<missing>");
    return absl::StrCat(IpAddress::fromAbi(it->second.family, it->second.addr).toString(), ":",
                        ntohs(it->second.port));
  };
  Semantic out;
  for (const auto& [k, svc] : maps.services()) {
    const std::string name = absl::StrCat(IpAddress::fromAbi(k.family, k.addr).toString(), ":",
                                          ntohs(k.port), "/", int(k.proto));
    std::vector<std::string> slots;
    for (uint32_t i = 0; i < svc.slot_count; ++i) {
      auto s = maps.slots().find(mesh_slot_key{svc.svc_id, i});
      slots.push_back(s == maps.slots().end() ? "<missing>"
                                              : absl::StrCat(backendText(s->second.backend_id),
                                                             " w", s->second.weight));
    }
    std::vector<std::string> table;
    auto t = maps.maglev().find(svc.svc_id);
    if (t != maps.maglev().end()) {
      for (uint32_t id : t->second) table.push_back(backendText(id));
    }
    out[name] = {svc.algo, svc.maglev_size, slots, table};
  }
  return out;
}

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override { maps_.setCheckConsistency(true); }
  void TearDown() override { EXPECT_THAT(maps_.violations(), IsEmpty()); }

  // Two frontends sharing backend 10.0.0.2:8080.
  state::DesiredLbState twoFrontends() {
    state::DesiredLbState d;
    d.frontends.push_back(
        fe("web", "10.96.0.1", 80, {be("10.0.0.1", 8080, 1), be("10.0.0.2", 8080, 3)}));
    d.frontends.push_back(
        fe("api", "10.96.0.2", 443, {be("10.0.0.2", 8080, 2), be("10.0.0.3", 8443, 5)}));
    return d;
  }

  uint32_t backendIdOf(const char* addr, uint16_t port) {
    for (const auto& [id, b] : maps_.backends()) {
      if (IpAddress::fromAbi(b.family, b.addr) == ip(addr) && ntohs(b.port) == port) return id;
    }
    return 0;
  }

  FakeLbMaps maps_;
  Reconciler rec_{maps_};
};

TEST_F(ReconcilerTest, FirstApplyWritesEverythingInOrder) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateBackends, Op::kUpdateSlots, Op::kUpdateServices));
  EXPECT_EQ(maps_.count(Op::kUpdateBackends).entries, 3u);  // the shared backend once
  EXPECT_EQ(maps_.count(Op::kUpdateSlots).entries, 4u);
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 2u);
  EXPECT_EQ(rec_.stats().applies, 1u);
  EXPECT_EQ(rec_.stats().last_writes, maps_.totalEntries());

  // Backend entries: network-order address and port, protocol, active.
  const uint32_t shared = backendIdOf("10.0.0.2", 8080);
  ASSERT_NE(shared, 0u);
  const mesh_backend& b = maps_.backends().at(shared);
  EXPECT_EQ(b.port, htons(8080));
  EXPECT_EQ(b.addr[0], inet_addr("10.0.0.2"));  // inet_addr returns network order
  EXPECT_EQ(b.addr[1], 0u);
  EXPECT_EQ(b.family, AF_INET);
  EXPECT_EQ(b.proto, MESH_PROTO_TCP);
  EXPECT_EQ(b.flags, MESH_BACKEND_F_ACTIVE);
  for (const auto& [id, unused] : maps_.backends()) EXPECT_LT(id, maps_.maxBackends());

  // Service entry and slots in the frontend's backend order with alias entries.
  auto web = maps_.service(svcKey("10.96.0.1", 80));
  ASSERT_TRUE(web.has_value());
  EXPECT_EQ(web->slot_count, 2u);
  EXPECT_EQ(web->algo, MESH_LB_WEIGHTED_RANDOM);
  EXPECT_EQ(web->maglev_size, 0u);
  const uint32_t w[] = {1, 3};
  const auto alias = buildAliasTable(w);
  const mesh_slot& s0 = maps_.slots().at(mesh_slot_key{web->svc_id, 0});
  const mesh_slot& s1 = maps_.slots().at(mesh_slot_key{web->svc_id, 1});
  EXPECT_EQ(s0.backend_id, backendIdOf("10.0.0.1", 8080));
  EXPECT_EQ(s1.backend_id, shared);
  EXPECT_EQ(s0.weight, 1u);
  EXPECT_EQ(s1.weight, 3u);
  EXPECT_EQ(s0.alias_threshold, alias[0].threshold);
  EXPECT_EQ(s0.alias_slot, alias[0].alias);
  EXPECT_EQ(s1.alias_threshold, alias[1].threshold);

  auto api = maps_.service(svcKey("10.96.0.2", 443));
  ASSERT_TRUE(api.has_value());
  EXPECT_NE(api->svc_id, web->svc_id);
  EXPECT_EQ(maps_.slots().at(mesh_slot_key{api->svc_id, 0}).backend_id, shared);
}

TEST_F(ReconcilerTest, SameApplyAgainWritesNothing) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  maps_.resetCounts();
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u);
  EXPECT_EQ(rec_.stats().last_writes, 0u);
  EXPECT_EQ(rec_.stats().applies, 2u);
}

TEST_F(ReconcilerTest, InformationalChangesWriteNothing) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[0].backends[0].node = "node-2";
  d.frontends[0].backends[0].target = "Pod/default/other";
  d.frontends[1].port_name = "https";
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u);
  auto views = rec_.describe();
  ASSERT_TRUE(views.ok());
  EXPECT_EQ((*views)[0].backends[0].node, "node-2");
}

// Limits live in the service entry: changing one rewrites that entry only.
TEST_F(ReconcilerTest, ConnectionLimitsAreWrittenToTheServiceEntryOnly) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->max_conns, 0u);
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[0].max_connections = 100;
  d.frontends[0].max_connections_per_backend = 7;
  d.frontends[0].connect_rate = {200, 20};
  d.frontends[0].client_connect_rate = {10, 3};
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices));
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 1u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->max_conns, 100u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->max_conns_per_backend, 7u);
  const mesh_svc s = maps_.service(svcKey("10.96.0.1", 80)).value();
  EXPECT_EQ(s.rate_per_sec, 200u);
  EXPECT_EQ(s.rate_burst, 20u);
  EXPECT_EQ(s.client_rate_per_sec, 10u);
  EXPECT_EQ(s.client_rate_burst, 3u);
}

// Frontend::l7 is MESH_SVC_F_L7 in the service entry: turning it on or off
// rewrites that entry only (the slots and backends stay for the L4 fallback),
// and a reconciler that adopts the maps reports it.
TEST_F(ReconcilerTest, L7FlagIsWrittenToTheServiceEntryOnly) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->flags, MESH_SVC_F_NONE);
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[0].l7 = true;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices));
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 1u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->flags, MESH_SVC_F_L7);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.2", 443)).value().flags, MESH_SVC_F_NONE);

  Reconciler adopted(maps_);
  ASSERT_TRUE(adopted.adopt().ok());
  auto views = adopted.describe();
  ASSERT_TRUE(views.ok()) << views.status();
  for (const auto& v : *views) EXPECT_EQ(v.frontend.l7, v.frontend.vip == ip("10.96.0.1"));

  maps_.resetCounts();
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices));
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->flags, MESH_SVC_F_NONE);
}

// Outlier detection lives in the service entry too: defaults on a frontend
// with no policy, and a change rewrites that entry only. adopt() restores it.
TEST_F(ReconcilerTest, OutlierDetectionIsWrittenToTheServiceEntryOnly) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  auto web = maps_.service(svcKey("10.96.0.1", 80));
  EXPECT_EQ(web->eject_consecutive, 5u);
  EXPECT_EQ(web->eject_base_ms, 30'000u);
  EXPECT_EQ(web->eject_max_ms, 300'000u);
  EXPECT_EQ(web->eject_max_percent, 10u);
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[0].outlier = state::OutlierDetection{3, 2'000, 8'000, 25};
  d.frontends[1].algorithm = state::LbAlgorithm::kLeastLatency;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices));
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 2u);
  web = maps_.service(svcKey("10.96.0.1", 80));
  EXPECT_EQ(web->eject_consecutive, 3u);
  EXPECT_EQ(web->eject_base_ms, 2'000u);
  EXPECT_EQ(web->eject_max_ms, 8'000u);
  EXPECT_EQ(web->eject_max_percent, 25u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.2", 443))->algo, MESH_LB_P2C_EWMA);

  // Turned off: eject_consecutive 0.
  d.frontends[0].outlier.consecutive_failures = 0;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->eject_consecutive, 0u);

  // A restarted meshd sees the settings in the maps and rewrites nothing.
  Reconciler again(maps_);
  ASSERT_TRUE(again.adopt().ok());
  auto views = again.describe();
  ASSERT_TRUE(views.ok());
  EXPECT_EQ((*views)[0].frontend.outlier, (state::OutlierDetection{0, 2'000, 8'000, 25}));
  maps_.resetCounts();
  ASSERT_TRUE(again.apply(d).ok());
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 0u);
}

TEST_F(ReconcilerTest, InvalidOutlierDetectionWritesNothing) {
  auto d = twoFrontends();
  d.frontends[0].outlier.max_ejection_percent = 101;
  auto status = rec_.apply(d);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("maxEjectionPercent"));
  d = twoFrontends();
  d.frontends[1].outlier.max_ejection_ms = d.frontends[1].outlier.base_ejection_ms - 1;
  EXPECT_EQ(rec_.apply(d).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(maps_.totalCalls(), 0u);
}

TEST_F(ReconcilerTest, AddingBackendWritesOneBackendTheSlotsAndTheService) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  const auto api_before = *maps_.service(svcKey("10.96.0.2", 443));
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[0].backends.push_back(be("10.0.0.9", 8080, 2));
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateBackends, Op::kUpdateSlots, Op::kUpdateServices));
  EXPECT_EQ(maps_.count(Op::kUpdateBackends).entries, 1u);
  EXPECT_LE(maps_.count(Op::kUpdateSlots).entries, 3u);  // at most the frontend's 3 slots
  EXPECT_GE(maps_.count(Op::kUpdateSlots).entries, 1u);  // at least the new one
  EXPECT_EQ(maps_.count(Op::kUpdateServices).entries, 1u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->slot_count, 3u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.2", 443))->svc_id, api_before.svc_id);
  EXPECT_EQ(rec_.stats().last_writes, maps_.totalEntries());
}

TEST_F(ReconcilerTest, RemovingFrontendDeletesItsEntriesAndUnusedBackendsOnly) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  const uint32_t only_web = backendIdOf("10.0.0.1", 8080);
  const uint32_t shared = backendIdOf("10.0.0.2", 8080);
  const uint32_t web_id = maps_.service(svcKey("10.96.0.1", 80))->svc_id;
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends.erase(d.frontends.begin());
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kDeleteServices, Op::kDeleteSlots, Op::kDeleteBackends));
  EXPECT_EQ(maps_.count(Op::kDeleteServices).entries, 1u);
  EXPECT_EQ(maps_.count(Op::kDeleteSlots).entries, 2u);
  EXPECT_EQ(maps_.count(Op::kDeleteBackends).entries, 1u);
  EXPECT_FALSE(maps_.service(svcKey("10.96.0.1", 80)).has_value());
  EXPECT_FALSE(maps_.slots().contains(mesh_slot_key{web_id, 0}));
  EXPECT_FALSE(maps_.backends().contains(only_web));
  EXPECT_TRUE(maps_.backends().contains(shared));
  EXPECT_EQ(maps_.slots().size(), 2u);
}

TEST_F(ReconcilerTest, ShrinkingWritesServiceBeforeDeletingSlots) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  maps_.resetCounts();
  auto d = twoFrontends();
  d.frontends[1].backends.pop_back();  // api loses 10.0.0.3:8443
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateSlots, Op::kUpdateServices, Op::kDeleteSlots,
                                       Op::kDeleteBackends));
  EXPECT_EQ(maps_.service(svcKey("10.96.0.2", 443))->slot_count, 1u);
  EXPECT_EQ(maps_.backends().size(), 2u);
}

TEST_F(ReconcilerTest, ReplacingAllBackendsStaysConsistent) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  state::DesiredLbState d;
  d.frontends.push_back(
      fe("web", "10.96.0.1", 80,
         {be("10.0.1.1", 80), be("10.0.1.2", 80), be("10.0.1.3", 80), be("10.0.1.4", 80)}));
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.backends().size(), 4u);
  EXPECT_EQ(maps_.slots().size(), 4u);
  EXPECT_EQ(maps_.services().size(), 1u);
  // The violations check in TearDown covers every intermediate step.
}

TEST_F(ReconcilerTest, FreedIdsAreReusedAndStayBelowCapacity) {
  FakeLbMaps small(/*max_backends=*/4, 8, 64);
  Reconciler rec(small);
  state::DesiredLbState d;
  d.frontends.push_back(fe("a", "10.96.0.1", 80, {be("10.0.0.1", 80), be("10.0.0.2", 80)}));
  ASSERT_TRUE(rec.apply(d).ok());
  d.frontends[0].backends = {be("10.0.0.1", 80)};
  ASSERT_TRUE(rec.apply(d).ok());
  d.frontends[0].backends = {be("10.0.0.1", 80), be("10.0.0.5", 80), be("10.0.0.6", 80)};
  ASSERT_TRUE(rec.apply(d).ok()) << "ids 1..3 fit a 4-entry array: the freed id is reused";
  for (const auto& [id, b] : small.backends()) {
    EXPECT_GE(id, 1u);
    EXPECT_LT(id, 4u);
  }
  EXPECT_EQ(small.backends().size(), 3u);
}

TEST_F(ReconcilerTest, AdoptThenReapplyWritesNothing) {
  auto d = twoFrontends();
  d.frontends.push_back(fe("hash", "10.96.0.3", 80, {be("10.0.0.1", 8080), be("10.0.0.4", 8080)},
                           state::LbAlgorithm::kMaglev));
  d.frontends.back().maglev_table_size = 251;
  d.frontends.push_back(fe("empty", "10.96.0.4", 80, {}));
  d.frontends.push_back(fe("v6", "fd00::10", 53, {be("fd00::1", 5353, 2), be("fd00::2", 5353, 1)}));
  d.frontends.back().protocol = state::Protocol::kUdp;
  ASSERT_TRUE(rec_.apply(d).ok());
  const Semantic before = semantic(maps_);

  // A restarted meshd: a new Reconciler over the same (pinned) maps.
  Reconciler restarted(maps_);
  ASSERT_TRUE(restarted.adopt().ok());
  auto adopted = restarted.describe();
  ASSERT_TRUE(adopted.ok());
  EXPECT_EQ(adopted->size(), 5u);
  maps_.resetCounts();
  ASSERT_TRUE(restarted.apply(d).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u) << "adopted state must not be rewritten";

  // Changes after adoption get fresh ids that do not collide with adopted ones.
  std::set<uint32_t> svc_ids;
  for (const auto& [k, svc] : maps_.services()) svc_ids.insert(svc.svc_id);
  d.frontends[0].backends.push_back(be("10.0.0.7", 8080));
  d.frontends.push_back(fe("new", "10.96.0.5", 80, {be("10.0.0.8", 8080)}));
  const size_t backends_before = maps_.backends().size();
  ASSERT_TRUE(restarted.apply(d).ok());
  EXPECT_EQ(maps_.backends().size(), backends_before + 2);
  auto fresh = maps_.service(svcKey("10.96.0.5", 80));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_FALSE(svc_ids.contains(fresh->svc_id));
  EXPECT_EQ(semantic(maps_).size(), before.size() + 1);
}

TEST_F(ReconcilerTest, AdoptDeletesLeftovers) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  const Semantic clean = semantic(maps_);
  // Leftovers a crash could leave: slots and a table of a service id no service
  // entry names, and a backend nothing uses.
  maps_.rawSetSlot(mesh_slot_key{77, 0}, mesh_slot{1, 1, 0xffffffffu, 0});
  maps_.rawSetMaglev(77, std::vector<uint32_t>(13, 1));
  mesh_backend stray{};
  stray.addr[0] = inet_addr("10.9.9.9");
  stray.port = htons(1);
  stray.proto = MESH_PROTO_TCP;
  stray.family = AF_INET;
  stray.flags = MESH_BACKEND_F_ACTIVE;
  maps_.rawSetBackend(50, stray);

  // And a bad slot of a live service (backend id 0, which the kernel cannot use).
  const uint32_t web_id = maps_.service(svcKey("10.96.0.1", 80))->svc_id;
  const mesh_slot good = maps_.slots().at(mesh_slot_key{web_id, 1});
  maps_.rawSetSlot(mesh_slot_key{web_id, 1}, mesh_slot{0, 1, 0, 0});

  Reconciler restarted(maps_);
  ASSERT_TRUE(restarted.adopt().ok());
  maps_.setCheckConsistency(false);  // the planted bad slot is inconsistent until repaired
  maps_.resetCounts();
  ASSERT_TRUE(restarted.apply(twoFrontends()).ok());
  EXPECT_THAT(maps_.checkConsistency(), IsEmpty());
  ASSERT_TRUE(maps_.slots().contains(mesh_slot_key{web_id, 1}));
  EXPECT_EQ(maps_.slots().at(mesh_slot_key{web_id, 1}).backend_id, good.backend_id);
  EXPECT_FALSE(maps_.slots().contains(mesh_slot_key{77, 0}));
  EXPECT_FALSE(maps_.maglev().contains(77));
  EXPECT_FALSE(maps_.backends().contains(50));
  EXPECT_EQ(maps_.count(Op::kUpdateSlots).entries, 1u);
  EXPECT_EQ(semantic(maps_), clean);
  // Nothing left over: the next apply writes nothing.
  maps_.resetCounts();
  ASSERT_TRUE(restarted.apply(twoFrontends()).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u);
}

TEST_F(ReconcilerTest, AdoptRepairsServicesSharingAnId) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  // A second service entry claiming web's svc_id (garbage a crash or a foreign
  // writer could leave): adoption keeps one owner per id.
  mesh_svc clash = *maps_.service(svcKey("10.96.0.1", 80));
  maps_.rawSetService(svcKey("10.96.0.77", 80), clash);
  Reconciler restarted(maps_);
  ASSERT_TRUE(restarted.adopt().ok());
  auto d = twoFrontends();
  d.frontends.push_back(fe("late", "10.96.0.77", 80, {be("10.0.0.1", 8080)}));
  ASSERT_TRUE(restarted.apply(d).ok());
  std::set<uint32_t> ids;
  for (const auto& [k, svc] : maps_.services()) ids.insert(svc.svc_id);
  EXPECT_EQ(ids.size(), 3u) << "every service has its own id again";
  EXPECT_EQ(maps_.service(svcKey("10.96.0.77", 80))->slot_count, 1u);
  // And when not desired, the clashing entry is deleted.
  maps_.rawSetService(svcKey("10.96.0.78", 80), clash);
  Reconciler again(maps_);
  ASSERT_TRUE(again.adopt().ok());
  ASSERT_TRUE(again.apply(d).ok());
  EXPECT_FALSE(maps_.service(svcKey("10.96.0.78", 80)).has_value());
  EXPECT_EQ(maps_.services().size(), 3u);
}

TEST_F(ReconcilerTest, CapacityExceededWritesNothing) {
  {
    FakeLbMaps small(/*max_backends=*/3, 8, 64);  // ids 1..2
    Reconciler rec(small);
    auto status = rec.apply(twoFrontends());  // 3 backends
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(status.message(), HasSubstr("mesh_backends"));
    EXPECT_EQ(small.totalCalls(), 0u);
    // Nothing was taken: a state that fits still applies.
    state::DesiredLbState fits;
    fits.frontends.push_back(fe("a", "10.96.0.1", 80, {be("10.0.0.1", 80), be("10.0.0.2", 80)}));
    EXPECT_TRUE(rec.apply(fits).ok());
  }
  {
    FakeLbMaps small(64, /*max_services=*/1, 64);
    Reconciler rec(small);
    auto status = rec.apply(twoFrontends());
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(status.message(), HasSubstr("mesh_services"));
    EXPECT_EQ(small.totalCalls(), 0u);
  }
  {
    FakeLbMaps small(64, 8, /*max_slots=*/3);
    Reconciler rec(small);
    auto status = rec.apply(twoFrontends());  // 4 slots
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(status.message(), HasSubstr("mesh_slots"));
    EXPECT_EQ(small.totalCalls(), 0u);
  }
}

TEST_F(ReconcilerTest, InvalidInputWritesNothing) {
  auto dup = twoFrontends();
  dup.frontends.push_back(dup.frontends[0]);
  EXPECT_EQ(rec_.apply(dup).code(), absl::StatusCode::kInvalidArgument);

  auto heavy = twoFrontends();
  heavy.frontends[0].backends[0].weight = 10001;
  auto status = rec_.apply(heavy);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("10.0.0.1:8080"));

  auto zero = twoFrontends();
  zero.frontends[0].backends[0].weight = 0;
  EXPECT_EQ(rec_.apply(zero).code(), absl::StatusCode::kInvalidArgument);

  auto maglev = twoFrontends();
  maglev.frontends[0].algorithm = state::LbAlgorithm::kMaglev;
  maglev.frontends[0].maglev_table_size = 12;
  status = rec_.apply(maglev);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("prime"));

  auto novip = twoFrontends();
  novip.frontends[0].vip = IpAddress{};
  EXPECT_EQ(rec_.apply(novip).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(maps_.totalCalls(), 0u);
}

TEST_F(ReconcilerTest, WriterFailureIsReturnedAndReapplyingOldStateRepairs) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  const Semantic old_state = semantic(maps_);

  // A new state whose slot batch fails after one entry reached the "kernel".
  auto next = twoFrontends();
  next.frontends[0].backends = {be("10.0.5.1", 80, 4), be("10.0.5.2", 80, 1)};
  next.frontends.push_back(fe("extra", "10.96.0.9", 80, {be("10.0.5.3", 80)}));
  maps_.failOn(Op::kUpdateSlots, absl::UnavailableError("injected"), /*applied_entries=*/1);
  auto status = rec_.apply(next);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("mesh_slots"));
  EXPECT_THAT(status.message(), HasSubstr("injected"));
  EXPECT_EQ(rec_.stats().applies, 1u);

  // The caller re-applies the old state: the maps are as before the failure.
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_EQ(semantic(maps_), old_state);
  EXPECT_EQ(maps_.backends().size(), 3u) << "backends of the failed apply are removed";
  EXPECT_EQ(maps_.slots().size(), 4u) << "slots of the failed apply are removed";
  maps_.resetCounts();
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u);

  // And the new state still applies afterwards.
  ASSERT_TRUE(rec_.apply(next).ok());
  EXPECT_EQ(maps_.services().size(), 3u);
}

TEST_F(ReconcilerTest, ServiceWriteFailureNamesTheMap) {
  maps_.failOn(Op::kUpdateServices, absl::ResourceExhaustedError("mesh_services is full"));
  auto status = rec_.apply(twoFrontends());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("service entries into mesh_services"));
  ASSERT_TRUE(rec_.apply(state::DesiredLbState{}).ok());
  EXPECT_TRUE(maps_.backends().empty());
  EXPECT_TRUE(maps_.slots().empty());
}

TEST_F(ReconcilerTest, MaglevTableSetKeptAndRemoved) {
  auto d = twoFrontends();
  d.frontends[0].algorithm = state::LbAlgorithm::kMaglev;
  d.frontends[0].maglev_table_size = 13;
  ASSERT_TRUE(rec_.apply(d).ok());
  const mesh_svc web = *maps_.service(svcKey("10.96.0.1", 80));
  EXPECT_EQ(web.algo, MESH_LB_MAGLEV);
  EXPECT_EQ(web.maglev_size, 13u);
  ASSERT_TRUE(maps_.maglev().contains(web.svc_id));
  const auto& table = maps_.maglev().at(web.svc_id);
  ASSERT_EQ(table.size(), 13u);
  const uint32_t a = backendIdOf("10.0.0.1", 8080), b = backendIdOf("10.0.0.2", 8080);
  for (uint32_t id : table) EXPECT_TRUE(id == a || id == b) << id;
  // Weights 1:3 over 13 entries: 3 or 4 entries for the first backend.
  const auto first = std::count(table.begin(), table.end(), a);
  EXPECT_GE(first, 3);
  EXPECT_LE(first, 4);
  EXPECT_EQ(maps_.maglev().size(), 1u);

  // Unchanged and informational changes: no table write.
  maps_.resetCounts();
  d.frontends[0].backends[1].node = "elsewhere";
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.totalCalls(), 0u);

  // A weight change rebuilds it; a size change too.
  d.frontends[0].backends[1].weight = 1;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.count(Op::kSetMaglev).calls, 1u);
  // Growing: table before the service entry; shrinking: after it (the consistency
  // check would catch an entry whose maglev_size exceeds its table).
  maps_.resetCounts();
  d.frontends[0].maglev_table_size = 17;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kSetMaglev, Op::kUpdateServices));
  EXPECT_EQ(maps_.maglev().at(web.svc_id).size(), 17u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->maglev_size, 17u);
  maps_.resetCounts();
  d.frontends[0].maglev_table_size = 11;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices, Op::kSetMaglev));
  EXPECT_EQ(maps_.maglev().at(web.svc_id).size(), 11u);

  // No longer Maglev: the service entry changes first, then the table goes.
  maps_.resetCounts();
  d.frontends[0].algorithm = state::LbAlgorithm::kLeastConnections;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_THAT(maps_.log(), ElementsAre(Op::kUpdateServices, Op::kDeleteMaglev));
  EXPECT_TRUE(maps_.maglev().empty());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->maglev_size, 0u);
  EXPECT_EQ(maps_.service(svcKey("10.96.0.1", 80))->algo, MESH_LB_LEAST_CONN);

  // Maglev again with the default size, then deleted with its frontend.
  d.frontends[0].algorithm = state::LbAlgorithm::kMaglev;
  d.frontends[0].maglev_table_size = 0;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.maglev().at(web.svc_id).size(), uint32_t{MESH_MAGLEV_DEFAULT_SIZE});
  d.frontends.erase(d.frontends.begin());
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_TRUE(maps_.maglev().empty());
}

TEST_F(ReconcilerTest, ZeroBackendFrontendHasServiceEntryWithoutSlots) {
  state::DesiredLbState d;
  d.frontends.push_back(fe("empty", "10.96.0.7", 80, {}));
  d.frontends.push_back(fe("empty-hash", "10.96.0.8", 80, {}, state::LbAlgorithm::kMaglev));
  ASSERT_TRUE(rec_.apply(d).ok());
  auto svc = maps_.service(svcKey("10.96.0.7", 80));
  ASSERT_TRUE(svc.has_value());
  EXPECT_EQ(svc->slot_count, 0u);
  EXPECT_NE(svc->svc_id, 0u);
  EXPECT_TRUE(maps_.slots().empty());
  EXPECT_TRUE(maps_.backends().empty());
  EXPECT_TRUE(maps_.maglev().empty()) << "nothing to hash to: the kernel refuses on slot_count 0";

  // Backends arrive, then leave again.
  d.frontends[0].backends = {be("10.0.0.1", 80)};
  d.frontends[1].backends = {be("10.0.0.1", 80)};
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.7", 80))->slot_count, 1u);
  EXPECT_EQ(maps_.maglev().size(), 1u);
  d.frontends[0].backends.clear();
  d.frontends[1].backends.clear();
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.7", 80))->slot_count, 0u);
  EXPECT_TRUE(maps_.slots().empty());
  EXPECT_TRUE(maps_.backends().empty());
  EXPECT_TRUE(maps_.maglev().empty());
}

TEST_F(ReconcilerTest, SameAddressDifferentProtocolIsTwoBackends) {
  state::DesiredLbState d;
  d.frontends.push_back(fe("dns", "10.96.0.10", 53, {be("10.0.0.53", 53)}));
  d.frontends.push_back(fe("dns", "10.96.0.10", 53, {be("10.0.0.53", 53)}));
  d.frontends[1].protocol = state::Protocol::kUdp;
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.services().size(), 2u);
  EXPECT_EQ(maps_.backends().size(), 2u);
}

TEST_F(ReconcilerTest, DescribeShowsCountersAndNames) {
  ASSERT_TRUE(rec_.apply(twoFrontends()).ok());
  const uint32_t shared = backendIdOf("10.0.0.2", 8080);
  mesh_backend_state st{};
  st.live_conns = 7;
  st.total_conns = 100;
  maps_.setBackendState(shared, st);
  auto views = rec_.describe();
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 2u);
  const auto& web = (*views)[0];  // sorted by VIP
  EXPECT_EQ(web.frontend.service, "web");
  ASSERT_EQ(web.backends.size(), 2u);
  EXPECT_EQ(web.backends[1].id, shared);
  EXPECT_EQ(web.backends[1].address, ip("10.0.0.2"));
  EXPECT_EQ(web.backends[1].port, 8080);
  EXPECT_EQ(web.backends[1].weight, 3u);
  EXPECT_EQ(web.backends[1].counters.live_conns, 7);
  EXPECT_EQ(web.backends[1].target, "Pod/default/10.0.0.2");
  EXPECT_EQ((*views)[1].backends[0].counters.total_conns, 100u);

  // After adoption, the maps' picture without names.
  Reconciler restarted(maps_);
  ASSERT_TRUE(restarted.adopt().ok());
  auto adopted = restarted.describe();
  ASSERT_TRUE(adopted.ok());
  ASSERT_EQ(adopted->size(), 2u);
  EXPECT_EQ((*adopted)[0].frontend.vip, ip("10.96.0.1"));
  EXPECT_EQ((*adopted)[0].frontend.port, 80);
  ASSERT_EQ((*adopted)[0].frontend.backends.size(), 2u);
  EXPECT_EQ((*adopted)[0].frontend.backends[1].weight, 3u);
  EXPECT_EQ((*adopted)[0].backends[1].counters.live_conns, 7);
}

// 10,000 services x 10 backends: the first apply is a handful of batched calls
// (not one per entry); changing one backend's weight writes only that service's
// slots. Wall time is printed, not asserted (bench/ measures it on real maps).
TEST(ReconcilerScaleTest, TenThousandServicesInBatches) {
  FakeLbMaps maps(1 << 18, 1 << 15, 1 << 18);
  Reconciler rec(maps);
  state::DesiredLbState d;
  for (int s = 0; s < 10000; ++s) {
    std::vector<state::Backend> backends;
    for (int b = 0; b < 10; ++b) {
      backends.push_back(
          be(absl::StrCat("10.", 1 + s / 250, ".", s % 250, ".", 1 + b).c_str(), 8080, 1 + b));
    }
    d.frontends.push_back(fe("svc", absl::StrCat("10.96.", s / 250, ".", 1 + s % 250).c_str(), 80,
                             std::move(backends)));
  }
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(rec.apply(d).ok());
  const double first =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(maps.totalCalls(), 3u);
  EXPECT_EQ(maps.services().size(), 10000u);
  EXPECT_EQ(maps.slots().size(), 100000u);
  EXPECT_EQ(maps.backends().size(), 100000u);

  maps.resetCounts();
  start = std::chrono::steady_clock::now();
  ASSERT_TRUE(rec.apply(d).ok());
  const double again =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(maps.totalCalls(), 0u);

  d.frontends[4321].backends[2].weight = 50;
  maps.resetCounts();
  ASSERT_TRUE(rec.apply(d).ok());
  EXPECT_THAT(maps.log(), ElementsAre(Op::kUpdateSlots));
  EXPECT_LE(maps.count(Op::kUpdateSlots).entries, 10u);
  std::printf("10k services x 10 backends: first apply %.3f s, unchanged re-apply %.3f s\n", first,
              again);
}

}  // namespace
// Draining: an id freed while the kernel still counts live connections on it
// is not reused until they close, so a new backend never inherits them; once
// drained, its leftover counters are reset before the id is reused.
TEST_F(ReconcilerTest, BackendIdWithLiveConnectionsIsNotReusedUntilDrained) {
  state::DesiredLbState d;
  d.frontends.push_back(fe("web", "10.96.0.1", 80, {be("10.0.0.1", 8080), be("10.0.0.2", 8080)}));
  ASSERT_TRUE(rec_.apply(d).ok());
  const uint32_t gone = backendIdOf("10.0.0.1", 8080);
  mesh_backend_state st{};
  st.live_conns = 2;
  st.total_conns = 40;
  st.consecutive_failures = 3;
  maps_.setBackendState(gone, st);

  d.frontends[0].backends = {be("10.0.0.2", 8080)};
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(rec_.drainingBackends(), 0u) << "freed ids are checked when handed out";
  d.frontends[0].backends = {be("10.0.0.2", 8080), be("10.0.0.3", 8080)};
  ASSERT_TRUE(rec_.apply(d).ok());
  const uint32_t fresh = backendIdOf("10.0.0.3", 8080);
  EXPECT_NE(fresh, gone) << "the lowest free id still has 2 live connections";
  EXPECT_EQ(rec_.drainingBackends(), 1u);

  st.live_conns = 0;  // the lingering connections closed
  maps_.setBackendState(gone, st);
  d.frontends[0].backends.push_back(be("10.0.0.4", 8080));
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(rec_.drainingBackends(), 0u);
  EXPECT_EQ(backendIdOf("10.0.0.4", 8080), gone) << "drained: reused, lowest first";
  EXPECT_THAT(maps_.resetBackendStateIds(), ElementsAre(gone));
  auto reused = maps_.readBackendState(gone);
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused->total_conns, 0u) << "the new backend starts from zero";
  EXPECT_EQ(reused->consecutive_failures, 0u);
}

// The same for service ids: a new service must not inherit the live count
// (and so the maxConnections budget) of a deleted one.
TEST_F(ReconcilerTest, ServiceIdWithLiveConnectionsIsNotReusedUntilDrained) {
  state::DesiredLbState d;
  d.frontends.push_back(fe("web", "10.96.0.1", 80, {be("10.0.0.1", 8080)}));
  ASSERT_TRUE(rec_.apply(d).ok());
  const uint32_t gone = maps_.service(svcKey("10.96.0.1", 80))->svc_id;
  mesh_svc_state st{};
  st.live_conns = 5;
  maps_.setServiceState(gone, st);
  d.frontends.clear();
  ASSERT_TRUE(rec_.apply(d).ok());
  d.frontends.push_back(fe("api", "10.96.0.2", 80, {be("10.0.0.1", 8080)}));
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_NE(maps_.service(svcKey("10.96.0.2", 80))->svc_id, gone);
  EXPECT_EQ(rec_.drainingServices(), 1u);
  st.live_conns = 0;
  maps_.setServiceState(gone, st);
  d.frontends.push_back(fe("db", "10.96.0.3", 80, {be("10.0.0.1", 8080)}));
  ASSERT_TRUE(rec_.apply(d).ok());
  EXPECT_EQ(maps_.service(svcKey("10.96.0.3", 80))->svc_id, gone);
  EXPECT_EQ(rec_.drainingServices(), 0u);
}

// terminate_removed: backends leaving the frontend (or the whole frontend
// leaving) are reported once, as (svc_id, backend_id); others are not.
TEST_F(ReconcilerTest, TerminationsListRemovedBackendsOfFrontendsThatAskForIt) {
  state::DesiredLbState d;
  d.frontends.push_back(fe("web", "10.96.0.1", 80, {be("10.0.0.1", 8080), be("10.0.0.2", 8080)}));
  d.frontends.push_back(fe("api", "10.96.0.2", 80, {be("10.0.0.1", 8080), be("10.0.0.2", 8080)}));
  d.frontends[0].terminate_removed = true;
  ASSERT_TRUE(rec_.apply(d).ok());
  const uint32_t web = maps_.service(svcKey("10.96.0.1", 80))->svc_id;
  const uint32_t b1 = backendIdOf("10.0.0.1", 8080), b2 = backendIdOf("10.0.0.2", 8080);
  EXPECT_TRUE(rec_.takeTerminations().empty());

  d.frontends[0].backends = {be("10.0.0.2", 8080)};
  d.frontends[1].backends = {be("10.0.0.2", 8080)};  // api drains: no termination
  ASSERT_TRUE(rec_.apply(d).ok());
  auto t = rec_.takeTerminations();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].svc_id, web);
  EXPECT_EQ(t[0].backend_id, b1);
  EXPECT_TRUE(rec_.takeTerminations().empty());

  d.frontends.erase(d.frontends.begin());  // web deleted: its last backend too
  ASSERT_TRUE(rec_.apply(d).ok());
  t = rec_.takeTerminations();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].svc_id, web);
  EXPECT_EQ(t[0].backend_id, b2);
}

}  // namespace meshd::datapath
