# cython: language_level=3
"""The sans-IO Raft core.

Inputs: ``tick()`` (logical time), ``step(message)``, ``propose(data)`` /
``propose_batch(datas)``, ``campaign()``, ``read_index(ctx)``, and
``compact(index, data)`` once the application has saved a snapshot.
Output: a ``Ready`` batch (hard state and entries to persist, messages to send,
committed entries to apply), acknowledged with ``advance(ready)``.

No sockets, clocks, threads or unseeded randomness: the same inputs give the same
outputs, in the simulator and in production. The protocol is Figure 2 of the Raft
paper with the refinements written down in docs/protocol.md; section references
below are to the paper ("§") and Ongaro's dissertation ("diss. §").

The persistence contract (what must be durable before what may be sent):

1. ``ready.messages`` may be sent at once, even while ``ready.entries`` are being
   written: they are AppendEntries from a leader, which may write its own log in
   parallel with replication because it counts itself only after ``advance``
   (diss. §10.2.1).
2. ``ready.hard_state`` (if not None) and ``ready.entries`` must be durable before
   ``ready.messages_after_persist`` are sent: those are responses promising
   durability (vote grants, AppendEntries acks) and RequestVotes (the candidate's
   self-vote must survive a crash, or it could vote twice in its term). Storage
   truncates everything from ``ready.entries[0].index`` on before appending.
   If ``ready.snapshot`` is not None (installed from the leader, §7), it comes
   first: make it durable, discard the whole stored log, and restore the state
   machine from it; ``ready.entries`` then follow it.
3. ``ready.committed_entries`` are committed and locally durable: apply them in order.
4. Call ``advance(ready)``. Only one Ready is outstanding at a time.
"""

cimport cython
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memmove

# --- constants --------------------------------------------------------------

# Message types (docs/protocol.md). Values are part of the wire format: never reuse.
MSG_APP = 1
MSG_APP_RESP = 2
MSG_VOTE = 3
MSG_VOTE_RESP = 4
MSG_SNAP = 5          # InstallSnapshot chunk (§7)
MSG_SNAP_RESP = 6     # chunk acknowledgement (the install itself is acked by MSG_APP_RESP)
MSG_PREVOTE = 7       # "would you vote for me in term + 1?" (diss. §9.6)
MSG_PREVOTE_RESP = 8
# Reserved for later issues: 9 MSG_TIMEOUT_NOW.

cdef enum:
    _MSG_APP = 1
    _MSG_APP_RESP = 2
    _MSG_VOTE = 3
    _MSG_VOTE_RESP = 4
    _MSG_SNAP = 5
    _MSG_SNAP_RESP = 6
    _MSG_PREVOTE = 7
    _MSG_PREVOTE_RESP = 8

ENTRY_NORMAL = 0
ENTRY_NOOP = 1
# What one entry adds to RaftLog.mem_bytes beyond its data: roughly the Entry and
# bytes object headers and the list slot (CPython, 64-bit). The runtime bounds the
# in-memory log by this count (docs/operations.md, "Limits").
ENTRY_MEM_OVERHEAD = 96
cdef enum:
    _ENTRY_NORMAL = 0
    _ENTRY_NOOP = 1
    _ENTRY_MEM_OVERHEAD = 96

FOLLOWER = 0
CANDIDATE = 1
LEADER = 2
cdef enum:
    _FOLLOWER = 0
    _CANDIDATE = 1
    _LEADER = 2

ROLE_NAMES = ("follower", "candidate", "leader")
MSG_NAMES = {1: "AppendEntries", 2: "AppendEntriesResp", 3: "RequestVote", 4: "RequestVoteResp",
             5: "InstallSnapshot", 6: "InstallSnapshotResp", 7: "PreVote", 8: "PreVoteResp"}

PROGRESS_PROBE = 0
PROGRESS_REPLICATE = 1
PROGRESS_SNAPSHOT = 2
cdef enum:
    _PROBE = 0
    _REPLICATE = 1
    _SNAPSHOT = 2
    # Snapshot chunks a leader keeps in flight to one follower.
    _SNAP_WINDOW = 4


# --- errors (h11 style: our caller's mistake vs. the remote's) ----------------

class RaftError(Exception):
    """Base class of the core's errors."""


class LocalProtocolError(RaftError):
    """The local caller misused the API (e.g. two Readys outstanding)."""


class NotLeader(LocalProtocolError):
    """A proposal was made on a node that is not the leader.

    ``leader`` is the id of the leader this node knows of in its current term,
    or 0 if it knows none; a client should retry there.
    """

    def __init__(self, leader):
        self.leader = leader
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")


class RemoteProtocolError(RaftError):
    """A peer's message is malformed or one the protocol says cannot happen (an
    AppendEntries to a leader in its own term, an ack for entries the leader
    never had); it was rejected without changing any state."""


class InvariantViolation(RaftError):
    """An internal safety invariant failed (e.g. truncating a committed entry):
    the local state can no longer be trusted. Fatal: the runtime must stop
    (fail-stop) rather than go on. These checks are explicit ``if``s, not
    ``assert``s, so ``python -O`` (or a Cython build without asserts) keeps them."""


cdef int _invariant(bint ok, str what) except -1:
    """Raise InvariantViolation(what) unless ``ok``. Survives ``python -O``."""
    if not ok:
        raise InvariantViolation(what)
    return 0


# --- value types -------------------------------------------------------------

@cython.freelist(1024)
@cython.no_gc          # holds only ints and bytes: can never be part of a cycle
cdef class Entry:
    def __cinit__(self, uint64_t index, uint64_t term, int type=_ENTRY_NORMAL, bytes data not None=b""):
        self.index = index
        self.term = term
        self.type = type
        self.data = data

    def __repr__(self):
        return f"Entry(index={self.index}, term={self.term}, type={self.type}, data={self.data!r})"

    def __eq__(self, other):
        if not isinstance(other, Entry):
            return NotImplemented
        cdef Entry o = <Entry>other
        return (self.index == o.index and self.term == o.term and self.type == o.type
                and self.data == o.data)

    def __hash__(self):
        return hash((self.index, self.term, self.type, self.data))

    def __reduce__(self):
        return (Entry, (self.index, self.term, self.type, self.data))


cdef class HardState:
    def __cinit__(self, uint64_t term=0, uint64_t vote=0, uint64_t commit=0):
        self.term = term
        self.vote = vote
        self.commit = commit

    def __repr__(self):
        return f"HardState(term={self.term}, vote={self.vote}, commit={self.commit})"

    def __eq__(self, other):
        if not isinstance(other, HardState):
            return NotImplemented
        cdef HardState o = <HardState>other
        return self.term == o.term and self.vote == o.vote and self.commit == o.commit

    def __hash__(self):
        return hash((self.term, self.vote, self.commit))


cdef class Snapshot:
    """The application's state after applying every entry up to (index, term)."""

    def __cinit__(self, uint64_t index, uint64_t term, bytes data not None):
        if index == 0 or term == 0:
            raise LocalProtocolError("a snapshot covers at least entry 1 (index and term > 0)")
        self.index = index
        self.term = term
        self.data = data

    def __repr__(self):
        return f"Snapshot(index={self.index}, term={self.term}, {len(self.data)} bytes)"

    def __eq__(self, other):
        if not isinstance(other, Snapshot):
            return NotImplemented
        cdef Snapshot o = <Snapshot>other
        return self.index == o.index and self.term == o.term and self.data == o.data

    def __hash__(self):
        return hash((self.index, self.term, self.data))


@cython.freelist(1024)
cdef class Message:
    def __init__(self, int type, uint64_t src=0, uint64_t dst=0, uint64_t term=0,
                 uint64_t log_term=0, uint64_t index=0, uint64_t commit=0,
                 list entries=None, bint reject=False, uint64_t reject_hint=0,
                 uint64_t msg_id=0, uint64_t context=0, bytes data=None):
        self.type = type
        self.src = src
        self.dst = dst
        self.term = term
        self.log_term = log_term
        self.index = index
        self.commit = commit
        self.entries = entries if entries is not None else []
        self.reject = reject
        self.reject_hint = reject_hint
        self.msg_id = msg_id
        self.context = context
        self.data = data

    def copy(self):
        """A shallow copy (entries are immutable and shared)."""
        return Message(self.type, self.src, self.dst, self.term, self.log_term,
                       self.index, self.commit, list(self.entries), self.reject,
                       self.reject_hint, self.msg_id, self.context, self.data)

    def __repr__(self):
        name = MSG_NAMES.get(self.type, str(self.type))
        extra = ""
        if self.type == _MSG_APP:
            extra = f" prev=({self.index},{self.log_term}) n={len(self.entries)} commit={self.commit}"
        elif self.type == _MSG_APP_RESP:
            extra = (f" index={self.index} reject={self.reject}"
                     f" hint=({self.reject_hint},{self.log_term})" if self.reject else f" index={self.index}")
        elif self.type == _MSG_VOTE:
            extra = f" last=({self.index},{self.log_term})"
        elif self.type == _MSG_VOTE_RESP or self.type == _MSG_PREVOTE_RESP:
            extra = f" granted={not self.reject}"
        elif self.type == _MSG_PREVOTE:
            extra = f" last=({self.index},{self.log_term})"
        elif self.type == _MSG_SNAP:
            n = len(self.data) if self.data is not None else 0
            extra = (f" snap=({self.index},{self.log_term}) bytes=[{self.commit},{self.commit + n})"
                     f" of {self.reject_hint}")
        elif self.type == _MSG_SNAP_RESP:
            extra = f" snap={self.index} have={self.reject_hint} reject={self.reject}"
        ctx = f" ctx={self.context}" if self.context else ""
        return f"<{name} {self.src}->{self.dst} t={self.term}{extra}{ctx} id={self.msg_id}>"


# --- the log -----------------------------------------------------------------

cdef class RaftLog:
    """The in-memory Raft log with commit/apply/stable bookkeeping.

    Indexes start at 1; index 0 (term 0) is the empty prefix every log shares.
    """

    def __cinit__(self):
        self._cap = 64
        self._terms = <uint64_t*>malloc(self._cap * sizeof(uint64_t))
        if self._terms == NULL:
            raise MemoryError()
        self._len = 0
        self._entries = []
        self.offset = 1
        self.snapshot_term = 0

    def __init__(self, list entries=None, uint64_t snapshot_index=0, uint64_t snapshot_term=0):
        """A log holding ``entries`` (durable: stable up to the last of them) after
        a snapshot ending at (snapshot_index, snapshot_term)."""
        cdef Entry e
        self.offset = snapshot_index + 1
        self.snapshot_term = snapshot_term
        self.committed = snapshot_index
        self.applied = snapshot_index
        for e in entries or ():
            if e.index != self.last() + 1:
                raise LocalProtocolError(
                    f"restored entries are not contiguous: {e.index} after {self.last()}")
            if e.term < self.term_at(self.last()):
                raise LocalProtocolError(f"restored entry {e.index} has a decreasing term")
            self.append_entry(e)
        self.stable = self.last()
        self.unstable_from = self.last() + 1

    def __dealloc__(self):
        free(self._terms)

    # -- queries --

    cdef inline uint64_t last(self):
        return self.offset + <uint64_t>self._len - 1

    cdef uint64_t term_at(self, uint64_t index) except? 0:
        """Term of the entry at ``index``; the snapshot's term for offset - 1.
        Raises IndexError for compacted or missing indexes."""
        if index >= self.offset and index <= self.last():
            return self._terms[index - self.offset]
        if index == self.offset - 1:
            return self.snapshot_term
        raise IndexError(f"index {index} not in log [{self.offset - 1}, {self.last()}]")

    cdef bint match_term(self, uint64_t index, uint64_t term) except -1:
        """Does our log hold an entry (index, term)? Below the snapshot every entry
        is committed, hence in every future leader's log (Leader Completeness)."""
        if index > self.last():
            return False
        if index < self.offset - 1:
            return True
        return self.term_at(index) == term

    cdef uint64_t find_conflict_by_term(self, uint64_t index, uint64_t term) except? 0:
        """Largest j <= index with term(j) <= term (etcd's findConflictByTerm).

        Used on both sides of a rejected AppendEntries: each step skips a whole
        term, so a lagging follower is repaired in O(terms) round trips."""
        if index > self.last():
            index = self.last()
        while index >= self.offset and self._terms[index - self.offset] > term:
            index -= 1
        return index

    cdef list slice(self, uint64_t lo, uint64_t hi, Py_ssize_t max_bytes):
        """Entries [lo, hi) -- at least one if lo < hi, then up to max_bytes of data."""
        if lo >= hi:
            return []
        cdef Py_ssize_t start = lo - self.offset
        cdef Py_ssize_t stop = hi - self.offset
        cdef Py_ssize_t i, total = 0
        for i in range(start, stop):
            total += PyBytes_GET_SIZE((<Entry>PyList_GET_ITEM(self._entries, i)).data) + 16
            if total > max_bytes and i > start:
                stop = i
                break
        return self._entries[start:stop]

    # -- mutations --

    cdef int append_entry(self, Entry e) except -1:
        cdef uint64_t* grown
        if e.index != self.last() + 1:
            raise InvariantViolation(f"log entries must be contiguous: {e.index} after {self.last()}")
        if self._len == self._cap:
            grown = <uint64_t*>realloc(self._terms, 2 * self._cap * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self._terms = grown
            self._cap *= 2
        self._terms[self._len] = e.term
        self._len += 1
        self._entries.append(e)
        self.mem_bytes += PyBytes_GET_SIZE(e.data) + _ENTRY_MEM_OVERHEAD
        return 0

    cdef Py_ssize_t _bytes_of(self, Py_ssize_t lo, Py_ssize_t hi):
        """mem_bytes of the entries at positions [lo, hi) of _entries."""
        cdef Py_ssize_t i, total = 0
        for i in range(lo, hi):
            total += PyBytes_GET_SIZE((<Entry>PyList_GET_ITEM(self._entries, i)).data) + _ENTRY_MEM_OVERHEAD
        return total

    cdef int truncate_from(self, uint64_t index) except -1:
        """Drop entries index.. (a conflicting suffix, §5.3)."""
        # Safety (§5.4, State Machine Safety): a committed entry is never removed.
        # A leader asking for it is broken, or we are: stop rather than diverge.
        if index <= self.committed:
            raise InvariantViolation(f"attempt to truncate committed entry {index} "
                                     f"(commit index {self.committed}, last index {self.last()})")
        if index < self.offset:
            raise InvariantViolation(f"attempt to truncate compacted entry {index} (first {self.offset})")
        if index > self.last():
            return 0
        self._len = index - self.offset
        self.mem_bytes -= self._bytes_of(self._len, PyList_GET_SIZE(self._entries))
        del self._entries[self._len:]
        if self.stable >= index:
            self.stable = index - 1
        if self.unstable_from > index:
            self.unstable_from = index
        return 0

    cdef int restore(self, uint64_t index, uint64_t term) except -1:
        """Replace the whole log by a snapshot ending at (index, term) (§7: the
        follower's log conflicts with or is shorter than the snapshot). Every index
        up to ``index`` is then committed, applied (the runtime restores the state
        machine from the snapshot) and durable once the Ready holding it is written."""
        if index <= self.committed:
            raise InvariantViolation(f"a snapshot install must move the commit index forward "
                                     f"({index} <= {self.committed})")
        self._len = 0
        del self._entries[:]
        self.mem_bytes = 0
        self.offset = index + 1
        self.snapshot_term = term
        self.committed = index
        self.applied = index
        self.stable = index
        self.unstable_from = index + 1
        return 0

    def compact(self, uint64_t index):
        """Drop entries up to and including ``index`` (covered by a snapshot)."""
        if index < self.offset:
            return
        if index > self.applied:
            raise LocalProtocolError(f"cannot compact {index}: only {self.applied} applied")
        cdef uint64_t term = self.term_at(index)
        cdef Py_ssize_t k = index - self.offset + 1
        memmove(self._terms, self._terms + k, (self._len - k) * sizeof(uint64_t))
        self._len -= k
        self.mem_bytes -= self._bytes_of(0, k)
        del self._entries[:k]
        self.offset = index + 1
        self.snapshot_term = term

    # -- Python API (tests, storage, tools) --

    @property
    def first_index(self):
        return self.offset

    @property
    def last_index(self):
        return self.last()

    @property
    def last_term(self):
        return self.term_at(self.last())

    def term(self, uint64_t index):
        return self.term_at(index)

    def entries(self, uint64_t lo, uint64_t hi):
        """Entries [lo, hi)."""
        if lo < self.offset or hi > self.last() + 1:
            raise IndexError(f"[{lo}, {hi}) not in log [{self.offset}, {self.last() + 1})")
        return self._entries[lo - self.offset:hi - self.offset]

    def matches(self, uint64_t index, uint64_t term):
        return self.match_term(index, term)

    def conflict_hint(self, uint64_t index, uint64_t term):
        return self.find_conflict_by_term(index, term)

    def is_up_to_date(self, uint64_t last_index, uint64_t last_term):
        """§5.4.1: is a log ending at (last_index, last_term) at least as up-to-date as ours?"""
        cdef uint64_t our_term = self.term_at(self.last())
        return last_term > our_term or (last_term == our_term and last_index >= self.last())

    def __len__(self):
        return self._len


# --- leader's view of a follower --------------------------------------------

cdef class Progress:
    def __cinit__(self, uint64_t next, int max_inflight, Py_ssize_t max_inflight_bytes=0):
        self.match = 0
        self.next = next
        self.state = _PROBE
        self.probe_sent = False
        self.progressed = False
        self._inflight_cap = max_inflight
        self._inflight = <uint64_t*>malloc(max_inflight * sizeof(uint64_t))
        self._inflight_size = <Py_ssize_t*>malloc(max_inflight * sizeof(Py_ssize_t))
        if self._inflight == NULL or self._inflight_size == NULL:
            raise MemoryError()
        self._max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0
        self._inflight_start = 0
        self.inflight = 0

    def __dealloc__(self):
        free(self._inflight)
        free(self._inflight_size)

    cdef void become_probe(self):
        # Resume from the last known match: everything after it may be lost.
        self.state = _PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight = 0
        self.inflight_bytes = 0

    cdef void become_replicate(self):
        self.state = _REPLICATE
        self.next = self.match + 1
        self.inflight = 0
        self.inflight_bytes = 0

    cdef void become_snapshot(self, uint64_t index):
        # The entries the follower needs are compacted: send snapshot `index` instead.
        self.state = _SNAPSHOT
        self.inflight = 0
        self.inflight_bytes = 0
        self.probe_sent = False
        self.snap_index = index
        self.snap_next = 0
        self.snap_acked = 0

    cdef void free_le(self, uint64_t index):
        """Release in-flight AppendEntries whose last index <= index (acknowledged)."""
        while self.inflight > 0 and self._inflight[self._inflight_start] <= index:
            self.inflight_bytes -= self._inflight_size[self._inflight_start]
            self._inflight_start = (self._inflight_start + 1) % self._inflight_cap
            self.inflight -= 1

    cdef inline void note_commit_sent(self, uint64_t commit):
        if commit > self.sent_commit:
            self.sent_commit = commit

    cdef inline void add_inflight(self, uint64_t last, Py_ssize_t size):
        cdef int slot = (self._inflight_start + self.inflight) % self._inflight_cap
        self._inflight[slot] = last
        self._inflight_size[slot] = size
        self.inflight += 1
        self.inflight_bytes += size

    cdef bint is_paused(self):
        """May AppendEntries be sent? (Snapshot chunks have their own window.)"""
        if self.state == _PROBE:
            return self.probe_sent
        if self.state == _SNAPSHOT:
            return True
        # By bytes too: pipelining more large entries than the peer's send buffer holds
        # would only get them dropped and resent. At least one message always goes.
        return self.inflight >= self._inflight_cap or (
            self._max_inflight_bytes > 0 and self.inflight_bytes >= self._max_inflight_bytes)

    def __repr__(self):
        state = ("probe", "replicate", "snapshot")[self.state]
        return f"Progress(match={self.match}, next={self.next}, {state}, inflight={self.inflight})"


# --- Ready -------------------------------------------------------------------

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
        unsynced, so a process crash (not a power loss) keeps it."""
        return self._fsync


# --- the node ----------------------------------------------------------------

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


cdef class RawNode:
    """One Raft server's protocol state machine."""

    def __init__(self, uint64_t id, voters, *, uint64_t seed=0, int election_tick=10,
                 int heartbeat_tick=1, Py_ssize_t max_msg_bytes=1 << 20,
                 int max_inflight=256, Py_ssize_t max_inflight_bytes=0,
                 HardState hard_state=None, list entries=None,
                 Snapshot snapshot=None, uint64_t applied=0, uint64_t msg_id_start=0,
                 bint unsafe_commit_any_term=False, bint pre_vote=False,
                 bint check_quorum=False, list trace=None):
        """Start (or restart, from what storage holds) server ``id`` of ``voters``.

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
        voters = tuple(sorted(set(int(v) for v in voters)))
        if id == 0 or 0 in voters:
            raise LocalProtocolError("node id 0 is reserved for 'none'")
        if id not in voters:
            raise LocalProtocolError(f"node {id} is not among the voters {voters}")
        if election_tick <= heartbeat_tick or heartbeat_tick < 1:
            raise LocalProtocolError("need election_tick > heartbeat_tick >= 1")
        if max_inflight < 1 or max_msg_bytes < 1:
            raise LocalProtocolError("max_inflight and max_msg_bytes must be positive")
        self.id = id
        self.voters = voters
        self.peers = [v for v in voters if v != id]
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
        self._msgs = []
        self._msgs_after_persist = []
        self.votes = {}
        self.progress = {}
        self._broadcast_pending = False
        self._ready_outstanding = False
        self._ready_seq = 0
        self._read_seq = 0
        self._pending_reads = []
        self._read_states = []
        self._pending_snapshot = None
        self._rx_buf = None
        self._trace = trace
        self._become_follower(self.term, 0)
        if trace is not None:
            last = self.log.last()
            trace.append(("restart", self.id, self.term, self.vote, self.log.committed,
                          self.log.offset, last, self.log.term_at(last)))

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
            m.context = self._read_seq
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
        # Reads not yet confirmed die with the leadership; the runtime fails them
        # when it sees the role change. Confirmed ones (read_states) stay valid.
        self._pending_reads = []
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
        self._become_candidate()
        if self._trace is not None:
            self._trace.append(("timeout", self.id, self.term))
        if len(self.voters) == 1:
            self._become_leader()
            return 0
        for peer in self.peers:
            m = self._new_msg(_MSG_VOTE, peer)
            m.index = self.log.last()
            m.log_term = self.log.term_at(m.index)
            # The self-vote must be durable before anyone may count on it.
            self._send_after_persist(m)
        return 0

    cdef int _pre_campaign(self) except -1:
        """The election timer fired with PreVote on: ask every voter whether it
        would vote for us in term + 1. Nothing durable changes, so the requests
        go out at once; only a majority of grants starts the real election."""
        cdef uint64_t peer
        cdef Message m
        if len(self.voters) == 1:
            return self._campaign()
        self._pre_candidate = True
        self._prevotes = {self.id: True}
        self.leader = 0                      # we no longer hear one: grant others' pre-votes
        self._reset_randomized_timeout()     # a failed round retries after a fresh timeout
        for peer in self.peers:
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
        cdef Py_ssize_t granted = 0
        cdef object v
        if not self._pre_candidate or self.role == _LEADER:
            return 0
        if m.reject:
            self._prevotes[m.src] = False
        elif m.term == self.term + 1:
            self._prevotes[m.src] = True
        else:
            return 0                         # a grant for another round
        for v in self._prevotes.values():
            if v:
                granted += 1
        if self._is_quorum(granted):
            self._pre_candidate = False
            self._campaign()
        return 0

    # -- leader: log and replication --

    cdef int _append_local(self, list datas, int type) except -1:
        cdef uint64_t first = self.log.last() + 1
        cdef uint64_t index = first - 1
        cdef object data
        for data in datas:
            index += 1
            self.log.append_entry(Entry(index, self.term, type, data))
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
        """Send new entries to every follower; tell the rest a new commit index."""
        cdef uint64_t peer
        cdef Progress pr
        cdef bint commit_news = self._commit_pending
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
        index, so it applies without waiting for a heartbeat."""
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

    # -- quorum: the one place that counts majorities (elections, PreVote, commit,
    # ReadIndex, CheckQuorum); joint majorities (diss. §4.3) will go here --

    cdef inline bint _is_quorum(self, Py_ssize_t n) noexcept:
        """Do ``n`` voters (ourselves included) make a majority of the configuration?"""
        return n > len(self.voters) // 2

    cdef uint64_t _quorum_index(self, list matches) except? 0:
        """The largest index a majority holds, given one match index per voter."""
        matches.sort(reverse=True)
        return matches[len(self.voters) // 2]

    cdef bint _maybe_commit(self) except -1:
        """§5.3/§5.4.2: commit the largest index a majority holds, if it is of our term."""
        cdef list matches = [self.log.stable]
        cdef uint64_t peer, n
        for peer in self.peers:
            matches.append((<Progress>self.progress[peer]).match)
        n = self._quorum_index(matches)
        if n <= self.log.committed:
            return False
        # Figure 8: never commit an earlier term's entry by counting replicas.
        if self.log.term_at(n) != self.term and not self.unsafe_commit_any_term:
            return False
        self.log.committed = n
        if self._trace is not None:
            self._trace.append(("commit", self.id, n))
        return True

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
            log.append_entry(e)
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
            if self._pending_reads:
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
        if m.index > pr.match:
            pr.match = m.index
            pr.progressed = True
            if self._maybe_commit():
                self._broadcast_pending = True   # tell followers the new commit index
                self._commit_pending = True
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
        self._maybe_send_commit(m.src, pr)
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
        cdef Snapshot snap = Snapshot(m.index, m.log_term, bytes(self._rx_buf)) if install else None
        cdef Message r
        if self.role == _CANDIDATE:
            self._become_follower(self.term, m.src)   # §5.2: a leader exists in our term
        if install:
            # Figure 13 step 7: the log conflicts with or ends before the snapshot:
            # discard it entirely (a log that holds (index, term) took the other branch).
            self.log.restore(m.index, m.log_term)
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
        cdef Py_ssize_t granted = 0
        cdef object v
        if self.role != _CANDIDATE:
            return 0
        self.votes[m.src] = not m.reject
        for v in self.votes.values():
            if v:
                granted += 1
        # A candidate that cannot win stays candidate until its timer fires again
        # (Figure 2 has no other way out of candidacy).
        if self._is_quorum(granted):
            self._become_leader()
        return 0

    cdef int _validate(self, Message m) except -1:
        cdef Py_ssize_t i, n
        cdef Entry e
        cdef uint64_t prev_term
        if m.dst != self.id:
            raise RemoteProtocolError(f"message for node {m.dst} delivered to node {self.id}")
        if m.src not in self.voters or m.src == self.id:
            raise RemoteProtocolError(f"message from unknown node {m.src}")
        if m.type < _MSG_APP or m.type > _MSG_PREVOTE_RESP:
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
                prev_term = e.term
            if m.log_term > m.term:
                raise RemoteProtocolError("prevLogTerm exceeds the message term")
        elif m.entries:
            raise RemoteProtocolError("only AppendEntries carries entries")
        return 0

    cdef int _check_roles(self, Message m) except -1:
        """Messages that a correct peer can never send us in our current term
        (Election Safety, §5.2: at most one leader per term). Refused before any
        state changes, so a buggy or hostile (but authenticated) peer cannot stop
        us or make us act on them."""
        if m.term != self.term:
            return 0
        if m.type == _MSG_APP or m.type == _MSG_SNAP:
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

    # -- public API --

    def tick(self):
        """Advance logical time by one tick."""
        cdef Py_ssize_t mark = len(self._trace) if self._trace is not None else 0
        self._tick()
        if self._trace is not None and len(self._trace) > mark:
            self._trace_state()

    cdef bint _quorum_active(self):
        """Did a majority (ourselves included) talk to us since the last check?
        Clears the marks for the next election timeout."""
        cdef Py_ssize_t active = 1
        cdef Progress pr
        for pr in self.progress.values():
            if pr.recent_active:
                active += 1
            pr.recent_active = False
        return self._is_quorum(active)

    cdef int _tick(self) except -1:
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
            self._become_follower(m.term, m.src if m.type == _MSG_APP or m.type == _MSG_SNAP else 0)
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
        return 0

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
        self._pending_reads.append([ctx, 0, 0])
        if len(self.voters) == 1 and self._reads_can_start():
            self._start_read_round()

    cdef bint _reads_can_start(self):
        # diss. §6.4 step 1: the leader's commit index is current only once an
        # entry of its own term (the no-op) is committed.
        return self.log.term_at(self.log.committed) == self.term

    cdef int _start_read_round(self) except -1:
        """Give every read not yet in a round the current commit index and a
        new round, and send that round to every follower."""
        cdef list read
        cdef uint64_t peer
        self._read_seq += 1
        for read in self._pending_reads:
            if read[2] == 0:
                read[1] = self.log.committed
                read[2] = self._read_seq
        for peer in self.peers:
            self._send_append(peer, <Progress>self.progress[peer], True)
        self._confirm_reads()
        return 0

    cdef int _confirm_reads(self) except -1:
        cdef list read
        cdef Py_ssize_t k = 0, acks
        cdef uint64_t peer, rnd
        while k < len(self._pending_reads):
            read = self._pending_reads[k]
            rnd = read[2]
            if rnd == 0:
                break
            acks = 1
            for peer in self.peers:
                if (<Progress>self.progress[peer]).read_acked >= rnd:
                    acks += 1
            if not self._is_quorum(acks):
                break
            self._read_states.append((read[0], read[1]))
            k += 1
        if k:
            del self._pending_reads[:k]
        return 0

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
        self._snapshot = Snapshot(index, term, data)
        self.log.compact(index)
        if self._trace is not None:
            self._trace.append(("compact", self.id, index, term))
            self._trace_state()

    @property
    def snapshot(self):
        """Our latest snapshot (taken by compact() or installed from a leader), or None."""
        return self._snapshot

    def propose(self, bytes data):
        """Append ``data`` as a new entry; returns its index. Raises NotLeader."""
        if self.role != _LEADER:
            raise NotLeader(self.leader)
        self._append_local([data], _ENTRY_NORMAL)
        if self._trace is not None:
            self._trace_state()
        return self.log.last()

    def propose_batch(self, list datas):
        """Append many entries at once; returns the index of the first."""
        if self.role != _LEADER:
            raise NotLeader(self.leader)
        for d in datas:
            if not isinstance(d, bytes):
                raise TypeError("proposals must be bytes")
        first = self.log.last() + 1
        if datas:
            self._append_local(datas, _ENTRY_NORMAL)
            if self._trace is not None:
                self._trace_state()
        return first

    cdef inline uint64_t _apply_limit(self):
        return min(self.log.committed, self.log.stable)

    def has_ready(self):
        """Is there anything to persist, send or apply?"""
        if self._ready_outstanding:
            return False
        if self._broadcast_pending and self.role == _LEADER:
            return True
        if self._read_states or (self._pending_reads and self.role == _LEADER
                                 and self._pending_reads[len(self._pending_reads) - 1][2] == 0 and self._reads_can_start()):
            return True
        return (bool(self._msgs) or bool(self._msgs_after_persist)
                or self._pending_snapshot is not None
                or self.log.unstable_from <= self.log.last()
                or self._apply_limit() > self.log.applied
                or self.term != self._prev_hard_state.term
                or self.vote != self._prev_hard_state.vote
                or self.log.committed != self._prev_hard_state.commit)

    def ready(self):
        """Collect the next batch of work. Call advance(ready) when it is done."""
        if self._ready_outstanding:
            raise LocalProtocolError("ready() called again before advance()")
        if self._broadcast_pending and self.role == _LEADER:
            self._broadcast_append()
        if (self._pending_reads and self.role == _LEADER and self._pending_reads[len(self._pending_reads) - 1][2] == 0
                and self._reads_can_start()):
            self._start_read_round()
        cdef Ready rd = Ready.__new__(Ready)
        cdef RaftLog log = self.log
        cdef HardState prev = self._prev_hard_state
        rd.snapshot = self._pending_snapshot
        self._pending_snapshot = None
        rd._fsync = rd.snapshot is not None
        if self.term != prev.term or self.vote != prev.vote or log.committed != prev.commit:
            rd._fsync = rd._fsync or self.term != prev.term or self.vote != prev.vote
            rd.hard_state = HardState(self.term, self.vote, log.committed)
            self._prev_hard_state = rd.hard_state
        if log.unstable_from <= log.last():
            rd.entries = log._entries[log.unstable_from - log.offset:]
            rd._last_index = log.last()
            rd._last_term = log.term_at(rd._last_index)
            log.unstable_from = log.last() + 1
            rd._fsync = True
        else:
            rd.entries = []
        rd.messages = self._msgs
        rd.messages_after_persist = self._msgs_after_persist
        rd.read_states = self._read_states
        self._read_states = []
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
            self._trace.append(("ready", self.id, rd._seq))
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
            self._commit_pending = True
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
            if (self._pending_reads and self._pending_reads[len(self._pending_reads) - 1][2] == 0
                    and self._reads_can_start()):
                self._start_read_round()
        cdef list msgs = self._msgs
        self._msgs = []
        return msgs

    def take_read_states(self):
        """Reads confirmed since the last ready(): [(ctx, read_index)]."""
        cdef list rs = self._read_states
        self._read_states = []
        return rs

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
    def applied(self):
        return self.log.applied

    @property
    def last_index(self):
        return self.log.last()

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
            "progress": {p: {"match": pr.match, "next": pr.next,
                             "state": ("probe", "replicate", "snapshot")[pr.state]}
                         for p, pr in self.progress.items()},
        }
