"""The deterministic simulator: reproducibility, fault coverage, and safety +
liveness over seed ranges (a few hundred in the default run, more under -m slow)."""
import json
import random
import subprocess
import sys
from dataclasses import replace

import pytest

from raft.testing.sim import COVERAGE_KINDS, FAULT_KINDS, FaultProfile, SimConfig, Simulation, run


def _check(res):
    assert res.ok, (f"seed {res.seed} failed: {res.violations}\n"
                    f"reproduce: raft sim --seed {res.seed} --nodes {res.nodes} --steps {res.steps}\n"
                    + "\n".join(res.history))


def test_same_seed_gives_byte_identical_event_log():
    a = Simulation(SimConfig(seed=42, nodes=5, steps=300))
    b = Simulation(SimConfig(seed=42, nodes=5, steps=300))
    ra, rb = a.run(), b.run()
    assert ra.fingerprint == rb.fingerprint
    assert ra.summary() == rb.summary()
    assert list(a.history) == list(b.history)


def test_different_seeds_differ():
    assert run(1, steps=200).fingerprint != run(2, steps=200).fingerprint


# 3 nodes over 0-299: the seed budget of tests/test_mutants.py (SEEDS).
@pytest.mark.parametrize("nodes,seeds", [(3, range(0, 300)), (5, range(0, 100))])
def test_seed_range_safe_and_live(nodes, seeds):
    seen = {k: 0 for k in FAULT_KINDS}
    reached = {k: 0 for k in COVERAGE_KINDS}
    for seed in seeds:
        res = run(seed, nodes=nodes, steps=300)
        _check(res)
        for k, v in res.faults.items():
            seen[k] += v
        for k, v in res.coverage.items():
            reached[k] += v
    # Every fault kind was actually injected somewhere in the range.
    assert all(v > 0 for v in seen.values()), seen
    # ... and the generator reached every state the deep bug classes need
    # (a response across a term change, a truncated write in flight and a
    # leader elected after one, a crash between Ready and advance, ...).
    assert all(v > 0 for v in reached.values()), reached
    print(f"\ncoverage over {nodes} nodes, seeds {seeds.start}-{seeds.stop - 1}: {reached}")


def test_swarm_knobs_leave_older_draws_alone():
    """The swarm knobs come from their own PRNGs: every older knob keeps the value
    the seed gave it, and a run with the swarm knobs off never touches the swarm
    stream, so it is the run the seed gave before they existed."""
    swarm_seen = 0
    for seed in range(40):
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=100))
        f = sim.faults
        old = FaultProfile.draw(random.Random(seed))
        for k in ("drop", "duplicate", "max_delay", "partition_rate", "crash_rate", "skew",
                  "max_disk_delay", "link_flap", "target_leader", "max_outage", "max_msg_bytes"):
            assert getattr(f, k) == getattr(old, k), (seed, k)
        swarm_seen += 1 if (f.long_delay or f.disk_stall or f.crash_in_flight or f.sick_leader) else 0
        off = replace(f, long_delay=0.0, disk_stall=0.0, crash_in_flight=0.0, sick_leader=0.0)
        quiet = Simulation(SimConfig(seed=seed, nodes=3, steps=100, faults=off))
        quiet.run()
        assert quiet.swarm_rng.getstate() == random.Random(f"swarm-run/{seed}").getstate(), seed
        assert quiet.result.coverage["long_delay"] == quiet.result.coverage["disk_stall"] == 0
    assert 10 < swarm_seen < 40, swarm_seen     # each seed draws which knobs are on


def test_snapshots_catch_up_far_behind_followers_and_their_traces_validate():
    """§7 in the simulator: nodes compact their logs (the policy is drawn from
    the seed), so a node partitioned or crashed long enough can only be caught up
    by InstallSnapshot. Each run's trace (installs included) is validated against
    the spec, and every installed or restored snapshot must be the state of the
    committed prefix it claims (the simulator's state machine is a hash chain)."""
    installs = runs_with_install = taken = 0
    for seed in range(0, 60):
        res = run(seed, nodes=3, steps=300)
        _check(res)
        assert res.trace_events > 0
        taken += res.snapshots_taken
        installs += res.snapshots_installed
        runs_with_install += 1 if res.snapshots_installed else 0
    assert taken > 0 and installs > 0 and runs_with_install >= 5, (taken, installs, runs_with_install)


def test_snapshot_run_is_reproducible():
    seed = next(s for s in range(100) if run(s, nodes=3, steps=300, check_trace=False).snapshots_installed)
    a, b = run(seed, nodes=3, steps=300), run(seed, nodes=3, steps=300)
    assert a.snapshots_installed > 0 and a.fingerprint == b.fingerprint


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5, 7])
def test_many_seeds(nodes):
    for seed in range(1000, 2000):
        _check(run(seed, nodes=nodes))


# The CLI runs from a temporary directory so that the installed package (with its
# compiled core) is imported, not the source tree.

def test_cli_summary_and_exit_status(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raft.cli", "sim", "--seed", "3", "--nodes", "3",
                          "--steps", "200"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[0])
    assert summary["seed"] == 3 and summary["violations"] == [] and summary["liveness"] == "ok"
    assert summary["commits"] > 0 and summary["leader_terms"] > 0


def test_cli_rejects_bad_arguments(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raft.cli", "sim", "--seeds", "9-2"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "bad seed range" in out.stderr


# -- membership changes (SimConfig.membership, raft sim --membership) -------------------

def test_membership_seed_range_safe_and_live():
    """Learners added and promoted, voters added and removed, leaders removed, crashed
    voters replaced, leadership transferred -- while the faults run. Every run keeps
    the invariants, converges after healing, and its trace (configuration entries,
    TimeoutNow, the removed leader's step-down included) is checked against the spec."""
    from raft.testing.sim.config import MEMBERSHIP_KINDS

    totals = {k: 0 for k in MEMBERSHIP_KINDS}
    for seed in range(0, 100):
        res = run(seed, nodes=3, steps=300, membership=True)
        _check(res)
        assert res.trace_events > 0
        for k, v in res.membership.items():
            totals[k] += v
    # The range reaches every kind of change (replacements need a crashed voter at
    # the moment the operator looks, the rarest).
    for k in ("changes", "committed", "learners_added", "promotions", "voters_added", "removals",
              "removed_leaders", "transfers", "transfers_done", "retired", "replacements"):
        assert totals[k] > 0, (k, totals)
    print(f"\nmembership over seeds 0-99: {totals}")


def test_membership_off_leaves_runs_alone():
    """The membership knobs come from their own PRNG streams: a run without them
    never touches those streams, and a membership run whose drawn rate is 0 is the
    very run the seed gives without membership (byte-identical event log)."""
    zero = 0
    for seed in range(0, 30):
        plain = Simulation(SimConfig(seed=seed, nodes=3, steps=150))
        plain.run()
        assert plain.member_rng.getstate() == random.Random(f"membership-run/{seed}").getstate()
        assert plain.result.membership == {}
        mem = Simulation(SimConfig(seed=seed, nodes=3, steps=150, membership=True))
        if mem.faults.membership == 0.0:
            zero += 1
            assert mem.run().fingerprint == plain.result.fingerprint, seed
    assert zero > 0


def test_membership_run_is_reproducible():
    a, b = run(0, nodes=3, steps=300, membership=True), run(0, nodes=3, steps=300, membership=True)
    assert a.membership["committed"] > 0 and a.fingerprint == b.fingerprint


def test_cli_membership_totals(capsys):
    # In-process (the subprocess tests above run the installed package's CLI).
    from raft.cli.main import main

    assert main(["sim", "--seeds", "0-3", "--nodes", "3", "--steps", "200", "--membership",
                 "--jobs", "1", "--quiet"]) == 0
    total = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert total["failed"] == 0 and total["membership_totals"]["changes"] > 0
    assert "runs_with_committed_change" in total
