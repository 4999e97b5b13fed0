#!/usr/bin/python3
"""testssl.sh (Debian) against the tunnel's TLS server: only TLS 1.3, no weak protocol or
cipher, no finding of severity LOW or worse. The server is tunnel_tls_server (the real
tunnel::TunnelServer with meshd's TLS settings) on 127.0.0.1.
Usage: testssl_test.py TUNNEL_TLS_SERVER CERTS_DIR
"""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testssl_check  # noqa: E402

SERVER, CERTS = (sys.argv.pop(1), sys.argv.pop(1)) if len(sys.argv) > 2 else (None, None)


def finding(i, severity, text):
    return {"id": i, "severity": severity, "finding": text}


GOOD = ([finding(i, "OK", "not offered") for i in testssl_check.MUST_NOT_OFFER] +
        [finding("TLS1_3", "OK", "offered with final")])


class CheckTest(unittest.TestCase):
    """The judgement itself, on canned findings: it passes a TLS 1.3-only report and fails
    each way a weak server shows up in testssl.sh's JSON."""

    def test_tls13_only_passes(self):
        self.assertEqual(testssl_check.check(GOOD), [])

    def test_each_weakness_fails(self):
        cases = {
            "TLS1_2 offered": [f if f["id"] != "TLS1_2" else finding("TLS1_2", "INFO", "offered")
                               for f in GOOD],
            "LOW finding": GOOD + [finding("cipherlist_AVERAGE", "LOW", "offered")],
            "no TLS 1.3": [f for f in GOOD if f["id"] != "TLS1_3"],
            "missing protocol line": [f for f in GOOD if f["id"] != "SSLv3"],
            "scan problem": GOOD + [finding("scanProblem", "FATAL", "could not connect")],
        }
        for name, findings in cases.items():
            self.assertNotEqual(testssl_check.check(findings), [], name)


@unittest.skipUnless(SERVER, "pass the tunnel_tls_server binary and the certs dir")
class TunnelTestssl(unittest.TestCase):
    def test_tunnel_offers_only_strong_tls13(self):
        proc = subprocess.Popen([SERVER, CERTS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            port = int(proc.stdout.readline())
            r = subprocess.run([sys.executable, testssl_check.__file__, f"127.0.0.1:{port}"],
                               capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("TLS 1.3 only", r.stdout)
        finally:
            proc.stdin.close()  # EOF: the server exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # by PID
                proc.wait()


if __name__ == "__main__":
    unittest.main()
