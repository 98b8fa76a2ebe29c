"""Elections: §5.2 (one vote per term, randomized timeouts, stepping down) and
§5.4.1 (the up-to-date check)."""
import pytest

from harness import entries_with_terms
from raft import (
    MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, HardState, Message, RawNode,
)


def node(id=1, voters=(1, 2, 3), term=1, log=(1,), vote=0, **kw):
    return RawNode(id, list(voters), hard_state=HardState(term, vote, 0),
                   entries=entries_with_terms(list(log)), **kw)


def vote_req(src, dst, term, last_index, last_term):
    return Message(MSG_VOTE, src=src, dst=dst, term=term, index=last_index, log_term=last_term)


def answers(n, type):
    rd = n.ready()
    n.advance(rd)
    return [m for m in rd.messages + rd.messages_after_persist if m.type == type]


def test_grants_one_vote_per_term():
    n = node()
    n.step(vote_req(2, 1, 2, 1, 1))
    n.step(vote_req(3, 1, 2, 1, 1))
    r2, r3 = answers(n, MSG_VOTE_RESP)
    assert (r2.dst, r2.reject) == (2, False)
    assert (r3.dst, r3.reject) == (3, True)
    assert n.vote == 2 and n.term == 2


def test_repeated_request_from_same_candidate_is_granted_again():
    n = node()
    n.step(vote_req(2, 1, 2, 1, 1))
    n.step(vote_req(2, 1, 2, 1, 1))        # duplicated message
    assert [r.reject for r in answers(n, MSG_VOTE_RESP)] == [False, False]


@pytest.mark.parametrize("cand_last,granted", [
    ((3, 2), True),    # same last term, longer log
    ((2, 2), True),    # same last term, same length
    ((1, 2), False),   # same last term, shorter log
    ((1, 3), True),    # higher last term wins even if shorter (§5.4.1)
    ((9, 1), False),   # lower last term loses even if longer
])
def test_up_to_date_check(cand_last, granted):
    n = node(term=2, log=(1, 2))           # our last entry: (2, term 2)
    n.step(vote_req(2, 1, 3, *cand_last))
    (r,) = answers(n, MSG_VOTE_RESP)
    assert r.reject == (not granted)


def test_vote_grant_is_sent_only_after_persist():
    n = node()
    n.step(vote_req(2, 1, 2, 1, 1))
    rd = n.ready()
    assert rd.hard_state == HardState(2, 2, 0)         # the vote must be made durable ...
    assert [m.type for m in rd.messages_after_persist] == [MSG_VOTE_RESP]   # ... before this
    assert not [m for m in rd.messages if m.type == MSG_VOTE_RESP]


def test_candidate_request_vote_waits_for_self_vote_persist():
    n = node()
    n.campaign()
    rd = n.ready()
    assert rd.hard_state == HardState(2, 1, 0)
    assert sorted(m.dst for m in rd.messages_after_persist if m.type == MSG_VOTE) == [2, 3]
    assert not rd.messages


def test_stale_vote_request_rejected_with_our_term():
    n = node(term=5)
    n.step(vote_req(2, 1, 4, 10, 4))
    (r,) = answers(n, MSG_VOTE_RESP)
    assert r.reject and r.term == 5 and n.vote == 0


def test_step_down_on_higher_term():
    n = node(voters=(1, 2, 3))
    n.campaign()
    n.advance(n.ready())
    n.step(Message(MSG_VOTE_RESP, src=2, dst=1, term=2))   # granted
    assert n.role_name == "leader"
    n.advance(n.ready())
    n.step(Message(MSG_APP_RESP, src=3, dst=1, term=7, reject=True))
    assert n.role_name == "follower" and n.term == 7 and n.vote == 0


def test_candidate_steps_down_on_same_term_append():
    n = node()
    n.campaign()
    n.advance(n.ready())
    assert n.role_name == "candidate" and n.term == 2
    n.step(Message(MSG_APP, src=3, dst=1, term=2, index=1, log_term=1))
    assert n.role_name == "follower" and n.leader == 3 and n.term == 2


def test_lost_election_stays_candidate_until_next_timeout():
    # Figure 2: a candidate leaves candidacy by winning, by hearing from a leader,
    # or by a new election on timeout -- rejections alone change nothing.
    n = node(voters=(1, 2, 3), seed=5)
    n.campaign()
    n.advance(n.ready())
    n.step(Message(MSG_VOTE_RESP, src=2, dst=1, term=2, reject=True))
    n.step(Message(MSG_VOTE_RESP, src=3, dst=1, term=2, reject=True))
    assert n.role_name == "candidate" and n.term == 2
    for _ in range(20):
        n.tick()
    assert n.role_name == "candidate" and n.term == 3


def ticks_until_campaign(n, limit=1000):
    for t in range(1, limit):
        n.tick()
        if n.role_name == "candidate":
            return t
    raise AssertionError("never campaigned")


def test_election_timeout_is_randomized_in_range():
    seen = set()
    for seed in range(40):
        n = node(seed=seed, election_tick=10)
        t = ticks_until_campaign(n)
        assert 10 <= t < 20
        seen.add(t)
    assert len(seen) > 3          # actually random, not a constant


def test_same_seed_same_timeout():
    assert ticks_until_campaign(node(seed=7)) == ticks_until_campaign(node(seed=7))


def test_granting_a_vote_resets_the_election_timer():
    n = node(seed=3, election_tick=10)
    timeout = ticks_until_campaign(node(seed=3, election_tick=10))
    for _ in range(timeout - 1):
        n.tick()
    n.step(vote_req(2, 1, 2, 1, 1))                 # grant at the last moment
    for _ in range(9):                              # less than any timeout
        n.tick()
    assert n.role_name == "follower"


def test_rejecting_a_vote_does_not_reset_the_timer():
    # Figure 2: only AppendEntries from the leader or granting a vote reset it.
    # (A disruptive out-of-date candidate must not hold back everybody else.)
    n = node(seed=3, election_tick=10, log=(1, 1))
    timeout = ticks_until_campaign(node(seed=3, election_tick=10, log=(1, 1)))
    for _ in range(timeout - 1):
        n.tick()
    n.step(vote_req(2, 1, 2, 1, 1))                 # stale log: rejected, term 2
    assert n.vote == 0
    n.tick()
    assert n.role_name == "candidate" and n.term == 3


def test_single_node_cluster_elects_itself_and_commits():
    n = RawNode(1, [1], seed=1)
    n.campaign()
    assert n.role_name == "leader"
    n.propose(b"x")
    rd = n.ready()
    assert [e.data for e in rd.entries] == [b"", b"x"]
    n.advance(rd)                                   # persisted: commit by ourselves
    rd = n.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"x"]
