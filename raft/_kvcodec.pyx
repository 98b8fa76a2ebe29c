# cython: language_level=3
"""The KV log-entry command codec, compiled: the hot path of every write (encoded on the
leader's front end, decoded by every node's state machine when it applies the entry).

Byte for byte the format of ``raft.kv.encode_command``/``decode_command`` (which stay
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
