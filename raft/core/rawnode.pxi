# The public API (etcd's rawnode.go): RawNode (construction/restart, tick,
# step, propose, read_index, compact) and the Ready batch it hands the runtime
# (ready/advance, and the take_* outputs between them).
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

cdef class Ready:
    """One batch of work for the runtime; see the module docstring for the order."""

    def __repr__(self):
        return (f"Ready(snapshot={self.snapshot}, hard_state={self.hard_state}, entries={len(self.entries)}, "
                f"messages={len(self.messages)}, after_persist={len(self.messages_after_persist)}, "
                f"committed={len(self.committed_entries)}, reads={len(self.read_states)})")

    @property
    def must_sync(self):
        """True if something must be written before messages_after_persist."""
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None

    @property
    def must_fsync(self):
        """True if that write must also be fsynced: entries, a snapshot, or a new term
        or vote (Figure 2's persistent state). A Ready whose only change is the commit
        index need not be: commitIndex is volatile state in Raft (Figure 2), and the
        hint stored with the hard state only saves a restarted node some catching up
        (etcd's MustSync makes the same distinction). The runtime still writes it,
        unsynced, so a process crash (not a power loss) keeps it; a Ready carries a
        commit-only change once it has waited a tick (see ready())."""
        return self._fsync



cdef class RawNode(_Raft):
    """One Raft server's protocol state machine."""

    def __init__(self, uint64_t id, voters, *, learners=(), uint64_t seed=0, int election_tick=10,
                 int heartbeat_tick=1, Py_ssize_t max_msg_bytes=1 << 20,
                 int max_inflight=256, Py_ssize_t max_inflight_bytes=0,
                 HardState hard_state=None, list entries=None,
                 Snapshot snapshot=None, uint64_t applied=0, uint64_t msg_id_start=0,
                 bint unsafe_commit_any_term=False, bint pre_vote=False,
                 bint check_quorum=False, list trace=None):
        """Start (or restart, from what storage holds) server ``id`` of ``voters``.

        voters, learners: the initial configuration, used until the snapshot or the log
        holds one (configuration entries, diss. ch. 4). A server joining an existing
        cluster starts with ``voters=()``: it never campaigns, and learns its
        configuration from the leader that added it.

        hard_state, entries, snapshot: the durable state to restart from (entries
        follow the snapshot; the runtime restores the state machine from it).
        applied: last index already applied to the state machine (>= snapshot.index).
        seed: drives the randomized election timeouts; give each node its own.
        max_inflight_bytes: a leader pauses pipelining to a follower once the
        entries it has in flight to it (data + ENTRY_MEM_OVERHEAD each) reach this
        (0: no byte bound; at least one message always goes).
        pre_vote: run a PreVote round before each election the timer starts
        (diss. §9.6), so a node that was cut off cannot disrupt a working leader
        by forcing a new term when it rejoins.
        check_quorum: a leader that has not heard from a majority of voters within
        an election timeout steps down to follower, keeping its term (diss. §6.2),
        so clients of a leader cut off from the cluster are redirected.
        unsafe_commit_any_term: TEST ONLY -- commits earlier-term entries by
        counting replicas, the bug of Figure 8. Never set it in production.
        trace: a list to append trace events to (tuples; see raft/trace.py and
        spec/README.md), or None for no tracing (the default; costs one pointer
        test per event site).
        """
        if id == 0:
            raise LocalProtocolError("node id 0 is reserved for 'none'")
        cdef bytes initial_conf = encode_conf(voters, learners)   # checks the ids
        if election_tick <= heartbeat_tick or heartbeat_tick < 1:
            raise LocalProtocolError("need election_tick > heartbeat_tick >= 1")
        if max_inflight < 1 or max_msg_bytes < 1:
            raise LocalProtocolError("max_inflight and max_msg_bytes must be positive")
        self.id = id
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.max_msg_bytes = max_msg_bytes
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes if max_inflight_bytes > 0 else 0
        self.unsafe_commit_any_term = unsafe_commit_any_term
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self._pre_candidate = False
        self._prevotes = {}
        self.rng_state = seed ^ (id * 0xD1B54A32D192ED03ULL)
        self.next_msg_id = msg_id_start
        cdef uint64_t snapshot_index = snapshot.index if snapshot is not None else 0
        self.log = RaftLog(entries, snapshot_index, snapshot.term if snapshot is not None else 0)
        self._snapshot = snapshot
        hs = hard_state if hard_state is not None else HardState()
        if hs.commit > self.log.last():
            raise LocalProtocolError(
                f"persisted commit {hs.commit} is beyond the persisted log ({self.log.last()})")
        if applied > hs.commit and applied > snapshot_index:
            raise LocalProtocolError(f"applied {applied} is beyond commit {hs.commit}")
        if self.log.committed < hs.commit:
            self.log.committed = hs.commit
        if applied > self.log.applied:
            self.log.applied = applied
        self.term = hs.term
        self.vote = hs.vote
        self._prev_hard_state = HardState(hs.term, hs.vote, self.log.committed)
        self._hint_due = False
        self._msgs = []
        self._msgs_after_persist = []
        self.votes = {}
        self.progress = {}
        self._broadcast_pending = False
        self._ready_outstanding = False
        self._ready_seq = 0
        self._ro = ReadOnly()
        self._pending_snapshot = None
        self._rx_buf = None
        self._rx_conf = b""
        self._trace = None                   # set below, after the configuration
        self.lead_transferee = 0
        self.role = _FOLLOWER
        # The configuration: the snapshot's (else the initial one), then the latest
        # configuration entry in the log.
        self._base_conf = snapshot.conf if snapshot is not None and snapshot.conf else initial_conf
        self._conf_log = [(e.index, e.data) for e in (entries or ()) if e.type == _ENTRY_CONF]
        if self._conf_log:
            self._set_conf(self._conf_log[len(self._conf_log) - 1][1],
                           self._conf_log[len(self._conf_log) - 1][0])
        else:
            self._set_conf(self._base_conf, 0)
        self._become_follower(self.term, 0)
        self._trace = trace
        if trace is not None:
            last = self.log.last()
            trace.append(("restart", self.id, self.term, self.vote, self.log.committed,
                          self.log.offset, last, self.log.term_at(last)))
            if self._conf != initial_conf:
                trace.append(("conf", self.id, self.conf_index, self.voters, self.learners))

    # -- public API --

    def tick(self):
        """Advance logical time by one tick."""
        cdef Py_ssize_t mark = len(self._trace) if self._trace is not None else 0
        self._tick()
        if self._trace is not None and len(self._trace) > mark:
            self._trace_state()

    def campaign(self):
        """Start an election now, without a PreVote round (a forced campaign)."""
        if self.role != _LEADER:
            self._campaign()
            if self._trace is not None:
                self._trace_state()

    def step(self, Message m):
        """Handle one message from a peer. Raises RemoteProtocolError, without
        changing state, if the message is malformed."""
        self._validate(m)
        if self._trace is not None:
            self._trace.append(("recv", self.id, m))
        self._step(m)
        if self._trace is not None:
            self._trace_state()

    def read_index(self, ctx):
        """Ask for a linearizable read (ReadIndex, diss. §6.4).

        ``ctx`` (a positive int) identifies the request. Once leadership is
        confirmed by a majority, a later Ready lists ``(ctx, read_index)`` in
        ``read_states``: serve the read once ``read_index`` has been applied.
        Reads arriving together share one heartbeat round. Raises NotLeader on
        a follower. If the node stops being leader first, the read is dropped:
        the runtime must fail it when it sees the role change.
        """
        if self.role != _LEADER:
            raise NotLeader(self.leader)
        self._ro.add(ctx)
        if self.voters == (self.id,) and self._reads_can_start():
            self._start_read_round()

    def compact(self, uint64_t index, bytes data not None):
        """The application has durably saved ``data``, a snapshot of its state with
        every entry up to ``index`` applied (§7). Drop the log up to ``index``;
        followers that need those entries get ``data`` by InstallSnapshot.

        Requires index <= applied. A no-op if the log is already compacted there.
        The runtime must make the snapshot durable before it drops the entries
        from storage."""
        if index < self.log.offset:
            return
        if index > self.log.applied:
            raise LocalProtocolError(f"cannot compact to {index}: only {self.log.applied} applied")
        cdef uint64_t term = self.log.term_at(index)
        self._snapshot = Snapshot(index, term, data, self._conf_at(index))
        self.log.compact(index)
        self._conf_compacted(index)
        if self._trace is not None:
            self._trace.append(("compact", self.id, index, term))
            self._trace_state()

    @property
    def snapshot(self):
        """Our latest snapshot (taken by compact() or installed from a leader), or None."""
        return self._snapshot

    cdef int _check_proposable(self) except -1:
        if self.role != _LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership is being transferred to node {self.lead_transferee}")
        if self._removed_and_committed():
            raise ProposalDropped("this leader committed its own removal and is stepping down")
        return 0

    def propose(self, bytes data):
        """Append ``data`` as a new entry; returns its index. Raises NotLeader, or
        ProposalDropped during a leadership transfer."""
        self._check_proposable()
        self._append_local([data], _ENTRY_NORMAL)
        if self._trace is not None:
            self._trace_state()
        return self.log.last()

    def propose_batch(self, list datas):
        """Append many entries at once; returns the index of the first."""
        self._check_proposable()
        for d in datas:
            if not isinstance(d, bytes):
                raise TypeError("proposals must be bytes")
        first = self.log.last() + 1
        if datas:
            self._append_local(datas, _ENTRY_NORMAL)
            if self._trace is not None:
                self._trace_state()
        return first

    def propose_conf_change(self, int op, uint64_t node, bytes context=b""):
        """Propose one single-server change (diss. §4.1): CONF_ADD_VOTER (also
        promotes a learner), CONF_ADD_LEARNER or CONF_REMOVE of ``node``. Returns the
        index of the ENTRY_CONF entry, which holds the whole new configuration and
        ``context`` (opaque: the runtime's member addresses). It takes effect at
        once, on this leader and on each follower when appended.

        Raises ConfChangeRefused while another change is uncommitted, before this
        leader has committed an entry of its own term (the no-op rule: without it a
        change could be decided by a majority that an earlier leader's uncommitted
        change did not overlap, Ongaro's 2015 raft-dev correction), or when the change
        makes no sense; NotLeader; ProposalDropped during a transfer."""
        self._check_proposable()
        if not self._reads_can_start():
            raise ConfChangeNotYet("this leader has not committed an entry of its term yet; retry")
        if self.conf_index > self.log.committed:
            raise ConfChangeNotYet(f"the configuration change at index {self.conf_index} is not committed yet; retry")
        voters, learners = conf_after_change(self.voters, self.learners, op, node)
        self._append_local([encode_conf(voters, learners, context)], _ENTRY_CONF)
        if self._trace is not None:
            self._trace_state()
        return self.log.last()

    def transfer_leadership(self, uint64_t target):
        """Hand leadership to voter ``target`` (diss. §3.10): stop taking proposals,
        bring it up to date, then send it TimeoutNow so it campaigns at once. Gives up
        after an election timeout (proposals are taken again). Raises NotLeader."""
        if self.role != _LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if not self._is_voter(target):
            raise LocalProtocolError(f"node {target} is not a voter")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self._transfer_elapsed = 0
        cdef Progress pr = <Progress>self.progress[target]
        if pr.match == self.log.last():
            self._send_timeout_now(target)
        elif not pr.is_paused():
            self._send_append(target, pr, False)
        if self._trace is not None:
            self._trace_state()

    cdef inline uint64_t _apply_limit(self):
        return min(self.log.committed, self.log.stable)

    def has_ready(self):
        """Is there anything to persist, send or apply?"""
        if self._ready_outstanding:
            return False
        if self._broadcast_pending and self.role == _LEADER:
            return True
        if self._ro.states or (self.role == _LEADER and self._ro.round_due()
                               and self._reads_can_start()):
            return True
        return (bool(self._msgs) or bool(self._msgs_after_persist)
                or self._pending_snapshot is not None
                or self.log.unstable_from <= self.log.last()
                or self._apply_limit() > self.log.applied
                or self.term != self._prev_hard_state.term
                or self.vote != self._prev_hard_state.vote
                or (self._hint_due and self.log.committed != self._prev_hard_state.commit))

    def ready(self):
        """Collect the next batch of work. Call advance(ready) when it is done."""
        if self._ready_outstanding:
            raise LocalProtocolError("ready() called again before advance()")
        if self._broadcast_pending and self.role == _LEADER:
            self._broadcast_append()
        if (self.role == _LEADER and self._ro.round_due()
                and self._reads_can_start()):
            self._start_read_round()
        self._step_down_if_removed()
        cdef Ready rd = Ready.__new__(Ready)
        cdef RaftLog log = self.log
        cdef HardState prev = self._prev_hard_state
        rd.snapshot = self._pending_snapshot
        self._pending_snapshot = None
        rd._fsync = rd.snapshot is not None
        cdef bint has_entries = log.unstable_from <= log.last()
        cdef bint term_or_vote = self.term != prev.term or self.vote != prev.vote
        # The commit index is volatile (Figure 2); the hard state carries it only as a
        # hint that saves a restarted node some catching up. A new one rides the next
        # write that happens anyway (entries, a snapshot, a term or vote), or goes on
        # its own once it has waited a tick (_hint_due): not a write of its own per
        # commit (at one request in flight, one per request on every node).
        if term_or_vote or (log.committed != prev.commit
                            and (has_entries or rd._fsync or self._hint_due)):
            rd._fsync = rd._fsync or term_or_vote
            rd.hard_state = HardState(self.term, self.vote, log.committed)
            self._prev_hard_state = rd.hard_state
            self._hint_due = False
        if has_entries:
            rd.entries = log._entries[log.unstable_from - log.offset:]
            rd._last_index = log.last()
            rd._last_term = log.term_at(rd._last_index)
            log.unstable_from = log.last() + 1
            rd._fsync = True
        else:
            rd.entries = []
        rd.messages = self._msgs
        rd.messages_after_persist = self._msgs_after_persist
        rd.read_states = self._ro.take_states()
        self._msgs = []
        self._msgs_after_persist = []
        cdef uint64_t limit = self._apply_limit()
        if self._handed < log.applied:
            self._handed = log.applied
        if limit > self._handed:
            rd.committed_entries = log._entries[self._handed + 1 - log.offset:limit + 1 - log.offset]
            self._handed = limit
        else:
            rd.committed_entries = []
        rd._applied_to = self._handed
        self._ready_outstanding = True
        self._ready_seq += 1
        rd._seq = self._ready_seq
        if self._trace is not None:
            # with the commit hint this Ready leaves on disk once written
            self._trace.append(("ready", self.id, rd._seq, self._prev_hard_state.commit))
            self._trace_state()
        return rd

    def advance(self, Ready rd):
        """The runtime has persisted, sent and applied everything in ``rd``."""
        if not self._ready_outstanding or rd._seq != self._ready_seq:
            raise LocalProtocolError("advance() without an outstanding ready()")
        self._ready_outstanding = False
        if self._trace is not None:
            self._trace.append(("advance", self.id, rd._seq))
        cdef RaftLog log = self.log
        if rd._last_index:
            # Durable only if the entry written is still ours (no truncation since).
            if rd._last_index <= log.last() and rd._last_index >= log.offset \
                    and log.term_at(rd._last_index) == rd._last_term:
                if rd._last_index > log.stable:
                    log.stable = rd._last_index
        # A snapshot installed since ready() may have moved applied further.
        if rd._applied_to > log.applied:
            log.applied = rd._applied_to
        if self.role == _LEADER and self._maybe_commit():
            self._broadcast_pending = True
        if self._trace is not None:
            self._trace_state()

    # -- output between ready() and advance() --
    #
    # While a Ready's write is in progress (an fdatasync: a millisecond or more),
    # the node keeps stepping messages and taking proposals. What that produces and
    # does not depend on the write may leave at once instead of waiting for the
    # next Ready: rule 1 of the persistence contract (module docstring) holds for
    # every message in `messages` whenever it is created, confirmed reads depend on
    # heartbeats only (diss. §6.4), and committed entries are durable on a majority
    # and, being <= log.stable, locally too. So a leader replicates new proposals,
    # answers reads and applies commits while its own fsync runs (diss. §10.2.1).

    def take_messages(self):
        """Messages that may be sent now (never messages_after_persist). On a leader,
        first builds the AppendEntries for new entries or commit news and starts
        the ReadIndex round of waiting reads, as ready() would."""
        if self.role == _LEADER:
            if self._broadcast_pending:
                self._broadcast_append()
            if (self._ro.round_due()
                    and self._reads_can_start()):
                self._start_read_round()
            self._step_down_if_removed()
        cdef list msgs = self._msgs
        self._msgs = []
        return msgs

    def take_read_states(self):
        """Reads confirmed since the last ready(): [(ctx, read_index)]."""
        return self._ro.take_states()

    def take_committed(self):
        """Committed, locally durable entries not yet handed out. The caller applies
        them at once, in order, and has already applied the committed_entries of
        the outstanding Ready: so they count as applied from here on (compact()
        may use them)."""
        cdef RaftLog log = self.log
        cdef uint64_t limit = self._apply_limit()
        if self._handed < log.applied:
            self._handed = log.applied
        if limit <= self._handed:
            return []
        cdef list out = log._entries[self._handed + 1 - log.offset:limit + 1 - log.offset]
        self._handed = limit
        log.applied = limit
        return out

    # -- introspection --

    @property
    def hard_state(self):
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def commit(self):
        return self.log.committed

    @property
    def commit_hint(self):
        """The commit index in the hard state the latest Ready carried: on disk once
        that Ready is written (a newer commit index waits for a later one, see ready())."""
        return self._prev_hard_state.commit

    @property
    def applied(self):
        return self.log.applied

    @property
    def last_index(self):
        return self.log.last()

    def conf_at(self, uint64_t index):
        """The configuration in force at ``index`` (encode_conf's bytes), for a snapshot
        taken there: index >= first_index - 1 (the latest snapshot's index)."""
        if index + 1 < self.log.offset:
            raise LocalProtocolError(f"index {index} is compacted (first index {self.log.offset})")
        return self._conf_at(index)

    @property
    def conf_context(self):
        """The ``context`` of the configuration in force (b"" for the initial one)."""
        return decode_conf(self._conf)[2]

    @property
    def is_voter(self):
        return self._self_voter

    @property
    def role_name(self):
        return ROLE_NAMES[self.role]

    def progress_of(self, uint64_t peer):
        """The leader's Progress for ``peer`` (None if not leader)."""
        return self.progress.get(peer)

    def status(self):
        """A plain dict describing this node (for tools, logs and tests)."""
        return {
            "id": self.id,
            "role": ROLE_NAMES[self.role],
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "stable": self.log.stable,
            "first_index": self.log.offset,
            "last_index": self.log.last(),
            "snapshot_index": self.log.offset - 1,
            "log_bytes": self.log.mem_bytes,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "conf_index": self.conf_index,
            "lead_transferee": self.lead_transferee,
            "progress": {p: {"match": pr.match, "next": pr.next,
                             "state": ("probe", "replicate", "snapshot")[pr.state],
                             "learner": p in self.learners}
                         for p, pr in self.progress.items()},
        }

