#!/usr/bin/env bash
# Root end-to-end test of the mTLS tunnel on the lab (see tests/root/lab.cmake): meshd-ca in
# node n1's namespace, each meshd with its node credential (MESHLAB_MTLS=placement file), resources
# tests/root/lab/mtls.yaml (placement: mtls-ca-workloads.yaml). Checks:
#   1. the node agents get the workloads' certificates (meshctl status: mtls.identitiesReady);
#   2. n1-p1 (Workload client) -> web-mtls (its endpoint n2-p1 on node n2) answers 200 through
#      the tunnel: tunnel streams counted on both nodes, and on the node link (n2's eth0)
#      only TLS on :15008 — no plaintext marker, no packet to the pod's :8080; an L4 service
#      (web-l4, plain TCP) goes through the tunnel too (no packet to the pod's :9000);
#   3. n1-p2 (no Workload, no identity) gets through in plaintext while PERMISSIVE;
#   4. STRICT (PeerAuthentication on app: web): n1-p2 gets 503 "requires mTLS" (flag MTLS),
#      plaintext straight to the pod's port is dropped by the kernel at its veth (counted),
#      n1-p1 still 200 through the tunnel (meshd's marked connect passes);
#   5. the tunnel server's authorization: an AuthorizationPolicy applied on n2 only (n1 does
#      not know it, so it forwards) refuses the stream: n1-p1 gets no 200 and n2 counts it;
#   6. attacks on n2's :15008, one each: refused, counted by reason, logged once;
#   7. testssl.sh against n2's :15008 (TLS 1.3 only);
#   8. certificate rotation under constant load: zero failed requests.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
export MESHLAB_QUIET=1
# The lab makes its PKI (node credentials lab-n1, lab-n2) and starts meshd-ca with this
# placement.
export MESHLAB_MTLS=$REPO/tests/root/lab/mtls-ca-workloads.yaml
# One-minute certificates: with the CA's 5-minute backdating they are past half their life at
# once, so each node agent renews every 30 s (its minimum interval): section 8 sees a rotation.
export MESHLAB_CA_ARGS="--workload-ttl 1m"
MESHLAB=$REPO/lab/meshlab
YAML=$REPO/tests/root/lab/mtls.yaml
VIP=10.96.0.40

# shellcheck source=tests/root/lab/lib.sh
source "$REPO/tests/root/lab/lib.sh"
code_of() { # POD [CURL ARGS...]: the HTTP status of GET http://VIP/
  local pod=$1
  shift
  in_pod "$pod" -- curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "http://$VIP/" 2>/dev/null
}
# A field of `meshctl status` (JSON) of a node, found at any depth ("" when absent).
status_field() { # NODE FIELD
  "$MESHLAB" meshctl "$1" -o json status 2>/dev/null | python3 -c '
import json, sys
def find(v, k):
    if isinstance(v, dict):
        if k in v: return v[k]
        for x in v.values():
            r = find(x, k)
            if r is not None: return r
    return None
r = find(json.load(sys.stdin), sys.argv[1])
print("" if r is None else r)' "$2"
}
metric_sum() { # NODE REGEX: the sum of the samples of /metrics lines matching REGEX
  in_pod "$1" -- curl -s --max-time 5 http://127.0.0.1:15020/metrics |
    grep -E "$2" | awk '{s += $NF} END {print s + 0}'
}
wait_for() { # SECONDS CMD...: until CMD succeeds (polling), false on timeout
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

if ! "$MESHLAB" up --nodes 2 --pods 2; then
  fail "meshlab up (MESHLAB_MTLS=$MESHLAB_MTLS)"
  tail -n 20 /run/meshd-lab/ca.log 2>/dev/null
  echo "0 passed, 1 failed"
  exit 1
fi
check "meshctl apply mtls.yaml on both nodes" "$MESHLAB" apply "$YAML"

# 1. Certificates from meshd-ca.
ready() { [[ $(status_field n1 identitiesReady) -ge 1 && $(status_field n2 identitiesReady) -ge 1 ]]; }
if wait_for 30 ready; then pass "both node agents got their workload's certificate"; else
  fail "node agents' certificates (n1: $(status_field n1 identitiesReady), n2: $(status_field n2 identitiesReady) ready)"
  tail -n 20 /run/meshd-lab/n1.log /run/meshd-lab/ca.log
fi
check "n1 status shows the tunnel on :15008" grep -q ':15008' <<<"$(status_field n1 tunnelListen)"

# 2. Through the tunnel, and only TLS on the node link.
ok200() { [[ $(code_of n1-p1) == 200 ]]; }
check "n1-p1 -> web-mtls answers 200 within 10 s of the apply" wait_for 10 ok200
in_pod n2 -- tcpdump -i eth0 -U -s 0 -w "$TMP/link.pcap" 'tcp and host 10.99.0.1' >/dev/null 2>&1 &
bg_pids+=($!)
sleep 1 # tcpdump attaches (no assertion depends on timing: the checks below read the file)
body=$(in_pod n1-p1 -- curl -s --max-time 5 -H 'x-marker: plaintext-canary-7f3a' "http://$VIP/headers")
check "the upstream got the request (and the marker)" grep -qi 'plaintext-canary-7f3a' <<<"$body"
for _ in 1 2 3 4 5; do code_of n1-p1 >/dev/null; done
# L4 (web-l4: no route, plain TCP): with mTLS on, its connections go through meshd's opaque
# relay and the tunnel too.
streams_before_l4=$(metric_sum n1 '^meshd_tunnel_streams_total\{side="client",result="opened"\}')
l4_out=$(in_pod n1-p1 -- "$MESHD_BUILD_DIR/tools/mesh-client" tcp 10.96.0.41:9000 -n 5 2>&1 | tail -n 1)
streams_after_l4=$(metric_sum n1 '^meshd_tunnel_streams_total\{side="client",result="opened"\}')
sleep 1
kill "${bg_pids[-1]}" 2>/dev/null
wait "${bg_pids[-1]}" 2>/dev/null
tls_pkts=$(tcpdump -r "$TMP/link.pcap" 'tcp port 15008' 2>/dev/null | wc -l)
plain_pkts=$(tcpdump -r "$TMP/link.pcap" 'tcp port 8080' 2>/dev/null | wc -l)
check "node link: packets on :15008 ($tls_pkts)" test "$tls_pkts" -gt 0
check "node link: no packet to the pod's :8080 ($plain_pkts)" test "$plain_pkts" -eq 0
check "L4 service through the tunnel: $l4_out" grep -q "total 5, ok 5" <<<"$l4_out"
check "L4: 5 more tunnel streams on n1 ($streams_before_l4 -> $streams_after_l4)" \
  test "$((streams_after_l4 - streams_before_l4))" -ge 5
plain_l4=$(tcpdump -r "$TMP/link.pcap" 'tcp port 9000' 2>/dev/null | wc -l)
check "node link: no packet to the pod's :9000 ($plain_l4)" test "$plain_l4" -eq 0
check "node link: the marker never appears in clear" bash -c "! grep -aq plaintext-canary-7f3a '$TMP/link.pcap'"
out_streams=$(metric_sum n1 '^meshd_tunnel_streams_total\{side="client",result="opened"\}')
in_streams=$(metric_sum n2 '^meshd_tunnel_streams_total\{side="server",result="opened"\}')
check "n1 opened tunnel streams ($out_streams)" test "$out_streams" -ge 1
check "n2 accepted tunnel streams ($in_streams)" test "$in_streams" -ge 1

# 3. A pod without identity: plaintext while PERMISSIVE.
check "n1-p2 (no Workload) -> 200 in plaintext while PERMISSIVE" test "$(code_of n1-p2)" == 200

# 4. STRICT.
cat >"$TMP/strict.yaml" <<'EOF'
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: web-strict, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
EOF
check "apply STRICT" "$MESHLAB" apply "$TMP/strict.yaml"
strict503() { [[ $(code_of n1-p2) == 503 ]]; }
check "n1-p2 (no identity) -> 503 under STRICT" wait_for 10 strict503
# The kernel: plaintext straight to the pod's STRICT port (not through meshd) is dropped at
# n2-p1's veth and counted; meshd's tunnel connects (marked) still reach it.
direct=$(in_pod n1-p2 -- curl -s -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 3 \
  http://10.244.2.11:8080/ 2>/dev/null)
check "n1-p2 -> n2-p1:8080 directly (plaintext) is dropped under STRICT (got '$direct')" test "$direct" == 000
check "n2 counts the dropped SYNs (meshd_strict_dropped_syns_total)" \
  test "$(metric_sum n2 '^meshd_strict_dropped_syns_total')" -ge 1
check "the 503 says mTLS is required" grep -q 'requires mTLS' <<<"$(in_pod n1-p2 -- curl -s --max-time 5 "http://$VIP/")"
check "n1-p1 still 200 (through the tunnel) under STRICT" test "$(code_of n1-p1)" == 200
check "n1 counts the STRICT refusals" test "$(metric_sum n1 '^meshd_mtls_refused_total')" -ge 1

# 5. The tunnel server's authorization (the policy is applied on n2 only).
cat >"$TMP/deny.yaml" <<'EOF'
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-only-others, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/someone-else"]}}]
EOF
check "apply the AuthorizationPolicy on n2 only" "$MESHLAB" meshctl n2 apply -f "$TMP/deny.yaml"
denied() { [[ $(code_of n1-p1) != 200 ]]; }
check "n1-p1 refused by n2's tunnel authorization (got $(code_of n1-p1))" wait_for 10 denied
check "n2 counts the denial (meshd_authz_denied_total)" \
  test "$(metric_sum n2 '^meshd_authz_denied_total')" -ge 1
check "n2 refused tunnel streams" \
  test "$(metric_sum n2 '^meshd_tunnel_streams_total\{side="server",result="refused"\}')" -ge 1
check "delete the policy on n2" "$MESHLAB" meshctl n2 delete AuthorizationPolicy web-only-others
check "n1-p1 -> 200 again" wait_for 10 ok200

# 6. Attacks on n2's :15008 from node n1, with the lab PKI's bad certificates: each handshake
# is refused, counted by reason (twice for two tries), and logged once for the address.
PKI=/run/meshd-lab/pki
attack() { # NAME REASON OPENSSL-S_CLIENT-ARGS...
  local name=$1 reason=$2
  shift 2
  local series="^meshd_tunnel_handshake_failures_total\\{side=\"server\",reason=\"$reason\"\\}"
  local before after logged
  before=$(metric_sum n2 "$series")
  for _ in 1 2; do
    in_pod n1 -- timeout 5 openssl s_client -connect 10.99.0.2:15008 -alpn h2 -quiet "$@" \
      </dev/null >/dev/null 2>&1
  done
  after=$(metric_sum n2 "$series")
  check "attack: $name -> refused as $reason, counted ($before -> $after)" test "$((after - before))" -ge 2
  logged=$(grep -c "inbound TLS handshake with 10.99.0.1:[0-9]* refused: $reason " /run/meshd-lab/n2.log)
  check "attack: $name -> logged once for the address ($logged line)" test "$logged" -eq 1
}
leaf() { echo -cert "$PKI/$1.crt" -key "$PKI/$1.key" -cert_chain "$PKI/intermediate.crt"; }
# shellcheck disable=SC2046 # leaf prints several arguments
{
  attack "certificate from another CA" untrusted -cert "$PKI/other-ca.crt" -key "$PKI/other-ca.key"
  attack "expired certificate" expired $(leaf expired)
  attack "not-yet-valid certificate" not_yet_valid $(leaf not-yet-valid)
  attack "wrong trust domain" verifier_refused $(leaf wrong-td)
  attack "no client certificate" no_peer_certificate -tls1_3
  attack "TLS 1.2" protocol_version -tls1_2 $(leaf client)
  attack "a weak TLS 1.2 cipher (CBC, no forward secrecy)" protocol_version -tls1_2 \
    -cipher "AES128-SHA:@SECLEVEL=0" $(leaf client)
  attack "a TLS 1.3 suite outside meshd's list" no_shared_cipher -tls1_3 \
    -ciphersuites TLS_AES_128_CCM_8_SHA256 $(leaf client)
}
# No SPIFFE ID: the same reason as the wrong trust domain (the verifier), already logged once.
before=$(metric_sum n2 '^meshd_tunnel_handshake_failures_total\{side="server",reason="verifier_refused"\}')
in_pod n1 -- timeout 5 openssl s_client -connect 10.99.0.2:15008 -alpn h2 -quiet $(leaf no-spiffe) \
  </dev/null >/dev/null 2>&1
after=$(metric_sum n2 '^meshd_tunnel_handshake_failures_total\{side="server",reason="verifier_refused"\}')
check "attack: no SPIFFE ID -> refused by the verifier, counted ($before -> $after)" test "$after" -gt "$before"
check "n1-p1 -> 200 after the attacks" ok200

# 7. testssl.sh against the tunnel listener (setup.sh installs it; missing = failure).
check "testssl.sh: n2's :15008 offers TLS 1.3 only, no weak cipher" \
  in_pod n1 -- python3 "$REPO/tests/tls/testssl_check.py" 10.99.0.2:15008

# 8. Rotation under constant load: requests from n1-p1 (each a new connection, so new tunnel
# streams, and new TLS connections once the pooled one idles out) while n1's agent renews the
# client's certificate; not one may fail.
issued0=$(status_field n1 certificatesIssued)
total=0 bad=0
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  c=$(code_of n1-p1)
  total=$((total + 1))
  [[ $c == 200 ]] || bad=$((bad + 1))
  if (($(status_field n1 certificatesIssued) > issued0)); then
    for _ in $(seq 20); do # and on past the rotation
      c=$(code_of n1-p1)
      total=$((total + 1))
      [[ $c == 200 ]] || bad=$((bad + 1))
    done
    break
  fi
done
issued1=$(status_field n1 certificatesIssued)
check "rotation: n1's agent renewed the client's certificate under load (issued $issued0 -> $issued1)" \
  test "$issued1" -gt "$issued0"
check "rotation: $total requests, $bad failed" test "$bad" -eq 0 -a "$total" -ge 20
check "rotation: n1 logged the renewal" grep -q "renewed, valid until" /run/meshd-lab/n1.log

echo "$passed passed, $failed failed"
((failed == 0))
