"""PreVote (dissertation §9.6): a node whose election timer fires first asks
whether a majority would vote for it in term + 1, changing nothing; only then
does it campaign. A node cut off from the cluster therefore cannot inflate its
term and depose a working leader when it rejoins.

Scenarios run on the in-process harness (tests/harness.py)."""
from __future__ import annotations

from harness import Cluster

from raft import Message, RawNode
from raft._core import MSG_PREVOTE, MSG_PREVOTE_RESP


def run_ticks(c: Cluster, ticks: int) -> None:
    for _ in range(ticks):
        for i in c.ids:
            c.nodes[i].tick()
        c.deliver()


def tick_until_ready(n, limit: int = 20) -> None:
    """Tick until the election timer fires (the node has something to send)."""
    for _ in range(limit):
        n.tick()
        if n.has_ready():
            return
    raise AssertionError(f"node {n.id}'s timer did not fire in {limit} ticks")


def elect_by_timers(c: Cluster) -> int:
    run_ticks(c, 60)
    leaders = [i for i in c.ids if c.nodes[i].role_name == "leader"]
    assert len(leaders) == 1, [c.nodes[i].status() for i in c.ids]
    return leaders[0]


def partition_and_rejoin(pre_vote: bool) -> tuple[int, int, list[int]]:
    """Isolate a follower for many election timeouts, heal, return (leader before,
    leader after, terms after)."""
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=pre_vote)
    leader = elect_by_timers(c)
    cut = next(i for i in c.ids if i != leader)
    c.isolate(cut)
    run_ticks(c, 100)
    c.heal()
    run_ticks(c, 30)
    after = [i for i in c.ids if c.nodes[i].role_name == "leader"]
    return leader, after[0] if after else 0, [c.nodes[i].term for i in c.ids]


def test_a_rejoining_node_does_not_disrupt_the_leader_with_prevote():
    before, after, terms = partition_and_rejoin(pre_vote=True)
    assert after == before
    assert len(set(terms)) == 1 and terms[0] == 1, terms


def test_without_prevote_the_rejoining_node_forces_a_new_term():
    # The contrast that shows the test above can fail: Figure 2 alone lets the
    # isolated node's term run ahead, and its return deposes the leader.
    _before, _after, terms = partition_and_rejoin(pre_vote=False)
    assert max(terms) > 1, terms


def test_prevote_round_changes_no_state_on_either_side():
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=True, election_tick=5)
    n1 = c.nodes[1]
    tick_until_ready(n1)
    rd = n1.ready()
    # Pre-votes need nothing durable: sent at once, no hard state, no RequestVote.
    assert rd.hard_state is None and rd.messages_after_persist == []
    assert {(m.type, m.dst, m.term) for m in rd.messages} == {(MSG_PREVOTE, 2, 1), (MSG_PREVOTE, 3, 1)}
    assert (n1.term, n1.vote, n1.role_name) == (0, 0, "follower")
    n1.advance(rd)
    c.nodes[2].step(rd.messages[0])
    rd2 = c.nodes[2].ready()
    assert rd2.hard_state is None
    (resp,) = rd2.messages
    assert (resp.type, resp.reject, resp.term) == (MSG_PREVOTE_RESP, False, 1)
    assert (c.nodes[2].term, c.nodes[2].vote) == (0, 0)
    c.nodes[2].advance(rd2)


def test_a_majority_of_prevote_grants_starts_the_real_election():
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=True, election_tick=5)
    n1 = c.nodes[1]
    tick_until_ready(n1)
    c.deliver()
    assert n1.role_name == "leader" and n1.term == 1


def test_a_node_that_hears_a_leader_refuses_prevotes():
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=True)
    c.elect(1)
    c.deliver()
    f = c.nodes[2]
    f.step(Message(MSG_PREVOTE, src=3, dst=2, term=2, index=9, log_term=9, msg_id=77))
    (r,) = f.ready().messages
    assert (r.type, r.reject, r.term) == (MSG_PREVOTE_RESP, True, 1)


def test_prevote_refused_to_a_log_that_is_behind():
    c = Cluster({1: [1, 1], 2: [1], 3: [1]}, pre_vote=True)
    n1 = c.nodes[1]
    n1.step(Message(MSG_PREVOTE, src=2, dst=1, term=2, index=1, log_term=1, msg_id=5))
    (r,) = n1.ready().messages
    assert r.reject and n1.term == 1


def test_a_higher_term_prevote_does_not_move_our_term():
    f = RawNode(2, [1, 2, 3], pre_vote=True)
    f.step(Message(MSG_PREVOTE, src=3, dst=2, term=7, index=0, log_term=0, msg_id=1))
    assert f.term == 0 and f.vote == 0
    rd = f.ready()
    assert rd.hard_state is None and not rd.messages[0].reject


def test_single_node_with_prevote_elects_itself():
    n = RawNode(1, [1], pre_vote=True, election_tick=3)
    for _ in range(10):
        n.tick()
    assert n.role_name == "leader"


def test_prevote_clusters_keep_electing_leaders_after_leader_failure():
    """Liveness: when the leader dies, PreVote must not stop the others from
    electing a new one (a pre-candidate forgets the old leader, so the others'
    leases do not outlive it)."""
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=True)
    leader = elect_by_timers(c)
    c.isolate(leader)
    run_ticks(c, 60)
    others = [i for i in c.ids if i != leader]
    assert [c.nodes[i].role_name for i in others].count("leader") == 1
