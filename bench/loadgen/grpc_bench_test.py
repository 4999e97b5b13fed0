#!/usr/bin/python3
"""ctest for grpc_bench.py: start the server on 127.0.0.1 with a kernel-chosen port, run
the client for 1 s, and check calls succeeded and none failed; then stop the server with
SIGTERM and check it exits cleanly. Usage: grpc_bench_test.py PATH/TO/grpc_bench.py"""

import json
import signal
import subprocess
import sys


def main():
    tool = sys.argv[1]
    server = subprocess.Popen([sys.executable, tool, "server", "--port", "0", "--bind",
                               "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:"), "server said: %r" % line
        port = int(line.rsplit(":", 1)[1])
        out = subprocess.run([sys.executable, tool, "client", "--target", "127.0.0.1:%d" % port,
                              "--duration", "1", "--concurrency", "4", "--size", "100",
                              "--warmup", "0.2", "-o", "json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        print(r)
        assert r["ok"] > 0, r
        assert r["errors"] == 0, r
        assert r["rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"], r
        # A wrong port must fail fast with a clear message, not hang or report zeros.
        bad = subprocess.run([sys.executable, tool, "client", "--target", "127.0.0.1:1",
                              "--duration", "1", "--concurrency", "1", "--connect-timeout", "1",
                              "-o", "json"], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "cannot connect" in bad.stderr, bad
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError("server did not exit within 10 s of SIGTERM")
    assert rc == 0, "server exit status %d" % rc
    print("PASS")


if __name__ == "__main__":
    main()
