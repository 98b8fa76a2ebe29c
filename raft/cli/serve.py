"""``raft serve``, ``raft cluster`` and ``raft status``: running nodes from the command line.

    raft serve --config node.toml [--log-level debug] [--trace FILE]
    raft cluster --nodes 3 [--base-port P] [--durability none|fsync] [--dir D] [--trace DIR]
    raft status --port P [--host H] [--password PW]

``raft cluster`` starts a local cluster of separate ``raft serve`` processes on
127.0.0.1 (``raft.testing.cluster.LocalCluster``, which the multi-process tests use too),
prints each node's client address and a ``READY`` line once a leader answers, and
stops every node (SIGTERM, then SIGKILL by PID) on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from raft.config import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
    DEFAULT_SNAPSHOT_TRAILING_ENTRIES,
    DEFAULT_TICK_MS,
    LOG_LEVELS,
    ConfigError,
    NodeConfig,
    format_host_port,
    load_config,
)
from raft.resp.probe import RespClientError, resp_command
from raft.testing.cluster import LOCALHOST, LocalCluster

__all__ = ["add_subcommands", "cluster_main", "serve_main", "status_main"]

#: sys.setswitchinterval for a `raft serve` process (see serve_main).
GIL_SWITCH_INTERVAL = 0.00025

#: The cyclic GC's youngest-generation threshold for a `raft serve` process (Python's
#: default: 700 allocations). A node allocates a few container objects per request
#: (futures, reads, replies) that die young without cycles; at 700 the collector ran
#: thousands of times a second and took ~6% of the leader's CPU under mixed reads and
#: writes (perf). Measured in pairs (raft bench, 32x16, 50% reads): +16% and +22%.
#: A collection still runs every 20,000 net allocations, so cycles are freed.
GC_GEN0_THRESHOLD = 20_000


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
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    raise_nofile_limit()  # before anything opens: clients get what the reserve leaves

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_serve(config, force_new=bool(getattr(args, "force_new", False)),
                                 join=bool(getattr(args, "join", False))))


async def _serve(config: NodeConfig, force_new: bool = False, join: bool = False) -> int:
    from raft.node import RaftNode
    from raft.resp import resp_frontend
    from raft.storage.base import StorageError

    log = logging.getLogger("raft.serve")
    node = RaftNode(config, force_new=force_new, join=join, frontend=resp_frontend)
    loop = asyncio.get_running_loop()
    try:
        await node.start()
        # What recovery loaded (the log, the state machine) lives as long as the
        # node: out of the collector's way, so older-generation passes skip it
        # (collected first: garbage frozen would never be freed).
        gc.collect()
        gc.freeze()
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
    s.add_argument("--join", action="store_true",
                   help="join an existing cluster: [peers] says where the members listen, but "
                        "this node waits, without campaigning, until the leader adds it "
                        "(raft members add; docs/operations.md, \"Membership\")")
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
