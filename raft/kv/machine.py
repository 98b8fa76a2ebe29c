"""The replicated key-value + stream state machine and its Raft log command encoding.

Everything here is deterministic: given the same sequence of ``apply(index, data)`` calls,
every replica ends in the same state and returns the same replies. Two things make that
true and are worth knowing before changing anything:

* Time comes from the log. The leader stamps each command with its wall clock when it
  proposes it (``time_ms``); the state machine's clock is the maximum stamp applied so far
  (so it never runs backwards across leaders with skewed clocks). Expiry (SET EX/PX,
  EXPIRE) and XADD ``*`` ids use that clock, never the applying node's.
* Exactly-once writes use client sessions (Raft dissertation section 6.3). ``RAFT.SESSION``
  registers a session whose id is the log index of the registration; each write under a
  session carries a sequence number, and the state machine keeps the replies of the latest
  ``session_window`` sequence numbers, so a retried write returns the saved reply instead of
  being applied twice. Sessions are evicted least-recently-used beyond ``max_sessions``,
  in log order, so every replica evicts the same ones.

Reads (``read(argv, now_ms)``) never mutate state; the server runs them after a
linearizable read barrier (or, opted in, stale on any node). Replies are plain Python
values the RESP layer encodes: ``bytes`` (bulk), ``int``, ``None`` (nil bulk), ``list``,
:class:`Status` (simple string), :class:`ErrorReply` and :data:`NULL_ARRAY`.

The encodings (log commands and snapshots) are length-prefixed binary, never pickle: a
log entry or snapshot from an untrusted peer can at worst be rejected with a clear error.
"""

from __future__ import annotations

import bisect
import heapq
import logging
from collections import OrderedDict
from typing import Union

from raft._core import ENTRY_NORMAL
from raft.errors import RaftError
from raft.kv.args import (_MAX_ID, INT64_MAX, INT64_MIN, UINT64_MAX, StreamID, XReadArgs, _decr_id,
                          _fmt_id, _incr_id, _next_stream_id, _parse_expire_flags,
                          _parse_interval_id, _parse_set_options, _parse_stream_id, _parse_xadd,
                          parse_int, parse_xread)
from raft.kv.codec import (Command, CommandDecodeError, _Cursor, _get_value, _put_bytes, _put_uvarint,
                           _put_value, decode_argv, decode_fields)
from raft.kv.commands import _command, lookup_command
from raft.kv.replies import (E_BAD_ID, E_NOT_INT, E_OVERFLOW, E_SYNTAX, E_WRONGTYPE, E_XADD_EXHAUSTED,
                             NULL_ARRAY, OK, ErrorReply, Reply, Status, _sanitize, arity_error)


try:   # the compiled apply of plain SETs (raft/_fastpath.pyx); apply() is its reference
    from raft._fastpath import apply_plain_sets as _apply_plain_sets
    from raft._fastpath import get_strings as _get_strings
except ImportError:  # a source tree without compiled extensions
    _apply_plain_sets = _get_strings = None

_CLOCK_LIMIT = 1 << 64   # apply_plain_sets's clock is a uint64

#: SET's and GET's names as clients send them; any other spelling takes the general path.
_PLAIN_SET = frozenset((b"SET", b"set"))
_PLAIN_GET = frozenset((b"GET", b"get"))

log = logging.getLogger("raft.kv")


# --------------------------------------------------------------------------- data types


class Stream:
    """An append-only log of (id, field/value list) entries, ids strictly increasing.

    ``last_id`` survives trimming, as in Redis, so a trimmed-empty stream still refuses
    ids at or below what it has handed out.
    """

    __slots__ = ("ids", "fields", "last_id")

    def __init__(self) -> None:
        self.ids: list[StreamID] = []
        self.fields: list[tuple[bytes, ...]] = []
        self.last_id: StreamID = (0, 0)

    def append(self, entry_id: StreamID, fields: tuple[bytes, ...]) -> None:
        self.ids.append(entry_id)
        self.fields.append(fields)
        self.last_id = entry_id

    def trim_maxlen(self, maxlen: int) -> None:
        excess = len(self.ids) - maxlen
        if excess > 0:
            del self.ids[:excess], self.fields[:excess]

    def trim_minid(self, minid: StreamID) -> None:
        cut = bisect.bisect_left(self.ids, minid)
        if cut:
            del self.ids[:cut], self.fields[:cut]

    def range(self, start: StreamID, end: StreamID, count: int, rev: bool) -> list:
        """Entries with start <= id <= end, at most ``count`` (0 = all), as RESP replies."""
        lo = bisect.bisect_left(self.ids, start)
        hi = bisect.bisect_right(self.ids, end)
        if lo >= hi:
            return []
        idx = range(hi - 1, lo - 1, -1) if rev else range(lo, hi)
        if count:
            idx = idx[:count]
        return [[_fmt_id(self.ids[i]), list(self.fields[i])] for i in idx]


Value = Union[bytes, Stream]


class Session:
    """One client's exactly-once state: replies of its latest sequence numbers.

    ``floor``: every seq <= floor has been forgotten; a retry of one cannot be answered
    (the client broke the window rule, or its session is older than its retry).
    """

    __slots__ = ("replies", "floor")

    def __init__(self, floor: int = 0) -> None:
        self.replies: dict[int, Reply] = {}
        self.floor = floor

    def record(self, seq: int, reply: Reply, window: int) -> None:
        self.replies[seq] = reply
        self.floor = max(self.floor, seq - window)
        # Replies are inserted in (nearly always) ascending seq order, so the oldest are
        # at the front: drop those below the floor, and beyond the window size.
        while self.replies:
            oldest = next(iter(self.replies))
            if oldest > self.floor and len(self.replies) <= window:
                break
            del self.replies[oldest]
            self.floor = max(self.floor, oldest)


# --------------------------------------------------------------------------- state machine


class SnapshotError(RaftError, ValueError):
    """A snapshot that this state machine did not produce (or that was damaged)."""


_SNAP_MAGIC = b"RAFTKV\x00\x01"


class KVStateMachine:
    """Deterministic Redis-like key-value + stream store, applied from the Raft log.

    Not thread-safe: the node runtime applies and the server reads on one event loop.
    """

    def __init__(self, *, max_sessions: int = 10_000, session_window: int = 128) -> None:
        if max_sessions < 1 or session_window < 1:
            raise ValueError("max_sessions and session_window must be >= 1")
        # Part of the replicated configuration: every replica must use the same values
        # (they travel in snapshots, so a restored replica adopts them).
        self.max_sessions = max_sessions
        self.session_window = session_window
        self._reset()

    def _reset(self) -> None:
        self.last_applied = 0
        self.clock_ms = 0  # max time_ms applied: the deterministic "now"
        self._data: dict[bytes, Value] = {}
        self._expires: dict[bytes, int] = {}  # key -> absolute Unix ms
        self._expiry_heap: list[tuple[int, bytes]] = []  # may hold stale entries
        self._sessions: OrderedDict[int, Session] = OrderedDict()  # LRU order, oldest first
        self._now = 0
        self._index = 0

    # ----------------------------------------------------------------- public API

    def apply(self, index: int, data: bytes) -> Reply:
        """Apply the committed log entry at ``index``; return the client's reply.

        Never raises for bad commands (errors are replies, the same on every replica);
        raises ValueError only if entries are applied out of order (a runtime bug).
        """
        if index <= self.last_applied:
            raise ValueError(f"apply index {index} <= last applied {self.last_applied}")
        self.last_applied = index
        try:
            client_id, seq, time_ms, argv = decode_fields(data)
        except CommandDecodeError as e:
            return ErrorReply(_sanitize(f"ERR malformed log entry at index {index}: {e}"))
        if time_ms > self.clock_ms:
            self.clock_ms = time_ms
        self._now, self._index = self.clock_ms, index
        if self._expiry_heap:
            self._purge_expired()
        if client_id == 0:
            if len(argv) == 3 and argv[0] in _PLAIN_SET:
                return self._plain_set(argv[1], argv[2])
            return self._execute(list(argv), write=True)
        return self._apply_in_session(Command(client_id, seq, time_ms, argv))

    def apply_entries(self, entries: list, replies: list) -> int:
        """apply() each committed entry of ``entries`` in order, appending its reply to
        ``replies`` (None for an entry without a command: a no-op or an empty read
        barrier, which moves the node's applied index, not the machine's). Returns the
        number of commands applied.

        Runs of plain ``SET key value`` are applied in C (``apply_plain_sets``, the
        same effect as _plain_set) while no key has a pending expiry; anything else
        goes through apply()."""
        pos, n, commands = 0, len(entries), 0
        while pos < n:
            # The C run keeps the clock in 64 bits; the Python decoder accepts a larger
            # time_ms (a 10-byte varint), and from then on apply() keeps the clock.
            if _apply_plain_sets is not None and not self._expiry_heap \
                    and self.clock_ms < _CLOCK_LIMIT:
                end, self.last_applied, self.clock_ms = _apply_plain_sets(
                    entries, pos, self._data, self._expires, self.last_applied,
                    self.clock_ms, OK, replies)
                if end > pos:
                    commands += end - pos
                    pos = end
                    self._now, self._index = self.clock_ms, self.last_applied
                    continue
            e = entries[pos]
            if e.type == ENTRY_NORMAL and e.data:
                replies.append(self.apply(e.index, e.data))
                commands += 1
            else:
                replies.append(None)
            pos += 1
        return commands

    def _plain_set(self, key: bytes, value: bytes) -> Reply:
        """``SET key value`` without options, the hot write: what _set does for it
        (any old value and TTL are replaced), without parsing options."""
        self._data[key] = value
        if self._expires:
            self._expires.pop(key, None)
        return OK

    def read(self, argv: list[bytes], now_ms: int | None = None) -> Reply:
        """Run a read-only command against the current state, without changing it.

        ``now_ms`` (the serving node's clock) hides keys that expired since the last
        applied command; it never makes a key live that the log already expired.
        """
        self._now = max(self.clock_ms, now_ms or 0)
        if len(argv) == 2 and argv[0] in _PLAIN_GET:
            return self._string(argv[1])   # GET, the hot read, without the command lookup
        return self._execute(argv, write=False)

    def read_gets(self, run: list[list[bytes]], now_ms: int | None = None) -> list[Reply]:
        """The replies of the ``[GET, key]`` commands of ``run``, a run of plain GETs
        and ``[SET, key, value]`` commands (the front end's: raft.resp.connection),
        each what read() would give at one instant had the SETs before it in ``run``
        been applied first (they are not applied here: the run's writes are in the
        log, right after the place this is read at). In C where compiled."""
        self._now = now = max(self.clock_ms, now_ms or 0)
        if _get_strings is not None:
            return _get_strings(run, self._data, self._expires, now, E_WRONGTYPE)
        written: dict[bytes, bytes] = {}
        out: list[Reply] = []
        for argv in run:
            if len(argv) == 3:     # a plain SET always sets: see _plain_set
                written[argv[1]] = argv[2]
            else:
                value = written.get(argv[1])
                out.append(value if value is not None else self._string(argv[1]))
        return out

    def xread(self, args: XReadArgs, id_args: list[bytes] | None, now_ms: int | None = None
              ) -> Reply:
        """XREAD for the server's BLOCK loop: resolves ids (``id_args`` from argv, or the
        already-resolved ``args.ids`` when None) and returns the entries or NULL_ARRAY."""
        self._now = max(self.clock_ms, now_ms or 0)
        if id_args is not None:
            err = self._resolve_xread_ids(args, id_args)
            if err is not None:
                return err
        return self._xread_collect(args)

    def snapshot(self) -> bytes:
        """The whole state (data, expiries, clock, sessions, config) as canonical bytes:
        two replicas in the same state produce identical snapshots."""
        out = bytearray(_SNAP_MAGIC)
        for n in (self.last_applied, self.clock_ms, self.max_sessions, self.session_window):
            _put_uvarint(out, n)
        _put_uvarint(out, len(self._data))
        for key in sorted(self._data):
            self._snapshot_key(out, key)
        _put_uvarint(out, len(self._sessions))
        for cid, sess in self._sessions.items():  # LRU order matters: it decides eviction
            _put_uvarint(out, cid)
            _put_uvarint(out, sess.floor)
            _put_uvarint(out, len(sess.replies))
            for seq, reply in sess.replies.items():
                _put_uvarint(out, seq)
                _put_value(out, reply)
        return bytes(out)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; on a bad snapshot raise SnapshotError
        and leave the current state untouched."""
        fresh = KVStateMachine()
        fresh._load(data)
        self.__dict__.update(fresh.__dict__)

    def dbsize(self) -> int:
        return len(self._data)

    def expires_count(self) -> int:
        return len(self._expires)

    def session_count(self) -> int:
        return len(self._sessions)

    # ----------------------------------------------------------------- sessions

    def _apply_in_session(self, cmd: Command) -> Reply:
        sess = self._sessions.get(cmd.client_id)
        if sess is None:
            return ErrorReply(
                f"SESSIONEXPIRED unknown or expired session {cmd.client_id}; "
                "open a new one with RAFT.SESSION"
            )
        self._sessions.move_to_end(cmd.client_id)
        if cmd.seq in sess.replies:
            return sess.replies[cmd.seq]  # a retry: the saved reply, not a second apply
        if cmd.seq <= sess.floor:
            return ErrorReply(
                f"SESSIONEXPIRED the reply to seq {cmd.seq} of session {cmd.client_id} "
                f"was discarded (more than {self.session_window} writes in flight?)"
            )
        reply = self._execute(list(cmd.argv), write=True)
        sess.record(cmd.seq, reply, self.session_window)
        return reply

    def _open_session(self) -> int:
        sid = self._index  # log indexes are unique and the same on every replica
        self._sessions[sid] = Session()
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return sid

    # ----------------------------------------------------------------- dispatch

    def _execute(self, argv: list[bytes], *, write: bool) -> Reply:
        spec = lookup_command(argv)
        if isinstance(spec, ErrorReply):
            return spec
        if spec.write and not write:
            return ErrorReply(f"ERR {spec.name} is a write; propose it instead")
        try:
            return spec.handler(self, argv)
        except Exception:  # a bug: the same on every replica, so still deterministic
            log.exception("command %r failed", spec.name)
            return ErrorReply(f"ERR internal error in '{spec.name}'")

    # ----------------------------------------------------------------- keyspace

    def _alive(self, key: bytes) -> Value | None:
        """The value, or None if missing or expired at ``self._now``."""
        value = self._data.get(key)
        if value is None:
            return None
        when = self._expires.get(key)
        if when is not None and self._now > when:  # Redis: expired once now > when
            return None
        return value

    def _string(self, key: bytes) -> bytes | None | ErrorReply:
        value = self._alive(key)
        if isinstance(value, Stream):
            return E_WRONGTYPE
        return value

    def _stream(self, key: bytes) -> Stream | None | ErrorReply:
        value = self._alive(key)
        if value is not None and not isinstance(value, Stream):
            return E_WRONGTYPE
        return value

    def _delete(self, key: bytes) -> bool:
        self._expires.pop(key, None)
        return self._data.pop(key, None) is not None

    def _set_expire(self, key: bytes, when: int) -> None:
        self._expires[key] = when
        heapq.heappush(self._expiry_heap, (when, key))

    def _purge_expired(self) -> None:
        """Delete keys expired at the (log) clock, so writes never see them and DBSIZE
        shrinks. Heap entries whose key's expiry has since changed are skipped."""
        heap, now = self._expiry_heap, self._now
        while heap and heap[0][0] < now:
            when, key = heapq.heappop(heap)
            if self._expires.get(key) == when:
                self._delete(key)
        if len(heap) > 64 and len(heap) > 2 * len(self._expires):
            self._rebuild_expiry_heap()  # too many stale entries: bound the memory

    def _rebuild_expiry_heap(self) -> None:
        self._expiry_heap = [(w, k) for k, w in self._expires.items()]
        heapq.heapify(self._expiry_heap)

    # ----------------------------------------------------------------- snapshot encoding

    def _snapshot_key(self, out: bytearray, key: bytes) -> None:
        value = self._data[key]
        _put_bytes(out, key)
        when = self._expires.get(key)
        _put_uvarint(out, 0 if when is None else when + 1)
        if isinstance(value, bytes):
            out.append(0)
            _put_bytes(out, value)
            return
        out.append(1)
        _put_uvarint(out, value.last_id[0])
        _put_uvarint(out, value.last_id[1])
        _put_uvarint(out, len(value.ids))
        for (ms, seq), fields in zip(value.ids, value.fields):
            _put_uvarint(out, ms)
            _put_uvarint(out, seq)
            _put_uvarint(out, len(fields))
            for f in fields:
                _put_bytes(out, f)

    def _load(self, data: bytes) -> None:
        if not data.startswith(_SNAP_MAGIC):
            raise SnapshotError("not a KV snapshot (bad magic)")
        cur = _Cursor(data[len(_SNAP_MAGIC) :], SnapshotError)
        self.last_applied, self.clock_ms = cur.uvarint(), cur.uvarint()
        self.max_sessions, self.session_window = cur.uvarint(), cur.uvarint()
        if self.max_sessions < 1 or self.session_window < 1:
            raise SnapshotError("bad session limits")
        for _ in range(cur.count(3)):
            self._load_key(cur)
        for _ in range(cur.count(3)):
            cid = cur.uvarint()
            sess = Session(cur.uvarint())
            for _ in range(cur.count(2)):
                seq = cur.uvarint()
                sess.replies[seq] = _get_value(cur)
            self._sessions[cid] = sess
        cur.done()
        self._rebuild_expiry_heap()

    def _load_key(self, cur: _Cursor) -> None:
        key = cur.bytes_()
        when = cur.uvarint()
        kind = cur.byte()
        if kind == 0:
            self._data[key] = cur.bytes_()
        elif kind == 1:
            s = Stream()
            last_id = (cur.uvarint(), cur.uvarint())
            for _ in range(cur.count(3)):
                entry_id = (cur.uvarint(), cur.uvarint())
                s.append(entry_id, tuple(cur.bytes_() for _ in range(cur.count())))
            s.last_id = last_id
            self._data[key] = s
        else:
            raise SnapshotError(f"unknown value kind {kind}")
        if when:
            self._expires[key] = when - 1

    # ================================================================= commands
    # Each handler gets (self, argv) with arity already checked; self._now is the time.

    @_command("raft.session", 1, write=True)
    def _raft_session(self, argv: list[bytes]) -> Reply:
        return self._open_session()

    @_command("raft.exec", -1, write=True)
    def _raft_exec(self, argv: list[bytes]) -> Reply:
        """MULTI/EXEC: the queued commands (each encode_argv'd) applied as one entry, so
        no other command runs between them; the reply is the list of their replies."""
        try:
            commands = [decode_argv(packed) for packed in argv[1:]]
        except CommandDecodeError as e:  # nothing applied: all or nothing
            return ErrorReply(_sanitize(f"ERR malformed RAFT.EXEC: {e}"))
        replies: list = []
        for sub in commands:
            if sub[0].lower() in (b"raft.exec", b"raft.session"):
                replies.append(ErrorReply("ERR Command not allowed inside a transaction"))
            else:
                replies.append(self._execute(sub, write=True))
        return replies

    @_command("get", 2, write=False)
    def _get(self, argv: list[bytes]) -> Reply:
        return self._string(argv[1])

    @_command("mget", -2, write=False)
    def _mget(self, argv: list[bytes]) -> Reply:
        out: list = []
        for key in argv[1:]:
            value = self._alive(key)
            out.append(value if isinstance(value, bytes) else None)  # streams read as nil
        return out

    @_command("exists", -2, write=False)
    def _exists(self, argv: list[bytes]) -> Reply:
        return sum(1 for key in argv[1:] if self._alive(key) is not None)

    @_command("dbsize", 1, write=False)
    def _dbsize(self, argv: list[bytes]) -> Reply:
        # Like Redis, counts keys not yet reclaimed (expired ones go at the next apply).
        return len(self._data)

    @_command("type", 2, write=False)
    def _type(self, argv: list[bytes]) -> Reply:
        value = self._alive(argv[1])
        if value is None:
            return Status("none")
        return Status("stream" if isinstance(value, Stream) else "string")

    @_command("ttl", 2, write=False)
    def _ttl(self, argv: list[bytes]) -> Reply:
        ms = self._pttl_ms(argv[1])
        return ms if ms < 0 else (ms + 500) // 1000

    @_command("pttl", 2, write=False)
    def _pttl(self, argv: list[bytes]) -> Reply:
        return self._pttl_ms(argv[1])

    def _pttl_ms(self, key: bytes) -> int:
        if self._alive(key) is None:
            return -2
        when = self._expires.get(key)
        return -1 if when is None else max(when - self._now, 0)

    @_command("set", -3, write=True)
    def _set(self, argv: list[bytes]) -> Reply:
        opts = _parse_set_options(argv, self._now)
        if isinstance(opts, ErrorReply):
            return opts
        nx, xx, get, keepttl, when = opts
        key = argv[1]
        old = self._string(key) if get else self._alive(key)
        if isinstance(old, ErrorReply):
            return old
        if (nx and old is not None) or (xx and old is None):
            return old if get else None
        self._data[key] = argv[2]
        if when is not None:
            if when < self._now:  # EXAT/PXAT in the past: set and gone
                self._delete(key)
            else:
                self._set_expire(key, when)
        elif not keepttl:
            self._expires.pop(key, None)
        return old if get else OK

    @_command("mset", -3, write=True)
    def _mset(self, argv: list[bytes]) -> Reply:
        if len(argv) % 2 == 0:
            return arity_error("mset")
        for i in range(1, len(argv), 2):
            self._data[argv[i]] = argv[i + 1]
            self._expires.pop(argv[i], None)
        return OK

    @_command("del", -2, write=True)
    def _del(self, argv: list[bytes]) -> Reply:
        return sum(1 for key in argv[1:] if self._delete(key))

    @_command("unlink", -2, write=True)
    def _unlink(self, argv: list[bytes]) -> Reply:
        return self._del(argv)

    @_command("incr", 2, write=True)
    def _incr(self, argv: list[bytes]) -> Reply:
        return self._incr_by(argv[1], 1)

    @_command("decr", 2, write=True)
    def _decr(self, argv: list[bytes]) -> Reply:
        return self._incr_by(argv[1], -1)

    @_command("incrby", 3, write=True)
    def _incrby(self, argv: list[bytes]) -> Reply:
        by = parse_int(argv[2])
        return E_NOT_INT if by is None else self._incr_by(argv[1], by)

    @_command("decrby", 3, write=True)
    def _decrby(self, argv: list[bytes]) -> Reply:
        by = parse_int(argv[2])
        if by is None:
            return E_NOT_INT
        if by == INT64_MIN:  # -by does not fit in 64 bits
            return ErrorReply("ERR decrement would overflow")
        return self._incr_by(argv[1], -by)

    def _incr_by(self, key: bytes, by: int) -> Reply:
        old = self._string(key)
        if isinstance(old, ErrorReply):
            return old
        current = 0 if old is None else parse_int(old)
        if current is None:
            return E_NOT_INT
        new = current + by
        if not INT64_MIN <= new <= INT64_MAX:
            return E_OVERFLOW
        self._data[key] = b"%d" % new  # keeps the TTL, like Redis
        return new

    @_command("expire", -3, write=True)
    def _expire(self, argv: list[bytes]) -> Reply:
        return self._expire_generic(argv, 1000, "expire")

    @_command("pexpire", -3, write=True)
    def _pexpire(self, argv: list[bytes]) -> Reply:
        return self._expire_generic(argv, 1, "pexpire")

    def _expire_generic(self, argv: list[bytes], unit_ms: int, name: str) -> Reply:
        flags = _parse_expire_flags(argv[3:])
        if isinstance(flags, ErrorReply):
            return flags
        n = parse_int(argv[2])
        if n is None:
            return E_NOT_INT
        when = n * unit_ms + self._now
        if not INT64_MIN <= n * unit_ms <= INT64_MAX or when > INT64_MAX:
            return ErrorReply(f"ERR invalid expire time in '{name}' command")
        key = argv[1]
        if self._alive(key) is None:
            return 0
        current = self._expires.get(key)  # None = never expires (an infinite TTL)
        if ("nx" in flags and current is not None) or ("xx" in flags and current is None):
            return 0
        if "gt" in flags and (current is None or when <= current):
            return 0
        if "lt" in flags and current is not None and when >= current:
            return 0
        if when <= self._now:  # already in the past: the key goes now
            self._delete(key)
        else:
            self._set_expire(key, when)
        return 1

    @_command("persist", 2, write=True)
    def _persist(self, argv: list[bytes]) -> Reply:
        if self._alive(argv[1]) is None:
            return 0
        return 0 if self._expires.pop(argv[1], None) is None else 1

    @_command("flushdb", -1, write=True)
    def _flushdb(self, argv: list[bytes]) -> Reply:
        if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"async", b"sync")):
            return E_SYNTAX
        self._data.clear()
        self._expires.clear()
        self._expiry_heap.clear()
        return OK  # sessions survive: they are about clients, not data

    @_command("flushall", -1, write=True)
    def _flushall(self, argv: list[bytes]) -> Reply:
        return self._flushdb(argv)

    # ----------------------------------------------------------------- streams

    @_command("xadd", -5, write=True)
    def _xadd(self, argv: list[bytes]) -> Reply:
        parsed = _parse_xadd(argv)
        if isinstance(parsed, ErrorReply):
            return parsed
        id_arg, seq_given, nomkstream, trim, field_at = parsed
        key = argv[1]
        stream = self._stream(key)
        if isinstance(stream, ErrorReply):
            return stream
        if stream is None and nomkstream:
            return None
        last = stream.last_id if stream is not None else (0, 0)
        if last == _MAX_ID:
            return E_XADD_EXHAUSTED
        new_id = _next_stream_id(last, id_arg, seq_given, self._now)
        if isinstance(new_id, ErrorReply):
            return new_id
        if stream is None:  # created only once the add is known to succeed
            stream = self._data[key] = Stream()
        stream.append(new_id, tuple(argv[field_at:]))
        if trim is not None:
            if trim[0] == "maxlen":
                stream.trim_maxlen(trim[1])
            else:
                stream.trim_minid(trim[1])
        return _fmt_id(new_id)

    @_command("xlen", 2, write=False)
    def _xlen(self, argv: list[bytes]) -> Reply:
        stream = self._stream(argv[1])
        if isinstance(stream, ErrorReply):
            return stream
        return 0 if stream is None else len(stream.ids)

    @_command("xrange", -4, write=False)
    def _xrange(self, argv: list[bytes]) -> Reply:
        return self._xrange_generic(argv, rev=False)

    @_command("xrevrange", -4, write=False)
    def _xrevrange(self, argv: list[bytes]) -> Reply:
        return self._xrange_generic(argv, rev=True)

    def _xrange_generic(self, argv: list[bytes], *, rev: bool) -> Reply:
        start_arg, end_arg = (argv[3], argv[2]) if rev else (argv[2], argv[3])
        start = _parse_interval_id(start_arg, 0, exclusive_step=_incr_id, which="start")
        if isinstance(start, ErrorReply):
            return start
        end = _parse_interval_id(end_arg, UINT64_MAX, exclusive_step=_decr_id, which="end")
        if isinstance(end, ErrorReply):
            return end
        count = -1
        i = 4
        while i < len(argv):
            if argv[i].lower() == b"count" and i + 1 < len(argv):
                n = parse_int(argv[i + 1])
                if n is None:
                    return E_NOT_INT
                count = max(n, 0)
                i += 2
            else:
                return E_SYNTAX
        stream = self._stream(argv[1])
        if isinstance(stream, ErrorReply):
            return stream
        if stream is None:
            return []
        if count == 0:
            return NULL_ARRAY  # Redis answers COUNT 0 with a null array
        return stream.range(start, end, max(count, 0), rev)

    @_command("xread", -4, write=False)
    def _xread(self, argv: list[bytes]) -> Reply:
        args = parse_xread(argv)
        if isinstance(args, ErrorReply):
            return args
        err = self._resolve_xread_ids(args, argv[len(argv) - len(args.ids) :])
        return err if err is not None else self._xread_collect(args)

    def _resolve_xread_ids(self, args: XReadArgs, id_args: list[bytes]) -> ErrorReply | None:
        """Parse the ids, ``$`` becoming the stream's current last id (Redis order:
        per stream, the key's type is checked before its id is parsed)."""
        for i, (key, raw) in enumerate(zip(args.keys, id_args)):
            stream = self._stream(key)
            if isinstance(stream, ErrorReply):
                return stream
            if raw == b"$":
                args.ids[i] = stream.last_id if stream is not None else (0, 0)
                continue
            parsed = _parse_stream_id(raw, 0, strict=True)
            if parsed is None:
                return E_BAD_ID
            args.ids[i] = parsed[0]
        return None

    def _xread_collect(self, args: XReadArgs) -> Reply:
        out = []
        for key, after in zip(args.keys, args.ids):
            stream = self._stream(key)
            if not isinstance(stream, Stream) or after is None:
                continue  # gone, or replaced by another type while a BLOCK waited
            start = _incr_id(after)
            if start is None or stream.last_id <= after:
                continue
            entries = stream.range(start, _MAX_ID, args.count, False)
            if entries:
                out.append([key, entries])
        return out if out else NULL_ARRAY
