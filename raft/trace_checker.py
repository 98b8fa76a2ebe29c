"""Trace checker: replays a trace of the core against spec/Raft.tla.

It lives in the runtime, next to the trace schema (raft/trace.py), because the
runtime uses it: the simulator checks every run with it, and ``raft check`` and
``raft bench`` replay node traces through it. spec/ keeps the TLA+ side (the
models, TLC, and tla_trace.py, the TLC counterpart of this checker);
``spec.checker`` re-exports this module. Nothing under raft/ imports spec.

The checker holds the spec's abstract state (per server: currentTerm, votedFor,
log, commitIndex, role, votesGranted, matchIndex, the outbox of
messages-after-persist, and the durable copies; plus the network and the
history variables `elections` and `committed`). Each trace event is mapped to
one or more spec actions; the checker verifies each action is enabled in the
current state, applies it, and compares the state the node reports with the
spec's. Every invariant of the spec is checked after every step, incrementally.

Event -> spec action (spec/README.md has the full schema):

  restart n ...           Restart(n)            (first appearance: Init)
  timeout n term          Timeout(n)
  leader n term           BecomeLeader(n)       (appends the no-op)
  stepdown n term         StepDown(n)           (CheckQuorum, diss. §6.2: the leader of
                          `term` becomes follower; term, vote and log unchanged)
  propose n entries       ClientRequest(n, v) per entry
  recv n m                [UpdateTerm(n, m)] then HandleRequestVote /
                          HandleRequestVoteResponse / HandleAppendEntries /
                          HandleAppendEntriesResponse (or a stuttering step
                          for messages the spec ignores: rejections to a
                          leader, stale responses)
  send n m after=False    AppendEntries(n, m.dst, m.index, len(m.entries))
  send n m after=True     a reply the handler (or Timeout) put in the outbox:
                          must equal one of the spec's, each reported once
  commit n c              AdvanceCommitIndex(n) to c
  send n m(InstallSnapshot) AppendEntries(n, m.dst, 0, m.index): every chunk is a copy
                          of the AppendEntries from prevLogIndex 0 that carries the
                          committed prefix up to the snapshot's last index (§7)
  recv n m(InstallSnapshot) [UpdateTerm(n, m)]; then, if the node reports `install`,
                          HandleAppendEntries(n, that AppendEntries); otherwise the
                          chunk is dropped (DropMessage): a partial transfer changes
                          no spec state
  install n m installed   (see recv InstallSnapshot)
  compact n index term    no step: the spec's log keeps the compacted entries (they
                          are committed, so still "present"); checks index <= commit
  send/recv InstallSnapshotResp  no step (transport-level chunk acks)
  send/recv PreVote, PreVoteResp no step: a pre-vote round changes no spec
                          variable (no term, no vote; diss. §9.6); a granted round
                          is followed by `timeout` (Timeout(n))
  ready n seq [hint]      Persist(n), writing the commit hint `hint` (the current
                          commit index or the one already durable; traces without
                          it wrote the current one) -- if the trace later has
                          `advance n seq` before n restarts; otherwise the Ready
                          was lost in a crash and there is no step (see below)
  advance n seq           (no step)
  state n ...             no step: the node's reported state must equal the spec's

Membership (diss. ch. 4; spec/README.md "Membership changes in the trace"):

  propose n [ENTRY_CONF]  ProposeConfigChange(n, j, r): MayChangeConfig (one change at a
                          time, the no-op rule); the entry changes ONE server's role
  conf n idx V L          no step: the configuration the node uses; compared with the
                          spec's Config(log) at n's next `state`
  send n TimeoutNow       no step (leader transfer / a removed leader handing over): the
                          sender leads m.term, the target is one of its voters
  recv n TimeoutNow       [UpdateTerm]; the voter follower's campaign is its `timeout` event
  commit n c              AdvanceCommitIndex over the voters of n's configuration; if it
                          commits n's own removal (RemovedOnCommit), `stepdown` must follow
                          before n's next `ready` (the core splits that step in two)
  Quorums (BecomeLeader, AdvanceCommitIndex, CommittedEntriesDurable) are majorities of the
  voters of the counting server's own configuration; Timeout needs n to be one of them.

Why Persist maps to `ready`: the core snapshots everything unpersisted into the
Ready at ready() time; the runtime writes exactly that snapshot and only then
sends its messages_after_persist. Steps taken between ready() and the write
change only memory, which the next Ready persists. So a run in which the write
completes is the spec run with Persist at the ready() point (the messages reach
the network later: a delay). A run that crashes before the write completes is
the spec run without that Persist.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

from raft.errors import RaftError
from raft.trace import MSG_NAMES

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
ROLE = ("Follower", "Candidate", "Leader")
MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP, MSG_SNAP_RESP = 1, 2, 3, 4, 5, 6
MSG_PREVOTE, MSG_PREVOTE_RESP = 7, 8
MSG_TIMEOUT_NOW = 9
ENTRY_CONF = 2           # a configuration entry: its data is the whole configuration (encode_conf)
MSG_NAME = MSG_NAMES        # the one message-name table (raft/trace.py)
# Messages that are not Raft state: sent at once, received with no spec step.
NO_STEP_MSGS = (MSG_SNAP_RESP, MSG_PREVOTE, MSG_PREVOTE_RESP)
NOOP = (1, b"")          # (type, data) of the no-op entry a new leader appends


class TraceViolation(RaftError):
    """The trace is not a behaviour of the spec, or breaks an invariant."""

    def __init__(self, index: int, action: str, problem: str, expected=None, actual=None,
                 history: list | None = None):
        self.index = index
        self.action = action
        self.problem = problem
        self.expected = expected
        self.actual = actual
        self.history = history or []
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"event {self.index}: {self.action}: {self.problem}"]
        if self.expected is not None or self.actual is not None:
            lines.append(f"  expected: {self.expected}")
            lines.append(f"  actual:   {self.actual}")
        if self.history:
            lines.append("  events leading there:")
            lines.extend(f"    {h}" for h in self.history)
        return "\n".join(lines)


@dataclass
class Server:
    """The spec's per-server variables."""

    term: int = 0
    vote: int = 0
    log: list = field(default_factory=list)       # [(term, value)]; index i at log[i-1]
    commit: int = 0
    role: int = FOLLOWER
    votes: set = field(default_factory=set)
    match: dict = field(default_factory=dict)
    outbox: list = field(default_factory=list)    # messages after persist, not yet released
    dterm: int = 0
    dvote: int = 0
    dlog: list = field(default_factory=list)
    dcommit: int = 0
    # Not spec variables, kept to make the checks O(change):
    stable: int = 0                               # StableIndex: common prefix of log and dlog
    first: int = 1                                # the core's first log index (after its snapshot)
    chunk: object = None                          # InstallSnapshot chunk being handled (recv..state)
    expect: deque = field(default_factory=deque)  # replies the action being replayed must send
    confs: list = field(default_factory=list)     # indexes of the configuration entries in log
    init: tuple = ((), ())                        # its configuration before any entry (see restart)
    dinit: tuple = ((), ())                       # ... as on disk (a snapshot installed and persisted)
    removing: bool = False                        # a leader that committed its own removal
    reported: tuple = ((), (), 0)                 # the configuration the node last reported (conf)


def _msg_fields(m) -> tuple:
    return (m.type, m.src, m.dst, m.term, m.index, m.log_term, m.reject_hint,
            tuple((e.index, e.term, e.type, e.data) for e in m.entries), m.commit, bool(m.reject))


class Checker:
    """Feed events with `step(event)` (or `check(events)`); raises TraceViolation."""

    def __init__(self, servers: list[int], *, history: int = 8):
        self.ids = sorted(servers)
        self.servers: dict[int, Server] = {}
        self.quorum = len(self.ids) // 2 + 1
        self.init_conf = (tuple(self.ids), ())             # InitConfig: the initial voters
        self.membership = False                            # a configuration entry was seen
        self._decoded: dict[bytes, tuple] = {}              # ENTRY_CONF data -> (voters, learners)
        self.network: dict[tuple[int, int], tuple] = {}    # (src, msg_id) -> fields
        self.elections: dict[int, int] = {}                # term -> leader
        self.committed: dict[int, tuple] = {}              # index -> ((term, value), commit term)
        self.registry: dict[tuple[int, int], tuple] = {}   # LogMatching: (index, term) -> (value, prev term)
        self.persisted: set[int] = set()                   # positions of ready events whose write completed
        self.snap_commit: dict[tuple[int, int], int] = {}  # chunk (src, id) -> leaderCommit when sent
        self.snap_conf: dict[tuple, tuple] = {}            # (src, term, index) -> the snapshot's configuration
        self.events = 0
        self.recent: deque = deque(maxlen=history)
        self.n = 0                                          # index of the event being checked
        self.event = None

    # -- reporting --

    def fail(self, action: str, problem: str, expected=None, actual=None):
        # Events are formatted only here, on failure: formatting every event
        # would cost more than checking it.
        history = [f"{self.n - len(self.recent) + 1 + k}: {describe(ev)}" for k, ev in enumerate(self.recent)]
        raise TraceViolation(self.n, action, problem, expected, actual, history)

    # -- helpers over spec state --

    @staticmethod
    def term_at(log: list, n: int) -> int:
        return log[n - 1][0] if n > 0 else 0

    # -- configurations (spec: Config, Voters, Learners, IsQuorum) --

    def decode(self, data: bytes) -> tuple:
        c = self._decoded.get(data)
        if c is None:
            from raft._core import decode_conf
            try:
                v, lr, _ = decode_conf(bytes(data))
            except Exception as e:      # noqa: BLE001 -- any malformed entry is a violation
                self.fail("Config", f"malformed configuration entry: {e}")
            c = self._decoded[bytes(data)] = (tuple(sorted(v)), tuple(sorted(lr)))
        return c

    def config(self, s: Server, upto: int | None = None) -> tuple:
        """Config(log): the latest configuration entry of s's log (at or below
        `upto`), else the server's initial configuration."""
        confs = s.confs
        if upto is not None:
            k = bisect_right(confs, upto)
            if k == 0:
                return s.init
            return self.decode(s.log[confs[k - 1] - 1][1][1])
        if not confs:
            return s.init
        return self.decode(s.log[confs[-1] - 1][1][1])

    def voters(self, s: Server) -> tuple:
        return self.config(s)[0]

    @staticmethod
    def is_quorum(members, voters) -> bool:
        """IsQuorum(S, V): a strict majority of V."""
        return 2 * sum(1 for v in voters if v in members) > len(voters)

    def _confs_appended(self, s: Server, lo: int) -> None:
        """s.log[lo-1:] was just appended: note its configuration entries."""
        log = s.log
        for i in range(lo, len(log) + 1):
            if log[i - 1][1][0] == ENTRY_CONF:
                self.decode(log[i - 1][1][1])
                s.confs.append(i)
                self.membership = True

    @staticmethod
    def _confs_truncated(s: Server, keep: int) -> None:
        while s.confs and s.confs[-1] > keep:
            s.confs.pop()

    def _confs_rebuilt(self, s: Server) -> None:
        s.confs = []
        self._confs_appended(s, 1)

    def server(self, n: int) -> Server:
        s = self.servers.get(n)
        if s is None:
            self.fail("Init", f"event for server {n} before its restart/init event")
        return s

    # -- invariants --

    def _register(self, s_id: int, log: list, lo: int) -> None:
        """LogMatching (paper §5.3), incrementally: (index, term) names one entry and prefix."""
        reg = self.registry
        for i in range(lo, len(log) + 1):
            t, v = log[i - 1]
            key = (i, t)
            val = (v, self.term_at(log, i - 1))
            old = reg.get(key)
            if old is None:
                reg[key] = val
            elif old != val:
                self.fail("LogMatching", f"server {s_id} has entry {key} = {val}, elsewhere {old}")

    def _record_commit(self, s_id: int, s: Server, new_commit: int) -> None:
        """The spec's RecordCommit + StateMachineSafety + CommittedEntriesDurable + LeaderCompleteness."""
        for idx in range(s.commit + 1, new_commit + 1):
            entry = s.log[idx - 1]
            old = self.committed.get(idx)
            if old is not None:
                if old[0] != entry:
                    self.fail("StateMachineSafety",
                              f"server {s_id} commits {entry} at {idx}; {old[0]} was committed there")
                continue
            self.committed[idx] = (entry, s.term)
            # Durable on a majority of the voters the committing leader counted (its
            # own configuration; InitVoters without membership changes).
            voters = self.voters(s)
            holders = [o_id for o_id in voters
                       if (o := self.servers.get(o_id)) is not None
                       and len(o.dlog) >= idx and o.dlog[idx - 1] == entry]
            if not self.is_quorum(holders, voters):
                self.fail("CommittedEntriesDurable",
                          f"entry {idx} {entry} committed by server {s_id} but durable on "
                          f"{len(holders)} of the voters {list(voters)}")
            for o_id, o in self.servers.items():
                if o.role == LEADER and o.term > s.term:
                    if len(o.log) < idx or o.log[idx - 1] != entry:
                        self.fail("LeaderCompleteness",
                                  f"leader {o_id} of term {o.term} lacks entry {idx} committed in term {s.term}")
        s.commit = new_commit

    # -- actions --

    def restart(self, n: int, term: int, vote: int, commit: int, first: int, last: int, last_term: int):
        s = self.servers.get(n)
        if s is None:
            # Init: every server starts empty (spec Init).
            if (term, vote, commit, last) != (0, 0, 0, 0):
                self.fail("Init", f"server {n} does not start from the initial state",
                          (0, 0, 0, 0), (term, vote, commit, last))
            # A server outside InitVoters joins later with the empty configuration
            # (RawNode(id, [])). The spec gives every server InitConfig; for a server
            # outside InitVoters the two agree on everything the spec asks of it (it
            # is a voter of neither, so it never times out and counts no quorum).
            init = self.init_conf if n in self.ids else ((), ())
            self.servers[n] = Server(init=init, dinit=init, reported=init + (0,))
            return
        # Restart(n): memory from disk, volatile state reset, outbox lost.
        s.term, s.vote, s.log = s.dterm, s.dvote, list(s.dlog)
        s.role, s.votes, s.match, s.outbox = FOLLOWER, set(), {}, []
        s.removing = False
        s.init = s.dinit
        # The core starts from its constructor's configuration; a `conf` follows if
        # its log or snapshot holds another.
        s.reported = (self.init_conf if n in self.ids else ((), ())) + (0,)
        if self.membership:
            self._confs_rebuilt(s)
        s.commit = s.dcommit
        s.stable = len(s.log)
        s.expect.clear()
        want = (s.term, s.vote, s.commit, len(s.log), self.term_at(s.log, len(s.log)))
        got = (term, vote, commit, last, last_term)
        if want != got:
            self.fail("Restart", f"server {n} restarted from state the spec did not persist "
                      "(term, vote, commit, lastIndex, lastTerm)", want, got)
        # A snapshot holds only committed entries (the spec's log still has them).
        if first - 1 > s.commit:
            self.fail("Restart", f"server {n} restarts from a snapshot at {first - 1} beyond "
                      f"its commit index {s.commit}")
        s.first = first
        s.chunk = None
        # CommittedPrefixStable after restart.
        for idx in range(1, s.commit + 1):
            c = self.committed.get(idx)
            if c is None or s.log[idx - 1] != c[0]:
                self.fail("CommittedPrefixStable", f"server {n} restarts with commit {s.commit} "
                          f"but entry {idx} is not the committed one")

    def timeout(self, n: int, term: int):
        s = self.server(n)
        if s.role == LEADER:
            self.fail("Timeout", f"server {n} is leader")
        voters = self.voters(s)
        if n not in voters:
            self.fail("Timeout", f"server {n} is not a voter of its configuration",
                      f"a voter of {voters}", self.config(s))
        s.role, s.term, s.vote, s.votes = CANDIDATE, s.term + 1, n, {n}
        if term != s.term:
            self.fail("Timeout", f"server {n} term", s.term, term)
        # Timeout puts a RequestVote for every other voter of its configuration in the outbox.
        last = len(s.log)
        for j in voters:
            if j != n:
                s.expect.append((MSG_VOTE, n, j, s.term, last, self.term_at(s.log, last), 0, (), 0, False))

    def become_leader(self, n: int, term: int):
        s = self.server(n)
        voters = self.voters(s)
        if s.role != CANDIDATE or not self.is_quorum(s.votes, voters) or term != s.term:
            self.fail("BecomeLeader", f"not enabled on server {n}",
                      f"candidate with votes from a majority of {list(voters)} in term {term}",
                      f"{ROLE[s.role]} term {s.term} votes {sorted(s.votes)}")
        prev = self.elections.setdefault(term, n)
        if prev != n:
            self.fail("ElectionSafety", f"term {term} has two leaders: {prev} and {n}")
        s.role, s.match, s.removing = LEADER, {}, False
        # LeaderCompleteness: every committed entry is in the new leader's log.
        for idx, (entry, _cterm) in self.committed.items():
            if len(s.log) < idx or s.log[idx - 1] != entry:
                self.fail("LeaderCompleteness",
                          f"new leader {n} of term {term} lacks committed entry {idx} {entry}")
        s.log.append((s.term, NOOP))
        self._register(n, s.log, len(s.log))

    def step_down(self, n: int, term: int):
        """StepDown(n) (CheckQuorum, diss. §6.2): the leader of `term` becomes
        follower, keeping its term, vote and log; votes and progress cleared."""
        s = self.server(n)
        if s.role != LEADER or term != s.term:
            self.fail("StepDown", f"not enabled on server {n}", f"leader in term {term}",
                      f"{ROLE[s.role]} term {s.term}")
        s.role, s.votes, s.match = FOLLOWER, set(), {}
        # A leader that committed its own removal (RemovedOnCommit): this is the
        # role change of that AdvanceCommitIndex (see advance_commit).
        s.removing = False

    def client_request(self, n: int, entries):
        s = self.server(n)
        if s.role != LEADER:
            self.fail("ClientRequest", f"server {n} is not leader")
        if s.removing:
            self.fail("ClientRequest", f"server {n} committed its own removal and is no longer leader")
        for e in entries:
            if e.index != len(s.log) + 1 or e.term != s.term:
                self.fail("ClientRequest", f"server {n} appends at the wrong place",
                          (len(s.log) + 1, s.term), (e.index, e.term))
            if e.type == ENTRY_CONF:
                self.propose_config_change(n, s, e)
            s.log.append((e.term, (e.type, e.data)))
            if e.type == ENTRY_CONF:
                s.confs.append(len(s.log))
        self._register(n, s.log, len(s.log) - len(entries) + 1)

    def propose_config_change(self, n: int, s: Server, e) -> None:
        """ProposeConfigChange(n, j, r): MayChangeConfig(n) (one change at a time and
        the no-op rule), and the new configuration gives ONE server j a new role."""
        self.membership = True
        if s.confs and s.confs[-1] > s.commit:
            self.fail("ProposeConfigChange", f"server {n} appends a configuration entry while the "
                      f"one at {s.confs[-1]} is not committed (commit {s.commit})")
        if self.term_at(s.log, s.commit) != s.term:
            self.fail("ProposeConfigChange", f"server {n} appends a configuration entry before "
                      f"committing an entry of its term {s.term} (the no-op rule)",
                      s.term, self.term_at(s.log, s.commit))
        old_v, old_l = self.config(s)
        new_v, new_l = self.decode(e.data)
        role = lambda j, v, lr: "voter" if j in v else ("learner" if j in lr else "none")  # noqa: E731
        changed = [j for j in sorted(set(old_v) | set(old_l) | set(new_v) | set(new_l))
                   if role(j, old_v, old_l) != role(j, new_v, new_l)]
        if len(changed) != 1:
            self.fail("ProposeConfigChange", f"server {n}'s configuration entry changes the role of "
                      f"{len(changed)} servers {changed} (one at a time)", (old_v, old_l), (new_v, new_l))
        if not new_v:
            self.fail("ProposeConfigChange", f"server {n}'s configuration entry has no voter")

    def append_entries_sent(self, n: int, m):
        """AppendEntries(n, m.dst, prev, k): any prev and k, from the leader's log."""
        s = self.server(n)
        prev, k = m.index, len(m.entries)
        if s.role != LEADER or m.term != s.term:
            self.fail("AppendEntries", f"server {n} sends AppendEntries but is {ROLE[s.role]} "
                      f"in term {s.term}", s.term, m.term)
        if prev > len(s.log) or m.log_term != self.term_at(s.log, prev):
            self.fail("AppendEntries", "prevLogIndex/prevLogTerm not from the leader's log",
                      (prev, self.term_at(s.log, prev) if prev <= len(s.log) else None), (prev, m.log_term))
        if prev + k > len(s.log):
            self.fail("AppendEntries", "entries beyond the leader's log", len(s.log), prev + k)
        for off, e in enumerate(m.entries):
            if e.index != prev + off + 1 or (e.term, (e.type, e.data)) != s.log[prev + off]:
                self.fail("AppendEntries", f"entry {prev + off + 1} differs from the leader's log",
                          s.log[prev + off], (e.term, (e.type, e.data)))
        if m.commit != s.commit:
            self.fail("AppendEntries", "leaderCommit is not the leader's commitIndex", s.commit, m.commit)

    def receive(self, n: int, m):
        s = self.server(n)
        key = (m.src, m.msg_id)
        sent = self.network.get(key)
        if sent is None:
            self.fail("Receive", f"server {n} receives {MSG_NAME.get(m.type)} {key} that was never sent")
        if sent != _msg_fields(m):
            self.fail("Receive", "message changed in flight", sent, _msg_fields(m))
        if m.dst != n:
            self.fail("Receive", f"message for {m.dst} received by {n}")
        if m.type == MSG_SNAP_RESP:
            if m.term > s.term:
                self.fail("Receive", "an InstallSnapshotResp carries a term its leader never had")
            return                      # chunk acks: no spec step
        if m.type == MSG_PREVOTE or m.type == MSG_PREVOTE_RESP:
            return                      # PreVote carries a prospective term: never adopted
        if m.term > s.term:
            # UpdateTerm (paper §5.1).
            s.term, s.vote, s.role, s.votes, s.match = m.term, 0, FOLLOWER, set(), {}
            s.removing = False
        t = m.type
        if t == MSG_VOTE:
            self._handle_request_vote(n, s, m)
        elif t == MSG_VOTE_RESP:
            if m.term == s.term and s.role == CANDIDATE and not m.reject:
                s.votes.add(m.src)
        elif t == MSG_APP:
            self._handle_append_entries(n, s, m)
        elif t == MSG_APP_RESP:
            if (m.term == s.term and s.role == LEADER and not m.reject
                    and m.index > s.match.get(m.src, 0)):
                s.match[m.src] = m.index
        elif t == MSG_TIMEOUT_NOW:
            # No step of its own: a voter follower of the leader's term campaigns at
            # once, which the core reports as `timeout` (the spec's Timeout(n)).
            pass
        elif t == MSG_SNAP:
            # HandleAppendEntries if this chunk completes the snapshot (an `install`
            # event follows), else DropMessage; decided at the node's `state` event.
            s.chunk = m

    def _handle_request_vote(self, n: int, s: Server, m):
        last = len(s.log)
        up_to_date = m.log_term > self.term_at(s.log, last) or (
            m.log_term == self.term_at(s.log, last) and m.index >= last)
        grant = m.term == s.term and s.vote in (0, m.src) and up_to_date
        if grant:
            s.vote = m.src
        s.expect.append((MSG_VOTE_RESP, n, m.src, s.term, 0, 0, 0, (), 0, not grant))

    def _handle_append_entries(self, n: int, s: Server, m):
        if m.term < s.term:
            s.expect.append((MSG_APP_RESP, n, m.src, s.term, m.index, 0, 0, (), 0, True))
            return
        if s.role == LEADER:
            self.fail("HandleAppendEntries", f"leader {n} receives AppendEntries of its own term {s.term}")
        s.role, s.votes = FOLLOWER, set()
        log = s.log
        prev = m.index
        if not (prev == 0 or (prev <= len(log) and log[prev - 1][0] == m.log_term)):
            h = min(prev, len(log))
            while h > 0 and log[h - 1][0] > m.log_term:
                h -= 1
            s.expect.append((MSG_APP_RESP, n, m.src, s.term, prev, self.term_at(log, h), h, (), 0, True))
            return
        # AcceptEntries: first index that is missing or has another term.
        first_new = None
        for off, e in enumerate(m.entries):
            idx = prev + off + 1
            if idx > len(log) or log[idx - 1][0] != e.term:
                first_new = off
                break
        if first_new is not None:
            cut = prev + first_new          # keep 1..cut
            if cut < s.commit:
                self.fail("CommittedPrefixStable",
                          f"server {n} would truncate committed entry {cut + 1} (commit {s.commit})")
            del log[cut:]
            s.stable = min(s.stable, cut)
            self._confs_truncated(s, cut)       # a truncated configuration no longer counts
            log.extend((e.term, (e.type, e.data)) for e in m.entries[first_new:])
            self._confs_appended(s, cut + 1)
            self._register(n, log, cut + 1)
        last = prev + len(m.entries)
        new_commit = max(s.commit, min(m.commit, last))
        if new_commit > s.commit:
            self._record_commit(n, s, new_commit)
        s.expect.append((MSG_APP_RESP, n, m.src, s.term, last, 0, 0, (), 0, False))

    def install(self, n: int, m, installed: bool):
        """The InstallSnapshot chunk just received completes (or is covered by our
        log): HandleAppendEntries of the AppendEntries it stands for, i.e. from
        prevLogIndex 0 with the committed entries 1..m.index (§7)."""
        s = self.server(n)
        c = s.chunk
        # The install reports the chunk just received, unchanged: its index and
        # term name the snapshot installed.
        if c is None or (c.src, c.msg_id) != (m.src, m.msg_id) or _msg_fields(c) != _msg_fields(m):
            self.fail("HandleAppendEntries", f"server {n} installs a snapshot it did not just receive",
                      _msg_fields(c) if c is not None else None, _msg_fields(m))
        s.chunk = None
        if m.term != s.term:
            self.fail("HandleAppendEntries", f"server {n} installs a snapshot of term {m.term} "
                      f"in term {s.term}")
        entries = []
        for idx in range(1, m.index + 1):
            term, value = self.committed[idx][0]
            entries.append(_AbsEntry(idx, term, value[0], value[1]))
        ae = _AbsAppend(m.src, m.term, 0, 0, entries, self.snap_commit[(m.src, m.msg_id)])
        self._handle_append_entries(n, s, ae)
        if installed:
            s.first = m.index + 1
            s.reported = s.reported[:2] + (0,)   # the core's configuration is now the snapshot's
            if not s.confs or s.confs[0] > m.index:
                # The configuration before the log's first configuration entry is now
                # the snapshot's: InitConfig, which a server that joined later (with
                # the empty configuration) learns this way.
                s.init = self.snap_conf.get((m.src, m.term, m.index), s.init)

    def compact(self, n: int, index: int, term: int):
        """No spec step: the application snapshotted committed, applied entries."""
        s = self.server(n)
        if index > s.commit or index > len(s.log) or self.term_at(s.log, index) != term:
            self.fail("Compact", f"server {n} compacts to ({index}, {term}) but its log has "
                      f"commit {s.commit}", (index, self.term_at(s.log, min(index, len(s.log)))),
                      (index, term))
        s.first = max(s.first, index + 1)

    def snapshot_sent(self, n: int, m):
        """Each chunk: AppendEntries(n, m.dst, 0, m.index), carrying the committed prefix."""
        s = self.server(n)
        if s.role != LEADER or m.term != s.term:
            self.fail("AppendEntries", f"server {n} sends InstallSnapshot but is {ROLE[s.role]} "
                      f"in term {s.term}", s.term, m.term)
        if m.index > s.commit or m.log_term != self.term_at(s.log, m.index):
            self.fail("AppendEntries", "the snapshot is not a committed prefix of the leader's log",
                      (s.commit, self.term_at(s.log, min(m.index, len(s.log)))), (m.index, m.log_term))
        if m.entries:
            # The first chunk carries the configuration of the snapshot's prefix (the
            # spec's log keeps those entries: Config of the log up to m.index).
            e = m.entries[0]
            if len(m.entries) != 1 or e.type != ENTRY_CONF or e.index != m.index or e.term != m.log_term:
                self.fail("AppendEntries", "InstallSnapshot carries more than its configuration entry")
            want = self.config(s, m.index)
            if self.decode(e.data) != want:
                self.fail("AppendEntries", f"InstallSnapshot at {m.index} carries another configuration "
                          "than the leader's log up to there", want, self.decode(e.data))
        self.snap_commit[(m.src, m.msg_id)] = s.commit
        self.snap_conf[(m.src, m.term, m.index)] = self.config(s, m.index)

    def sent(self, n: int, m, after_persist: bool):
        s = self.server(n)
        fields = _msg_fields(m)
        key = (m.src, m.msg_id)
        if m.src != n:
            self.fail("Send", f"server {n} sends a message with src {m.src}")
        if key in self.network or any(k == key for k, _ in s.outbox):
            self.fail("Send", f"message id {key} reused")
        if not after_persist:
            if m.type == MSG_APP:
                self.append_entries_sent(n, m)
            elif m.type == MSG_SNAP:
                self.snapshot_sent(n, m)
            elif m.type == MSG_TIMEOUT_NOW:
                # Leader transfer (diss. §3.10), or a removed leader handing over
                # (§4.2.2): no spec step; only the leader of m.term sends it, to a voter.
                if s.role != LEADER or m.term != s.term:
                    self.fail("Send", f"server {n} sends TimeoutNow but is {ROLE[s.role]} in term {s.term}")
                if m.dst not in self.voters(s):
                    self.fail("Send", f"server {n} sends TimeoutNow to {m.dst}, not a voter of "
                              f"{self.voters(s)}")
            elif m.type not in NO_STEP_MSGS:    # chunk acks, pre-votes: nothing durable
                self.fail("Send", f"{MSG_NAME.get(m.type)} sent before persisting (must wait for Persist)")
            self.network[key] = fields
            return
        # The spec's outbox is a set: the replies the spec's actions queued may
        # be reported in any order (e.g. Timeout's RequestVotes), each once.
        if not s.expect:
            self.fail("Send", f"server {n} queues {MSG_NAME.get(m.type)} that no spec action produces",
                      None, fields)
        try:
            s.expect.remove(fields)
        except ValueError:
            self.fail("Send", f"server {n} reply differs from the spec's", list(s.expect), fields)
        s.outbox.append((key, fields))

    def advance_commit(self, n: int, c: int):
        s = self.server(n)
        if s.role != LEADER or c <= s.commit or c > len(s.log):
            self.fail("AdvanceCommitIndex", f"not enabled on server {n} ({ROLE[s.role]}, commit "
                      f"{s.commit}, last {len(s.log)})", None, c)
        if s.removing:
            self.fail("AdvanceCommitIndex", f"server {n} committed its own removal and is no longer leader")
        voters = self.voters(s)
        agree = [j for j in voters if (s.stable >= c if j == n else s.match.get(j, 0) >= c)]
        if not self.is_quorum(agree, voters):
            self.fail("AdvanceCommitIndex", f"index {c} is not stored by a majority of the voters "
                      f"{list(voters)}", None, agree)
        if s.log[c - 1][0] != s.term:
            # Figure 8 (paper §5.4.2): only current-term entries commit by counting.
            self.fail("AdvanceCommitIndex", f"index {c} is from term {s.log[c - 1][0]}, not the "
                      f"current term {s.term} (Figure 8)")
        self._record_commit(n, s, c)
        if n not in voters and s.confs and s.confs[-1] <= c:
            # RemovedOnCommit(n, c): the spec's AdvanceCommitIndex makes the leader a
            # follower in this same step. The core does it in two: the commit, then at its
            # next ready()/take_messages() the AppendEntries telling the followers the new
            # commit index, a TimeoutNow to an up-to-date voter and `stepdown`. It stays
            # leader in between (it sends, takes no proposal, commits nothing more), and
            # must step down before its next Ready.
            s.removing = True

    def persist(self, n: int, hint: int | None = None):
        """Persist(n): memory to disk, release the outbox. ``hint``: the commit hint
        written, the current commit index (None: that one) or the durable one."""
        s = self.server(n)
        if hint is None:
            hint = s.commit
        elif hint != s.commit and hint != s.dcommit:
            self.fail("Persist", f"server {n} writes commit hint {hint}: neither its commit "
                      f"index {s.commit} nor the hint already durable ({s.dcommit})")
        old_len = len(s.dlog)
        changed_from = s.stable + 1               # first index whose durable copy changes
        s.dterm, s.dvote, s.dcommit = s.term, s.vote, hint
        s.dinit = s.init
        if changed_from <= old_len or len(s.log) > old_len:
            del s.dlog[changed_from - 1:]
            s.dlog.extend(s.log[changed_from - 1:])
            # CommittedEntriesDurable must survive the rewrite of a durable log (stated
            # for a fixed configuration: the spec's membership models do not check it).
            for idx in range(changed_from, old_len + 1 if not self.membership else 0):
                c = self.committed.get(idx)
                if c is None:
                    continue
                holders = sum(1 for o in self.servers.values()
                              if len(o.dlog) >= idx and o.dlog[idx - 1] == c[0])
                if holders < self.quorum:
                    self.fail("CommittedEntriesDurable",
                              f"server {n} overwrote committed entry {idx} on disk")
        s.stable = len(s.log)
        for key, fields in s.outbox:
            self.network[key] = fields
        s.outbox = []

    def check_conf(self, n: int, index: int, voters, learners):
        """No step: the node reports the configuration it now uses. The core reports
        it from inside an action (before `propose`; a truncation's revert, then the
        appended entry's), so it is compared at the node's next `state`."""
        s = self.server(n)
        s.reported = (tuple(sorted(voters)), tuple(sorted(learners)), index)

    def _compare_conf(self, n: int, s: Server) -> None:
        """The configuration the node uses must be the spec's Config(log): its latest
        configuration entry, committed or not, else its initial one."""
        want = self.config(s)
        got = s.reported[:2]
        if want != got:
            self.fail("Config", f"server {n}'s configuration differs from the spec's Config(log) "
                      "(voters, learners)", want, got)
        index = s.reported[2]
        if index and (not s.confs or s.confs[-1] != index):
            self.fail("Config", f"server {n} uses the configuration entry at {index}, the spec "
                      "the latest one in its log", s.confs[-1] if s.confs else 0, index)

    def check_state(self, n: int, term, vote, role, commit, last, last_term):
        s = self.server(n)
        s.chunk = None                 # a chunk that did not complete the snapshot: DropMessage
        if s.expect:
            self.fail("Send", f"server {n} did not send the replies the spec requires",
                      list(s.expect), None)
        if self.membership:
            self._compare_conf(n, s)
        want = (s.term, s.vote, ROLE[s.role], s.commit, len(s.log), self.term_at(s.log, len(s.log)))
        got = (term, vote, ROLE[role], commit, last, last_term)
        if want != got:
            self.fail("State", f"server {n}'s state differs from the spec's "
                      "(term, vote, role, commit, lastIndex, lastTerm)", want, got)

    # -- driver --

    def prepare(self, events: list, start: int = 0) -> None:
        """Find which Readys were written: those whose `advance` follows before
        the node restarts (ready sequence numbers start again after a restart)."""
        pending: dict[int, int] = {}                     # node -> position of its open ready
        for pos, ev in enumerate(events, start + 1):
            kind = ev[0]
            if kind == "ready":
                pending[ev[1]] = pos
            elif kind == "advance":
                if ev[1] in pending:
                    self.persisted.add(pending.pop(ev[1]))
            elif kind == "restart":
                pending.pop(ev[1], None)

    def step(self, ev) -> None:
        self.n += 1
        self.recent.append(ev)
        kind = ev[0]
        if kind == "recv":
            self.receive(ev[1], ev[2])
        elif kind == "send":
            self.sent(ev[1], ev[2], ev[3])
        elif kind == "state":
            self.check_state(*ev[1:])
        elif kind == "ready":
            s = self.servers.get(ev[1])
            if s is not None and s.removing and s.role == LEADER:
                self.fail("AdvanceCommitIndex", f"server {ev[1]} committed its own removal but "
                          "did not step down before its next Ready")
            if self.n in self.persisted:
                self.persist(ev[1], ev[3] if len(ev) > 3 else None)
        elif kind == "advance":
            pass
        elif kind == "commit":
            self.advance_commit(ev[1], ev[2])
        elif kind == "propose":
            self.client_request(ev[1], ev[2])
        elif kind == "timeout":
            self.timeout(ev[1], ev[2])
        elif kind == "leader":
            self.become_leader(ev[1], ev[2])
        elif kind == "stepdown":
            self.step_down(ev[1], ev[2])
        elif kind == "restart":
            self.restart(*ev[1:])
        elif kind == "install":
            self.install(ev[1], ev[2], ev[3])
        elif kind == "compact":
            self.compact(ev[1], ev[2], ev[3])
        elif kind == "conf":
            self.check_conf(*ev[1:])
        else:
            self.fail("Trace", f"unknown event kind {kind!r}")
        self.events += 1

    def check(self, events: list) -> int:
        """Check a whole trace; returns the number of events checked."""
        self.prepare(events)
        for ev in events:
            self.step(ev)
        return self.events


class _AbsEntry:
    """An entry of the spec's AppendEntries that a snapshot stands for."""

    __slots__ = ("index", "term", "type", "data")

    def __init__(self, index, term, type_, data):
        self.index, self.term, self.type, self.data = index, term, type_, data


class _AbsAppend:
    __slots__ = ("src", "term", "index", "log_term", "entries", "commit")

    def __init__(self, src, term, index, log_term, entries, commit):
        self.src, self.term, self.index, self.log_term = src, term, index, log_term
        self.entries, self.commit = entries, commit


def describe(ev) -> str:
    kind = ev[0]
    if kind == "install":
        return f"install n{ev[1]} {ev[2]!r} installed={ev[3]}"
    if kind == "stepdown":
        return f"stepdown {ev[1]} {ev[2]} (CheckQuorum, or a removed leader)"
    if kind in ("recv", "send"):
        m = ev[2]
        extra = " (after persist)" if kind == "send" and ev[3] else ""
        return f"{kind} n{ev[1]} {m!r}{extra}"
    return f"{kind} " + " ".join(str(x) for x in ev[1:])


def check_events(events: list, servers: list[int]) -> int:
    return Checker(servers).check(events)


# -- NDJSON --------------------------------------------------------------------

# The file form of traces lives in raft/trace.py (the runtime writes them); these
# names are importable from here too, for the tools and tests that use them.
from raft.trace import (  # noqa: E402,F401
    event_from_json, event_to_json, merge_by_causality, read_ndjson, read_ndjson_file,
    write_ndjson,
)
