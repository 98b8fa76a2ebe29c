"""Run embedded state machines as processes: one node per process, and a local
cluster of n such processes on loopback (what the examples and the multi-process
tests use). Built on raft.testing.cluster.LocalCluster: the same generated configs, data
dirs, random cluster secret, log files, SIGKILL/SIGTERM handling."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Awaitable, Callable, Iterable

from raft.config import load_config
from raft.embed.api import EmbeddedNode
from raft.embed.client import ClusterClient
from raft.embed.machine import StateMachine
from raft.net.transport import new_event_loop
from raft.testing.cluster import LocalCluster

__all__ = ["EmbedLocalCluster", "serve", "example_main"]

MachinesFactory = Callable[[], "StateMachine | Iterable[StateMachine]"]


class EmbedLocalCluster(LocalCluster):
    """``n`` processes each running ``command + ["--node-config", path]``."""

    def __init__(self, command: list[str], nodes: int = 3, **kw: Any) -> None:
        self.command = list(command)
        super().__init__(nodes, **kw)

    def serve_command(self, config_path: str) -> list[str]:
        return [*self.command, "--node-config", config_path]

    @property
    def secret(self) -> bytes:
        with open(self.secret_path, "rb") as fp:
            return fp.read().strip()

    def addresses(self) -> dict[int, tuple[str, int]]:
        """Each node's embed RPC address (its config's client address)."""
        return {i: n.client for i, n in self.nodes.items()}

    def client(self, **kw: Any) -> ClusterClient:
        return ClusterClient(self.addresses(), self.secret, **kw)


async def wait_for_leader(client: ClusterClient, timeout: float = 30.0) -> int:
    """Poll the nodes until one names a leader; its id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        lid = await client.leader()
        if lid:
            return lid
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no leader after {timeout}s")


NodeWork = Callable[[EmbeddedNode], Awaitable[None]]


def serve(config_path: str, machines: MachinesFactory, work: NodeWork | None = None,
          **node_kw: Any) -> None:
    """Run one EmbeddedNode from a config file until SIGTERM or SIGINT; ``work(node)``,
    if given, runs alongside (the node keeps serving after it returns)."""
    cfg = load_config(config_path)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format=f"%(asctime)s node{cfg.node_id} %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        node = EmbeddedNode(cfg, machines(), **node_kw)
        await node.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"node {cfg.node_id} started pid={os.getpid()}", flush=True)
        if work is not None:
            job = asyncio.ensure_future(work(node))
            job.add_done_callback(_report)
        stopped = asyncio.ensure_future(node.raft.wait_stopped())
        await asyncio.wait([asyncio.ensure_future(stop.wait()), stopped],
                           return_when=asyncio.FIRST_COMPLETED)
        await node.stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def _report(job: "asyncio.Future[None]") -> None:
    if not job.cancelled() and job.exception() is not None:
        logging.getLogger("raft.embed").error("the node's work failed: %r", job.exception())


def example_main(description: str, machines: MachinesFactory,
                 demo: Callable[[ClusterClient, EmbedLocalCluster, argparse.Namespace],
                                Awaitable[None]],
                 argv: list[str] | None = None,
                 add_args: Callable[[argparse.ArgumentParser], None] | None = None,
                 work: NodeWork | None = None) -> None:
    """``script.py --cluster 3``: start 3 processes of this script on loopback, run
    ``demo`` against them, stop them. ``script.py --node-config node.toml``: be one
    node (what the cluster's processes run)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cluster", type=int, default=3, metavar="N",
                   help="start N local node processes and run the demo (default 3)")
    p.add_argument("--node-config", help="run one node from this config (internal)")
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    p.add_argument("--dir", help="cluster directory (default: a temporary one)")
    if add_args is not None:
        add_args(p)
    args = p.parse_args(argv)
    if args.node_config:
        serve(args.node_config, machines, work)
        return
    script = os.path.abspath(sys.argv[0])
    with EmbedLocalCluster([sys.executable, script], args.cluster, directory=args.dir,
                           durability=args.durability, log_level="warning") as cluster:
        cluster.start()
        print(f"started {args.cluster} nodes: " + ", ".join(
            f"node {i} pid {n.pid} rpc {n.client_addr}" for i, n in cluster.nodes.items()),
            flush=True)

        async def run_demo() -> None:
            client = cluster.client()
            try:
                print(f"leader: node {await wait_for_leader(client)}", flush=True)
                await demo(client, cluster, args)
            finally:
                await client.close()

        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run_demo())
