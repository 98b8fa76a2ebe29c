"""The node runtime in one process: three RaftNodes on one event loop, real TCP on
127.0.0.1, real DiskStorage in tmp dirs, redis-py (asyncio) as the client.

Also the TOML config loader and its error messages.

Every test runs under a hard time limit and stops every node it started (the
fixtures' finally blocks), so a hang fails the test instead of the run.
"""
from __future__ import annotations

import asyncio
import random
import collections
import os
import textwrap
import urllib.request

import pytest

from raft.testing.cluster import free_ports as _free_ports
from raft import Message, MSG_VOTE, Entry
from raft.config import ConfigError, load_config, render_config
from raft.kv import encode_command
from raft.testing.inproc import InProcessCluster, run as _run, wait_until
from raft.node import RaftNode
from raft.resp import NotLeaderError, resp_frontend

redis = pytest.importorskip("redis")
import redis.asyncio as aioredis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

HOST = "127.0.0.1"
SECRET = b"node-test-secret-0123456789abcdef"
TIME_LIMIT = 60.0


def run(coro, limit: float = TIME_LIMIT):
    """Run a test coroutine on a fresh (uvloop) loop under a time limit."""
    return _run(coro, limit)


def free_ports(n: int) -> list[int]:
    return _free_ports(n, HOST)


def cmd(*argv: str | bytes) -> bytes:
    return encode_command(0, 0, [a if isinstance(a, bytes) else a.encode() for a in argv],
                          time_ms=1)


class Cluster(InProcessCluster[RaftNode]):
    """n RaftNodes (RESP front end on) sharing this loop (raft.testing.inproc); nodes
    can be stopped and restarted from disk."""

    def __init__(self, tmp_path, n: int = 3, durability: str = "none", **cfg) -> None:
        super().__init__(tmp_path, lambda i, config: RaftNode(config, frontend=resp_frontend),
                         lambda node: node.read_barrier(), (NotLeaderError, asyncio.TimeoutError),
                         n=n, secret=SECRET, durability=durability, **cfg)
        self.clients: list = []

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
        await super().close()

    def redis(self, i: int, **kw):
        host, port = self.peers[i].client
        r = aioredis.Redis(host=host, port=port, protocol=2, socket_timeout=10,
                           retry=Retry(NoBackoff(), 0), **kw)
        self.clients.append(r)
        return r


def with_cluster(tmp_path, body, n: int = 3, **kw):
    async def main():
        c = Cluster(tmp_path, n, **kw)
        try:
            await c.start()
            return await body(c)
        finally:
            await c.close()
    return run(main())


# --- the cluster ------------------------------------------------------------------------


def test_elect_replicate_and_serve_redis(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        assert await r.set("k", "v") is True
        assert await r.get("k") == b"v"
        assert await r.incr("n") == 1
        assert await r.incr("n") == 2
        sid = await r.xadd("s", {"f": "1"})
        assert await r.xrange("s") == [(sid, {b"f": b"1"})]
        # Pipelined writes: answered in order, after commit and apply.
        async with r.pipeline(transaction=False) as p:
            for i in range(50):
                p.incr("p")
            assert await p.execute() == list(range(1, 51))
        # Every node applies the same entries: compare the state machines' snapshots.
        commit = leader.core.commit
        await wait_until(lambda: all(n.applied_index >= commit for n in c.nodes.values()),
                         what="followers to apply")
        snaps = {n.state_machine.snapshot() for n in c.nodes.values()}
        assert len(snaps) == 1
        st = leader.status()
        assert st["role"] == "leader" and st["commit_index"] >= commit
        for peer in c.nodes:
            if peer != leader.id:
                assert st[f"peer_{peer}_match"] + st[f"peer_{peer}_lag"] == st["last_index"]
                assert st[f"peer_{peer}_connected"] == 1
        info = await r.info("raft")
        assert info["raft_role"] == "leader" and info["raft_leader"] == leader.id
    with_cluster(tmp_path, body)


def test_follower_redirects_to_the_leader(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        follower = next(i for i in c.nodes if i != leader.id)
        # A follower learns the leader from its AppendEntries (§5.2).
        await wait_until(lambda: c.nodes[follower].core.leader == leader.id, what="leader hint")
        r = c.redis(follower)
        with pytest.raises(redis.exceptions.MovedError) as e:
            await r.set("k", "v")
        assert (e.value.host, e.value.port) == c.peers[leader.id].client
        with pytest.raises(redis.exceptions.MovedError):
            await r.get("k")   # linearizable reads go to the leader too
        with pytest.raises(NotLeaderError) as e2:
            await c.nodes[follower].propose(cmd("SET", "x", "1"))
        assert e2.value.leader_addr == "%s:%d" % c.peers[leader.id].client
        # READONLY: stale reads from the follower's own state machine.
        await c.redis(leader.id).set("k", "v")
        await wait_until(lambda: c.nodes[follower].state_machine.read([b"GET", b"k"]) == b"v",
                         what="follower to apply")
        ro = c.redis(follower, single_connection_client=True)
        await ro.execute_command("READONLY")
        assert await ro.get("k") == b"v"
    with_cluster(tmp_path, body)


def test_restarted_node_catches_up_from_disk(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        for i in range(20):
            await r.set(f"a{i}", i)
        follower = next(i for i in c.nodes if i != leader.id)
        await wait_until(lambda: c.nodes[follower].applied_index >= leader.core.commit)
        await c.stop(follower)
        # The majority goes on without it.
        for i in range(30):
            await r.incr("counter")
        await c.start(follower)
        node = c.nodes[follower]
        # Restart rebuilt the state machine by re-applying its log, then caught up.
        await wait_until(lambda: node.applied_index >= leader.core.commit, what="catch-up")
        assert node.state_machine.read([b"GET", b"counter"]) == b"30"
        assert node.state_machine.read([b"GET", b"a19"]) == b"19"
        assert node.state_machine.snapshot() == leader.state_machine.snapshot()
    with_cluster(tmp_path, body)


def test_whole_cluster_restart_keeps_every_write(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        for i in range(25):
            await r.incr("n")
        for i in list(c.nodes):
            await c.stop(i)
        await c.start()
        leader = await c.leader()
        assert await c.redis(leader.id).get("n") == b"25"
    with_cluster(tmp_path, body)


def test_leader_stop_elects_a_new_leader(tmp_path):
    async def body(c: Cluster):
        old = await c.leader()
        await c.redis(old.id).set("before", "1")
        await c.stop(old.id)
        new = await c.leader()
        assert new.id != old.id
        r = c.redis(new.id)
        assert await r.get("before") == b"1"
        assert await r.set("after", "2") is True
    with_cluster(tmp_path, body)


def test_fsync_durability_and_group_commit(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        storage = leader.storage
        syncs0, saves0 = storage.syncs, leader.counters["saves"]
        n = 300
        # Many proposals at once: while one fsync runs, the next ones gather in the
        # core and are written by the next Ready (group commit).
        replies = await asyncio.gather(*(leader.propose(cmd("INCR", "g")) for _ in range(n)))
        assert sorted(replies) == list(range(1, n + 1))
        saves = leader.counters["saves"] - saves0
        assert storage.syncs > syncs0
        assert saves < n / 2, f"{saves} saves for {n} proposals: no group commit"
        assert leader.status()["durability"] == "fsync"
        # the common saves were written by the writer thread without the GIL
        assert leader.counters["wal_io_us"] > 0
    with_cluster(tmp_path, body, durability="fsync")


def test_reads_use_read_index_not_the_log(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        await leader.propose(cmd("SET", "k", "v"))
        last = leader.core.last_index
        sent = leader.counters["messages_sent"]
        await asyncio.gather(*(leader.read_barrier() for _ in range(100)))
        # ReadIndex (diss. §6.4): nothing is written to the log, and 100 reads
        # arriving together share heartbeat rounds instead of one round each.
        assert leader.core.last_index == last
        assert leader.counters["messages_sent"] - sent < 100
    with_cluster(tmp_path, body)


def test_partitioned_leader_cannot_serve_a_read(tmp_path):
    """A leader cut off from every follower cannot confirm its leadership: a
    linearizable read times out instead of returning possibly stale data."""
    async def body(c: Cluster):
        leader = await c.leader()
        for i in list(c.nodes):
            if i != leader.id:
                await c.stop(i)
        with pytest.raises((TimeoutError, asyncio.TimeoutError, NotLeaderError)):
            await asyncio.wait_for(leader.read_barrier(), 3.0)
    with_cluster(tmp_path, body)


def test_pipelined_reads_see_earlier_writes_of_the_connection_and_not_later_ones(tmp_path):
    """Reads that do not hold up the pipeline (RaftNode.read, or submit_batch's
    read_before) keep Redis's per-connection order: a GET sees the SETs before it on
    its connection and none after it."""
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        await r.set("k", "0")
        evaluated = leader.counters["read_barriers"]
        async with r.pipeline(transaction=False) as p:
            for i in range(1, 60):
                p.set("k", str(i))
                p.get("k")
                p.get("k")
            replies = await p.execute()
        gets = [int(v) for v in replies if v is not True]
        assert gets == [i for i in range(1, 60) for _ in (0, 1)]
        # The GETs rode with the SETs around them (submit_batch's read_before): their
        # runs' first entries confirmed the leadership, no ReadIndex round was needed.
        assert leader.counters["read_barriers"] == evaluated
        async with r.pipeline(transaction=False) as p:
            for i in range(20):
                p.get("k")
            assert await p.execute() == [b"59"] * 20
        assert leader.counters["read_barriers"] > evaluated   # GETs alone: ReadIndex
    with_cluster(tmp_path, body)


def test_pipelined_read_on_a_cut_off_leader_times_out(tmp_path):
    """A pipelined GET on a leader that cannot reach a majority is never answered with
    possibly stale data: it gets -TRYAGAIN once propose_timeout passes."""
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        await r.set("k", "v")
        for i in list(c.nodes):
            if i != leader.id:
                await c.stop(i)
        from redis.exceptions import TryAgainError

        with pytest.raises(TryAgainError, match="read barrier timed out"):
            await r.get("k")
    with_cluster(tmp_path, body, propose_timeout=1.0, check_quorum=False)


@pytest.mark.parametrize("seed", [1, 2])
def test_pipelined_gets_and_sets_answer_as_if_run_one_by_one(tmp_path, seed):
    """A pipeline mixing plain GETs and SETs over a few keys, cut into runs by INCRs
    (runs starting with GETs included, most submitted while earlier ones are still in
    flight): each run is one submit_batch whose GETs read the state right before its
    first entry (plus the run's SETs before each), on a real cluster. The replies are
    those of running the commands one at a time."""
    rng = random.Random(seed)

    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        model = {}
        for key in "abc":
            await r.set(key, "start")
            model[key] = b"start"
        commands, expected, n = [], [], 0
        for i in range(300):
            key = rng.choice("abcd")
            x = rng.random()
            if x < 0.1:          # not a plain GET or SET: it ends a run, the next starts
                n += 1
                commands.append(("incr", "n"))
                expected.append(n)
            elif x < 0.5:
                commands.append(("set", key, f"v{i}"))
                model[key] = f"v{i}".encode()
                expected.append(True)
            else:
                commands.append(("get", key))
                expected.append(model.get(key))
        async with r.pipeline(transaction=False) as p:
            for cmd_ in commands:
                getattr(p, cmd_[0])(*cmd_[1:])
            assert await p.execute() == expected, f"seed {seed}"
    with_cluster(tmp_path, body)


def test_overwritten_proposal_fails_with_not_leader(tmp_path):
    """A leader cut off from the others accepts a write that can never commit; once
    the partition heals the new leader's log replaces it (§5.3) and the waiting
    client gets a redirect, not a hang or a wrong answer."""
    async def body(c: Cluster):
        old = await c.leader()
        # Isolate the leader: drop everything it sends and receives.
        old.transport.send = lambda msgs, **kw: None
        real_deliver = old.transport._on_messages
        old.transport._on_messages = lambda msgs: None
        doomed = asyncio.ensure_future(old.propose(cmd("SET", "lost", "1")))
        _, doomed_batch = old.submit_batch([cmd("SET", "lost", "2"), cmd("SET", "lost2", "3")])
        await asyncio.sleep(0.05)
        assert not doomed.done()
        others = [n for i, n in c.nodes.items() if i != old.id]
        await wait_until(lambda: any(n.is_leader for n in others), timeout=15,
                         what="a new leader")
        new = next(n for n in others if n.is_leader)
        for i in range(3):
            await new.propose(cmd("SET", "kept", str(i)))
        last, batch = new.submit_batch([cmd("SET", "b", "1"), cmd("INCR", "n"), cmd("INCR", "n")])
        assert last == new.core.last_index
        assert await asyncio.wait_for(batch, 15) == ["OK", 1, 2]
        # Heal.
        del old.transport.send
        old.transport._on_messages = real_deliver
        with pytest.raises(NotLeaderError) as e:
            await asyncio.wait_for(doomed, 15)
        assert e.value.leader_addr in (None, "%s:%d" % c.peers[new.id].client)
        outcomes = await asyncio.wait_for(doomed_batch, 15)   # each entry, one outcome
        assert len(outcomes) == 2 and all(isinstance(o, NotLeaderError) for o in outcomes)
        await wait_until(lambda: old.applied_index >= new.core.commit, what="old leader catch-up")
        assert old.state_machine.read([b"GET", b"lost"]) is None
        assert old.state_machine.read([b"GET", b"kept"]) == b"2"
    with_cluster(tmp_path, body)


def test_malformed_peer_message_is_dropped_not_fatal(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        follower = next(n for i, n in c.nodes.items() if i != leader.id)
        # A RequestVote carrying entries is malformed: RemoteProtocolError in the core.
        bad = Message(MSG_VOTE, src=leader.id, dst=follower.id, term=follower.core.term,
                      entries=[Entry(1, 1, 0, b"x")])
        follower._on_messages([bad])
        assert follower.counters["bad_messages"] == 1
        assert follower.fatal_error is None
        assert await leader.propose(cmd("SET", "still", "ok")) == "OK"
    with_cluster(tmp_path, body)


def test_xread_block_wakes_on_apply(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        r1, r2 = c.redis(leader.id), c.redis(leader.id)
        await r1.xadd("s", {"a": "1"}, id="1-1")
        reader = asyncio.ensure_future(r1.xread({"s": "$"}, block=5000))
        await asyncio.sleep(0.1)
        await r2.xadd("s", {"b": "2"}, id="2-1")
        got = await asyncio.wait_for(reader, 10)
        assert got == [[b"s", [(b"2-1", {b"b": b"2"})]]]
        # wait_applied returns on timeout without raising.
        applied = leader.state_machine.last_applied
        await leader.wait_applied(applied, 0.05)
    with_cluster(tmp_path, body)


def test_metrics_endpoint(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        await leader.propose(cmd("SET", "m", "1"))
        leader._metrics.refresh()
        host, port = leader.metrics_address
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(
            None, lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)
            .read().decode())
        for name in ("raft_proposals_total", "raft_term", "raft_commit_index",
                     "raft_applied_index", "raft_fsync_seconds_bucket", "raft_is_leader 1.0",
                     "raft_replication_lag_entries{peer=", "raft_elections_total",
                     'raft_member{member="1",role="voter"} 1.0', "raft_conf_index 0.0"):
            assert name in text, name
    with_cluster(tmp_path, body, metrics_port=0)


def test_traces_of_a_real_run_pass_the_checker(tmp_path):
    from raft.trace_checker import Checker, merge_by_causality, read_ndjson_file

    async def body(c: Cluster):
        leader = await c.leader()
        for i in range(20):
            await leader.propose(cmd("INCR", "t"))
        follower = next(i for i in c.nodes if i != leader.id)
        await c.stop(follower)          # a restart appears in the trace as `restart`
        await leader.propose(cmd("INCR", "t"))
        await c.start(follower)
        await wait_until(lambda: c.nodes[follower].applied_index >= leader.core.commit)
    trace_files = {}
    async def main():
        c = Cluster(tmp_path, 3)
        for i, cfg in c.configs.items():
            cfg.trace_file = trace_files[i] = str(tmp_path / f"node{i}.ndjson")
        try:
            await c.start()
            await body(c)
        finally:
            await c.close()
    run(main())
    streams, voters = [], set()
    for path in trace_files.values():
        events, v = read_ndjson_file(path)
        streams.append(events)
        voters.update(v)
    events = merge_by_causality(streams)
    assert Checker(sorted(voters)).check(events) == len(events) > 100


# --- snapshots, log compaction, InstallSnapshot ----------------------------------------------

SNAP_CFG = {"snapshot_threshold_bytes": 4096, "snapshot_trailing_entries": 0,
            "max_msg_bytes": 2048}    # several chunks per snapshot


async def write_keys(r, lo: int, hi: int, size: int = 40) -> None:
    async with r.pipeline(transaction=False) as p:
        for i in range(lo, hi):
            p.set(f"key{i}", f"{i}:".ljust(size, "v"))
        assert all(await p.execute())


def value(i: int, size: int = 40) -> bytes:
    return f"{i}:".ljust(size, "v").encode()


def test_lagging_follower_catches_up_by_install_snapshot(tmp_path):
    """A follower that was down while the leader compacted past everything it has
    can only be brought back by InstallSnapshot: it installs the leader's snapshot
    (in several chunks), restores its KV state from it, and then follows the log.
    Restarted again, it restores the KV state from its own snapshot on disk."""
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        await write_keys(r, 0, 50)
        fid = next(i for i in c.nodes if i != leader.id)
        await wait_until(lambda: c.nodes[fid].applied_index >= leader.core.commit)
        stopped_last = c.nodes[fid].core.last_index
        await c.stop(fid)
        for lo in range(50, 600, 50):
            await write_keys(r, lo, lo + 50)
        await wait_until(lambda: leader.core.log.first_index > stopped_last + 1,
                         what="the leader to compact past the stopped follower's log")
        # Appends queued for the stopped follower would catch it up from the log
        # (PeerTransport.queued): wait until a failed dial dropped them.
        await wait_until(lambda: not any(m.entries for m in leader.transport.queued(fid)),
                         what="the appends queued for the stopped follower dropped")
        assert leader.counters["snapshots_taken"] >= 2 and leader.counters["compactions"] >= 2
        snap = leader.core.snapshot
        assert len(snap.data) > 4 * SNAP_CFG["max_msg_bytes"]   # sent in several chunks

        t0 = asyncio.get_running_loop().time()
        await c.start(fid)
        node = c.nodes[fid]
        await wait_until(lambda: node.applied_index >= leader.core.commit, timeout=20,
                         what="the follower to catch up")
        caught_up = asyncio.get_running_loop().time() - t0
        assert node.counters["snapshots_installed"] >= 1
        st = node.status()
        assert st["snapshot_index"] > stopped_last and st["snapshot_bytes"] > 0
        for i in (0, 49, 50, 321, 599):
            assert node.state_machine.read([b"GET", b"key%d" % i]) == value(i)
        assert node.state_machine.dbsize() == 600
        # Its disk holds the installed snapshot (and the log after it).
        assert node.storage.load().snapshot.index >= st["snapshot_index"] > 0
        # It keeps following: new writes reach it through the log.
        await write_keys(r, 600, 610)
        await wait_until(lambda: node.state_machine.read([b"GET", b"key609"]) == value(609))
        assert node.state_machine.snapshot() == leader.state_machine.snapshot()

        # Restarted, it restores the state machine from its snapshot instead of a log
        # it no longer has, and re-applies only what follows the snapshot.
        await c.stop(fid)
        await c.start(fid)
        node = c.nodes[fid]
        snap_index = node.status()["snapshot_index"]
        assert snap_index > 0
        assert node.state_machine.read([b"GET", b"key0"]) == value(0)   # before any apply
        await wait_until(lambda: node.applied_index >= leader.core.commit)
        assert node.counters["entries_applied"] <= leader.core.commit - snap_index
        assert node.state_machine.dbsize() == 610
        print(f"follower caught up by InstallSnapshot ({len(snap.data)} bytes, 600 keys) "
              f"in {caught_up:.2f}s")
    with_cluster(tmp_path, body, **SNAP_CFG)


def test_restart_with_a_snapshot_on_disk_restores_the_kv_state(tmp_path):
    """Every node compacts; after a whole-cluster stop, a node started alone (no
    quorum, so nothing new commits) already has every committed write: from its
    snapshot, plus the committed entries after it re-applied from its log."""
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        await write_keys(r, 0, 300)
        assert await r.incr("counter") == 1
        commit = leader.core.commit
        await wait_until(lambda: all(n.applied_index >= commit for n in c.nodes.values()))
        # A node snapshots at a Ready once its applied index is within the commit
        # hint it has written (a follower's hint rides its next write or heartbeat).
        await wait_until(lambda: all(n.counters["snapshots_taken"] >= 1
                                     for n in c.nodes.values()), what="every node snapshots")
        for i in list(c.nodes):
            await c.stop(i)
        await c.start(2)
        node = c.nodes[2]
        snap_index = node.status()["snapshot_index"]
        assert 0 < snap_index <= commit
        # Restored from the snapshot before any entry is applied: exactly its state.
        if node.counters["entries_applied"] == 0:
            assert node.state_machine.snapshot() == node.storage.load().snapshot.data
        assert node.state_machine.dbsize() > 0
        await wait_until(lambda: node.applied_index >= commit, what="re-applying the log tail")
        assert node.state_machine.dbsize() == 301
        assert node.state_machine.read([b"GET", b"key299"]) == value(299)
        assert node.state_machine.read([b"GET", b"counter"]) == b"1"
        assert node.counters["entries_applied"] == node.applied_index - snap_index
        # And the whole cluster carries on from there.
        await c.start(1, 3)
        leader = await c.leader()
        assert await c.redis(leader.id).get("key123") == value(123)
    with_cluster(tmp_path, body, **SNAP_CFG)


def test_trailing_entries_keep_slightly_lagging_followers_on_the_log(tmp_path):
    """With snapshot_trailing_entries, compaction keeps that many entries after the
    snapshot: a follower that missed fewer is repaired by AppendEntries alone."""
    async def body(c: Cluster):
        leader = await c.leader()
        r = c.redis(leader.id)
        n = 0
        while leader.counters["compactions"] < 1:   # pipelined batches: ~5 Readies each
            assert n < 2000, "no compaction"
            await write_keys(r, n, n + 50)
            n += 50
        assert leader.core.last_index - leader.core.log.first_index + 1 >= 200   # the kept tail
        fid = next(i for i in c.nodes if i != leader.id)
        await wait_until(lambda: c.nodes[fid].applied_index >= leader.core.commit)
        await c.stop(fid)
        await write_keys(r, n, n + 30)       # 30 entries < 200 trailing
        await c.start(fid)
        node = c.nodes[fid]
        await wait_until(lambda: node.applied_index >= leader.core.commit)
        assert node.counters["snapshots_installed"] == 0
        assert node.state_machine.dbsize() == n + 30
    with_cluster(tmp_path, body, snapshot_threshold_bytes=2048, snapshot_trailing_entries=200)


def test_traces_of_a_run_with_snapshots_pass_the_checker(tmp_path):
    """Compactions on every node and an InstallSnapshot to a restarted follower, as
    traced by the real runtime, replay against the spec's actions."""
    from raft.trace_checker import Checker, merge_by_causality, read_ndjson_file

    trace_files = {}

    async def main():
        c = Cluster(tmp_path, 3, **SNAP_CFG)
        for i, cfg in c.configs.items():
            cfg.trace_file = trace_files[i] = str(tmp_path / f"node{i}.ndjson")
        try:
            await c.start()
            leader = await c.leader()
            r = c.redis(leader.id)
            await write_keys(r, 0, 50)
            fid = next(i for i in c.nodes if i != leader.id)
            await wait_until(lambda: c.nodes[fid].applied_index >= leader.core.commit)
            stopped = c.nodes[fid]
            await c.stop(fid)
            # Read the follower's last index only once it is stopped: entries that
            # reached it between a read before the stop and the stop itself would
            # let it catch up from the leader's log without a snapshot.
            last = stopped.core.last_index
            for lo in range(50, 300, 50):
                await write_keys(r, lo, lo + 50)
            # Every running node, not only this leader, must have compacted past the
            # follower's log: under load the leadership may move to the other node
            # before the follower is back, and that leader must need a snapshot too.
            await wait_until(lambda: all(n.core.log.first_index > last + 1
                                         for n in c.nodes.values()))
            # And the appends queued for the stopped follower must be gone (a failed
            # dial drops them: PeerTransport.queued), else the follower could catch
            # up from that stale backlog.
            await wait_until(lambda: not any(m.entries for n in c.nodes.values()
                                             for m in n.transport.queued(fid)))
            await c.start(fid)
            node = c.nodes[fid]
            await wait_until(lambda: node.applied_index >= max(n.core.commit
                                                               for n in c.nodes.values()))
            assert node.counters["snapshots_installed"] >= 1
        finally:
            await c.close()
    run(main())
    streams, voters = [], set()
    for path in trace_files.values():
        events, v = read_ndjson_file(path)
        streams.append(events)
        voters.update(v)
    events = merge_by_causality(streams)
    kinds = {e[0] for e in events if isinstance(e, tuple)}
    assert {"compact", "install"} <= kinds, kinds
    assert Checker(sorted(voters)).check(events) == len(events) > 500


def test_snapshot_status_and_metrics(tmp_path):
    async def body(c: Cluster):
        leader = await c.leader()
        await write_keys(c.redis(leader.id), 0, 200)
        await wait_until(lambda: leader.counters["compactions"] >= 1)
        st = leader.status()
        assert st["snapshot_index"] > 0 and st["first_index"] == st["snapshot_index"] + 1
        assert st["snapshot_term"] == leader.core.term and st["snapshot_bytes"] > 0
        info = await c.redis(leader.id).info("raft")
        assert int(info["raft_snapshot_index"]) == st["snapshot_index"] or \
            int(info["raft_snapshot_index"]) >= st["snapshot_index"]
        leader._metrics.refresh()
        host, port = leader.metrics_address
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(
            None, lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)
            .read().decode())
        for name in ("raft_snapshot_index", "raft_snapshots_taken_total", "raft_compactions_total",
                     "raft_snapshot_bytes"):
            assert name in text, name
    with_cluster(tmp_path, body, metrics_port=0, **SNAP_CFG)


# --- config -----------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "node.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


GOOD = """\
    id = 2
    data_dir = "data/n2"
    secret_file = "secret"
    durability = "none"
    client_password = "pw"
    metrics_port = 9102

    [timing]
    tick_ms = 5
    election_ticks = 15
    heartbeat_ticks = 1

    [snapshot]
    threshold_bytes = 1048576
    trailing_entries = 50

    [peers.1]
    raft = "127.0.0.1:7101"
    client = "127.0.0.1:7001"
    [peers.2]
    raft = "127.0.0.1:7102"
    client = "127.0.0.1:7002"
    [peers.3]
    raft = "[::1]:7103"
    client = "127.0.0.1:7003"
"""


def test_load_config(tmp_path):
    (tmp_path / "secret").write_bytes(b"0123456789abcdef0123\n")
    os.chmod(tmp_path / "secret", 0o600)
    c = load_config(write(tmp_path, GOOD))
    assert c.node_id == 2 and c.voters == [1, 2, 3]
    assert c.data_dir == str(tmp_path / "data" / "n2")      # relative to the file
    assert c.secret == b"0123456789abcdef0123"                # final newline dropped
    assert c.durability == "none" and c.client_password == "pw" and c.metrics_port == 9102
    assert (c.tick_ms, c.election_ticks, c.heartbeat_ticks) == (5.0, 15, 1)
    assert c.me.client == ("127.0.0.1", 7002)
    assert c.peers[3].raft == ("::1", 7103)
    assert c.other_peers == {1: ("127.0.0.1", 7101), 3: ("::1", 7103)}
    assert c.client_addr_of(1) == "127.0.0.1:7001" and c.client_addr_of(9) is None
    assert (c.snapshot_threshold_bytes, c.snapshot_trailing_entries) == (1 << 20, 50)
    # render_config round-trips.
    again = load_config(write(tmp_path, render_config(c, secret_file=str(tmp_path / "secret")),
                              "again.toml"))
    assert again == c


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("id = 2", "id = 4"), "key 'id': node 4 is not in [peers]"),
    (lambda t: t.replace("id = 2\n", ""), "key 'id' is required but missing"),
    (lambda t: t.replace("id = 2", 'id = "two"'), "key 'id': expected an integer"),
    (lambda t: t.replace('durability = "none"', 'durability = "sometimes"'),
     "key 'durability': must be one of"),
    (lambda t: t.replace('"127.0.0.1:7102"', '"127.0.0.1"'),
     "key 'peers.2.raft': expected \"host:port\""),
    (lambda t: t.replace('"127.0.0.1:7102"', '"127.0.0.1:99999"'),
     "key 'peers.2.raft': port 99999"),
    (lambda t: t.replace('"127.0.0.1:7102"', '"127.0.0.1:7101"'),
     "key 'peers.2.raft': 127.0.0.1:7101 is also used by peers.1.raft"),
    (lambda t: t.replace("election_ticks = 15", "election_ticks = 1"),
     "key 'timing.election_ticks': must be greater than heartbeat_ticks"),
    (lambda t: t.replace("tick_ms = 5", "tick_ms = true"), "key 'timing.tick_ms': expected"),
    (lambda t: t.replace("metrics_port", "metrics_prot"), "key 'metrics_prot': unknown key"),
    (lambda t: t.replace("[peers.3]", "[peers.x]"), "key 'peers.x': peer ids must be"),
    (lambda t: t.replace('secret_file = "secret"', ""), "set exactly one of 'secret'"),
    (lambda t: t.replace('secret_file = "secret"', 'secret = "short"'),
     "key 'secret': the cluster secret must be at least 16 bytes"),
    (lambda t: t.replace('secret_file = "secret"', 'secret_file = "nope"'),
     "key 'secret_file': cannot read"),
    (lambda t: t + "\n[tls]\ncert = \"c.pem\"\n", "key 'tls.cert': no such file"),
    (lambda t: t.replace("[timing]", "[timing"), "not valid TOML"),
    (lambda t: t.replace("threshold_bytes = 1048576", "threshold_bytes = -1"),
     "key 'snapshot.threshold_bytes': must be >= 0"),
    (lambda t: t.replace("trailing_entries = 50", "trailing_entries = -5"),
     "key 'snapshot.trailing_entries': must be >= 0"),
    (lambda t: t.replace("trailing_entries = 50", "trailing = 50"),
     "key 'snapshot.trailing': unknown key"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    (tmp_path / "secret").write_bytes(b"0123456789abcdef0123")
    os.chmod(tmp_path / "secret", 0o600)
    path = write(tmp_path, change(textwrap.dedent(GOOD)))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_config_snapshot_defaults(tmp_path):
    (tmp_path / "secret").write_bytes(b"0123456789abcdef0123")
    os.chmod(tmp_path / "secret", 0o600)
    text = textwrap.dedent(GOOD)
    text = text.replace("[snapshot]\nthreshold_bytes = 1048576\ntrailing_entries = 50\n", "")
    c = load_config(write(tmp_path, text))
    assert (c.snapshot_threshold_bytes, c.snapshot_trailing_entries) == (64 << 20, 1000)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")


def test_reads_waiting_for_their_index_fail_or_expire_and_never_hang(tmp_path):
    """A read confirmed but waiting for its index to be applied is answered when the
    node stops leading (NotLeaderError) or after propose_timeout (-TRYAGAIN), and a
    connection's write lost beyond our log is not waited for."""
    from raft.node import _LinearizableRead
    from raft.resp import ReadTimeoutError

    async def body(c: Cluster):
        leader = await c.leader()
        loop = asyncio.get_running_loop()
        # A write index beyond the log (lost with an earlier term): served at once.
        fut = leader.read(lambda: "now", after_index=leader.core.last_index + 1000)
        assert await asyncio.wait_for(fut, 5) == "now"

        def waiting(deadline: float) -> _LinearizableRead:
            confirmed = loop.create_future()
            confirmed.set_result(0)
            read = _LinearizableRead(lambda: "never", loop, deadline)
            read._on_confirm(confirmed)
            leader._reads_at.setdefault(10 ** 9, []).append(read)   # an index never applied
            return read

        stale = waiting(loop.time() - 1)
        leader._expire_pending(loop.time())
        with pytest.raises(ReadTimeoutError):
            await stale.result
        deposed = waiting(loop.time() + 60)
        leader._fail_reads()
        with pytest.raises(NotLeaderError):
            await deposed.result
        assert not leader._reads_at
    with_cluster(tmp_path, body)


@pytest.mark.parametrize("batch", [False, True])
def test_a_state_machine_error_mid_batch_still_answers_what_was_applied(batch):
    """If apply raises partway through a batch (a bug: the node then stops), the
    proposers of the entries already applied get their replies, on the batch path as
    entry by entry: a NotLeaderError instead would make a client retry a write that
    was applied (an INCR twice). From a review of the batch path."""
    from raft._core import Entry
    from raft.kv.machine import KVStateMachine
    from raft.node import _Pending

    loop = asyncio.new_event_loop()
    try:
        node = object.__new__(RaftNode)        # only what _apply touches
        node.state_machine = sm = KVStateMachine()
        node._apply_entries = sm.apply_entries if batch else None
        node._pending, node._reads_at = {}, {}
        node.counters = {"proposals_failed": 0}
        real_apply = sm.apply

        def apply(index: int, data: bytes):
            if index == 7:
                raise ValueError("injected failure at 7")
            return real_apply(index, data)

        sm.apply = apply   # type: ignore[method-assign]
        entries = [Entry(i, 1, 0, cmd("INCR", "c")) for i in (6, 7)]
        futures = {e.index: loop.create_future() for e in entries}
        for i, f in futures.items():
            node._pending[i] = _Pending(1, f, 1e18)
        with pytest.raises(ValueError, match="injected"):
            node._apply(entries)
        assert futures[6].done() and futures[6].result() == 1
        assert not futures[7].done()
    finally:
        loop.close()


def _applying_node(batch: bool) -> RaftNode:
    """A RaftNode with only what _apply and expiry touch (no core, no storage):
    ``batch`` picks the state machine's batch apply path or entry by entry."""
    from raft.kv.machine import KVStateMachine

    node = object.__new__(RaftNode)
    node.state_machine = sm = KVStateMachine()
    node._apply_entries = sm.apply_entries if batch else None
    node._pending, node._reads_at, node._reads = {}, {}, {}
    node.counters = collections.Counter()
    node._log_bytes, node._applied_event = 0, asyncio.Event()
    node._leader_client_addr = lambda leader=None: "127.0.0.1:1"
    node._open_read, node.applied_index = None, 0
    return node


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_a_batch_s_read_before_sees_the_log_up_to_the_batch_exactly(batch, split):
    """submit_batch's read_before (_ReadBeforeBatch) is evaluated after the entries
    before the batch's first are applied -- others' entries committed meanwhile
    included -- and before the first; its value stands once the first is applied as
    ours, comes last, and fails as the first entry did if that one was not ours or
    timed out."""
    from raft._core import Entry
    from raft.node import _PendingBatch, _ReadBeforeBatch

    loop = asyncio.new_event_loop()
    try:
        node = _applying_node(batch)
        sm = node.state_machine

        def submit(first: int, count: int) -> _PendingBatch:
            waiter = _PendingBatch(1, loop.create_future(), 100.0, first, count, True)
            node._pending.update((i, waiter) for i in range(first, first + count))
            read = _ReadBeforeBatch(waiter, lambda: (sm.read([b"GET", b"c"]),
                                                     sm.read([b"GET", b"k"])))
            if node.applied_index == first - 1:          # as submit_batch does
                read.evaluate_now()
            else:
                node._reads_at.setdefault(first - 1, []).append(read)
            return waiter

        ours = submit(6, 2)
        log = [Entry(i, 1, 0, cmd("INCR", "c")) for i in range(1, 6)] \
            + [Entry(6, 1, 0, cmd("SET", "k", "v")), Entry(7, 1, 0, cmd("INCR", "c"))]
        for run in ([log[:3], log[3:6], log[6:]] if split else [log]):
            node._apply(run)
        assert ours.future.result() == ["OK", 6, (b"5", None)]

        lost = submit(8, 2)
        node._apply([Entry(8, 2, 0, cmd("SET", "k", "w")), Entry(9, 2, 0, cmd("INCR", "c"))])
        outcomes = lost.future.result()
        assert [type(o) for o in outcomes] == [NotLeaderError] * 3
        assert outcomes[2] is outcomes[0]

        late = submit(11, 1)                   # index 10 is never applied
        node._expire_pending(100.0)
        assert [type(o) for o in late.future.result()] == [asyncio.TimeoutError] * 2
        assert not node._pending and not node._reads_at
    finally:
        loop.close()


@pytest.mark.parametrize("batch", [False, True])
def test_a_batch_of_proposals_gets_each_entry_s_own_outcome(batch):
    """submit_batch's waiter is settled entry by entry: applied entries give their
    replies, an entry another leader's took the index of gives NotLeaderError (§5.3),
    and the future resolves once all are settled, in order; entries that time out
    give asyncio.TimeoutError each."""
    from raft._core import Entry
    from raft.node import _PendingBatch

    loop = asyncio.new_event_loop()
    try:
        node = _applying_node(batch)
        waiter = _PendingBatch(1, loop.create_future(), 100.0, 6, 3)
        node._pending.update((i, waiter) for i in (6, 7, 8))
        node._apply([Entry(6, 1, 0, cmd("INCR", "c")), Entry(7, 1, 0, cmd("SET", "k", "v"))])
        assert not waiter.future.done()
        node._apply([Entry(8, 2, 0, cmd("INCR", "c"))])     # term 2: not ours
        outcomes = waiter.future.result()
        assert outcomes[:2] == [1, "OK"] and isinstance(outcomes[2], NotLeaderError)
        assert node.counters["proposals_failed"] == 1 and not node._pending

        late = _PendingBatch(1, loop.create_future(), 100.0, 9, 2)
        node._pending.update((i, late) for i in (9, 10))
        node._expire_pending(99.0)
        assert not late.future.done()
        node._expire_pending(100.0)
        assert [type(o) for o in late.future.result()] == [asyncio.TimeoutError] * 2
        assert node.counters["proposals_timed_out"] == 2 and not node._pending
    finally:
        loop.close()


class _FollowerCore:
    """The core as a follower's _handle_ready and _pump see it: ``later`` is what
    take_committed hands out while the Ready is outstanding."""

    def __init__(self, later: list) -> None:
        from raft._core import FOLLOWER
        self.role, self.term, self.leader = FOLLOWER, 1, 2
        self.later, self.advanced = later, 0

    def take_messages(self) -> list:
        return []

    def take_read_states(self) -> list:
        return []

    def take_committed(self) -> list:
        got, self.later = self.later, []
        return got

    def advance(self, rd) -> None:
        self.advanced += 1


class _SentMessages:
    def __init__(self, node: RaftNode) -> None:
        self.node, self.log = node, []

    def send(self, msgs, now: bool = False) -> None:
        # what the node had applied when each message left
        self.log.append((len(msgs), self.node.applied_index))


def test_a_follower_applies_its_ready_after_the_ack_and_before_what_commits_during_the_write():
    """A follower applies a Ready's committed entries after its ack leaves (the
    leader waits for the ack, not for the apply). Entries committed while the write
    runs on the disk thread (a save that is not the common inline one: a new
    segment, say) must not be applied by the pump before the Ready's own: that
    applied index 76 before 73 in a torture run ("apply index 73 <= last applied 75")."""
    import types
    from raft._core import Entry

    loop = asyncio.new_event_loop()
    try:
        node = _applying_node(True)
        ready_entries = [Entry(i, 1, 0, cmd("INCR", "c")) for i in (1, 2)]
        later_entries = [Entry(3, 1, 0, cmd("SET", "c", "100"))]
        core = node._core = _FollowerCore(later_entries)
        node._last_role, node._last_term, node._last_leader = core.role, core.term, core.leader
        node._transport = sent = _SentMessages(node)
        node.config = types.SimpleNamespace(snapshot_threshold_bytes=0)
        node._note_ready = lambda rd: None
        node._sync_membership = lambda: None
        node._persisting = node._pump_scheduled = node._apply_held = False
        node._running, node._trace_writer = True, None

        async def persist_on_the_disk_thread(rd) -> None:
            node._pump()                      # the loop runs while the write is out
            await asyncio.sleep(0)

        node._persist = persist_on_the_disk_thread
        rd = types.SimpleNamespace(messages=[], entries=ready_entries, snapshot=None,
                                   committed_entries=ready_entries, read_states=[],
                                   must_fsync=True, hard_state=None,
                                   messages_after_persist=["ack"])
        loop.run_until_complete(node._handle_ready(rd))
        assert sent.log == [(1, 0)]           # the ack left before anything was applied
        assert node.applied_index == 2 and core.advanced == 1
        assert core.later == later_entries    # the pump held entry 3 back for the next Ready
        node._apply(core.take_committed())
        assert node.state_machine.read([b"GET", b"c"]) == b"100"
    finally:
        loop.close()


def test_a_node_snapshots_only_within_the_commit_hint_it_has_written():
    """A restart from a snapshot must not come back with a commit index beyond the
    durable hint (the trace checker's Restart). The hint now rides a later Ready
    than the commit (RawNode.ready), so a node that applied past it waits."""
    import types
    from raft import RawNode

    core = RawNode(1, [1])
    core.campaign()
    for _ in range(3):                     # elected, the no-op written and committed
        rd = core.ready()
        core.advance(rd)
    core.propose(cmd("SET", "k", "v"))
    rd = core.ready()
    core.advance(rd)                       # written: a one-node cluster commits it here
    rd = core.ready()                      # ... and hands it out, with no hint of its own
    assert rd.committed_entries and rd.hard_state is None
    node = _applying_node(True)
    node._core, node._pending_snapshot = core, None
    node.config = types.SimpleNamespace(snapshot_threshold_bytes=1, max_log_bytes=1 << 30)
    node._apply(rd.committed_entries)
    core.advance(rd)
    node._log_bytes = 1 << 20
    assert node.applied_index == core.commit > core.commit_hint
    assert node._snapshot_if_due() is None
    core.tick()                            # a tick later the hint goes alone
    rd = core.ready()
    assert rd.hard_state.commit == core.commit_hint == node.applied_index
    core.advance(rd)
    snap = node._snapshot_if_due()
    assert snap is not None and snap.index == node.applied_index
