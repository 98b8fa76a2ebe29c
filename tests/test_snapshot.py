"""Log compaction and InstallSnapshot in the core (Raft paper §7, Figure 13;
dissertation chapter 5).

Scenarios are scripted on the in-process harness (tests/harness.py), which
persists instantly and lets the test drop, reorder or duplicate messages.
"""
from __future__ import annotations

import pytest
from harness import Cluster

from raft import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_SNAP,
    MSG_SNAP_RESP,
    LocalProtocolError,
    Message,
    RawNode,
    RemoteProtocolError,
    Snapshot,
)
from raft._core import PROGRESS_SNAPSHOT, encode_conf


def lagging_cluster(n_entries: int = 20, compact_to: int = 15, **kw) -> Cluster:
    """Leader 1 commits `n_entries` with 2 while 3 is cut off, then compacts to
    `compact_to`: 3 can only catch up by InstallSnapshot."""
    c = Cluster({1: [], 2: [], 3: []}, **kw)
    c.elect(1)
    c.isolate(3)
    for k in range(n_entries):
        c.nodes[1].propose(b"x%d" % k)
    c.deliver()
    c.compact(1, compact_to)
    c.heal()
    return c


def heartbeat(c: Cluster, rounds: int = 3, pred=lambda m: True) -> None:
    for _ in range(rounds):
        c.nodes[1].tick()
        c.deliver(pred)


def test_compact_drops_the_prefix_and_keeps_the_snapshot():
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    for k in range(10):
        c.nodes[1].propose(b"x%d" % k)
    c.deliver()
    n = c.nodes[1]
    c.compact(1, 8)
    assert (n.log.first_index, n.log.last_index, n.log.term(8)) == (9, 11, 1)
    assert n.snapshot == Snapshot(8, 1, b"state@8", encode_conf([1, 2, 3]))
    with pytest.raises(IndexError):
        n.log.term(7)
    n.compact(5, b"older")                 # already compacted past 5: no-op
    assert n.snapshot.index == 8


def test_compact_refuses_unapplied_entries():
    n = RawNode(1, [1])
    n.campaign()
    rd = n.ready()
    n.propose(b"a")
    with pytest.raises(LocalProtocolError):
        n.compact(2, b"s")                 # index 2 is not even committed
    n.advance(rd)


def test_lagging_follower_is_caught_up_by_install_snapshot():
    """§7: the leader sends its snapshot when the follower needs discarded entries."""
    c = lagging_cluster()
    heartbeat(c)
    f = c.nodes[3]
    assert c.installed[3] == [Snapshot(15, 1, b"state@15", encode_conf([1, 2, 3]))]
    assert (f.log.first_index, f.log.last_index, f.commit, f.applied) == (16, 21, 21, 21)
    # The state machine was restored from the snapshot, then entries 16.. applied.
    assert [e.index for e in c.applied[3] if e.index > 1] == list(range(16, 22))
    assert c.disks[3].load().snapshot == Snapshot(15, 1, b"state@15", encode_conf([1, 2, 3]))
    pr = c.nodes[1].progress_of(3)
    assert (pr.match, pr.state) == (21, 1)   # REPLICATE again
    # Replication continues normally from the snapshot.
    c.nodes[1].propose(b"after")
    c.deliver()
    assert f.last_index == 22
    heartbeat(c)                  # the commit index reaches followers with it (§5.3)
    assert f.commit == 22


def test_snapshot_is_sent_in_chunks_of_max_msg_bytes():
    c = lagging_cluster(max_msg_bytes=3)           # b"state@15" is 8 bytes: 3 chunks
    chunks = []

    def spy(m):
        if m.type == MSG_SNAP:
            chunks.append((m.commit, m.data, m.reject_hint))
        return True

    heartbeat(c, pred=spy)
    assert chunks[:3] == [(0, b"sta", 8), (3, b"te@", 8), (6, b"15", 8)]
    assert c.installed[3][0].data == b"state@15"


def test_a_lost_chunk_is_resent_from_what_the_follower_holds():
    c = lagging_cluster(max_msg_bytes=3)
    dropped = []

    def drop_first_middle_chunk(m):
        if m.type == MSG_SNAP and m.commit == 3 and not dropped:
            dropped.append(m)
            c.dropped.add((1, 3))
            return True
        c.dropped.discard((1, 3))
        return True

    replies = []

    def watch(m):
        if m.type == MSG_SNAP_RESP:
            replies.append((m.reject, m.reject_hint))
        return drop_first_middle_chunk(m)

    heartbeat(c, rounds=4, pred=watch)
    assert dropped, "the scenario must lose a chunk"
    assert (True, 3) in replies              # the gap is refused with the bytes held
    assert c.installed[3] == [Snapshot(15, 1, b"state@15", encode_conf([1, 2, 3]))]


def test_duplicate_chunks_are_acknowledged_not_appended_twice():
    c = lagging_cluster(max_msg_bytes=3)
    f = c.nodes[3]
    c.nodes[1].tick()
    c.deliver(lambda m: m.type != MSG_SNAP)     # the heartbeat is refused: snapshot needed
    first = next(m for m in c.queue if m.type == MSG_SNAP and m.commit == 0)
    f.step(first)
    f.step(first.copy())                      # duplicated by the network
    c.process(3)
    resp = [m for m in c.queue if m.type == MSG_SNAP_RESP and m.src == 3]
    assert [(r.reject, r.reject_hint) for r in resp] == [(False, 3), (False, 3)]
    c.deliver()
    heartbeat(c)
    assert c.installed[3][0].data == b"state@15"


def test_follower_holding_the_snapshot_entry_keeps_its_log():
    """Figure 13 step 6: if the log has an entry with the snapshot's last index
    and term, keep the entries after it; nothing is installed."""
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    for k in range(10):
        c.nodes[1].propose(b"x%d" % k)
    # 3 receives the entries but not the commit news.
    c.deliver(lambda m: not (m.dst == 3 and m.type == MSG_APP and not m.entries))
    f = c.nodes[3]
    assert f.last_index == 11
    m = Message(MSG_SNAP, src=1, dst=3, term=1, index=8, log_term=1, commit=0,
                reject_hint=3, data=b"abc", msg_id=999)
    commit_before = f.commit
    f.step(m)
    rd = f.ready()
    assert rd.snapshot is None and f.log.first_index == 1 and f.last_index == 11
    assert f.commit == max(commit_before, 8)
    acks = [r for r in rd.messages_after_persist if r.type == MSG_APP_RESP]
    assert [(a.index, a.reject) for a in acks] == [(8, False)]
    f.advance(rd)


def test_install_discards_a_conflicting_log():
    """Figure 13 step 7: a log that conflicts with the snapshot is discarded."""
    f = RawNode(3, [1, 2, 3], hard_state=None)
    # 3 holds uncommitted entries of term 1 from a deposed leader.
    f.step(Message(MSG_APP, src=2, dst=3, term=1, index=0, log_term=0,
                   entries=[__import__("raft").Entry(i, 1, 0, b"old") for i in (1, 2, 3)], msg_id=1))
    f.advance(f.ready())
    assert f.last_index == 3
    f.step(Message(MSG_SNAP, src=1, dst=3, term=2, index=2, log_term=2, commit=0,
                   reject_hint=4, data=b"snap", msg_id=1))
    rd = f.ready()
    assert rd.snapshot == Snapshot(2, 2, b"snap")
    assert (f.log.first_index, f.last_index, f.commit, f.applied) == (3, 2, 2, 2)
    assert rd.entries == [] and rd.committed_entries == []
    assert rd.hard_state.term == 2 and rd.hard_state.commit == 2
    f.advance(rd)


def test_stale_snapshot_chunks_are_ignored():
    f = RawNode(3, [1, 2, 3])
    f.step(Message(MSG_APP, src=2, dst=3, term=5, index=0, log_term=0, msg_id=1))
    f.advance(f.ready())
    f.step(Message(MSG_SNAP, src=1, dst=3, term=4, index=2, log_term=2, commit=0,
                   reject_hint=1, data=b"s", msg_id=1))
    assert not f.has_ready() and f.log.first_index == 1 and f.term == 5


def test_candidate_stays_candidate_until_the_snapshot_is_complete():
    """A partial transfer changes no protocol state: the install step does
    what AppendEntries does (a candidate of that term steps down)."""
    f = RawNode(3, [1, 2, 3])
    f.campaign()
    f.advance(f.ready())
    assert f.role_name == "candidate" and f.term == 1
    f.step(Message(MSG_SNAP, src=1, dst=3, term=1, index=2, log_term=1, commit=0,
                   reject_hint=4, data=b"ab", msg_id=1))
    assert f.role_name == "candidate"
    f.step(Message(MSG_SNAP, src=1, dst=3, term=1, index=2, log_term=1, commit=2,
                   reject_hint=4, data=b"cd", msg_id=2))
    assert f.role_name == "follower" and f.leader == 1
    assert f.ready().snapshot == Snapshot(2, 1, b"abcd")


def test_a_restarted_follower_starts_the_transfer_again():
    f = RawNode(3, [1, 2, 3])
    f.step(Message(MSG_SNAP, src=1, dst=3, term=1, index=2, log_term=1, commit=0,
                   reject_hint=4, data=b"ab", msg_id=1))
    f.advance(f.ready())
    f2 = RawNode(3, [1, 2, 3], hard_state=f.hard_state)     # crash: the buffer is lost
    f2.step(Message(MSG_SNAP, src=1, dst=3, term=1, index=2, log_term=1, commit=2,
                    reject_hint=4, data=b"cd", msg_id=2))
    rd = f2.ready()
    (r,) = rd.messages
    assert (r.type, r.reject, r.reject_hint) == (MSG_SNAP_RESP, True, 0)


def test_leader_switches_to_a_newer_snapshot_mid_transfer():
    c = lagging_cluster(max_msg_bytes=3)
    c.nodes[1].tick()
    c.deliver(lambda m: m.type != MSG_SNAP)
    assert any(m.type == MSG_SNAP for m in c.queue)
    c.queue = [m for m in c.queue if m.type != MSG_SNAP]     # lose the whole window
    for k in range(3):
        c.nodes[1].propose(b"y%d" % k)
    c.deliver(lambda m: m.dst != 3)
    c.compact(1, 22)
    heartbeat(c, rounds=4)
    assert [s.index for s in c.installed[3]] == [22]
    assert c.nodes[3].commit == c.nodes[1].commit == 24


def test_restart_from_a_snapshot():
    snap = Snapshot(10, 3, b"sm")
    from raft import Entry, HardState

    n = RawNode(1, [1, 2, 3], hard_state=HardState(3, 0, 11), snapshot=snap,
                entries=[Entry(11, 3, 0, b"a"), Entry(12, 3, 0, b"b")])
    assert (n.log.first_index, n.last_index, n.commit, n.applied) == (11, 12, 11, 10)
    assert n.snapshot == snap
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == [11]


def test_leader_heartbeat_to_a_replicating_follower_below_the_snapshot():
    """A follower in REPLICATE whose matchIndex was compacted away gets a
    heartbeat at the snapshot's index; its rejection leads to InstallSnapshot."""
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.deliver()
    for k in range(6):
        c.nodes[1].propose(b"x%d" % k)
    c.process(1)
    c.queue = [m for m in c.queue if m.dst != 3]     # 3 misses the entries
    c.deliver()
    assert c.nodes[1].progress_of(3).match == 1
    c.compact(1, 5)
    heartbeat(c, rounds=4)
    assert [s.index for s in c.installed[3]] == [5]
    assert c.nodes[3].commit == 7


@pytest.mark.parametrize("bad, why", [
    (dict(data=None), "without data"),
    (dict(commit=3, data=b"xx", reject_hint=4), "past the snapshot"),
    (dict(log_term=9), "lastIncludedTerm"),
    (dict(index=0), "index > 0"),
])
def test_malformed_snapshot_chunks_are_refused(bad, why):
    f = RawNode(3, [1, 2, 3])
    fields = dict(src=1, dst=3, term=2, index=2, log_term=1, commit=0, reject_hint=2,
                  data=b"ab", msg_id=1)
    fields.update(bad)
    with pytest.raises(RemoteProtocolError, match=why):
        f.step(Message(MSG_SNAP, **fields))
    assert f.term == 0 and not f.has_ready()


def test_only_snapshot_chunks_carry_data():
    f = RawNode(3, [1, 2, 3])
    with pytest.raises(RemoteProtocolError, match="only InstallSnapshot"):
        f.step(Message(MSG_APP, src=1, dst=3, term=1, data=b"x", msg_id=1))


def test_install_between_ready_and_advance():
    """A snapshot installed while a Ready is being written: advance() of the old
    Ready must not move applied backwards or mark the replaced log durable."""
    from raft import Entry

    f = RawNode(3, [1, 2, 3])
    f.step(Message(MSG_APP, src=1, dst=3, term=1, index=0, log_term=0, commit=0,
                   entries=[Entry(1, 1, 0, b"a"), Entry(2, 1, 0, b"b")], msg_id=1))
    old = f.ready()
    f.step(Message(MSG_SNAP, src=1, dst=3, term=1, index=5, log_term=1, commit=0,
                   reject_hint=1, data=b"s", msg_id=2))
    f.advance(old)
    assert (f.applied, f.commit, f.log.first_index) == (5, 5, 6)
    rd = f.ready()
    assert rd.snapshot == Snapshot(5, 1, b"s")
    f.advance(rd)


def test_progress_enters_snapshot_state():
    c = lagging_cluster()
    c.nodes[1].tick()
    c.deliver(lambda m: m.type != MSG_SNAP)
    pr = c.nodes[1].progress_of(3)
    assert pr.state == PROGRESS_SNAPSHOT and pr.snap_index == 15
    assert c.nodes[1].status()["progress"][3]["state"] == "snapshot"
