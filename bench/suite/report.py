"""Turns the driver's results (suite.json) into suite.md and PNG plots (matplotlib, Agg).
Run alone (`report.py suite.json`) it regenerates a report from the raw data.

Every figure is the median of the repetitions; tables show the min-max spread next to it
and plots draw it as error bars. Ratios are variant / direct on the same placement.
"""
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import workloads as W  # noqa: E402

UNITS = {"_us": "µs", "gbit_s": "Gbit/s", "conn_per_s": "conn/s", "req_per_s": "req/s",
         "rt_per_s": "round trips/s"}


def unit(metric):
    for k, u in UNITS.items():
        if metric.endswith(k):
            return u
    return ""


def cells_by_key(results):
    return {(c["variant"], c["placement"], c["workload"]): c for c in results["cells"]}


def stat(cell, metric):
    """(median, min, max) of METRIC over CELL's repetitions, None if absent."""
    if not cell:
        return None
    vals = [r["metrics"].get(metric) for r in cell["reps"]]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def cpu_per_1k(cell, mesh_only):
    """CPU milliseconds per 1000 requests (median over reps): every accounted process, or
    only the mesh's (proxies, meshd, meshd's BPF programs)."""
    vals = []
    for r in cell["reps"]:
        req = r["metrics"].get("requests")
        if not req:
            return None
        # BPF run time is already inside the calling processes' kernel time: only the
        # mesh-only figure adds it (it is the mesh's share of that time).
        if mesh_only:
            cpu = sum(v for k, v in r["cpu_s"].items()
                      if k.startswith(("proxy:", "meshd:")) or k == "bpf")
        else:
            cpu = sum(v for k, v in r["cpu_s"].items() if k != "bpf")
        vals.append(cpu * 1e6 / req)
    return statistics.median(vals), min(vals), max(vals)


def fmt(v, metric=""):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_stat(s, metric=""):
    if s is None:
        return "–"
    return f"{fmt(s[0])} ({fmt(s[1])}–{fmt(s[2])})"


def ratio(results, variant, placement, workload, metric):
    idx = cells_by_key(results)
    a = stat(idx.get((variant, placement, workload)), metric)
    b = stat(idx.get(("direct", placement, workload)), metric)
    if not a or not b or not b[0]:
        return None
    return a[0] / b[0]


def added(results, variant, placement, workload, metric):
    idx = cells_by_key(results)
    a = stat(idx.get((variant, placement, workload)), metric)
    b = stat(idx.get(("direct", placement, workload)), metric)
    if not a or not b:
        return None
    return a[0] - b[0]


def proxy_mb(cell):
    if not cell or not cell.get("proxies_hwm_mb"):
        return None
    vals = [v for v in cell["proxies_hwm_mb"].values() if v is not None]
    return max(vals) if vals else None


HEADLINE = [
    # (column title, workload, metric, kind) kind: ratio | added | mesh_cpu | mb
    ("TCP RR p50", "tcp_rr", "rtt_p50_us", "ratio"),
    ("TCP RR p99", "tcp_rr", "rtt_p99_us", "ratio"),
    ("stream Gbit/s", "stream", "gbit_s", "ratio"),
    ("conn/s", "conn_rate", "conn_per_s", "ratio"),
    ("HTTP/1.1 req/s", "http1_max", "req_per_s", "ratio"),
    ("h2 req/s", "h2", "req_per_s", "ratio"),
    ("gRPC req/s", "grpc", "req_per_s", "ratio"),
    ("HTTP p50 added @1k rps", "http1_fixed", "p50_us", "added"),
    ("HTTP p99 added @1k rps", "http1_fixed", "p99_us", "added"),
    ("mesh CPU ms / 1k req @1k rps", "http1_fixed", None, "mesh_cpu"),
    ("peak MB per proxy", "http1_fixed", None, "mb"),
]


def headline_table(results):
    idx = cells_by_key(results)
    present = {c["workload"] for c in results["cells"]}
    cols = [h for h in HEADLINE if h[1] in present]
    lines = ["| variant | placement | " + " | ".join(h[0] for h in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for v in results["variants"]:
        if v["name"] == "direct":
            continue  # the baseline: 1.00x everywhere by definition
        for p in results["placements"]:
            if not any(c["variant"] == v["name"] and c["placement"] == p for c in results["cells"]):
                continue
            row = []
            for title, w, metric, kind in cols:
                cell = idx.get((v["name"], p, w))
                if kind == "ratio":
                    r = ratio(results, v["name"], p, w, metric)
                    row.append("–" if r is None else f"{r:.2f}×")
                elif kind == "added":
                    a = added(results, v["name"], p, w, metric)
                    row.append("–" if a is None else f"{a:+.0f} µs")
                elif kind == "mesh_cpu":
                    s = cpu_per_1k(cell, True) if cell else None
                    row.append("–" if s is None else fmt(s[0]))
                else:
                    mb = proxy_mb(cell)
                    row.append("–" if mb is None else f"{mb:.1f}")
            lines.append(f"| {v['name']} | {p} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def workload_tables(results):
    idx = cells_by_key(results)
    out = []
    for w in results["workloads"]:
        wl = W.BY_NAME[w["name"]]
        cells = [c for c in results["cells"] if c["workload"] == w["name"]]
        if not cells:
            continue
        out.append(f"### {w['title']}\n")
        hdr = [f"{m} ({unit(m)})" for m in wl.metrics] + ["CPU ms/1k req: all", "mesh",
                                                          "peak MB per proxy"]
        out.append("| variant | placement | " + " | ".join(hdr) + " |")
        out.append("|---|---|" + "---|" * len(hdr))
        for v in results["variants"]:
            for p in results["placements"]:
                c = idx.get((v["name"], p, w["name"]))
                if not c:
                    continue
                row = [fmt_stat(stat(c, m)) for m in wl.metrics]
                row.append(fmt_stat(cpu_per_1k(c, False)) if c["reps"][0]["metrics"].get(
                    "requests") else "–")
                row.append(fmt_stat(cpu_per_1k(c, True)) if c["reps"][0]["metrics"].get(
                    "requests") else "–")
                mb = proxy_mb(c)
                row.append("–" if mb is None else f"{mb:.1f}")
                out.append(f"| {v['name']} | {p} | " + " | ".join(row) + " |")
        out.append("")
        if w["name"] == "stream":
            out.append("CPU for the stream is in the CPU table below (seconds per GB).\n")
    return "\n".join(out)


def cpu_breakdown(results):
    """Median CPU seconds per role for each cell, normalised per 1000 requests or per GB."""
    out = ["| variant | placement | workload | per | client | server | proxies | meshd | "
           "BPF progs | BPF runs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        per_rep = []
        for r in c["reps"]:
            m = r["metrics"]
            if m.get("requests"):
                div, per = m["requests"] / 1000.0, "1k req (ms)"
            elif m.get("gbytes"):
                div, per = m["gbytes"], "GB (ms)"
            else:
                continue
            cpu = r["cpu_s"]
            per_rep.append((per, {
                "client": cpu.get("client", 0) * 1000 / div,
                "server": cpu.get("server", 0) * 1000 / div,
                "proxies": sum(v for k, v in cpu.items() if k.startswith("proxy:")) * 1000 / div,
                "meshd": sum(v for k, v in cpu.items() if k.startswith("meshd:")) * 1000 / div,
                "bpf": cpu.get("bpf", 0) * 1000 / div,
                "runs": r.get("bpf_runs", 0) / div}))
        if not per_rep:
            continue
        per = per_rep[0][0]
        med = {k: statistics.median(x[1][k] for x in per_rep) for k in per_rep[0][1]}
        out.append(f"| {c['variant']} | {c['placement']} | {c['workload']} | {per} | "
                   f"{fmt(med['client'])} | {fmt(med['server'])} | {fmt(med['proxies'])} | "
                   f"{fmt(med['meshd'])} | {fmt(med['bpf'])} | {fmt(med['runs'])} |")
    return "\n".join(out)


# ------------------------------------------------------------------ plots

COLORS = {"direct": "#4c72b0", "sidecar": "#c44e52", "sidecar-mtls": "#8c1c20",
          "haproxy-node": "#dd8452", "meshd-l4": "#55a868", "meshd-l7": "#8172b3",
          "meshd-l4-mtls": "#2d6a3e", "meshd-l7-mtls": "#4b3f7a"}
FALLBACK_COLOR = "#7f7f7f"  # a variant without its own colour still plots


def _bars(ax, results, workload, metrics, placement, labels=None):
    idx = cells_by_key(results)
    vnames = [v["name"] for v in results["variants"]]
    width = 0.8 / max(1, len(vnames))
    for i, vn in enumerate(vnames):
        c = idx.get((vn, placement, workload))
        meds, lo, hi = [], [], []
        for m in metrics:
            s = stat(c, m)
            meds.append(s[0] if s else 0)
            lo.append(s[0] - s[1] if s else 0)
            hi.append(s[2] - s[0] if s else 0)
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=vn,
               color=COLORS.get(vn, FALLBACK_COLOR))
    ax.set_xticks([j + width * (len(vnames) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(labels or metrics)
    ax.set_title(placement)


def plot_latency(results, outdir):
    rows = [(w, ms, lab) for w, ms, lab in [
        ("tcp_rr", ["rtt_p50_us", "rtt_p99_us", "rtt_p999_us"], ["p50", "p99", "p99.9"]),
        ("http1_fixed", ["p50_us", "p99_us", "p999_us"], ["p50", "p99", "p99.9"])]
        if any(c["workload"] == w for c in results["cells"])]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False)
    for r, (w, ms, lab) in enumerate(rows):
        for j, p in enumerate(results["placements"]):
            _bars(axes[r][j], results, w, ms, p, lab)
            axes[r][j].set_ylabel(f"{W.BY_NAME[w].title.split('(')[0].strip()}\nµs (lower is better)",
                                  fontsize=8)
            if any(c["workload"] == w and c["placement"] == p for c in results["cells"]):
                axes[r][j].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Latency percentiles (median of reps, bars: min–max)")
    fig.tight_layout()
    path = os.path.join(outdir, "latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(results, outdir):
    items = [(w, m) for w, m in [("stream", "gbit_s"), ("conn_rate", "conn_per_s"),
                                 ("http1_max", "req_per_s"), ("h2", "req_per_s"),
                                 ("grpc", "req_per_s"), ("tcp_rr", "rt_per_s")]
             if any(c["workload"] == w for c in results["cells"])]
    if not items:
        return None
    fig, axes = plt.subplots(len(items), 2, figsize=(11, 2.6 * len(items)), squeeze=False)
    for r, (w, m) in enumerate(items):
        for j, p in enumerate(results["placements"]):
            _bars(axes[r][j], results, w, [m], p, [f"{w}: {unit(m)}"])
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Throughput (median of reps, bars: min–max; higher is better)")
    fig.tight_layout()
    path = os.path.join(outdir, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cpu_mem(results, outdir):
    cells = [c for c in results["cells"] if c["workload"] == "http1_fixed"] or \
            [c for c in results["cells"] if c["workload"] == "http1_max"] or \
            [c for c in results["cells"] if c["reps"] and c["reps"][0]["metrics"].get("requests")]
    if not cells:
        return None
    wname = cells[0]["workload"]
    cells = [c for c in cells if c["workload"] == wname]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    labels, roles = [], ["client", "server", "proxies", "meshd", "bpf"]
    stacks = {k: [] for k in roles}
    mbs = []
    for c in cells:
        labels.append(f"{c['variant']}\n{c['placement']}")
        vals = {k: [] for k in roles}
        for r in c["reps"]:
            div = r["metrics"]["requests"] / 1000.0
            cpu = r["cpu_s"]
            vals["client"].append(cpu.get("client", 0) * 1000 / div)
            vals["server"].append(cpu.get("server", 0) * 1000 / div)
            vals["proxies"].append(sum(v for k, v in cpu.items() if k.startswith("proxy:"))
                                   * 1000 / div)
            vals["meshd"].append(sum(v for k, v in cpu.items() if k.startswith("meshd:"))
                                 * 1000 / div)
            vals["bpf"].append(cpu.get("bpf", 0) * 1000 / div)
        for k in roles:
            stacks[k].append(statistics.median(vals[k]))
        mbs.append(proxy_mb(c) or 0)
    bottom = [0] * len(cells)
    for k in roles:
        ax1.bar(range(len(cells)), stacks[k], bottom=bottom, label=k)
        bottom = [b + s for b, s in zip(bottom, stacks[k])]
    ax1.set_xticks(range(len(cells)))
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel("CPU ms per 1000 requests")
    ax1.set_title(f"CPU by process ({wname})")
    ax1.legend(fontsize=8)
    ax2.bar(range(len(cells)), mbs, color=[COLORS.get(c["variant"], FALLBACK_COLOR) for c in cells])
    ax2.set_xticks(range(len(cells)))
    ax2.set_xticklabels(labels, fontsize=7)
    ax2.set_ylabel("MB (VmHWM)")
    ax2.set_title("Peak RSS of the largest proxy process (meshd for meshd-l4/l7)")
    fig.tight_layout()
    path = os.path.join(outdir, "cpu_mem.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ markdown

def overruns(results):
    out = []
    for c in results["cells"]:
        windows = [r["metrics"].get("window_s") for r in c["reps"]]
        late = [w for w in windows if w and w > 1.1 * results["duration_s"]]
        if late:
            out.append(f"{c['variant']} / {c['placement']} / {c['workload']}: "
                       f"{len(late)} of {len(windows)} reps, windows "
                       + ", ".join(f"{w:.2f} s" for w in late))
    return out


def write(results, outdir):
    pngdir = os.path.join(outdir, "suite")
    os.makedirs(pngdir, exist_ok=True)
    plots = [p for p in (plot_latency(results, pngdir), plot_throughput(results, pngdir),
                         plot_cpu_mem(results, pngdir)) if p]
    m = results["machine"]
    la0 = ", ".join(f"{x:.2f}" for x in m["loadavg_start"])
    la1 = ", ".join(f"{x:.2f}" for x in m.get("loadavg_end", m["loadavg_start"]))
    mode = "quick" if results["quick"] else "full"
    md = [
        "# Benchmark suite: meshd vs no mesh, the sidecar model and a per-node HAProxy",
        "",
        "Generated by `sudo ./scripts/bench.sh` (bench/suite/). Ratios against `direct` on the "
        "same placement are the headline; absolute numbers are context. Every figure is the "
        f"median of {results['reps']} repetition(s) of {results['duration_s']} s, with the "
        "min–max spread in parentheses and as error bars in the plots.",
        "",
        "| | |", "|---|---|",
        f"| date | {m['date']} |", f"| commit | {m['commit']} |", f"| kernel | {m['kernel']} |",
        f"| machine | {m['cpus']} CPUs, {m['mem_gib']} GiB, {m['cpu_model']} |",
        f"| load average (1, 5, 15 min) | start {la0}; end {la1} |",
        f"| mode | {mode}: {results['reps']} rep(s) x {results['duration_s']} s; "
        f"{results['elapsed_s']:.0f} s in all |",
        f"| proxy | {m.get('haproxy', '')} |",
        "",
    ]
    if results["failures"]:
        md += ["**Failed runs** (missing from the tables):", ""]
        md += [f"- {f.splitlines()[0]}" for f in results["failures"]] + [""]
    if results.get("known_failures"):
        md += ["**Known limitations** (runs that cannot work yet; missing from the tables):", ""]
        md += [f"- {f}" for f in results["known_failures"]] + [""]
    if results["skipped_workloads"]:
        md += ["Skipped workloads: " + "; ".join(f"{k} ({v})" for k, v in
                                                 results["skipped_workloads"].items()), ""]
    overran = overruns(results)
    if overran:
        md += ["**Stalls**: runs whose measured window overran the requested duration by more "
               "than 10% (an operation blocked past the deadline, e.g. a SYN retransmitted "
               "after 1 s); their figures include the stall:", ""]
        md += [f"- {o}" for o in overran] + [""]
    md += ["## Headline: each variant against direct", "",
           "Ratios: variant ÷ direct (latency: lower is better; throughput: higher is "
           "better). \"added\": variant − direct at a fixed 1000 req/s (open loop). Mesh CPU: "
           "CPU of the proxies, meshd and meshd's BPF programs per 1000 requests; the "
           "published anchors for comparison are ~60 ms (two ztunnels) and ~200 ms (an "
           "Envoy sidecar) per 1000 requests.", "",
           headline_table(results), "",
           "## Variants", ""]
    md += [f"- **{v['name']}**: {v['description']}" for v in results["variants"]]
    md += ["", "## Plots", ""]
    md += [f"![{os.path.basename(p)}](suite/{os.path.basename(p)})" for p in plots]
    md += ["", "## Absolute numbers", "", workload_tables(results), "",
           "## CPU by process", "",
           "Median CPU per 1000 requests (per GB for the stream), milliseconds. BPF progs: "
           "run time of meshd's programs (kernel.bpf_stats_enabled), already inside the "
           "client's and server's kernel time; BPF runs: program invocations per 1000 "
           "requests.", "", cpu_breakdown(results), "", METHOD]
    with open(os.path.join(outdir, "suite.md"), "w") as f:
        f.write("\n".join(md) + "\n")


METHOD = """## How it is measured

- **Lab.** `lab/meshlab` builds two nodes x two pods in network namespaces (veth + bridge,
  routed between nodes). same-node: client n1-p1 → server n1-p2; cross-node: n1-p1 →
  n2-p1. `direct`, `sidecar` and `haproxy-node` run in a lab without meshd (`MESHLAB_ID=mbench
  meshlab up --no-meshd`, so the baseline has no BPF hooks at all); `meshd-l4` in a second
  lab, up at the same time, with meshd on both nodes (`MESHLAB_ID=mbenchm`) and one Service
  per placement whose only endpoint is the server pod. `meshd-l7` uses the same lab and a
  second Service per placement (same endpoint) with an HTTPRoute bound to each port: the
  connect hook redirects the client's connection to its node's meshd (:15001, one proxy
  worker, pinned with the rest of meshd to the client CPU like the other client-side
  proxies), which routes every HTTP/1.1 request and relays TCP workloads opaquely. It runs
  in a third lab (`MESHLAB_ID=mbenchs`) whose meshd has the sockmap splice on, so the
  app↔meshd hop goes socket to socket (meshd-l4's lab keeps it off: the L4 splice is
  measured by scripts/bench-sockmap.sh).
- **Repetitions are interleaved**: the whole sequence (every workload × placement, the
  variants side by side) runs once, then again, R times; each run sets its server and
  proxies up from scratch. Load that drifts during the suite hits every variant alike.
- **Pinning**, identical for every variant: the client side (client, outbound sidecar, node
  proxy) on CPU 0, the server side (server, inbound sidecar) on CPU 1. meshd is not pinned;
  on the L4 path it does no work per connection (its programs run in the connecting
  process's context).
- **HAProxy** (bench/suite/haproxy/): one thread per process (`nbthread 1`: meshd L4 has no
  userspace hop, so the proxy gets the smallest worker count), no logging, maxconn 8000 (fits the default 20000-fd limit; the workloads use at most 16 at a time),
  explicit timeouts; `mode tcp` for sockperf/iperf3/connrate, `mode http` with keep-alive and
  `http-reuse always` for HTTP/1.1, and `proto h2` on both sides for h2c and gRPC.
  Sidecar: nat OUTPUT REDIRECT in the client pod (HAProxy's uid 1337 excluded) to :15001,
  nat PREROUTING REDIRECT in the server pod to :15006, which dials 127.0.0.1. Node proxy:
  listens on the client node's pod bridge address, dials the server pod (one hop; a
  per-node mesh with a proxy on both nodes would add a second hop across nodes).
- **Workloads** (bench/suite/workloads.py): sockperf ping-pong over TCP, 64-byte messages
  (sockperf reports half the round trip; the tables show the full round trip); iperf3,
  one stream; connrate (bench/suite/connrate.cc: connect, 1-byte exchange, close, 4
  threads); wrk -t1 -c16 against mesh-echo's HTTP listener (single-threaded epoll; it and
  wrk each own one CPU, so req/s is bounded by whichever side saturates first — the ratio
  between variants is what matters); openloop at 1000 req/s over 16 connections, latency
  from each request's intended send time, so queueing is not hidden (no coordinated
  omission); h2load -c4 -m16 against nghttpd (h2c, 64-byte file); gRPC unary from
  bench/loadgen/grpc_bench.py (python3-grpcio).
- **CPU**: utime+stime from /proc/PID/stat before and after each run for the server, every
  proxy and meshd; the client's from wait4(); meshd's BPF programs' run_time_ns from
  `bpftool -j prog show` with kernel.bpf_stats_enabled=1 (restored afterwards). Kernel work
  done in softirq (packet processing on the veths, iptables) is not charged to any process
  and is not in these numbers. **Memory**: VmHWM of each proxy process (meshd's for
  meshd-l4 and meshd-l7).
- **Noise**: a 2-CPU VM shared with other work; check the load average in the header
  before comparing runs. Compare ratios, not microseconds.
"""


if __name__ == "__main__":
    # Regenerate a report from its raw data without rerunning anything:
    #   /usr/bin/python3 bench/suite/report.py docs/benchmarks/suite.json
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: report.py SUITE_JSON (writes suite.md and suite/*.png next to it)")
    with open(sys.argv[1]) as f:
        data = json.load(f)
    write(data, os.path.dirname(os.path.abspath(sys.argv[1])))
