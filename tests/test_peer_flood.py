"""Issue 15 item 3: unauthenticated connections on the peer port cannot keep real peers
out, and cannot flood the log.

In-process PeerTransports on 127.0.0.0/8 (the attacker also from 127.0.0.2, a different
source address on the same loopback), then a real 3-node cluster of processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time

import pytest
from test_transport import Node, free_ports, hb, run, wait_until

from raft.testing.cluster import LocalCluster
from raft.resp.probe import resp_command

HOST = "127.0.0.1"


class Attacker:
    """Keeps ``n`` idle connections open to ``port`` from ``source``: whenever the
    server closes one, it dials a new one (as the probe of the issue did)."""

    def __init__(self, port: int, n: int, source: str = HOST) -> None:
        self.port, self.n, self.source = port, n, source
        self.dials = 0
        self._task: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _hold_one(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                HOST, self.port, local_addr=(self.source, 0))
        except OSError:
            await asyncio.sleep(0.01)
            return
        self.dials += 1
        self._writers.add(writer)
        try:
            await reader.read()  # idle until the server closes us
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _run(self) -> None:
        holders: set[asyncio.Task[None]] = set()
        while True:
            while len(holders) < self.n:
                t = asyncio.create_task(self._hold_one())
                holders.add(t)
                t.add_done_callback(holders.discard)
            await asyncio.sleep(0.005)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await wait_until(lambda: self.dials >= self.n, timeout=10.0)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for w in list(self._writers):
            w.transport.abort()


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"], ids=["same-ip", "other-ip"])
def test_idle_connections_do_not_keep_a_peer_out(source, caplog):
    """100 idle connections held open (and re-dialed when closed) on node 1's peer port:
    node 2 still connects and delivers within a few seconds, and node 1 writes a
    bounded number of warning lines."""
    caplog.set_level(logging.WARNING, logger="raft.net.transport")

    async def main() -> float:
        ports = dict(zip((1, 2), free_ports(2)))
        # The production handshake deadline (2 s), not test_transport's short one.
        a = Node(1, ports, handshake_timeout=2.0)
        b = Node(2, ports, handshake_timeout=2.0)
        await a.t.start()
        attacker = Attacker(ports[1], 100, source)
        try:
            await attacker.start()
            started = time.monotonic()
            await b.t.start()
            b.t.send([hb(2, 1, 1)])
            await wait_until(lambda: a.received, timeout=8.0)
            took = time.monotonic() - started
            await asyncio.sleep(1.0)  # the attack goes on: count the log lines it costs
            stats = a.t.stats()
            assert stats["inbound_accepted"] == 1
            assert stats["handshakes_evicted"] + stats["auth_failures"] > 0
            return took
        finally:
            await attacker.stop()
            await b.t.close()
            await a.t.close()

    took = run(main(), limit=40.0)
    print(f"peer connected in {took:.2f}s while 100 idle connections were held")
    assert took < 8.0
    lines = [r for r in caplog.records if r.name == "raft.net.transport"
             and r.levelno >= logging.WARNING and "node 1:" in r.getMessage()]
    # At most one line per reason per 10 s (refused, evicted, rejected, lost).
    assert len(lines) <= 8, [r.getMessage() for r in lines]


def test_per_ip_cap_keeps_slots_for_other_addresses():
    """A single address cannot take more than its share of handshake slots: with 16
    connections from 127.0.0.2 that have sent their HELLO (so they are not evicted),
    connections from 127.0.0.1 still get slots."""
    async def main() -> None:
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports, handshake_timeout=5.0, max_handshakes=20, max_handshakes_per_ip=4)
        await a.t.start()
        socks: list[socket.socket] = []
        try:
            for _ in range(10):
                s = socket.socket()
                s.setblocking(False)
                s.bind(("127.0.0.2", 0))
                await asyncio.get_running_loop().sock_connect(s, (HOST, ports[1]))
                socks.append(s)
            await wait_until(lambda: a.t.stats()["handshakes_evicted"] >= 6, timeout=5.0)
            assert len(a.t._handshakes_by_ip) == 1 and a.t._handshakes_by_ip["127.0.0.2"] <= 4
            b = Node(2, ports, handshake_timeout=5.0)
            await b.t.start()
            b.t.send([hb(2, 1, 7)])
            await wait_until(lambda: a.received, timeout=5.0)
            await b.t.close()
        finally:
            for s in socks:
                s.close()
            await a.t.close()
    run(main())


def _warning_lines(path: str) -> int:
    with open(path, "rb") as fp:
        return sum(1 for line in fp if b" WARNING " in line)


def test_restarted_follower_rejoins_while_the_leaders_peer_port_is_flooded(tmp_path):
    """The issue's scenario with real processes: a follower is stopped, ~100 idle
    connections are held on the leader's peer port (re-dialed when closed), the follower
    restarts and must be back in the cluster (connected, caught up) in bounded time,
    while the leader's log stays small."""
    with LocalCluster(3, directory=str(tmp_path / "c"), durability="none") as c:
        c.start()
        leader = c.wait_for_leader(60)
        follower = next(i for i in c.nodes if i != leader)
        c.stop(follower)
        host, port = c.nodes[leader].client
        for i in range(20):
            resp_command(host, port, "SET", f"k{i}", "v")
        raft_port = c.nodes[leader].config.me.raft[1]
        log_before = _warning_lines(c.nodes[leader].log_path)

        async def attack_and_rejoin() -> float:
            attacker = Attacker(raft_port, 100)
            await attacker.start()
            try:
                started = time.monotonic()
                c.start(follower)
                fhost, fport = c.nodes[follower].client
                deadline = started + 30.0
                while time.monotonic() < deadline:
                    info = await asyncio.to_thread(c.info, follower)
                    if info and info.get("raft_applied_index") and info.get("raft_commit_index") \
                            and int(info["raft_applied_index"]) >= 21:
                        return time.monotonic() - started
                    await asyncio.sleep(0.1)
                raise AssertionError(f"follower {follower} did not catch up within 30s "
                                     f"under the flood; logs in {c.dir}")
            finally:
                await attacker.stop()

        took = asyncio.run(attack_and_rejoin())
        assert c.nodes[leader].running
        warnings = _warning_lines(c.nodes[leader].log_path) - log_before
        with open(c.nodes[leader].log_path, "rb") as fp:
            size = len(fp.read())
        print(f"follower rejoined in {took:.2f}s under the flood; {warnings} warning lines, "
              f"leader log {os.path.getsize(c.nodes[leader].log_path)} bytes")
        assert warnings <= 20, f"{warnings} warning lines on the leader (took {took:.1f}s)"
        assert size < 1 << 20
        assert re.search(rb"similar lines suppressed|handshake slots full|rejected",
                         open(c.nodes[leader].log_path, "rb").read())
