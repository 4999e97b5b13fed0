#!/usr/bin/python3
"""gRPC unary benchmark: an echo server and a closed-loop client (python3-grpcio).

No .proto and no code generation: the service is registered through grpc's generic
handlers with identity (de)serializers, so requests and responses are raw bytes. The
method is "/bench.Echo/Unary"; the server answers each request with the same bytes.

  grpc_bench.py server --port P [--bind ADDR]
      Serves h2c (plaintext HTTP/2) until SIGTERM or SIGINT. With --port 0 the kernel
      picks a port. Prints one line "listening on ADDR:PORT" once it accepts calls.

  grpc_bench.py client --target ADDR:PORT --duration S --concurrency N
                       [--size 64] [--warmup S] [-o json|text]
      Closed loop: N calls in flight at all times (grpc futures; each completion issues
      the next call). Calls completing in the warmup are not counted. Prints
      {"rps", "ok", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", ...}.
      rps = successful calls / measured seconds. Being closed-loop, latencies here do
      hide queueing at a saturated server (see openloop.cc); this measures capacity.

Exit status: 0 on success, 1 if the target cannot be reached, 2 on bad arguments.
"""

import argparse
import json
import math
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = "Unary"
FULL_METHOD = "/%s/%s" % (SERVICE, METHOD)


def serve(args):
    def echo(request, _context):
        return request

    # Identity (de)serializers: None passes bytes through unchanged.
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {METHOD: grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None,
                                                     response_serializer=None)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         handlers=(handler,),
                         options=[("grpc.so_reuseport", 0)])
    bind = "[%s]" % args.bind if ":" in args.bind else args.bind
    port = server.add_insecure_port("%s:%d" % (bind, args.port))
    if port == 0:
        print("grpc_bench: cannot listen on %s:%d (port in use? address not local?)"
              % (bind, args.port), file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print("listening on %s:%d" % (bind, port), flush=True)
    stop.wait()
    server.stop(grace=1).wait()
    return 0


def percentile(sorted_values, p):
    """Nearest rank, as openloop reports it."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values) - 1e-9))
    return sorted_values[rank - 1]


class ClosedLoop:
    """Keeps `concurrency` calls in flight until the deadline, recording latencies."""

    def __init__(self, call, payload, concurrency, measure_from, deadline, timeout):
        self.call = call
        self.payload = payload
        self.concurrency = concurrency
        self.measure_from = measure_from
        self.deadline = deadline
        self.timeout = timeout
        self.lock = threading.Lock()
        self.latencies = []
        self.ok = 0
        self.errors = 0
        self.first_error = None
        self.in_flight = 0
        self.done = threading.Event()

    def start(self):
        with self.lock:
            self.in_flight = self.concurrency
        for _ in range(self.concurrency):
            self._issue()

    def _issue(self):
        start = time.monotonic()
        fut = self.call.future(self.payload, timeout=self.timeout)
        fut.add_done_callback(lambda f: self._on_done(f, start))

    def _on_done(self, fut, start):
        end = time.monotonic()
        err = fut.exception()
        with self.lock:
            if start >= self.measure_from:
                if err is None and fut.result() == self.payload:
                    self.ok += 1
                    self.latencies.append(end - start)
                else:
                    self.errors += 1
                    if self.first_error is None:
                        self.first_error = (str(err.code()) + ": " + str(err.details())
                                            if isinstance(err, grpc.RpcError) and err is not None
                                            else "response differs from the payload sent")
            again = end < self.deadline
            if not again:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self.done.set()
        if again:
            self._issue()


def client(args):
    channel = grpc.insecure_channel(args.target)
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        print("grpc_bench: cannot connect to %s within %gs: is the server running and the "
              "port reachable?" % (args.target, args.connect_timeout), file=sys.stderr)
        return 1
    call = channel.unary_unary(FULL_METHOD, request_serializer=None,
                               response_deserializer=None)
    payload = bytes((i * 7 + 1) & 0xFF for i in range(args.size))
    t0 = time.monotonic()
    measure_from = t0 + args.warmup
    deadline = measure_from + args.duration
    loop = ClosedLoop(call, payload, args.concurrency, measure_from, deadline, args.timeout)
    loop.start()
    loop.done.wait(timeout=args.warmup + args.duration + args.timeout + 5)
    # Calls complete a little past the deadline; the window ends at the last completion.
    measured_s = max(time.monotonic() - measure_from, 1e-9)
    channel.close()

    lat = sorted(loop.latencies)
    ms = lambda s: round(s * 1000.0, 3)
    out = {
        "rps": round(loop.ok / measured_s, 1),
        "ok": loop.ok,
        "errors": loop.errors,
        "p50_ms": ms(percentile(lat, 50)),
        "p90_ms": ms(percentile(lat, 90)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1]) if lat else 0.0,
        "concurrency": args.concurrency,
        "size": args.size,
        "duration_s": args.duration,
        "first_error": loop.first_error,
    }
    if args.output == "json":
        print(json.dumps(out))
    else:
        print("target %s  concurrency %d  size %d B  %gs\n"
              "rps %.1f  ok %d  errors %d\n"
              "latency (ms): p50 %.3f  p90 %.3f  p99 %.3f  max %.3f"
              % (args.target, args.concurrency, args.size, args.duration, out["rps"], out["ok"],
                 out["errors"], out["p50_ms"], out["p90_ms"], out["p99_ms"], out["max_ms"]))
        if loop.first_error:
            print("first error: " + loop.first_error)
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server", help="echo server (h2c)")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--workers", type=int, default=16, help="handler threads")
    c = sub.add_parser("client", help="closed-loop unary client")
    c.add_argument("--target", required=True, help="ADDR:PORT")
    c.add_argument("--duration", type=float, required=True, help="measured seconds")
    c.add_argument("--concurrency", type=int, required=True, help="calls in flight")
    c.add_argument("--size", type=int, default=64, help="payload bytes (echoed back)")
    c.add_argument("--warmup", type=float, default=0.0, help="seconds not measured")
    c.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    c.add_argument("--connect-timeout", type=float, default=5.0)
    c.add_argument("-o", "--output", choices=("json", "text"), default="text")
    args = p.parse_args(argv)
    if args.mode == "client" and (args.duration <= 0 or args.concurrency < 1 or args.size < 0
                                  or args.warmup < 0):
        p.error("need --duration > 0, --concurrency >= 1, --size >= 0, --warmup >= 0")
    return serve(args) if args.mode == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
