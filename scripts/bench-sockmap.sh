#!/usr/bin/env bash
# bench-sockmap.sh: pod<->pod on one node, side by side, interleaved over rounds:
#   direct      client dials the server pod's IP; a lab without meshd (no program on the path)
#   vip         client dials a Service VIP; meshd L4 with --sockmap=off
#   vip-sockmap client dials the same VIP; meshd L4 with --sockmap=on (sk_msg splices)
# Workloads: sockperf ping-pong, TCP, 64-byte messages (p50, p99 latency) and iperf3, one
# TCP stream (throughput). Client pinned to CPU 0, server to CPU 1, in every variant.
#
#   scripts/bench-sockmap.sh            5 rounds x 10 s per workload and variant; writes
#                                       docs/benchmarks/sockmap.md and sockmap.json
#   scripts/bench-sockmap.sh --quick    1 round x 2 s (CI); writes under the build dir only
#   options: --rounds N  --seconds S  --out DIR
#
# Needs root, a build (scripts/build.sh; MESHD_BUILD_DIR), sockperf, iperf3, python3. Uses
# three labs of lab/meshlab (1 node, 2 pods each) named smb, smbo and smbs, beside any other
# lab; everything they make is removed on exit (lab/meshlab down: by PID, never by name).
# Exit status: 0 when every measurement ran and the sockmap variant really spliced (its
# sockmap_bytes counter grew), else 1.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MESHD_BUILD_DIR:-$REPO/build}
export MESHD_BUILD_DIR=$BUILD
MESHLAB=$REPO/lab/meshlab

rounds=5 seconds=10 out=$REPO/docs/benchmarks quick=0
while (($#)); do
  case $1 in
    --quick) quick=1; rounds=1; seconds=2; out=$BUILD/bench-sockmap; shift ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "bench-sockmap.sh: needs root (namespaces, cgroups, BPF)" >&2; exit 1; }
for t in sockperf iperf3 python3 taskset; do
  command -v "$t" >/dev/null || { echo "bench-sockmap.sh: $t not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
mkdir -p "$out"
work=$(mktemp -d /tmp/bench-sockmap.XXXXXX)

VIP=10.96.0.60 SERVER=10.244.1.12 PERF_PORT=11111 IPERF_PORT=5201
declare -A LAB=([direct]=smb [vip]=smbo [vip-sockmap]=smbs)
declare -A SOCKMAP=([vip]=off [vip-sockmap]=on)
declare -A DEST=([direct]=$SERVER [vip]=$VIP [vip-sockmap]=$VIP)
variants=(direct vip vip-sockmap)

lab() { MESHLAB_ID=$1 MESHLAB_QUIET=1 "$MESHLAB" "${@:2}"; }
cleanup() {
  for v in "${variants[@]}"; do lab "${LAB[$v]}" down >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench-sockmap: $*" >&2; }

cat >"$work/svc.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench-sockmap, namespace: default}
spec:
  clusterIP: $VIP
  ports:
    - {name: sockperf, port: $PERF_PORT, targetPort: $PERF_PORT, protocol: TCP}
    - {name: iperf3, port: $IPERF_PORT, targetPort: $IPERF_PORT, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-sockmap-1
  namespace: default
  labels: {kubernetes.io/service-name: bench-sockmap}
addressType: IPv4
ports:
  - {name: sockperf, port: $PERF_PORT, protocol: TCP}
  - {name: iperf3, port: $IPERF_PORT, protocol: TCP}
endpoints:
  - addresses: ["$SERVER"]
EOF

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for v in "${variants[@]}"; do
  id=${LAB[$v]}
  lab "$id" down >/dev/null 2>&1 || true
  if [[ $v == direct ]]; then
    lab "$id" up --nodes 1 --pods 2 --no-meshd >/dev/null
  else
    MESHLAB_SOCKMAP=${SOCKMAP[$v]} lab "$id" up --nodes 1 --pods 2 >/dev/null
    lab "$id" apply "$work/svc.yaml" >/dev/null
    lab "$id" meshctl n1 status -o json >"$work/status-$v.json"
    state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sockmap"])' "$work/status-$v.json")
    log "$v: meshd sockmap: $state"
    if [[ $v == vip-sockmap && $state != active ]]; then
      log "meshd could not turn sockmap on: $state"
      exit 1
    fi
  fi
  lab "$id" exec n1-p2 -- taskset -c 1 sockperf server -i "$SERVER" -p "$PERF_PORT" --tcp \
    >"$work/sockperf-server-$v.log" 2>&1 &
  lab "$id" exec n1-p2 -- taskset -c 1 iperf3 -s -B "$SERVER" -p "$IPERF_PORT" \
    >"$work/iperf3-server-$v.log" 2>&1 &
done
sleep 1

stat_bytes() { # VARIANT -> sockmap_bytes of its meshd (0 without meshd)
  [[ $1 == direct ]] && { echo 0; return; }
  lab "${LAB[$1]}" meshctl n1 bpf dump mesh_stats -o json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["sockmap_bytes"])'
}

results=$work/results.jsonl
: >"$results"
for ((r = 1; r <= rounds; r++)); do
  # Rotate the order each round so no variant always runs first or last.
  order=("${variants[@]:$(((r - 1) % 3))}" "${variants[@]:0:$(((r - 1) % 3))}")
  for v in "${order[@]}"; do
    id=${LAB[$v]}
    before=$(stat_bytes "$v")
    lab "$id" exec n1-p1 -- taskset -c 0 sockperf ping-pong -i "${DEST[$v]}" -p "$PERF_PORT" \
      --tcp -m 64 -t "$seconds" >"$work/sockperf-$v-$r.log" 2>&1 ||
      { log "sockperf $v failed:"; tail -5 "$work/sockperf-$v-$r.log" >&2; exit 1; }
    lab "$id" exec n1-p1 -- taskset -c 0 iperf3 -c "${DEST[$v]}" -p "$IPERF_PORT" -t "$seconds" \
      -J >"$work/iperf3-$v-$r.json" 2>&1 ||
      { log "iperf3 $v failed:"; tail -5 "$work/iperf3-$v-$r.json" >&2; exit 1; }
    after=$(stat_bytes "$v")
    python3 - "$v" "$r" "$work/sockperf-$v-$r.log" "$work/iperf3-$v-$r.json" \
      "$((after - before))" >>"$results" <<'EOF'
import json, re, sys
v, r, perf, iperf, spliced = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
text = open(perf).read()
pct = {float(m.group(1)): float(m.group(2))
       for m in re.finditer(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", text)}
bps = json.load(open(iperf))["end"]["sum_received"]["bits_per_second"]
print(json.dumps({"variant": v, "round": r, "p50_us": pct[50.0], "p99_us": pct[99.0],
                  "gbit_s": bps / 1e9, "spliced_bytes": spliced}))
EOF
    log "round $r/$rounds $v: $(tail -1 "$results")"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

NOTES=$([[ -f $REPO/docs/benchmarks/sockmap-notes.md ]] && echo "$REPO/docs/benchmarks/sockmap-notes.md" || true) \
  python3 - "$results" "$out" "$quick" "$rounds" "$seconds" "$load_before" "$load_after" <<'EOF'
import json, os, platform, statistics, subprocess, sys, time
results, out, quick, rounds, seconds, load_before, load_after = sys.argv[1:8]
rows = [json.loads(l) for l in open(results)]
names = ["direct", "vip", "vip-sockmap"]
label = {"direct": "direct (pod IP, no meshd)", "vip": "VIP, meshd L4, sockmap off",
         "vip-sockmap": "VIP, meshd L4, sockmap on"}
med = {}
for n in names:
    rs = [x for x in rows if x["variant"] == n]
    med[n] = {k: statistics.median(x[k] for x in rs) for k in ("p50_us", "p99_us", "gbit_s")}
    med[n]["spliced_bytes"] = sum(x["spliced_bytes"] for x in rs)
    med[n]["rounds"] = [{k: x[k] for k in ("p50_us", "p99_us", "gbit_s")} for x in rs]
d = med["direct"]
ratio = {n: {"p50": med[n]["p50_us"] / d["p50_us"], "p99": med[n]["p99_us"] / d["p99_us"],
             "throughput": med[n]["gbit_s"] / d["gbit_s"]} for n in names}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
machine = {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
           "load_before": load_before, "load_after": load_after,
           "sockperf": subprocess.run(["sockperf", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip(),
           "iperf3": subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()}
sm = ratio["vip-sockmap"]
target = {"p50 <= 0.9x direct": sm["p50"] <= 0.9, "p99 <= 0.9x direct": sm["p99"] <= 0.9,
          "throughput >= 2x direct": sm["throughput"] >= 2.0}
doc = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "rounds": int(rounds), "seconds": int(seconds),
       "machine": machine, "median": med, "ratio_vs_direct": ratio, "target_met": target}
with open(os.path.join(out, "sockmap.json"), "w") as f:
    json.dump(doc, f, indent=2)
lines = ["| variant | p50 µs | p99 µs | throughput Gbit/s | p50 vs direct | p99 vs direct | throughput vs direct | bytes spliced |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
for n in names:
    m, q = med[n], ratio[n]
    lines.append(f"| {label[n]} | {m['p50_us']:.2f} | {m['p99_us']:.2f} | {m['gbit_s']:.2f} | "
                 f"{q['p50']:.2f}× | {q['p99']:.2f}× | {q['throughput']:.2f}× | {m['spliced_bytes']:,} |")
table = "\n".join(lines)
verdict = ", ".join(f"{k}: {'met' if v else 'missed'}" for k, v in target.items())
busy = float(load_before.split()[0]) > 1.5  # 2 CPUs: more than the benchmark itself
notes = open(os.environ["NOTES"]).read() if os.environ.get("NOTES") else ""
md = f"""# Benchmark: the sockmap fast path (pod to pod, one node)

Generated by `scripts/bench-sockmap.sh` on {doc['date']}: {rounds} rounds x {seconds} s per
workload and variant, the variants interleaved (order rotated each round); medians over the
rounds. Ratios are against direct (lower is better for latency, higher for throughput).

{table}

Target (issue 4): sockmap on at most 0.9x direct at p50 and p99, at least 2x direct
throughput. This run: {verdict}.

- Latency: `sockperf ping-pong --tcp -m 64` (one connection, 64-byte request/response).
- Throughput: `iperf3 -c` one TCP stream, bits received per second.
- *bytes spliced*: growth of meshd's `sockmap_bytes` counter during the variant's runs
  (proves that sk_msg carried the bytes; 0 for the others).
- Pods: lab/meshlab, 1 node, 2 pods (veth to a node bridge), client in n1-p1 pinned to CPU
  0, server in n1-p2 pinned to CPU 1. direct uses a lab without meshd (no program on the
  path); the VIP variants a lab whose meshd runs `--sockmap=off` or `--sockmap=on`.

Machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}; {machine['sockperf']},
{machine['iperf3']}. Load average before/after: {load_before} / {load_after}
{"(the machine was busy: another build or benchmark shared it; see the notes)" if busy else ""}.

Repeat: `sudo scripts/bench-sockmap.sh` (after `scripts/build.sh`); `--quick` for a
smoke run that writes under the build dir. Raw numbers: `sockmap.json`.

{notes}"""
with open(os.path.join(out, "sockmap.md"), "w") as f:
    f.write(md)
print(table)
print("target: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in target.items()))
print(f"machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, load {load_before} -> {load_after}")
EOF
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["median"]["vip-sockmap"]["spliced_bytes"] > 0 and d["median"]["vip"]["spliced_bytes"] == 0 else 1)' "$out/sockmap.json" ||
  { log "the sockmap variant did not splice (or the off variant did)"; exit 1; }
log "wrote $out/sockmap.md and $out/sockmap.json"
