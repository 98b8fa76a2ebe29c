"""ReadIndex (dissertation §6.4): linearizable reads without writing to the log.
A leader answers a read only after a majority confirms, after the read arrived,
that it is still the leader, and only once it has committed an entry of its term."""
import pytest

from harness import Cluster
from raft import MSG_APP, MSG_APP_RESP, NotLeader, RawNode


def leader_cluster(n=3):
    c = Cluster({i: [] for i in range(1, n + 1)})
    c.elect(1)
    c.deliver()
    return c


def reads(node):
    out = []
    while node.has_ready():
        rd = node.ready()
        out.extend(rd.read_states)
        node.advance(rd)
    return out


def test_read_is_confirmed_by_a_majority_round():
    c = leader_cluster()
    leader = c.nodes[1]
    commit = leader.commit
    leader.read_index(7)
    rd = leader.ready()
    assert rd.read_states == []                          # not confirmed yet
    beats = [m for m in rd.messages if m.type == MSG_APP]
    assert {m.dst for m in beats} == {2, 3} and all(m.context > 0 for m in beats)
    leader.advance(rd)
    c.queue.extend(rd.messages)
    # One follower's reply makes a majority (2 of 3) with the leader.
    c.deliver(lambda m: m.src == 2 or m.dst == 2)
    c.queue.clear()
    assert reads(leader) + c.read_states[1] == [(7, commit)]


def test_reads_arriving_together_share_one_round():
    c = leader_cluster()
    leader = c.nodes[1]
    for ctx in (1, 2, 3):
        leader.read_index(ctx)
    rd = leader.ready()
    assert sum(1 for m in rd.messages if m.type == MSG_APP) == 2   # one per follower
    leader.advance(rd)
    c.queue.extend(rd.messages)
    c.deliver()
    got = [ctx for ctx, _ in reads(leader) + c.read_states[1]]
    assert sorted(got) == [1, 2, 3]


def test_reads_arriving_during_a_round_join_the_next_which_starts_when_it_is_confirmed():
    """One round in flight at a time (etcd's ReadIndex does the same): reads that
    arrive while a round is out start no round of their own; they share the next,
    started as soon as the one out is confirmed -- and a lost round is retried by the
    next heartbeat, which carries the latest round."""
    c = leader_cluster()
    leader = c.nodes[1]
    leader.read_index(1)
    rd = leader.ready()
    first = [m for m in rd.messages if m.type == MSG_APP]
    assert len(first) == 2
    leader.advance(rd)
    for ctx in (2, 3):                                   # arrive during round 1
        leader.read_index(ctx)
        assert not leader.has_ready()                    # no round of their own
    c.queue.extend(first)
    round1 = first[0].context
    c.deliver(lambda m: m.context <= round1)             # round 1 and its answers only
    assert [ctx for ctx, _ in c.read_states[1]] == [1]
    beats = [m for m in c.queue if m.type == MSG_APP and m.context > round1]
    assert {m.dst for m in beats} == {2, 3}              # round 2 started at once
    # Round 2's heartbeats are lost; the next periodic heartbeat carries round 2.
    c.queue.clear()
    for _ in range(20):
        leader.tick()
    c.deliver()
    assert sorted(ctx for ctx, _ in c.read_states[1]) == [1, 2, 3]


def test_replies_to_an_older_round_do_not_confirm_a_newer_read():
    c = leader_cluster()
    leader = c.nodes[1]
    leader.propose(b"x")
    rd = leader.ready()                                  # appends sent in round 0
    leader.advance(rd)
    old = rd.messages
    leader.read_index(9)
    rd2 = leader.ready()                                 # round 1 heartbeats: lost
    leader.advance(rd2)
    for m in old:                                        # replies carry round 0
        c.nodes[m.dst].step(m)
    for f in (2, 3):
        for r in c.nodes[f].ready().messages_after_persist:
            assert r.type == MSG_APP_RESP and r.context == 0
            leader.step(r)
    assert all(ctx != 9 for ctx, _ in reads(leader))


def test_follower_read_raises_not_leader():
    c = leader_cluster()
    with pytest.raises(NotLeader) as err:
        c.nodes[2].read_index(1)
    assert err.value.leader == 1


def test_new_leader_waits_for_its_noop_to_commit():
    c = Cluster({1: [], 2: [], 3: []})
    c.nodes[1].campaign()
    c.deliver(lambda m: m.type != MSG_APP)               # elected, no-op not replicated
    leader = c.nodes[1]
    assert leader.role_name == "leader" and leader.commit < leader.last_index
    leader.read_index(5)
    assert reads(leader) == []                           # no round before the no-op commits
    c.deliver()
    assert (5, leader.last_index) in reads(leader) + c.read_states[1]


def test_deposed_leader_drops_unconfirmed_reads():
    c = leader_cluster()
    old = c.nodes[1]
    old.read_index(4)
    c.isolate(1)
    c.deliver()
    c.elect(2)                                           # a new leader elsewhere
    c.heal()
    c.nodes[2].tick()                                    # heartbeat: old leader learns the new term
    c.deliver()
    assert old.role_name == "follower"
    assert all(ctx != 4 for ctx, _ in reads(old) + c.read_states[1])


def test_single_node_read_is_immediate_once_noop_committed():
    n = RawNode(1, [1])
    n.campaign()
    n.advance(n.ready())                                 # no-op durable: committed
    n.read_index(1)
    assert reads(n) == [(1, n.commit)]
