"""A deterministic, seeded simulator for the Raft core.

One seed drives everything (the TigerBeetle VOPR / FoundationDB approach): the
fault profile of the run (which faults, how often), every random choice of the
network, the disks, the clocks and the client, and each node's election PRNG.
The same seed gives a byte-identical event log (``Simulation.fingerprint``).

A run has two phases:
1. safety: faults are injected (message drop, duplication, delay/reordering,
   symmetric and asymmetric partitions, crash/restart -- a write in flight is
   torn and lost whole, as DiskStorage's atomic batches make it --, clock skew,
   slow disks; and, switched on per seed by swarm testing, messages held across
   elections, disk stalls, crashes between a Ready and its advance, and a "sick
   leader" whose disk stalls as its outgoing links fail: docs/testing.md)
   while a client proposes; invariants are checked after every event. With
   SimConfig.membership (``raft sim --membership``) an operator also changes the
   membership as it goes: learners added and promoted, voters added and removed,
   the leader removed, crashed voters replaced by fresh nodes, leadership
   transferred (``membership.py``).
   Coverage counters (SimResult.coverage) count how often the run reached the
   states deep bugs need (a stale response, an in-flight write truncated, ...).
2. liveness: every fault is healed and every node restarted; a leader must be
   elected and every proposal committed and applied everywhere within a bounded
   number of ticks.

Invariants checked after every event (``invariants.py``; tests/test_sim.py and the planted
bugs in tests/mutants/ show each can fail):
- ElectionSafety (§5.2): at most one leader per term, over the whole run.
- LogMatching (§5.3): entries with the same (index, term) are the same entry
  with the same predecessor term -- by induction, logs agreeing on an entry
  agree on the whole prefix. Checked on every entry handed to storage, plus a
  full pairwise comparison at the end of each phase.
- LeaderCompleteness (§5.4): a new leader's log holds every committed entry.
- StateMachineSafety (§5.4.3): every node applies the same entry at each index,
  in order (checked against a global record of what was applied). A node's
  state machine is a hash chain over what it applied; a snapshot (§7) carries
  (index, hash), so a snapshot installed from a leader or restored from disk
  must equal the global record's hash of that prefix.
- CommittedDurable: an entry the leader counts as committed is on the durable
  storage of a majority.
- ReadLinearizability: a ReadIndex read (diss. §6.4) confirmed at index i began
  after at most i entries were committed anywhere (no stale reads).
"""
from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque

from raft._core import LEADER, InvariantViolation, Ready, RemoteProtocolError, Snapshot
from raft.testing.sim.node import SimNode
from raft.testing.sim.network import Network
from raft.testing.sim.disk import Disk
from raft.testing.sim.invariants import Invariants
from raft.testing.sim.client import Client
from raft.testing.sim.membership import Membership
from raft.testing.sim.config import (
    COVERAGE_KINDS,
    FAULT_KINDS,
    FaultProfile,
    SimConfig,
    SimResult,
    TICK,
    Violation,
    _CRASH,
    _DELIVER,
    _HEAL,
    _PARTITION,
    _PERSISTED,
    _RESPONSES,
    _RESTART,
    _RETIRE,
    _TICK,
)


class Simulation(Network, Disk, Invariants, Client, Membership):
    """The scheduler: one queue of timed events, the nodes' Ready loops (the shape of
    docs/ready-loop.md) and the run's two phases. Network, disks, client and the
    invariants are mixins in their own modules."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.faults = cfg.faults if cfg.faults is not None else FaultProfile.draw(self.rng)
        self.ids = list(range(1, cfg.nodes + 1))
        self.quorum = cfg.nodes // 2 + 1
        self.now = 0
        self.seq = 0
        self.queue: list = []
        self.result = SimResult(cfg.seed, cfg.nodes, cfg.steps,
                                faults={k: 0 for k in FAULT_KINDS},
                                coverage={k: 0 for k in COVERAGE_KINDS})
        # Per-event choices of the swarm knobs come from their own stream: a run
        # with every swarm knob off draws exactly what it drew before they existed.
        self.swarm_rng = random.Random(f"swarm-run/{cfg.seed}")
        if cfg.faults is None:
            # A second stream for choices added later, so older seeds keep drawing
            # everything else exactly as before.
            extra = random.Random(f"snapshot/{cfg.seed}")
            self.faults.snapshot_every = extra.choice((0, 6, 20, 60))
            self.faults.snapshot_keep = extra.choice((0, 0, 3, 10))
            self.faults.pre_vote = extra.random() < 0.5
            self.faults.check_quorum = extra.random() < 0.5
            self.faults.pump = random.Random(f"pump/{cfg.seed}").random() < 0.5
            self._draw_swarm(random.Random(f"swarm/{cfg.seed}"))
        if cfg.pump is not None:
            self.faults.pump = cfg.pump
        if cfg.pre_vote is not None:
            self.faults.pre_vote = cfg.pre_vote
        if cfg.check_quorum is not None:
            self.faults.check_quorum = cfg.check_quorum
        self.blocked: set[tuple[int, int]] = set()   # directed links src->dst that drop everything
        self.flapped: set[tuple[int, int]] = set()   # links down by link_flap (part of blocked)
        self.partitioned = False
        self.faulty = True
        # Global records for the invariants.
        self.leaders: dict[int, int] = {}             # term -> leader id (ElectionSafety)
        self.registry: dict[tuple[int, int], tuple] = {}  # (index, term) -> (type, data, prev_term)
        self.committed: list[tuple[int, bytes]] = []  # index-1 -> (term, data) as applied
        self.prefix_hash: list[bytes] = []            # index-1 -> state machine hash after it
        # index -> term, as leaders committed (a dict: a leader whose log starts after a
        # snapshot cannot tell the terms below it, and a leader that commits its own
        # removal steps down before the next check, so the record may have gaps).
        self.commit_terms: dict[int, int] = {}
        self.commit_max = 0                           # the highest index a leader committed
        # Client: payloads proposed and not yet seen applied, with when to retry.
        self.next_payload = 0
        self.outstanding: dict[bytes, int] = {}
        self.done: set[bytes] = set()
        self.next_read = 0
        self.reads: dict[int, int] = {}               # read ctx -> committed entries when it began
        # A client gives a proposal this long to be applied before proposing it again.
        self.retry_after = 20 * cfg.election_tick * TICK
        self.leader_hint = 0
        self.history: deque[str] = deque(maxlen=cfg.history)
        self._init_membership(cfg)
        # One ordered trace of every node's core events, checked against the spec.
        self.trace: list | None = [] if cfg.check_trace else None
        self._hash = hashlib.blake2b(digest_size=16)
        skew = self.faults.skew
        periods = [max(1, round(TICK * (1 + self.rng.uniform(-skew, skew)))) for _ in self.ids]
        if skew:
            self.result.faults["clock_skew"] = 1
        self.initial_periods = periods
        self.nodes = {i: SimNode(self, i, p) for i, p in zip(self.ids, periods)}
        for n in self.nodes.values():
            self._push(self.rng.randint(1, n.period), _TICK, (n.id, n.incarnation))
        self._push(TICK, _PARTITION, None)

    def _draw_swarm(self, rng: random.Random) -> None:
        """Swarm testing (Groce et al., ISSTA 2012): each seed switches each rare,
        long-lasting fault on or off and draws its intensity, so some runs have
        many of one kind and none of the others. These reach what short faults
        almost never do: a response that arrives after its receiver moved to a
        later term (a delay longer than an election), and a write still in flight
        when the node's log is truncated by a new leader, or when it crashes."""
        on = lambda p: rng.random() < p  # noqa: E731
        f = self.faults
        f.long_delay = rng.uniform(0.005, 0.05) if on(0.5) else 0.0
        f.disk_stall = rng.uniform(0.01, 0.1) if on(0.4) else 0.0
        f.crash_in_flight = rng.uniform(0.01, 0.1) if on(0.4) else 0.0
        f.sick_leader = rng.uniform(0.01, 0.1) if on(0.4) else 0.0

    @property
    def _election_span(self) -> int:
        """One election timeout, in time units (its lower bound)."""
        return self.cfg.election_tick * TICK

    # -- event plumbing --

    def _push(self, at: int, kind: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, payload))

    def log(self, text: str) -> None:
        line = f"{self.now} {text}"
        self.history.append(line)
        self._hash.update(line.encode())
        self._hash.update(b"\n")

    @property
    def fingerprint(self) -> str:
        return self._hash.hexdigest()

    # -- network --

    def drain(self, n: SimNode) -> None:
        """Run the node's Ready loop until it has nothing more to do right now."""
        core = n.core
        rounds = 0
        while core is not None and n.pending is None and core.has_ready():
            rounds += 1
            if rounds > 1000:
                # With nothing new coming in, a node must run out of work: a core
                # that keeps producing Readys is spinning (a livelock).
                raise Violation("Quiescence", f"node {n.id} produced 1000 Readys in a row: "
                                f"last {core.ready()!r}")
            rd = core.ready()
            self._check_new_entries(n, rd)
            for m in rd.messages:       # leader's appends: may precede its own fsync
                self.send(m)
            n.early = self.faults.pump and rd.snapshot is None
            if n.early:                 # as the node does: before the write
                self._apply_and_read(n, rd.committed_entries, rd.read_states)
            if rd.must_sync:
                n.pending = rd
                n.pending_truncated = False
                delay = self.rng.randint(0, self.faults.max_disk_delay) if self.faults.max_disk_delay else 0
                delay = self._swarm_disk(n, delay)
                if delay:
                    self.result.faults["slow_disk"] += 1
                    self._push(self.now + delay, _PERSISTED, (n.id, n.incarnation))
                    return
                self._complete_persist(n)
            else:
                self._finish_ready(n, rd)

    def _finish_ready(self, n: SimNode, rd: Ready) -> None:
        for m in rd.messages_after_persist:
            self.send(m)
        if rd.snapshot is not None:
            n.sm_index = rd.snapshot.index
            n.sm_hash = self.check_snapshot(n, rd.snapshot)
            n.chain.clear()
            self.result.snapshots_installed += 1
            self.log(f"n{n.id} installed snapshot {rd.snapshot.index}")
        if not n.early:
            self._apply_and_read(n, rd.committed_entries, rd.read_states)
        n.early = False
        n.core.advance(rd)
        self._check_leader_commit(n)
        self._maybe_compact(n)

    def _apply_and_read(self, n: SimNode, entries: list, read_states: list) -> None:
        for e in entries:
            self._apply(n, e)
        for ctx, index in read_states:
            self._check_read(n, ctx, index)

    def pump(self, n: SimNode) -> None:
        """While n's write is in flight: what the node's pump takes from the core."""
        core = n.core
        for m in core.take_messages():
            self.send(m)
        self._apply_and_read(n, core.take_committed(), core.take_read_states())

    # -- snapshots --

    def _maybe_compact(self, n: SimNode) -> None:
        """Compaction policy: snapshot at applied - keep once enough entries follow
        the last snapshot; storage saves the snapshot, then both logs drop the prefix."""
        f = self.faults
        core = n.core
        if not f.snapshot_every or core.applied - core.log.first_index + 1 < f.snapshot_every + f.snapshot_keep:
            return
        # Never beyond the durable commit hint: with the pump, entries are applied
        # before the hard state that commits them is written, and a restart from a
        # snapshot beyond that hint would come back with a commit index the spec
        # never persisted (the node takes its snapshots at ready() time for this).
        index = min(core.applied, n.disk.hard_state.commit) - f.snapshot_keep
        while n.chain and n.chain[0][0] < index:
            n.chain.popleft()
        if not n.chain or n.chain[0][0] != index:
            return
        data = b"%d:" % index + n.chain[0][1]
        snap = Snapshot(index, core.log.term(index), data, core.conf_at(index))
        n.disk.save_snapshot(snap)          # durable first, then drop the entries
        core.compact(index, data)
        n.disk.compact(index)
        self.result.snapshots_taken += 1
        self.log(f"n{n.id} compacted to {index}")

    def _current_leader(self) -> int:
        """The live leader of the highest term, or 0."""
        best, best_term = 0, -1
        for n in self.nodes.values():
            if n.up and n.core.role == LEADER and n.core.term > best_term:
                best, best_term = n.id, n.core.term
        return best

    def _handle(self, kind: int, payload) -> None:
        if kind == _DELIVER:
            m = payload
            n = self.nodes[m.dst]
            if not n.up or (m.src, m.dst) in self.blocked:
                return
            self.log(f"recv {m!r}")
            if m.type in _RESPONSES and m.term < n.core.term:
                self.result.coverage["stale_response"] += 1
            try:
                n.core.step(m)
            except RemoteProtocolError as e:
                # Correct peers never send what the core refuses (e.g. a second
                # leader's AppendEntries in one term): a safety bug somewhere.
                raise Violation("ProtocolViolation", f"node {m.dst} refused {m!r}: {e}") from None
            self._note_truncation(n)
            self._after(n)
        elif kind == _TICK:
            node_id, inc = payload
            n = self.nodes[node_id]
            if not n.up or n.incarnation != inc:
                return
            n.core.tick()
            self._after(n)
            self._push(self.now + n.period, _TICK, payload)
        elif kind == _PERSISTED:
            node_id, inc = payload
            n = self.nodes[node_id]
            if n.up and n.incarnation == inc and n.pending is not None:
                self._complete_persist(n)
                self._after(n)
        elif kind == _RESTART:
            self._restart(self.nodes[payload])
        elif kind == _CRASH:
            # crash_in_flight: only if that write is still in flight.
            node_id, inc = payload
            n = self.nodes[node_id]
            if self.faulty and n.up and n.incarnation == inc and n.pending is not None:
                self._crash(n, self.swarm_rng)
        elif kind == _RETIRE:
            self._retire(payload)
        elif kind == _HEAL:
            self.heal()
            self.log("heal")
        elif kind == _PARTITION:
            # The "world" clock: client and fault decisions once per tick.
            if self.faulty:
                self._maybe_partition()
                self._maybe_flap_links()
                self._maybe_crash()
                self._membership_tick()
            self._client_tick()
            self._push(self.now + TICK, _PARTITION, None)

    def _after(self, n: SimNode) -> None:
        if n.core is None:
            return
        self._check_leader_commit(n)    # before ready(): a leader that committed its own removal steps down there
        self.drain(n)
        if n.core is not None and n.pending is not None and n.early:
            self.pump(n)
        if n.core is not None:
            self._check_role(n)
            self._check_leader_commit(n)

    def run_until(self, end: int, stop=None) -> bool:
        while self.queue and self.queue[0][0] <= end:
            at, _, kind, payload = heapq.heappop(self.queue)
            self.now = at
            self._handle(kind, payload)
            self.result.events += 1
            if stop is not None and kind == _PARTITION and stop():
                return True
        self.now = end
        return False

    def _converged(self) -> bool:
        if self.outstanding:
            return False
        live = [n for n in self.nodes.values() if not n.retired]
        if not all(n.up for n in live):
            return False
        leaders = [n for n in live if n.core.role == LEADER]
        if len(leaders) != 1:
            return False
        core = leaders[0].core
        commit = core.commit
        if commit < len(self.committed) or core.conf_index > commit:
            return False
        # Every member of the (committed) configuration has applied everything; a
        # fresh node whose addition never committed is not a member, and idles.
        members = set(core.voters) | set(core.learners)
        return all(n.core.applied == commit and n.core.commit == commit
                   for n in live if n.id in members)

    def run(self) -> SimResult:
        cfg = self.cfg
        res = self.result
        try:
            self.run_until(cfg.steps * TICK)
            self.check_logs_match()
            # Liveness: heal everything, restart everyone, keep only delays.
            self.faulty = False
            self.heal_all()
            self.log("liveness phase")
            for n in self.nodes.values():
                if not n.retired:
                    self._restart(n)
            start = self.now
            if self.run_until(start + cfg.liveness_ticks * TICK, self._converged):
                res.liveness = "ok"
            else:
                res.liveness = "failed"
                res.violations.append(
                    f"Liveness: not converged within {cfg.liveness_ticks} ticks after healing "
                    f"({len(self.outstanding)} proposals outstanding, "
                    f"nodes: {[n.core.status() if n.up else 'down' for n in self.nodes.values()]})")
            res.liveness_ticks = (self.now - start) // TICK
            self.check_logs_match()
        except Violation as v:
            res.violations.append(str(v))
            res.liveness = "not run" if res.liveness == "not run" else res.liveness
        except (InvariantViolation, AssertionError) as e:
            # The core's own safety check failed (e.g. truncating a committed entry):
            # report it as a violation, not a crash of the tool.
            res.violations.append(f"CoreAssertion: {e}")
        if self.trace is not None:
            self._check_trace()
        res.fingerprint = self.fingerprint
        if res.violations:
            res.history = list(self.history)
        return res


def run(seed: int, nodes: int = 3, steps: int = 600, **kw) -> SimResult:
    """Run one simulation; see SimConfig for the knobs."""
    return Simulation(SimConfig(seed=seed, nodes=nodes, steps=steps, **kw)).run()
