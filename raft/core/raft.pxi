# The protocol (etcd's raft.go): roles and elections (PreVote, CheckQuorum),
# replication and commit, InstallSnapshot, ReadIndex rounds, message validation and
# dispatch. `_Raft` holds the state (declared in raft/_core.pxd) and every cdef
# method; `RawNode` (core/rawnode.pxi) subclasses it with the public API.
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

cdef Py_ssize_t _entries_bytes(list ents):
    cdef Py_ssize_t i, total = 0
    for i in range(PyList_GET_SIZE(ents)):
        total += PyBytes_GET_SIZE((<Entry>PyList_GET_ITEM(ents, i)).data) + _ENTRY_MEM_OVERHEAD
    return total


cdef inline uint64_t _splitmix64(uint64_t* state):
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef class _Raft:
    """The protocol state and its transitions; use ``RawNode``, which adds the
    public API (construction, tick/step/propose, Ready/advance)."""

    # -- randomness and message construction --

    cdef uint64_t _rand(self):
        return _splitmix64(&self.rng_state)

    cdef void _reset_randomized_timeout(self):
        # §5.2: randomized in [election_tick, 2 * election_tick).
        self.randomized_election_tick = self.election_tick + <int>(self._rand() % <uint64_t>self.election_tick)

    cdef Message _new_msg(self, int type, uint64_t dst):
        cdef Message m = Message.__new__(Message)
        m.type = type
        m.src = self.id
        m.dst = dst
        m.term = self.term
        m.entries = []
        self.next_msg_id += 1
        m.msg_id = self.next_msg_id
        if type == _MSG_APP:
            m.context = self._ro.seq
        return m

    cdef inline void _send(self, Message m):
        self._msgs.append(m)
        if self._trace is not None:
            self._trace.append(("send", self.id, m, False))

    cdef inline void _send_after_persist(self, Message m):
        self._msgs_after_persist.append(m)
        if self._trace is not None:
            self._trace.append(("send", self.id, m, True))

    cdef void _trace_state(self):
        """End of an API call: the node's state, for the trace checker to compare."""
        cdef uint64_t last = self.log.last()
        self._trace.append(("state", self.id, self.term, self.vote, self.role,
                            self.log.committed, last, self.log.term_at(last)))

    # -- role changes --

    cdef int _reset(self, uint64_t term) except -1:
        if term != self.term:
            _invariant(term > self.term, f"terms only grow ({self.term} -> {term})")
            self.term = term
            self.vote = 0
        self.leader = 0
        # The election timer is NOT reset here: Figure 2 restarts it only on
        # AppendEntries from the current leader, on granting a vote, and when we
        # become candidate. Resetting it whenever a higher term is seen would let
        # one out-of-date node that keeps campaigning hold back everybody else.
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.progress = {}
        self._broadcast_pending = False
        self._commit_pending = False
        self._rx_buf = None              # a partly received snapshot is abandoned
        self._pre_candidate = False
        self.lead_transferee = 0             # a transfer ends with the term or the role
        # Reads not yet confirmed die with the leadership; the runtime fails them
        # when it sees the role change. Confirmed ones (read_states) stay valid.
        self._ro.drop_pending()
        return 0

    cdef int _become_follower(self, uint64_t term, uint64_t leader) except -1:
        if self.role == _LEADER:
            self.election_elapsed = 0    # a deposed leader starts a fresh timer
        self._reset(term)
        self.role = _FOLLOWER
        self.leader = leader
        return 0

    cdef int _become_candidate(self) except -1:
        _invariant(self.role != _LEADER, "a leader does not campaign")
        self._reset(self.term + 1)
        self.election_elapsed = 0
        self.vote = self.id
        self.role = _CANDIDATE
        self.votes[self.id] = True
        return 0

    cdef int _become_leader(self) except -1:
        _invariant(self.role == _CANDIDATE, "only a candidate becomes leader")
        cdef uint64_t peer
        cdef uint64_t term = self.term
        self._reset(term)
        self.role = _LEADER
        self.leader = self.id
        self.election_elapsed = 0            # CheckQuorum counts from here
        for peer in self.peers:
            self.progress[peer] = Progress(self.log.last() + 1, self.max_inflight,
                                           self.max_inflight_bytes)
        if self._trace is not None:
            self._trace.append(("leader", self.id, self.term))
        # diss. §6.4: a no-op entry of the new term lets earlier-term entries commit
        # (indirectly, §5.4.2) and tells the leader what is committed.
        self._append_local([b""], _ENTRY_NOOP)
        return 0

    cdef int _campaign(self) except -1:
        cdef uint64_t peer
        cdef Message m
        if not self._self_voter:
            return 0                         # learners and removed servers never campaign (diss. §4.2.1)
        self._become_candidate()
        if self._trace is not None:
            self._trace.append(("timeout", self.id, self.term))
        if self.voters == (self.id,):
            self._become_leader()
            return 0
        for peer in self.voters:
            if peer == self.id:
                continue
            m = self._new_msg(_MSG_VOTE, peer)
            m.index = self.log.last()
            m.log_term = self.log.term_at(m.index)
            # The self-vote must be durable before anyone may count on it.
            self._send_after_persist(m)
        return 0

    cdef int _pre_campaign(self) except -1:
        """The election timer fired with PreVote on: ask every voter whether it
        would vote for us in term + 1. Nothing durable changes, so the requests
        go out at once; only a majority of grants (or a refusal from a later term,
        _handle_prevote_resp) starts the real election."""
        cdef uint64_t peer
        cdef Message m
        if not self._self_voter:
            return 0
        if self.voters == (self.id,):
            return self._campaign()
        self._pre_candidate = True
        self._prevotes = {self.id: True}
        self.leader = 0                      # we no longer hear one: grant others' pre-votes
        self._reset_randomized_timeout()     # a failed round retries after a fresh timeout
        for peer in self.voters:
            if peer == self.id:
                continue
            m = self._new_msg(_MSG_PREVOTE, peer)
            m.term = self.term + 1
            m.index = self.log.last()
            m.log_term = self.log.term_at(m.index)
            self._send(m)
        return 0

    cdef int _handle_prevote(self, Message m) except -1:
        """Would we vote for m.src in m.term? Answer without changing any state.

        Grant iff m.term is beyond ours, the candidate's log is at least as
        up-to-date as ours (§5.4.1), and we have not heard from a leader within
        the election timeout (diss. §9.6: a node that still hears a leader does
        not help to depose it)."""
        cdef Message r = self._new_msg(_MSG_PREVOTE_RESP, m.src)
        cdef uint64_t last = self.log.last()
        cdef uint64_t last_term = self.log.term_at(last)
        cdef bint up_to_date = m.log_term > last_term or (m.log_term == last_term and m.index >= last)
        cdef bint in_lease = self.role == _LEADER or (
            self.leader != 0 and self.election_elapsed < self.election_tick)
        if m.term > self.term and up_to_date and not in_lease:
            r.term = m.term                  # the grant names the round it answers
            r.reject = False
        else:
            r.reject = True
        self._send(r)                        # promises nothing durable
        return 0

    cdef int _handle_prevote_resp(self, Message m) except -1:
        if not self._pre_candidate or self.role == _LEADER:
            return 0
        if m.reject and m.term > self.term:
            # A voter already in a later term refused (a refusal carries the
            # responder's term). Pre-votes for term + 1 can never win there: a voter
            # ahead in term but behind in log and one behind in term but ahead in log
            # would refuse each other's pre-votes forever (found with membership
            # changes: two voters, or an even split). Campaign at once instead: our
            # term rises at most to one a server already has, so nobody is disrupted,
            # and the next pre-vote round asks for a term the others can grant.
            self._pre_candidate = False
            return self._campaign()
        if m.reject:
            self._prevotes[m.src] = False
        elif m.term == self.term + 1:
            self._prevotes[m.src] = True
        else:
            return 0                         # a grant for another round
        if self._is_quorum(self._count_granted(self._prevotes)):
            self._pre_candidate = False
            self._campaign()
        return 0

    # -- leader: log and replication --

    cdef int _append_local(self, list datas, int type) except -1:
        cdef uint64_t first = self.log.last() + 1
        cdef uint64_t index = first - 1
        cdef object data
        cdef Entry e
        for data in datas:
            index += 1
            e = Entry(index, self.term, type, data)
            self.log.append_entry(e)
            if type == _ENTRY_CONF:
                self._conf_appended(e)       # in force from now on (diss. §4.1)
        self._broadcast_pending = True
        if self._trace is not None and type != _ENTRY_NOOP:
            self._trace.append(("propose", self.id, self.log.entries(first, index + 1)))
        return 0

    cdef int _send_append(self, uint64_t peer, Progress pr, bint heartbeat) except -1:
        """Send the next AppendEntries to ``peer`` if flow control allows.

        heartbeat: in REPLICATE state send an empty AppendEntries at matchIndex
        (it can never be rejected for a gap); in PROBE state re-probe at nextIndex.
        """
        cdef Message m
        cdef list ents
        cdef uint64_t prev
        if pr.state == _SNAPSHOT:
            return self._send_snapshot(peer, pr, False)
        if heartbeat and pr.state == _REPLICATE:
            m = self._new_msg(_MSG_APP, peer)
            # At matchIndex, or at our snapshot if that is compacted: a follower
            # lacking it rejects, and the rejection leads to InstallSnapshot.
            m.index = pr.match if pr.match + 1 >= self.log.offset else self.log.offset - 1
            m.log_term = self.log.term_at(m.index)
            m.commit = self.log.committed
            self._send(m)
            pr.note_commit_sent(min(m.commit, m.index))
            return 0
        if heartbeat:
            pr.probe_sent = False
        if pr.is_paused():
            return 0
        if pr.next < self.log.offset:
            # §7: the entries the follower needs were compacted away.
            _invariant(self._snapshot is not None and self._snapshot.index == self.log.offset - 1,
                       "the log is compacted but the snapshot covering it is missing")
            pr.become_snapshot(self._snapshot.index)
            return self._send_snapshot(peer, pr, False)
        prev = pr.next - 1
        if heartbeat:
            # A heartbeat in PROBE state probes without entries; they follow its ack
            # (as etcd sends entries on the heartbeat response). Resending them every
            # heartbeat interval would flood a follower still receiving a large entry
            # (a 17 MiB one takes longer than an interval): it falls behind on the
            # stream, misses heartbeats and starts an election (issue 15, item 1).
            ents = []
        else:
            # At least one entry, however large: an entry over max_msg_bytes goes
            # alone (the transport is sized for it: raft/limits.py).
            ents = self.log.slice(pr.next, self.log.last() + 1, self.max_msg_bytes)
        if not ents and not heartbeat and pr.state == _REPLICATE:
            return 0
        m = self._new_msg(_MSG_APP, peer)
        m.index = prev
        m.log_term = self.log.term_at(prev)
        m.entries = ents
        m.commit = self.log.committed
        self._send(m)
        pr.note_commit_sent(min(m.commit, prev + <uint64_t>PyList_GET_SIZE(ents)))
        if pr.state == _REPLICATE:
            pr.next = prev + <uint64_t>PyList_GET_SIZE(ents) + 1
            pr.add_inflight(pr.next - 1, _entries_bytes(ents))
        else:
            pr.probe_sent = True
        return 0

    cdef int _broadcast_append(self) except -1:
        """Send new entries to every follower; tell the rest a new commit index if
        it is urgent (a configuration's, see _maybe_commit)."""
        cdef uint64_t peer
        cdef Progress pr
        cdef bint commit_news = self._commit_pending   # only urgent news: see _maybe_commit
        self._broadcast_pending = False
        self._commit_pending = False
        for peer in self.peers:
            pr = <Progress>self.progress[peer]
            # Pipelining: keep sending while the in-flight window has room.
            while pr.next <= self.log.last() and not pr.is_paused():
                self._send_append(peer, pr, False)
                if pr.state == _PROBE:
                    break
            if commit_news:
                self._maybe_send_commit(peer, pr)
        return 0

    cdef int _maybe_send_commit(self, uint64_t peer, Progress pr) except -1:
        """If the follower holds committed entries it has not been told are
        committed, send an empty AppendEntries at matchIndex carrying the commit
        index, so it applies without waiting for a heartbeat (only for urgent
        commit news, see _maybe_commit)."""
        if pr.state == _REPLICATE and pr.sent_commit < min(self.log.committed, pr.match):
            self._send_append(peer, pr, True)
        return 0

    cdef int _broadcast_heartbeat(self) except -1:
        cdef uint64_t peer
        cdef Progress pr
        cdef Message m
        for peer in self.peers:
            pr = <Progress>self.progress[peer]
            if pr.state == _SNAPSHOT:
                # Chunks reset the follower's election timer; with no ack for a
                # whole interval, assume chunks were lost and resend from the last ack.
                self._send_snapshot(peer, pr, not pr.progressed)
                pr.progressed = False
                # And an empty AppendEntries at our snapshot's index. A follower that
                # moved to a higher term drops our chunks but rejects this with its
                # term, so we step down (§5.1); without it, a candidate whose
                # pre-votes we and our followers refuse could wait forever. One that
                # already holds the entry accepts, and replication resumes.
                m = self._new_msg(_MSG_APP, peer)
                m.index = self.log.offset - 1
                m.log_term = self.log.snapshot_term
                m.commit = self.log.committed
                self._send(m)
                continue
            if (pr.state == _REPLICATE and not pr.progressed
                    and pr.match < self.log.last() and pr.inflight > 0):
                # No ack for a whole heartbeat interval with entries in flight:
                # assume they were lost and probe again from matchIndex.
                pr.become_probe()
            pr.progressed = False
            self._send_append(peer, pr, True)
        return 0

    # -- quorum: every majority the node counts (elections, PreVote, commit,
    # ReadIndex, CheckQuorum) goes through these two, which ask the tracker's
    # majority functions (core/tracker.pxi) about our voter configuration --

    cdef inline bint _is_quorum(self, Py_ssize_t n) noexcept:
        """Do ``n`` voters (ourselves included) make a majority of the configuration?"""
        return _majority_won(n, self.voters)

    cdef uint64_t _quorum_index(self, list matches) except? 0:
        """The largest index a majority holds, given one match index per voter."""
        return _majority_index(matches, self.voters)

    cdef bint _maybe_commit(self) except -1:
        """§5.3/§5.4.2: commit the largest index a majority holds, if it is of our term."""
        cdef list matches = []
        cdef uint64_t voter, n
        if self._removed_and_committed():
            # It committed its own removal and steps down at its next ready() (after
            # telling the followers): no more commits meanwhile (the spec's
            # AdvanceCommitIndex makes it a follower in the same step).
            return False
        # The voters only (a leader being removed does not count itself, diss. §4.2.2).
        for voter in self.voters:
            if voter == self.id:
                matches.append(self.log.stable)
            else:
                matches.append((<Progress>self.progress[voter]).match)
        n = self._quorum_index(matches)
        if n <= self.log.committed:
            return False
        # Figure 8: never commit an earlier term's entry by counting replicas.
        if self.log.term_at(n) != self.term and not self.unsafe_commit_any_term:
            return False
        if self._conf_committed_between(self.log.committed, n):
            # A configuration takes its final effect when committed (a removed
            # leader steps down, diss. §4.2.2): followers are told at once, by an
            # AppendEntries of its own (_broadcast_append). Other commit news waits
            # for the next AppendEntries or heartbeat (heartbeat_tick), which carry
            # the commit index anyway: at one write in flight that saves each
            # follower a message, a Ready, an ack and a hint write per commit, and
            # Raft needs followers to know the commit index only eventually (§5.3).
            self._commit_pending = True
        self.log.committed = n
        if self._trace is not None:
            self._trace.append(("commit", self.id, n))
        return True

    cdef bint _conf_committed_between(self, uint64_t old, uint64_t new):
        """Is a configuration entry at an index in (old, new]?"""
        cdef Py_ssize_t n = len(self._conf_log)
        cdef uint64_t index
        while n:
            n -= 1
            index = <uint64_t>self._conf_log[n][0]
            if index <= old:
                return False
            if index <= new:
                return True
        return False

    # -- configuration (diss. ch. 4; encoding and change rule in core/conf.pxi) --
    #
    # A server uses the latest configuration in its log, committed or not (§4.1):
    # it takes effect when its entry is appended and is undone if that entry is
    # truncated. _conf_log lists the ENTRY_CONF entries in the log; _base_conf is
    # the configuration at log.offset - 1 (the snapshot's, or the initial one).

    cdef inline bint _is_voter(self, uint64_t node) noexcept:
        cdef object v
        for v in self.voters:
            if <uint64_t>v == node:
                return True
        return False

    cdef Py_ssize_t _count_granted(self, dict votes):
        """Granted votes from current voters (a grant from a server the latest
        configuration has removed, or from a learner, counts for nothing)."""
        cdef Py_ssize_t granted = 0
        cdef object k, v
        for k, v in votes.items():
            if v and self._is_voter(<uint64_t>k):
                granted += 1
        return granted

    cdef int _set_conf(self, bytes conf, uint64_t index) except -1:
        cdef tuple voters, learners
        cdef uint64_t peer
        voters, learners, _ = decode_conf(conf)
        cdef bint changed = voters != self.voters or learners != self.learners
        self.voters = voters
        self.learners = learners
        self._self_voter = self._is_voter(self.id)
        self.conf_index = index
        self._conf = conf
        cdef list members = [p for p in sorted(voters + learners) if p != self.id]
        if self.role == _LEADER:
            # New members: replicate from the configuration entry itself (probing back
            # from there). Removed ones keep receiving the log until the change commits
            # (_prune_removed), so they learn they are out and stop campaigning.
            for peer in members:
                if peer not in self.progress:
                    self.progress[peer] = Progress(self.log.last(), self.max_inflight,
                                                   self.max_inflight_bytes)
            self.peers = sorted(self.progress)
            if self.lead_transferee and not self._is_voter(self.lead_transferee):
                self.lead_transferee = 0
        else:
            self.peers = members
        if self._trace is not None and changed:
            self._trace.append(("conf", self.id, index, voters, learners))
        return 0

    cdef int _conf_appended(self, Entry e) except -1:
        self._conf_log.append((e.index, e.data))
        return self._set_conf(e.data, e.index)

    cdef int _conf_truncated(self, uint64_t index) except -1:
        """Entries from ``index`` on were dropped: fall back to the latest
        configuration still in the log (§4.1)."""
        # (No negative indexing: the core is compiled with wraparound off.)
        cdef Py_ssize_t n = len(self._conf_log)
        if n == 0 or self._conf_log[n - 1][0] < index:
            return 0
        while n and self._conf_log[n - 1][0] >= index:
            self._conf_log.pop()
            n -= 1
        if n:
            return self._set_conf(self._conf_log[n - 1][1], self._conf_log[n - 1][0])
        return self._set_conf(self._base_conf, 0)

    cdef bytes _conf_at(self, uint64_t index):
        """The configuration in force at ``index`` (>= log.offset - 1)."""
        cdef bytes conf = self._base_conf
        cdef tuple item
        for item in self._conf_log:
            if <uint64_t>item[0] > index:
                break
            conf = item[1]
        return conf

    cdef int _conf_compacted(self, uint64_t index) except -1:
        """The log up to ``index`` became a snapshot."""
        self._base_conf = self._conf_at(index)
        while self._conf_log and <uint64_t>self._conf_log[0][0] <= index:
            self._conf_log.pop(0)
        return 0

    cdef int _conf_restored(self, bytes conf) except -1:
        """The whole log was replaced by a snapshot carrying ``conf``."""
        self._conf_log = []
        if conf:
            self._base_conf = conf
        return self._set_conf(self._base_conf, 0)

    cdef int _prune_removed(self) except -1:
        """Leader: once the configuration is committed, stop replicating to servers
        it removed (they have been sent the entry that removes them)."""
        cdef object peer
        if self.role != _LEADER or self.conf_index > self.log.committed:
            return 0
        if len(self.peers) == len(self.voters) + len(self.learners) - (1 if self._self_voter else 0):
            return 0                          # nothing to prune (the common case)
        for peer in list(self.progress):
            if not self._is_voter(<uint64_t>peer) and peer not in self.learners:
                del self.progress[peer]
        self.peers = sorted(self.progress)
        return 0

    cdef bint _removed_and_committed(self):
        """A leader whose latest configuration, committed, no longer lists it as a voter."""
        return (self.role == _LEADER and not self._self_voter
                and self.conf_index <= self.log.committed)

    cdef uint64_t _successor(self):
        """The voter a stepping-down leader hands over to: one that acknowledged our
        whole log, else one we have sent it all to (REPLICATE: the AppendEntries go
        first on the same connection, so it campaigns with our whole log unless they
        are lost; then it merely loses an election). 0: none (wait for a timeout)."""
        cdef uint64_t peer, best = 0, last = self.log.last()
        cdef Progress pr
        for peer in self.voters:
            pr = <Progress>self.progress[peer]
            if pr.match == last:
                return peer
            if best == 0 and pr.state == _REPLICATE and pr.next == last + 1:
                best = peer
        return best

    cdef int _step_down_if_removed(self) except -1:
        """diss. §4.2.2: a leader the latest configuration removes manages the
        cluster until that configuration is committed, then steps down. It first
        hands leadership to an up-to-date voter (TimeoutNow), so the cluster need
        not wait an election timeout; the messages telling followers the commit
        index are already queued."""
        cdef uint64_t peer
        self._prune_removed()
        if not self._removed_and_committed():
            return 0
        peer = self._successor()
        if peer:
            self._send_timeout_now(peer)
        if self._trace is not None:
            self._trace.append(("stepdown", self.id, self.term))
        self._become_follower(self.term, 0)
        return 0

    # -- leader transfer (diss. §3.10) --

    cdef int _send_timeout_now(self, uint64_t peer) except -1:
        self._send(self._new_msg(_MSG_TIMEOUT_NOW, peer))
        return 0

    cdef int _handle_timeout_now(self, Message m) except -1:
        """The leader of our term asks us to campaign now: it has stopped taking
        proposals and our log holds all of its entries. We skip PreVote (the other
        voters still hear a leader and would refuse it) and start a real election."""
        if self.role != _FOLLOWER or not self._self_voter:
            return 0
        self._campaign()
        return 0

    # -- message handlers --

    cdef int _handle_append(self, Message m) except -1:
        """Follower side of AppendEntries (§5.3)."""
        cdef RaftLog log = self.log
        cdef Message r = self._new_msg(_MSG_APP_RESP, m.src)
        cdef Py_ssize_t i, n = PyList_GET_SIZE(m.entries)
        cdef Entry e
        cdef uint64_t last_new, hint
        self.election_elapsed = 0
        self.leader = m.src
        self._pre_candidate = False
        r.context = m.context             # confirms the leader's read round (diss. §6.4)
        if not log.match_term(m.index, m.log_term):
            r.reject = True
            r.index = m.index
            hint = log.find_conflict_by_term(m.index, m.log_term)
            r.reject_hint = hint
            r.log_term = log.term_at(hint)
            self._send_after_persist(r)
            return 0
        last_new = m.index + <uint64_t>n
        for i in range(n):
            e = <Entry>PyList_GET_ITEM(m.entries, i)
            if e.index < log.offset:
                continue                       # covered by our snapshot: committed
            if e.index <= log.last():
                if log._terms[e.index - log.offset] == e.term:
                    continue                   # already have it (re-delivery)
                log.truncate_from(e.index)     # conflict: drop our suffix (§5.3)
                self._conf_truncated(e.index)  # ... and any configuration it held
            log.append_entry(e)
            if e.type == _ENTRY_CONF:
                self._conf_appended(e)
        # Figure 2: commitIndex = min(leaderCommit, index of last new entry).
        if m.commit > log.committed and last_new > log.committed:
            log.committed = min(m.commit, last_new)
        r.index = last_new
        self._send_after_persist(r)
        return 0

    cdef int _handle_append_resp(self, Message m) except -1:
        """Leader side of an AppendEntries response."""
        cdef Progress pr = <Progress>self.progress.get(m.src)
        cdef uint64_t j
        if pr is None:
            return 0
        pr.recent_active = True             # CheckQuorum: it answers us in our term
        # Any reply in our term confirms we were still leader when it was sent.
        if m.context > pr.read_acked:
            pr.read_acked = m.context
            if self._ro.pending:
                self._confirm_reads()
        if m.reject:
            # A rejection is stale unless it refuses what we are asking now:
            # in PROBE the one probe at next - 1; in REPLICATE anything above match;
            # in SNAPSHOT nothing (we send no AppendEntries).
            if pr.state == _SNAPSHOT:
                return 0
            if m.index == pr.match and m.reject_hint < pr.match:
                # It no longer holds the entry at matchIndex, which it acknowledged:
                # it lost its log (restarted on an empty data directory with
                # `raft serve --force-new`), or this rejection is a stale duplicate.
                # Start again from what it says it has; otherwise every later
                # rejection would look stale and it would never catch up. Lowering
                # match is safe: it only delays counting this follower, and the
                # commit index never goes back (_maybe_commit).
                pr.match = m.reject_hint
                pr.become_probe()
                self._send_append(m.src, pr, False)
                return 0
            if pr.state == _PROBE and m.index != pr.next - 1:
                return 0
            if pr.state == _REPLICATE and m.index <= pr.match:
                return 0
            # Skip back a whole term per round trip using the follower's hint.
            j = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if j > 0 and j == self.log.offset - 1 and self.log.snapshot_term > m.log_term:
                # The search stopped at our snapshot, whose last entry the follower
                # does not hold (its term there is lower): the match point is inside
                # the snapshot, so probe below it, which sends the snapshot (§7).
                # Without this the leader probed at the snapshot index forever.
                j -= 1
            pr.become_probe()
            if j + 1 > pr.next:
                pr.next = j + 1
            self._send_append(m.src, pr, False)
            return 0
        if pr.maybe_update(m.index):
            if self._maybe_commit():
                self._broadcast_pending = True
        if pr.state == _PROBE:
            if m.index + 1 >= pr.next:
                pr.become_replicate()            # the probe found the match point
        elif pr.state == _SNAPSHOT:
            if pr.match >= pr.snap_index:
                pr.become_replicate()            # installed: replicate from there
        else:
            if pr.next <= m.index:
                pr.next = m.index + 1
            pr.free_le(m.index)
        # Keep the pipe full.
        while pr.next <= self.log.last() and not pr.is_paused():
            self._send_append(m.src, pr, False)
            if pr.state == _PROBE:
                break
        if self._commit_pending:
            self._maybe_send_commit(m.src, pr)
        if m.src == self.lead_transferee and pr.match == self.log.last():
            self._send_timeout_now(m.src)    # the target holds our whole log (diss. §3.10)
        return 0

    # -- InstallSnapshot (§7) --

    cdef int _send_snapshot(self, uint64_t peer, Progress pr, bint retransmit) except -1:
        """Send ``peer`` the next chunks of our snapshot, keeping at most
        _SNAP_WINDOW unacknowledged. retransmit: start again from the last ack.

        A chunk is MSG_SNAP with index/log_term = the snapshot's last entry,
        commit = the chunk's byte offset, reject_hint = the snapshot's size and
        data = the bytes (docs/protocol.md). Chunks are at most max_msg_bytes."""
        cdef Snapshot snap = self._snapshot
        cdef Py_ssize_t size = self.max_msg_bytes
        cdef Py_ssize_t total = PyBytes_GET_SIZE(snap.data)
        cdef Py_ssize_t nchunks = (total + size - 1) // size if total else 1
        cdef Py_ssize_t lo
        cdef Message m
        if pr.snap_index != snap.index:
            pr.become_snapshot(snap.index)      # we compacted again since: send the newer one
        if retransmit:
            pr.snap_next = pr.snap_acked
        while pr.snap_next < nchunks and pr.snap_next - pr.snap_acked < _SNAP_WINDOW:
            lo = pr.snap_next * size
            m = self._new_msg(_MSG_SNAP, peer)
            m.index = snap.index
            m.log_term = snap.term
            m.commit = <uint64_t>lo
            m.reject_hint = <uint64_t>total
            m.data = snap.data[lo:lo + size]
            if pr.snap_next == 0:
                # The first chunk carries the snapshot's configuration, as the one
                # ENTRY_CONF entry "at" the snapshot's index.
                m.entries = [Entry(snap.index, snap.term, _ENTRY_CONF, self._conf_at(snap.index))]
            self._send(m)
            pr.snap_next += 1
        return 0

    cdef int _handle_snap_resp(self, Message m) except -1:
        """Leader: a follower reports how many bytes of our snapshot it holds."""
        cdef Progress pr = <Progress>self.progress.get(m.src)
        cdef Py_ssize_t total, k
        if pr is not None:
            pr.recent_active = True         # CheckQuorum: it answers us in our term
        if (pr is None or pr.state != _SNAPSHOT or m.index != pr.snap_index
                or self._snapshot is None or self._snapshot.index != pr.snap_index):
            return 0                                # stale
        total = PyBytes_GET_SIZE(self._snapshot.data)
        # Chunks it holds in full (a partial chunk counts as missing).
        k = <Py_ssize_t>(m.reject_hint // <uint64_t>self.max_msg_bytes) if m.reject_hint <= <uint64_t>total else 0
        if m.reject:
            # It missed a chunk, or lost what it had (a restart): resume from what it has.
            pr.snap_acked = k
            pr.snap_next = k
        else:
            if k > pr.snap_acked:
                pr.snap_acked = k
                pr.progressed = True
            if pr.snap_next < pr.snap_acked:
                pr.snap_next = pr.snap_acked
        return self._send_snapshot(m.src, pr, False)

    cdef int _handle_snap(self, Message m) except -1:
        """Follower side of InstallSnapshot (§7), one chunk at a time.

        Chunks are assembled in memory in order; a gap is refused with the byte
        count we hold so the leader resends from there. The snapshot is installed
        when its last chunk arrives."""
        cdef RaftLog log = self.log
        cdef Message r
        cdef Py_ssize_t have
        cdef bint same
        self.election_elapsed = 0
        self.leader = m.src
        self._pre_candidate = False
        if m.index <= log.committed or log.match_term(m.index, m.log_term):
            # We already hold every entry the snapshot covers (Log Matching):
            # nothing to install, at most a commit index to learn.
            return self._install_done(m, False)
        same = (self._rx_buf is not None and self._rx_src == m.src and self._rx_term == m.term
                and self._rx_index == m.index and self._rx_log_term == m.log_term
                and self._rx_total == m.reject_hint)
        if not same and m.commit == 0:
            self._rx_src = m.src
            self._rx_term = m.term
            self._rx_index = m.index
            self._rx_log_term = m.log_term
            self._rx_total = m.reject_hint
            self._rx_buf = bytearray()
            self._rx_conf = (<Entry>m.entries[0]).data if m.entries else b""
            same = True
        have = len(self._rx_buf) if same else 0
        if not same or m.commit != <uint64_t>have:
            r = self._new_msg(_MSG_SNAP_RESP, m.src)
            r.index = m.index
            r.reject_hint = <uint64_t>have
            r.reject = not same or m.commit > <uint64_t>have     # a gap; a duplicate is just re-acked
            self._send(r)
            return 0
        self._rx_buf += m.data
        if <uint64_t>len(self._rx_buf) < self._rx_total:
            r = self._new_msg(_MSG_SNAP_RESP, m.src)
            r.index = m.index
            r.reject_hint = <uint64_t>len(self._rx_buf)
            self._send(r)                   # acks promise nothing durable: no persist needed
            return 0
        return self._install_done(m, True)

    cdef int _install_done(self, Message m, bint install) except -1:
        """The snapshot of ``m`` is complete (install) or already covered by our log.

        Either way our log now holds the leader's entries up to m.index, so we
        answer as to an AppendEntries that carried them: MSG_APP_RESP at m.index,
        after persist (the snapshot must be durable before the leader counts it)."""
        cdef Snapshot snap = Snapshot(m.index, m.log_term, bytes(self._rx_buf), self._rx_conf) if install else None
        cdef Message r
        if self.role == _CANDIDATE:
            self._become_follower(self.term, m.src)   # §5.2: a leader exists in our term
        if install:
            # Figure 13 step 7: the log conflicts with or ends before the snapshot:
            # discard it entirely (a log that holds (index, term) took the other branch).
            self.log.restore(m.index, m.log_term)
            self._conf_restored(snap.conf)
            self._snapshot = snap
            self._pending_snapshot = snap
        elif m.index > self.log.committed:
            self.log.committed = m.index       # the leader's snapshot is committed
        self._rx_buf = None
        if self._trace is not None:
            self._trace.append(("install", self.id, m, install))
        r = self._new_msg(_MSG_APP_RESP, m.src)
        r.index = m.index
        self._send_after_persist(r)
        return 0

    cdef int _handle_vote(self, Message m) except -1:
        """§5.2, §5.4.1: grant at most one vote per term, to an up-to-date candidate."""
        cdef Message r = self._new_msg(_MSG_VOTE_RESP, m.src)
        cdef uint64_t last = self.log.last()
        cdef uint64_t last_term = self.log.term_at(last)
        cdef bint can_vote = self.vote == 0 or self.vote == m.src
        cdef bint up_to_date = m.log_term > last_term or (m.log_term == last_term and m.index >= last)
        if can_vote and up_to_date:
            self.vote = m.src
            self.election_elapsed = 0       # granting a vote resets the timer (§5.2)
            r.reject = False
        else:
            r.reject = True
        self._send_after_persist(r)
        return 0

    cdef int _handle_vote_resp(self, Message m) except -1:
        if self.role != _CANDIDATE:
            return 0
        self.votes[m.src] = not m.reject
        # A candidate that cannot win stays candidate until its timer fires again
        # (Figure 2 has no other way out of candidacy).
        if self._is_quorum(self._count_granted(self.votes)):
            self._become_leader()
        return 0

    cdef int _validate(self, Message m) except -1:
        cdef Py_ssize_t i, n
        cdef Entry e
        cdef uint64_t prev_term
        if m.dst != self.id:
            raise RemoteProtocolError(f"message for node {m.dst} delivered to node {self.id}")
        # Any authenticated member may write to us, also one our configuration does not
        # (yet, or any longer) list: a new leader we have not caught up with, a server
        # being removed. What they say counts only if the configuration says so.
        if m.src == 0 or m.src == self.id:
            raise RemoteProtocolError(f"message from unknown node {m.src}")
        if m.type < _MSG_APP or m.type > _MSG_TIMEOUT_NOW:
            raise RemoteProtocolError(f"unknown message type {m.type}")
        if m.entries is None:
            raise RemoteProtocolError("entries must be a list")
        if m.type == _MSG_SNAP:
            if m.data is None:
                raise RemoteProtocolError("InstallSnapshot without data")
            if m.index == 0 or m.log_term == 0 or m.log_term > m.term:
                raise RemoteProtocolError("InstallSnapshot needs 0 < lastIncludedTerm <= term and index > 0")
            if m.commit + <uint64_t>PyBytes_GET_SIZE(m.data) > m.reject_hint:
                raise RemoteProtocolError("InstallSnapshot chunk extends past the snapshot's size")
            if m.entries:
                if (PyList_GET_SIZE(m.entries) != 1 or (<Entry>m.entries[0]).type != _ENTRY_CONF
                        or (<Entry>m.entries[0]).index != m.index):
                    raise RemoteProtocolError("InstallSnapshot carries at most its configuration entry")
                decode_conf((<Entry>m.entries[0]).data)
        elif m.data is not None and PyBytes_GET_SIZE(m.data):
            raise RemoteProtocolError("only InstallSnapshot carries data")
        self._check_roles(m)
        if m.type == _MSG_APP:
            n = PyList_GET_SIZE(m.entries)
            prev_term = m.log_term
            for i in range(n):
                e = m.entries[i]
                if e.index != m.index + <uint64_t>i + 1:
                    raise RemoteProtocolError("AppendEntries entries are not contiguous after prevLogIndex")
                if e.term < prev_term or e.term > m.term:
                    raise RemoteProtocolError("AppendEntries entry terms must not decrease or exceed the message term")
                if e.type == _ENTRY_CONF:
                    decode_conf(e.data)      # a malformed configuration is refused whole
                prev_term = e.term
            if m.log_term > m.term:
                raise RemoteProtocolError("prevLogTerm exceeds the message term")
        elif m.entries and m.type != _MSG_SNAP:
            raise RemoteProtocolError("only AppendEntries and InstallSnapshot carry entries")
        return 0

    cdef int _check_roles(self, Message m) except -1:
        """Messages that a correct peer can never send us in our current term
        (Election Safety, §5.2: at most one leader per term). Refused before any
        state changes, so a buggy or hostile (but authenticated) peer cannot stop
        us or make us act on them."""
        if m.term != self.term:
            return 0
        if m.type == _MSG_APP or m.type == _MSG_SNAP or m.type == _MSG_TIMEOUT_NOW:
            if self.role == _LEADER:
                raise RemoteProtocolError(
                    f"{MSG_NAMES[m.type]} from node {m.src} to the leader of its own term {m.term}")
            if self.leader != 0 and m.src != self.leader:
                raise RemoteProtocolError(
                    f"{MSG_NAMES[m.type]} from node {m.src} in term {m.term}, whose leader is {self.leader}")
        elif m.type == _MSG_APP_RESP and self.role == _LEADER and not m.reject \
                and m.index > self.log.last():
            # Our log only grows in our term (Leader Append-Only): nobody can hold more of it.
            raise RemoteProtocolError(
                f"node {m.src} acknowledged index {m.index} beyond our last index {self.log.last()}")
        return 0

    cdef bint _quorum_active(self):
        """Did a majority (ourselves included) talk to us since the last check?
        Clears the marks for the next election timeout."""
        cdef Py_ssize_t active = 1 if self._self_voter else 0
        cdef Progress pr
        cdef object peer
        for peer, pr in self.progress.items():
            if pr.recent_active and self._is_voter(<uint64_t>peer):
                active += 1
            pr.recent_active = False
        return self._is_quorum(active)

    cdef int _tick(self) except -1:
        if self.log.committed != self._prev_hard_state.commit:
            self._hint_due = True            # see RawNode.ready: the commit hint
        if self.role == _LEADER:
            if self.check_quorum:
                self.election_elapsed += 1
                if self.election_elapsed >= self.election_tick:
                    self.election_elapsed = 0
                    if not self._quorum_active():
                        # diss. §6.2: we cannot commit anything anyway; let the
                        # clients find the leader the majority elects.
                        if self._trace is not None:
                            self._trace.append(("stepdown", self.id, self.term))
                        self._become_follower(self.term, 0)
                        return 0
            if self.lead_transferee:
                self._transfer_elapsed += 1
                if self._transfer_elapsed >= self.election_tick:
                    self.lead_transferee = 0     # the target did not take over: give up (etcd)
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.heartbeat_tick:
                self.heartbeat_elapsed = 0
                self._broadcast_heartbeat()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_election_tick:
                self.election_elapsed = 0
                if self.pre_vote:
                    self._pre_campaign()
                else:
                    self._campaign()
        return 0

    cdef int _step(self, Message m) except -1:
        cdef Message r
        # PreVote messages carry a prospective term (ours + 1 for a request we
        # sent): they never change anyone's term (diss. §9.6).
        if m.type == _MSG_PREVOTE:
            return self._handle_prevote(m)
        if m.type == _MSG_PREVOTE_RESP:
            return self._handle_prevote_resp(m)
        if m.term > self.term:
            # §5.1: any message with a higher term makes us a follower of that term.
            self._become_follower(m.term, m.src if (m.type == _MSG_APP or m.type == _MSG_SNAP
                                                    or m.type == _MSG_TIMEOUT_NOW) else 0)
        elif m.term < self.term:
            # Stale sender: answer requests with our term so it steps down; drop responses.
            if m.type == _MSG_APP:
                r = self._new_msg(_MSG_APP_RESP, m.src)
                r.reject = True
                r.index = m.index
                self._send_after_persist(r)
            elif m.type == _MSG_VOTE:
                r = self._new_msg(_MSG_VOTE_RESP, m.src)
                r.reject = True
                self._send_after_persist(r)
            # Stale snapshot chunks and responses are dropped.
            return 0
        if m.type == _MSG_APP:
            if self.role == _CANDIDATE:
                self._become_follower(self.term, m.src)   # §5.2: a leader exists in our term
            _invariant(self.role != _LEADER, "two leaders in one term")   # _validate refuses it
            self._handle_append(m)
        elif m.type == _MSG_APP_RESP:
            if self.role == _LEADER:
                self._handle_append_resp(m)
        elif m.type == _MSG_VOTE:
            self._handle_vote(m)
        elif m.type == _MSG_VOTE_RESP:
            self._handle_vote_resp(m)
        elif m.type == _MSG_SNAP:
            # A candidate stays candidate until the snapshot is complete: the
            # role change is part of the install (what the spec's
            # HandleAppendEntries does), so a partial transfer changes no spec state.
            _invariant(self.role != _LEADER, "two leaders in one term")   # _validate refuses it
            self._handle_snap(m)
        elif m.type == _MSG_SNAP_RESP:
            if self.role == _LEADER:
                self._handle_snap_resp(m)
        elif m.type == _MSG_TIMEOUT_NOW:
            _invariant(self.role != _LEADER, "two leaders in one term")   # _validate refuses it
            self._handle_timeout_now(m)
        return 0

    cdef bint _reads_can_start(self):
        # diss. §6.4 step 1: the leader's commit index is current only once an
        # entry of its own term (the no-op) is committed.
        return self.log.term_at(self.log.committed) == self.term

    cdef int _start_read_round(self) except -1:
        """Give every read not yet in a round the current commit index and a
        new round, and send that round to every follower."""
        cdef uint64_t peer
        self._ro.start_round(self.log.committed)
        for peer in self.peers:
            self._send_append(peer, <Progress>self.progress[peer], True)
        self._confirm_reads()
        return 0

    cdef int _confirm_reads(self) except -1:
        """Confirm, in order, the reads whose round a majority has answered."""
        cdef list read
        cdef list pending = self._ro.pending
        cdef Py_ssize_t k = 0, acks
        cdef uint64_t peer, rnd
        while k < len(pending):
            read = pending[k]
            rnd = read[2]
            if rnd == 0:
                break
            acks = 0
            for peer in self.voters:
                if peer == self.id or (<Progress>self.progress[peer]).read_acked >= rnd:
                    acks += 1
            if not self._is_quorum(acks):
                break
            k += 1
        if k:
            self._ro.confirm_first(k)
        return 0

