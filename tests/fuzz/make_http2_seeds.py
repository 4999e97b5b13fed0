#!/usr/bin/env python3
# Writes the seed corpus of http2_fuzz: python3 tests/fuzz/make_http2_seeds.py tests/fuzz/corpus/http2_fuzz
# Seed corpus for tests/fuzz/http2_fuzz.cc: first byte = config (bit 7: small limits;
# bit 6: never read the output; the rest seeds the split points), then the frames the
# client sends after its connection preface (which the harness adds).
import os, struct, sys
out = sys.argv[1]

def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload

def hint(first, prefix, v):
    mx = (1 << prefix) - 1
    if v < mx:
        return bytes([first | v])
    b = [first | mx]
    v -= mx
    while v >= 128:
        b.append(0x80 | (v & 0x7F))
        v >>= 7
    b.append(v)
    return bytes(b)

def hpack(fields):  # literal without indexing, no Huffman
    o = b""
    for n, v in fields:
        o += b"\x00" + hint(0, 7, len(n)) + n + hint(0, 7, len(v)) + v
    return o

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
ES, EH, PADDED, PRIO = 0x1, 0x4, 0x8, 0x20
S0 = frame(SETTINGS, 0, 0)
GET = hpack([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.test"), (b":path", b"/")])
POST = hpack([(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"g"), (b":path", b"/pkg.S/M"),
              (b"content-type", b"application/grpc"), (b"te", b"trailers")])
def get(i): return frame(HEADERS, ES | EH, i, GET)

seeds = {
 "get": (0x01, S0 + get(1)),
 "get_indexed": (0x02, S0 + frame(HEADERS, ES | EH, 1, bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"a")),
 "post_data": (0x03, S0 + frame(HEADERS, EH, 1, POST) + frame(DATA, 0, 1, b"\0\0\0\0\1x") + frame(DATA, ES, 1)),
 "post_trailers": (0x04, S0 + frame(HEADERS, EH, 1, POST) + frame(DATA, 0, 1, b"\0\0\0\0\1x") +
                   frame(HEADERS, ES | EH, 1, hpack([(b"x-sum", b"1")]))),
 "many_streams": (0x05, S0 + b"".join(get(i) for i in range(1, 40, 2))),
 "rapid_reset": (0x06, S0 + b"".join(get(i) + frame(RST, 0, i, struct.pack(">I", 8)) for i in range(1, 60, 2))),
 "continuation": (0x07, S0 + frame(HEADERS, ES, 1, GET[:10]) + frame(CONT, 0, 1, GET[10:20]) + frame(CONT, EH, 1, GET[20:])),
 "continuation_flood": (0x88, S0 + frame(HEADERS, 0, 1, GET) + b"".join(frame(CONT, 0, 1, hpack([(b"x", b"a" * 50)])) for _ in range(20))),
 "ping_flood": (0xC9, S0 + frame(PING, 0, 0, b"12345678") * 40),
 "settings_flood": (0xCA, S0 * 40),
 "settings_values": (0x0B, frame(SETTINGS, 0, 0, struct.pack(">HIHIHIHI", 1, 0, 3, 1, 4, 100, 5, 16384)) + get(1)),
 "window_update": (0x0C, S0 + frame(WINDOW, 0, 0, struct.pack(">I", 1 << 20)) + get(1) + frame(WINDOW, 0, 1, struct.pack(">I", 1000))),
 "priority": (0x0D, S0 + frame(PRIORITY, 0, 1, struct.pack(">IB", 3, 16)) + frame(HEADERS, ES | EH | PRIO, 1, struct.pack(">IB", 0, 16) + GET)),
 "padded": (0x0E, S0 + frame(HEADERS, EH | PADDED, 1, b"\x03" + POST + b"\0\0\0") + frame(DATA, ES | PADDED, 1, b"\x02hi\0\0")),
 "goaway": (0x0F, S0 + get(1) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))),
 "bad_uppercase": (0x10, S0 + frame(HEADERS, ES | EH, 1, GET + hpack([(b"X-Up", b"1")])) + get(3)),
 "bad_connection": (0x11, S0 + frame(HEADERS, ES | EH, 1, GET + hpack([(b"connection", b"close")])) + get(3)),
 "bad_pseudo": (0x12, S0 + frame(HEADERS, ES | EH, 1, hpack([(b":method", b"GET"), (b":foo", b"x")]))),
 "big_headers": (0x93, S0 + frame(HEADERS, ES | EH, 1, GET + hpack([(b"x-big", b"b" * 600)])) + get(3)),
 "data_on_idle": (0x14, S0 + frame(DATA, 0, 5, b"xx")),
 "push_promise": (0x15, S0 + frame(PUSH, EH, 1, struct.pack(">I", 2) + GET)),
 "small_window_post": (0x96, S0 + frame(HEADERS, EH, 1, POST) + frame(DATA, 0, 1, b"x" * 1000) + frame(DATA, ES, 1, b"y" * 100)),
 "rst_then_data": (0x17, S0 + frame(HEADERS, EH, 1, POST) + frame(RST, 0, 1, struct.pack(">I", 8)) + frame(DATA, ES, 1, b"z")),
 "settings_ack": (0x18, S0 + frame(SETTINGS, 1, 0) + get(1)),
 "empty": (0x19, b""),
}
os.makedirs(out, exist_ok=True)
for name, (cfg, body) in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([cfg]) + body)
