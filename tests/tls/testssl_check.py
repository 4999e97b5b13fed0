#!/usr/bin/python3
"""Runs Debian's testssl.sh against a TLS endpoint (meshd's :15008 tunnel) and fails unless it
reports only TLS 1.3, no weak protocol, no weak cipher category and no finding of severity
LOW or worse. Usage: testssl_check.py HOST:PORT [JSON_OUT]

testssl.sh's own pre-check connects with `openssl s_client`, without a client certificate and
without ALPN, which the tunnel refuses (it requires both); `--warnings off` lets the scan go on
instead of stopping there: protocols and ciphers are then probed with testssl.sh's own
ClientHellos (which offer ALPN h2), judged from the server's hello, before client
authentication.
"""
import json
import os
import subprocess
import sys
import tempfile

BAD_SEVERITY = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
MUST_NOT_OFFER = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "cipherlist_NULL",
                  "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                  "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"]


def check(findings):
    """The problems in testssl.sh's flat JSON findings ([] = pass)."""
    by_id = {f["id"]: f for f in findings}
    problems = []
    for f in findings:
        if f.get("severity") in BAD_SEVERITY:
            problems.append(f"{f['id']}: {f['severity']}: {f['finding']}")
    for i in MUST_NOT_OFFER:
        f = by_id.get(i)
        if f is None:
            problems.append(f"{i}: not reported by testssl.sh")
        elif not f["finding"].startswith("not offered"):
            problems.append(f"{i}: {f['finding']} (must not be offered)")
    tls13 = by_id.get("TLS1_3")
    if tls13 is None or not tls13["finding"].startswith("offered"):
        problems.append(f"TLS1_3: {tls13['finding'] if tls13 else 'not reported'} (must be offered)")
    if "scanProblem" in by_id:
        problems.append(f"scanProblem: {by_id['scanProblem']['finding']}")
    return problems


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as d:
        path = out or os.path.join(d, "testssl.json")
        if os.path.exists(path):
            os.unlink(path)
        r = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p",
                            "-s", "-f", "--jsonfile", path, target],
                           capture_output=True, text=True, timeout=600)
        if not os.path.exists(path):
            print(f"testssl.sh wrote no JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}",
                  file=sys.stderr)
            return 1
        with open(path) as f:
            findings = json.load(f)
    problems = check(findings)
    for f in findings:
        print(f"  {f['id']:<22} {f['severity']:<6} {f['finding']}")
    if problems:
        print(f"testssl.sh against {target}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"testssl.sh against {target}: TLS 1.3 only, no weak protocol or cipher")
    return 0


if __name__ == "__main__":
    sys.exit(main())
