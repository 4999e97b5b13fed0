#!/usr/bin/env bash
# THE first command of the README: sets up the machine, builds meshd, brings up a simulated
# two-node cluster (lab/meshlab), applies lab/examples and shows connections to a service VIP
# balanced in the kernel across pods on both nodes. Tears the lab down at the end unless
# --keep is given (then: lab/meshlab status, lab/meshlab down).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
MESHLAB=$REPO/lab/meshlab
CLIENT=$MESHD_BUILD_DIR/tools/mesh-client
keep=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    *)
      echo "usage: $0 [--keep]" >&2
      exit 2
      ;;
  esac
done
if [[ $(id -u) != 0 ]]; then
  echo "demo.sh: must run as root (packages, network namespaces, cgroups, BPF): sudo $0" >&2
  exit 1
fi

banner() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {
  printf '$ %s\n' "$*"
  "$@"
}

banner "setup and build (first run: a few minutes)"
bash "$REPO/scripts/setup.sh"
build_log=${TMPDIR:-/tmp}/meshd-demo-build.log
if ! bash "$REPO/scripts/build.sh" >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  echo "demo.sh: build failed; the end of its log is above, all of it in $build_log" >&2
  exit 1
fi
echo "built into $MESHD_BUILD_DIR"

holder=
cleanup() {
  local rc=$?
  [[ -n $holder ]] && kill "$holder" 2>/dev/null
  if ((keep == 0 || rc != 0)); then "$MESHLAB" down >/dev/null 2>&1 || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner "a 2-node cluster on this machine: one network namespace per node and per pod"
"$MESHLAB" up --nodes 2 --pods 2
show "$MESHLAB" status

banner "services from lab/examples (Service + EndpointSlice + TrafficPolicy)"
"$MESHLAB" apply "$REPO/lab/examples"
show "$MESHLAB" meshctl n1 get services

banner "1000 connections from pod n1-p1 to the web VIP 10.96.0.10:80 (weights 1:1:3:3)"
# The apply is accepted before the reconciler has filled the maps: wait for the VIP.
for ((i = 0; i < 50; i++)); do
  "$MESHLAB" exec n1-p1 -- "$CLIENT" http 10.96.0.10:80 -n 1 -q --timeout-ms 500 >/dev/null 2>&1 && break
  sleep 0.2
done
show "$MESHLAB" exec n1-p1 -- "$CLIENT" http 10.96.0.10:80 --count 1000
echo "(the client only ever saw 10.96.0.10: the kernel rewrote each connect() to a pod address)"
show "$MESHLAB" meshctl n1 get backends web

banner "least connections: pod n1-p1 holds 20 connections to the echo VIP 10.96.0.11:9000"
"$MESHLAB" exec n1-p1 -- "$CLIENT" tcp 10.96.0.11:9000 --count 20 --hold --hold-seconds 30 &
holder=$!
sleep 1
show "$MESHLAB" meshctl n1 get backends echo
kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
holder=

if ((keep)); then
  banner "the lab keeps running: try"
  echo "  $MESHLAB status"
  echo "  $MESHLAB exec n2-p1 -- $CLIENT udp 10.96.0.12:9001 --count 100"
  echo "  $MESHLAB meshctl n2 bpf maps"
  echo "  $MESHLAB down"
else
  banner "tearing the lab down (keep it with --keep)"
fi
