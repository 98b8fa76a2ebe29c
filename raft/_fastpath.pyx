# cython: language_level=3
"""The client front end's hot path, compiled: every write passes through both parts.

1. ``scan_requests``: RESP request framing for well-formed multibulk commands (what
   every client library sends); anything else stops it, and ``raft.resp.RequestParser``
   handles it in Python, with Redis's error messages.
2. ``encode``/``decode``: the KV log-entry command codec (encoded on the leader's front
   end, decoded by every node's state machine when it applies the entry).

Both are checked against their Python reference (tests/test_fastpath.py).

The command codec: byte for byte the format of ``raft.kv.encode_command``/``decode_command`` (which stay
the reference and the fallback): ``version, client_id, seq, time_ms, argc, (len, bytes)
* argc``, every integer an unsigned LEB128 varint. ``decode`` returns None for anything
it does not accept, and the caller then runs the Python decoder, which names the
problem: error replies stay the same on every replica whichever decoder ran.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

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
