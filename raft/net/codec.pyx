# cython: language_level=3
"""Wire codec for peer-to-peer Raft traffic (layout: docs/wire.md).

A frame is ``u32 length | u8 version | u8 frame type | body`` where ``length``
counts the bytes after itself (version + type + body). A MESSAGES frame carries a
batch of ``raft._core.Message`` objects; the handshake frames (HELLO, CHALLENGE,
RESPONSE, ACCEPT) are built by ``raft.net.auth`` with ``encode_frame``.

All integers are little-endian and fixed width: decoding a field is one unaligned
load, and every size is known before a byte is written or an object allocated.

Decoding treats the input as hostile. Every length and count is checked against
the bytes actually present before it is used (so a lying count cannot make us
allocate or read past the end), unknown versions, frame types, message types and
flag bits are refused, and every failure is a ``FrameError`` with the reason.
Nothing here uses pickle.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

# _MSG_SNAP (the only message type that carries data) is the core's own enum.
from raft._core cimport _MSG_SNAP, Entry, Message

from raft.errors import RaftError
from raft._core import (MSG_APP, MSG_APP_RESP, MSG_PREVOTE, MSG_PREVOTE_RESP, MSG_SNAP,
                        MSG_SNAP_RESP, MSG_TIMEOUT_NOW, MSG_VOTE, MSG_VOTE_RESP)


# Little-endian loads/stores. On little-endian hosts (all we build for in practice)
# these compile to single unaligned moves; the portable branch keeps big-endian
# hosts correct.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    static inline uint64_t rn_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint32_t rn_ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline void rn_st64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
    static inline void rn_st32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
    #else
    static inline uint64_t rn_ld64(const unsigned char *p) {
        uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
    static inline uint32_t rn_ld32(const unsigned char *p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24); }
    static inline void rn_st64(unsigned char *p, uint64_t v) {
        for (int i = 0; i < 8; i++) { p[i] = (unsigned char)(v >> (8 * i)); } }
    static inline void rn_st32(unsigned char *p, uint32_t v) {
        for (int i = 0; i < 4; i++) { p[i] = (unsigned char)(v >> (8 * i)); } }
    #endif
    """
    uint64_t rn_ld64(const unsigned char *p) nogil
    uint32_t rn_ld32(const unsigned char *p) nogil
    void rn_st64(unsigned char *p, uint64_t v) nogil
    void rn_st32(unsigned char *p, uint32_t v) nogil


# Fast Entry construction for decode. Entry's tp_new runs __cinit__, whose argument
# parsing costs more than the rest of decoding an entry; a decoded entry sets every
# field itself anyway, so we allocate the bare object and fill the fields. Entry is
# not a GC type (its only object field is bytes), so the brief NULL `data` is never
# seen by the collector. This relies on Entry having exactly the fields in
# raft/_core.pxd: _fast_entry_ok() checks the layout at import and falls back to
# the ordinary constructor if it ever changes.
cdef extern from *:
    """
    static inline PyObject* rn_alloc_bare(PyObject* tp) {
        return ((PyTypeObject*)tp)->tp_alloc((PyTypeObject*)tp, 0);
    }
    /* Steals nothing: takes a new reference to b. Only for a bare object whose
       data slot is still NULL. */
    #define RN_ENTRY_SET_DATA(e, b) do { Py_INCREF(b); (e)->data = (b); } while (0)
    #define RN_ENTRY_DATA_END(e) ((Py_ssize_t)((char*)&((e)->data) - (char*)(e)) + (Py_ssize_t)sizeof(PyObject*))
    """
    object rn_alloc_bare(object tp)
    void RN_ENTRY_SET_DATA(Entry e, object b)
    Py_ssize_t RN_ENTRY_DATA_END(Entry e)


# --- format constants (docs/wire.md; values are part of the wire format) -------

VERSION = 3

FRAME_MESSAGES = 1
FRAME_HELLO = 2
FRAME_CHALLENGE = 3
FRAME_RESPONSE = 4
FRAME_ACCEPT = 5

# Bytes before the body: u32 length, u8 version, u8 frame type.
HEADER_SIZE = 6
# A MESSAGES body starts with a u32 message count.
MESSAGES_OVERHEAD = HEADER_SIZE + 4
# Fixed part of one encoded message / entry. A message's data (MSG_SNAP only)
# follows its header, then its entries; an entry's data follows its header.
MESSAGE_HEADER_SIZE = 82
ENTRY_HEADER_SIZE = 21

DEFAULT_MAX_FRAME = 64 * 1024 * 1024

cdef enum:
    _VERSION = 3
    _FRAME_MESSAGES = 1
    _FRAME_ACCEPT = 5            # highest frame type this version knows
    _HEADER = 6
    _LEN_FIELD = 4               # the length prefix itself
    _MSG_HDR = 82                # type u8, flags u8, 9 x u64, n_entries u32, data_len u32
    _ENT_HDR = 21                # index u64, term u64, type u8, data_len u32
    _FLAG_REJECT = 1
    _KNOWN_FLAGS = 1

# u32 length field: a frame can never be larger than this whatever max_frame says.
cdef Py_ssize_t _U32_MAX = 0xFFFFFFFF

# Message types this version carries; anything else is refused on both sides so a
# peer speaking a newer protocol fails loudly instead of being misread.
cdef set _KNOWN_MSG_TYPES = {MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP, MSG_SNAP_RESP,
                             MSG_PREVOTE, MSG_PREVOTE_RESP, MSG_TIMEOUT_NOW}
cdef int _MIN_MSG_TYPE = min(_KNOWN_MSG_TYPES)
cdef int _MAX_MSG_TYPE = max(_KNOWN_MSG_TYPES)


cdef bint _fast_entry = False


cdef inline Entry _new_entry(uint64_t index, uint64_t term, int etype,
                             const unsigned char* data, Py_ssize_t dlen):
    cdef Entry e
    # The one copy of the payload on decode: frame bytes -> Entry.data.
    cdef bytes b = PyBytes_FromStringAndSize(<const char*>data, dlen)
    if _fast_entry:
        e = <Entry>rn_alloc_bare(Entry)
        RN_ENTRY_SET_DATA(e, b)
    else:
        e = Entry.__new__(Entry, 0, 0)
        e.data = b
    e.index = index
    e.term = term
    e.type = etype
    return e


cdef bint _fast_entry_ok():
    # The exposed fields must be exactly the four we set, `data` must be the last
    # field (nothing after it left uninitialised), and a bare-built entry must
    # equal a constructed one.
    cdef Entry probe = Entry(1, 2, 3, b"p")
    fields = {name for name, v in vars(Entry).items()
              if type(v).__name__ == "getset_descriptor" and not name.startswith("__")}
    if fields != {"index", "term", "type", "data"}:
        return False
    if RN_ENTRY_DATA_END(probe) != (<object>Entry).__basicsize__:
        return False
    global _fast_entry
    _fast_entry = True
    cdef Entry e = _new_entry(1, 2, 3, <const unsigned char*>b"p", 1)
    _fast_entry = e == probe and repr(e) == repr(probe)
    return _fast_entry


_fast_entry_ok()
FAST_ENTRY = _fast_entry


class FrameError(RaftError, ValueError):
    """A frame is malformed, truncated, oversized or of an unknown kind.

    Raised by decoding (the remote's fault: close the connection) and by encoding
    a batch that cannot fit in one frame.
    """


cdef inline bint _known_msg_type(int t):
    # The known types are contiguous (1..9); checked in _check_types_contiguous.
    return _MIN_MSG_TYPE <= t <= _MAX_MSG_TYPE


def _check_types_contiguous():
    if len(_KNOWN_MSG_TYPES) != _MAX_MSG_TYPE - _MIN_MSG_TYPE + 1:
        raise ImportError("raft.net.codec assumes contiguous message type values")
    if MSG_SNAP != _MSG_SNAP:
        raise ImportError("raft.net.codec: MSG_SNAP changed value in the core")

_check_types_contiguous()


cdef Py_ssize_t _check_max_frame(Py_ssize_t max_frame) except -1:
    if max_frame < _HEADER - _LEN_FIELD or max_frame > _U32_MAX:
        raise ValueError(f"max_frame must be in [2, {_U32_MAX}], got {max_frame}")
    return max_frame


# --- sizes -------------------------------------------------------------------

cdef inline Py_ssize_t _entries_size(list entries) except -1:
    cdef Py_ssize_t n = 0, i
    cdef object o
    cdef Entry e
    if entries is None:
        return 0
    for i in range(PyList_GET_SIZE(entries)):
        o = <object>PyList_GET_ITEM(entries, i)
        if type(o) is not Entry:
            raise TypeError(f"Message.entries must hold Entry objects, got {type(o).__name__}")
        e = <Entry>o
        if e.type < 0 or e.type > 255:
            raise ValueError(f"entry type {e.type} does not fit the wire format (0..255)")
        n += _ENT_HDR + PyBytes_GET_SIZE(e.data)
    return n


cdef inline Py_ssize_t _data_size(Message m) except -1:
    # data: bytes on MSG_SNAP (required, possibly empty), None or empty elsewhere.
    if m.type == _MSG_SNAP:
        if m.data is None:
            raise ValueError("cannot encode an InstallSnapshot chunk without data")
    elif m.data is None:
        return 0
    elif PyBytes_GET_SIZE(m.data):
        raise ValueError(f"only InstallSnapshot (type {_MSG_SNAP}) carries data, "
                         f"not message type {m.type}")
    if PyBytes_GET_SIZE(m.data) > 0xFFFFFFFF:
        raise ValueError(f"message data of {PyBytes_GET_SIZE(m.data)} bytes does not fit "
                         f"the u32 data length")
    return PyBytes_GET_SIZE(m.data)


cdef inline Py_ssize_t _message_size(Message m) except -1:
    # Validates as it sizes, so we never send what a peer must refuse.
    if not _known_msg_type(m.type):
        raise ValueError(f"cannot encode unknown message type {m.type}")
    return _MSG_HDR + _data_size(m) + _entries_size(m.entries)


def encoded_size(Message m not None) -> int:
    """Bytes ``m`` takes inside a MESSAGES frame (excluding the frame's own
    MESSAGES_OVERHEAD). Raises TypeError/ValueError for a message encode() would
    refuse. Cheap: the transport uses it to bound its send buffers."""
    return _message_size(m)


# --- encode ------------------------------------------------------------------


cdef Py_ssize_t _write_message(unsigned char* p, Message m) except -1:
    """Write ``m`` at ``p``; return the bytes written. The caller sized the buffer
    with _message_size on the same, unchanged, object."""
    cdef list entries = m.entries
    cdef Py_ssize_t n = PyList_GET_SIZE(entries) if entries is not None else 0
    cdef Py_ssize_t i, dlen, off
    cdef bytes mdata = m.data
    cdef Py_ssize_t mlen = PyBytes_GET_SIZE(mdata) if mdata is not None else 0
    cdef Entry e
    p[0] = <uint8_t>m.type
    p[1] = _FLAG_REJECT if m.reject else 0
    rn_st64(p + 2, m.src)
    rn_st64(p + 10, m.dst)
    rn_st64(p + 18, m.term)
    rn_st64(p + 26, m.log_term)
    rn_st64(p + 34, m.index)
    rn_st64(p + 42, m.commit)
    rn_st64(p + 50, m.reject_hint)
    rn_st64(p + 58, m.msg_id)
    rn_st64(p + 66, m.context)
    rn_st32(p + 74, <uint32_t>n)
    rn_st32(p + 78, <uint32_t>mlen)
    off = _MSG_HDR
    if mlen:
        memcpy(p + off, PyBytes_AS_STRING(mdata), mlen)
        off += mlen
    for i in range(n):
        e = <Entry>PyList_GET_ITEM(entries, i)
        dlen = PyBytes_GET_SIZE(e.data)
        rn_st64(p + off, e.index)
        rn_st64(p + off + 8, e.term)
        p[off + 16] = <uint8_t>e.type
        rn_st32(p + off + 17, <uint32_t>dlen)
        # The one copy of the payload: from the Entry's bytes into the frame.
        memcpy(p + off + _ENT_HDR, PyBytes_AS_STRING(e.data), dlen)
        off += _ENT_HDR + dlen
    return off


def encode(list msgs not None, Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> bytes:
    """Encode a batch of messages as one MESSAGES frame (length prefix included).

    Raises FrameError if the frame would exceed ``max_frame`` (split the batch),
    TypeError/ValueError for objects that are not valid messages.
    """
    cdef Py_ssize_t i, n = PyList_GET_SIZE(msgs)
    cdef Py_ssize_t total = _HEADER + 4, off
    cdef object o
    cdef Message m
    _check_max_frame(max_frame)
    # Pass 1: validate and size, so the output is allocated exactly once.
    for i in range(n):
        o = <object>PyList_GET_ITEM(msgs, i)
        if type(o) is not Message:
            raise TypeError(f"encode() takes a list of Message, got {type(o).__name__}")
        m = <Message>o
        total += _message_size(m)
        # Checked as we go: no overflow even for absurd inputs.
        if total - _LEN_FIELD > max_frame:
            raise FrameError(f"batch of {n} messages exceeds max_frame ({max_frame} bytes)")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    rn_st32(p, <uint32_t>(total - _LEN_FIELD))
    p[4] = _VERSION
    p[5] = _FRAME_MESSAGES
    rn_st32(p + _HEADER, <uint32_t>n)
    off = _HEADER + 4
    # Pass 2: write. No Python code runs between the passes, so sizes still hold.
    for i in range(n):
        off += _write_message(p + off, <Message>PyList_GET_ITEM(msgs, i))
    if off != total:  # cannot happen; refuse to send a corrupt frame if it does
        raise RuntimeError(f"codec size mismatch: wrote {off}, sized {total}")
    return out


def encode_frame(int frame_type, bytes body not None, Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> bytes:
    """A frame of any type around an already-encoded ``body`` (used for handshakes)."""
    cdef Py_ssize_t blen = PyBytes_GET_SIZE(body)
    _check_max_frame(max_frame)
    if frame_type < 1 or frame_type > _FRAME_ACCEPT:
        raise ValueError(f"unknown frame type {frame_type}")
    if blen + 2 > max_frame:
        raise FrameError(f"frame body of {blen} bytes exceeds max_frame ({max_frame} bytes)")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _HEADER + blen)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    rn_st32(p, <uint32_t>(blen + 2))
    p[4] = _VERSION
    p[5] = <uint8_t>frame_type
    memcpy(p + _HEADER, PyBytes_AS_STRING(body), blen)
    return out


# --- decode ------------------------------------------------------------------

cdef Py_ssize_t _check_header(const unsigned char* p, Py_ssize_t max_frame) except -1:
    """Validate a complete 6-byte header; return the body length."""
    cdef uint32_t length = rn_ld32(p)
    if length < 2:
        raise FrameError(f"frame length {length} is shorter than version + type")
    if <Py_ssize_t>length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds max_frame ({max_frame} bytes)")
    if p[4] != _VERSION:
        raise FrameError(f"unknown wire version {p[4]} (this node speaks {_VERSION})")
    if p[5] < 1 or p[5] > _FRAME_ACCEPT:
        raise FrameError(f"unknown frame type {p[5]}")
    return <Py_ssize_t>length - 2


def parse_header(header, Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> tuple:
    """Validate the first HEADER_SIZE bytes of a frame; return (frame_type, body_length)."""
    cdef const unsigned char[::1] v = header
    _check_max_frame(max_frame)
    if v.shape[0] < _HEADER:
        raise FrameError(f"frame header truncated: {v.shape[0]} of {_HEADER} bytes")
    cdef Py_ssize_t blen = _check_header(&v[0], max_frame)
    return v[5], blen


cdef list _decode_messages(const unsigned char* p, Py_ssize_t n):
    """Decode a MESSAGES body of exactly ``n`` bytes at ``p``."""
    cdef Py_ssize_t off = 4, i, j, dlen, mlen
    cdef uint32_t count, n_ent
    cdef int mtype
    cdef uint8_t flags
    cdef list out, ents
    cdef Message m
    cdef Entry e
    if n < 4:
        raise FrameError(f"MESSAGES body truncated: {n} bytes, no message count")
    count = rn_ld32(p)
    # Each message needs at least its fixed header: a count that cannot fit is a
    # lie, and must be caught before PyList_New(count) allocates for it.
    if <uint64_t>count * _MSG_HDR > <uint64_t>(n - 4):
        raise FrameError(f"message count {count} exceeds the frame ({n} body bytes)")
    out = PyList_New(count)
    for i in range(count):
        if n - off < _MSG_HDR:
            raise FrameError(f"message {i} truncated at body offset {off}")
        mtype = p[off]
        flags = p[off + 1]
        if not _known_msg_type(mtype):
            raise FrameError(f"unknown message type {mtype} in message {i}")
        if flags & ~_KNOWN_FLAGS:
            raise FrameError(f"unknown flag bits 0x{flags:02x} in message {i}")
        n_ent = rn_ld32(p + off + 74)
        mlen = rn_ld32(p + off + 78)
        # The data, then at least the entries' fixed headers, must fit in what is left.
        if mlen > n - off - _MSG_HDR:
            raise FrameError(f"data length {mlen} of message {i} exceeds the frame")
        if mlen and mtype != _MSG_SNAP:
            raise FrameError(f"message {i} of type {mtype} carries data (only "
                             f"InstallSnapshot, type {_MSG_SNAP}, may)")
        if <uint64_t>n_ent * _ENT_HDR > <uint64_t>(n - off - _MSG_HDR - mlen):
            raise FrameError(f"entry count {n_ent} of message {i} exceeds the frame")
        # tp_new only: Message.__init__ would re-parse arguments we set directly.
        m = Message.__new__(Message)
        m.type = mtype
        m.reject = flags & _FLAG_REJECT
        m.src = rn_ld64(p + off + 2)
        m.dst = rn_ld64(p + off + 10)
        m.term = rn_ld64(p + off + 18)
        m.log_term = rn_ld64(p + off + 26)
        m.index = rn_ld64(p + off + 34)
        m.commit = rn_ld64(p + off + 42)
        m.reject_hint = rn_ld64(p + off + 50)
        m.msg_id = rn_ld64(p + off + 58)
        m.context = rn_ld64(p + off + 66)
        off += _MSG_HDR
        # data is None except on MSG_SNAP (bytes, possibly empty): as the core builds it.
        if mtype == _MSG_SNAP:
            m.data = PyBytes_FromStringAndSize(<const char*>(p + off), mlen)
            off += mlen
        else:
            m.data = None
        ents = PyList_New(n_ent)
        m.entries = ents
        # The list is owned by the message before it is filled, so an error below
        # frees it (PyList_New slots are NULL until set, which dealloc tolerates).
        Py_INCREF(m)
        PyList_SET_ITEM(out, i, m)
        for j in range(n_ent):
            if n - off < _ENT_HDR:
                raise FrameError(f"entry {j} of message {i} truncated")
            dlen = rn_ld32(p + off + 17)
            if dlen > n - off - _ENT_HDR:
                raise FrameError(f"entry {j} of message {i}: data length {dlen} exceeds the frame")
            e = _new_entry(rn_ld64(p + off), rn_ld64(p + off + 8), p[off + 16],
                           p + off + _ENT_HDR, dlen)
            Py_INCREF(e)
            PyList_SET_ITEM(ents, j, e)
            off += _ENT_HDR + dlen
    if off != n:
        raise FrameError(f"{n - off} trailing bytes after {count} messages")
    return out


cdef list _decode_frame_at(const unsigned char* p, Py_ssize_t avail, Py_ssize_t max_frame):
    # A whole frame: header checked, declared length must match what we hold.
    if avail < _HEADER:
        raise FrameError(f"frame truncated: {avail} bytes, header needs {_HEADER}")
    cdef Py_ssize_t blen = _check_header(p, max_frame)
    if p[5] != _FRAME_MESSAGES:
        raise FrameError(f"unexpected frame type {p[5]} (expected MESSAGES)")
    if avail - _HEADER != blen:
        raise FrameError(f"frame length says {blen} body bytes, got {avail - _HEADER}")
    return _decode_messages(p + _HEADER, blen)


def decode(frame, Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> list:
    """Decode one complete MESSAGES frame (length prefix included) into a list of
    Message. Any defect raises FrameError."""
    _check_max_frame(max_frame)
    cdef const unsigned char[::1] v = frame
    if v.shape[0] == 0:
        raise FrameError("empty frame")
    return _decode_frame_at(&v[0], v.shape[0], max_frame)


@cython.final
cdef class FrameDecoder:
    """Incremental MESSAGES-frame decoder for a byte stream.

    ``feed(data)`` returns the message batches of the frames completed by
    ``data`` (one list per frame, possibly none). Bytes of an incomplete frame
    are kept; the buffer never holds more than one frame's header-checked length
    plus one read. After a FrameError the stream has lost sync: the decoder is
    poisoned and refuses further input; close the connection.
    """
    cdef bytearray _buf
    cdef readonly Py_ssize_t max_frame
    cdef object _error

    def __init__(self, Py_ssize_t max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = _check_max_frame(max_frame)
        self._buf = bytearray()
        self._error = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return PyByteArray_GET_SIZE(self._buf)

    cdef list _parse(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* consumed):
        # Decode every complete frame in p[0:n]; report how far we got.
        cdef list frames = []
        cdef Py_ssize_t off = 0, blen
        while n - off >= _HEADER:
            # Header checked before waiting for the body: an oversized length is
            # refused now, not after we have buffered max_frame bytes of junk.
            blen = _check_header(p + off, self.max_frame)
            if p[off + 5] != _FRAME_MESSAGES:
                raise FrameError(f"unexpected frame type {p[off + 5]} (expected MESSAGES)")
            if n - off - _HEADER < blen:
                break
            frames.append(_decode_messages(p + off + _HEADER, blen))
            off += _HEADER + blen
        consumed[0] = off
        return frames

    def feed(self, data) -> list:
        cdef Py_ssize_t consumed = 0
        cdef list frames
        if self._error is not None:
            raise FrameError(f"decoder failed earlier: {self._error}")
        if type(data) is not bytes:
            data = bytes(data)
        try:
            if PyByteArray_GET_SIZE(self._buf) == 0:
                # Fast path: parse straight from the read, keep only a partial tail.
                frames = self._parse(<const unsigned char*>PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data), &consumed)
                if consumed < PyBytes_GET_SIZE(data):
                    self._buf += (<bytes>data)[consumed:]
            else:
                self._buf += data
                frames = self._parse(<const unsigned char*>PyByteArray_AS_STRING(self._buf),
                                     PyByteArray_GET_SIZE(self._buf), &consumed)
                if consumed:
                    # bytearray drops a prefix in O(1) (it moves its start pointer).
                    del self._buf[:consumed]
        except FrameError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        return frames
