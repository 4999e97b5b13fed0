"""Workload definitions: what the server pod runs, what the client runs, how its output
becomes numbers. One entry per workload in WORKLOADS.

Every metric dict a parser returns has "requests" (transactions in the measured window,
for CPU per 1000 requests; None where it means nothing, e.g. a byte stream) plus its own
metrics. Latencies are in microseconds (*_us), rates per second.
"""
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Callable, List

from lab import BenchError


@dataclass
class Workload:
    name: str
    title: str
    proto: str  # "tcp" | "http" | "h2": picks HAProxy's mode and template
    port: int  # the server's listening port in the server pod
    server: Callable  # (ctx) -> argv of the server
    client: Callable  # (ctx, addr, port, duration) -> argv of the client
    parse: Callable  # (stdout, duration) -> metrics dict
    metrics: List[str]  # (key) shown in the tables, the first is the headline
    higher_is_better: dict = field(default_factory=dict)
    available: Callable = lambda ctx: None  # -> None, or why it cannot run
    client_timeout_extra: float = 20


def _sockperf_parse(out, duration):
    pct = {}
    for m in re.finditer(r"percentile\s+([\d.]+)\s+=\s+([\d.]+)", out):
        pct[float(m.group(1))] = float(m.group(2))
    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); "
                      r"ReceivedMessages=(\d+)", out)
    if not valid or 50.0 not in pct:
        raise BenchError(f"cannot parse sockperf output:\n{out[-1500:]}")
    secs, received = float(valid.group(1)), int(valid.group(3))
    # sockperf reports half the round trip; the suite reports the round trip.
    return {"requests": received, "window_s": secs, "rtt_p50_us": 2 * pct[50.0],
            "rtt_p99_us": 2 * pct[99.0], "rtt_p999_us": 2 * pct[99.9],
            "rt_per_s": received / secs if secs else 0}


def _iperf_parse(out, duration):
    try:
        data = json.loads(out)
        bps = data["end"]["sum_received"]["bits_per_second"]
        secs = data["end"]["sum_received"]["seconds"]
        nbytes = data["end"]["sum_received"]["bytes"]
    except (ValueError, KeyError) as e:
        raise BenchError(f"cannot parse iperf3 -J output ({e}):\n{out[-1500:]}")
    return {"requests": None, "window_s": secs, "gbit_s": bps / 1e9, "gbytes": nbytes / 1e9}


def _connrate_parse(out, duration):
    try:
        d = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"cannot parse connrate output ({e}):\n{out[-1500:]}")
    if d["errors"]:
        raise BenchError(f"connrate saw {d['errors']} failed connections:\n{out[-500:]}")
    return {"requests": d["conns"], "window_s": d["seconds"], "conn_per_s": d["conn_per_s"],
            "conn_p50_us": d["p50_ms"] * 1000, "conn_p99_us": d["p99_ms"] * 1000}


_UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _wrk_time(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * _UNITS_US[m.group(2)] if m else None


def _wrk_parse(out, duration):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    pct = {m.group(1): _wrk_time(m.group(2))
           for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)
    if not rps or not total or "50" not in pct:
        raise BenchError(f"cannot parse wrk output:\n{out[-1500:]}")
    if errors or (sock_err and sum(int(x) for x in sock_err.groups()) > 0):
        raise BenchError(f"wrk saw errors:\n{out[-1500:]}")
    return {"requests": int(total.group(1)), "window_s": duration,
            "req_per_s": float(rps.group(1)), "p50_us": pct["50"], "p99_us": pct.get("99")}


def _openloop_parse(out, duration):
    try:
        d = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"cannot parse openloop -o json output ({e}):\n{out[-1500:]}")
    if d.get("errors"):
        raise BenchError(f"openloop saw {d['errors']} errors:\n{out[-500:]}")
    return {"requests": d["ok"], "window_s": duration, "rate": d["rate"],
            "p50_us": d["p50_ms"] * 1000, "p90_us": d["p90_ms"] * 1000,
            "p99_us": d["p99_ms"] * 1000, "p999_us": d["p999_ms"] * 1000}


def _h2load_parse(out, duration):
    reqs = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if not reqs or not rps or not t:
        raise BenchError(f"cannot parse h2load output:\n{out[-1500:]}")
    if int(reqs.group(5)) or int(reqs.group(6)):
        raise BenchError(f"h2load saw failed/errored requests:\n{out[-1500:]}")
    return {"requests": int(reqs.group(4)), "window_s": duration,
            "req_per_s": float(rps.group(1)), "mean_us": _wrk_time(t.group(3)),
            "max_us": _wrk_time(t.group(2))}


def _grpc_parse(out, duration):
    try:
        d = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"cannot parse grpc_bench.py -o json output ({e}):\n{out[-1500:]}")
    if d.get("errors"):
        raise BenchError(f"grpc_bench.py saw {d['errors']} errors:\n{out[-500:]}")
    return {"requests": d["ok"], "window_s": duration, "req_per_s": d["rps"],
            "p50_us": d["p50_ms"] * 1000, "p99_us": d["p99_ms"] * 1000}


def _need_bin(path, hint):
    return lambda ctx: None if os.access(path(ctx), os.X_OK) else f"{path(ctx)} not built ({hint})"


def _need_tool(name):
    return lambda ctx: None if shutil.which(name) else f"{name} not installed (scripts/setup.sh)"


def _openloop(ctx):
    return os.path.join(ctx.build, "bench", "loadgen", "openloop")


def _grpc_bench(ctx):
    return os.path.join(ctx.repo, "bench", "loadgen", "grpc_bench.py")


def _grpc_available(ctx):
    if not os.path.exists(_grpc_bench(ctx)):
        return f"{_grpc_bench(ctx)} missing"
    return None


# Fixed load shapes, identical for every variant (fairness): connection counts, message
# sizes and rates are constants here, not per variant.
HTTP_CONNS = 16
OPENLOOP_RATE = 1000
H2_CLIENTS, H2_STREAMS = 4, 16
GRPC_CONCURRENCY = 8
CONNRATE_THREADS = 4

WORKLOADS = [
    Workload(
        "tcp_rr", "TCP request/response, 64 B (sockperf ping-pong)", "tcp", 11111,
        server=lambda ctx: ["sockperf", "server", "--tcp", "-i", "0.0.0.0", "-p", "11111"],
        client=lambda ctx, a, p, d: ["sockperf", "ping-pong", "--tcp", "-i", a, "-p", str(p),
                                     "-t", str(d), "-m", "64"],
        parse=_sockperf_parse,
        metrics=["rtt_p50_us", "rtt_p99_us", "rtt_p999_us", "rt_per_s"],
        higher_is_better={"rt_per_s": True},
        available=_need_tool("sockperf")),
    Workload(
        "stream", "Stream throughput, 1 TCP stream (iperf3)", "tcp", 5201,
        server=lambda ctx: ["iperf3", "-s", "-p", "5201"],
        client=lambda ctx, a, p, d: ["iperf3", "-c", a, "-p", str(p), "-t", str(d), "-J"],
        parse=_iperf_parse, metrics=["gbit_s"], higher_is_better={"gbit_s": True},
        available=_need_tool("iperf3")),
    Workload(
        "conn_rate", f"New connections/s, {CONNRATE_THREADS} threads, 1 B exchange (connrate)",
        "tcp", 7000,
        server=lambda ctx: [os.path.join(ctx.build, "bench/suite/connrate"), "server",
                            "--port", "7000"],
        client=lambda ctx, a, p, d: [os.path.join(ctx.build, "bench/suite/connrate"), "client",
                                     "--target", f"{a}:{p}", "--duration", str(d),
                                     "--concurrency", str(CONNRATE_THREADS), "-o", "json"],
        parse=_connrate_parse, metrics=["conn_per_s", "conn_p50_us", "conn_p99_us"],
        higher_is_better={"conn_per_s": True},
        available=_need_bin(lambda ctx: os.path.join(ctx.build, "bench/suite/connrate"),
                            "ninja connrate")),
    Workload(
        "http1_max", f"HTTP/1.1 capacity, {HTTP_CONNS} keep-alive conns (wrk -t1)", "http", 8081,
        server=lambda ctx: [os.path.join(ctx.build, "tools/mesh-echo"), "--name", "bench",
                            "--http", "8081"],
        client=lambda ctx, a, p, d: ["wrk", "-t1", f"-c{HTTP_CONNS}", f"-d{d}s", "--latency",
                                     f"http://{a}:{p}/"],
        parse=_wrk_parse, metrics=["req_per_s", "p50_us", "p99_us"],
        higher_is_better={"req_per_s": True}, available=_need_tool("wrk")),
    Workload(
        "http1_fixed", f"HTTP/1.1 latency at {OPENLOOP_RATE} rps, open loop (openloop)", "http",
        8081,
        server=lambda ctx: [os.path.join(ctx.build, "tools/mesh-echo"), "--name", "bench",
                            "--http", "8081"],
        client=lambda ctx, a, p, d: [_openloop(ctx), "--target", f"{a}:{p}", "--rate",
                                     str(OPENLOOP_RATE), "--duration", str(d), "--connections",
                                     str(HTTP_CONNS), "--warmup", "1", "-o", "json"],
        parse=_openloop_parse, metrics=["p50_us", "p99_us", "p999_us"],
        available=_need_bin(_openloop, "bench/loadgen: ninja openloop")),
    Workload(
        "h2", f"HTTP/2 h2c, {H2_CLIENTS} conns x {H2_STREAMS} streams (h2load vs nghttpd)", "h2",
        8443,
        server=lambda ctx: ["nghttpd", "--no-tls", "-d", ctx.docroot, "8443"],
        client=lambda ctx, a, p, d: ["h2load", "-c", str(H2_CLIENTS), "-m", str(H2_STREAMS),
                                     "-D", str(d), "--warm-up-time=500ms", f"http://{a}:{p}/index.html"],
        parse=_h2load_parse, metrics=["req_per_s", "mean_us"],
        higher_is_better={"req_per_s": True}, available=_need_tool("h2load")),
    Workload(
        "grpc", f"gRPC unary, concurrency {GRPC_CONCURRENCY} (python3-grpcio)", "h2", 50051,
        server=lambda ctx: ["/usr/bin/python3", _grpc_bench(ctx), "server", "--port", "50051"],
        client=lambda ctx, a, p, d: ["/usr/bin/python3", _grpc_bench(ctx), "client", "--target",
                                     f"{a}:{p}", "--duration", str(d), "--concurrency",
                                     str(GRPC_CONCURRENCY), "--warmup", "0.5", "-o", "json"],
        parse=_grpc_parse, metrics=["req_per_s", "p50_us", "p99_us"],
        higher_is_better={"req_per_s": True}, available=_grpc_available),
]

BY_NAME = {w.name: w for w in WORKLOADS}
