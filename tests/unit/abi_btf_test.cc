// Checks that the BPF programs and C++ agree on the layout of every struct in
// bpf/include/mesh_abi.h: the compiled object's BTF (what clang laid out for
// the BPF target) against sizeof/offsetof here. Also checks the enum values.
#include <bpf/btf.h>

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mesh_abi.h"

namespace {

struct Member {
  std::string name;
  size_t offset;
  size_t size;
};

struct Layout {
  size_t size;
  std::vector<Member> members;
};

#define MEMBER(type, field) \
  Member { #field, offsetof(type, field), sizeof(((type*)nullptr)->field) }

// The C++ side of every ABI struct. A new struct in mesh_abi.h must be added
// here: AllAbiStructsAreChecked fails otherwise.
std::map<std::string, Layout> cppLayouts() {
  return {
      {"mesh_svc_key",
       {sizeof(mesh_svc_key),
        {MEMBER(mesh_svc_key, addr), MEMBER(mesh_svc_key, port), MEMBER(mesh_svc_key, proto),
         MEMBER(mesh_svc_key, family)}}},
      {"mesh_svc",
       {sizeof(mesh_svc),
        {MEMBER(mesh_svc, svc_id), MEMBER(mesh_svc, slot_count), MEMBER(mesh_svc, maglev_size),
         MEMBER(mesh_svc, algo), MEMBER(mesh_svc, flags), MEMBER(mesh_svc, _pad),
         MEMBER(mesh_svc, max_conns), MEMBER(mesh_svc, max_conns_per_backend),
         MEMBER(mesh_svc, rate_per_sec), MEMBER(mesh_svc, rate_burst),
         MEMBER(mesh_svc, client_rate_per_sec), MEMBER(mesh_svc, client_rate_burst),
         MEMBER(mesh_svc, eject_consecutive), MEMBER(mesh_svc, eject_base_ms),
         MEMBER(mesh_svc, eject_max_ms), MEMBER(mesh_svc, eject_max_percent),
         MEMBER(mesh_svc, _pad2)}}},
      {"mesh_svc_state",
       {sizeof(mesh_svc_state),
        {MEMBER(mesh_svc_state, live_conns), MEMBER(mesh_svc_state, refused_service),
         MEMBER(mesh_svc_state, refused_backend), MEMBER(mesh_svc_state, rerouted),
         MEMBER(mesh_svc_state, refused_rate), MEMBER(mesh_svc_state, refused_client_rate),
         MEMBER(mesh_svc_state, refused_ejected), MEMBER(mesh_svc_state, ejected),
         MEMBER(mesh_svc_state, ejections), MEMBER(mesh_svc_state, ejections_skipped),
         MEMBER(mesh_svc_state, rate_tat_ns), MEMBER(mesh_svc_state, refused_authz)}}},
      {"mesh_slot_key",
       {sizeof(mesh_slot_key), {MEMBER(mesh_slot_key, svc_id), MEMBER(mesh_slot_key, slot)}}},
      {"mesh_slot",
       {sizeof(mesh_slot),
        {MEMBER(mesh_slot, backend_id), MEMBER(mesh_slot, weight),
         MEMBER(mesh_slot, alias_threshold), MEMBER(mesh_slot, alias_slot)}}},
      {"mesh_backend",
       {sizeof(mesh_backend),
        {MEMBER(mesh_backend, addr), MEMBER(mesh_backend, port), MEMBER(mesh_backend, proto),
         MEMBER(mesh_backend, family), MEMBER(mesh_backend, flags)}}},
      {"mesh_backend_state",
       {sizeof(mesh_backend_state),
        {MEMBER(mesh_backend_state, live_conns), MEMBER(mesh_backend_state, total_conns),
         MEMBER(mesh_backend_state, connect_failures),
         MEMBER(mesh_backend_state, consecutive_failures),
         MEMBER(mesh_backend_state, times_ejected), MEMBER(mesh_backend_state, ejected_until_ns),
         MEMBER(mesh_backend_state, ejected_svc_id), MEMBER(mesh_backend_state, srtt_ewma_us),
         MEMBER(mesh_backend_state, rtt_samples), MEMBER(mesh_backend_state, rto_events)}}},
      {"mesh_rate_client_key",
       {sizeof(mesh_rate_client_key),
        {MEMBER(mesh_rate_client_key, cgroup_id), MEMBER(mesh_rate_client_key, svc_id),
         MEMBER(mesh_rate_client_key, _pad)}}},
      {"mesh_rate_client", {sizeof(mesh_rate_client), {MEMBER(mesh_rate_client, tat_ns)}}},
      {"mesh_drain_key",
       {sizeof(mesh_drain_key),
        {MEMBER(mesh_drain_key, svc_id), MEMBER(mesh_drain_key, backend_id)}}},
      {"mesh_sock_state",
       {sizeof(mesh_sock_state),
        {MEMBER(mesh_sock_state, vip), MEMBER(mesh_sock_state, vip_port),
         MEMBER(mesh_sock_state, family), MEMBER(mesh_sock_state, flags),
         MEMBER(mesh_sock_state, svc_id), MEMBER(mesh_sock_state, backend_id)}}},
      {"mesh_udp_rev_key",
       {sizeof(mesh_udp_rev_key),
        {MEMBER(mesh_udp_rev_key, cookie), MEMBER(mesh_udp_rev_key, addr),
         MEMBER(mesh_udp_rev_key, port), MEMBER(mesh_udp_rev_key, family),
         MEMBER(mesh_udp_rev_key, _pad), MEMBER(mesh_udp_rev_key, _pad2)}}},
      {"mesh_udp_rev",
       {sizeof(mesh_udp_rev),
        {MEMBER(mesh_udp_rev, vip), MEMBER(mesh_udp_rev, vip_port), MEMBER(mesh_udp_rev, family),
         MEMBER(mesh_udp_rev, _pad)}}},
      {"mesh_config",
       {sizeof(mesh_config),
        {MEMBER(mesh_config, flags), MEMBER(mesh_config, redirect_port), MEMBER(mesh_config, _pad),
         MEMBER(mesh_config, redirect_ip4), MEMBER(mesh_config, redirect_ip6)}}},
      {"mesh_orig_dst_key",
       {sizeof(mesh_orig_dst_key),
        {MEMBER(mesh_orig_dst_key, addr), MEMBER(mesh_orig_dst_key, port),
         MEMBER(mesh_orig_dst_key, family), MEMBER(mesh_orig_dst_key, _pad)}}},
      {"mesh_orig_dst",
       {sizeof(mesh_orig_dst),
        {MEMBER(mesh_orig_dst, vip), MEMBER(mesh_orig_dst, vip_port), MEMBER(mesh_orig_dst, family),
         MEMBER(mesh_orig_dst, _pad), MEMBER(mesh_orig_dst, svc_id)}}},
      {"mesh_sock_key",
       {sizeof(mesh_sock_key),
        {MEMBER(mesh_sock_key, local), MEMBER(mesh_sock_key, remote),
         MEMBER(mesh_sock_key, local_port), MEMBER(mesh_sock_key, remote_port),
         MEMBER(mesh_sock_key, family), MEMBER(mesh_sock_key, _pad)}}},
      {"mesh_strict_key",
       {sizeof(mesh_strict_key),
        {MEMBER(mesh_strict_key, addr), MEMBER(mesh_strict_key, port),
         MEMBER(mesh_strict_key, family), MEMBER(mesh_strict_key, _pad)}}},
      {"mesh_authz_dst_key",
       {sizeof(mesh_authz_dst_key),
        {MEMBER(mesh_authz_dst_key, addr), MEMBER(mesh_authz_dst_key, family),
         MEMBER(mesh_authz_dst_key, _pad)}}},
      {"mesh_authz_dst",
       {sizeof(mesh_authz_dst),
        {MEMBER(mesh_authz_dst, flags), MEMBER(mesh_authz_dst, default_verdict),
         MEMBER(mesh_authz_dst, _pad)}}},
      {"mesh_authz_l4_key",
       {sizeof(mesh_authz_l4_key),
        {MEMBER(mesh_authz_l4_key, src_id), MEMBER(mesh_authz_l4_key, addr),
         MEMBER(mesh_authz_l4_key, port), MEMBER(mesh_authz_l4_key, family),
         MEMBER(mesh_authz_l4_key, _pad)}}},
      {"mesh_backend_forget_ctx",
       {sizeof(mesh_backend_forget_ctx), {MEMBER(mesh_backend_forget_ctx, backend_id)}}},
      {"mesh_backend_eject_ctx",
       {sizeof(mesh_backend_eject_ctx),
        {MEMBER(mesh_backend_eject_ctx, svc), MEMBER(mesh_backend_eject_ctx, addr),
         MEMBER(mesh_backend_eject_ctx, port), MEMBER(mesh_backend_eject_ctx, family),
         MEMBER(mesh_backend_eject_ctx, _pad), MEMBER(mesh_backend_eject_ctx, duration_ms)}}},
  };
}

// Structs of the BPF object that are not ABI (map definitions, BPF-only).
const std::set<std::string> kNotAbi = {"mesh_maglev_inner"};

class AbiBtfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    btf_ = btf__parse(MESH_BPF_OBJECT, nullptr);
    ASSERT_NE(btf_, nullptr) << "cannot read BTF from " << MESH_BPF_OBJECT
                             << " (build target mesh_skel_gen first)";
  }
  void TearDown() override { btf__free(btf_); }

  const btf_type* find(const std::string& name, int kind) {
    int id = btf__find_by_name_kind(btf_, name.c_str(), kind);
    return id > 0 ? btf__type_by_id(btf_, id) : nullptr;
  }

  btf* btf_ = nullptr;
};

TEST_F(AbiBtfTest, StructSizesAndOffsetsMatch) {
  for (const auto& [name, cpp] : cppLayouts()) {
    SCOPED_TRACE(name);
    const btf_type* t = find(name, BTF_KIND_STRUCT);
    ASSERT_NE(t, nullptr) << "struct " << name << " is not in the BPF object's BTF";
    EXPECT_EQ(t->size, cpp.size) << "sizeof(struct " << name << ") differs";
    ASSERT_EQ(btf_vlen(t), cpp.members.size()) << "member count of " << name << " differs";
    const btf_member* m = btf_members(t);
    for (size_t i = 0; i < cpp.members.size(); ++i) {
      std::string bname = btf__name_by_offset(btf_, m[i].name_off);
      EXPECT_EQ(bname, cpp.members[i].name) << "member " << i;
      EXPECT_EQ(btf_member_bitfield_size(t, i), 0u) << bname << " must not be a bitfield";
      EXPECT_EQ(btf_member_bit_offset(t, i), cpp.members[i].offset * 8) << "offset of " << bname;
      __s64 bsize = btf__resolve_size(btf_, m[i].type);
      EXPECT_EQ(bsize, static_cast<__s64>(cpp.members[i].size)) << "size of " << bname;
    }
  }
}

TEST_F(AbiBtfTest, AllAbiStructsAreChecked) {
  auto cpp = cppLayouts();
  int n = btf__type_cnt(btf_);
  for (int id = 1; id < n; ++id) {
    const btf_type* t = btf__type_by_id(btf_, id);
    if (!btf_is_struct(t)) continue;
    std::string name = btf__name_by_offset(btf_, t->name_off);
    if (name.rfind("mesh_", 0) != 0 || kNotAbi.count(name)) continue;
    EXPECT_TRUE(cpp.count(name)) << "struct " << name
                                 << " is in the BPF object but not checked by this test";
  }
}

TEST_F(AbiBtfTest, EnumValuesMatch) {
  const btf_type* t = find("mesh_stat", BTF_KIND_ENUM);
  ASSERT_NE(t, nullptr);
  std::map<std::string, long> values;
  const struct btf_enum* e = btf_enum(t);
  for (int i = 0; i < btf_vlen(t); ++i) values[btf__name_by_offset(btf_, e[i].name_off)] = e[i].val;
  EXPECT_EQ(values["MESH_STAT_CONNECT_REWRITTEN"], MESH_STAT_CONNECT_REWRITTEN);
  EXPECT_EQ(values["MESH_STAT_NO_BACKEND"], MESH_STAT_NO_BACKEND);
  EXPECT_EQ(values["MESH_STAT_SOCK_CLOSED"], MESH_STAT_SOCK_CLOSED);
  EXPECT_EQ(values["MESH_STAT_MAGLEV_MISSING"], MESH_STAT_MAGLEV_MISSING);
  EXPECT_EQ(values["MESH_STAT_LIMIT_SERVICE"], MESH_STAT_LIMIT_SERVICE);
  EXPECT_EQ(values["MESH_STAT_LIMIT_BACKEND"], MESH_STAT_LIMIT_BACKEND);
  EXPECT_EQ(values["MESH_STAT_LIMIT_REROUTED"], MESH_STAT_LIMIT_REROUTED);
  EXPECT_EQ(values["MESH_STAT_RELEASED_AT_CLOSE"], MESH_STAT_RELEASED_AT_CLOSE);
  EXPECT_EQ(values["MESH_STAT_L7_REDIRECTED"], MESH_STAT_L7_REDIRECTED);
  EXPECT_EQ(values["MESH_STAT_L7_NO_TARGET"], MESH_STAT_L7_NO_TARGET);
  EXPECT_EQ(values["MESH_STAT_ORIG_DST_RECORDED"], MESH_STAT_ORIG_DST_RECORDED);
  EXPECT_EQ(values["MESH_STAT_ORIG_DST_FAILED"], MESH_STAT_ORIG_DST_FAILED);
  EXPECT_EQ(values["MESH_STAT_AUTHZ_DENIED"], MESH_STAT_AUTHZ_DENIED);
  EXPECT_EQ(values["MESH_STAT_AUTHZ_SKIPPED"], MESH_STAT_AUTHZ_SKIPPED);
  EXPECT_EQ(values["MESH_STAT_STRICT_DROPPED"], MESH_STAT_STRICT_DROPPED);
  EXPECT_EQ(values["MESH_STAT_STRICT_UNPARSED"], MESH_STAT_STRICT_UNPARSED);
  EXPECT_EQ(values["MESH_STAT_STRICT_FAST_PASS"], MESH_STAT_STRICT_FAST_PASS);
  EXPECT_EQ(values["MESH_STAT_STRICT_PASS_FAILED"], MESH_STAT_STRICT_PASS_FAILED);
  EXPECT_EQ(values["MESH_STAT_MAX"], MESH_STAT_MAX);
  EXPECT_EQ(values.size(), static_cast<size_t>(MESH_STAT_MAX) + 1);
}

}  // namespace
