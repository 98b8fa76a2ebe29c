"""Membership changes on a real cluster (separate `raft serve` processes, fsync on)
while a redis-py client writes: grow 3 -> 5 (learner first, then promote), remove a
follower, replace a SIGKILLed node with a fresh empty one (`raft serve --join`), remove
the leader, transfer leadership. After each step: no acknowledged write is lost, and
the longest stall of the writes is printed (it must stay within a few election
timeouts; the assertion bound is generous so the test holds on a loaded machine).

The client follows -MOVED and retries -TRYAGAIN/-CLUSTERDOWN/connection errors, as
an application would; a write is acknowledged when SET returned OK.
"""
from __future__ import annotations

import threading
import time

import pytest
import redis

from raft.cli.members import _call
from raft.config import parse_host_port
from raft.resp.probe import RespClientError, resp_command
from raft.testing.cluster import LocalCluster

ELECTION_TIMEOUT_S = 0.01 * 10 * 2      # tick 10 ms x 10 ticks, randomized up to 2x
STALL_LIMIT_S = 15.0                    # generous: CI shares its machine
WRITE_BOUND = 200_000                   # every load loop is bounded in count and time
TIME_BOUND_S = 240.0


class Writer(threading.Thread):
    """Sequential SETs of fresh keys; records which were acknowledged and the
    longest time between two acknowledgements."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acked: dict[str, str] = {}
        self.stop = threading.Event()
        self.last_ack = time.monotonic()
        self.longest_stall = 0.0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def mark(self) -> float:
        """Reset the stall measurement; returns nothing useful but the time."""
        with self._lock:
            self.longest_stall = 0.0
            self.last_ack = time.monotonic()
            return self.last_ack

    def _connect(self, addr: str | None) -> redis.Redis:
        if addr is None:
            running = [n for n in self.cluster.nodes.values() if n.running]
            addr = running[int(time.monotonic() * 10) % len(running)].client_addr
        host, port = parse_host_port(addr, "addr")
        return redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=1)

    def run(self) -> None:
        client = self._connect(None)
        started = time.monotonic()
        for i in range(WRITE_BOUND):
            if self.stop.is_set() or time.monotonic() - started > TIME_BOUND_S:
                return
            key, value = f"k{i}", f"v{i}"
            while not self.stop.is_set():
                try:
                    if client.set(key, value):
                        now = time.monotonic()
                        with self._lock:
                            self.acked[key] = value
                            self.longest_stall = max(self.longest_stall, now - self.last_ack)
                            self.last_ack = now
                        break
                except redis.ResponseError as e:
                    text = str(e)
                    client.close()
                    client = self._connect(text.split()[-1] if text.startswith("MOVED") else None)
                except (redis.ConnectionError, redis.TimeoutError):
                    client.close()          # unknown outcome: retrying the same SET is fine
                    client = self._connect(None)


def members(cluster: LocalCluster, leader: int) -> dict[int, dict]:
    rows = resp_command(*cluster.nodes[leader].client, "RAFT.MEMBERS", timeout=5)
    out = {}
    for row in rows:
        m = {row[k].decode(): row[k + 1] for k in range(0, len(row), 2)}
        out[m["id"]] = m
    return out


def wait_until(pred, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (RespClientError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def admin(cluster: LocalCluster, *args: str) -> None:
    node = next(n for n in cluster.nodes.values() if n.running).client
    _call(node, list(args), None, 60.0)


def leader_of(cluster: LocalCluster) -> int:
    return cluster.wait_for_leader(60)


def caught_up(cluster: LocalCluster, node_id: int) -> bool:
    ms = members(cluster, leader_of(cluster))
    return node_id in ms and ms[node_id].get("lag", 1) == 0


def check_acked(cluster: LocalCluster, w: Writer) -> None:
    """Every acknowledged write is readable from the leader (linearizable GETs)."""
    leader = cluster.nodes[leader_of(cluster)]
    r = redis.Redis(*leader.client, socket_timeout=10)
    with w._lock:
        acked = dict(w.acked)
    keys = list(acked)
    for k in range(0, len(keys), 500):
        chunk = keys[k:k + 500]
        got = r.mget(chunk)
        missing = [key for key, v in zip(chunk, got) if v is None or v.decode() != acked[key]]
        assert not missing, f"acknowledged writes lost: {missing[:10]} ({len(missing)} in all)"
    r.close()


def test_membership_changes_under_writes(tmp_path, capsys) -> None:
    stalls: dict[str, float] = {}
    with LocalCluster(3, directory=str(tmp_path / "c"), durability="fsync",
                      tick_ms=10, election_ticks=10, heartbeat_ticks=2,
                      snapshot_threshold_bytes=16 * 1024, snapshot_trailing_entries=100) as c:
        c.start()
        leader_of(c)
        w = Writer(c)
        w.start()
        wait_until(lambda: len(w.acked) > 200, "first writes")
        wait_until(lambda: int(c.info(leader_of(c))["raft_first_index"]) > 1,
                   "the leader's first compaction")

        def step(name: str, action) -> None:
            w.mark()
            action()
            n = len(w.acked)
            wait_until(lambda: len(w.acked) > n + 50, f"writes after {name}")
            stalls[name] = w.longest_stall
            check_acked(c, w)

        # Refused: what makes no sense gets -ERR, and nothing changes.
        lead = c.nodes[leader_of(c)].client
        for args, why in [(("RAFT.ADDNODE", "0", "127.0.0.1:1", "127.0.0.1:2"), "node id"),
                          (("RAFT.ADDNODE", "9", "nonsense", "127.0.0.1:2"), "raft address"),
                          (("RAFT.ADDNODE", "9", "127.0.0.1:1", "127.0.0.1:2", "BOSS"), "VOTER or LEARNER"),
                          (("RAFT.ADDNODE", "2", "127.0.0.1:1", "127.0.0.1:2"), "already a member"),
                          (("RAFT.REMOVENODE", "9"), "not a member"),
                          (("RAFT.PROMOTE", "2"), "not a learner"),
                          (("RAFT.TRANSFER", "9"), "not a voter")]:
            with pytest.raises(RespClientError, match=why):
                resp_command(*lead, *args, timeout=5)
        follower_addr = next(n.client for i, n in c.nodes.items() if i != leader_of(c))
        with pytest.raises(RespClientError, match="MOVED"):
            resp_command(*follower_addr, "RAFT.REMOVENODE", "3", timeout=5)
        assert sorted(members(c, leader_of(c))) == [1, 2, 3]

        # Grow 3 -> 5: each new node joins empty, catches up as a learner (by snapshot:
        # the log is compacted every 16 KiB), and is promoted once caught up.
        for nid in (4, 5):
            node = c.add_node(nid)
            c.start(nid)
            step(f"add learner {nid}", lambda: admin(
                c, "RAFT.ADDNODE", str(nid), f"{node.config.me.raft[0]}:{node.config.me.raft[1]}",
                node.client_addr, "LEARNER"))
            wait_until(lambda: caught_up(c, nid), f"learner {nid} caught up")
            step(f"promote {nid}", lambda: admin(c, "RAFT.PROMOTE", str(nid)))
        ms = members(c, leader_of(c))
        assert sorted(ms) == [1, 2, 3, 4, 5]
        assert all(m["role"] == b"voter" for m in ms.values())
        assert c.info(5)["raft_snapshots_installed"] != "0", "node 5 caught up by snapshot"

        # Remove a follower.
        follower = next(i for i in (5, 4, 3, 2, 1) if i != leader_of(c))
        step("remove follower", lambda: admin(c, "RAFT.REMOVENODE", str(follower)))
        c.stop(follower)

        # Replace a SIGKILLed node with a fresh, empty one.
        victim = next(i for i in sorted(c.nodes) if c.nodes[i].running and i != leader_of(c))
        c.kill(victim)
        step("remove killed node", lambda: admin(c, "RAFT.REMOVENODE", str(victim)))
        node = c.add_node(6)
        c.start(6)
        step("add replacement", lambda: admin(
            c, "RAFT.ADDNODE", "6", f"{node.config.me.raft[0]}:{node.config.me.raft[1]}",
            node.client_addr, "LEARNER"))
        wait_until(lambda: caught_up(c, 6), "replacement caught up")
        step("promote replacement", lambda: admin(c, "RAFT.PROMOTE", "6"))

        # Remove the leader: it steps down once the change commits.
        old = leader_of(c)
        step("remove leader", lambda: admin(c, "RAFT.REMOVENODE", str(old)))
        wait_until(lambda: leader_of(c) != old, "a new leader")
        c.stop(old)

        # Transfer leadership with the client writing.
        cur = leader_of(c)
        target = next(i for i in sorted(members(c, cur)) if i != cur)
        step("transfer", lambda: admin(c, "RAFT.TRANSFER", str(target)))
        assert leader_of(c) == target

        w.stop.set()
        w.join(30)
        check_acked(c, w)
        final = members(c, leader_of(c))
        assert len(final) == 3 and 6 in final
    with capsys.disabled():
        print(f"\nmembership changes: {len(w.acked)} acknowledged writes, none lost; "
              "longest write stall per step (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in stalls.items()))
    for name, stall in stalls.items():
        assert stall < STALL_LIMIT_S, f"{name}: writes stalled {stall:.1f}s"
