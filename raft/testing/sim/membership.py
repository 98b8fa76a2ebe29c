"""Membership changes in the simulator (diss. ch. 4): an operator that, while the
faults run, asks the leader for single-server changes and leadership transfers.

Drawn from the seed, on their own PRNG streams (``membership/<seed>`` for the rate,
``membership-run/<seed>`` for every choice), so a run with membership off draws
exactly what it drew before they existed. Each tick, with probability
``FaultProfile.membership``, the operator takes the next step of its plan or starts
a new one (if there is no leader, as soon as there is one):

- add a learner (a fresh, empty node with a new id, started with
  ``RawNode(id, [])``), then promote it to voter;
- add a fresh node as a voter at once;
- remove a follower (voter or learner);
- remove the leader (it keeps leading until the change commits, then hands over
  with TimeoutNow and steps down, diss. §4.2.2);
- replace a crashed voter: add a fresh node as a voter, then remove the crashed one;
- transfer leadership to a voter (diss. §3.10).

A change the leader refuses for now (another change uncommitted, no entry of its
term committed yet, a transfer under way: ConfChangeRefused, ProposalDropped) stays
at the head of the plan and is retried. A node whose removal is committed is
stopped one election timeout later (time for a removed leader to hand over) and
never restarted: nothing is delivered to it any more. A fresh node whose addition
never commits stays up, idle: no leader replicates to it.

A mixin of ``Simulation`` (raft/testing/sim/simulation.py): the methods use its state.
"""
from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from raft._core import (
    CONF_ADD_LEARNER, CONF_ADD_VOTER, CONF_REMOVE, LEADER, ConfChangeRefused, LocalProtocolError,
    NotLeader, decode_conf,
)
from raft.testing.sim.config import MEMBERSHIP_KINDS, _RETIRE, _TICK

if TYPE_CHECKING:
    from raft.testing.sim.node import SimNode

# Plans: the operator's next steps, each (op, node) with node 0 = "a fresh node".
_ACTIONS = ("learner", "voter", "remove_follower", "remove_leader", "replace", "transfer")
_WEIGHTS = (3, 1, 2, 1, 2, 2)


class Membership:
    def _init_membership(self, cfg) -> None:
        self.initial_ids = list(self.ids)
        self.member_rng = random.Random(f"membership-run/{cfg.seed}")
        self.next_id = len(self.ids) + 1
        self.plan: deque = deque()
        self.op_wanted = False                # an operator step waits for a leader
        self.transfer_target = (0, 0)       # (target, term of the leader that asked)
        self.committed_conf = (tuple(self.ids), ())
        self.pending_adds: dict[int, tuple[int, int]] = {}   # index -> (fresh node, term)
        if cfg.membership:
            self.result.membership = {k: 0 for k in MEMBERSHIP_KINDS}
            if cfg.faults is None:
                rng = random.Random(f"membership/{cfg.seed}")
                self.faults.membership = rng.uniform(0.02, 0.1) if rng.random() < 0.9 else 0.0
            elif not self.faults.membership:
                self.faults.membership = 0.03

    def _count(self, kind: str) -> None:
        self.result.membership[kind] += 1

    # -- the operator --

    def _membership_tick(self) -> None:
        f = self.faults
        if not f.membership:
            return
        if not self.op_wanted:
            if self.member_rng.random() >= f.membership:
                return
            self.op_wanted = True             # the operator wants to act: at the next leader
        leader = self._current_leader()
        if not leader:
            return
        self.op_wanted = False
        n = self.nodes[leader]
        if not self.plan:
            self._new_plan(n)
        if self.plan:
            self._next_step(n)

    def _new_plan(self, n: SimNode) -> None:
        r = self.member_rng
        core = n.core
        voters, learners = tuple(core.voters), tuple(core.learners)
        # Keep the cluster about its size, and at 3 voters at least if it started with 3
        # (two voters tolerate no fault; they also exposed a PreVote deadlock, since
        # fixed in the core: docs/testing.md).
        lo = max(min(self.cfg.nodes, 3), self.cfg.nodes - 1)
        hi = self.cfg.nodes + 2
        fresh_ok = self.next_id <= 3 * self.cfg.nodes + 6   # bound the nodes a run creates
        action = r.choices(_ACTIONS, _WEIGHTS)[0]
        followers = [v for v in voters if v != n.id]
        if action == "learner" and fresh_ok and len(voters) < hi and len(learners) < 2:
            self.plan.extend([("learner", 0), ("promote", -1)])
        elif action == "voter" and fresh_ok and len(voters) < hi:
            self.plan.append(("voter", 0))
        elif action == "remove_follower" and (learners or (followers and len(voters) > lo)):
            pool = list(learners) + (followers if len(voters) > lo else [])
            self.plan.append(("remove", r.choice(pool)))
        elif action == "remove_leader" and len(voters) > lo and n.id in voters:
            self.plan.append(("remove_leader", n.id))
        elif action == "replace" and fresh_ok:
            down = [v for v in followers if not self.nodes[v].up]
            if down and len(voters) < hi:
                # The fresh node first, then the crashed one out: never fewer voters.
                self.plan.extend([("voter", 0), ("replace", r.choice(down))])
        elif action == "transfer" and followers:
            self.plan.append(("transfer", r.choice(followers)))

    def _next_step(self, n: SimNode) -> None:
        core = n.core
        op, node = self.plan[0]
        if op == "transfer":
            self.plan.popleft()
            if node not in core.voters:
                return
            try:
                core.transfer_leadership(node)
            except (NotLeader, LocalProtocolError):
                return
            self._count("transfers")
            self.transfer_target = (node, core.term)
            self.log(f"n{n.id} transfers leadership to n{node}")
            self._after(n)
            return
        if node == 0:
            node = self._fresh_node()
            self.plan[0] = (op, node)
        elif node == -1:                      # promote the learner the step before added
            node = self.last_added
            self.plan[0] = (op, node)
        conf_op = {"learner": CONF_ADD_LEARNER, "voter": CONF_ADD_VOTER, "promote": CONF_ADD_VOTER,
                   "remove": CONF_REMOVE, "remove_leader": CONF_REMOVE, "replace": CONF_REMOVE}[op]
        if op in ("remove", "remove_leader", "replace", "promote"):
            members = tuple(core.voters) + tuple(core.learners)
            if node not in members or (op == "promote" and node not in core.learners) \
                    or (op == "remove_leader" and node != n.id):
                self.plan.popleft()           # the world moved on: drop this step
                if op == "promote":
                    self.plan.clear()
                return
        try:
            index = core.propose_conf_change(conf_op, node)
        except (ConfChangeRefused, LocalProtocolError, NotLeader):
            self._count("refused")
            return                            # retried at a later tick (maybe another leader)
        self.plan.popleft()
        if op in ("learner", "voter"):
            self.pending_adds[index] = (node, core.term)
        self._count("changes")
        self._count({"learner": "learners_added", "voter": "voters_added", "promote": "promotions",
                     "remove": "removals", "remove_leader": "removed_leaders",
                     "replace": "replacements"}[op])
        self.log(f"n{n.id} proposes conf change {op} n{node} at {index}: "
                 f"voters={list(core.voters)} learners={list(core.learners)}")
        self._after(n)

    def _fresh_node(self) -> int:
        """Start an empty node with a new id, outside any configuration."""
        from raft.testing.sim.node import SimNode

        node_id = self.next_id
        self.next_id += 1
        self.last_added = node_id
        period = self.initial_periods[(node_id - 1) % len(self.initial_periods)]
        n = SimNode(self, node_id, period, voters=())
        self.nodes[node_id] = n
        self.ids.append(node_id)
        self._push(self.now + self.member_rng.randint(1, period), _TICK, (node_id, n.incarnation))
        self.log(f"start fresh n{node_id}")
        return node_id

    # -- committed configurations --

    def _conf_committed(self, data: bytes) -> None:
        """A configuration entry was committed (first applied anywhere): stop the
        nodes it removes, one election timeout later."""
        voters, learners, _ = decode_conf(data)
        self._count("committed")
        old = set(self.committed_conf[0]) | set(self.committed_conf[1])
        self.committed_conf = (tuple(voters), tuple(learners))
        for gone in sorted(old - set(voters) - set(learners)):
            self._push(self.now + self._election_span, _RETIRE, gone)

    def _index_committed(self, index: int, term: int) -> None:
        """Index ``index`` was committed with an entry of ``term``: if a fresh node's
        addition was proposed there and lost (truncated), the operator gives up on
        that node and stops it. Left running, it could hold the entry adding it (it
        never hears from a leader, which replicates to members only) and campaign
        forever, disrupting the cluster with higher terms (diss. §4.2.3)."""
        added = self.pending_adds.pop(index, None)
        if added is not None and added[1] != term:
            self.log(f"addition of n{added[0]} at {index} was lost")
            self._push(self.now, _RETIRE, added[0])

    def _retire(self, node_id: int) -> None:
        n = self.nodes[node_id]
        if (n.retired or node_id in self.committed_conf[0] or node_id in self.committed_conf[1]
                or node_id in (a[0] for a in self.pending_adds.values())):
            return
        n.crash()
        n.retired = True
        if node_id in self.ids:
            self.ids.remove(node_id)
        self.blocked = {link for link in self.blocked if node_id not in link}
        self.flapped = {link for link in self.flapped if node_id not in link}
        self._count("retired")
        self.log(f"retire n{node_id}")

    def _note_transfer(self, n: SimNode) -> None:
        """n just became leader: was it the target of a transfer?"""
        target, term = self.transfer_target
        if target == n.id and n.core.term > term and n.core.role == LEADER:
            self._count("transfers_done")
            self.transfer_target = (0, 0)
