"""``raft serve``, ``raft cluster`` and ``raft status``: running nodes from the command line.

    raft serve --config node.toml [--log-level debug] [--trace FILE]
    raft cluster --nodes 3 [--base-port P] [--durability none|fsync] [--dir D] [--trace DIR]
    raft status --port P [--host H] [--password PW]

``raft cluster`` starts a local cluster of separate ``raft serve`` processes on
127.0.0.1 (the ``LocalCluster`` class below, which the multi-process tests use too),
prints each node's client address and a ``READY`` line once a leader answers, and
stops every node (SIGTERM, then SIGKILL by PID) on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from raft.errors import RaftError
from raft.config import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
    DEFAULT_SNAPSHOT_TRAILING_ENTRIES,
    DEFAULT_TICK_MS,
    LOG_LEVELS,
    ConfigError,
    NodeConfig,
    PeerAddress,
    format_host_port,
    load_config,
    render_config,
)

__all__ = ["LocalCluster", "RespClientError", "add_subcommands", "cluster_main", "resp_command",
           "serve_main", "status_main"]

LOCALHOST = "127.0.0.1"
#: sys.setswitchinterval for a `raft serve` process (see serve_main).
GIL_SWITCH_INTERVAL = 0.00025
# The child runs this rather than `python -m raft.cli`, with its working directory
# in the cluster directory: a source checkout in the current directory must not
# shadow the installed package (which has the compiled core).
_CHILD_MAIN = "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))"


# --- raft serve ----------------------------------------------------------------------


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr, force=True)


def serve_main(args: argparse.Namespace) -> int:
    """Run one node until SIGTERM/SIGINT. Exit status: 0 after a clean stop, 1 if
    the node failed (fatal error, storage damage), 2 for a bad configuration."""
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"raft serve: {e}", file=sys.stderr)
        return 2
    if args.log_level:
        config.log_level = args.log_level
    if args.trace:
        config.trace_file = os.path.abspath(args.trace)
    if args.metrics_port is not None:
        config.metrics_port = args.metrics_port
    setup_logging(config.log_level)
    from raft.limits import raise_nofile_limit
    from raft.net.transport import new_event_loop

    # The WAL's write+fdatasync runs on a disk thread that releases the GIL. When it
    # returns, it must take the GIL back from a busy loop thread, which Python hands
    # over only after the switch interval (5 ms by default): under load every save
    # would take >= 5 ms however fast the disk. 0.25 ms bounds that wait to about
    # the disk's own fdatasync time; the loop thread is the only other thread.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    raise_nofile_limit()  # before anything opens: clients get what the reserve leaves

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_serve(config, force_new=bool(getattr(args, "force_new", False))))


async def _serve(config: NodeConfig, force_new: bool = False) -> int:
    from raft.node import RaftNode
    from raft.resp import resp_frontend
    from raft.storage.base import StorageError

    log = logging.getLogger("raft.serve")
    node = RaftNode(config, force_new=force_new, frontend=resp_frontend)
    loop = asyncio.get_running_loop()
    try:
        await node.start()
    except StorageError as e:
        log.error("node %d: cannot open its data directory: %s", config.node_id, e)
        return 1
    except OSError as e:
        log.error("node %d: cannot start: %s", config.node_id, e)
        return 1

    def on_signal(signame: str) -> None:
        log.info("node %d: %s received, stopping", config.node_id, signame)
        loop.create_task(node.stop())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    await node.wait_stopped()
    return 1 if node.fatal_error else 0


# --- a tiny RESP client (status and readiness probes; no redis-py needed) -------------


class RespClientError(RaftError):
    """An error reply (``-ERR ...``), or a connection that failed."""


def _read_reply(fp: Any) -> Any:
    line = fp.readline()
    if not line.endswith(b"\r\n"):
        raise RespClientError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RespClientError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = fp.read(n + 2)
        if len(data) != n + 2:
            raise RespClientError("connection closed")
        return data[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_read_reply(fp) for _ in range(n)]
    raise RespClientError(f"unexpected reply {line[:40]!r}")


def resp_command(host: str, port: int, *args: str | bytes, password: str | None = None,
                 timeout: float = 2.0) -> Any:
    """Send one command on a fresh connection and return its reply (bytes for bulk
    strings); raises RespClientError for error replies and connection failures."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            fp = sock.makefile("rb")
            commands = ([["AUTH", password]] if password else []) + [list(args)]
            out = bytearray()
            for argv in commands:
                out += b"*%d\r\n" % len(argv)
                for a in argv:
                    b = a if isinstance(a, bytes) else str(a).encode()
                    out += b"$%d\r\n%s\r\n" % (len(b), b)
            sock.sendall(out)
            if password:
                _read_reply(fp)
            return _read_reply(fp)
    except OSError as e:
        raise RespClientError(f"{host}:{port}: {e}") from None


def parse_info(text: bytes) -> dict[str, str]:
    out = {}
    for line in text.decode(errors="replace").splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def _password_arg(args: argparse.Namespace, prog: str) -> str | None:
    """The client password from ``--password-file`` (preferred: not visible in ``ps``)
    or ``--password``; raises ValueError with the reason."""
    if args.password is not None and args.password_file is not None:
        raise ValueError("give --password or --password-file, not both")
    if args.password is not None:
        print(f"{prog}: warning: --password is visible to every user in `ps`; "
              f"use --password-file", file=sys.stderr)
        return str(args.password)
    if args.password_file is None:
        return None
    try:
        with open(args.password_file, "rb") as fp:
            data = fp.read().rstrip(b"\r\n")
    except OSError as e:
        raise ValueError(f"--password-file: cannot read {args.password_file}: "
                         f"{e.strerror or e}") from None
    try:
        password = data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"--password-file: {args.password_file} is not UTF-8 text") from None
    if not password:
        raise ValueError(f"--password-file: {args.password_file} is empty")
    return password


def status_main(args: argparse.Namespace) -> int:
    """Print a node's INFO (all sections, or the ones named)."""
    try:
        password = _password_arg(args, "raft status")
    except ValueError as e:
        print(f"raft status: {e}", file=sys.stderr)
        return 2
    try:
        text = resp_command(args.host, args.port, "INFO", *args.section,
                            password=password, timeout=args.timeout)
    except RespClientError as e:
        print(f"raft status: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text.decode(errors="replace").replace("\r\n", "\n"))
    return 0


# --- a local cluster of processes -----------------------------------------------------


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
        return [sys.executable, "-c", _CHILD_MAIN, "serve", "--config", config_path]

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


# --- raft cluster ---------------------------------------------------------------------


def cluster_main(args: argparse.Namespace) -> int:
    """Start a local cluster, print its addresses and READY, run until Ctrl-C/SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    try:
        password = _password_arg(args, "raft cluster")
    except ValueError as e:
        print(f"raft cluster: {e}", file=sys.stderr)
        return 2
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster = LocalCluster(
            args.nodes, directory=args.dir, base_port=args.base_port,
            durability=args.durability, trace_dir=args.trace, log_level=args.log_level,
            password=password, metrics=args.metrics, tick_ms=args.tick_ms,
            election_ticks=args.election_ticks, heartbeat_ticks=args.heartbeat_ticks,
            snapshot_threshold_bytes=args.snapshot_threshold_bytes,
            snapshot_trailing_entries=args.snapshot_trailing_entries)
    except (ValueError, OSError) as e:   # ConfigError is a ValueError
        print(f"raft cluster: {e}", file=sys.stderr)
        for s, h in old.items():
            signal.signal(s, h)
        return 2
    try:
        cluster.start()
        for n in cluster.nodes.values():
            metrics = (f"  metrics http://{format_host_port((LOCALHOST, n.config.metrics_port))}"
                       f"/metrics" if n.config.metrics_port else "")
            print(f"node {n.id}: pid {n.pid}  client {n.client_addr}  raft "
                  f"{format_host_port(n.config.me.raft)}{metrics}  log {n.log_path}", flush=True)
        leader = _wait_ready(cluster, args.timeout, stop)
        if leader is None:
            return 1
        print(f"READY leader={leader} clients={','.join(cluster.client_addrs())} "
              f"dir={cluster.dir}", flush=True)
        _watch(cluster, stop)
        return 0
    finally:
        print("stopping the cluster", file=sys.stderr, flush=True)
        cluster.close(keep_dir=args.keep)
        for s, h in old.items():
            signal.signal(s, h)


def _wait_ready(cluster: LocalCluster, timeout: float, stop: threading.Event) -> int | None:
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        leader = cluster.serving_leader()
        if leader is not None:
            return leader
        dead = [n for n in cluster.nodes.values() if not n.running]
        if dead:
            for n in dead:
                print(f"raft cluster: node {n.id} exited with status {n.proc.returncode if n.proc else '?'}"
                      f" before the cluster was ready; see {n.log_path}", file=sys.stderr)
            return None
        if time.monotonic() > deadline:
            print(f"raft cluster: no leader within {timeout}s; logs in {cluster.dir}",
                  file=sys.stderr)
            return None
        stop.wait(0.05)
    return None


def _watch(cluster: LocalCluster, stop: threading.Event) -> None:
    """Report nodes that exit (a test may kill them on purpose: keep the rest running)."""
    reported: set[tuple[int, int]] = set()
    while not stop.wait(0.2):
        for n in cluster.nodes.values():
            if n.proc is not None and n.proc.poll() is not None and (n.id, n.proc.pid) not in reported:
                reported.add((n.id, n.proc.pid))
                print(f"node {n.id} (pid {n.proc.pid}) exited with status {n.proc.returncode}",
                      file=sys.stderr, flush=True)


# --- argparse -------------------------------------------------------------------------


def add_subcommands(subparsers: Any) -> None:
    """Register ``serve``, ``cluster`` and ``status`` on an argparse subparsers object."""
    s = subparsers.add_parser("serve", help="run one Raft node (peers + Redis-protocol clients)")
    s.add_argument("--config", required=True, metavar="FILE", help="the node's TOML config")
    s.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                   help="override the config's log_level")
    s.add_argument("--trace", metavar="FILE",
                   help="append the core's trace events to FILE (NDJSON, for `raft check`)")
    s.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on PORT (overrides the config)")
    s.add_argument("--force-new", action="store_true",
                   help="start even if the data directory is empty although this node kept "
                        "state there before (its vote and log are lost: see docs/operations.md)")
    s.set_defaults(func=serve_main)

    c = subparsers.add_parser("cluster", help="run a local cluster of node processes on 127.0.0.1")
    c.add_argument("--nodes", type=int, default=3, choices=(1, 3, 5, 7), help="cluster size (default 3)")
    c.add_argument("--base-port", type=int, default=None, metavar="P",
                   help="clients on P+i, peers on P+100+i, metrics on P+200+i (default: free ports)")
    c.add_argument("--durability", choices=("fsync", "none"), default="fsync",
                   help="fsync each Ready (default) or not at all (unsafe; for benchmarks)")
    c.add_argument("--dir", default=None, metavar="D",
                   help="keep configs, data and logs in D (default: a temp dir, removed at exit)")
    c.add_argument("--keep", action="store_true", help="keep the temp dir at exit")
    c.add_argument("--trace", default=None, metavar="DIR",
                   help="write each node's trace to DIR/nodeI.ndjson (check with `raft check`)")
    c.add_argument("--metrics", action="store_true", help="serve Prometheus metrics on P+200+i")
    c.add_argument("--password", default=None,
                   help="require AUTH with this client password (visible in `ps`: prefer "
                        "--password-file)")
    c.add_argument("--password-file", default=None, metavar="FILE",
                   help="require AUTH with the client password in FILE (a final newline "
                        "is ignored)")
    c.add_argument("--tick-ms", type=float, default=DEFAULT_TICK_MS,
                   help=f"tick interval (default {DEFAULT_TICK_MS:g})")
    c.add_argument("--election-ticks", type=int, default=DEFAULT_ELECTION_TICKS,
                   help=f"election timeout in ticks, randomized up to 2x "
                        f"(default {DEFAULT_ELECTION_TICKS})")
    c.add_argument("--heartbeat-ticks", type=int, default=DEFAULT_HEARTBEAT_TICKS,
                   help=f"heartbeat interval in ticks (default {DEFAULT_HEARTBEAT_TICKS})")
    c.add_argument("--snapshot-threshold-bytes", type=int, default=DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
                   metavar="N", help="snapshot and compact the log once N bytes were applied "
                                     f"since the last snapshot; 0: never (default "
                                     f"{DEFAULT_SNAPSHOT_THRESHOLD_BYTES})")
    c.add_argument("--snapshot-trailing-entries", type=int,
                   default=DEFAULT_SNAPSHOT_TRAILING_ENTRIES, metavar="K",
                   help=f"entries kept after a snapshot for slow followers "
                        f"(default {DEFAULT_SNAPSHOT_TRAILING_ENTRIES})")
    c.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    c.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for a leader (default 60)")
    c.set_defaults(func=cluster_main)

    st = subparsers.add_parser("status", help="print a node's INFO (role, term, commit, ...)")
    st.add_argument("--port", type=int, required=True, help="the node's client (RESP) port")
    st.add_argument("--host", default=LOCALHOST)
    st.add_argument("--password", default=None, help="visible in `ps`: prefer --password-file")
    st.add_argument("--password-file", default=None, metavar="FILE")
    st.add_argument("--timeout", type=float, default=2.0)
    st.add_argument("section", nargs="*", help="INFO sections (default: all)")
    st.set_defaults(func=status_main)
