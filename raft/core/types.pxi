# Constants, errors and value types (Entry, HardState, Snapshot, Message).
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

# --- constants ----------------------------------------------------------------
# The values are written once, as C enums in raft/_core.pxd (so the core and the
# wire codec compile against the same numbers); these are their Python names.

# Message types (docs/protocol.md). Values are part of the wire format: never reuse.
MSG_APP = _MSG_APP
MSG_APP_RESP = _MSG_APP_RESP
MSG_VOTE = _MSG_VOTE
MSG_VOTE_RESP = _MSG_VOTE_RESP
MSG_SNAP = _MSG_SNAP                # InstallSnapshot chunk (§7)
MSG_SNAP_RESP = _MSG_SNAP_RESP      # chunk acknowledgement (the install itself is acked by MSG_APP_RESP)
MSG_PREVOTE = _MSG_PREVOTE          # "would you vote for me in term + 1?" (diss. §9.6)
MSG_PREVOTE_RESP = _MSG_PREVOTE_RESP
MSG_TIMEOUT_NOW = _MSG_TIMEOUT_NOW  # leader transfer: "campaign now" (diss. §3.10)

ENTRY_NORMAL = _ENTRY_NORMAL
ENTRY_NOOP = _ENTRY_NOOP
ENTRY_CONF = _ENTRY_CONF            # data: a whole configuration (encode_conf)
CONF_ADD_VOTER = _CONF_ADD_VOTER
CONF_ADD_LEARNER = _CONF_ADD_LEARNER
CONF_REMOVE = _CONF_REMOVE
# What one entry adds to RaftLog.mem_bytes beyond its data: roughly the Entry and
# bytes object headers and the list slot (CPython, 64-bit). The runtime bounds the
# in-memory log by this count (docs/operations.md, "Limits").
ENTRY_MEM_OVERHEAD = _ENTRY_MEM_OVERHEAD

FOLLOWER = _FOLLOWER
CANDIDATE = _CANDIDATE
LEADER = _LEADER
ROLE_NAMES = ("follower", "candidate", "leader")

# The message-name table: the one copy (raft/trace.py re-exports it for the trace
# checker and spec/tla_trace.py).
MSG_NAMES = {_MSG_APP: "AppendEntries", _MSG_APP_RESP: "AppendEntriesResp",
             _MSG_VOTE: "RequestVote", _MSG_VOTE_RESP: "RequestVoteResp",
             _MSG_SNAP: "InstallSnapshot", _MSG_SNAP_RESP: "InstallSnapshotResp",
             _MSG_PREVOTE: "PreVote", _MSG_PREVOTE_RESP: "PreVoteResp",
             _MSG_TIMEOUT_NOW: "TimeoutNow"}

PROGRESS_PROBE = _PROBE
PROGRESS_REPLICATE = _REPLICATE
PROGRESS_SNAPSHOT = _SNAPSHOT


# --- errors (h11 style: our caller's mistake vs. the remote's) ----------------

# RaftError (raft/errors.py) is the base of every error in the project, the core's too.
from raft.errors import RaftError


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


class ProposalDropped(LocalProtocolError):
    """The leader cannot take a proposal now (a leadership transfer is under way,
    diss. §3.10): retry shortly, at whichever node leads then."""


class ConfChangeRefused(LocalProtocolError):
    """A configuration change the leader may not start now or at all: another change
    is uncommitted, the leader has not yet committed an entry of its term (the
    no-op rule of diss. §4.1), or the change makes no sense (adding a member twice,
    removing the last voter). The message says which."""


class ConfChangeNotYet(ConfChangeRefused):
    """A configuration change that may be proposed a little later: the previous one is
    not committed yet, or this leader has not yet committed an entry of its term."""


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

    def __cinit__(self, uint64_t index, uint64_t term, bytes data not None, bytes conf=b""):
        if index == 0 or term == 0:
            raise LocalProtocolError("a snapshot covers at least entry 1 (index and term > 0)")
        if conf is None:
            conf = b""
        if conf:
            decode_conf(conf)       # refuse a malformed configuration here, not at restart
        self.index = index
        self.term = term
        self.data = data
        self.conf = conf

    def __repr__(self):
        return f"Snapshot(index={self.index}, term={self.term}, {len(self.data)} bytes)"

    def __eq__(self, other):
        if not isinstance(other, Snapshot):
            return NotImplemented
        cdef Snapshot o = <Snapshot>other
        return (self.index == o.index and self.term == o.term and self.data == o.data
                and self.conf == o.conf)

    def __hash__(self):
        return hash((self.index, self.term, self.data, self.conf))


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
        elif self.type == _MSG_TIMEOUT_NOW:
            extra = ""
        ctx = f" ctx={self.context}" if self.context else ""
        return f"<{name} {self.src}->{self.dst} t={self.term}{extra}{ctx} id={self.msg_id}>"


