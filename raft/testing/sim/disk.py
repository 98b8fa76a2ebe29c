"""Disks and crashes: persist latency, swarm disk stalls, the sick leader, crashes
(torn writes) and restarts.

A mixin of ``Simulation`` (raft/testing/sim/simulation.py): the methods use its state.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from raft._core import LEADER
from raft.testing.sim.config import TICK, _CRASH, _HEAL, _RESTART, _TICK

if TYPE_CHECKING:
    from raft.testing.sim.node import SimNode


class Disk:
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

    def _restart(self, n: SimNode) -> None:
        if n.up or n.retired:
            return
        n.start()
        self.result.faults["restart"] += 1
        self.log(f"restart n{n.id} {n.core.hard_state!r} last={n.core.last_index}")
        self._push(self.now + self.rng.randint(1, n.period), _TICK, (n.id, n.incarnation))

    def heal_all(self) -> None:
        self.flapped.clear()
        self.heal()

    # -- main loop --
