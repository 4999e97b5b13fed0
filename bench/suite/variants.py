"""The variants the suite compares: one declarative entry each in VARIANTS.

A variant says which lab it needs ("plain": no meshd; "meshd": meshd on every node with
the sockmap splice off; "meshd-splice": the same with it on), what
to set up around a workload (proxies, iptables rules), which address the client dials,
and which processes belong to it (accounted for CPU and peak memory as "proxy"). Adding
meshd L4+sockmap, L7 or L7+mTLS later is one more entry: a lab kind (or a lab_setup that
applies the right resources) and a dial() that returns the VIP.

Pinning (the same for every variant, fairness): the client side's processes run on CPU 0
(the client and the proxy that serves it: the outbound sidecar, the node proxy), the
server side's on CPU 1 (the server and its inbound sidecar). meshd is not pinned: on the
L4 path it is idle (its programs run in the connecting process's context on that CPU).
"""
import json
import os
import string
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from lab import BenchError, node_bridge_ip, pod_ip

CLIENT_CPU, SERVER_CPU = 0, 1
SIDECAR_UID = 1337  # HAProxy's uid in the sidecar variant: its own dials are not redirected
OUTBOUND_PORT, INBOUND_PORT = 15001, 15006  # Istio's sidecar ports
HAPROXY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy")


@dataclass
class Placement:
    name: str
    client: tuple  # (node, pod)
    server: tuple
    vip: str  # the Service VIP meshd variants dial (one backend: the server pod)

    @property
    def client_pod(self):
        return "n%d-p%d" % self.client

    @property
    def server_pod(self):
        return "n%d-p%d" % self.server

    @property
    def server_ip(self):
        return pod_ip(*self.server)


PLACEMENTS = [
    Placement("same-node", (1, 1), (1, 2), "10.96.0.50"),
    Placement("cross-node", (1, 1), (2, 1), "10.96.0.51"),
]


@dataclass
class Variant:
    name: str
    description: str
    lab: str  # "plain" | "meshd"
    # (run) -> (addr, port) the client dials; may start proxies through run.start_proxy
    setup: Callable
    teardown: Callable = lambda run: None
    # (lab, placements, workloads, workdir): once after the lab is up (e.g. meshctl apply)
    lab_setup: Optional[Callable] = None
    # workload name -> why it cannot work yet: a failure there is reported as a known
    # limitation, not a suite failure (and a success is simply reported)
    known_failures: dict = field(default_factory=dict)


# ------------------------------------------------------------------ HAProxy helpers

def haproxy_config(run, name, bind, port, server, server_port, cpu, tls_bind="", tls_server=""):
    """Renders haproxy/tcp.cfg or haproxy/http.cfg for RUN's workload into the workdir.
    TLS_BIND / TLS_SERVER: the PEM (certificate chain + key) that side presents when it
    terminates / originates mutual TLS ("" = plaintext on that side)."""
    template = "tcp.cfg" if run.workload.proto == "tcp" else "http.cfg"
    h2 = run.workload.proto == "h2"

    def opts(pem):
        if not pem:
            return "proto h2" if h2 else ""
        return (f"ssl crt {pem} ca-file {os.path.join(run.workdir, 'pki', 'bundle.pem')} "
                "verify required ssl-min-ver TLSv1.3" + (" alpn h2" if h2 else ""))

    with open(os.path.join(HAPROXY_DIR, template)) as f:
        text = string.Template(f.read()).substitute(
            name=name, bind=bind, port=port, server=server, server_port=server_port,
            cpu=cpu, user=f"uid {SIDECAR_UID}\n    gid {SIDECAR_UID}",
            bind_opts=opts(tls_bind), server_opts=opts(tls_server))
    path = os.path.join(run.workdir, f"{run.tag}-{name}.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_haproxy(run, name, target, netns, bind, port, server, server_port, cpu, tls_bind="",
                  tls_server=""):
    cfg = haproxy_config(run, name, bind, port, server, server_port, cpu, tls_bind, tls_server)
    run.start_proxy(name, target, ["haproxy", "-db", "-f", cfg], cpu, port, netns)


# ------------------------------------------------------------------ direct

def direct_setup(run):
    return run.placement.server_ip, run.workload.port


# ------------------------------------------------------------------ sidecar

def sidecar_setup(run, mtls=False):
    """Istio's sidecar shape: the client's connect to server:port is REDIRECTed (nat
    OUTPUT, all uids but HAProxy's) to the client pod's outbound HAProxy; the server pod's
    nat PREROUTING REDIRECTs arrivals on the port to its inbound HAProxy, which dials the
    app on 127.0.0.1. MTLS: the outbound sidecar originates mutual TLS 1.3 to the inbound
    one, which requires and verifies the client's certificate (Istio's sidecars with
    STRICT mTLS); both present SPIFFE certificates of the test PKI."""
    p, w = run.placement, run.workload
    cns, sns = run.lab.netns(p.client_pod), run.lab.netns(p.server_pod)
    server_pem = client_pem = ""
    if mtls:
        client_pem, server_pem = sidecar_pems(run)
    start_haproxy(run, "inbound", p.server_pod, sns, "0.0.0.0", INBOUND_PORT, "127.0.0.1",
                  w.port, SERVER_CPU, tls_bind=server_pem)
    start_haproxy(run, "outbound", p.client_pod, cns, "127.0.0.1", OUTBOUND_PORT, p.server_ip,
                  w.port, CLIENT_CPU, tls_server=client_pem)
    run.lab.nsrun(sns, ["iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport",
                        str(w.port), "-j", "REDIRECT", "--to-ports", str(INBOUND_PORT)],
                  "sidecar: iptables PREROUTING REDIRECT in the server pod")
    run.lab.nsrun(cns, ["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", p.server_ip,
                        "--dport", str(w.port), "-m", "owner", "!", "--uid-owner",
                        str(SIDECAR_UID), "-j", "REDIRECT", "--to-ports", str(OUTBOUND_PORT)],
                  "sidecar: iptables OUTPUT REDIRECT in the client pod")
    return p.server_ip, w.port


def sidecar_pems(run):
    """The client and server sidecars' PEMs (leaf, intermediate, key) from the committed
    test PKI script, generated once into the workdir."""
    pki = os.path.join(run.workdir, "pki")
    if not os.path.exists(os.path.join(pki, "stamp")):
        script = os.path.join(os.path.dirname(HAPROXY_DIR), "..", "..", "scripts",
                              "gen-test-certs.sh")
        run.lab.run(["bash", os.path.abspath(script), pki], "generate the test PKI")
    pems = []
    for who in ("client", "server"):
        path = os.path.join(pki, f"{who}-haproxy.pem")
        with open(path, "w") as out:
            for part in (f"{who}.chain.pem", f"{who}.key"):
                with open(os.path.join(pki, part)) as f:
                    out.write(f.read())
        pems.append(path)
    return pems


def sidecar_teardown(run):
    p = run.placement
    run.lab.nsrun(run.lab.netns(p.server_pod), ["iptables", "-t", "nat", "-F", "PREROUTING"],
                  "sidecar teardown: flush PREROUTING", check=False)
    run.lab.nsrun(run.lab.netns(p.client_pod), ["iptables", "-t", "nat", "-F", "OUTPUT"],
                  "sidecar teardown: flush OUTPUT", check=False)


# ------------------------------------------------------------------ per-node HAProxy

def node_proxy_setup(run):
    """One HAProxy in the client's node netns, listening on the node's pod bridge address
    (cbr0, the pods' gateway); it dials the server pod. L7 for HTTP/gRPC, L4 for raw TCP."""
    p, w = run.placement, run.workload
    node = p.client[0]
    addr, port = node_bridge_ip(node), w.port  # cbr0 address: the port is free there
    start_haproxy(run, "node", f"n{node}", run.lab.netns(f"n{node}"), addr, port, p.server_ip, w.port,
                  CLIENT_CPU)
    return addr, port


# ------------------------------------------------------------------ meshd L4

def _service_yaml(name, vip, ports, placement, instance):
    """A Service on VIP with every port in PORTS and one EndpointSlice whose only endpoint
    is PLACEMENT's server pod."""
    port_lines = "\n".join(f"    - {{name: p{x}, port: {x}, targetPort: {x}, protocol: TCP}}"
                           for x in ports)
    slice_ports = "\n".join(f"  - {{name: p{x}, port: {x}, protocol: TCP}}" for x in ports)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {vip}
  ports:
{port_lines}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports:
{slice_ports}
endpoints:
  - addresses: ["{placement.server_ip}"]
    nodeName: {instance}-n{placement.server[0]}
"""


def meshd_services_yaml(workloads, instance="lab"):
    """One Service per placement: the placement's VIP, every workload's port, one
    endpoint (the placement's server pod)."""
    ports = sorted({w.port for w in workloads})
    return "---\n".join(_service_yaml(f"bench-{p.name}", p.vip, ports, p, instance)
                        for p in PLACEMENTS)


def meshd_lab_setup(lab, workloads, workdir):
    path = os.path.join(workdir, "bench-services.yaml")
    with open(path, "w") as f:
        f.write(meshd_services_yaml(workloads, lab.lab_id))
    lab.apply(path)


def meshd_l4_setup(run):
    return run.placement.vip, run.workload.port


# ------------------------------------------------------------------ meshd L7

L7_VIPS = {"same-node": "10.96.0.60", "cross-node": "10.96.0.61"}


def meshd_l7_yaml(workloads, instance="lab"):
    """One Service per placement on its own VIP (same endpoint as the L4 one) with an
    HTTPRoute bound to each port: connects to it are redirected into the client node's
    meshd, which routes HTTP/1.1 per request and relays everything else opaquely."""
    docs = []
    ports = sorted({w.port for w in workloads})
    for p in PLACEMENTS:
        name = f"bench-l7-{p.name}"
        docs.append(_service_yaml(name, L7_VIPS[p.name], ports, p, instance))
        for x in ports:
            docs.append(f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}-p{x}, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {name}, port: {x}}}]
  rules:
    - backendRefs: [{{name: {name}, port: {x}}}]
""")
    return "---\n".join(docs)


def meshd_l7_lab_setup(lab, workloads, workdir):
    path = os.path.join(workdir, "bench-l7-services.yaml")
    with open(path, "w") as f:
        f.write(meshd_l7_yaml(workloads, lab.lab_id))
    lab.apply(path)
    # The client node's meshd is the proxy of the L7 variant: pin it like the other
    # client-side proxies (HAProxy per node, the outbound sidecar). Its L4 work is in the
    # kernel, in the connecting process's context, so meshd-l4 is unaffected.
    pids = lab.meshd_pids()
    if pids:
        lab.run(["taskset", "-a", "-cp", str(CLIENT_CPU), str(pids[0])],
                "pin the client node's meshd (its L7 proxy) to the client CPU")


def meshd_l7_setup(run):
    return L7_VIPS[run.placement.name], run.workload.port


# ------------------------------------------------------------------ meshd + mTLS

# The bench's workloads with identities: the client pod (n1-p1) and the server pods
# (n1-p2 same-node, n2-p1 cross-node), and both nodes with their addresses (tunnel peers).
MTLS_WORKLOADS = [("client", (1, 1)), ("server", (1, 2)), ("server", (2, 1))]


def mtls_placement_file(workdir, lab_id):
    """meshd-ca's placement (--workloads) for the bench lab LAB_ID: which node may obtain
    which identity."""
    path = os.path.join(workdir, f"{lab_id}-ca-workloads.yaml")
    with open(path, "w") as f:
        for sa, (n, p) in MTLS_WORKLOADS:
            f.write(f"- {{name: n{n}-p{p}, namespace: default, serviceAccount: {sa}, "
                    f"node: {lab_id}-n{n}}}\n")
    return path


def mtls_identity_yaml(lab_id):
    docs = []
    for sa, (n, p) in MTLS_WORKLOADS:
        docs.append(f"""apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {{name: n{n}-p{p}, namespace: default}}
spec: {{serviceAccount: {sa}, addresses: [{pod_ip(n, p)}], node: {lab_id}-n{n}}}
""")
    for n in (1, 2):
        docs.append(f"""apiVersion: v1
kind: Node
metadata: {{name: {lab_id}-n{n}}}
status: {{addresses: [{{type: InternalIP, address: 10.99.0.{n}}}]}}
""")
    return "---\n".join(docs)


def meshd_mtls_lab_setup(lab, workloads, workdir):
    """The L4 and the L7 Services (as in meshd-l4 and meshd-l7) plus Workloads and Nodes: a
    cross-node connection goes client -> meshd (n1) -> mTLS tunnel -> meshd (n2) -> server.
    Waits until both node agents hold their workload's certificate. The client node's meshd
    is pinned to the client CPU, the server node's to the server CPU (as the outbound and
    inbound sidecars are)."""
    path = os.path.join(workdir, "bench-mtls-services.yaml")
    with open(path, "w") as f:
        f.write(meshd_services_yaml(workloads, lab.lab_id) + "---\n" +
                meshd_l7_yaml(workloads, lab.lab_id) + "---\n" + mtls_identity_yaml(lab.lab_id))
    lab.apply(path)
    deadline = time.time() + 30
    while True:
        ready = []
        for n in (1, 2):
            r = lab.run([lab.meshlab, "meshctl", f"n{n}", "-o", "json", "status"],
                        "meshctl status", check=False)
            try:
                ready.append(json.loads(r.stdout)["mtls"]["identitiesReady"])
            except (ValueError, KeyError, TypeError):
                ready.append(0)
        if all(x >= 1 for x in ready):
            break
        if time.time() > deadline:
            raise BenchError(f"meshd-mtls: node agents' certificates not ready (ready: {ready})")
        time.sleep(0.2)
    for pid, cpu in zip(lab.meshd_pids(), (CLIENT_CPU, SERVER_CPU)):
        lab.run(["taskset", "-a", "-cp", str(cpu), str(pid)], "pin a meshd of the mTLS lab")


VARIANTS = [
    Variant("direct", "no mesh: the client dials the server pod's IP (baseline)", "plain",
            direct_setup),
    Variant("sidecar", "iptables REDIRECT into one HAProxy per pod on both sides "
            "(Istio's sidecar shape); 2 proxy hops", "plain", sidecar_setup, sidecar_teardown),
    Variant("sidecar-mtls", "the sidecar variant with mutual TLS 1.3 between the two HAProxy "
            "sidecars (client cert required and verified; Istio's sidecars under STRICT); 2 proxy "
            "hops", "plain", lambda run: sidecar_setup(run, mtls=True), sidecar_teardown),
    Variant("haproxy-node", "one HAProxy per node (the client's), dialed on the node's pod "
            "bridge address; 1 proxy hop", "plain", node_proxy_setup),
    Variant("meshd-l4", "meshd L4: the client dials a Service VIP, cgroup/connect4 rewrites it "
            "to the server pod; no proxy hop", "meshd", meshd_l4_setup,
            lab_setup=meshd_lab_setup),
    Variant("meshd-l7", "meshd L7: the client dials a Service VIP with an HTTPRoute; the "
            "connect hook redirects it into the client node's meshd (1 worker), which routes "
            "each HTTP/1.1 request and relays other bytes; 1 proxy hop, the app<->meshd hop "
            "spliced by sockmap", "meshd-splice",
            meshd_l7_setup, lab_setup=meshd_l7_lab_setup),
    Variant("meshd-l4-mtls", "meshd L4 with mTLS: the Service VIP of meshd-l4; cross-node its "
            "connections go through both nodes' meshd and the mutual-TLS 1.3 tunnel (relayed "
            "opaquely); same-node stays on the kernel path", "meshd-mtls", meshd_l4_setup,
            lab_setup=meshd_mtls_lab_setup),
    Variant("meshd-l7-mtls", "meshd L7 with mTLS: the HTTPRoute VIP of meshd-l7; cross-node "
            "each request is routed by the client node's meshd and carried through the "
            "mutual-TLS 1.3 tunnel to the server node's meshd", "meshd-mtls", meshd_l7_setup,
            lab_setup=meshd_mtls_lab_setup),
]

BY_NAME = {v.name: v for v in VARIANTS}
