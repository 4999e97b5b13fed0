#!/usr/bin/env bash
# Root end-to-end test of the L7 path on the lab (see tests/root/lab.cmake): real curl in
# the pods, the kernel redirect into each node's meshd, HTTPRoute routing, and the
# Istio request metrics; HTTP/2 (curl --http2-prior-knowledge, h2load) to an nghttpd and
# gRPC (python3-grpcio: unary, server/client/bidi streaming, an error status) to a
# python server, both started in pods by this script; request-level resilience (retries,
# retries running out, the request breaker, L7 outlier ejection into the kernel's state, a
# fault delay) against python HTTP servers it starts; the JSON access log. Resources:
# tests/root/lab/l7.yaml.
#
# Canary tolerance: 1000 requests each pick web-v2 with p = 0.1, so its share has a
# standard deviation of sqrt(0.1 * 0.9 / 1000) = 0.95 points; +-3.5 points is 3.7 sd (a
# correct split fails with probability ~2e-4), while a split that ignored the weights
# (50%) or routed everything to one side fails by far.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
export MESHLAB_QUIET=1
export MESHLAB_ACCESS_LOG=1 # each meshd writes /run/meshd-lab/nN-access.log (checked in 13.)
MESHLAB=$REPO/lab/meshlab
CLIENT=$MESHD_BUILD_DIR/tools/mesh-client
YAML=$REPO/tests/root/lab/l7.yaml

# shellcheck source=tests/root/lab/lib.sh
source "$REPO/tests/root/lab/lib.sh"

if ! "$MESHLAB" up --nodes 2 --pods 2; then
  fail "meshlab up"
  echo "0 passed, 1 failed"
  exit 1
fi
check "meshctl apply l7.yaml on both nodes" "$MESHLAB" apply "$YAML"

# The apply returns once meshd accepted it; wait for the route to answer.
ready=0
for _ in $(seq 1 100); do
  if [[ $(in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://10.96.0.20/ 2>/dev/null) == 200 ]]; then
    ready=1
    break
  fi
  sleep 0.1
done
if ((ready)); then pass "web-l7 answers 200 through meshd within 10 s of the apply"; else
  fail "web-l7 answers 200 through meshd within 10 s of the apply"
  in_pod n1-p1 -- curl -sv --max-time 2 http://10.96.0.20/ 2>&1 | tail -n 20
  tail -n 30 /run/meshd-lab/n1.log
fi

# 1. Canary by weight over one keep-alive connection: every request is routed on its own.
urls=()
for _ in $(seq 1 1000); do urls+=(http://10.96.0.20/); done
out=$(in_pod n1-p1 -- curl -s --max-time 120 "${urls[@]}")
v1=$(grep -cE '^n[12]-p1$' <<<"$out")
v2=$(grep -cE '^n[12]-p2$' <<<"$out")
if ((v1 + v2 == 1000)); then pass "1000 requests answered (v1 $v1, v2 $v2)"; else
  fail "1000 requests answered: got v1 $v1 + v2 $v2"
fi
if ((v2 >= 65 && v2 <= 135)); then pass "canary share of web-v2 is 10% +-3.5 (got $((v2 / 10)).$((v2 % 10))%)"; else
  fail "canary share of web-v2 is 10% +-3.5 (got $v2 of 1000)"
fi
conns=$(in_pod n1-p1 -- curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects} ' http://10.96.0.20/ http://10.96.0.20/ http://10.96.0.20/)
check "keep-alive: three requests on one client connection (num_connects '$conns')" test "$conns" == "1 0 0 "

# 2. Header routing.
out=$(in_pod n2-p1 -- curl -s --max-time 30 -H 'x-canary: true' "${urls[@]:0:50}")
check "x-canary: true -> web-v2 only (50/50)" test "$(grep -cE '^n[12]-p2$' <<<"$out")" == 50

# 3. What the upstream received: x-request-id added, traceparent passed, Host kept.
head=$(in_pod n1-p2 -- curl -s --max-time 5 -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' http://10.96.0.20/headers)
check "upstream got an x-request-id" grep -qiE '^x-request-id: [0-9a-f-]{36}' <<<"$head"
check "upstream got the traceparent unchanged" grep -qi '^traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' <<<"$head"
check "upstream got Host: 10.96.0.20" grep -qi '^host: 10.96.0.20' <<<"$head"
id=$(in_pod n1-p2 -- curl -s --max-time 5 -H 'x-request-id: keep-me-1' http://10.96.0.20/headers | grep -i '^x-request-id:' | tr -d '\r')
check "a client's x-request-id is kept ('$id')" test "$id" == "x-request-id: keep-me-1"

# 4. No route -> 404; a matched rule's header filter reaches the upstream.
check "api-l7 /other -> 404 (no route)" \
  test "$(in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://10.96.0.25/other)" == 404
check "api-l7 /api/headers -> upstream got x-routed-by: api-l7" \
  grep -qi '^x-routed-by: api-l7' <<<"$(in_pod n1-p1 -- curl -s --max-time 5 http://10.96.0.25/api/headers)"

# 5. Upstream refuses -> 503 (flag UF), no hang.
check "web-dead -> 503" \
  test "$(in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 15 http://10.96.0.20/dead)" == 503

# 6. A server-first protocol through an HTTPRoute-bound service: the banner arrives
#    without any client byte (mesh-client tcp reads the name before writing).
out=$(in_pod n1-p1 -- "$CLIENT" tcp 10.96.0.23:9000 -n 5 --timeout-ms 3000 -o json 2>&1)
check "server-first banner relayed through meshd (5/5 from n2-p2)" grep -q '"n2-p2": 5' <<<"$out"
check "the app sees the VIP as its peer" grep -q '"ok": 5,.*"peer_mismatches": 0' <<<"$(tr -d '\n' <<<"$out")"

# 7. Istio request metrics on node 1's meshd. As in Istio, destination_service is the
#    Service the request was routed to (web-v1 / web-v2), not the one the app called.
metrics=$(in_pod n1 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics)
routed=$(grep '^istio_requests_total{' <<<"$metrics" | grep -E 'destination_service_name="web-v[12]"' | grep 'response_code="200"')
ok_line=$(grep 'source_workload="n1-p1"' <<<"$routed" | head -n 1)
count=0
for l in $(awk '{print $NF}' <<<"$routed"); do count=$((count + l)); done
check "istio_requests_total counts the routed 200s on node 1 (>= 1000, got $count)" test "$count" -ge 1000
check "istio_requests_total labels: reporter, source workload, protocol" \
  grep -q 'reporter="source".*source_workload="n1-p1".*request_protocol="http"' <<<"$ok_line"
# web-dead refuses every connect: Istio's default retry policy (2 retries on
# connect-failure) runs out, so the flags are UF and URX (Envoy's order).
check "a 503 UF (retries ran out: URX) is counted with its flags" \
  grep -q 'response_code="503".*response_flags="UF,URX"' <<<"$(grep '^istio_requests_total{' <<<"$metrics")"
check "a 404 NR is counted with its flag" \
  grep -q 'response_code="404".*response_flags="NR"' <<<"$(grep '^istio_requests_total{' <<<"$metrics")"

# 8. HTTP/2 with prior knowledge (h2c) through meshd: h2 in, h2 out, to nghttpd in n2-p2.
mkdir -p "$TMP/www"
echo "hello over h2" >"$TMP/www/index.html"
in_pod n2-p2 -- nghttpd --no-tls -d "$TMP/www" 8090 >"$TMP/nghttpd.log" 2>&1 &
bg_pids+=($!)
ready=0
for _ in $(seq 1 100); do
  if [[ $(in_pod n1-p1 -- curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code}' --max-time 2 http://10.96.0.27/ 2>/dev/null) == 200 ]]; then
    ready=1
    break
  fi
  sleep 0.1
done
check "nghttpd answers through meshd over h2c within 10 s" test "$ready" == 1
out=$(in_pod n1-p1 -- curl -s --http2-prior-knowledge --max-time 5 -w '%{http_code} %{http_version}' http://10.96.0.27/index.html)
check "curl --http2-prior-knowledge -> 200 over HTTP/2 with the file ('$(tr '\n' '|' <<<"$out")')" \
  test "$out" == $'hello over h2\n200 2'
out=$(in_pod n1-p1 -- h2load -n 2000 -c 10 -m 10 http://10.96.0.27/index.html 2>&1)
check "h2load: 2000 requests over 10 h2c clients, 0 failed" grep -q '2000 succeeded, 0 failed' <<<"$out"
grep -E '^(requests|status codes):' <<<"$out" | sed 's/^/  /'

# 9. gRPC through a GRPCRoute (grpc-l7): stubs generated now from a tiny proto, a python
#    server in n2-p1, a python client in n1-p1 (its node's meshd does the L7 work).
cat >"$TMP/lab.proto" <<'PROTO'
syntax = "proto3";
package lab;
message Msg { string text = 1; int32 n = 2; }
service Echo {
  rpc Unary(Msg) returns (Msg);
  rpc ServerStream(Msg) returns (stream Msg);
  rpc ClientStream(stream Msg) returns (Msg);
  rpc Bidi(stream Msg) returns (stream Msg);
  rpc Fail(Msg) returns (Msg);
}
PROTO
cat >"$TMP/grpc_server.py" <<'PY'
import sys
from concurrent import futures
sys.path.insert(0, sys.argv[1])
import grpc, lab_pb2, lab_pb2_grpc

class Echo(lab_pb2_grpc.EchoServicer):
    def Unary(self, req, ctx):
        return lab_pb2.Msg(text="unary:" + req.text)
    def ServerStream(self, req, ctx):
        for i in range(req.n):
            yield lab_pb2.Msg(text="%s-%d" % (req.text, i), n=i)
    def ClientStream(self, it, ctx):
        texts = [m.text for m in it]
        return lab_pb2.Msg(text=",".join(texts), n=len(texts))
    def Bidi(self, it, ctx):
        for m in it:
            yield lab_pb2.Msg(text="echo:" + m.text, n=m.n)
    def Fail(self, req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
lab_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
server.add_insecure_port("0.0.0.0:%s" % (sys.argv[2] if len(sys.argv) > 2 else "50051"))
server.start()
server.wait_for_termination()
PY
cat >"$TMP/grpc_client.py" <<'PY'
import queue, sys
sys.path.insert(0, sys.argv[1])
import grpc, lab_pb2, lab_pb2_grpc
Msg = lab_pb2.Msg
target = sys.argv[2] if len(sys.argv) > 2 else "10.96.0.26:50051"
ch = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
grpc.channel_ready_future(ch).result(timeout=10)
stub = lab_pb2_grpc.EchoStub(ch)
print("unary", stub.Unary(Msg(text="hi"), timeout=5).text)
print("server-stream", ",".join(m.text for m in stub.ServerStream(Msg(text="s", n=5), timeout=5)))
r = stub.ClientStream(iter([Msg(text=t) for t in "abc"]), timeout=5)
print("client-stream", r.text, r.n)
# Bidi, interleaved: each reply arrives before the next message is sent, so nothing on
# the way may hold the stream's bytes back until it ends.
q = queue.Queue()
def gen():
    while True:
        m = q.get()
        if m is None:
            return
        yield m
call = stub.Bidi(gen(), timeout=10)
got = []
for t in ["x", "y", "z"]:
    q.put(Msg(text=t))
    got.append(next(call).text)
q.put(None)
rest = list(call)
print("bidi", ",".join(got), len(rest))
try:
    stub.Fail(Msg(text="f"), timeout=5)
    print("fail none")
except grpc.RpcError as e:
    print("fail", e.code().name, e.details())
PY
if /usr/bin/python3 -m grpc_tools.protoc -I "$TMP" --python_out="$TMP" --grpc_python_out="$TMP" "$TMP/lab.proto"; then
  in_pod n2-p1 -- /usr/bin/python3 "$TMP/grpc_server.py" "$TMP" >"$TMP/grpc_server.log" 2>&1 &
  bg_pids+=($!)
  # The server is up once its port accepts (python and grpcio take a while to start on a
  # busy machine; meshd would answer UNAVAILABLE/UF meanwhile, as it should).
  up=0
  for _ in $(seq 1 300); do
    if in_pod n2-p1 -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/50051' 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  check "the python gRPC server listens in n2-p1 within 30 s" test "$up" == 1
  out=$(in_pod n1-p1 -- timeout 60 /usr/bin/python3 "$TMP/grpc_client.py" "$TMP" 2>&1)
  check "gRPC unary through meshd" grep -qx 'unary unary:hi' <<<"$out"
  check "gRPC server streaming (5 messages)" grep -qx 'server-stream s-0,s-1,s-2,s-3,s-4' <<<"$out"
  check "gRPC client streaming (3 messages)" grep -qx 'client-stream a,b,c 3' <<<"$out"
  check "gRPC bidi streaming, interleaved" grep -qx 'bidi echo:x,echo:y,echo:z 0' <<<"$out"
  check "gRPC error status passed through (NOT_FOUND + message)" grep -qx 'fail NOT_FOUND no such thing' <<<"$out"
  if ((failed > 0)); then sed 's/^/  client: /' <<<"$out" | tail -n 20; tail -n 5 "$TMP/grpc_server.log"; fi
else
  fail "grpc_tools.protoc generated the stubs"
fi
metrics=$(in_pod n1 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics)
check "gRPC calls are counted with request_protocol=grpc and grpc_response_status" \
  grep -q 'request_protocol="grpc".*grpc_response_status="5"\|grpc_response_status="5".*request_protocol="grpc"' \
  <<<"$(grep '^istio_requests_total{' <<<"$metrics")"
check "HTTP/2 requests are counted (request_protocol=http, h2-l7)" \
  grep -q 'destination_service_name="h2-l7".*request_protocol="http"' <<<"$(grep '^istio_requests_total{' <<<"$metrics")"
# 11. Fault injection from a TrafficPolicy alone (no route): every request aborted, 418 FI.
check "fault-l7 -> 418 from the fault filter (3/3)" \
  test "$(in_pod n2-p1 -- curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} ' http://10.96.0.29/ http://10.96.0.29/ http://10.96.0.29/)" == "418 418 418 "
check "the aborts are counted with flag FI on node 2" \
  grep -q 'response_code="418".*response_flags="FI"' <<<"$(in_pod n2 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics | grep '^istio_requests_total{')"

# 12. Request-level resilience from TrafficPolicies (l7.yaml, "Request-level resilience"):
#     retries, retries running out (URX), the request breaker (503 UO), L7 outlier ejection
#     published into the kernel's ejection state, and a fault delay (DI). The upstreams are
#     python servers that log every request they get (one line each), so the test counts
#     what reached them rather than trusting the proxy's own account.
cat >"$TMP/flaky.py" <<'PY'
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path != "/ready":
            with open(log, "a") as f:
                f.write(self.path + "\n")
        if mode in ("slow", "slowfail") and self.path != "/ready":
            time.sleep(1.5 if mode == "slow" else 1.0)
        code, body = (503, b"fail\n") if mode in ("fail", "slowfail") else (200, b"ok\n")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
PY
: >"$TMP/fail.log"
: >"$TMP/ok.log"
: >"$TMP/slow.log"
: >"$TMP/slowfail.log"
in_pod n2-p1 -- /usr/bin/python3 "$TMP/flaky.py" fail 8095 "$TMP/fail.log" >"$TMP/flaky1.log" 2>&1 &
bg_pids+=($!)
in_pod n2-p2 -- /usr/bin/python3 "$TMP/flaky.py" ok 8095 "$TMP/ok.log" >"$TMP/flaky2.log" 2>&1 &
bg_pids+=($!)
in_pod n2-p2 -- /usr/bin/python3 "$TMP/flaky.py" slow 8096 "$TMP/slow.log" >"$TMP/flaky3.log" 2>&1 &
bg_pids+=($!)
in_pod n2-p1 -- /usr/bin/python3 "$TMP/flaky.py" slowfail 8097 "$TMP/slowfail.log" >"$TMP/flaky4.log" 2>&1 &
bg_pids+=($!)
up=0
for _ in $(seq 1 100); do
  if in_pod n2-p1 -- curl -s -o /dev/null --max-time 1 http://127.0.0.1:8095/ready &&
    in_pod n2-p2 -- curl -s -o /dev/null --max-time 1 http://127.0.0.1:8095/ready &&
    in_pod n2-p2 -- curl -s -o /dev/null --max-time 1 http://127.0.0.1:8096/ready &&
    in_pod n2-p1 -- curl -s -o /dev/null --max-time 1 http://127.0.0.1:8097/ready; then
    up=1
    break
  fi
  sleep 0.1
done
check "the resilience test servers listen (503 on n2-p1:8095, 200 on n2-p2:8095, slow on n2-p2:8096)" test "$up" == 1
lines() { wc -l <"$1" | tr -d ' '; }

# 12a. Retries: half the first tries hit the 503 endpoint; the retry goes to the other one.
urls=()
for i in $(seq 1 40); do urls+=("http://10.96.0.31/r$i"); done
out=$(in_pod n1-p1 -- curl -s --max-time 60 "${urls[@]}")
fails=$(lines "$TMP/fail.log")
check "retry-l7: 40/40 requests answered 200 although one endpoint always answers 503" \
  test "$(grep -c '^ok$' <<<"$out")" == 40
check "retry-l7: the 503 endpoint did get first tries ($fails of 40), each retried elsewhere" \
  test "$fails" -ge 1 -a "$fails" -le 40
check "retry-l7: the 200 endpoint got every request once (ok.log $(lines "$TMP/ok.log"))" \
  test "$(lines "$TMP/ok.log")" == 40

# 12b. Retries run out: the 503 endpoint alone gets 1 + 2 tries, the client the last 503
#      with flag URX.
before=$(lines "$TMP/fail.log")
code=$(in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://10.96.0.32/x)
check "allbad-l7: 503 after the retries ran out (got $code)" test "$code" == 503
check "allbad-l7: the upstream got 3 tries (1 + attempts 2), got $(($(lines "$TMP/fail.log") - before))" \
  test "$(($(lines "$TMP/fail.log") - before))" == 3
rmetrics=$(in_pod n1 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics | grep '^istio_requests_total{')
check "allbad-l7: counted as 503 with flag URX" \
  grep -q 'destination_service_name="allbad-l7".*response_code="503".*response_flags="URX"' <<<"$rmetrics"
check "retry-l7: counted as 40 x 200, no 503 reached the client" \
  test "$(grep 'destination_service_name="retry-l7"' <<<"$rmetrics" | grep -c 'response_code="503"')" == 0

# 12b'. The retry budget: one retry in flight (percent 0, minRetryConcurrency 1). Four
#      concurrent requests whose tries each fail after 1 s: their first tries end together,
#      one of them gets the retry (held for its 1 s try, then the next), the other three are
#      answered with their own 503 at once. So the upstream sees 4 + 2 requests.
for i in 1 2 3 4; do
  in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 20 "http://10.96.0.36/b$i" >"$TMP/budget$i.code" &
  budget_pids+=($!)
done
wait "${budget_pids[@]}"
codes=$(cat "$TMP"/budget?.code)
check "budget-l7: all 4 requests answered 503 (got '$codes')" test "$codes" == "503503503503"
check "budget-l7: the upstream got 4 first tries + 2 retries of one request (got $(lines "$TMP/slowfail.log"))" \
  test "$(lines "$TMP/slowfail.log")" == 6
check "budget-l7: one request retried (URX), three refused a retry by the budget (no flag)" \
  python3 -c '
import re, sys
n = {}
for l in sys.stdin:
    if "destination_service_name=\"budget-l7\"" in l:
        f = re.search(r"response_flags=\"([^\"]*)\"", l).group(1)
        n[f] = n.get(f, 0) + int(float(l.split()[-1]))
sys.exit(0 if n.get("URX") == 1 and n.get("-", n.get("", 0)) == 3 else print(n) or 1)' \
  <<<"$(in_pod n1 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics | grep '^istio_requests_total{')"

# 12c. Breaker: maxRequests 1. While one request waits on the slow upstream, a second is
#      answered 503 UO by the proxy and never reaches the upstream.
in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://10.96.0.33/a >"$TMP/slow_a.code" &
slow_a=$!
for _ in $(seq 1 100); do
  [[ $(lines "$TMP/slow.log") -ge 1 ]] && break
  sleep 0.05
done
resp=$(in_pod n1-p1 -- curl -s -D - -o /dev/null --max-time 10 http://10.96.0.33/b | tr -d '\r')
wait "$slow_a"
check "slow-l7: the second concurrent request is 503 (got '$(head -n 1 <<<"$resp")')" \
  grep -q '^HTTP/1.1 503' <<<"$resp"
check "slow-l7: ... with x-meshd-response-flags: UO" grep -qi '^x-meshd-response-flags: UO' <<<"$resp"
check "slow-l7: the first request still completes 200" test "$(cat "$TMP/slow_a.code")" == 200
check "slow-l7: the refused request never reached the upstream (slow.log: $(tr '\n' ' ' <"$TMP/slow.log"))" \
  test "$(cat "$TMP/slow.log")" == "/a"

# 12d. L7 outlier ejection: no retries, consecutive5xxErrors 3. The 503 endpoint is ejected
#      at its third 503 in a row; every later request goes to the other endpoint, and the
#      ejection is in the kernel's state for the backend (meshctl reads the BPF map).
before=$(lines "$TMP/fail.log")
urls=()
for i in $(seq 1 40); do urls+=("http://10.96.0.34/o$i"); done
out=$(in_pod n1-p1 -- curl -s --max-time 60 "${urls[@]}")
got_fail=$(($(lines "$TMP/fail.log") - before))
check "outlier-l7: exactly 3 requests reached the 503 endpoint before its ejection (got $got_fail)" \
  test "$got_fail" == 3
check "outlier-l7: the other 37 were answered 200" test "$(grep -c '^ok$' <<<"$out")" == 37
backends=$("$MESHLAB" meshctl n1 get backends outlier-l7 -o json 2>&1)
check "outlier-l7: the kernel's state has 10.244.2.11 ejected (timesEjected 1)" \
  python3 -c '
import json, sys
def rows(x):
    if isinstance(x, dict):
        if "backend" in x:
            yield x
        for v in x.values():
            yield from rows(v)
    elif isinstance(x, list):
        for v in x:
            yield from rows(v)
bad = [r for r in rows(json.loads(sys.stdin.read())) if str(r["backend"]).startswith("10.244.2.11:")]
sys.exit(0 if bad and bad[0].get("ejected") and bad[0].get("timesEjected") == 1 else 1)' <<<"$backends"
grep -q '"ejected": true' <<<"$backends" || echo "$backends" | head -n 40

# 12e. Fault delay: 300 ms before forwarding, flag DI.
t=$(in_pod n1-p1 -- curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 http://10.96.0.35/)
check "delay-l7: 200 after the fault delay (got '$t')" \
  python3 -c 'import sys; c, s = sys.argv[1].split(); sys.exit(0 if c == "200" and float(s) >= 0.3 else 1)' "$t"
check "delay-l7: counted with flag DI" \
  grep -q 'destination_service_name="delay-l7".*response_flags="DI"' \
  <<<"$(in_pod n1 -- curl -s --max-time 5 http://127.0.0.1:15020/metrics | grep '^istio_requests_total{')"

# 13. The JSON access log (meshd --access-log): one line per request, flushed within ~1 s.
in_pod n1-p1 -- curl -s -o /dev/null --max-time 5 -A 'lab-agent/1' -H 'x-request-id: lab-alog-1' \
  'http://10.96.0.20/alog?q=1'
ALOG=/run/meshd-lab/n1-access.log
line=
for _ in $(seq 1 50); do
  line=$(grep -F '"request_id":"lab-alog-1"' "$ALOG" 2>/dev/null | head -n 1)
  [[ -n $line ]] && break
  sleep 0.1
done
check "access log: the request's line is written within 5 s" test -n "$line"
check "access log: the line's fields (method, path, authority, user agent, code, addresses)" \
  python3 -c '
import json, sys
e = json.loads(sys.argv[1])
want = {"method": "GET", "path": "/alog?q=1", "authority": "10.96.0.20", "user_agent": "lab-agent/1",
        "response_code": 200, "protocol": "HTTP/1.1", "response_flags": "-",
        "downstream_local_address": "10.96.0.20:80", "attempts": 1}
bad = {k: (e.get(k), v) for k, v in want.items() if e.get(k) != v}
ok = not bad and e["upstream_host"].endswith(":8080") and e["downstream_remote_address"].startswith("10.244.1.11:")
print(bad or "", file=sys.stderr)
sys.exit(0 if ok else 1)' "$line"
check "access log: retry-l7 requests that were retried show attempts 2" \
  grep -q '"upstream_cluster":"default/retry-l7:80".*"attempts":2\|"attempts":2.*"upstream_cluster":"default/retry-l7:80"' "$ALOG"
check "access log: every line is one JSON object ($(wc -l <"$ALOG" 2>/dev/null) lines)" \
  python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$ALOG"

# 10. The app<->meshd hop is spliced (sockops on meshd's own cgroup joins meshd's accepted
#    sockets to their clients in the sockhash): the kernel counted redirected sends.
check "meshctl status: l7HopSplice on" grep -q 'l7HopSplice: *on' <<<"$("$MESHLAB" meshctl n1 status 2>&1)"
redirected=$(grep '^meshd_bpf_events_total{reason="sockmap_redirected"}' <<<"$metrics" | awk '{print $NF}')
check "app<->meshd bytes went socket to socket (sockmap_redirected ${redirected:-0} >= 1000)" \
  test "${redirected:-0}" -ge 1000

echo "$passed passed, $failed failed"
((failed == 0))
