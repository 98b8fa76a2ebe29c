"""The simulator's settings and results: fault profile (drawn from the seed), run
configuration, result with coverage counters, and the invariant violation."""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field

from raft.errors import RaftError
from raft._core import MSG_APP_RESP, MSG_SNAP_RESP, MSG_VOTE_RESP


# Virtual time is in integer units; a node ticks every ~TICK units.
TICK = 10

# Event kinds in the queue.
_DELIVER, _TICK, _PERSISTED, _CRASH, _RESTART, _PARTITION, _HEAL, _PROPOSE, _RETIRE = range(9)

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

# Membership counters (SimResult.membership, runs with SimConfig.membership).
MEMBERSHIP_KINDS = (
    "changes",                 # configuration changes the leader accepted (propose_conf_change)
    "committed",               # configuration entries committed
    "learners_added",          # a fresh node added as a learner
    "promotions",              # a learner promoted to voter
    "voters_added",            # a fresh node added as a voter at once
    "removals",                # a follower removed (voter or learner)
    "removed_leaders",         # a leader removed itself (steps down once committed)
    "replacements",            # a crashed voter removed once a fresh voter was added in its place
    "transfers",               # leadership transfers started (TimeoutNow when caught up)
    "transfers_done",          # ... after which the target led a later term
    "refused",                 # changes refused for now (ConfChangeRefused, ...): retried
    "retired",                 # removed nodes stopped once their removal committed
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
    # Membership changes (SimConfig.membership; drawn from a fifth PRNG,
    # "membership/<seed>"): per tick, the probability the operator asks the leader
    # for the next change (add a learner, promote it, add/remove a voter, remove
    # the leader, replace a crashed node, transfer leadership).
    membership: float = 0.0

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
    membership: bool = False        # draw membership changes (FaultProfile.membership) from the seed


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
    membership: dict = field(default_factory=dict)  # MEMBERSHIP_KINDS -> count (membership runs)
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
