"""Figure 7 of the Raft paper (§5.3): the leader for term 8 and six possible
follower logs (a-f). AppendEntries with prevLogIndex 10, prevLogTerm 6 succeeds
only on (c) and (d); after it a new leader makes every log match its own."""
import pytest

from harness import Cluster, entries_with_terms
from raft import MSG_APP, Message, RaftLog

LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("name", sorted(FOLLOWERS))
def test_consistency_check_prev_10_term_6(name):
    log = RaftLog(entries_with_terms(FOLLOWERS[name]))
    assert log.matches(10, 6) == (name in ("c", "d"))


def test_log_term_lookup_and_bounds():
    log = RaftLog(entries_with_terms(LEADER))
    assert [log.term(i) for i in range(0, 11)] == [0] + LEADER
    assert (log.first_index, log.last_index, log.last_term) == (1, 10, 6)
    with pytest.raises(IndexError):
        log.term(11)


@pytest.mark.parametrize("name,hint", [
    # (follower, the index the follower's rejection hints at)
    ("a", 9),    # shorter: its last index
    ("b", 4),    # shorter: its last index
    ("e", 7),    # term 4 <= 6 at index 7
    ("f", 10),   # term 3 <= 6 at index 10: the leader then skips all of term 3
])
def test_conflict_hint(name, hint):
    log = RaftLog(entries_with_terms(FOLLOWERS[name]))
    assert not log.matches(10, 6)
    assert log.conflict_hint(10, 6) == hint


def test_leader_side_hint_skips_whole_terms():
    # f answers (10, term 3); the leader has no term 3, so it jumps to the last
    # index with term <= 3 in its own log: index 3. One round trip, not seven.
    leader = RaftLog(entries_with_terms(LEADER))
    assert leader.conflict_hint(10, 3) == 3


def _step_append(name):
    from raft import RawNode, HardState
    ents = entries_with_terms(FOLLOWERS[name])
    node = RawNode(2, [1, 2], hard_state=HardState(7, 0, 0), entries=ents)
    new = entries_with_terms([8], start=11)
    node.step(Message(MSG_APP, src=1, dst=2, term=8, index=10, log_term=6, entries=new, commit=0))
    rd = node.ready()
    (resp,) = rd.messages_after_persist
    return node, rd, resp


@pytest.mark.parametrize("name", sorted(FOLLOWERS))
def test_follower_step_prev_10_term_6(name):
    node, rd, resp = _step_append(name)
    if name in ("c", "d"):
        # Accepted: the conflicting suffix (c: 11@6, d: 11@7 12@7) is replaced (§5.3).
        assert not resp.reject and resp.index == 11
        assert [node.log.term(i) for i in range(1, 12)] == LEADER + [8]
        assert node.log.last_index == 11
        assert [e.index for e in rd.entries] == [11]   # storage truncates from 11
    else:
        assert resp.reject and resp.index == 10
        assert node.log.last_index == len(FOLLOWERS[name])   # nothing changed


@pytest.mark.parametrize("name", sorted(FOLLOWERS))
def test_redelivery_is_idempotent(name):
    node, rd, resp = _step_append(name)
    node.advance(rd)
    before = [node.log.term(i) for i in range(1, node.log.last_index + 1)]
    new = entries_with_terms([8], start=11)
    node.step(Message(MSG_APP, src=1, dst=2, term=8, index=10, log_term=6, entries=new))
    rd2 = node.ready()
    assert [node.log.term(i) for i in range(1, node.log.last_index + 1)] == before
    assert rd2.entries == []          # nothing new to persist


def test_new_leader_makes_every_follower_log_match():
    """Figure 7 as a cluster: leader + followers a-f (7 servers). The leader wins
    with a, b, e, f (c and d have more up-to-date logs and refuse, §5.4.1), then
    repairs every follower, including c and d whose extra entries are removed."""
    names = sorted(FOLLOWERS)
    logs = {1: LEADER}
    logs.update({i + 2: FOLLOWERS[n] for i, n in enumerate(names)})
    terms = {i: 7 for i in logs}
    c = Cluster(logs, terms=terms)
    c.elect(1)
    assert c.nodes[1].term == 8
    c.deliver()
    want = LEADER + [8]          # plus the new leader's no-op entry (diss. §6.4)
    for i in logs:
        assert c.log_terms(i) == want, (i, c.log_terms(i))
    # The followers learn the commit index from the leader's next AppendEntries or
    # heartbeat (§5.3): until then only the leader knows entry 11 is committed.
    assert c.nodes[1].commit == 11
    c.heartbeat(1)
    for i in logs:
        assert c.log_terms(i) == want, (i, c.log_terms(i))
        assert c.nodes[i].commit == 11
