"""A local cluster of ``raft serve`` processes on 127.0.0.1 (``LocalCluster``), for
``raft cluster``, ``raft bench``, ``raft torture`` and the multi-process tests; and
process helpers (``free_ports``, ``stop_process``)."""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from raft.config import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
    DEFAULT_SNAPSHOT_TRAILING_ENTRIES,
    DEFAULT_TICK_MS,
    NodeConfig,
    PeerAddress,
    format_host_port,
    render_config,
)
from raft.resp.probe import RespClientError, parse_info, resp_command

__all__ = ["ClusterNode", "LOCALHOST", "LocalCluster", "free_ports", "stop_process"]

LOCALHOST = "127.0.0.1"
# The child runs this rather than `python -m raft.cli`, with its working directory
# in the cluster directory: a source checkout in the current directory must not
# shadow the installed package (which has the compiled core).
_CHILD_MAIN = "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))"


def free_ports(n: int, host: str = LOCALHOST) -> list[int]:
    """``n`` distinct ports free right now (bound to port 0, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _parent_death_signal() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies, so a
    killed `raft cluster` (or test run) does not leave orphaned nodes behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG

    return preexec


@dataclass
class ClusterNode:
    id: int
    config: NodeConfig
    config_path: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)
    join: bool = False               # started with `raft serve --join` (add_node)

    @property
    def client(self) -> tuple[str, int]:
        return self.config.me.client

    @property
    def client_addr(self) -> str:
        return format_host_port(self.client)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    """``n`` ``raft serve`` processes on 127.0.0.1 with generated configs, data dirs,
    log files and a random cluster secret, all under one directory.

    Ports: with ``base_port`` P, node i serves clients on P+i, peers on P+100+i and
    metrics (if asked) on P+200+i; without it, free ports are picked.
    """

    def __init__(self, nodes: int = 3, *, directory: str | None = None,
                 base_port: int | None = None, durability: str = "none",
                 trace_dir: str | None = None, log_level: str = "info",
                 tick_ms: float = DEFAULT_TICK_MS, election_ticks: int = DEFAULT_ELECTION_TICKS,
                 heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS, password: str | None = None,
                 metrics: bool = False, propose_timeout: float = 10.0,
                 snapshot_threshold_bytes: int = DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
                 snapshot_trailing_entries: int = DEFAULT_SNAPSHOT_TRAILING_ENTRIES,
                 max_msg_bytes: int = 1 << 20,
                 node_settings: dict[str, Any] | None = None, debug_stale_reads: bool = False,
                 **limits: int) -> None:
        """``node_settings`` and ``limits``: other NodeConfig settings, e.g.
        max_entry_bytes, max_log_bytes. ``debug_stale_reads``: TEST ONLY (raft torture)."""
        if not 1 <= nodes <= 99:
            raise ValueError("a local cluster has 1 to 99 nodes")
        self.owns_dir = directory is None
        self.dir = os.path.abspath(directory or tempfile.mkdtemp(prefix="raft-cluster-"))
        self._node_settings = {"snapshot_threshold_bytes": snapshot_threshold_bytes,
                               "snapshot_trailing_entries": snapshot_trailing_entries,
                               "max_msg_bytes": max_msg_bytes, **(node_settings or {}),
                               "debug_stale_reads": debug_stale_reads, **limits}
        try:
            self._setup(nodes, base_port, durability, trace_dir, log_level, tick_ms,
                        election_ticks, heartbeat_ticks, password, metrics, propose_timeout)
        except BaseException:
            if self.owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _setup(self, nodes: int, base_port: int | None, durability: str, trace_dir: str | None,
               log_level: str, tick_ms: float, election_ticks: int, heartbeat_ticks: int,
               password: str | None, metrics: bool, propose_timeout: float) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self.password = password
        self.secret_path = os.path.join(self.dir, "cluster.secret")
        if not os.path.exists(self.secret_path):  # a reused --dir keeps its secret
            self.write_secret(self.secret_path, secrets.token_hex(32).encode())
        with open(self.secret_path, "rb") as fp:
            secret = fp.read().strip()
        # The client password goes to a 0600 file the configs name, never into them.
        password_path = None
        if password is not None:
            password_path = os.path.join(self.dir, "client.password")
            self.write_secret(password_path, password.encode())
        ids = list(range(1, nodes + 1))
        if base_port is not None:
            if not 1 <= base_port or base_port + 200 + nodes > 65535:
                raise ValueError(f"base port {base_port} leaves no room for {nodes} nodes")
            client_ports = [base_port + i for i in ids]
            raft_ports = [base_port + 100 + i for i in ids]
            metric_ports = [base_port + 200 + i for i in ids]
        else:
            ports = free_ports(3 * nodes)
            client_ports, raft_ports, metric_ports = (ports[:nodes], ports[nodes:2 * nodes],
                                                      ports[2 * nodes:])
        peers = {i: PeerAddress((LOCALHOST, raft_ports[i - 1]), (LOCALHOST, client_ports[i - 1]))
                 for i in ids}
        self.nodes: dict[int, ClusterNode] = {}
        for i in ids:
            cfg = NodeConfig(
                node_id=i, peers=peers, data_dir=os.path.join(self.dir, f"node{i}"),
                secret=secret, durability=durability, client_password=password,
                tick_ms=tick_ms, election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks,
                propose_timeout=propose_timeout, log_level=log_level,
                metrics_port=metric_ports[i - 1] if metrics else None,
                **self._node_settings,
                trace_file=(os.path.join(os.path.abspath(trace_dir), f"node{i}.ndjson")
                            if trace_dir else None))
            path = os.path.join(self.dir, f"node{i}.toml")
            self.write_config(path, render_config(cfg, secret_file=self.secret_path,
                                                  password_file=password_path))
            self.nodes[i] = ClusterNode(i, cfg, path, os.path.join(self.dir, f"node{i}.log"))
        self._preexec = _parent_death_signal()

    @staticmethod
    def write_secret(path: str, secret: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fp:
            fp.write(secret + b"\n")

    @staticmethod
    def write_config(path: str, text: str) -> None:
        """Mode 0600: a config may hold a password or secret inline (``secret =``)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(text)

    # -- processes --

    def serve_command(self, config_path: str) -> list[str]:
        joining = any(n.join and n.config_path == config_path for n in self.nodes.values())
        return [sys.executable, "-c", _CHILD_MAIN, "serve", "--config", config_path] + (
            ["--join"] if joining else [])

    def spawn(self, config_path: str, log_path: str) -> subprocess.Popen[bytes]:
        """Start ``raft serve`` on a config; output appended to ``log_path``."""
        with open(log_path, "ab") as log_fp:
            return subprocess.Popen(
                self.serve_command(config_path), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=log_fp, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._preexec)

    def start(self, node_id: int | None = None) -> None:
        """Start one node (or every node not running)."""
        ids = [node_id] if node_id is not None else list(self.nodes)
        for i in ids:
            n = self.nodes[i]
            if n.running:
                continue
            if n.proc is not None:
                n.restarts += 1
            n.proc = self.spawn(n.config_path, n.log_path)

    def add_node(self, node_id: int) -> ClusterNode:
        """Configure (not start) a new, empty node ``node_id`` that joins the running
        cluster (``raft serve --join``): its ``[peers]`` lists the members it may hear
        from plus itself; it waits until a leader adds it (RAFT.ADDNODE)."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} exists")
        template = next(iter(self.nodes.values())).config
        client_port, raft_port = free_ports(2)
        me = PeerAddress((LOCALHOST, raft_port), (LOCALHOST, client_port))
        peers = {i: n.config.me for i, n in self.nodes.items()}
        peers[node_id] = me
        cfg = dataclasses.replace(template, node_id=node_id, peers=peers,
                                  data_dir=os.path.join(self.dir, f"node{node_id}"),
                                  metrics_port=None,
                                  trace_file=(os.path.join(os.path.dirname(template.trace_file),
                                                           f"node{node_id}.ndjson")
                                              if template.trace_file else None))
        path = os.path.join(self.dir, f"node{node_id}.toml")
        password_path = os.path.join(self.dir, "client.password") if self.password else None
        self.write_config(path, render_config(cfg, secret_file=self.secret_path,
                                              password_file=password_path))
        node = ClusterNode(node_id, cfg, path, os.path.join(self.dir, f"node{node_id}.log"),
                           join=True)
        self.nodes[node_id] = node
        return node

    def kill(self, node_id: int) -> None:
        """SIGKILL a node (a crash: nothing is flushed or closed) and reap it."""
        n = self.nodes[node_id]
        if n.running:
            assert n.proc is not None
            os.kill(n.proc.pid, signal.SIGKILL)
            n.proc.wait(10)

    def stop(self, node_id: int, timeout: float = 5.0) -> int | None:
        """SIGTERM a node, SIGKILL it if it has not exited after ``timeout``; its status."""
        n = self.nodes[node_id]
        if n.proc is None:
            return None
        return stop_process(n.proc, timeout)

    def stop_all(self, timeout: float = 5.0) -> None:
        procs = [n.proc for n in self.nodes.values() if n.running]
        for p in procs:
            assert p is not None
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in procs:
            assert p is not None
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)

    def close(self, keep_dir: bool = False) -> None:
        self.stop_all()
        if self.owns_dir and not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- probes --

    def client_addrs(self) -> list[str]:
        return [n.client_addr for n in self.nodes.values()]

    def info(self, node_id: int, timeout: float = 1.0) -> dict[str, str] | None:
        """The node's INFO as a dict, or None if it does not answer."""
        host, port = self.nodes[node_id].client
        try:
            return parse_info(resp_command(host, port, "INFO", password=self.password,
                                           timeout=timeout))
        except (RespClientError, ValueError):
            return None

    def serving_leader(self, timeout: float = 1.0) -> int | None:
        """The id of a node that says it is leader and serves a linearizable read
        (which goes through the log: so it really leads a working majority)."""
        for i, n in self.nodes.items():
            if not n.running:
                continue
            info = self.info(i, timeout)
            if info is None or info.get("raft_role") != "leader":
                continue
            try:
                resp_command(*n.client, "DBSIZE", password=self.password, timeout=timeout)
            except RespClientError:
                continue
            return i
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.serving_leader()
            if leader is not None:
                return leader
            for n in self.nodes.values():
                if n.proc is not None and n.proc.poll() is not None and n.restarts == 0 \
                        and n.proc.returncode == 2:
                    raise RuntimeError(f"node {n.id} refused its config; see {n.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"no leader served a read within {timeout}s; logs in {self.dir}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit status."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)
    except ProcessLookupError:
        return proc.wait()
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)
