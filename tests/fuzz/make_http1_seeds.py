#!/usr/bin/env python3
# Writes the seed corpus of http1_fuzz: python3 tests/fuzz/make_http1_seeds.py tests/fuzz/corpus/http1_fuzz
# Seed corpus for tests/fuzz/http1_fuzz.cc: first byte = limits/split seed (bit 7: small
# limits; bits 4-6: response context), the rest = the byte stream.
import os, sys
out = sys.argv[1]
G = b"GET / HTTP/1.1\r\nHost: a\r\n"
P = b"POST /p HTTP/1.1\r\nHost: a\r\n"
B = b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
seeds = {
 "get": (0x01, G + b"\r\n"),
 "get_typical": (0x02, b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: svc.ns.svc.cluster.local\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nX-Request-Id: 0f8e\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"),
 "http10": (0x03, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
 "post_cl": (0x04, P + b"Content-Length: 5\r\n\r\nhello"),
 "post_chunked": (0x05, P + b"Transfer-Encoding: chunked" + B),
 "chunked_ext_trailers": (0x06, P + b"Transfer-Encoding: chunked\r\n\r\n5;a=b;c=\"q\\\"x\"\r\nhello\r\n1 ; d\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n"),
 "leading_crlf": (0x07, b"\r\n" + G + b"\r\n"),
 "options_star": (0x08, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
 "connect": (0x09, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
 "absolute_form": (0x0a, b"GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n"),
 "expect": (0x0b, P + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"),
 "websocket": (0x0c, G + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"),
 "hop_by_hop": (0x0d, G + b"Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n"),
 "pipelined": (0x0e, G + b"\r\n" + G + b"\r\n"),
 "cl_te": (0x0f, P + b"Content-Length: 6\r\nTransfer-Encoding: chunked" + B),
 "te_cl": (0x11, P + b"Transfer-Encoding: chunked\r\nContent-Length: 6" + B),
 "xchunked": (0x12, P + b"Transfer-Encoding: xchunked" + B),
 "gzip_chunked": (0x13, P + b"Transfer-Encoding: gzip, chunked" + B),
 "te_space_colon": (0x14, P + b"Transfer-Encoding : chunked" + B),
 "te_obs_fold": (0x15, P + b"X: a\r\n Transfer-Encoding: chunked" + B),
 "dup_cl": (0x16, P + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
 "cl_plus": (0x17, P + b"Content-Length: +5\r\n\r\nhello"),
 "cl_overflow": (0x18, P + b"Content-Length: 18446744073709551616\r\n\r\n"),
 "bare_lf": (0x19, P + b"X: a\nTransfer-Encoding: chunked" + B),
 "bare_cr": (0x1a, P + b"X: a\rTransfer-Encoding: chunked" + B),
 "nul_value": (0x1b, P + b"X: a\x00b\r\nContent-Length: 5\r\n\r\nhello"),
 "chunk_overflow": (0x1c, P + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\n"),
 "chunk_ext_long": (0x9d, P + b"Transfer-Encoding: chunked\r\n\r\n5;a=" + b"x" * 40 + b"\r\nhello\r\n0\r\n\r\n"),
 "bad_trailer": (0x1e, P + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX : a\r\n\r\n"),
 "http10_te": (0x1f, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked" + B),
 "dup_host": (0x21, G + b"Host: b\r\n\r\n"),
 "absolute_host_conflict": (0x22, b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"),
 "double_space": (0x23, b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
 "lower_version": (0x24, b"GET / http/1.1\r\nHost: a\r\n\r\n"),
 "h2_preface": (0x25, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
 "small_limits": (0x83, G + b"B: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\n\r\n"),
 "resp_200_cl": (0x00, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
 "resp_chunked": (0x00, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
 "resp_100_then_200": (0x00, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
 "resp_101": (0x40, b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
 "resp_head": (0x10, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
 "resp_connect": (0x20, b"HTTP/1.1 200 Connection established\r\n\r\n"),
 "resp_http10": (0x00, b"HTTP/1.0 200 OK\r\n\r\nbody until close"),
 "resp_cl_te": (0x00, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"),
 "chunked_only": (0x00, b"5\r\nhello\r\n0\r\n\r\n"),
 "chunked_only_small": (0x8f, b"1;e=\"v\"\r\na\r\n1\r\nb\r\n0\r\nT: 1\r\n\r\nGET"),
}
os.makedirs(out, exist_ok=True)
for name, (seed, data) in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([seed]) + data)
print(len(seeds), "seeds")
