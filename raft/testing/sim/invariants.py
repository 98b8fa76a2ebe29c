"""The safety invariants (module docstring of raft.testing.sim), checked after every
event, and the trace check against the spec.

A mixin of ``Simulation`` (raft/testing/sim/simulation.py): the methods use its state.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from raft._core import ENTRY_CONF, ENTRY_NORMAL, LEADER, Entry, Ready, Snapshot
from raft.testing.sim.config import Violation

if TYPE_CHECKING:
    from raft.testing.sim.node import SimNode


class Invariants:
    def check_snapshot(self, n: SimNode, snap: Snapshot) -> bytes:
        """StateMachineSafety for a snapshot: it must be the state after exactly the
        committed prefix it claims. Returns the state machine hash it holds."""
        head, _, digest = snap.data.partition(b":")
        if head != b"%d" % snap.index:
            raise Violation("StateMachineSafety", f"node {n.id}: snapshot {snap!r} is for index {head!r}")
        if snap.index > len(self.prefix_hash) or self.prefix_hash[snap.index - 1] != digest:
            raise Violation("StateMachineSafety",
                            f"node {n.id}: snapshot at {snap.index} is not the state of the committed prefix")
        return digest

    # -- invariants --

    def _note_truncation(self, n: SimNode) -> None:
        """Coverage: were entries of n's write in flight just overwritten (a new
        leader's conflicting append truncated them, §5.3)?"""
        rd = n.pending
        if rd is None or n.pending_truncated or not rd.entries:
            return
        last = rd.entries[-1]
        log = n.core.log
        if log.last_index >= last.index and (last.index < log.first_index
                                             or log.term(last.index) == last.term):
            return
        n.pending_truncated = n.truncated_write = True
        self.result.coverage["inflight_truncation"] += 1
        self.log(f"n{n.id} truncated its write in flight ({last.index}, {last.term})")

    def _check_role(self, n: SimNode) -> None:
        core = n.core
        if core.role == n.last_role and core.term == n.last_term:
            return
        n.last_role, n.last_term = core.role, core.term
        self.log(f"n{n.id} {core.role_name} term={core.term}")
        if core.role != LEADER:
            if core.role == 1:
                self.result.elections += 1
            return
        prev = self.leaders.setdefault(core.term, n.id)
        if prev != n.id:
            raise Violation("ElectionSafety", f"term {core.term} has leaders {prev} and {n.id}")
        self.result.leader_terms += 1
        self.leader_hint = n.id
        if self.result.membership:
            self._note_transfer(n)
        if n.pending is not None:
            self.result.coverage["leader_while_writing"] += 1
        if n.truncated_write:
            n.truncated_write = False
            self.result.coverage["leader_after_truncated_write"] += 1
        n.commit_seen = 0
        # LeaderCompleteness: every committed entry is in the new leader's log.
        log = core.log
        known = self.commit_terms
        for idx in range(log.first_index, min(self.commit_max, log.last_index) + 1):
            t = known.get(idx)
            if t is not None and log.term(idx) != t:
                raise Violation("LeaderCompleteness",
                                f"leader {n.id} term {core.term} has term {log.term(idx)} "
                                f"at committed index {idx} (committed term {t})")
        if log.last_index < self.commit_max:
            raise Violation("LeaderCompleteness",
                            f"leader {n.id} log ends at {log.last_index} < committed {self.commit_max}")

    def _check_new_entries(self, n: SimNode, rd: Ready) -> None:
        """LogMatching, incrementally: each (index, term) names one entry and one prefix."""
        if not rd.entries:
            return
        prev_term = n.core.log.term(rd.entries[0].index - 1)
        for e in rd.entries:
            key = (e.index, e.term)
            val = (e.type, e.data, prev_term)
            old = self.registry.setdefault(key, val)
            if old != val:
                raise Violation("LogMatching",
                                f"node {n.id}: entry {key} is {val}, elsewhere {old}")
            prev_term = e.term

    def _apply(self, n: SimNode, e: Entry) -> None:
        expect = n.sm_index + 1
        if e.index != expect:
            raise Violation("StateMachineSafety", f"node {n.id} applied {e.index}, expected {expect}")
        n.sm_index = e.index
        n.sm_hash = hashlib.blake2b(n.sm_hash + b"%d:" % e.term + e.data, digest_size=8).digest()
        if self.faults.snapshot_every:
            n.chain.append((e.index, n.sm_hash))
        if e.index <= len(self.committed):
            if self.committed[e.index - 1] != (e.term, e.data):
                raise Violation("StateMachineSafety",
                                f"node {n.id} applied {(e.term, e.data)} at {e.index}, "
                                f"others applied {self.committed[e.index - 1]}")
        elif e.index == len(self.committed) + 1:
            self.committed.append((e.term, e.data))
            self.prefix_hash.append(n.sm_hash)
            self.result.commits += 1
            if e.type == ENTRY_NORMAL:
                self.outstanding.pop(e.data, None)
                self.done.add(e.data)
            elif e.type == ENTRY_CONF:
                self._conf_committed(e.data)
            if self.pending_adds:
                self._index_committed(e.index, e.term)
        else:
            raise Violation("StateMachineSafety", f"node {n.id} applied {e.index} past the record")

    def _check_leader_commit(self, n: SimNode) -> None:
        """What a leader counts as committed: the same at each index for every
        leader (StateMachineSafety) and durable on a majority (CommittedDurable)."""
        core = n.core
        if core.role != LEADER or core.commit <= n.commit_seen:
            return
        for idx in range(max(n.commit_seen + 1, core.log.first_index), core.commit + 1):
            t = core.log.term(idx)
            old = self.commit_terms.get(idx)
            if old is not None:
                if old != t:
                    raise Violation("StateMachineSafety",
                                    f"leader {n.id} committed term {t} at {idx}, "
                                    f"earlier committed term {old}")
                continue
            # Durable on a majority of the voters the leader counts (its configuration).
            voters = core.voters
            holders = sum(1 for v in voters
                          if (m := self.nodes.get(v)) is not None
                          and m.disk.last_index >= idx
                          and (idx < m.disk.first_index or m.disk.term(idx) == t))
            if 2 * holders <= len(voters):
                raise Violation("CommittedDurable",
                                f"leader {n.id} committed {idx} (term {t}) held durably by {holders} "
                                f"of the voters {list(voters)}")
            self.commit_terms[idx] = t
            if idx > self.commit_max:
                self.commit_max = idx
        n.commit_seen = core.commit

    def check_logs_match(self) -> None:
        """Full pairwise LogMatching over live nodes (end of each phase)."""
        live = [n for n in self.nodes.values() if n.up]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                la, lb = a.core.log, b.core.log
                lo = max(la.first_index, lb.first_index)
                hi = min(la.last_index, lb.last_index)
                for idx in range(hi, lo - 1, -1):
                    if la.term(idx) == lb.term(idx):
                        ea, eb = la.entries(lo, idx + 1), lb.entries(lo, idx + 1)
                        if ea != eb:
                            raise Violation("LogMatching",
                                            f"nodes {a.id},{b.id} agree on ({idx},{la.term(idx)}) but differ before")
                        break

    # -- client --

    def _check_read(self, n: SimNode, ctx: int, index: int) -> None:
        floor = self.reads.pop(ctx, None)
        if floor is None:
            raise Violation("ReadLinearizability", f"node {n.id} confirmed unknown read {ctx}")
        if index < floor:
            raise Violation("ReadLinearizability",
                            f"read {ctx} at node {n.id} has read index {index}, but {floor} "
                            "entries were committed before the read began (stale read)")
        self.result.reads += 1

    def _check_trace(self) -> None:
        from raft.trace_checker import Checker, TraceViolation

        checker = Checker(self.initial_ids)
        try:
            self.result.trace_events = checker.check(self.trace)
        except TraceViolation as v:
            self.result.violations.append(f"TraceCheck: {v.action}: {v.problem}")
            self.result.trace_events = checker.events
            self.trace_violation = v
