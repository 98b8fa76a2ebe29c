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
   while a client proposes; invariants are checked after every event.
   Coverage counters (SimResult.coverage) count how often the run reached the
   states deep bugs need (a stale response, an in-flight write truncated, ...).
2. liveness: every fault is healed and every node restarted; a leader must be
   elected and every proposal committed and applied everywhere within a bounded
   number of ticks.

Invariants checked after every event (see ``tests/invariants/`` for one test each):
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
import json
import random
from collections import deque
from dataclasses import asdict, dataclass, field

from raft.errors import RaftError
from raft._core import (
    ENTRY_NORMAL,
    LEADER,
    MSG_APP_RESP,
    MSG_SNAP_RESP,
    MSG_VOTE_RESP,
    MSG_NAMES,
    Entry,
    InvariantViolation,
    Message,
    NotLeader,
    RawNode,
    Ready,
    RemoteProtocolError,
    Snapshot,
)
from raft.storage.memory import MemoryStorage

# Virtual time is in integer units; a node ticks every ~TICK units.
TICK = 10

# Event kinds in the queue.
_DELIVER, _TICK, _PERSISTED, _CRASH, _RESTART, _PARTITION, _HEAL, _PROPOSE = range(8)

FAULT_KINDS = ("drop", "duplicate", "reorder", "partition", "asymmetric_partition",
               "link_flap", "crash", "restart", "clock_skew", "slow_disk", "torn_write")

# Coverage counters (SimResult.coverage): how often a run reached the states the
# deep bug classes need, so a seed range can be shown to reach them at all.
COVERAGE_KINDS = (
    "stale_response",          # a response delivered after its receiver moved to a later term
    "long_delay",              # a message held past an election timeout
    "inflight_truncation",     # entries of a write in flight overwritten by a conflicting append
    "leader_while_writing",    # leadership won by a node with a write in flight
    "leader_after_truncated_write",  # ... by a node whose in-flight write was truncated earlier
    "crash_in_flight",         # a crash between a Ready and its advance (the persist in flight)
    "disk_stall",              # a write that took longer than an election timeout
)

# Responses: they carry their sender's term at send time (PreVote responses carry
# a prospective term and are not counted).
_RESPONSES = (MSG_APP_RESP, MSG_VOTE_RESP, MSG_SNAP_RESP)


@dataclass
class FaultProfile:
    """Fault rates of one run, drawn from its seed (``FaultProfile.draw``)."""

    drop: float = 0.0              # probability a message is lost
    duplicate: float = 0.0         # probability a message is delivered twice
    max_delay: int = 1             # message delay uniform in [1, max_delay] units (reordering)
    partition_rate: float = 0.0    # per tick, probability a partition starts
    asymmetric: float = 0.0        # probability a partition is one-way
    crash_rate: float = 0.0        # per tick, probability some node crashes
    skew: float = 0.0              # node tick periods in TICK * [1 - skew, 1 + skew]
    link_flap: float = 0.0         # per tick, probability each directed link goes down / comes back
    target_leader: float = 0.0     # probability a partition/crash hits the current leader
    max_outage: int = 40           # partitions heal / crashed nodes restart within this many ticks
    max_disk_delay: int = 0        # persist latency uniform in [0, max_disk_delay] units
    # Not faults but batching/flow-control shapes, also drawn from the seed:
    max_msg_bytes: int = 1 << 20   # 1 = one entry per AppendEntries
    max_inflight: int = 64
    # Log compaction (§7): a node snapshots once this many applied entries follow
    # its last snapshot (0 = never), keeping the last `snapshot_keep` entries in its
    # log. Drawn from a second PRNG derived from the seed (see Simulation), so
    # adding it did not change the runs of older seeds' other choices.
    snapshot_every: int = 0
    snapshot_keep: int = 0
    # PreVote (diss. §9.6) and CheckQuorum (diss. §6.2) on every node; drawn from
    # the same second PRNG.
    pre_vote: bool = False
    check_quorum: bool = False
    # The node's pump (RawNode.take_*, raft/node.py): committed entries and reads
    # handled at ready() time, and messages, reads and commits taken from the core
    # while a Ready's write is in flight. Drawn from a third PRNG.
    pump: bool = False
    # Swarm knobs (drawn from a fourth PRNG, "swarm/<seed>"): rare events that
    # last longer than an election, which the deep bug classes need.
    long_delay: float = 0.0        # probability a message is held for 1-4 election timeouts
    disk_stall: float = 0.0        # probability a write takes 1-3 election timeouts
    crash_in_flight: float = 0.0   # probability a write ends in a crash before it completes
    sick_leader: float = 0.0       # probability a leader's write stalls while it is cut off

    @classmethod
    def draw(cls, rng: random.Random) -> "FaultProfile":
        # Each fault kind is switched on with some probability, so runs vary in
        # which faults combine; rates are kept such that progress stays possible.
        on = lambda p: rng.random() < p  # noqa: E731
        return cls(
            drop=rng.uniform(0.0, 0.15) if on(0.8) else 0.0,
            duplicate=rng.uniform(0.0, 0.1) if on(0.7) else 0.0,
            max_delay=rng.randint(2, 3 * TICK) if on(0.8) else 1,
            # A quarter of the runs are 'storms': the network splits every few ticks.
            partition_rate=(rng.uniform(0.03, 0.1) if on(0.25) else rng.uniform(0.002, 0.02)) if on(0.75) else 0.0,
            asymmetric=rng.uniform(0.2, 0.6),
            crash_rate=(rng.uniform(0.02, 0.05) if on(0.25) else rng.uniform(0.002, 0.015)) if on(0.75) else 0.0,
            skew=rng.uniform(0.05, 0.4) if on(0.7) else 0.0,
            max_disk_delay=rng.randint(1, 2 * TICK) if on(0.7) else 0,
            link_flap=rng.uniform(0.02, 0.2) if on(0.3) else 0.0,
            target_leader=rng.choice((0.0, 0.5, 0.9)),
            max_outage=rng.choice((5, 15, 40)),
            max_msg_bytes=rng.choice((1, 64, 512, 1 << 20)),
            max_inflight=rng.choice((1, 4, 64)),
        )

    def __post_init__(self) -> None:
        # One entry per message AND one message in flight replicates one entry per
        # round trip: legal, but too slow to catch up within the liveness bound.
        if self.max_msg_bytes < 64 and self.max_inflight < 4:
            self.max_inflight = 4


@dataclass
class SimConfig:
    seed: int = 0
    nodes: int = 3
    steps: int = 600                # ticks (of TICK units) in the safety phase
    liveness_ticks: int = 1000      # bound for the liveness phase
    election_tick: int = 10
    heartbeat_tick: int = 2
    propose_rate: float = 0.3       # client proposals per tick
    unsafe_commit_any_term: bool = False   # test-only Figure 8 bug switch
    faults: FaultProfile | None = None     # None: drawn from the seed
    history: int = 40               # events shown around a violation
    check_trace: bool = True        # validate the run's trace against spec/Raft.tla
    pre_vote: bool | None = None    # PreVote on every node; None: drawn from the seed
    check_quorum: bool | None = None  # CheckQuorum on every node; None: drawn from the seed
    pump: bool | None = None        # the node's pump (FaultProfile.pump); None: drawn


@dataclass
class SimResult:
    seed: int
    nodes: int
    steps: int
    events: int = 0
    elections: int = 0
    leader_terms: int = 0
    commits: int = 0
    proposals: int = 0
    reads: int = 0                  # ReadIndex reads confirmed (and checked linearizable)
    snapshots_taken: int = 0        # compactions (§7)
    snapshots_installed: int = 0    # InstallSnapshot completed on a follower
    faults: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)   # COVERAGE_KINDS -> count
    violations: list = field(default_factory=list)
    liveness: str = "not run"
    liveness_ticks: int = 0
    fingerprint: str = ""
    trace_events: int = 0           # events validated against the spec (0: not checked)
    history: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.liveness == "ok"

    def summary(self) -> str:
        d = asdict(self)
        d.pop("history")
        return json.dumps(d, sort_keys=True)


class Violation(RaftError):
    """An invariant failed; carries the invariant's name."""

    def __init__(self, invariant: str, detail: str):
        self.invariant = invariant
        super().__init__(f"{invariant}: {detail}")


class SimNode:
    """One simulated server: a RawNode (None while crashed) and its durable storage."""

    def __init__(self, sim: "Simulation", node_id: int, period: int):
        self.sim = sim
        self.id = node_id
        self.disk = MemoryStorage()
        self.core: RawNode | None = None
        self.pending: Ready | None = None   # a Ready whose persist is in flight
        self.pending_truncated = False      # its entries were overwritten since ready()
        self.truncated_write = False        # an in-flight write of this incarnation was truncated
        self.early = False                  # its commits and reads were handled at ready()
        self.incarnation = 0
        self.period = period
        self.start()

    def start(self) -> None:
        st = self.disk.load()
        self.incarnation += 1
        cfg = self.sim.cfg
        self.core = RawNode(
            self.id, self.sim.ids, seed=self.sim.rng.getrandbits(64),
            election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick,
            max_msg_bytes=self.sim.faults.max_msg_bytes, max_inflight=self.sim.faults.max_inflight,
            hard_state=st.hard_state, entries=st.entries,
            snapshot=st.snapshot,
            msg_id_start=self.incarnation << 40,
            unsafe_commit_any_term=cfg.unsafe_commit_any_term,
            pre_vote=self.sim.faults.pre_vote, check_quorum=self.sim.faults.check_quorum,
            trace=self.sim.trace)
        self.pending = None
        self.pending_truncated = False
        self.truncated_write = False
        self.early = False
        # The state machine: a hash chain over the applied entries, restored from
        # the snapshot on disk. `chain` holds (index, hash) since the snapshot, so
        # a snapshot can be cut at any applied index.
        snap = st.snapshot
        self.sm_index = snap.index if snap else 0
        self.sm_hash = self.sim.check_snapshot(self, snap) if snap else b""
        self.chain: deque = deque()
        self.commit_seen = 0
        self.last_role = self.core.role
        self.last_term = self.core.term

    def crash(self) -> bool:
        """Kill the process. A persist in flight is lost whole: this is a torn last
        write, because DiskStorage applies a save() only if its whole batch is
        intact (raft/storage/segment.py), so what was not synced is lost and
        nothing of it survives. Returns True if a write was torn."""
        torn = self.pending is not None
        self.core = None
        self.pending = None
        self.pending_truncated = False
        return torn

    @property
    def up(self) -> bool:
        return self.core is not None


class Simulation:
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
        self.commit_terms: list[int] = []             # index-1 -> term, as leaders committed
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
        # One ordered trace of every node's core events, checked against the spec.
        self.trace: list | None = [] if cfg.check_trace else None
        self._hash = hashlib.blake2b(digest_size=16)
        skew = self.faults.skew
        periods = [max(1, round(TICK * (1 + self.rng.uniform(-skew, skew)))) for _ in self.ids]
        if skew:
            self.result.faults["clock_skew"] = 1
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

    def send(self, m: Message) -> None:
        f = self.faults
        if (m.src, m.dst) in self.blocked:
            self.log(f"block {m!r}")
            return
        if self.faulty and f.drop and self.rng.random() < f.drop:
            self.result.faults["drop"] += 1
            self.log(f"drop {m!r}")
            return
        copies = 1
        if self.faulty and f.duplicate and self.rng.random() < f.duplicate:
            self.result.faults["duplicate"] += 1
            copies = 2
        for _ in range(copies):
            delay = self.rng.randint(1, f.max_delay)
            if self.faulty and f.long_delay and self.swarm_rng.random() < f.long_delay:
                # Held in some queue across 1-4 election timeouts: a response can
                # then reach a node that has moved to a later term since (§5.1).
                delay += self.swarm_rng.randint(self._election_span, 4 * self._election_span)
                self.result.coverage["long_delay"] += 1
            self._push(self.now + delay, _DELIVER, m)
        if f.max_delay > 1:
            self.result.faults["reorder"] += 1

    # -- node processing --

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

    def _swarm_disk(self, n: SimNode, delay: int) -> int:
        """Swarm knobs on a write: a stall longer than an election (the node keeps
        receiving, so a new leader may truncate what is being written), and a
        crash timed to land before the write completes. Returns the delay."""
        f = self.faults
        if not self.faulty:
            return delay
        if (f.sick_leader and n.core.role == LEADER and n.pending.entries and not self.partitioned
                and self.swarm_rng.random() < f.sick_leader):
            delay += self._isolate_writer(n)
        elif f.disk_stall and self.swarm_rng.random() < f.disk_stall:
            delay += self.swarm_rng.randint(self._election_span, 3 * self._election_span)
            self.result.coverage["disk_stall"] += 1
        if f.crash_in_flight and self.swarm_rng.random() < f.crash_in_flight:
            delay = max(delay, self.swarm_rng.randint(1, 2 * TICK))
            self._push(self.now + self.swarm_rng.randint(0, delay - 1), _CRASH, (n.id, n.incarnation))
        return delay

    def _isolate_writer(self, n: SimNode) -> int:
        """A sick leader: its disk stalls on a write of new entries and, at the same
        moment, what it sends stops arriving (a NIC or a VM host failing one way).
        The others hear nothing, elect a leader without those entries, and that
        leader's first AppendEntries (prev = its last index before the election,
        then its no-op) reaches the old leader while the write is still in flight
        and truncates it (§5.3). Its outgoing links come back later: its answers
        wait for the write anyway. Returns the extra write latency."""
        span = self._election_span
        others = [i for i in self.ids if i != n.id]
        for o in others:
            self.blocked.add((n.id, o))
        self.partitioned = True
        self.result.faults["asymmetric_partition"] += 1
        self.result.coverage["disk_stall"] += 1
        self.log(f"sick leader n{n.id}: disk stalls, n{n.id} -> {others} cut")
        stall = self.swarm_rng.randint(2 * span, 5 * span)
        self._push(self.now + stall + self.swarm_rng.randint(0, 2 * span), _HEAL, None)
        return stall

    def _complete_persist(self, n: SimNode) -> None:
        rd = n.pending
        n.pending = None
        if rd.snapshot is not None:
            n.disk.install_snapshot(rd.snapshot)     # replaces the whole log (§7)
        n.disk.save(rd.hard_state, rd.entries)
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
        snap = Snapshot(index, core.log.term(index), data)
        n.disk.save_snapshot(snap)          # durable first, then drop the entries
        core.compact(index, data)
        n.disk.compact(index)
        self.result.snapshots_taken += 1
        self.log(f"n{n.id} compacted to {index}")

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
        if n.pending is not None:
            self.result.coverage["leader_while_writing"] += 1
        if n.truncated_write:
            n.truncated_write = False
            self.result.coverage["leader_after_truncated_write"] += 1
        n.commit_seen = 0
        # LeaderCompleteness: every committed entry is in the new leader's log.
        log = core.log
        known = self.commit_terms
        for idx in range(log.first_index, min(len(known), log.last_index) + 1):
            if log.term(idx) != known[idx - 1]:
                raise Violation("LeaderCompleteness",
                                f"leader {n.id} term {core.term} has term {log.term(idx)} "
                                f"at committed index {idx} (committed term {known[idx - 1]})")
        if log.last_index < len(known):
            raise Violation("LeaderCompleteness",
                            f"leader {n.id} log ends at {log.last_index} < committed {len(known)}")

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
            if idx <= len(self.commit_terms):
                if self.commit_terms[idx - 1] != t:
                    raise Violation("StateMachineSafety",
                                    f"leader {n.id} committed term {t} at {idx}, "
                                    f"earlier committed term {self.commit_terms[idx - 1]}")
                continue
            holders = sum(1 for m in self.nodes.values()
                          if m.disk.last_index >= idx
                          and (idx < m.disk.first_index or m.disk.term(idx) == t))
            if holders < self.quorum:
                raise Violation("CommittedDurable",
                                f"leader {n.id} committed {idx} (term {t}) held durably by {holders} nodes")
            self.commit_terms.append(t)
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

    def _propose(self, payload: bytes) -> None:
        target = self.leader_hint if self.leader_hint else self.rng.choice(self.ids)
        n = self.nodes[target]
        if not n.up:
            self.leader_hint = 0
            return
        try:
            idx = n.core.propose(payload)
        except NotLeader as e:
            self.leader_hint = e.leader if e.leader else 0
            return
        self.log(f"propose {payload!r} at n{n.id} index {idx}")
        self.result.proposals += 1

    def _read(self) -> None:
        """A linearizable read (ReadIndex) at the node the client thinks leads."""
        # Half the reads go to a random node that believes it leads -- possibly a
        # deposed leader cut off from the rest, as a client with stale routing
        # would reach: exactly the case ReadIndex must get right.
        leaders = [m for m in self.nodes.values() if m.up and m.core.role == LEADER]
        if leaders and self.rng.random() < 0.5:
            n = self.rng.choice(leaders)
        else:
            n = self.nodes.get(self.leader_hint)
        if n is None or not n.up:
            return
        self.next_read += 1
        try:
            n.core.read_index(self.next_read)
        except NotLeader:
            return
        # Linearizability: the read must reflect every write committed before it began.
        self.reads[self.next_read] = len(self.commit_terms)
        self.log(f"read {self.next_read} at n{n.id} (committed so far {len(self.commit_terms)})")

    def _check_read(self, n: SimNode, ctx: int, index: int) -> None:
        floor = self.reads.pop(ctx, None)
        if floor is None:
            raise Violation("ReadLinearizability", f"node {n.id} confirmed unknown read {ctx}")
        if index < floor:
            raise Violation("ReadLinearizability",
                            f"read {ctx} at node {n.id} has read index {index}, but {floor} "
                            "entries were committed before the read began (stale read)")
        self.result.reads += 1

    def _client_tick(self) -> None:
        if self.faulty and self.rng.random() < self.cfg.propose_rate:
            self._read()
        if self.faulty and self.rng.random() < self.cfg.propose_rate:
            self.next_payload += 1
            payload = b"v%d" % self.next_payload
            self.outstanding[payload] = self.now + self.retry_after
            self._propose(payload)
        # Retry proposals not applied in time (the leader may have lost them).
        for payload, due in list(self.outstanding.items()):
            if due <= self.now:
                self.outstanding[payload] = self.now + self.retry_after
                self._propose(payload)

    # -- faults --

    def _maybe_partition(self) -> None:
        f = self.faults
        if self.partitioned or not f.partition_rate or self.rng.random() >= f.partition_rate * len(self.ids):
            return
        ids = list(self.ids)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        leader = self._current_leader()
        if leader and self.rng.random() < f.target_leader:
            # Jepsen-style nemesis: cut the leader off, so it leaves entries on a
            # minority (the raw material of Figure 8).
            ids.remove(leader)
            ids.insert(0, leader)
            cut = 1
        a, b = ids[:cut], ids[cut:]
        one_way = self.rng.random() < f.asymmetric
        for x in a:
            for y in b:
                self.blocked.add((x, y))
                if not one_way:
                    self.blocked.add((y, x))
        kind = "asymmetric_partition" if one_way else "partition"
        self.result.faults[kind] += 1
        self.partitioned = True
        self.log(f"{kind} {sorted(a)} | {sorted(b)}")
        self._push(self.now + self.rng.randint(2, max(2, f.max_outage)) * TICK, _HEAL, None)

    def _maybe_flap_links(self) -> None:
        """Flaky network: each directed link independently fails and recovers."""
        p = self.faults.link_flap
        if not p:
            return
        for a in self.ids:
            for b in self.ids:
                if a != b and self.rng.random() < p:
                    link = (a, b)
                    if link in self.flapped:
                        self.flapped.discard(link)
                        self.blocked.discard(link)
                    elif link not in self.blocked:
                        self.flapped.add(link)
                        self.blocked.add(link)
                        self.result.faults["link_flap"] += 1

    def _maybe_crash(self) -> None:
        f = self.faults
        if not f.crash_rate or self.rng.random() >= f.crash_rate * len(self.ids):
            return
        leader = self._current_leader()
        if leader and self.rng.random() < f.target_leader:
            n = self.nodes[leader]
        else:
            n = self.nodes[self.rng.choice(self.ids)]
        if not n.up:
            return
        self._crash(n, self.rng)

    def _crash(self, n: SimNode, rng: random.Random) -> None:
        if n.crash():
            self.result.faults["torn_write"] += 1
            self.result.coverage["crash_in_flight"] += 1
        self.result.faults["crash"] += 1
        self.log(f"crash n{n.id}")
        self._push(self.now + rng.randint(1, self.faults.max_outage) * TICK, _RESTART, n.id)

    def _current_leader(self) -> int:
        """The live leader of the highest term, or 0."""
        best, best_term = 0, -1
        for n in self.nodes.values():
            if n.up and n.core.role == LEADER and n.core.term > best_term:
                best, best_term = n.id, n.core.term
        return best

    def _restart(self, n: SimNode) -> None:
        if n.up:
            return
        n.start()
        self.result.faults["restart"] += 1
        self.log(f"restart n{n.id} {n.core.hard_state!r} last={n.core.last_index}")
        self._push(self.now + self.rng.randint(1, n.period), _TICK, (n.id, n.incarnation))

    def heal(self) -> None:
        """End the partition (links down by link_flap stay down until they flap back)."""
        self.blocked = set(self.flapped)
        self.partitioned = False

    def heal_all(self) -> None:
        self.flapped.clear()
        self.heal()

    # -- main loop --

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
        elif kind == _HEAL:
            self.heal()
            self.log("heal")
        elif kind == _PARTITION:
            # The "world" clock: client and fault decisions once per tick.
            if self.faulty:
                self._maybe_partition()
                self._maybe_flap_links()
                self._maybe_crash()
            self._client_tick()
            self._push(self.now + TICK, _PARTITION, None)

    def _after(self, n: SimNode) -> None:
        if n.core is None:
            return
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
        live = list(self.nodes.values())
        if not all(n.up for n in live):
            return False
        leaders = [n for n in live if n.core.role == LEADER]
        if len(leaders) != 1:
            return False
        commit = leaders[0].core.commit
        if commit < len(self.committed):
            return False
        return all(n.core.applied == commit and n.core.commit == commit for n in live)

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


    def _check_trace(self) -> None:
        from raft.trace_checker import Checker, TraceViolation

        checker = Checker(self.ids)
        try:
            self.result.trace_events = checker.check(self.trace)
        except TraceViolation as v:
            self.result.violations.append(f"TraceCheck: {v.action}: {v.problem}")
            self.result.trace_events = checker.events
            self.trace_violation = v


def run(seed: int, nodes: int = 3, steps: int = 600, **kw) -> SimResult:
    """Run one simulation; see SimConfig for the knobs."""
    return Simulation(SimConfig(seed=seed, nodes=nodes, steps=steps, **kw)).run()
