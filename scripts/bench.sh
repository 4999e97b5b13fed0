#!/usr/bin/env bash
# THE benchmark command (docs/benchmarks/README.md): set-up, build, then every variant x
# workload on the lab (bench/suite/run.py), and a report: docs/benchmarks/suite.md plus
# docs/benchmarks/suite/*.png. The lab is torn down on exit, Ctrl-C included.
#
#   sudo ./scripts/bench.sh [--quick] [--only VARIANT,...] [--workloads W,...]
#                           [--reps R] [--duration S] [--out DIR]
#
# --quick: 1 rep x 1 s, every variant and workload once (cross-node only for the latency
# workload); writes to $MESHD_BUILD_DIR/bench-quick/ unless --out is given, never docs/.
# Environment: MESHD_BUILD_DIR (default <repo>/build); MESHD_BENCH_SKIP_BUILD=1 skips
# setup and build (the caller already did both, as scripts/test.sh does).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
PY=/usr/bin/python3 # Debian's, which has python3-matplotlib and python3-grpcio

if [[ $(id -u) != 0 ]]; then
  echo "bench.sh: must run as root (the lab creates namespaces, cgroups, iptables rules and loads BPF): sudo $0 $*" >&2
  exit 1
fi

quick=0
out=
args=()
while (($#)); do
  case $1 in
    --quick) quick=1; args+=(--quick); shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --only | --workloads | --reps | --duration) args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [[ -z $out ]]; then
  if ((quick)); then out=$MESHD_BUILD_DIR/bench-quick; else out=$REPO/docs/benchmarks; fi
fi

if [[ ${MESHD_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  bash "$REPO/scripts/setup.sh"
  bash "$REPO/scripts/build.sh"
fi

# run.py owns its labs (lab/meshlab with MESHLAB_ID=mbench, mbenchm and mbenchs: named apart from the default
# lab and each other): it brings them up and tears them down, also on
# SIGINT/SIGTERM. This trap is the second line: whatever happens to run.py, no lab is left.
cleanup() {
  local id
  for id in mbench mbenchm mbenchs; do # bench/suite/lab.py LAB_IDS
    MESHLAB_ID=$id MESHLAB_QUIET=1 bash "$REPO/lab/meshlab" down >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$PY" "$REPO/bench/suite/run.py" --build "$MESHD_BUILD_DIR" --out "$out" "${args[@]+"${args[@]}"}"
