"""The simulated client: proposals (retried until applied) and ReadIndex reads.

A mixin of ``Simulation`` (raft/testing/sim/simulation.py): the methods use its state.
"""
from __future__ import annotations

from raft._core import LEADER, NotLeader, ProposalDropped


class Client:
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
        except ProposalDropped:
            return                  # a leadership transfer is under way: retried later
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
        self.reads[self.next_read] = self.commit_max
        self.log(f"read {self.next_read} at n{n.id} (committed so far {self.commit_max})")

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
