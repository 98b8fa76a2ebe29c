"""Issue 15 items 8 and 9 (core side), and the in-memory log byte count of item 5.

* Protocol violations by an authenticated peer (a message a correct peer can never
  send) raise RemoteProtocolError before any state changes; they used to hit a bare
  ``assert`` and stop the node.
* The core's safety invariants are explicit checks raising InvariantViolation, so
  ``python -O`` (which strips ``assert``) cannot turn them off.
* ``RaftLog.mem_bytes`` counts what the entries in memory hold.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from harness import Cluster
from raft import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_SNAP,
    Entry,
    HardState,
    InvariantViolation,
    Message,
    RawNode,
    RemoteProtocolError,
)
from raft._core import ENTRY_MEM_OVERHEAD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leader_cluster() -> Cluster:
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.deliver()
    return c


def _state(n: RawNode) -> tuple:
    st = n.status()
    return (st["role"], st["term"], st["vote"], st["leader"], st["commit"], st["last_index"],
            n.has_ready())


@pytest.mark.parametrize("kind", [MSG_APP, MSG_SNAP])
def test_append_to_leader_in_its_own_term_is_refused_without_state_change(kind: int) -> None:
    c = _leader_cluster()
    leader = c.nodes[1]
    before = _state(leader)
    m = Message(kind, src=2, dst=1, term=leader.term, index=leader.last_index,
                log_term=leader.term, commit=leader.commit if kind == MSG_APP else 0,
                data=b"s" if kind == MSG_SNAP else None, reject_hint=1 if kind == MSG_SNAP else 0)
    with pytest.raises(RemoteProtocolError, match="leader of its own term"):
        leader.step(m)
    assert _state(leader) == before
    # Still a working leader: a proposal commits.
    index = leader.propose(b"after")
    c.deliver()
    assert leader.commit == index and leader.role_name == "leader"


def test_append_from_a_second_leader_in_one_term_is_refused() -> None:
    c = _leader_cluster()
    follower = c.nodes[2]
    assert follower.leader == 1
    before = _state(follower)
    m = Message(MSG_APP, src=3, dst=2, term=follower.term, index=follower.last_index,
                log_term=follower.term, commit=0, entries=[])
    with pytest.raises(RemoteProtocolError, match="whose leader is 1"):
        follower.step(m)
    assert _state(follower) == before


def test_ack_beyond_the_leaders_log_is_refused() -> None:
    # Accepting it would set match beyond the log and crash the leader's commit rule.
    c = _leader_cluster()
    leader = c.nodes[1]
    before = _state(leader)
    m = Message(MSG_APP_RESP, src=2, dst=1, term=leader.term, index=leader.last_index + 5)
    with pytest.raises(RemoteProtocolError, match="beyond our last index"):
        leader.step(m)
    assert _state(leader) == before
    assert leader.progress_of(2).match <= leader.last_index


def test_truncating_a_committed_entry_raises_invariant_violation() -> None:
    n = RawNode(2, [1, 2, 3], hard_state=HardState(1, 1, 3),
                entries=[Entry(i, 1, 0, b"v%d" % i) for i in (1, 2, 3)])
    m = Message(MSG_APP, src=1, dst=2, term=2, index=1, log_term=1, commit=3,
                entries=[Entry(2, 2, 0, b"other")])
    with pytest.raises(InvariantViolation, match="truncate committed entry 2"):
        n.step(m)
    assert n.log.committed == 3 and n.log.last_index == 3


_UNDER_O = textwrap.dedent("""
    import sys
    from raft import Entry, HardState, InvariantViolation, Message, MSG_APP, RawNode
    assert False, "this line must be stripped by -O"
    n = RawNode(2, [1, 2, 3], hard_state=HardState(1, 1, 3),
                entries=[Entry(i, 1, 0, b"v%d" % i) for i in (1, 2, 3)])
    m = Message(MSG_APP, src=1, dst=2, term=2, index=1, log_term=1, commit=3,
                entries=[Entry(2, 2, 0, b"other")])
    try:
        n.step(m)
    except InvariantViolation as e:
        print("FIRED", e)
        sys.exit(0)
    print("NOT FIRED: commit", n.log.committed, "last index", n.log.last_index)
    sys.exit(1)
""")


def test_committed_truncation_check_survives_python_O(tmp_path) -> None:
    """Before the fix, under -O the follower truncated committed entries (commit 3,
    last index 1): the check was an assert."""
    # Outside the source tree, which has no compiled core after `pip install .`.
    proc = subprocess.run([sys.executable, "-O", "-c", _UNDER_O], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "FIRED" in proc.stdout, (proc.stdout, proc.stderr)


def test_no_bare_assert_in_data_paths() -> None:
    """The core and the storage guard data with explicit checks (raft/node.py keeps
    only type-narrowing asserts whose failure would raise anyway)."""
    for rel in ("raft/_core.pyx", "raft/storage/wal.py", "raft/storage/recovery.py",
                "raft/storage/segment.py", "raft/storage/fileio.py"):
        with open(os.path.join(ROOT, rel)) as f:
            offenders = [(rel, i + 1, line.strip()) for i, line in enumerate(f)
                         if line.lstrip().startswith("assert ")]
        assert not offenders, offenders


def _mem(entries: list[Entry]) -> int:
    return sum(len(e.data) + ENTRY_MEM_OVERHEAD for e in entries)


def test_log_mem_bytes_follows_append_truncate_compact_and_install() -> None:
    c = _leader_cluster()
    leader = c.nodes[1]
    for k in range(10):
        leader.propose(b"%d" % k * 1000)
    c.deliver()
    log = leader.log
    assert log.mem_bytes == _mem(log.entries(log.first_index, log.last_index + 1))
    c.compact(1, 8)
    assert log.first_index == 9
    assert log.mem_bytes == _mem(log.entries(9, log.last_index + 1))
    assert leader.status()["log_bytes"] == log.mem_bytes
    # Truncation of a conflicting suffix (§5.3) on a follower.
    f = RawNode(2, [1, 2, 3], hard_state=HardState(1, 1, 1),
                entries=[Entry(i, 1, 0, b"x" * 100) for i in (1, 2, 3)])
    assert f.log.mem_bytes == 3 * (100 + ENTRY_MEM_OVERHEAD)
    f.step(Message(MSG_APP, src=1, dst=2, term=2, index=1, log_term=1, commit=1,
                   entries=[Entry(2, 2, 0, b"y")]))
    assert f.log.last_index == 2
    assert f.log.mem_bytes == (100 + ENTRY_MEM_OVERHEAD) + (1 + ENTRY_MEM_OVERHEAD)


def test_leader_catches_up_a_follower_that_lost_its_log() -> None:
    """A follower restarted on an empty data directory (`raft serve --force-new`)
    rejects the heartbeat at its old matchIndex; the leader used to ignore that as
    stale forever (match never went back), so the follower never caught up."""
    from raft.storage.memory import MemoryStorage

    c = _leader_cluster()
    leader = c.nodes[1]
    for k in range(5):
        leader.propose(b"e%d" % k)
    c.deliver()
    assert leader.progress_of(2).match == leader.last_index
    c.disks[2] = MemoryStorage()            # its data directory is gone
    c.restart(2)
    assert c.nodes[2].last_index == 0
    for _ in range(3):                      # heartbeat_tick is 1 in these tests
        leader.tick()
    c.deliver()
    assert c.nodes[2].last_index == leader.last_index
    assert c.nodes[2].commit == leader.commit


def test_follower_conflicting_at_the_leaders_snapshot_index_gets_the_snapshot() -> None:
    """The follower's entry at the leader's snapshot index has a lower term: the match
    point is inside the snapshot. The leader used to probe at the snapshot index
    forever (found by `raft sim --seed 87 --nodes 5 --steps 300`)."""
    c = Cluster({1: [1, 1, 2], 2: [1, 1, 1], 3: [1, 1, 2]})
    c.isolate(2)
    c.elect(1)
    c.deliver()
    leader = c.nodes[1]
    assert leader.commit == leader.last_index == 4
    c.compact(1, 3)
    c.heal()
    for _ in range(5):
        leader.tick()
        c.deliver()
    assert c.installed[2] and c.installed[2][-1].index >= 3
    assert c.nodes[2].last_index == leader.last_index
    assert c.nodes[2].log.term(c.nodes[2].last_index) == leader.log.term(leader.last_index)


@pytest.mark.parametrize("bound, expected", [(0, 5), (1000, 2)])
def test_pipelining_is_bounded_by_inflight_bytes(bound: int, expected: int) -> None:
    """max_inflight_bytes (etcd's MaxInflightBytes): a leader stops pipelining large
    entries to a follower once that many bytes are unacknowledged, so they are not
    dropped by a full peer send buffer and resent. One message always goes."""
    c = Cluster({1: [], 2: [], 3: []}, max_msg_bytes=500, max_inflight_bytes=bound)
    c.elect(1)
    c.deliver()
    leader = c.nodes[1]
    for k in range(5):
        leader.propose(b"%d" % k * 600)          # each entry goes alone (> max_msg_bytes)
    c.process(1)
    to_2 = [m for m in c.queue if m.dst == 2 and m.type == MSG_APP and m.entries]
    assert len(to_2) == expected
    c.deliver()                                   # acks release the window: all commit
    assert leader.commit == leader.last_index == 6
    assert c.nodes[2].last_index == 6
