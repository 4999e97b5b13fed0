#!/usr/bin/env bash
# Root test of lab/meshlab's topology, without meshd (see tests/root/lab.cmake).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
export MESHLAB_QUIET=1
MESHLAB=$REPO/lab/meshlab
CLIENT=$MESHD_BUILD_DIR/tools/mesh-client

if [[ $(id -u) != 0 ]]; then
  echo "FAIL: needs root (network namespaces, cgroups)"
  exit 1
fi
failed=0
check() { # DESCRIPTION CMD...: PASS when CMD succeeds
  local what=$1
  shift
  if "$@"; then echo "PASS: $what"; else
    echo "FAIL: $what"
    failed=$((failed + 1))
  fi
}
trap '"$MESHLAB" down >/dev/null 2>&1' EXIT

# The host's addresses and routes: the lab must not change them.
host_before=$(ip -br addr; ip route; ip -6 route)

check "meshlab up --no-meshd (2 nodes x 2 pods)" "$MESHLAB" up --no-meshd --nodes 2 --pods 2
check "7 namespaces: hub, 2 nodes, 4 pods" \
  test "$(ip netns list | grep -c '^mlab-')" -eq 7
check "host root namespace unchanged" test "$host_before" == "$(ip -br addr; ip route; ip -6 route)"

# expect_name POD PROTO ADDR:PORT NAME: the probe from POD is answered by NAME only.
expect_name() {
  local out
  out=$("$MESHLAB" exec "$1" -- "$CLIENT" "$2" "$3" -n 5 -o json 2>&1) || {
    echo "$out"
    return 1
  }
  grep -q "\"$4\": 5" <<<"$out" && grep -q '"peer_mismatches": 0' <<<"$out"
}
check "same node, TCP: n1-p1 -> n1-p2" expect_name n1-p1 tcp 10.244.1.12:9000 n1-p2
check "across nodes, TCP: n1-p1 -> n2-p1" expect_name n1-p1 tcp 10.244.2.11:9000 n2-p1
check "across nodes, HTTP: n2-p2 -> n1-p1" expect_name n2-p2 http 10.244.1.11:8080 n1-p1
check "across nodes, UDP: n1-p2 -> n2-p2" expect_name n1-p2 udp 10.244.2.12:9001 n2-p2

vip_unreachable() {
  local out
  out=$("$MESHLAB" exec n1-p1 -- "$CLIENT" tcp 10.96.0.10:80 -n 1 --timeout-ms 1000 2>&1)
  [[ $? == 1 && $out == *"No route to host"* ]] || {
    echo "$out"
    return 1
  }
}
check "VIP range unreachable from pods without meshd (EHOSTUNREACH at once)" vip_unreachable

cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
check "meshlab exec runs in the pod's cgroup" \
  test "$("$MESHLAB" exec n2-p1 -- cat /proc/self/cgroup | awk -F: '$1 == 0 { print $3 }')" == "/meshd-lab/n2/p1"
check "meshlab exec runs in the pod's netns" \
  bash -c "'$MESHLAB' exec n2-p1 -- ip -br addr show dev eth0 | grep -q 10.244.2.11/24"
check "no route out of the lab from a pod" \
  bash -c "! '$MESHLAB' exec n1-p1 -- '$CLIENT' tcp 192.0.2.1:80 -n 1 --timeout-ms 300 >/dev/null 2>&1"

pids=$(cat /run/meshd-lab/*.pid | tr '\n' ' ')
check "up again replaces the running lab" "$MESHLAB" up --no-meshd --nodes 1 --pods 1
check "old workloads stopped" bash -c "for p in $pids; do [[ -d /proc/\$p ]] && ! grep -q '^State:.*Z' /proc/\$p/status && exit 1; done; exit 0"
check "1 node x 1 pod now: 3 namespaces" test "$(ip netns list | grep -c '^mlab-')" -eq 3

no_leftovers() {
  local left
  left=$(
    ip netns list | grep '^mlab-'
    [[ -d $cg2/meshd-lab ]] && echo "$cg2/meshd-lab"
    [[ -e /run/meshd-lab ]] && echo /run/meshd-lab
    ls -d /sys/fs/bpf/meshd/lab-* 2>/dev/null
  )
  [[ -z $left ]] || {
    echo "left behind: $left"
    return 1
  }
}
check "meshlab down" "$MESHLAB" down
check "down leaves no namespace, cgroup, run dir or pins" no_leftovers

# A killed `up` (SIGKILL: no trap runs) must still be cleaned up by `down`.
"$MESHLAB" up --no-meshd --nodes 2 --pods 3 &
up_pid=$!
sleep 0.15
kill -KILL "$up_pid" 2>/dev/null
wait "$up_pid" 2>/dev/null
check "down after a SIGKILLed up" "$MESHLAB" down
check "nothing left after the killed up" no_leftovers
check "host root namespace unchanged at the end" test "$host_before" == "$(ip -br addr; ip route; ip -6 route)"

echo "lab_topology: $failed failed"
((failed == 0))
