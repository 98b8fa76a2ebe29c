"""etcd as a third system for ``raft bench --compare``: a 3-node etcd cluster on
loopback and the Go load generator of raft/etcd_load/main.go (installed with the package).

Debian's ``etcd-server`` (3.4, /usr/bin/etcd) runs the cluster; the load generator is
built on demand, offline, from the clientv3 sources Debian's ``golang-etcd-server-dev``
ships under /usr/share/gocode/src (GOPATH mode, GO111MODULE=off), into a cache dir keyed
by the source's hash. Nothing here is required: ``unavailable()`` says why etcd is
skipped when a piece is missing.

etcd 3.4 has no ``--unsafe-no-fsync`` (it came with 3.5), so the "no fsync" cluster
puts its data dirs on tmpfs (/dev/shm): its fsyncs then cost nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from raft.testing.cluster import free_ports, stop_process

GOPATH = "/usr/share/gocode"
CLIENTV3 = os.path.join(GOPATH, "src/go.etcd.io/etcd/clientv3")
SOURCE = Path(__file__).resolve().parent.parent / "etcd_load" / "main.go"
BUILD_TIMEOUT = 600.0
TMPFS = "/dev/shm"


def unavailable() -> str | None:
    """Why etcd cannot be measured here (None when it can)."""
    if not shutil.which("etcd"):
        return "etcd is not installed (apt install etcd-server)"
    if not shutil.which("go"):
        return "go is not installed (apt install golang-go), needed to build the load generator"
    if not os.path.isdir(CLIENTV3):
        return f"{CLIENTV3} is missing (apt install golang-etcd-server-dev)"
    if not SOURCE.is_file():
        return f"{SOURCE} is missing (run from a source checkout)"
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raft" / "etcd_load"


def build_load_generator() -> str:
    """Path of the built etcd_load binary (built now if its source changed)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out_dir = cache_dir() / digest
    binary = out_dir / "etcd_load"
    if binary.is_file():
        return str(binary)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOPATH=GOPATH, GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               GOCACHE=str(cache_dir() / "gocache"), CGO_ENABLED="0")
    tmp_bin = out_dir / f"etcd_load.{os.getpid()}.tmp"
    p = subprocess.run(["go", "build", "-o", str(tmp_bin), str(SOURCE)], env=env,
                       capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError(f"go build of {SOURCE} failed: {(p.stderr or p.stdout)[-500:]}")
    os.replace(tmp_bin, binary)       # atomic: a concurrent run never sees half a binary
    return str(binary)


class EtcdCluster:
    """Three ``etcd`` processes on 127.0.0.1 with free ports, data dirs under ``base``."""

    def __init__(self, base: str, names: tuple[str, ...] = ("e1", "e2", "e3")) -> None:
        self.base = base
        self.names = names
        ports = free_ports(2 * len(names))
        self.client = {n: ports[i] for i, n in enumerate(names)}
        self.peer = {n: ports[len(names) + i] for i, n in enumerate(names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _cmd(self, name: str) -> list[str]:
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        client = f"http://127.0.0.1:{self.client[name]}"
        peer = f"http://127.0.0.1:{self.peer[name]}"
        return ["etcd", "--name", name, "--data-dir", os.path.join(self.base, name),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"raft-compare-{os.getpid()}",
                "--logger", "zap", "--log-level", "error"]

    def start(self, timeout: float = 30.0) -> None:
        for n in self.names:
            log = open(os.path.join(self.base, f"{n}.log"), "wb")
            self.procs[n] = subprocess.Popen(self._cmd(n), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            log.close()
        self.leader(timeout)

    @property
    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items()}

    def _status(self, name: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.client[name]}/v3/maintenance/status",
                                     data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def leader(self, timeout: float = 30.0) -> str:
        """The name of the member every member agrees leads (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"etcd {n} exited with {p.returncode}")
            try:
                st = {n: self._status(n) for n in self.names}
            except (OSError, ValueError):
                time.sleep(0.2)
                continue
            leaders = {s.get("leader") for s in st.values()}
            if len(leaders) == 1 and None not in leaders and "0" not in leaders:
                lid = leaders.pop()
                for n, s in st.items():
                    if s.get("header", {}).get("member_id") == lid:
                        return n
            time.sleep(0.2)
        raise TimeoutError(f"etcd elected no leader within {timeout}s")

    def close(self) -> None:
        for p in self.procs.values():
            stop_process(p, 5.0)


def run_load(binary: str, endpoint: str, conns: int, inflight: int, seconds: float,
             value_size: int = 100) -> dict[str, Any]:
    """One run of the Go load generator against ``endpoint``; its JSON."""
    cmd = [binary, "-endpoints", endpoint, "-conns", str(conns), "-inflight", str(inflight),
           "-duration", f"{seconds}s", "-value-size", str(value_size)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"etcd_load failed: {(p.stderr or p.stdout)[-300:]}")
    return json.loads(p.stdout)


def data_parent(durability: str, tmp: str) -> str:
    """Where a cluster's data dirs go: tmpfs for "none" (3.4 cannot skip fsync)."""
    if durability == "none" and os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK):
        return tempfile.mkdtemp(prefix="raft-compare-etcd-", dir=TMPFS)
    return tempfile.mkdtemp(prefix=f"etcd-{durability}-", dir=tmp)
