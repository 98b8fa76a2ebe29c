# cython: language_level=3
"""The trace writer's formatter, compiled: batches of core trace events to NDJSON bytes.

``TraceFormatter(format_event).add(events)`` / ``take()`` and ``format_events(events,
format_event)`` give, byte for byte, what ``raft.trace.format_event`` (the Python
formatter, itself byte-identical to ``json.dumps(event_to_json(ev))``) gives for each
event, one line per event, each ending in a newline, UTF-8 (the text is ASCII). They
read ``Message`` and ``Entry`` fields as C integers (cimported from the core) and write
digits, hex and digests straight into one growing C buffer, each entry's row once per batch:
the node traces every message it sends and receives, and formatting them in Python
cost a tenth of a busy leader's event loop.

An event the C path does not format (``install``, an unknown kind, a field of an
unexpected type) is handed to the Python formatter passed in, so the two never
disagree; errors are the Python formatter's. tests/test_trace_fmt.py checks the
identity. raft.trace passes its format_event in (it imports this module, so this
module does not import it).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.errno cimport EINTR, EIO, errno
from libc.string cimport memcpy, memmove, memset, strerror, strlen
from posix.unistd cimport write

from raft._core cimport Entry, Message

include "fastpath/decimal.pxi"

__all__ = ["TraceFormatter", "format_events"]

DEF ROW_SLOTS = 256      # entry rows remembered per batch (see _Buf.row_entry)
DEF DIGEST_OVER = 16     # raft.trace.DIGEST_OVER

# Lowercase hex, 4 input bytes per step (SWAR): bytes.hex() of short entries, of
# configuration entries, and of the digests of the rest.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* 8 nibbles, one per byte (each 0..15), to their ASCII hex digits: '0' + x, plus
       39 more ('a' - '0' - 10) where x >= 10, i.e. where x + 6 carries into bit 4. */
    static inline uint64_t rn_nibbles_to_ascii(uint64_t x) {
        uint64_t ge10 = ((x + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
        return x + 0x3030303030303030ULL + ge10 * 39;
    }
    static void rn_hex(char *dst, const unsigned char *src, Py_ssize_t n) {
        static const char digits[] = "0123456789abcdef";
        Py_ssize_t k = 0;
        for (; k + 4 <= n; k += 4) {
            /* spread b0 b1 b2 b3 to output order: hi(b0) lo(b0) hi(b1) lo(b1) ... */
            uint64_t y = (uint64_t)src[k] | ((uint64_t)src[k + 1] << 16)
                         | ((uint64_t)src[k + 2] << 32) | ((uint64_t)src[k + 3] << 48);
            uint64_t x = ((y >> 4) & 0x000F000F000F000FULL) | ((y & 0x000F000F000F000FULL) << 8);
            x = rn_nibbles_to_ascii(x);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(dst + 2 * k, &x, 8);   /* one store: byte i of x is output char i */
    #else
            for (int i = 0; i < 8; i++) dst[2 * k + i] = (char)(x >> (8 * i));
    #endif
        }
        for (; k < n; k++) {
            dst[2 * k] = digits[src[k] >> 4];
            dst[2 * k + 1] = digits[src[k] & 15];
        }
    }
    /* FNV-1a, 64 bits: the digest a normal entry's data is traced as (raft.trace.fnv1a_64). */
    static uint64_t rn_fnv1a_64(const unsigned char *p, Py_ssize_t n) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            h ^= p[i];
            h *= 0x100000001b3ULL;
        }
        return h;
    }
    """
    void rn_hex(char* dst, const unsigned char* src, Py_ssize_t n)
    uint64_t rn_fnv1a_64(const unsigned char* p, Py_ssize_t n)


@cython.final
cdef class _Buf:
    """A growing byte buffer; ``pos`` is the length written so far. Final, with inline
    methods: the appends are a few bytes each, too small to pay for a call."""
    cdef char* data
    cdef Py_ssize_t pos
    cdef Py_ssize_t cap
    # Rows already written in this buffer, by Entry address (direct-mapped, a miss only
    # formats the row again): a leader's entry is in its propose event and in the
    # AppendEntries to every follower, usually all in one batch. A slot counts only in
    # the batch (``gen``) that wrote it: the batch's events hold its entries, so no
    # address is reused meanwhile; later, a freed entry's address may be.
    cdef const void* row_entry[ROW_SLOTS]
    cdef unsigned int row_gen[ROW_SLOTS]
    cdef Py_ssize_t row_at[ROW_SLOTS]
    cdef Py_ssize_t row_len[ROW_SLOTS]
    cdef unsigned int gen

    def __cinit__(self, Py_ssize_t cap):
        self.data = <char*>PyMem_Malloc(cap)
        if self.data == NULL:
            raise MemoryError()
        self.cap = cap
        self.pos = 0
        memset(self.row_gen, 0, sizeof(self.row_gen))
        self.gen = 1

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef void forget_rows(self):
        """Start a new batch: no row written so far may be copied."""
        self.gen += 1
        if self.gen == 0:                     # wrapped: clear, so no old slot matches
            memset(self.row_gen, 0, sizeof(self.row_gen))
            self.gen = 1

    cdef inline int reserve(self, Py_ssize_t n) except -1:
        """Room for ``n`` more bytes."""
        if self.pos + n > self.cap:
            self._grow(n)
        return 0

    cdef int _grow(self, Py_ssize_t n) except -1:
        """Double until ``n`` more bytes fit (appends stay amortized O(1))."""
        cdef Py_ssize_t cap = self.cap
        cdef char* p
        while self.pos + n > cap:
            cap *= 2
        p = <char*>PyMem_Realloc(self.data, cap)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = cap
        return 0

    cdef inline int lit(self, const char* s) except -1:
        """A C string literal (the fixed JSON text between the values); the compiler
        folds strlen of a literal."""
        cdef Py_ssize_t n = strlen(s)
        self.reserve(n)
        memcpy(self.data + self.pos, s, n)
        self.pos += n
        return 0

    cdef inline int u64(self, uint64_t v) except -1:
        """Decimal digits of ``v``, as ``%d`` writes them."""
        cdef char tmp[DECIMAL_MAX]
        cdef int i = _decimal(tmp, v)
        self.reserve(DECIMAL_MAX - i)
        memcpy(self.data + self.pos, tmp + i, DECIMAL_MAX - i)
        self.pos += DECIMAL_MAX - i
        return 0

    cdef inline int i64(self, int64_t v) except -1:
        """A signed value (an entry's type is a C int): ``-`` then the digits."""
        if v < 0:
            self.lit("-")
            return self.u64(<uint64_t>0 - <uint64_t>v)
        return self.u64(<uint64_t>v)

    cdef int digest(self, bytes b) except -1:
        """``#`` and the 16 lowercase hex digits of FNV-1a-64 of ``b``, as
        ``raft.trace.entry_data_text`` writes a long normal entry's data."""
        cdef uint64_t h = rn_fnv1a_64(<const unsigned char*>PyBytes_AS_STRING(b),
                                      PyBytes_GET_SIZE(b))
        cdef unsigned char be[8]
        cdef int i
        for i in range(8):
            be[i] = <unsigned char>(h >> (56 - 8 * i))
        self.reserve(17)
        self.data[self.pos] = 35          # "#"
        rn_hex(self.data + self.pos + 1, be, 8)
        self.pos += 17
        return 0

    cdef int hex(self, bytes b) except -1:
        """Lowercase hex of ``b``, as ``bytes.hex()`` writes it."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
        self.reserve(2 * n)
        rn_hex(self.data + self.pos, <const unsigned char*>PyBytes_AS_STRING(b), n)
        self.pos += 2 * n
        return 0


cdef int _row(_Buf out, Entry e) except -1:
    """``[index,term,type,"data"]`` (data: raft.trace.entry_data_text): copied from where this entry's row was written
    before in the buffer, else formatted (and remembered)."""
    cdef Py_ssize_t slot = (<size_t><void*>e >> 4) % ROW_SLOTS, start
    if out.row_entry[slot] == <void*>e and out.row_gen[slot] == out.gen:
        out.reserve(out.row_len[slot])
        memcpy(out.data + out.pos, out.data + out.row_at[slot], out.row_len[slot])
        out.pos += out.row_len[slot]
        return 0
    if e.data is None:
        raise TypeError("entry without data")    # the Python formatter names it
    start = out.pos
    out.lit("[")
    out.u64(e.index)
    out.lit(",")
    out.u64(e.term)
    out.lit(",")
    out.i64(e.type)
    out.lit(",\"")
    if e.type == 0 and PyBytes_GET_SIZE(e.data) > DIGEST_OVER:     # 0: ENTRY_NORMAL
        out.digest(e.data)
    else:
        out.hex(e.data)
    out.lit("\"]")
    out.row_entry[slot] = <void*>e
    out.row_gen[slot] = out.gen
    out.row_at[slot] = start
    out.row_len[slot] = out.pos - start
    return 0


cdef int _entries(_Buf out, list entries) except -1:
    """The entries' rows, comma-separated (no brackets around the list)."""
    cdef Py_ssize_t k
    for k in range(PyList_GET_SIZE(entries)):
        if k:
            out.lit(",")
        _row(out, <Entry?><object>PyList_GET_ITEM(entries, k))   # checked: a non-Entry raises
    return 0


cdef int _msg(_Buf out, Message m) except -1:
    """A message's object, fields in raft.trace._msg_text's order, zero fields left out."""
    out.lit("{\"type\":")
    out.i64(m.type)
    out.lit(",\"src\":")
    out.u64(m.src)
    out.lit(",\"dst\":")
    out.u64(m.dst)
    out.lit(",\"term\":")
    out.u64(m.term)
    out.lit(",\"id\":")
    out.u64(m.msg_id)
    if m.index:
        out.lit(",\"index\":")
        out.u64(m.index)
    if m.log_term:
        out.lit(",\"log_term\":")
        out.u64(m.log_term)
    if m.commit:
        out.lit(",\"commit\":")
        out.u64(m.commit)
    if m.reject:
        out.lit(",\"reject\":true")
    if m.reject_hint:
        out.lit(",\"hint\":")
        out.u64(m.reject_hint)
    if m.entries:
        out.lit(",\"entries\":[")
        _entries(out, m.entries)
        out.lit("]")
    if m.data:
        out.lit(",\"data_len\":")
        out.u64(<uint64_t>PyBytes_GET_SIZE(m.data))
    out.lit("}")
    return 0


cdef inline uint64_t _uint(object v) except? 0:
    """An exact int as uint64_t. Anything else (a bool, which JSON writes as true, a
    float, a negative or huge int) raises: the caller hands the event to the Python
    formatter."""
    if type(v) is not int:
        raise TypeError("not an int")
    return <uint64_t>v


# The keys of the events whose fields (ev[2], ev[3], ...) are all integers, each as the
# text before its value.
cdef extern from *:
    """
    static const char *rn_trace_state[] = {",\\"term\\":", ",\\"vote\\":", ",\\"role\\":",
                                           ",\\"commit\\":", ",\\"last\\":", ",\\"last_term\\":"};
    static const char *rn_trace_restart[] = {",\\"term\\":", ",\\"vote\\":", ",\\"commit\\":",
                                             ",\\"first\\":", ",\\"last\\":", ",\\"last_term\\":"};
    static const char *rn_trace_term[] = {",\\"term\\":"};
    static const char *rn_trace_commit[] = {",\\"commit\\":"};
    static const char *rn_trace_seq[] = {",\\"seq\\":"};
    static const char *rn_trace_ready[] = {",\\"seq\\":", ",\\"hint\\":"};
    static const char *rn_trace_compact[] = {",\\"index\\":", ",\\"term\\":"};
    """
    const char** rn_trace_state
    const char** rn_trace_restart
    const char** rn_trace_term
    const char** rn_trace_commit
    const char** rn_trace_seq
    const char** rn_trace_ready
    const char** rn_trace_compact


cdef int _ints(_Buf out, tuple ev, const char* head, const char** keys,
               Py_ssize_t count) except -1:
    """``head`` (``{"e":...,"n":``), ev[1], then ``,"key":value`` for ev[2], ev[3], ...
    and the closing brace. The tuple must have exactly those fields (the Python
    formatter's %-format would refuse another size)."""
    cdef Py_ssize_t k
    if PyTuple_GET_SIZE(ev) != 2 + count:
        raise ValueError("unexpected event size")
    out.lit(head)
    out.u64(_uint(<object>PyTuple_GET_ITEM(ev, 1)))
    for k in range(count):
        out.lit(keys[k])
        out.u64(_uint(<object>PyTuple_GET_ITEM(ev, 2 + k)))
    out.lit("}")
    return 0


cdef int _with_msg(_Buf out, tuple ev, const char* head, Py_ssize_t size) except -1:
    """``head``, ev[1], then ``,"m":`` and the message ev[2] (no closing brace)."""
    if PyTuple_GET_SIZE(ev) != size:
        raise ValueError("unexpected event size")
    out.lit(head)
    out.u64(_uint(<object>PyTuple_GET_ITEM(ev, 1)))
    out.lit(",\"m\":")
    _msg(out, <Message?>ev[2])
    return 0


cdef int _event(_Buf out, tuple ev) except -1:
    """One event's line without its newline; raises for anything it does not format
    (the caller falls back to the Python formatter, which either formats it or names
    the problem). The most frequent kinds first."""
    cdef object kind = ev[0]
    if kind == "state":
        return _ints(out, ev, "{\"e\":\"state\",\"n\":", rn_trace_state, 6)
    if kind == "send":
        _with_msg(out, ev, "{\"e\":\"send\",\"n\":", 4)
        if ev[3]:
            out.lit(",\"after_persist\":true}")
        else:
            out.lit(",\"after_persist\":false}")
        return 0
    if kind == "recv":
        _with_msg(out, ev, "{\"e\":\"recv\",\"n\":", 3)
        out.lit("}")
        return 0
    if kind == "ready":
        if PyTuple_GET_SIZE(ev) == 4:      # with the commit hint it writes
            return _ints(out, ev, "{\"e\":\"ready\",\"n\":", rn_trace_ready, 2)
        return _ints(out, ev, "{\"e\":\"ready\",\"n\":", rn_trace_seq, 1)
    if kind == "advance":
        return _ints(out, ev, "{\"e\":\"advance\",\"n\":", rn_trace_seq, 1)
    if kind == "propose":
        if PyTuple_GET_SIZE(ev) != 3:
            raise ValueError("unexpected event size")
        out.lit("{\"e\":\"propose\",\"n\":")
        out.u64(_uint(<object>PyTuple_GET_ITEM(ev, 1)))
        out.lit(",\"entries\":[")
        _entries(out, <list?>ev[2])
        out.lit("]}")
        return 0
    if kind == "commit":
        return _ints(out, ev, "{\"e\":\"commit\",\"n\":", rn_trace_commit, 1)
    if kind == "restart":
        return _ints(out, ev, "{\"e\":\"restart\",\"n\":", rn_trace_restart, 6)
    if kind == "timeout":
        return _ints(out, ev, "{\"e\":\"timeout\",\"n\":", rn_trace_term, 1)
    if kind == "leader":
        return _ints(out, ev, "{\"e\":\"leader\",\"n\":", rn_trace_term, 1)
    if kind == "stepdown":
        return _ints(out, ev, "{\"e\":\"stepdown\",\"n\":", rn_trace_term, 1)
    if kind == "compact":
        return _ints(out, ev, "{\"e\":\"compact\",\"n\":", rn_trace_compact, 2)
    raise ValueError("left to the Python formatter")    # install (rare), unknown kinds


cdef int _add(_Buf out, list events, object fallback) except -1:
    """Append the lines of ``events`` (one batch) to ``out``; ``fallback(ev)`` gives
    the line of an event the C path does not format."""
    cdef Py_ssize_t k, start
    cdef object ev
    cdef bytes line
    out.forget_rows()
    for k in range(PyList_GET_SIZE(events)):
        ev = <object>PyList_GET_ITEM(events, k)
        start = out.pos
        try:
            _event(out, <tuple?>ev)
        except Exception:
            out.pos = start          # drop the partial line; the reference formats it
            out.forget_rows()        # rows it wrote lie past start
            line = fallback(ev).encode("utf-8")
            out.reserve(PyBytes_GET_SIZE(line))
            memcpy(out.data + out.pos, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))
            out.pos += PyBytes_GET_SIZE(line)
        out.lit("\n")
    return 0


cdef class TraceFormatter:
    """Formats batches of events into one growing buffer: ``add(events)`` after each
    batch (the caller may then drop the events), ``take()`` the bytes so far. One
    buffer for every batch: no allocation per batch (the node adds one per Ready).
    ``fallback``: raft.trace.format_event (passed in: raft.trace imports this module)."""
    cdef _Buf out
    cdef object fallback
    cdef bint writing        # write_to has released the GIL and is reading the buffer

    def __cinit__(self, fallback):
        self.out = _Buf(65536)
        self.fallback = fallback

    def add(self, list events):
        """Format ``events`` (a batch: entries repeated within it are formatted once)."""
        self._not_writing()
        _add(self.out, events, self.fallback)

    def take(self):
        """The lines added since the last take, as bytes; the buffer is then empty."""
        self._not_writing()
        cdef bytes data = PyBytes_FromStringAndSize(self.out.data, self.out.pos)
        self.out.pos = 0
        return data

    def write_to(self, int fd):
        """Write the lines added since the last take/write to file descriptor ``fd``
        and empty the buffer: straight from the buffer (no bytes object: a busy
        leader writes megabytes per flush), the GIL released during the write."""
        cdef Py_ssize_t off = 0, n = self.out.pos
        cdef ssize_t r
        cdef int err
        self._not_writing()
        while off < n:
            self.writing = True
            with nogil:
                r = write(fd, self.out.data + off, <size_t>(n - off))
                err = errno
            self.writing = False
            if r < 0 and err == EINTR:
                continue
            if r <= 0:                 # r == 0: no progress and no error, do not spin
                self._keep_unwritten(off)
                raise OSError(err if r < 0 else EIO, strerror(err if r < 0 else EIO))
            off += r                   # a short write (a full disk says so next time)
        self.out.pos = 0

    cdef void _keep_unwritten(self, Py_ssize_t off):
        """After a failed write: keep only the bytes not yet written, so a retry does
        not write the first ``off`` bytes twice."""
        memmove(self.out.data, self.out.data + off, self.out.pos - off)
        self.out.pos -= off

    cdef int _not_writing(self) except -1:
        """One thread at a time: another thread's add could move the buffer that
        write_to is reading without the GIL."""
        if self.writing:
            raise RuntimeError("TraceFormatter used by two threads at once")
        return 0

    def __len__(self):
        return self.out.pos


def format_events(list events, fallback):
    """The NDJSON lines of ``events`` (each ending in a newline) as one bytes object:
    the text ``"".join(format_event(ev) + "\\n" for ev in events)`` encodes to."""
    cdef _Buf out = _Buf(max(4096, 200 * PyList_GET_SIZE(events)))
    _add(out, events, fallback)
    return PyBytes_FromStringAndSize(out.data, out.pos)
