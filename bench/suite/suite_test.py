#!/usr/bin/python3
"""Unit tests of the suite's pure parts: output parsers (captured real outputs), the
report's statistics and files, the meshd Service YAML, and connrate end to end on
127.0.0.1. Usage: suite_test.py [CONNRATE_BINARY]  (without it the connrate test skips).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import variants as V  # noqa: E402
import workloads as W  # noqa: E402
from lab import BenchError  # noqa: E402

CONNRATE = sys.argv.pop(1) if len(sys.argv) > 1 else None

SOCKPERF = """sockperf: [Total Run] RunTime=1.001 sec; Warm up time=400 msec; SentMessages=158714; ReceivedMessages=158713
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=123191; ReceivedMessages=123191
sockperf: ---> <MAX> observation =  889.429
sockperf: ---> percentile 99.999 =  128.495
sockperf: ---> percentile 99.900 =   12.111
sockperf: ---> percentile 99.000 =    2.428
sockperf: ---> percentile 50.000 =    2.168
"""

WRK = """Running 1s test @ http://10.244.1.12:8081/
  1 threads and 16 connections
  Latency Distribution
     50%   65.00us
     75%   93.00us
     90%  112.00us
     99%    1.74ms
  217149 requests in 1.10s, 19.47MB read
Requests/sec: 197375.88
"""

H2LOAD = """finished in 1.50s, 601264.00 req/s, 53.33MB/s
requests: 601264 total, 601264 started, 601264 done, 601264 succeeded, 0 failed, 0 errored, 0 timeout
time for request:       36us      2.97ms        97us        56us    98.97%
"""


class ParserTest(unittest.TestCase):
    def test_sockperf_reports_full_round_trip(self):
        m = W.BY_NAME["tcp_rr"].parse(SOCKPERF, 1)
        self.assertAlmostEqual(m["rtt_p50_us"], 4.336)  # 2 x sockperf's half round trip
        self.assertAlmostEqual(m["rtt_p99_us"], 4.856)
        self.assertAlmostEqual(m["rtt_p999_us"], 24.222)
        self.assertEqual(m["requests"], 123191)
        self.assertAlmostEqual(m["rt_per_s"], 123191 / 0.55)

    def test_sockperf_garbage_is_an_error(self):
        with self.assertRaises(BenchError):
            W.BY_NAME["tcp_rr"].parse("sockperf: connection refused", 1)

    def test_wrk_units(self):
        m = W.BY_NAME["http1_max"].parse(WRK, 1)
        self.assertEqual(m["p50_us"], 65.0)
        self.assertEqual(m["p99_us"], 1740.0)
        self.assertEqual(m["requests"], 217149)
        self.assertAlmostEqual(m["req_per_s"], 197375.88)

    def test_wrk_errors_fail_the_run(self):
        with self.assertRaises(BenchError):
            W.BY_NAME["http1_max"].parse(WRK + "  Non-2xx or 3xx responses: 5\n", 1)
        with self.assertRaises(BenchError):
            W.BY_NAME["http1_max"].parse(
                WRK + "  Socket errors: connect 0, read 3, write 0, timeout 0\n", 1)

    def test_h2load(self):
        m = W.BY_NAME["h2"].parse(H2LOAD, 1)
        self.assertEqual(m["requests"], 601264)
        self.assertEqual(m["mean_us"], 97.0)
        self.assertEqual(m["max_us"], 2970.0)
        with self.assertRaises(BenchError):
            W.BY_NAME["h2"].parse(H2LOAD.replace("0 failed", "7 failed"), 1)

    def test_iperf3(self):
        out = json.dumps({"end": {"sum_received": {"bits_per_second": 8.5e9, "seconds": 4.0,
                                                   "bytes": 4.25e9}}})
        m = W.BY_NAME["stream"].parse(out, 4)
        self.assertAlmostEqual(m["gbit_s"], 8.5)
        self.assertIsNone(m["requests"])
        with self.assertRaises(BenchError):
            W.BY_NAME["stream"].parse('{"error": "unable to connect"}', 4)

    def test_json_tools(self):
        ol = W.BY_NAME["http1_fixed"].parse(json.dumps(
            {"rate": 1000, "sent": 4000, "ok": 4000, "errors": 0, "p50_ms": 0.1,
             "p90_ms": 0.2, "p99_ms": 0.5, "p999_ms": 1.5, "max_ms": 3}), 4)
        self.assertAlmostEqual(ol["p99_us"], 500.0)
        self.assertEqual(ol["requests"], 4000)
        with self.assertRaises(BenchError):
            W.BY_NAME["http1_fixed"].parse(json.dumps(
                {"rate": 1000, "sent": 4000, "ok": 3990, "errors": 10, "p50_ms": 0.1,
                 "p90_ms": 0.2, "p99_ms": 0.5, "p999_ms": 1.5, "max_ms": 3}), 4)
        g = W.BY_NAME["grpc"].parse('{"rps": 1500.5, "ok": 3001, "errors": 0, '
                                    '"p50_ms": 2.0, "p99_ms": 9.0}', 2)
        self.assertEqual((g["requests"], g["p99_us"]), (3001, 9000.0))
        with self.assertRaises(BenchError):
            W.BY_NAME["conn_rate"].parse('{"conns": 10, "errors": 2, "seconds": 1, '
                                         '"conn_per_s": 10, "p50_ms": 1, "p99_ms": 2}', 1)


def fake_cell(variant, placement, workload, values, proxy_mb=None):
    reps = [{"rep": i, "metrics": {"requests": 1000, **v},
             "cpu_s": {"client": 0.1, "server": 0.1, "proxy:x": 0.05 if proxy_mb else 0.0},
             "bpf_runs": 0} for i, v in enumerate(values)]
    return {"variant": variant, "placement": placement, "workload": workload, "reps": reps,
            "proxies_hwm_mb": {"x": proxy_mb} if proxy_mb else {}}


class ReportTest(unittest.TestCase):
    def results(self):
        cells = [fake_cell("direct", "same-node", "tcp_rr",
                           [{"rtt_p50_us": v, "rtt_p99_us": 2 * v} for v in (50, 40, 60)]),
                 fake_cell("sidecar", "same-node", "tcp_rr",
                           [{"rtt_p50_us": v, "rtt_p99_us": 2 * v} for v in (150, 100, 400)],
                           proxy_mb=15.5)]
        return {"machine": {"date": "d", "commit": "c", "kernel": "k", "cpus": 2,
                            "cpu_model": "m", "mem_gib": 1, "loadavg_start": [0, 0, 0]},
                "quick": False, "reps": 3, "duration_s": 1, "elapsed_s": 9,
                "skipped_workloads": {}, "failures": [], "known_failures": [],
                "cells": cells, "variants": [{"name": "direct", "description": "a"},
                                             {"name": "sidecar", "description": "b"}],
                "workloads": [{"name": "tcp_rr", "title": "TCP RR"}],
                "placements": ["same-node", "cross-node"]}

    def test_median_and_spread(self):
        r = self.results()
        self.assertEqual(report.stat(r["cells"][1], "rtt_p50_us"), (150, 100, 400))
        self.assertAlmostEqual(report.ratio(r, "sidecar", "same-node", "tcp_rr", "rtt_p50_us"),
                               3.0)
        # mesh CPU counts only proxies/meshd/bpf: 0.05 s over 1000 requests = 50 ms per 1k
        self.assertAlmostEqual(report.cpu_per_1k(r["cells"][1], True)[0], 50.0)
        self.assertAlmostEqual(report.cpu_per_1k(r["cells"][1], False)[0], 250.0)

    def test_writes_markdown_and_plots(self):
        with tempfile.TemporaryDirectory() as d:
            report.write(self.results(), d)
            with open(os.path.join(d, "suite.md")) as f:
                md = f.read()
            self.assertIn("| sidecar | same-node | 3.00× | 3.00× |", md)
            self.assertIn("150 (100–400)", md)
            for png in ("latency.png", "cpu_mem.png"):
                self.assertGreater(os.path.getsize(os.path.join(d, "suite", png)), 1000)


class VariantsTest(unittest.TestCase):
    def test_meshd_services_cover_every_placement_and_port(self):
        y = V.meshd_services_yaml(W.WORKLOADS)
        for p in V.PLACEMENTS:
            self.assertIn(f"clusterIP: {p.vip}", y)
            self.assertIn(f'addresses: ["{p.server_ip}"]', y)
        for w in W.WORKLOADS:
            self.assertIn(f"port: {w.port},", y)

    def test_meshd_l7_binds_a_route_to_every_port_of_its_own_vips(self):
        y = V.meshd_l7_yaml(W.WORKLOADS)
        ports = sorted({w.port for w in W.WORKLOADS})
        self.assertEqual(y.count("kind: HTTPRoute"), len(ports) * len(V.PLACEMENTS))
        for p in V.PLACEMENTS:
            self.assertIn(f"clusterIP: {V.L7_VIPS[p.name]}", y)
            self.assertNotEqual(V.L7_VIPS[p.name], p.vip)  # meshd-l4 keeps its L4 VIP
            for x in ports:
                self.assertIn(f'parentRefs: [{{group: "", kind: Service, name: bench-l7-{p.name}, '
                              f'port: {x}}}]', y)

    def test_haproxy_configs_with_and_without_mtls_pass_haproxy_check(self):
        """Every HAProxy config the sidecar variants render (each workload protocol, plain
        and mTLS, outbound and inbound) is accepted by `haproxy -c`, and the mTLS ones
        require TLS 1.3 and a verified client certificate."""

        class FakeLab:
            def run(self, args, what, **_):
                subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

        class FakeRun:
            pass

        with tempfile.TemporaryDirectory() as d:
            for w in {w.proto: w for w in W.WORKLOADS}.values():
                run = FakeRun()
                run.workload, run.workdir, run.lab, run.tag = w, d, FakeLab(), f"t-{w.proto}"
                client_pem, server_pem = V.sidecar_pems(run)
                for tls_bind, tls_server in (("", ""), ("", client_pem), (server_pem, "")):
                    cfg = V.haproxy_config(run, "x", "127.0.0.1", 15001, "127.0.0.1", 8080, 0,
                                           tls_bind, tls_server)
                    with open(cfg) as f:
                        text = "".join(x for x in f if not x.startswith("#"))
                    if tls_bind or tls_server:
                        self.assertIn("verify required ssl-min-ver TLSv1.3", text)
                        self.assertEqual("alpn h2" in text, w.proto == "h2")
                    else:
                        self.assertNotIn("ssl crt", text)
                    r = subprocess.run(["haproxy", "-c", "-q", "-f", cfg], capture_output=True,
                                       text=True)
                    self.assertEqual(r.returncode, 0, f"{w.proto} {cfg}: {r.stderr}")

    def test_every_variant_has_its_own_plot_colour(self):
        for v in V.VARIANTS:
            self.assertIn(v.name, report.COLORS)

    def test_variant_names_unique(self):
        self.assertEqual(len(V.BY_NAME), len(V.VARIANTS))
        self.assertEqual(len(W.BY_NAME), len(W.WORKLOADS))


@unittest.skipUnless(CONNRATE, "pass the connrate binary to run")
class ConnrateTest(unittest.TestCase):
    def test_counts_connections_on_loopback(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        server = subprocess.Popen([CONNRATE, "server", "--port", str(port)])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.02)
            out = subprocess.run([CONNRATE, "client", "--target", f"127.0.0.1:{port}",
                                  "--duration", "0.3", "--concurrency", "2", "-o", "json"],
                                 capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stderr)
            d = json.loads(out.stdout)
            self.assertGreater(d["conns"], 10)
            self.assertEqual(d["errors"], 0)
            # "seconds" is printed to 1 ms: allow that much rounding
            self.assertAlmostEqual(d["conn_per_s"], d["conns"] / d["seconds"],
                                   delta=0.01 * d["conn_per_s"])
        finally:
            server.terminate()
            server.wait(timeout=5)
        # nobody listening: every connect fails, exit 1
        out = subprocess.run([CONNRATE, "client", "--target", f"127.0.0.1:{port}",
                              "--duration", "0.2", "-o", "json"], capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 1)
        self.assertGreater(json.loads(out.stdout)["errors"], 0)


if __name__ == "__main__":
    unittest.main()
