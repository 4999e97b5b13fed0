#!/usr/bin/env python3
# Writes the seed corpus of spiffe_fuzz: python3 tests/fuzz/make_spiffe_seeds.py tests/fuzz/corpus/spiffe_fuzz
# Each seed is one candidate SPIFFE ID (also used as a principal pattern by the harness):
# valid IDs of both meshd forms, every rejection class of the parser, and patterns.
import os, sys
out = sys.argv[1]
seeds = {
 "workload": b"spiffe://cluster.local/ns/default/sa/web",
 "node": b"spiffe://cluster.local/meshd/node/n1",
 "td_only": b"spiffe://example.org",
 "deep_path": b"spiffe://td-1_x.y/A/b.c/d-e_f/..x/.y",
 "long_valid": b"spiffe://t/" + b"p" * (2048 - 11),
 "too_long": b"spiffe://t/" + b"p" * (2048 - 10),
 "td_255": b"spiffe://" + b"a" * 255 + b"/x",
 "td_256": b"spiffe://" + b"a" * 256,
 "upper_scheme": b"SPIFFE://td/x",
 "no_slashes": b"spiffe:td/x",
 "empty_td": b"spiffe:///ns/x",
 "userinfo": b"spiffe://user@td/x",
 "port": b"spiffe://td:443/x",
 "query": b"spiffe://td/x?q=1",
 "fragment": b"spiffe://td/x#f",
 "percent": b"spiffe://td/a%20b",
 "upper_td": b"spiffe://clusterAlocal/x",
 "bad_td_char": b"spiffe://t+d/x",
 "nul": b"spiffe://t\x00d/x",
 "utf8": b"spiffe://t\xc3\xa9/x",
 "trailing_slash": b"spiffe://td/a/",
 "empty_segment": b"spiffe://td/a//b",
 "dot": b"spiffe://td/./a",
 "dotdot": b"spiffe://td/a/..",
 "path_bad_char": b"spiffe://td/a b",
 "workload_extra": b"spiffe://td/ns/default/sa/web/x",
 "pattern_star": b"*",
 "pattern_prefix": b"cluster.local/ns/default/*",
 "pattern_suffix": b"*/sa/web",
 "pattern_exact": b"cluster.local/ns/default/sa/web",
 "empty": b"",
}
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
