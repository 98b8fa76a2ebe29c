"""Figure 8 of the Raft paper (§5.4.2): a leader must not commit an entry from an
earlier term by counting replicas. With the test-only switch
``unsafe_commit_any_term`` the same scenario loses a committed entry."""
import pytest

from harness import Cluster
from raft import MSG_APP, InvariantViolation


def _figure8(unsafe: bool):
    # (a) S1 led term 2 and put entry 2 on S1, S2; S5 led term 3 and wrote its
    # entry 2 only locally. Everyone is at term 3.
    logs = {1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3]}
    c = Cluster(logs, terms={i: 3 for i in logs}, max_msg_bytes=1,
                unsafe_commit_any_term=unsafe)
    # (c) S1 is elected in term 4 (votes from S2, S3, S4; S5's log is newer) ...
    c.nodes[1].campaign()
    c.deliver(lambda m: m.type != MSG_APP)
    assert c.nodes[1].role_name == "leader" and c.nodes[1].term == 4
    # ... and replicates: S2 gets everything (entry 2 and the no-op, index 3 of
    # term 4); S3 gets entry 2 (one entry per message) but not the no-op; S4 and
    # S5 hear nothing. Entry 2 (term 2) is now on S1, S2, S3: a majority.
    c.dropped |= {(1, 4), (1, 5)}
    # S3 rejects the first probe (prev = 2, with the no-op), gets entry 2 alone,
    # and from then on every message carrying the no-op to it is lost.
    def s3_no_noop_once_it_has_2(m):
        return not (m.type == MSG_APP and m.dst == 3 and c.nodes[3].log.last_index >= 2)

    c.deliver(s3_no_noop_once_it_has_2)
    assert c.log_terms(3) == [1, 2]
    # S1's next heartbeat tells S2 and S3 its commit index (§5.3); in (d) it
    # matters that S3 was told (with the unsafe rule, that index 2 is committed).
    c.heartbeat(1, s3_no_noop_once_it_has_2)
    return c


def test_earlier_term_entry_not_committed_by_counting():
    c = _figure8(unsafe=False)
    # Entry 2 is on S1, S2, S3 -- a majority -- but is from term 2: not committed.
    assert c.nodes[1].progress_of(3).match == 2
    assert c.nodes[1].commit == 0


def test_unsafe_switch_commits_then_loses_the_entry():
    c = _figure8(unsafe=True)
    assert c.nodes[1].commit == 2           # the bug: committed by counting
    committed_term_at_2 = c.nodes[1].log.term(2)
    assert committed_term_at_2 == 2
    # (d) S1 crashes; S5 (last term 3) wins with S3 and S4 and overwrites index 2
    # on S3 -- which S1 had told that index 2 is committed. The core's own safety
    # assertion (never truncate a committed entry, §5.4) stops it there.
    c.isolate(1)
    c.queue.clear()
    with pytest.raises(InvariantViolation, match="truncate committed entry"):
        c.elect(5)
        c.deliver()


# Seeds at which the simulator, with the Figure 8 rule switched off, finds a
# violation by itself (found by `raft sim --seeds 0-999 --no-check
# --unsafe-commit-any-term`). Any change to the core or the simulator changes
# every run's schedule, so if these stop failing the test searches on (and says
# which seed to pin instead).
FIGURE8_SEEDS = [(3, 235), (5, 282)]
# Figure 8 needs leaders deposed again and again; PreVote and CheckQuorum (drawn
# per seed otherwise) damp exactly that, so the search runs without them.
NO_DAMPING = dict(pre_vote=False, check_quorum=False)
SIM_INVARIANTS = ("LeaderCompleteness", "StateMachineSafety", "CommittedDurable", "CoreAssertion")


def test_simulator_finds_figure8_bug_by_itself():
    from raft.testing.sim import run

    candidates = FIGURE8_SEEDS + [(3, s) for s in range(0, 1500)]
    for nodes, seed in candidates:
        # The simulator's own invariants (the spec trace checker would flag the
        # first unsafe commit at once; here we want the damage itself found).
        bad = run(seed, nodes=nodes, unsafe_commit_any_term=True, check_trace=False, **NO_DAMPING)
        if not any(v.split(":")[0] in SIM_INVARIANTS for v in bad.violations):
            continue
        assert bad.history                              # the events that led there
        good = run(seed, nodes=nodes, **NO_DAMPING)     # the same seed with the rule is fine
        assert good.ok, good.violations
        if (nodes, seed) not in FIGURE8_SEEDS:
            print(f"\nFigure 8 found at nodes={nodes} seed={seed}: pin it in FIGURE8_SEEDS")
        return
    pytest.fail("the simulator did not find the planted Figure 8 bug in 1500 seeds")


def test_trace_checker_flags_the_first_unsafe_commit():
    from raft.testing.sim import run

    nodes, seed = FIGURE8_SEEDS[0]
    res = run(seed, nodes=nodes, unsafe_commit_any_term=True)
    assert any(v.startswith("TraceCheck: AdvanceCommitIndex") for v in res.violations), res.violations


@pytest.mark.slow
def test_simulator_search_finds_figure8_bug():
    from raft.testing.sim import run

    found = [s for s in range(1000, 3000)
             if run(s, nodes=3, unsafe_commit_any_term=True, check_trace=False).violations]
    assert found, "no seed in 1000-2999 found the planted Figure 8 bug"
