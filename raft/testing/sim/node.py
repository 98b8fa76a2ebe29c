"""One simulated server: a RawNode, its MemoryStorage, its clock and its incarnation."""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from raft._core import RawNode, Ready
from raft.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from raft.testing.sim.simulation import Simulation


class SimNode:
    """One simulated server: a RawNode (None while crashed) and its durable storage."""

    def __init__(self, sim: "Simulation", node_id: int, period: int, voters=None):
        self.sim = sim
        self.id = node_id
        # The initial configuration: the cluster's for the first nodes, empty for a
        # node that joins later (it learns its configuration from the leader).
        self.voters = tuple(sim.initial_ids) if voters is None else tuple(voters)
        self.retired = False                # removed, and stopped once that was committed
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
            self.id, self.voters, seed=self.sim.rng.getrandbits(64),
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
