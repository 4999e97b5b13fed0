#!/usr/bin/python3
"""The benchmark suite's driver: every variant x placement x workload, R repetitions each,
into results.json, then report.py turns it into markdown and PNG plots.

    sudo /usr/bin/python3 bench/suite/run.py --build BUILD --out DIR [--quick]
        [--only VARIANT,...] [--workloads W,...] [--reps R] [--duration S]

scripts/bench.sh is the front door (set-up, build, then this). Exit status: 0 when every
selected run succeeded, 1 when any failed (the report still lists what did run), 2 usage.
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import (LAB_IDS, BenchError, BpfStats, Lab, Proc, bpf_prog_runtime,  # noqa: E402
                 proc_cpu_seconds, proc_hwm_mb, run_dir, system_busy_seconds)
import report  # noqa: E402
import variants as V  # noqa: E402
import workloads as W  # noqa: E402


class Ctx:
    def __init__(self, repo, build, workdir):
        self.repo, self.build, self.workdir = repo, build, workdir
        self.docroot = os.path.join(workdir, "docroot")
        os.makedirs(self.docroot, exist_ok=True)
        with open(os.path.join(self.docroot, "index.html"), "w") as f:
            f.write("x" * 63 + "\n")  # 64-byte body, the size of the TCP workloads' messages


class Run:
    """One variant x placement x workload: what a variant's hooks see."""

    def __init__(self, lab, ctx, variant, placement, workload):
        self.lab, self.ctx = lab, ctx
        self.variant, self.placement, self.workload = variant, placement, workload
        self.workdir = ctx.workdir
        self.tag = f"{variant.name}-{placement.name}-{workload.name}"
        self.proxies = []

    def start_proxy(self, name, target, args, cpu, port, netns):
        proc = self.lab.start("proxy", f"{self.tag}-{name}", target, args, cpu=cpu,
                              ready_port=port, netns=netns)
        proc.label = name
        self.proxies.append(proc)
        return proc


def cpu_snapshot(procs):
    return {p.pid: proc_cpu_seconds(p.pid) for p in procs}


def measure(run, server, duration, rep):
    """One repetition: the client run with CPU of every process around it."""
    lab, w = run.lab, run.workload
    meshd = [Proc("meshd", f"meshd-n{i + 1}", pid, owned=False)
             for i, pid in enumerate(lab.meshd_pids())]
    for m in meshd:
        m.label = m.name
    watched = [server] + run.proxies + meshd
    before = cpu_snapshot(watched)
    bpf_before = bpf_prog_runtime([m.pid for m in meshd])
    sys_before = system_busy_seconds()
    t0 = time.time()
    stdout, client_cpu = lab.run_client(f"{run.tag}-r{rep}", run.placement.client_pod,
                                        w.client(run.ctx, run.addr, run.port, duration),
                                        V.CLIENT_CPU, timeout=duration + w.client_timeout_extra)
    wall = time.time() - t0
    sys_after = system_busy_seconds()
    bpf_after = bpf_prog_runtime([m.pid for m in meshd])
    after = cpu_snapshot(watched)
    metrics = w.parse(stdout, duration)
    cpu = {"client": client_cpu}
    for p in watched:
        if before.get(p.pid) is None or after.get(p.pid) is None:
            raise BenchError(f"{p.name} (pid {p.pid}) exited during the run")
        key = "server" if p.role == "server" else f"{p.role}:{p.label}"
        cpu[key] = after[p.pid] - before[p.pid]
    cpu["bpf"] = (bpf_after[0] - bpf_before[0]) / 1e9
    return {"rep": rep, "wall_s": wall, "metrics": metrics, "cpu_s": cpu,
            "bpf_runs": bpf_after[1] - bpf_before[1], "system_busy_s": sys_after - sys_before}


def run_rep(lab, ctx, variant, placement, workload, rep, duration):
    """One repetition of one cell, set up from scratch: server, then the variant's
    proxies/rules, one measured client run, then teardown. Setting up per repetition lets
    the repetitions of all variants interleave, so load that drifts over the run (a
    shared machine) lands on every variant alike instead of on whichever ran last."""
    run = Run(lab, ctx, variant, placement, workload)
    server = lab.start("server", f"{run.tag}-r{rep}-server", placement.server_pod,
                       workload.server(ctx), cpu=V.SERVER_CPU, ready_port=workload.port,
                       netns=lab.netns(placement.server_pod))
    try:
        run.addr, run.port = variant.setup(run)
        result = measure(run, server, duration, rep)
        hwm = {p.label: proc_hwm_mb(p.pid) for p in run.proxies}
        for i, pid in enumerate(lab.meshd_pids()):
            hwm[f"meshd-n{i + 1}"] = proc_hwm_mb(pid)
        result["server_hwm_mb"] = proc_hwm_mb(server.pid)
    finally:
        try:
            variant.teardown(run)
        finally:
            for p in run.proxies:
                lab.stop(p)
            lab.stop(server)
    m = result["metrics"]
    log(f"{run.tag} r{rep}: " + ", ".join(f"{k}={m[k]:.1f}" for k in workload.metrics
                                          if m.get(k) is not None))
    return result, hwm, f"{run.addr}:{run.port}"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def plan(args):
    vs = [V.BY_NAME[n] for n in args.only] if args.only else list(V.VARIANTS)
    ws = [W.BY_NAME[n] for n in args.workloads] if args.workloads else list(W.WORKLOADS)
    cells = []
    for v in vs:
        for p in V.PLACEMENTS:
            for w in ws:
                # Quick mode: every variant and workload once on one node, and every
                # variant across nodes on the latency workload.
                if args.quick and p.name != "same-node" and w.name != ws[0].name:
                    continue
                cells.append((v, p, w))
    return vs, ws, cells


def machine_info(repo):
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=repo).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": (sh(["git", "rev-parse", "--short", "HEAD"]) or "unknown")
            + (" (+ uncommitted changes)" if dirty else ""),
            "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "mem_gib": round(mem_kb / 1048576, 1), "loadavg_start": os.getloadavg(),
            "haproxy": sh(["haproxy", "-v"]).splitlines()[0] if sh(["haproxy", "-v"]) else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True, help="report directory (suite.md, suite/*.png)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--workloads", type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--workdir", help="logs and generated configs (default: a temp dir)")
    args = ap.parse_args()
    for n in args.only or []:
        if n not in V.BY_NAME:
            ap.error(f"unknown variant {n!r}; known: {', '.join(V.BY_NAME)}")
    for n in args.workloads or []:
        if n not in W.BY_NAME:
            ap.error(f"unknown workload {n!r}; known: {', '.join(W.BY_NAME)}")
    reps = args.reps or (1 if args.quick else 3)
    duration = args.duration or (1 if args.quick else 4)
    if duration != int(duration):
        ap.error("--duration must be whole seconds (iperf3, wrk and sockperf take integers)")
    duration = int(duration)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    workdir = args.workdir or tempfile.mkdtemp(prefix="meshd-bench-")
    os.makedirs(workdir, exist_ok=True)
    ctx = Ctx(repo, os.path.abspath(args.build), workdir)
    vs, ws, cells = plan(args)

    skipped = {}
    for w in ws:
        why = w.available(ctx)
        if why:
            skipped[w.name] = why
            log(f"skipping workload {w.name}: {why}")
    cells = [c for c in cells if c[2].name not in skipped]

    # Ctrl-C / SIGTERM unwind through the finally below, which tears the lab down.
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    results = {"machine": machine_info(repo), "quick": args.quick, "reps": reps,
               "duration_s": duration, "skipped_workloads": skipped, "cells": [],
               "failures": [], "known_failures": [],
               "variants": [{"name": v.name, "description": v.description} for v in vs],
               "workloads": [{"name": w.name, "title": w.title} for w in ws
                             if w.name not in skipped],
               "placements": [p.name for p in V.PLACEMENTS]}
    kinds = [k for k in ("plain", "meshd", "meshd-splice", "meshd-mtls")
             if any(c[0].lab == k for c in cells)]
    for k in kinds:
        if os.path.exists(f"{run_dir(LAB_IDS[k])}/topology"):
            log(f"the suite's lab {LAB_IDS[k]} is already running ({run_dir(LAB_IDS[k])}/"
                f"topology exists): another bench.sh, or a leftover of a killed one. If it "
                f"is a leftover: MESHLAB_ID={LAB_IDS[k]} lab/meshlab down, then retry.")
            return 1
    # meshd-l4 is the plain L4 path: meshd's sockmap splice (on by default since
    # --sockmap=auto) is measured apart, by scripts/bench-sockmap.sh. meshd-l7 runs in a
    # third lab with the splice on (--sockmap=auto): its app<->meshd hop is spliced.
    # meshd-mtls: the splice on as in meshd-l7, and identities + the tunnel (MESHLAB_MTLS:
    # meshd-ca's placement of the bench's two workloads).
    def lab_env(k):
        if k == "meshd":
            return {"MESHLAB_SOCKMAP": "off"}
        if k == "meshd-mtls":
            return {"MESHLAB_MTLS": V.mtls_placement_file(workdir, LAB_IDS[k])}
        return {}
    labs = {k: Lab(LAB_IDS[k], repo, ctx.build, workdir, env=lab_env(k)) for k in kinds}
    # Adjacent runs share the machine's state best: order by workload and placement, with
    # the variants side by side, and repeat that whole sequence R times.
    order = sorted(cells, key=lambda c: (ws.index(c[2]), V.PLACEMENTS.index(c[1]),
                                         vs.index(c[0])))
    cellmap = {}
    broken = set()
    t_start = time.time()
    interrupted = False
    try:
        with BpfStats():
            for k in kinds:
                log(f"lab up: {k} ({LAB_IDS[k]})")
                labs[k].up(with_meshd=(k != "plain"))
            done_setups = set()
            for v, _, _ in order:
                if v.lab_setup and (v.lab, v.lab_setup) not in done_setups:
                    v.lab_setup(labs[v.lab], [w for w in ws if w.name not in skipped], workdir)
                    done_setups.add((v.lab, v.lab_setup))
            for rep in range(reps):
                for v, p, w in order:
                    key = (v.name, p.name, w.name)
                    if key in broken:
                        continue
                    cell = cellmap.setdefault(key, {
                        "variant": v.name, "placement": p.name, "workload": w.name,
                        "reps": [], "proxies_hwm_mb": {}})
                    try:
                        result, hwm, cell["dial"] = run_rep(labs[v.lab], ctx, v, p, w, rep,
                                                            duration)
                        cell["reps"].append(result)
                        for name, mb in hwm.items():
                            if mb is not None:
                                cell["proxies_hwm_mb"][name] = max(
                                    mb, cell["proxies_hwm_mb"].get(name) or 0)
                    except Exception as e:  # noqa: BLE001: one broken cell must not stop the suite
                        broken.add(key)
                        detail = str(e) if isinstance(e, BenchError) else \
                            f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
                        msg = f"{v.name} / {p.name} / {w.name}: {detail}"
                        if w.name in v.known_failures:
                            log(f"known limitation: {msg.splitlines()[0]}")
                            results["known_failures"].append(
                                f"{v.name} / {p.name} / {w.name}: {v.known_failures[w.name]}")
                        else:
                            log(f"FAILED {msg}")
                            results["failures"].append(msg)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: tearing the labs down")
    except BenchError as e:
        results["failures"].append(str(e))
        log(f"FAILED {e}")
    finally:
        for lab in labs.values():
            lab.down()
    # A cell that failed in a later repetition is dropped whole: a median over fewer reps
    # than the others would not compare like with like.
    results["cells"] = [c for k, c in cellmap.items() if k not in broken and c["reps"]]
    results["elapsed_s"] = time.time() - t_start
    results["machine"]["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "suite.json"), "w") as f:
        json.dump(results, f, indent=1)
    if interrupted:
        return 130
    report.write(results, args.out)
    log(f"report: {os.path.join(args.out, 'suite.md')} ({results['elapsed_s']:.0f} s; "
        f"logs in {workdir})")
    if results["failures"]:
        log(f"{len(results['failures'])} run(s) failed:")
        for f_ in results["failures"]:
            log("  " + f_.splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
