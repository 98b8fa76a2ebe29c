# cython: language_level=3
"""The hot path, compiled: every write passes through all three parts.

1. ``scan_requests``: RESP request framing for well-formed multibulk commands (what
   every client library sends); anything else stops it, and ``raft.resp.RequestParser``
   handles it in Python, with Redis's error messages.
2. ``encode``/``decode``: the KV log-entry command codec (encoded on the leader's front
   end, decoded by every node's state machine when it applies the entry).
3. ``wal_entry_records``: the WAL's ENTRY records of one batch (every node writes
   every entry once), with ``crc32c``, CRC-32C in portable C (slicing by 8).
4. ``apply_plain_sets``: the state machine's hot write, ``SET key value``, applied over
   a run of committed entries (every node applies every entry once), and
   ``take_plain_run``: the same writes, and the hot read ``GET key``, taken from a
   connection's parsed commands, the writes encoded as log entries, a run at a time
   (the leader's front end); ``get_strings`` answers a run's GETs.

Each is checked against its Python reference (tests/test_fastpath.py).

And the WAL's writer thread, ``SyncWriter`` (raft/fastpath/sync_writer.pxi): pwritev +
fdatasync of a batch the loop thread built, with no GIL (tests/test_sync_writer.py).

The command codec: byte for byte the format of ``raft.kv.encode_command``/``decode_command`` (which stay
the reference and the fallback): ``version, client_id, seq, time_ms, argc, (len, bytes)
* argc``, every integer an unsigned LEB128 varint. ``decode`` returns None for anything
it does not accept, and the caller then runs the Python decoder, which names the
problem: error replies stay the same on every replica whichever decoder ran.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from raft._core cimport Entry

include "fastpath/decimal.pxi"

DEF CMD_VERSION = 1


cdef inline Py_ssize_t _uvarint_size(uint64_t n) noexcept:
    cdef Py_ssize_t size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


cdef inline char* _put_uvarint(char* p, uint64_t n) noexcept:
    while n >= 0x80:
        p[0] = <char>((n & 0x7F) | 0x80)
        p += 1
        n >>= 7
    p[0] = <char>n
    return p + 1


def encode(uint64_t client_id, uint64_t seq, list argv not None, uint64_t time_ms):
    """``raft.kv.encode_command(client_id, seq, argv, time_ms=time_ms)``."""
    cdef Py_ssize_t n = len(argv), i, size, total
    cdef object arg
    total = 1 + _uvarint_size(client_id) + _uvarint_size(seq) + _uvarint_size(time_ms) \
        + _uvarint_size(<uint64_t>n)
    for i in range(n):
        arg = argv[i]
        if type(arg) is not bytes:
            raise TypeError("command arguments must be bytes")
        size = PyBytes_GET_SIZE(arg)
        total += _uvarint_size(<uint64_t>size) + size
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    p[0] = CMD_VERSION
    p += 1
    p = _put_uvarint(p, client_id)
    p = _put_uvarint(p, seq)
    p = _put_uvarint(p, time_ms)
    p = _put_uvarint(p, <uint64_t>n)
    for i in range(n):
        arg = argv[i]
        size = PyBytes_GET_SIZE(arg)
        p = _put_uvarint(p, <uint64_t>size)
        memcpy(p, PyBytes_AS_STRING(arg), size)
        p += size
    return out


cdef inline bint _get_uvarint(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                              uint64_t* out) noexcept:
    """Read a varint at pos[0]; False if truncated or longer than 10 bytes."""
    cdef uint64_t n = 0
    cdef int shift = 0
    cdef unsigned char b
    cdef Py_ssize_t i = pos[0]
    while True:
        if i >= end or shift > 63:
            return False
        b = buf[i]
        i += 1
        if shift == 63 and (b & 0x7F) > 1:
            return False      # beyond 64 bits: the Python decoder decides
        n |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            break
        shift += 7
    pos[0] = i
    out[0] = n
    return True


def decode(bytes data not None):
    """(client_id, seq, time_ms, argv tuple) of a well-formed command, else None."""
    return _decode(data)


cdef object _decode(bytes data):
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 1, i
    cdef uint64_t client_id, seq, time_ms, argc, size
    if end < 1 or buf[0] != CMD_VERSION:
        return None
    if not (_get_uvarint(buf, end, &pos, &client_id) and _get_uvarint(buf, end, &pos, &seq)
            and _get_uvarint(buf, end, &pos, &time_ms) and _get_uvarint(buf, end, &pos, &argc)):
        return None
    if argc == 0 or argc > <uint64_t>(end - pos):
        return None
    argv = []
    for i in range(<Py_ssize_t>argc):
        if not _get_uvarint(buf, end, &pos, &size) or size > <uint64_t>(end - pos):
            return None
        argv.append(PyBytes_FromStringAndSize(<const char*>buf + pos, <Py_ssize_t>size))
        pos += <Py_ssize_t>size
    if pos != end:
        return None
    return client_id, seq, time_ms, tuple(argv)


cdef inline bint _spelled(const char* p, Py_ssize_t n, const char* upper,
                          const char* lower) noexcept:
    """The 3-byte command name p[:n] is ``upper`` or ``lower``: the spellings clients
    send (kv.machine._PLAIN_SET, _PLAIN_GET). Any other spelling takes the general
    path, which gives the same result."""
    return n == 3 and (memcmp(p, upper, 3) == 0 or memcmp(p, lower, 3) == 0)


cdef inline bint _is_plain_set_name(bytes name) noexcept:
    return _spelled(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"SET", b"set")


cdef struct _PlainSet:
    uint64_t time_ms
    Py_ssize_t key_pos, key_len, value_pos, value_len


cdef inline bint _get_bytes(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                            Py_ssize_t* start, Py_ssize_t* size) noexcept:
    """A length-prefixed argument at pos[0]: its start and size; False if truncated."""
    cdef uint64_t n
    if not _get_uvarint(buf, end, pos, &n) or n > <uint64_t>(end - pos[0]):
        return False
    start[0] = pos[0]
    size[0] = <Py_ssize_t>n
    pos[0] += <Py_ssize_t>n
    return True


cdef bint _plain_set_fields(bytes data, _PlainSet* f) noexcept:
    """True if ``data`` is a command ``_decode`` accepts, of client 0, whose argv is
    ``[b"SET" or b"set", key, value]``; then ``f`` locates its fields in ``data``.
    Reading in place spares the tuple, list and integers ``_decode`` builds."""
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 1, name_pos, name_len
    cdef uint64_t client_id, seq, argc
    if end < 1 or buf[0] != CMD_VERSION:
        return False
    if not (_get_uvarint(buf, end, &pos, &client_id) and client_id == 0
            and _get_uvarint(buf, end, &pos, &seq)
            and _get_uvarint(buf, end, &pos, &f.time_ms)
            and _get_uvarint(buf, end, &pos, &argc) and argc == 3
            and _get_bytes(buf, end, &pos, &name_pos, &name_len)
            and _get_bytes(buf, end, &pos, &f.key_pos, &f.key_len)
            and _get_bytes(buf, end, &pos, &f.value_pos, &f.value_len)
            and pos == end):
        return False
    return _spelled(<const char*>buf + name_pos, name_len, b"SET", b"set")


cdef inline bint _is_plain_get_name(bytes name) noexcept:
    return _spelled(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"GET", b"get")


cdef inline bint _is_plain_set(object item, Py_ssize_t max_entry_bytes) noexcept:
    """``item`` is ``[SET, key, value]`` (a list of three bytes, the name spelled
    b"SET" or b"set") whose entry cannot exceed ``max_entry_bytes`` by
    ``raft.limits.command_size_bound`` (51 + 10 per argument + their bytes)."""
    if type(item) is not list:
        return False
    cdef list argv = <list>item
    if len(argv) != 3 or type(argv[0]) is not bytes or type(argv[1]) is not bytes \
            or type(argv[2]) is not bytes or not _is_plain_set_name(<bytes>argv[0]):
        return False
    return 81 + PyBytes_GET_SIZE(argv[0]) + PyBytes_GET_SIZE(argv[1]) \
        + PyBytes_GET_SIZE(argv[2]) <= max_entry_bytes


cdef inline bint _is_plain_get(object item) noexcept:
    """``item`` is ``[GET, key]`` (a list of two bytes, the name spelled b"GET" or b"get")."""
    if type(item) is not list:
        return False
    cdef list argv = <list>item
    return len(argv) == 2 and type(argv[0]) is bytes and type(argv[1]) is bytes \
        and _is_plain_get_name(<bytes>argv[0])


def take_plain_run(queue not None, Py_ssize_t max_count, uint64_t time_ms,
                   Py_ssize_t max_entry_bytes, bint with_gets):
    """The RESP front end's hot path (``RespConnection._plain_run``): pop from the front
    of ``queue`` (a deque of parsed commands) each plain ``SET key value`` and, if
    ``with_gets``, each plain ``GET key`` (see _is_plain_set, _is_plain_get), at most
    ``max_count`` in all. Returns ``(datas, run)``: the SETs' log entries,
    ``encode(0, 0, argv, time_ms)`` each, in order, and every command taken, in order.
    Stops at the first command that is anything else, or a SET whose entry could
    exceed ``max_entry_bytes`` (the general path then answers it with the same error
    as always)."""
    cdef list datas = []
    cdef list run = []
    while len(run) < max_count and queue:
        item = queue[0]
        if _is_plain_set(item, max_entry_bytes):
            datas.append(encode(0, 0, <list>item, time_ms))
        elif not (with_gets and _is_plain_get(item)):
            break
        run.append(item)
        queue.popleft()
    return datas, run


def apply_plain_sets(list entries not None, Py_ssize_t pos, dict data not None,
                     dict expires not None, uint64_t last_applied, uint64_t clock_ms,
                     object ok, list replies not None):
    """The KV state machine's hot path over a run of committed entries
    (``KVStateMachine.apply_entries``): from ``entries[pos]`` on, each plain
    ``SET key value`` of client 0 -- a normal entry whose command decodes, index above
    ``last_applied`` -- does what ``KVStateMachine._plain_set`` does (``data[key] =
    value``, any TTL dropped), moves the clock to its time, and appends ``ok`` to
    ``replies``. Stops at the first entry that is anything else, which the caller
    applies in Python. Returns ``(pos, last_applied, clock_ms)`` after the run.

    The caller runs it only while no key has a pending expiry (an apply then purges
    nothing before the SET); ``tests/test_kv.py`` checks it against apply()."""
    cdef Py_ssize_t n = len(entries)
    cdef Entry e
    cdef _PlainSet f
    cdef const char* buf
    while pos < n:
        e = entries[pos]
        if e.type != 0 or e.index <= last_applied or not e.data:   # 0: ENTRY_NORMAL
            break
        if not _plain_set_fields(e.data, &f):
            break
        if f.time_ms > clock_ms:
            clock_ms = f.time_ms
        last_applied = e.index
        buf = PyBytes_AS_STRING(e.data)
        key = PyBytes_FromStringAndSize(buf + f.key_pos, f.key_len)
        data[key] = PyBytes_FromStringAndSize(buf + f.value_pos, f.value_len)
        if expires:
            expires.pop(key, None)
        replies.append(ok)
        pos += 1
    return pos, last_applied, clock_ms



def get_strings(list run not None, dict data not None, dict expires not None, now,
                wrongtype):
    """``KVStateMachine.read_gets``: for each ``[GET, key]`` of ``run`` (a run of plain
    GETs and SETs, ``take_plain_run``'s), what ``KVStateMachine._string(key)`` gives
    at time ``now`` once the SETs before it in ``run`` are applied: the value of the
    last of them that set ``key``, else the stored bytes value, None if the key is
    missing or expired (Redis: once now > its expiry), ``wrongtype`` if it holds
    another kind of value. A plain SET always succeeds and replaces any value and
    TTL (``KVStateMachine._plain_set``), so the SETs need not be applied to know."""
    cdef list out = []
    cdef dict written = None
    cdef list argv
    cdef object key, value, when
    for item in run:
        argv = <list>item
        key = argv[1]
        if len(argv) == 3:                 # a SET, applied before what follows
            if written is None:
                written = {}
            written[key] = argv[2]
            continue
        if written is not None:
            value = written.get(key)
            if value is not None:
                out.append(value)
                continue
        value = data.get(key)
        if value is not None and expires:
            when = expires.get(key)
            if when is not None and now > when:
                value = None
        if value is None or type(value) is bytes:
            out.append(value)
        else:
            out.append(wrongtype)
    return out


# --- RESP replies (raft/resp/connection.py: _encode_batch, _encode_run) --------------

cdef inline char* _grow(bytearray out, Py_ssize_t more) except NULL:
    """Room for ``more`` bytes at the end of ``out``: a pointer to it."""
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, size + more)
    return PyByteArray_AS_STRING(out) + size


cdef inline int _put_reply(bytearray out, object value, int proto, object ok,
                           object fallback) except -1:
    """One reply: a bulk string, a nil, ``+OK``, or whatever ``fallback(value, out,
    proto)`` (the Python encoder) writes for anything else."""
    cdef Py_ssize_t n
    cdef char* p
    cdef char tmp[DECIMAL_MAX]
    cdef int i
    if type(value) is bytes:
        n = PyBytes_GET_SIZE(value)
        i = _decimal(tmp, <uint64_t>n)
        p = _grow(out, 1 + (DECIMAL_MAX - i) + 2 + n + 2)
        p[0] = 36                                      # "$"
        memcpy(p + 1, tmp + i, DECIMAL_MAX - i)
        p += 1 + (DECIMAL_MAX - i)
        p[0] = 13
        p[1] = 10
        memcpy(p + 2, PyBytes_AS_STRING(value), n)
        p[2 + n] = 13
        p[3 + n] = 10
    elif value is None:
        if proto == 3:
            memcpy(_grow(out, 3), b"_\r\n", 3)
        else:
            memcpy(_grow(out, 5), b"$-1\r\n", 5)
    elif value is ok:
        memcpy(_grow(out, 5), b"+OK\r\n", 5)
    else:
        fallback(value, out, proto)
    return 0


def encode_replies(list values not None, bytearray out not None, int proto, ok, fallback):
    """Append the RESP encoding of each of ``values`` to ``out``: what
    ``raft.resp.protocol.encode_reply`` writes for bytes, None and ``ok``, and
    ``fallback(value, out, proto)`` for anything else (a run's replies, most of
    them values, nils and +OK: tests/test_fastpath.py checks it against the
    Python encoder)."""
    for value in values:
        _put_reply(out, value, proto, ok, fallback)


def encode_run_replies(list run not None, list values not None, bytearray out not None,
                       int proto, ok, fallback):
    """The replies of a run of plain SETs and GETs (``take_plain_run``'s) whose SETs
    were all answered ``ok``: ``+OK`` for each SET, the next of ``values`` for each
    GET, in the run's order (``raft.resp.connection._encode_run``'s common case)."""
    cdef Py_ssize_t g = 0
    for argv in run:
        if len(<list>argv) == 3:
            memcpy(_grow(out, 5), b"+OK\r\n", 5)
        else:
            _put_reply(out, values[g], proto, ok, fallback)
            g += 1


def entries_data_bytes(list entries not None):
    """sum(len(e.data) for e in entries): what byte budgets on the log count."""
    cdef Py_ssize_t total = 0
    cdef Entry e
    for item in entries:
        e = item
        total += PyBytes_GET_SIZE(e.data)
    return total


# --- RESP requests ----------------------------------------------------------------------

cdef inline Py_ssize_t _find_crlf(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end) noexcept:
    while pos + 1 < end:
        if buf[pos] == 13 and buf[pos + 1] == 10:
            return pos
        pos += 1
    return -1


cdef inline Py_ssize_t _strict_int(const unsigned char* buf, Py_ssize_t lo, Py_ssize_t hi) noexcept:
    """The non-negative decimal in buf[lo:hi] without sign or leading zeros, at most 18
    digits; -1 if it is not one."""
    cdef Py_ssize_t n = 0, i
    if hi <= lo or hi - lo > 18 or (buf[lo] == 48 and hi - lo > 1):
        return -1
    for i in range(lo, hi):
        if buf[i] < 48 or buf[i] > 57:
            return -1
        n = n * 10 + (buf[i] - 48)
    return n


def scan_requests(bytearray buf not None, Py_ssize_t pos, Py_ssize_t max_args,
                  Py_ssize_t max_bulk, list out not None):
    """Append the argv of every complete, well-formed multibulk command in buf from pos
    on to ``out``; return the position after the last one. Stops (returns where it
    stopped) at an incomplete command or anything it does not accept -- an inline
    command, a count <= 0 or over max_args, a malformed length, a bulk over max_bulk,
    a missing CRLF -- which RequestParser then reads, or rejects with Redis's error."""
    cdef const unsigned char* b = <const unsigned char*>buf
    cdef Py_ssize_t end = len(buf), eol, count, n, p, k
    cdef list argv
    while pos < end and b[pos] == 42:          # "*"
        eol = _find_crlf(b, pos + 1, end)
        if eol < 0:
            return pos
        count = _strict_int(b, pos + 1, eol)
        if count <= 0 or count > max_args:
            return pos
        p = eol + 2
        argv = []
        for k in range(count):
            if p >= end or b[p] != 36:         # "$"
                return pos
            eol = _find_crlf(b, p + 1, end)
            if eol < 0:
                return pos
            n = _strict_int(b, p + 1, eol)
            if n < 0 or n > max_bulk:
                return pos
            if eol + 2 + n + 2 > end:
                return pos
            if b[eol + 2 + n] != 13 or b[eol + 3 + n] != 10:
                return pos
            argv.append(PyBytes_FromStringAndSize(<const char*>b + eol + 2, n))
            p = eol + 4 + n
        out.append(argv)
        pos = p
    return pos


# --- WAL records (raft/storage/segment.py: BatchBuilder.entries is the reference) ---------

cdef uint32_t _crc_table[8][256]


cdef void _init_crc_tables() noexcept:
    cdef uint32_t c
    cdef int i, k
    for i in range(256):
        c = <uint32_t>i
        for k in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        _crc_table[0][i] = c
    for i in range(256):
        c = _crc_table[0][i]
        for k in range(1, 8):
            c = _crc_table[0][c & 0xFF] ^ (c >> 8)
            _crc_table[k][i] = c


_init_crc_tables()


cdef inline uint32_t _crc_update(uint32_t reg, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """CRC-32C register update (reflected, polynomial 0x82F63B78), eight bytes a step."""
    while n >= 8:
        reg ^= (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
                | (<uint32_t>p[3] << 24))
        reg = (_crc_table[7][reg & 0xFF] ^ _crc_table[6][(reg >> 8) & 0xFF]
               ^ _crc_table[5][(reg >> 16) & 0xFF] ^ _crc_table[4][reg >> 24]
               ^ _crc_table[3][p[4]] ^ _crc_table[2][p[5]] ^ _crc_table[1][p[6]]
               ^ _crc_table[0][p[7]])
        p += 8
        n -= 8
    while n > 0:
        reg = _crc_table[0][(reg ^ p[0]) & 0xFF] ^ (reg >> 8)
        p += 1
        n -= 1
    return reg


def crc32c(const uint8_t[::1] data, uint32_t value=0):
    """CRC-32C of ``data`` continuing from ``value``: the ``crc32c`` package's
    convention (``crc32c(b, crc32c(a, s)) == crc32c(a + b, s)``)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const uint8_t* p = &data[0] if n else NULL
    return _crc_update(value ^ 0xFFFFFFFF, p, n) ^ 0xFFFFFFFF


cdef inline void _put_le(uint8_t* p, uint64_t v, int size) noexcept:
    cdef int i
    for i in range(size):
        p[i] = <uint8_t>(v & 0xFF)
        v >>= 8


def wal_entry_records(bytearray buf not None, list entries not None, list offsets not None,
                      list ends not None, int kind, uint32_t seed):
    """Append one record per entry to ``buf``: header ``<IBBHQQ`` (payload length,
    ``kind``, flags 0, entry type, index, term), the payload, then the little-endian
    CRC-32C of header and payload seeded with ``seed``; append each record's start to
    ``offsets`` and its end to ``ends``. The same bytes as BatchBuilder.entries in
    Python (tests/test_fastpath.py). Raises ValueError for a payload over 4 GiB or an
    entry type beyond 16 bits, before writing anything."""
    cdef Py_ssize_t n = len(entries), i, pos, size, total = 0
    cdef Entry e
    cdef uint8_t* out
    cdef uint8_t* rec
    for i in range(n):
        e = <Entry?>entries[i]
        size = PyBytes_GET_SIZE(e.data)
        if <uint64_t>size > 0xFFFFFFFF:
            raise ValueError(f"entry {e.index} is {size} bytes, over the 4 GiB record limit")
        if e.type < 0 or e.type > 0xFFFF:
            raise ValueError(f"entry {e.index} has type {e.type}, beyond 16 bits")
        total += 28 + size
    pos = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, pos + total)
    out = <uint8_t*>PyByteArray_AS_STRING(buf)
    for i in range(n):
        e = <Entry>entries[i]
        size = PyBytes_GET_SIZE(e.data)
        offsets.append(pos)
        rec = out + pos
        _put_le(rec, <uint64_t>size, 4)
        rec[4] = <uint8_t>kind
        rec[5] = 0
        _put_le(rec + 6, <uint64_t>e.type, 2)
        _put_le(rec + 8, e.index, 8)
        _put_le(rec + 16, e.term, 8)
        memcpy(rec + 24, PyBytes_AS_STRING(e.data), size)
        _put_le(rec + 24 + size, _crc_update(seed ^ 0xFFFFFFFF, rec, 24 + size) ^ 0xFFFFFFFF, 4)
        pos += 28 + size
        ends.append(pos)
    return n


include "fastpath/sync_writer.pxi"
