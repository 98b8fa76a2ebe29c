"""CheckQuorum (dissertation §6.2): a leader that has not heard from a majority
of voters within an election timeout steps down to follower, keeping its term,
so that clients cut off with it are redirected instead of waiting on writes
that cannot commit. Scenarios on the in-process harness (tests/harness.py)."""
from __future__ import annotations

from harness import Cluster


def run_ticks(c: Cluster, ticks: int, only=None) -> None:
    for _ in range(ticks):
        for i in (only or c.ids):
            c.nodes[i].tick()
        c.deliver()


def test_an_isolated_leader_steps_down_keeping_its_term():
    c = Cluster({1: [], 2: [], 3: []}, check_quorum=True, election_tick=10)
    c.elect(1)
    term = c.nodes[1].term
    c.isolate(1)
    run_ticks(c, 25, only=[1])          # at most two election timeouts
    n1 = c.nodes[1]
    assert (n1.role_name, n1.term, n1.leader) == ("follower", term, 0)


def test_a_leader_that_hears_a_majority_stays_leader():
    c = Cluster({1: [], 2: [], 3: []}, check_quorum=True, election_tick=10)
    c.elect(1)
    c.dropped.update({(1, 3), (3, 1)})  # one follower lost: still a majority
    run_ticks(c, 100, only=[1, 2])
    assert c.nodes[1].role_name == "leader"


def test_without_check_quorum_an_isolated_leader_keeps_leading():
    # The contrast that shows the tests above can fail.
    c = Cluster({1: [], 2: [], 3: []}, election_tick=10)
    c.elect(1)
    c.isolate(1)
    run_ticks(c, 100, only=[1])
    assert c.nodes[1].role_name == "leader"


def test_stepping_down_drops_unconfirmed_reads():
    c = Cluster({1: [], 2: [], 3: []}, check_quorum=True, election_tick=10)
    c.elect(1)
    c.deliver()
    c.isolate(1)
    c.nodes[1].read_index(42)
    run_ticks(c, 25, only=[1])
    assert c.nodes[1].role_name == "follower"
    c.heal()
    run_ticks(c, 60)
    assert not any(ctx == 42 for ctx, _ in c.read_states[1])


def test_the_majority_elects_a_new_leader_and_the_old_one_follows_after_healing():
    c = Cluster({1: [], 2: [], 3: []}, check_quorum=True, pre_vote=True, election_tick=10)
    c.elect(1)
    c.isolate(1)
    run_ticks(c, 80)
    new = [i for i in (2, 3) if c.nodes[i].role_name == "leader"]
    assert len(new) == 1 and c.nodes[1].role_name == "follower"
    c.heal()
    run_ticks(c, 30)
    assert [i for i in c.ids if c.nodes[i].role_name == "leader"] == new
    assert c.nodes[1].leader == new[0]
