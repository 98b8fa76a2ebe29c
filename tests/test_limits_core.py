"""Issue 15, items 1 and 8, against real `raft serve` processes.

1. An entry larger than the peer send buffer used to be dropped by the transport on
   every retry: the followers elected a new leader and the entry never committed.
   Now the largest entry (limits.max_entry_bytes) is refused at the front end with
   ``-ERR value too large``, the transport's frame and buffer bounds are derived from
   it (raft/limits.py), so every accepted entry replicates, and MULTI is bounded in
   commands and bytes.
8. An AppendEntries in the leader's own term (needs the cluster secret) used to hit
   an assertion and stop the leader; now it is refused, counted, logged and the
   leader keeps serving.
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import hiredis
import pytest

from raft import MSG_APP, Message
from raft.net import codec
from raft.net.auth import client_handshake
from raft.limits import DEFAULT_MAX_ENTRY_BYTES
from raft.testing.cluster import LocalCluster

MiB = 1 << 20
MAX_ENTRY = DEFAULT_MAX_ENTRY_BYTES       # the cluster runs with the default limits


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def commands(addr: tuple[str, int], argvs: list[list[bytes]], timeout: float = 60.0) -> list:
    """Pipeline ``argvs`` on one connection; the replies (errors as ReplyError objects)."""
    out = bytearray()
    for argv in argvs:
        out += b"*%d\r\n" % len(argv)
        for a in argv:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
    reader = hiredis.Reader()
    replies: list = []
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(out)
        while len(replies) < len(argvs):
            data = sock.recv(1 << 20)
            if not data:
                raise AssertionError(f"connection closed after {len(replies)} replies")
            reader.feed(data)
            while (r := reader.gets()) is not False:
                replies.append(r)
    return replies


def is_error(reply: object, prefix: str) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith(prefix)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_size_bounds_are_upper_bounds_of_the_encodings(seed: int) -> None:
    """The front end checks sizes before encoding: its bounds must never be below the
    real encoded size, or an entry over the limit could slip through."""
    import random

    from raft import kv
    from raft.limits import EXEC_ENVELOPE, command_size_bound, exec_item_size_bound

    rng = random.Random(seed)
    for _ in range(500):
        argv = [rng.randbytes(rng.choice([0, 1, 5, 200, 20000])) for _ in range(rng.randrange(1, 6))]
        data = kv.encode_command(2**63, 2**63, argv, time_ms=2**60)
        assert len(data) <= command_size_bound(argv), f"seed {seed}"
        items = [argv, argv[:1]]
        exec_data = kv.encode_command(0, 0, [b"RAFT.EXEC", *(kv.encode_argv(q) for q in items)],
                                      time_ms=2**45)
        bound = EXEC_ENVELOPE + sum(exec_item_size_bound(q) for q in items)
        assert len(exec_data) <= bound, f"seed {seed}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # fsync, as in the report; elections at 0.5-1 s so a loaded test machine's pauses
    # do not pass for the failure under test (a deposed leader).
    c = LocalCluster(3, durability="fsync", election_ticks=50)
    try:
        c.start()
        c.wait_for_leader(60)
        yield c
    finally:
        c.close()


def _info(c: LocalCluster, i: int) -> dict[str, str]:
    info = c.info(i, timeout=5.0)
    assert info is not None, f"node {i} does not answer INFO"
    return info


def _term(c: LocalCluster) -> int:
    return int(_info(c, c.wait_for_leader(30))["raft_term"])


def _all_applied(c: LocalCluster, index: int) -> bool:
    return all(int((c.info(i, 5.0) or {}).get("raft_applied_index", -1)) >= index for i in c.nodes)


def test_entry_at_the_limit_commits_everywhere_without_election(cluster) -> None:
    leader = cluster.wait_for_leader(30)
    term = _term(cluster)
    value = b"v" * (MAX_ENTRY - 1024)
    [reply] = commands(cluster.nodes[leader].client, [[b"SET", b"big", value]])
    assert reply == b"OK", reply
    index = int(_info(cluster, leader)["raft_commit_index"])
    wait_until(lambda: _all_applied(cluster, index), 60, "every node to apply the large entry")
    for i in cluster.nodes:
        [got] = commands(cluster.nodes[i].client, [[b"READONLY"], [b"GET", b"big"]])[1:]
        assert got == value, (i, len(got) if isinstance(got, bytes) else got)
    assert cluster.wait_for_leader(30) == leader and _term(cluster) == term


def test_entry_over_the_limit_is_refused_with_a_clear_error(cluster) -> None:
    """SET k <17 MiB> used to depose the leader (the client got -MOVED)."""
    leader = cluster.wait_for_leader(30)
    term = _term(cluster)
    [reply] = commands(cluster.nodes[leader].client, [[b"SET", b"huge", b"x" * (17 * MiB)]])
    assert is_error(reply, "ERR value too large"), reply
    assert "limits.max_entry_bytes" in str(reply)
    [ok] = commands(cluster.nodes[leader].client, [[b"SET", b"small", b"1"]])
    assert ok == b"OK"
    assert cluster.wait_for_leader(30) == leader and _term(cluster) == term


def test_multi_queue_is_bounded_in_commands(cluster) -> None:
    """150,000 small SETs in one MULTI (~20 MB, one entry) used to depose the leader."""
    leader = cluster.wait_for_leader(30)
    term = _term(cluster)
    n = 150_000
    argvs = [[b"MULTI"]] + [[b"SET", b"k%d" % k, b"v%d" % k] for k in range(n)] + [[b"EXEC"]]
    replies = commands(cluster.nodes[leader].client, argvs, timeout=120)
    assert replies[0] == b"OK"
    errors = [r for r in replies[1:-1] if isinstance(r, hiredis.ReplyError)]
    assert len(errors) == 1 and "MULTI queue too long" in str(errors[0]), errors[:3]
    assert replies[1 + 10_000] is errors[0]          # the default: 10,000 commands
    assert is_error(replies[-1], "EXECABORT"), replies[-1]
    [exists] = commands(cluster.nodes[leader].client, [[b"EXISTS", b"k0"]])
    assert exists == 0                                # nothing of it was applied
    assert cluster.wait_for_leader(30) == leader and _term(cluster) == term


def test_multi_queue_is_bounded_in_bytes(cluster) -> None:
    leader = cluster.wait_for_leader(30)
    value = b"m" * (MAX_ENTRY // 3)
    argvs = [[b"MULTI"]] + [[b"SET", b"m%d" % k, value] for k in range(3)] + [[b"EXEC"]]
    replies = commands(cluster.nodes[leader].client, argvs)
    assert replies[1:3] == [b"QUEUED", b"QUEUED"], replies[1:3]
    assert is_error(replies[3], "ERR value too large"), replies[3]
    assert is_error(replies[4], "EXECABORT"), replies[4]


async def _send_as_peer(cluster: LocalCluster, leader: int, as_node: int, m: Message) -> None:
    host, port = cluster.nodes[leader].config.me.raft
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await client_handshake(reader, writer, secret=cluster.nodes[leader].config.secret,
                               node_id=as_node, peer_id=leader)
        for _ in range(3):       # repeated: logged once, counted each time
            writer.write(codec.encode([m]))
        await writer.drain()
        await asyncio.sleep(0)
    finally:
        writer.close()


def _log(cluster: LocalCluster, i: int) -> str:
    with open(cluster.nodes[i].log_path, errors="replace") as fp:
        return fp.read()


def test_append_entries_to_the_leader_in_its_own_term_does_not_stop_it(cluster) -> None:
    leader = cluster.wait_for_leader(30)
    info = _info(cluster, leader)
    term, last = int(info["raft_term"]), int(info["raft_last_index"])
    other = next(i for i in cluster.nodes if i != leader)
    m = Message(MSG_APP, src=other, dst=leader, term=term, index=last, log_term=term, commit=0)
    asyncio.run(_send_as_peer(cluster, leader, other, m))
    wait_until(lambda: "breaks the protocol" in _log(cluster, leader), 30,
               "the leader to log the refused message")
    assert _log(cluster, leader).count("breaks the protocol") == 1   # rate-limited
    assert cluster.nodes[leader].running, "the leader process exited"
    [ok] = commands(cluster.nodes[leader].client, [[b"SET", b"after", b"1"]])
    assert ok == b"OK"
    assert cluster.wait_for_leader(30) == leader and _term(cluster) == term
