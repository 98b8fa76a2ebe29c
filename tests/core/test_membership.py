"""Membership changes in the core: single-server changes with the no-op rule (diss.
§4.1), learners (§4.2.1), a removed leader stepping down (§4.2.2), leader transfer
(§3.10), and snapshots carrying the configuration. Scripted with tests/harness.py's
instant-disk cluster; the simulator draws the same changes at random."""
from __future__ import annotations

import pytest

from harness import Cluster
from raft import HardState, Message, RawNode
from raft._core import (
    CONF_ADD_LEARNER, CONF_ADD_VOTER, CONF_REMOVE, ENTRY_CONF, MSG_APP, MSG_TIMEOUT_NOW,
    ConfChangeRefused, NotLeader, ProposalDropped, RemoteProtocolError, conf_after_change,
    decode_conf, encode_conf,
)


def add_node(c: Cluster, i: int) -> None:
    """Start server ``i`` empty, knowing no configuration (``raft serve --join``)."""
    from raft.storage.memory import MemoryStorage
    c.ids.append(i)
    c.disks[i] = MemoryStorage()
    c.applied[i], c.read_states[i], c.installed[i] = [], [], []
    c.nodes[i] = RawNode(i, [], seed=i)


def commit_all(c: Cluster) -> None:
    c.deliver()
    for _ in range(3):               # heartbeats carry the last commit index everywhere
        for n in c.nodes.values():
            if n.role_name == "leader":
                n.tick()
        c.deliver()


def elected(c: Cluster, i: int = 1) -> RawNode:
    c.elect(i)
    c.deliver()
    return c.nodes[i]


# --- the encoding and the change rule -----------------------------------------------

def test_conf_round_trips_with_its_context():
    data = encode_conf([3, 1, 2], [5], b'{"addr": 1}')
    assert decode_conf(data) == ((1, 2, 3), (5,), b'{"addr": 1}')


@pytest.mark.parametrize("data,why", [
    (b"\x01", "too short"),
    (encode_conf([1, 2])[:12], "truncated"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00" + (2).to_bytes(8, "little") + (1).to_bytes(8, "little"),
     "ascending"),
    (b"\x00\x10\x00\x00\x00\x00\x00\x00", "members"),
])
def test_malformed_conf_is_a_remote_error(data, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decode_conf(data)


def test_single_server_change_rule():
    assert conf_after_change((1, 2, 3), (), CONF_ADD_VOTER, 4) == ((1, 2, 3, 4), ())
    assert conf_after_change((1, 2, 3), (4,), CONF_ADD_VOTER, 4) == ((1, 2, 3, 4), ())   # promote
    assert conf_after_change((1, 2, 3), (), CONF_ADD_LEARNER, 4) == ((1, 2, 3), (4,))
    assert conf_after_change((1, 2, 3), (4,), CONF_REMOVE, 4) == ((1, 2, 3), ())
    assert conf_after_change((1, 2, 3), (), CONF_REMOVE, 2) == ((1, 3), ())
    for voters, learners, op, node, why in [
        ((1, 2), (), CONF_ADD_VOTER, 2, "already a voter"),
        ((1, 2), (3,), CONF_ADD_LEARNER, 3, "already a learner"),
        ((1, 2), (), CONF_ADD_LEARNER, 2, "demotion"),
        ((1, 2), (), CONF_REMOVE, 3, "not a member"),
        ((1,), (), CONF_REMOVE, 1, "last voter"),
        ((1,), (), 99, 2, "unknown"),
    ]:
        with pytest.raises(ConfChangeRefused, match=why):
            conf_after_change(voters, learners, op, node)


# --- growing and shrinking ---------------------------------------------------------

def test_add_learner_then_promote_grows_the_quorum():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    add_node(c, 4)
    idx = leader.propose_conf_change(CONF_ADD_LEARNER, 4, b"ctx-learner")
    # Effective on append (diss. §4.1): the leader replicates to 4 before the commit.
    assert leader.learners == (4,) and leader.conf_index == idx
    assert leader.progress_of(4) is not None
    c.deliver()
    n4 = c.nodes[4]
    assert n4.learners == (4,) and n4.voters == (1, 2, 3) and n4.conf_context == b"ctx-learner"
    assert n4.last_index == leader.last_index
    # A learner never campaigns, however long it hears nothing.
    for _ in range(100):
        n4.tick()
    assert n4.role_name == "follower" and n4.term == leader.term
    # Promote: now 3 of 4 voters are needed; with 2 and 3 cut off nothing commits.
    leader.propose_conf_change(CONF_ADD_VOTER, 4)
    c.deliver()
    assert leader.voters == (1, 2, 3, 4) and n4.is_voter
    c.isolate(2)
    c.isolate(3)
    leader.propose(b"needs-3-of-4")
    c.deliver()
    assert leader.commit < leader.last_index
    c.heal()
    commit_all(c)
    assert leader.commit == leader.last_index


def test_a_learner_ack_does_not_count_toward_commit():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    add_node(c, 4)
    leader.propose_conf_change(CONF_ADD_LEARNER, 4)
    c.deliver()
    c.isolate(2)
    c.isolate(3)
    c.dropped.discard((1, 4))
    c.dropped.discard((4, 1))
    leader.propose(b"x")
    c.deliver()
    assert leader.progress_of(4).match == leader.last_index
    assert leader.commit < leader.last_index       # 1 voter + 1 learner is no majority of 3


def test_only_one_uncommitted_change_at_a_time():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    c.isolate(1)
    leader.propose_conf_change(CONF_ADD_LEARNER, 4)
    with pytest.raises(ConfChangeRefused, match="not committed yet"):
        leader.propose_conf_change(CONF_ADD_LEARNER, 5)
    c.heal()
    c.deliver()
    leader.propose_conf_change(CONF_ADD_LEARNER, 5)


def test_no_op_rule_a_new_leader_changes_nothing_before_committing_its_own_entry():
    """diss. §4.1 (Ongaro's 2015 correction): a leader may not start a change until
    an entry of its term is committed."""
    c = Cluster({1: [], 2: [], 3: []})
    leader = c.nodes[1]
    leader.campaign()
    c.deliver(lambda m: m.type != MSG_APP)       # elected; its no-op not yet replicated
    assert leader.role_name == "leader"
    with pytest.raises(ConfChangeRefused, match="not committed an entry of its term"):
        leader.propose_conf_change(CONF_REMOVE, 3)
    c.deliver()
    leader.propose_conf_change(CONF_REMOVE, 3)
    with pytest.raises(NotLeader):
        c.nodes[2].propose_conf_change(CONF_REMOVE, 3)


def test_remove_a_follower_shrinks_the_quorum():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    leader.propose_conf_change(CONF_REMOVE, 3)
    c.deliver()
    assert leader.voters == (1, 2) and leader.progress_of(3) is None
    n3 = c.nodes[3]
    assert not n3.is_voter
    for _ in range(100):                         # removed: it never campaigns again
        n3.tick()
        c.deliver(lambda m: m.src == 3)
    assert n3.role_name == "follower"
    c.isolate(3)
    leader.propose(b"2-of-2")
    c.deliver()
    assert leader.commit == leader.last_index


def test_removed_leader_steps_down_after_commit_and_hands_over():
    """diss. §4.2.2: it manages the cluster without counting itself until the change
    commits, then steps down; a TimeoutNow lets the successor start at once."""
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    idx = leader.propose_conf_change(CONF_REMOVE, 1)
    assert leader.role_name == "leader" and leader.voters == (2, 3)
    c.deliver()
    assert leader.role_name == "follower"
    assert c.nodes[2].commit >= idx or c.nodes[3].commit >= idx
    leaders = [i for i in (2, 3) if c.nodes[i].role_name == "leader"]
    assert len(leaders) == 1, "the TimeoutNow target took over without waiting for a timeout"
    new = c.nodes[leaders[0]]
    assert new.term == leader.term + 1
    new.propose(b"after")
    c.deliver()
    assert new.commit == new.last_index


def test_removed_leader_does_not_count_itself():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    c.isolate(1)
    idx = leader.propose_conf_change(CONF_REMOVE, 1)
    c.deliver()
    leader.advance(leader.ready()) if leader.has_ready() else None
    assert leader.commit < idx and leader.role_name == "leader"


def test_truncated_conf_entry_is_undone():
    """A configuration is used as soon as it is in the log; if a new leader's log
    replaces that entry, the follower goes back to the previous configuration."""
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    c.isolate(1)
    leader.propose_conf_change(CONF_ADD_LEARNER, 9)
    c.deliver()
    # 1's change never left it; 2 becomes leader of a later term.
    c.heal()
    c.isolate(1)
    c.elect(2)
    c.heal()
    c.nodes[2].tick()
    c.deliver()
    assert c.nodes[1].learners == () and c.nodes[1].voters == (1, 2, 3)
    assert c.nodes[1].conf_index == 0


def test_restart_recovers_the_configuration_from_the_log_and_the_snapshot():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    add_node(c, 4)
    leader.propose_conf_change(CONF_ADD_LEARNER, 4, b"A")
    c.deliver()
    leader.propose_conf_change(CONF_ADD_VOTER, 4, b"B")
    commit_all(c)
    c.restart(2)
    assert c.nodes[2].voters == (1, 2, 3, 4) and c.nodes[2].conf_context == b"B"
    commit_all(c)
    # Snapshot past both changes: the configuration now lives in the snapshot only.
    for i in (1, 2):
        c.compact(i, c.nodes[i].applied)
    assert decode_conf(c.disks[2].load().snapshot.conf)[:2] == ((1, 2, 3, 4), ())
    c.restart(2)
    assert c.nodes[2].voters == (1, 2, 3, 4) and c.nodes[2].conf_context == b"B"


def test_a_new_member_behind_the_snapshot_gets_the_configuration_with_it():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    for k in range(5):
        leader.propose(b"x%d" % k)
    commit_all(c)
    c.compact(1, leader.applied)
    add_node(c, 4)
    leader.propose_conf_change(CONF_ADD_LEARNER, 4, b"ctx")
    c.deliver()
    n4 = c.nodes[4]
    assert c.installed[4], "the learner was caught up by InstallSnapshot"
    assert n4.voters == (1, 2, 3) and n4.learners == (4,)
    assert n4.last_index == leader.last_index


def test_snapshot_chunk_conf_is_validated():
    f = RawNode(3, [1, 2, 3])
    from raft._core import Entry, MSG_SNAP
    bad = Message(MSG_SNAP, src=1, dst=3, term=1, index=5, log_term=1, commit=0,
                  reject_hint=1, data=b"s", entries=[Entry(5, 1, ENTRY_CONF, b"\x01")])
    with pytest.raises(RemoteProtocolError, match="too short"):
        f.step(bad)


# --- leader transfer (diss. §3.10) ----------------------------------------------

def test_transfer_to_an_up_to_date_follower():
    c = Cluster({1: [], 2: [], 3: []}, pre_vote=True, check_quorum=True)
    leader = elected(c)
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    c.deliver()
    assert c.nodes[3].role_name == "leader" and leader.role_name == "follower"
    assert c.nodes[3].term == leader.term


def test_transfer_catches_the_target_up_first():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    c.isolate(3)
    for k in range(4):
        leader.propose(b"x%d" % k)
    c.deliver()
    c.heal()
    leader.transfer_leadership(3)
    sent = []
    for _ in range(3):                           # lost entries are re-probed on heartbeats
        leader.tick()
        c.deliver(lambda m: sent.append(m.type) or True)
    assert MSG_TIMEOUT_NOW in sent
    assert c.nodes[3].role_name == "leader"
    assert c.nodes[3].last_index >= 5


def test_transfer_gives_up_after_an_election_timeout():
    c = Cluster({1: [], 2: [], 3: []}, election_tick=10)
    leader = elected(c)
    c.isolate(3)
    leader.transfer_leadership(3)
    for _ in range(10):
        leader.tick()
        c.deliver()
    assert leader.lead_transferee == 0 and leader.role_name == "leader"
    leader.propose(b"accepted again")


def test_timeout_now_from_a_stranger_in_our_term_is_refused():
    c = Cluster({1: [], 2: [], 3: []})
    elected(c)
    f = c.nodes[2]
    with pytest.raises(RemoteProtocolError):
        f.step(Message(MSG_TIMEOUT_NOW, src=3, dst=2, term=f.term))
    assert f.role_name == "follower"


def test_learner_ignores_timeout_now():
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    add_node(c, 4)
    leader.propose_conf_change(CONF_ADD_LEARNER, 4)
    c.deliver()
    with pytest.raises(Exception):
        leader.transfer_leadership(4)               # not a voter
    c.nodes[4].step(Message(MSG_TIMEOUT_NOW, src=1, dst=4, term=leader.term))
    assert c.nodes[4].role_name == "follower"


def test_joining_node_state_is_durable_across_restart():
    n = RawNode(7, [], hard_state=HardState(0, 0, 0))
    assert n.voters == () and not n.is_voter
    for _ in range(50):
        n.tick()
    assert n.role_name == "follower" and n.term == 0


def test_leader_that_committed_its_removal_takes_no_proposal_and_commits_nothing_more():
    """Between the commit of its own removal and its step-down (at its next ready(),
    after the AppendEntries that tell the followers), the leader is no longer one: it
    takes no proposal and commits no later entry (the spec's AdvanceCommitIndex makes
    it a follower in the same step; found by the simulator's trace check)."""
    c = Cluster({1: [], 2: [], 3: []})
    leader = elected(c)
    idx = leader.propose_conf_change(CONF_REMOVE, 1)
    c.process(1)
    c.deliver(lambda m: m.dst != 1)            # the followers append the change and ack it
    leader.propose(b"after")                   # allowed: the change is not committed yet
    c.process(1)
    c.deliver(lambda m: m.dst != 1)            # ... and ack the entry after it
    acks = [m for m in c.queue if m.dst == 1 and m.type == 2]
    assert sorted(m.index for m in acks) == [idx, idx, idx + 1, idx + 1]
    c.queue = [m for m in c.queue if m.dst != 1]
    for m in acks:                             # stepped without a ready() in between
        leader.step(m)
    assert leader.role_name == "leader" and leader.commit == idx   # not idx + 1
    with pytest.raises(ProposalDropped, match="removal"):
        leader.propose(b"late")
    c.process(1)
    assert leader.role_name == "follower"


def test_two_voters_with_prevote_do_not_deadlock():
    """Found by the simulator with membership draws (a 3-node cluster shrunk to two
    voters, raft sim --seed 75 --nodes 3 --steps 300 --membership; an even split of six
    voters, seed 355 --nodes 5). Voter 1 is ahead in term (5, its election lost) but
    behind in log; voter 3 is behind in term (4) but ahead in log. 1's pre-votes (term
    6) are refused by 3 (1's log is behind, §5.4.1); 3's pre-votes (term 5) were refused
    by 1 (5 is not above its term) forever. Now a refusal from a later term makes 3
    campaign at once (term 5, refused: 1 voted for itself); its next pre-vote round
    (term 6) is granted and it wins."""
    c = Cluster({1: [1, 1], 3: [1, 1, 4, 4]}, terms={1: 5, 3: 4}, pre_vote=True)
    for _ in range(40 * 10):                   # 40 election timeouts
        for n in c.nodes.values():
            n.tick()
        c.deliver()
        if any(n.role_name == "leader" for n in c.nodes.values()):
            break
    assert any(n.role_name == "leader" for n in c.nodes.values()), \
        [n.status()["term"] for n in c.nodes.values()]
