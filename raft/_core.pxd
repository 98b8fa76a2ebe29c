# C enums and cdef class layouts of the compiled Raft core (raft/_core.pyx, which
# includes its parts from raft/core/).
#
# Kept apart from the implementation so other Cython modules (the wire codec, the
# trace checker) can cimport these types and read their fields at C speed.

from libc.stdint cimport uint64_t


# --- constants: written once here, as C enums ----------------------------------
# raft/core/types.pxi gives them their Python names (MSG_APP = _MSG_APP, ...);
# raft/net/codec.pyx cimports them. Message type values are part of the wire
# format: never reuse one.

cdef enum:
    _MSG_APP = 1
    _MSG_APP_RESP = 2
    _MSG_VOTE = 3
    _MSG_VOTE_RESP = 4
    _MSG_SNAP = 5          # InstallSnapshot chunk (§7)
    _MSG_SNAP_RESP = 6     # chunk acknowledgement (the install itself is acked by MSG_APP_RESP)
    _MSG_PREVOTE = 7       # "would you vote for me in term + 1?" (diss. §9.6)
    _MSG_PREVOTE_RESP = 8
    _MSG_TIMEOUT_NOW = 9   # leader transfer: "campaign now" (diss. §3.10)

cdef enum:
    _ENTRY_NORMAL = 0
    _ENTRY_NOOP = 1
    _ENTRY_CONF = 2        # a whole new configuration (core/conf.pxi), effective on append
    _ENTRY_MEM_OVERHEAD = 96   # see ENTRY_MEM_OVERHEAD in core/types.pxi

cdef enum:
    # propose_conf_change operations (single-server changes, diss. §4.1)
    _CONF_ADD_VOTER = 1    # add a voter, or promote a learner
    _CONF_ADD_LEARNER = 2
    _CONF_REMOVE = 3       # remove a voter or a learner

cdef enum:
    _FOLLOWER = 0
    _CANDIDATE = 1
    _LEADER = 2

cdef enum:
    _PROBE = 0
    _REPLICATE = 1
    _SNAPSHOT = 2
    # Snapshot chunks a leader keeps in flight to one follower.
    _SNAP_WINDOW = 4


cdef class Entry:
    # One log entry. Immutable once created; the same object travels from the
    # leader's log into messages, storage and the follower's log.
    cdef readonly uint64_t index
    cdef readonly uint64_t term
    cdef readonly int type          # ENTRY_NORMAL, ENTRY_NOOP, ...
    cdef readonly bytes data


cdef class HardState:
    # What must survive a crash (Figure 2 "persistent state"), plus the commit
    # index as a hint: restoring commit from it is safe because it was committed.
    cdef readonly uint64_t term
    cdef readonly uint64_t vote     # 0 = voted for nobody in `term`
    cdef readonly uint64_t commit


cdef class Snapshot:
    # A snapshot of the state machine: every entry up to (index, term) applied.
    # `data` is opaque to the core (the application's serialized state).
    cdef readonly uint64_t index
    cdef readonly uint64_t term
    cdef readonly bytes data
    # The configuration as of `index` (encode_conf's form; b"" = not recorded, for
    # snapshots made before membership changes existed: the node's initial one).
    cdef readonly bytes conf


cdef class Message:
    # One schema for every message kind (see docs/protocol.md for field use).
    cdef public int type
    cdef public uint64_t src
    cdef public uint64_t dst
    cdef public uint64_t term
    cdef public uint64_t log_term
    cdef public uint64_t index
    cdef public uint64_t commit
    cdef public uint64_t reject_hint
    cdef public uint64_t msg_id
    # ReadIndex round (diss. §6.4): a leader's AppendEntries carry its latest read
    # round; the reply echoes it. Not part of the Raft state (the spec ignores it).
    cdef public uint64_t context
    cdef public bint reject
    cdef public list entries        # list[Entry], contiguous from index + 1
    # InstallSnapshot chunk (MSG_SNAP only; None otherwise).
    cdef public bytes data


cdef class RaftLog:
    # The in-memory log. Index i (first_index <= i <= last_index) lives at
    # position i - offset of both `_terms` (C array, O(1) term lookup without
    # touching Python objects) and `_entries` (the Entry objects).
    # Entries before `offset` were compacted into a snapshot whose last entry is
    # (offset - 1, snapshot_term).
    # Invariants: applied <= committed; committed <= last_index;
    #             stable <= last_index; offset >= 1.
    cdef uint64_t* _terms
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef list _entries
    cdef readonly uint64_t offset
    cdef readonly uint64_t snapshot_term
    cdef readonly uint64_t committed
    cdef readonly uint64_t applied
    # Last index known durable (told via advance). Entries above it may be lost by a crash.
    cdef readonly uint64_t stable
    # First index not yet handed to storage in a Ready.
    cdef readonly uint64_t unstable_from
    # Memory held by the entries: sum of len(data) + ENTRY_MEM_OVERHEAD over them.
    cdef readonly Py_ssize_t mem_bytes

    cdef inline uint64_t last(self)
    cdef uint64_t term_at(self, uint64_t index) except? 0
    cdef bint match_term(self, uint64_t index, uint64_t term) except -1
    cdef int append_entry(self, Entry e) except -1
    cdef int truncate_from(self, uint64_t index) except -1
    cdef int restore(self, uint64_t index, uint64_t term) except -1
    cdef uint64_t find_conflict_by_term(self, uint64_t index, uint64_t term) except? 0
    cdef list slice(self, uint64_t lo, uint64_t hi, Py_ssize_t max_bytes)
    cdef Py_ssize_t _bytes_of(self, Py_ssize_t lo, Py_ssize_t hi)


cdef class Progress:
    # The leader's view of one follower (etcd's Progress).
    # Invariant: match < next.
    cdef readonly uint64_t match
    cdef readonly uint64_t next
    cdef readonly int state          # PROGRESS_PROBE, PROGRESS_REPLICATE or PROGRESS_SNAPSHOT
    cdef bint probe_sent             # PROBE: one AppendEntries per heartbeat interval
    cdef bint progressed             # match advanced since the last heartbeat tick
    cdef bint recent_active          # CheckQuorum: heard from in this election timeout
    cdef uint64_t sent_commit        # highest commit index the follower can learn from what we sent
    cdef uint64_t read_acked         # highest ReadIndex round this follower has answered in our term
    # REPLICATE: ring buffer of the last index of each in-flight AppendEntries.
    cdef uint64_t* _inflight
    cdef int _inflight_cap
    cdef int _inflight_start
    cdef readonly int inflight
    # ... and the bytes of entry data each carries, and their sum (flow control by
    # bytes: max_inflight_bytes, as etcd's MaxInflightBytes; 0 = unlimited).
    cdef Py_ssize_t* _inflight_size
    cdef readonly Py_ssize_t inflight_bytes
    cdef Py_ssize_t _max_inflight_bytes
    # SNAPSHOT: sending snapshot `snap_index` in chunks of max_msg_bytes.
    # Invariant: snap_acked <= snap_next (chunk numbers; acked = the follower holds
    # every chunk before it, next = the next chunk to send).
    cdef readonly uint64_t snap_index
    cdef Py_ssize_t snap_next
    cdef Py_ssize_t snap_acked

    cdef void become_probe(self)
    cdef void become_replicate(self)
    cdef void become_snapshot(self, uint64_t index)
    cdef void free_le(self, uint64_t index)
    cdef inline void add_inflight(self, uint64_t last, Py_ssize_t size)
    cdef inline void note_commit_sent(self, uint64_t commit)
    cdef bint is_paused(self)
    cdef bint maybe_update(self, uint64_t index)


cdef class ReadOnly:
    # ReadIndex (diss. §6.4). Invariant: rounds in `pending` never decrease.
    cdef readonly uint64_t seq       # latest read round started
    cdef list pending                # [[ctx, read_index, round]]; round 0 = not started yet
    cdef list states                 # confirmed, to hand out in the next Ready

    cdef inline void add(self, object ctx)
    cdef inline bint round_due(self)
    cdef uint64_t start_round(self, uint64_t committed)
    cdef void confirm_first(self, Py_ssize_t k)
    cdef list take_states(self)
    cdef inline void drop_pending(self)


cdef class Ready:
    cdef readonly HardState hard_state
    cdef readonly list entries
    cdef readonly list messages
    cdef readonly list messages_after_persist
    cdef readonly list committed_entries
    cdef readonly list read_states   # [(ctx, read_index)]: confirmed linearizable reads
    cdef readonly Snapshot snapshot  # installed from the leader: persist and restore it first
    cdef uint64_t _last_index
    cdef uint64_t _last_term
    cdef uint64_t _applied_to
    cdef uint64_t _seq
    cdef bint _fsync                 # entries, snapshot, term or vote: must be fsynced


cdef class _Raft:
    # The protocol state and every cdef method (raft/core/raft.pxi).
    cdef readonly uint64_t id
    # The configuration (core/conf.pxi): the latest one in the log, committed or not
    # (diss. §4.1: a server uses the latest configuration in its log).
    cdef readonly tuple voters       # voter ids, sorted (self included unless learner/removed)
    cdef readonly tuple learners     # non-voting members (diss. §4.2.1), sorted
    cdef readonly uint64_t conf_index  # index of the entry holding it; 0 = the base one
    cdef bint _self_voter            # id in voters (cached: the hot paths ask it per ack/Ready)
    cdef bytes _conf                 # its encoded form (encode_conf)
    cdef bytes _base_conf            # the configuration at log.offset - 1 (snapshot or initial)
    cdef list _conf_log              # [(index, conf bytes)] of ENTRY_CONF entries in the log, ascending
    # Leader transfer (diss. §3.10): the voter we hand leadership to (0 = none) and
    # the ticks since we started; proposals are refused meanwhile.
    cdef readonly uint64_t lead_transferee
    cdef int _transfer_elapsed
    cdef readonly uint64_t term
    cdef readonly uint64_t vote
    cdef readonly uint64_t leader    # 0 = unknown
    cdef readonly int role
    cdef readonly RaftLog log

    cdef int election_tick
    cdef int heartbeat_tick
    cdef int randomized_election_tick
    cdef int election_elapsed
    cdef int heartbeat_elapsed
    cdef Py_ssize_t max_msg_bytes
    cdef int max_inflight
    cdef Py_ssize_t max_inflight_bytes
    cdef bint unsafe_commit_any_term  # test-only: the Figure 8 bug
    # PreVote (diss. §9.6): before campaigning, ask whether a majority would vote
    # for us, without touching our term. A pre-candidate keeps its role (follower or
    # candidate) and term: the pre-vote round is invisible to the protocol state.
    cdef readonly bint pre_vote
    # CheckQuorum (diss. §6.2): a leader that has not heard from a majority within
    # an election timeout steps down (keeping its term).
    cdef readonly bint check_quorum
    cdef bint _pre_candidate
    cdef dict _prevotes              # voter id -> granted, for the current pre-vote round
    cdef uint64_t rng_state
    cdef uint64_t next_msg_id

    cdef dict votes                  # candidate: voter id -> granted (bool)
    cdef dict progress               # leader: peer id -> Progress
    cdef list peers                  # members (voters and learners) other than self
    cdef list _msgs
    cdef list _msgs_after_persist
    cdef HardState _prev_hard_state  # the hard state the last written Ready left on disk
    # A commit index newer than _prev_hard_state's waited a tick: the next Ready
    # writes it even if nothing else is to be written (see RawNode.ready).
    cdef bint _hint_due
    cdef bint _broadcast_pending     # leader: entries or commit news to send at ready()
    cdef bint _commit_pending        # leader: urgent commit news (a configuration) to send
    cdef bint _ready_outstanding
    cdef uint64_t _ready_seq
    # Highest index handed out for application (by ready() or take_committed()).
    # Invariant: log.applied <= _handed <= min(log.committed, log.stable), except
    # that a snapshot install may move log.applied past it (normalized on use).
    cdef uint64_t _handed
    cdef list _trace                 # None: tracing off
    cdef ReadOnly _ro                # ReadIndex requests and rounds (core/read_only.pxi)
    # Snapshots (§7, diss. §5). Invariant: log.offset > 1 => _snapshot.index == log.offset - 1.
    cdef Snapshot _snapshot          # our latest snapshot: what we send to lagging followers
    cdef Snapshot _pending_snapshot  # installed, not yet handed out in a Ready
    # Follower: the snapshot being received, chunk by chunk (nothing when _rx_buf is None).
    cdef uint64_t _rx_src
    cdef uint64_t _rx_term
    cdef uint64_t _rx_index
    cdef uint64_t _rx_log_term
    cdef uint64_t _rx_total
    cdef bytearray _rx_buf
    cdef bytes _rx_conf              # the configuration the snapshot being received carries

    cdef uint64_t _rand(self)
    cdef void _reset_randomized_timeout(self)
    cdef Message _new_msg(self, int type, uint64_t dst)
    cdef int _reset(self, uint64_t term) except -1
    cdef int _become_follower(self, uint64_t term, uint64_t leader) except -1
    cdef int _become_candidate(self) except -1
    cdef int _become_leader(self) except -1
    cdef int _campaign(self) except -1
    cdef int _pre_campaign(self) except -1
    cdef bint _quorum_active(self)
    cdef int _handle_prevote(self, Message m) except -1
    cdef int _handle_prevote_resp(self, Message m) except -1
    cdef int _append_local(self, list datas, int type) except -1
    cdef int _send_append(self, uint64_t peer, Progress pr, bint heartbeat) except -1
    cdef int _broadcast_append(self) except -1
    cdef int _broadcast_heartbeat(self) except -1
    cdef int _maybe_send_commit(self, uint64_t peer, Progress pr) except -1
    cdef inline bint _is_quorum(self, Py_ssize_t n) noexcept
    cdef uint64_t _quorum_index(self, list matches) except? 0
    cdef bint _maybe_commit(self) except -1
    cdef bint _conf_committed_between(self, uint64_t old, uint64_t new)
    cdef int _handle_append(self, Message m) except -1
    cdef int _handle_append_resp(self, Message m) except -1
    cdef int _handle_vote(self, Message m) except -1
    cdef int _send_snapshot(self, uint64_t peer, Progress pr, bint retransmit) except -1
    cdef int _handle_snap(self, Message m) except -1
    cdef int _install_done(self, Message m, bint install) except -1
    cdef int _handle_snap_resp(self, Message m) except -1
    cdef int _handle_vote_resp(self, Message m) except -1
    cdef int _validate(self, Message m) except -1
    cdef int _check_roles(self, Message m) except -1
    cdef int _step(self, Message m) except -1
    cdef int _tick(self) except -1
    cdef inline void _send(self, Message m)
    cdef inline void _send_after_persist(self, Message m)
    cdef void _trace_state(self)
    cdef int _start_read_round(self) except -1
    cdef int _confirm_reads(self) except -1
    cdef bint _reads_can_start(self)
    # configuration (core/conf.pxi)
    cdef inline bint _is_voter(self, uint64_t node) noexcept
    cdef Py_ssize_t _count_granted(self, dict votes)
    cdef int _set_conf(self, bytes conf, uint64_t index) except -1
    cdef int _conf_appended(self, Entry e) except -1
    cdef int _conf_truncated(self, uint64_t index) except -1
    cdef bytes _conf_at(self, uint64_t index)
    cdef int _conf_compacted(self, uint64_t index) except -1
    cdef int _conf_restored(self, bytes conf) except -1
    cdef int _prune_removed(self) except -1
    cdef uint64_t _successor(self)
    cdef int _step_down_if_removed(self) except -1
    cdef bint _removed_and_committed(self)
    cdef int _send_timeout_now(self, uint64_t peer) except -1
    cdef int _handle_timeout_now(self, Message m) except -1


cdef class RawNode(_Raft):
    # The public API and Ready/advance (raft/core/rawnode.pxi).
    cdef inline uint64_t _apply_limit(self)
    cdef int _check_proposable(self) except -1
