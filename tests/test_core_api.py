"""The core's API contract: errors for misuse and for malformed messages,
the Ready/advance rules, and restart from persisted state."""
import pytest

from harness import Cluster, entries_with_terms
from raft import (
    MSG_APP, MSG_VOTE, Entry, HardState, LocalProtocolError, Message, NotLeader,
    RawNode, RemoteProtocolError,
)


def test_propose_on_follower_raises_not_leader_with_hint():
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(2)
    with pytest.raises(NotLeader) as err:
        c.nodes[1].propose(b"x")
    assert err.value.leader == 2
    with pytest.raises(NotLeader) as err:
        RawNode(1, [1, 2]).propose(b"x")
    assert err.value.leader == 0
    assert isinstance(err.value, LocalProtocolError)


def test_ready_twice_without_advance_is_misuse():
    n = RawNode(1, [1])
    n.campaign()
    n.ready()
    assert not n.has_ready()
    with pytest.raises(LocalProtocolError):
        n.ready()


def test_advance_without_ready_is_misuse():
    with pytest.raises(LocalProtocolError):
        RawNode(1, [1]).advance(RawNode(2, [2]).ready())


@pytest.mark.parametrize("bad,why", [
    (dict(dst=9), "delivered to node"),
    (dict(src=1), "unknown node"),      # from ourselves (a node outside the
                                        # configuration may write: tests/core/test_membership.py)
    (dict(type=99), "unknown message type"),
    (dict(entries=[Entry(5, 1)]), "not contiguous"),
    (dict(entries=[Entry(2, 9)]), "exceed the message term"),
    (dict(log_term=3), "prevLogTerm exceeds"),
])
def test_malformed_message_raises_remote_error_without_state_change(bad, why):
    n = RawNode(1, [1, 2], hard_state=HardState(1, 0, 0), entries=entries_with_terms([1]))
    before = n.status()
    fields = dict(type=MSG_APP, src=2, dst=1, term=2, index=1, log_term=1, entries=[])
    fields.update(bad)
    with pytest.raises(RemoteProtocolError, match=why):
        n.step(Message(**fields))
    assert n.status() == before and not n.has_ready()


def test_vote_request_with_entries_rejected():
    n = RawNode(1, [1, 2])
    with pytest.raises(RemoteProtocolError):
        n.step(Message(MSG_VOTE, src=2, dst=1, term=1, entries=[Entry(1, 1)]))


def test_bad_construction_arguments():
    with pytest.raises(LocalProtocolError, match="both voter and learner"):
        RawNode(4, [1, 2, 3], learners=[3])
    with pytest.raises(LocalProtocolError, match="reserved"):
        RawNode(0, [0, 1])
    with pytest.raises(LocalProtocolError, match="election_tick"):
        RawNode(1, [1], election_tick=1, heartbeat_tick=1)
    with pytest.raises(LocalProtocolError, match="beyond the persisted log"):
        RawNode(1, [1], hard_state=HardState(1, 0, 5), entries=entries_with_terms([1]))
    with pytest.raises(LocalProtocolError, match="contiguous"):
        RawNode(1, [1], entries=[Entry(1, 1), Entry(3, 1)])


def test_leader_sends_appends_before_its_own_persist():
    # diss. §10.2.1: a leader's AppendEntries may go out while its own write runs.
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.deliver()
    c.nodes[1].propose(b"x")
    rd = c.nodes[1].ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert {m.dst for m in rd.messages if m.type == MSG_APP} == {2, 3}


def test_follower_ack_waits_for_persist_and_leader_counts_itself_only_after():
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.deliver()
    leader = c.nodes[1]
    idx = leader.propose(b"x")
    rd = leader.ready()                           # not advanced: not durable locally
    for m in rd.messages:
        c.nodes[m.dst].step(m)
    frd = c.nodes[2].ready()
    (ack,) = frd.messages_after_persist
    assert ack.index == idx and not frd.messages
    leader.step(ack)                              # follower 2 + leader's unsynced copy
    assert leader.commit < idx                    # the leader's own copy does not count yet
    leader.advance(rd)
    assert leader.commit == idx


def test_restart_from_persisted_state_keeps_term_vote_log():
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.deliver()
    for i in range(5):
        c.nodes[1].propose(b"%d" % i)
    c.deliver()
    c.heartbeat(1)   # the followers learn the commit index (§5.3) ...
    for i in c.ids:  # ... and write it as a hint a tick later (RawNode.ready)
        c.nodes[i].tick()
    c.process_all()
    before = {i: (c.nodes[i].term, c.nodes[i].vote, c.log_terms(i)) for i in c.ids}
    for i in c.ids:
        c.restart(i)
        assert (c.nodes[i].term, c.nodes[i].vote, c.log_terms(i)) == before[i]
        assert c.nodes[i].role_name == "follower"
    # Committed entries are re-applied from the persisted commit hint.
    c.process_all()
    assert [e.data for e in c.applied[2]][-5:] == [b"0", b"1", b"2", b"3", b"4"]


def test_propose_batch_and_commit_in_order():
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    first = c.nodes[1].propose_batch([b"a", b"b", b"c"])
    c.deliver()
    c.heartbeat(1)
    for i in c.ids:
        got = [e for e in c.applied[i] if e.index >= first]
        assert [e.data for e in got] == [b"a", b"b", b"c"]
    with pytest.raises(TypeError):
        c.nodes[1].propose_batch(["not bytes"])


def test_pipelining_respects_inflight_window():
    c = Cluster({1: [], 2: [], 3: []}, max_msg_bytes=1, max_inflight=4)
    c.elect(1)
    c.deliver()
    c.nodes[1].propose_batch([b"x"] * 20)
    rd = c.nodes[1].ready()
    per_peer = {2: 0, 3: 0}
    for m in rd.messages:
        per_peer[m.dst] += 1
        assert len(m.entries) == 1              # max_msg_bytes=1: one entry each
    assert per_peer == {2: 4, 3: 4}             # window of 4 in flight per follower
    c.nodes[1].advance(rd)
    c.queue.extend(rd.messages)
    c.deliver()
    assert c.nodes[1].commit == c.nodes[1].last_index
    c.heartbeat(1)
    assert all(c.nodes[i].commit == c.nodes[1].last_index for i in c.ids)


def test_lost_append_is_retransmitted_after_a_heartbeat_interval():
    c = Cluster({1: [], 2: [], 3: []}, heartbeat_tick=1)
    c.elect(1)
    c.deliver()
    c.nodes[1].propose(b"x")
    c.process_all()
    c.queue.clear()                              # every AppendEntries is lost
    for _ in range(3):
        c.nodes[1].tick()
        c.deliver()
    assert all(c.log_terms(i) == c.log_terms(1) for i in c.ids)
    assert c.nodes[2].commit == c.nodes[1].last_index


# --- output between ready() and advance() (RawNode.take_*; diss. §10.2.1) -------------

def _leader_with_write_in_flight():
    """Node 1 leads 1..3 and has proposed x, whose Ready (write) is outstanding."""
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    leader = c.nodes[1]
    index = leader.propose(b"x")
    rd = leader.ready()                       # the write of x "in progress"
    assert [e.index for e in rd.entries] == [index] and rd.must_fsync
    return c, leader, rd, index


def test_commit_only_ready_needs_no_fsync():
    """Figure 2: commitIndex is volatile; only entries, term and vote must be synced."""
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    leader = c.nodes[1]
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.must_fsync
    c.queue.extend(rd.messages)
    leader.advance(rd)
    c.deliver(lambda m: m.dst != 1)           # followers store x and ack
    for m in [m for m in c.queue if m.dst == 1]:
        c.queue.remove(m)
        leader.step(m)
    rd = leader.ready()                       # x committed: only the commit hint changed,
    assert rd.hard_state is None and not rd.entries and rd.committed_entries
    assert not rd.must_sync                   # which waits for a write or a tick
    leader.advance(rd)
    leader.tick()
    rd = leader.ready()
    assert rd.hard_state is not None and not rd.entries
    assert rd.must_sync and not rd.must_fsync
    leader.advance(rd)
    n = RawNode(1, [1, 2])
    n.campaign()
    assert n.ready().must_fsync               # a new term and vote: synced


def test_take_messages_replicates_while_the_write_is_outstanding():
    c, leader, rd, index = _leader_with_write_in_flight()
    later = leader.propose(b"y")
    msgs = leader.take_messages()
    apps = [m for m in msgs if m.type == MSG_APP and m.entries]
    assert {m.dst for m in apps} == {2, 3}
    assert all(m.entries[-1].index == later for m in apps)
    assert leader.take_messages() == []       # handed out once
    leader.advance(rd)
    nxt = leader.ready()
    assert not [m for m in nxt.messages if m.type == MSG_APP and m.entries
                and m.entries[-1].index == later]   # not sent twice
    leader.advance(nxt)


def test_take_committed_applies_once_and_in_order_while_the_write_is_outstanding():
    c, leader, rd, index = _leader_with_write_in_flight()
    c.queue.extend(rd.messages)
    leader.advance(rd)                        # x durable on the leader
    later = leader.propose(b"y")
    rd2 = leader.ready()                      # y's write outstanding
    c.queue.extend(rd2.messages)
    c.deliver(lambda m: m.dst != 1)           # followers store x and y, ack both
    assert leader.take_committed() == []      # nothing new committed until acks are stepped
    for m in [m for m in c.queue if m.dst == 1]:
        c.queue.remove(m)
        leader.step(m)
    # x is committed (leader + followers durable); y is not durable on the leader yet.
    taken = leader.take_committed()
    assert [e.index for e in taken] == [index]
    assert leader.applied == index            # counts as applied: compact() may use it
    assert leader.take_committed() == []
    leader.advance(rd2)                       # y durable here: committed now
    rd3 = leader.ready()
    assert [e.index for e in rd3.committed_entries] == [later]   # x is not handed out again
    leader.advance(rd3)


def test_take_read_states_confirms_reads_while_the_write_is_outstanding():
    c, leader, rd, index = _leader_with_write_in_flight()
    c.queue.extend(rd.messages)
    leader.advance(rd)
    c.deliver(lambda m: m.dst != 1)
    for m in [m for m in c.queue if m.dst == 1]:
        c.queue.remove(m)
        leader.step(m)
    c.process(1)                               # x committed: reads can start
    leader.propose(b"y")
    rd2 = leader.ready()                       # a write outstanding
    leader.read_index(7)
    c.queue.extend(leader.take_messages())     # the read round's heartbeats go now
    c.deliver(lambda m: m.dst != 1)
    for m in [m for m in c.queue if m.dst == 1]:
        c.queue.remove(m)
        leader.step(m)
    assert leader.take_read_states() == [(7, leader.commit)]
    leader.advance(rd2)


def test_a_new_commit_index_rides_the_next_write_or_goes_alone_a_tick_later():
    """The commit index is volatile (Figure 2): the hard state carries it as a hint
    only. A Ready writes a new one when it writes anyway (entries, term, vote), or
    on its own, unsynced, once it has waited a tick; never a write per commit."""
    c = Cluster({1: [], 2: [], 3: []})
    c.elect(1)
    c.deliver()
    leader = c.nodes[1]
    c.heartbeat(1)
    leader.tick()
    c.process_all()                       # the election's commit hints are written
    hint = c.disks[1].load().hard_state.commit
    assert hint == leader.commit
    leader.propose(b"a")
    c.deliver()                           # committed: the leader applied it ...
    assert leader.commit == hint + 1 and c.applied[1][-1].data == b"a"
    assert c.disks[1].load().hard_state.commit == hint      # ... and wrote no hint
    assert not leader.has_ready()
    leader.propose(b"b")                  # the next write carries it
    rd = leader.ready()
    assert rd.entries and rd.hard_state.commit == hint + 1 and rd.must_fsync
    c.queue.extend(rd.messages)
    c.disks[1].save(rd.hard_state, rd.entries)
    leader.advance(rd)
    c.deliver()
    assert leader.commit == hint + 2 and not leader.has_ready()
    leader.tick()                         # a tick later it goes alone, unsynced
    assert leader.has_ready()
    rd = leader.ready()
    assert rd.hard_state.commit == hint + 2 and not rd.entries and not rd.must_fsync
    leader.advance(rd)
    assert not leader.has_ready()
