"""Process and namespace plumbing for the suite: start/stop by PID, run in a pod or node,
CPU and memory accounting from /proc, BPF program run time from bpftool.

Every process the suite starts is recorded in Lab.procs and stopped by its PID; nothing is
stopped by name. Clients and servers run through `meshlab exec`, which joins the pod's
cgroup and netns and then execs, so the PID we hold is the workload's own PID.
"""
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
# The suite's own labs (lab/meshlab MESHLAB_ID), one per kind, up at the same time so the
# repetitions of every variant can be interleaved: their netns, cgroups, /run files and
# meshd instances are named apart from the default lab (and each other), so a `meshlab
# up`/`down` someone else runs meanwhile neither breaks the benchmark nor is broken.
LAB_IDS = {"plain": "mbench", "meshd": "mbenchm", "meshd-splice": "mbenchs",
           "meshd-mtls": "mbencht"}


def run_dir(lab_id):
    return f"/run/meshd-lab-{lab_id}"


class BenchError(Exception):
    """A step failed; the message names the variant/workload/command and the stderr tail."""


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            data = f.read()[-8192:].decode(errors="replace")
        return "\n".join(data.splitlines()[-lines:])
    except OSError:
        return "(no output)"


def pod_ip(node, pod):
    return f"10.244.{node}.{10 + pod}"


def node_bridge_ip(node):
    """cbr0's address in a node netns: every pod on that node routes through it."""
    return f"10.244.{node}.1"


def proc_cpu_seconds(pid):
    """utime+stime of a whole thread group (/proc/PID/stat fields 14 and 15), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mb(pid):
    """Peak resident set (VmHWM) in MB, None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def system_busy_seconds():
    """All CPUs' non-idle time from /proc/stat (includes softirq network processing, and
    every other process on the machine: context only)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + vals[4]
    return (sum(vals[:8]) - idle) / CLK_TCK


@dataclass
class Proc:
    role: str  # "client", "server", "proxy", "meshd"
    name: str
    pid: int
    popen: subprocess.Popen = None
    log: str = ""
    owned: bool = True  # False: meshd, which the lab owns and stops


@dataclass
class Lab:
    """One lab: lab_id names its netns (lab_id-n1-p1, ...), /run dir and meshd instances
    (lab_id-n1, ...: the EndpointSlice nodeName)."""
    lab_id: str
    repo: str
    build: str
    workdir: str
    env: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)
    meshd: bool = False

    @property
    def meshlab(self):
        return os.path.join(self.repo, "lab", "meshlab")

    def _env(self):
        e = dict(os.environ)
        e["MESHD_BUILD_DIR"] = self.build
        e["MESHLAB_QUIET"] = "1"
        e["MESHLAB_ID"] = self.lab_id
        e.update(self.env)
        return e

    def run(self, args, what, timeout=120, check=True):
        """Runs a short command to completion; BenchError with its stderr tail on failure."""
        try:
            r = subprocess.run(args, env=self._env(), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what}: timed out after {timeout}s: {' '.join(args)}")
        if check and r.returncode != 0:
            err = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
            raise BenchError(f"{what}: exit {r.returncode}: {' '.join(args)}\n{err}")
        return r

    # ------------------------------------------------------------------ lab lifecycle
    def up(self, with_meshd):
        args = [self.meshlab, "up"] + ([] if with_meshd else ["--no-meshd"])
        self.run(args, "meshlab up", timeout=180)
        self.meshd = with_meshd
        # Per-netns TCP settings so a connections-per-second run never runs out of
        # ephemeral ports (TIME_WAIT reuse) in any box that opens connections.
        for ns in self.netns_list():
            self.nsrun(ns, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
                            "net.ipv4.ip_local_port_range=10000 65000"], "sysctl")

    def down(self):
        self.stop_all()
        subprocess.run([self.meshlab, "down"], env=self._env(), capture_output=True,
                       timeout=120)

    def netns_list(self):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [l.split()[0] for l in out.splitlines() if l.startswith(self.lab_id + "-")]

    def netns(self, box):
        """netns of a pod ("n1-p2") or node ("n1") of this lab."""
        return f"{self.lab_id}-{box}"

    def apply(self, path):
        self.run([self.meshlab, "apply", path], f"meshlab apply {path}")

    def meshd_pids(self):
        pids = []
        if not self.meshd:
            return pids
        for n in (1, 2):
            try:
                with open(f"{run_dir(self.lab_id)}/n{n}.pid") as f:
                    pids.append(int(f.read().strip()))
            except OSError:
                pass
        return pids

    # ------------------------------------------------------------------ processes
    def nsrun(self, netns, args, what, check=True):
        return self.run(["nsenter", f"--net=/run/netns/{netns}", "--"] + args, what,
                        check=check)

    def exec_args(self, target, args, cpu=None):
        """Command line running ARGS in a pod (cgroup+netns) or node (netns), pinned."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return pin + [self.meshlab, "exec", target, "--"] + args

    def start(self, role, name, target, args, cpu=None, ready_port=None, netns=None):
        """Starts a long-running process in TARGET and waits until it listens on
        READY_PORT (TCP, in NETNS). Returns its Proc."""
        log = os.path.join(self.workdir, f"{name}.log")
        f = open(log, "wb")
        p = subprocess.Popen(self.exec_args(target, args, cpu), env=self._env(),
                             stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        f.close()
        proc = Proc(role, name, p.pid, p, log)
        self.procs.append(proc)
        if ready_port is not None:
            self.wait_listen(proc, netns, ready_port)
        return proc

    def wait_listen(self, proc, netns, port, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.popen.poll() is not None:
                raise BenchError(f"{proc.name} exited (code {proc.popen.returncode}) before "
                                 f"listening on :{port}; its output:\n{tail(proc.log)}")
            r = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "ss", "-Hltn",
                                f"sport = :{port}"], capture_output=True, text=True)
            if r.stdout.strip():
                return
            time.sleep(0.05)
        raise BenchError(f"{proc.name} not listening on :{port} in {netns} after {timeout}s; "
                         f"its output:\n{tail(proc.log)}")

    def stop(self, proc):
        """SIGTERM by PID, SIGKILL after 5 s; reaps it."""
        if proc.popen is None or proc.popen.poll() is not None:
            if proc in self.procs:
                self.procs.remove(proc)
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=5)
        except ProcessLookupError:
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc)
            except Exception:  # keep stopping the others
                pass

    def run_client(self, name, target, args, cpu, timeout):
        """Runs a client to completion in TARGET; returns (stdout, cpu_seconds)."""
        log = os.path.join(self.workdir, f"{name}.err")
        out = os.path.join(self.workdir, f"{name}.out")
        with open(log, "wb") as ferr, open(out, "wb") as fout:
            p = subprocess.Popen(self.exec_args(target, args, cpu), env=self._env(),
                                 stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr,
                                 start_new_session=True)
            deadline = time.time() + timeout
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                if time.time() > deadline:
                    os.kill(p.pid, signal.SIGKILL)
                    os.wait4(p.pid, 0)
                    p.returncode = -9
                    raise BenchError(f"client {name} timed out after {timeout}s: "
                                     f"{' '.join(args)}\n{tail(log)}")
                time.sleep(0.02)
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(out, errors="replace") as f:
            stdout = f.read()
        if p.returncode != 0:
            raise BenchError(f"client {name} exit {p.returncode}: {' '.join(args)}\n"
                             f"stderr: {tail(log)}\nstdout: {stdout[-1500:]}")
        return stdout, ru.ru_utime + ru.ru_stime


def bpf_prog_runtime(meshd_pids):
    """Sum of run_time_ns and run_cnt over the BPF programs meshd holds (bpftool's pids
    field), or over programs named mesh_* when bpftool cannot tell owners."""
    if not meshd_pids:
        return 0, 0
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    try:
        progs = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        return 0, 0
    ns = cnt = 0
    wanted = set(meshd_pids)
    for p in progs:
        owners = {x.get("pid") for x in p.get("pids", [])}
        if owners & wanted or (not owners and str(p.get("name", "")).startswith("mesh_")):
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns, cnt


class BpfStats:
    """kernel.bpf_stats_enabled=1 for the life of the object, restored after."""

    def __enter__(self):
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            self.old = f.read().strip()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        return self

    def __exit__(self, *exc):
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(self.old)
