"""The simulated network: delivery with drops, duplicates and delays (incl. the swarm's
long delays), partitions and link flaps.

A mixin of ``Simulation`` (raft/testing/sim/simulation.py): the methods use its state.
"""
from __future__ import annotations

from raft._core import Message
from raft.testing.sim.config import TICK, _DELIVER, _HEAL


class Network:
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

    def heal(self) -> None:
        """End the partition (links down by link_flap stay down until they flap back)."""
        self.blocked = set(self.flapped)
        self.partitioned = False
