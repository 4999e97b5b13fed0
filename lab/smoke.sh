#!/usr/bin/env bash
# Lab smoke test (run by scripts/test.sh, as root): builds the 2-node x 2-pod lab with one
# meshd per node, applies lab/examples, and checks from pod n1-p1 that
#   - 1000 HTTP connections to the web VIP 10.96.0.10:80 all succeed and reach all four
#     backends, with shares matching the weights in lab/examples/web.yaml;
#   - the application only ever sees the VIP (getpeername, UDP reply source);
#   - UDP to the dns-like VIP and TCP to the echo VIP work;
#   - `meshlab down` leaves no namespace, cgroup, pin or process behind.
# The lab is torn down on every exit path (trap). Prints one PASS/FAIL line per check and
# exits non-zero if any failed.
#
# Tolerance for the weights: each connection picks backend i independently with
# probability p_i, so its observed share over n connections has standard deviation
# sqrt(p_i (1 - p_i) / n). With n = 1000: p = 0.375 -> 1.53 points, p = 0.125 -> 1.05
# points, and the node-level split (p = 0.25/0.75) -> 1.37 points. A tolerance of
# +-5 percentage points is >= 3.2 standard deviations for every backend (a correct
# balancer fails it with probability ~0.1% per backend, ~0.3% per run), while a balancer
# that ignored the weights (25% each) is 12.5 points off on the node-2 pods and fails.
set -uo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LAB_DIR/.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
MESHLAB=$LAB_DIR/meshlab
CLIENT=${MESH_CLIENT_BIN:-$MESHD_BUILD_DIR/tools/mesh-client}
WEB_VIP=10.96.0.10:80
ECHO_VIP=10.96.0.11:9000
DNS_VIP=10.96.0.12:9001
CONNECTIONS=1000
TOLERANCE_PP=5

passed=0
failed=0
pass() {
  echo "PASS: $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $*"
  failed=$((failed + 1))
}
finish() {
  local rc=$?
  trap - EXIT INT TERM
  MESHLAB_QUIET=1 "$MESHLAB" down >/dev/null 2>&1 || true
  echo "smoke: $passed passed, $failed failed"
  if ((failed > 0 || rc != 0)); then exit 1; fi
  exit 0
}

if [[ $(id -u) != 0 ]]; then
  echo "FAIL: lab smoke test must run as root (namespaces, cgroups, BPF): sudo $0" >&2
  exit 1
fi
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

indent() { printf "%s\n" "$1" | sed "s/^/    /"; }
in_pod() { "$MESHLAB" exec n1-p1 -- "$@"; }

# Expected share (percent) per backend from the weights in web.yaml, keyed by mesh-echo
# name: pod address 10.244.N.(10+M) is pod nN-pM (lab/meshlab's addressing).
declare -A expected=()
while read -r name pct; do expected[$name]=$pct; done < <(
  awk '/address: *10\.244\.[0-9]+\.[0-9]+, *weight:/ {
         match($0, /10\.244\.[0-9]+\.[0-9]+/); split(substr($0, RSTART, RLENGTH), o, ".")
         match($0, /weight: *[0-9]+/); w = substr($0, RSTART + 7, RLENGTH - 7) + 0
         name = "n" o[3] "-p" (o[4] - 10); weight[name] = w; total += w }
       END { for (n in weight) printf "%s %.2f\n", n, 100 * weight[n] / total }' \
    "$LAB_DIR/examples/web.yaml")
if ((${#expected[@]} != 4)); then
  fail "read 4 weights from lab/examples/web.yaml (got ${#expected[@]})"
  exit 1
fi

# 1. Lab up (2 nodes x 2 pods, meshd on each node) and the examples applied.
if "$MESHLAB" up --nodes 2 --pods 2; then
  pass "meshlab up: 2 nodes, 4 pods, meshd ready on both nodes"
else
  fail "meshlab up"
  exit 1
fi
if "$MESHLAB" apply "$LAB_DIR/examples"; then
  pass "meshctl apply lab/examples on both nodes"
else
  fail "meshctl apply lab/examples"
  exit 1
fi

# The apply returns once meshd accepted it; give the reconciler a moment to fill the maps.
ready=0
for ((i = 0; i < 50; i++)); do
  if in_pod "$CLIENT" http "$WEB_VIP" -n 1 -q --timeout-ms 500 >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
((ready)) || fail "web VIP $WEB_VIP answers within 10 s of the apply"

# 2. 1000 connections to the web VIP: every one succeeds, sees the VIP, reaches all four
#    backends in the configured proportions.
out=$(in_pod "$CLIENT" http "$WEB_VIP" -n "$CONNECTIONS" 2>&1)
rc=$?
indent "$out"
summary=$(echo "$out" | grep -E "^http $WEB_VIP: total")
if ((rc == 0)) && [[ $summary == *"ok $CONNECTIONS, errors 0, peer-mismatches 0"* ]]; then
  pass "$CONNECTIONS/$CONNECTIONS connections to web $WEB_VIP succeeded, getpeername = VIP"
else
  fail "connections to web $WEB_VIP: ${summary:-no summary (exit $rc)}"
fi
declare -A got=()
while read -r name count; do got[$name]=$count; done < <(echo "$out" | awk '$1 ~ /^n[0-9]+-p[0-9]+$/ { print $1, $2 }')
if ((${#got[@]} == 4)); then
  pass "all 4 backends reached (both nodes): ${!got[*]}"
else
  fail "all 4 backends reached: got ${#got[@]} (${!got[*]})"
fi
for name in $(printf '%s\n' "${!expected[@]}" | sort); do
  count=${got[$name]:-0}
  verdict=$(awk -v c="$count" -v n="$CONNECTIONS" -v e="${expected[$name]}" -v t="$TOLERANCE_PP" \
    'BEGIN { s = 100 * c / n; d = s - e; if (d < 0) d = -d; printf "%s %.1f", (d <= t ? "ok" : "off"), s }')
  if [[ $verdict == ok* ]]; then
    pass "backend $name share ${verdict#ok }% within +-$TOLERANCE_PP of ${expected[$name]}%"
  else
    fail "backend $name share ${verdict#off }% not within +-$TOLERANCE_PP of ${expected[$name]}%"
  fi
done
# Node-level split: the expected node-1 share is the sum of its pods' expected shares.
verdict=$(awk -v c="$((${got[n1-p1]:-0} + ${got[n1-p2]:-0}))" -v n="$CONNECTIONS" \
  -v e="$(awk -v a="${expected[n1-p1]:-0}" -v b="${expected[n1-p2]:-0}" 'BEGIN { print a + b }')" \
  -v t="$TOLERANCE_PP" \
  'BEGIN { s = 100 * c / n; d = s - e; if (d < 0) d = -d
           printf "%s node 1 got %.1f%%, node 2 %.1f%% (expected %.1f/%.1f +-%d)", (d <= t ? "ok" : "off"), s, 100 - s, e, 100 - e, t }')
if [[ $verdict == ok* ]]; then
  pass "node split:${verdict#ok}"
else
  fail "node split:${verdict#off}"
fi

# 3. UDP to the dns-like VIP: replies come back from the VIP (recvmsg hook) on unconnected
#    sockets, getpeername is the VIP on connected ones, and Random reaches all backends
#    (P(some backend missed in 200 picks) = 4 * 0.75^200 < 1e-24).
out=$(in_pod "$CLIENT" udp "$DNS_VIP" -n 200 2>&1)
rc=$?
n_backends=$(echo "$out" | awk '$1 ~ /^n[0-9]+-p[0-9]+$/' | wc -l)
if ((rc == 0)) && ((n_backends == 4)); then
  pass "200 UDP queries to dns-like $DNS_VIP answered from the VIP by all 4 backends"
else
  indent "$out"
  fail "UDP to dns-like $DNS_VIP (exit $rc, $n_backends backends)"
fi
if out=$(in_pod "$CLIENT" udp "$DNS_VIP" -n 50 --connect 2>&1); then
  pass "50 connected UDP sockets to $DNS_VIP answered, getpeername = VIP"
else
  indent "$out"
  fail "connected UDP to $DNS_VIP"
fi

# 4. TCP to the echo VIP (least connections): every connection gets a backend's name.
if out=$(in_pod "$CLIENT" tcp "$ECHO_VIP" -n 100 2>&1); then
  pass "100 TCP connections to echo $ECHO_VIP succeeded, getpeername = VIP"
else
  indent "$out"
  fail "TCP to echo $ECHO_VIP"
fi

# 5. Teardown leaves nothing behind.
lab_pids=$(cat /run/meshd-lab/*.pid 2>/dev/null)
MESHLAB_QUIET=1 "$MESHLAB" down
leftovers=$(
  for p in $lab_pids; do
    [[ -d /proc/$p ]] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && echo "process $p"
  done
  ip netns list | awk '$1 ~ /^mlab-/ { print "netns " $1 }'
  cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  [[ -d $cg2/meshd-lab ]] && echo "cgroup $cg2/meshd-lab"
  for d in /sys/fs/bpf/meshd/lab-*; do [[ -e $d ]] && echo "pins $d"; done
  [[ -e /run/meshd-lab ]] && echo "dir /run/meshd-lab"
)
if [[ -z $leftovers ]]; then
  pass "meshlab down removed every namespace, cgroup, pin and process"
else
  fail "meshlab down left: $(echo "$leftovers" | tr '\n' ' ')"
fi
