"""Binary encodings of the KV state machine, never pickle: the Raft log command
(``encode_command``/``decode_command``; raft/_fastpath.pyx is the compiled twin) and
the reply form stored with client sessions in snapshots."""

from __future__ import annotations

from dataclasses import dataclass

from raft.errors import RaftError
from raft.kv.replies import NULL_ARRAY, ErrorReply, Reply, Status


# --------------------------------------------------------------------------- varints


def _put_uvarint(out: bytearray, n: int) -> None:
    if 0 <= n < 0x80:  # the common case (lengths, small ids): one byte
        out.append(n)
        return
    if n < 0:
        raise ValueError(f"uvarint must be >= 0, got {n}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_bytes(out: bytearray, b: bytes) -> None:
    _put_uvarint(out, len(b))
    out += b


class _Cursor:
    """Reads what ``_put_*`` wrote; every read is bounds-checked so malformed input
    raises ``error`` (a ValueError subclass) rather than IndexError or a huge allocation."""

    __slots__ = ("buf", "pos", "error")

    def __init__(self, buf: bytes, error: type[ValueError]) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.error = error

    def uvarint(self) -> int:
        buf, pos, shift, n = self.buf, self.pos, 0, 0
        if pos < len(buf) and buf[pos] < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return buf[pos]
        while True:
            if pos >= len(buf):
                raise self.error(f"truncated varint at byte {self.pos}")
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63 + 7:  # more than 10 bytes: not something we wrote
                raise self.error(f"varint too long at byte {self.pos}")
        self.pos = pos
        return n

    def bytes_(self) -> bytes:
        n = self.uvarint()
        end = self.pos + n
        if end > len(self.buf):
            raise self.error(
                f"length {n} at byte {self.pos} runs past the end ({len(self.buf)} bytes)"
            )
        b = bytes(self.buf[self.pos : end])
        self.pos = end
        return b

    def count(self, min_item_size: int = 1) -> int:
        """A collection length, refused if the remaining bytes cannot possibly hold it."""
        n = self.uvarint()
        if n * min_item_size > len(self.buf) - self.pos:
            raise self.error(f"count {n} at byte {self.pos} exceeds the remaining input")
        return n

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise self.error(f"truncated input at byte {self.pos}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise self.error(f"{len(self.buf) - self.pos} trailing bytes at byte {self.pos}")


# --------------------------------------------------------------------------- log commands

_CMD_VERSION = 1

try:   # the compiled codec (raft/_fastpath.pyx); the Python code below is its reference
    from raft import _fastpath as _kvcodec
except ImportError:  # a source tree without compiled extensions
    _kvcodec = None


class CommandDecodeError(RaftError, ValueError):
    """A log entry that is not an encoded command."""


@dataclass(frozen=True, slots=True)
class Command:
    """One state machine command as stored in the Raft log.

    ``client_id`` 0 means no session (at-least-once if the client retries); otherwise it
    names a session opened with ``RAFT.SESSION`` and ``seq`` (>= 1) orders its writes.
    ``time_ms`` is the proposing leader's wall clock (Unix ms).
    """

    client_id: int
    seq: int
    time_ms: int
    argv: tuple[bytes, ...]


def encode_command(client_id: int, seq: int, argv: list[bytes], *, time_ms: int) -> bytes:
    """``version, client_id, seq, time_ms, argc, (len, bytes) * argc`` as unsigned varints.

    Deterministic: equal inputs give equal bytes, on every platform. The compiled
    codec (raft/_fastpath.pyx) writes the same bytes; this code is its reference.
    """
    if _kvcodec is not None:
        try:
            return _kvcodec.encode(client_id, seq, argv if type(argv) is list else list(argv),
                                   time_ms)
        except (TypeError, OverflowError):
            pass   # not bytes, or beyond 64 bits: the reference below decides
    out = bytearray((_CMD_VERSION,))
    _put_uvarint(out, client_id)
    _put_uvarint(out, seq)
    _put_uvarint(out, time_ms)
    _put_uvarint(out, len(argv))
    for arg in argv:
        _put_bytes(out, arg)
    return bytes(out)


def decode_command(data: bytes) -> Command:
    """Inverse of :func:`encode_command`; raises :class:`CommandDecodeError` on anything else."""
    return Command(*decode_fields(data))


def decode_fields(data: bytes) -> tuple[int, int, int, tuple[bytes, ...]]:
    """decode_command's fields as a plain tuple ``(client_id, seq, time_ms, argv)``:
    what the state machine's hot path reads, without building a Command."""
    if _kvcodec is not None and type(data) is bytes:
        fast = _kvcodec.decode(data)
        if fast is not None:
            return fast
    cmd = _decode_command_reference(data)
    return cmd.client_id, cmd.seq, cmd.time_ms, cmd.argv


def _decode_command_reference(data: bytes) -> Command:
    """decode_command in Python: what the compiled codec must agree with, and what
    names the problem in a malformed entry."""
    cur = _Cursor(data, CommandDecodeError)
    version = cur.byte()
    if version != _CMD_VERSION:
        raise CommandDecodeError(f"unknown command encoding version {version}")
    client_id, seq, time_ms = cur.uvarint(), cur.uvarint(), cur.uvarint()
    argc = cur.count()
    argv = tuple(cur.bytes_() for _ in range(argc))
    cur.done()
    if not argv:
        raise CommandDecodeError("empty argv")
    return Command(client_id, seq, time_ms, argv)


def encode_argv(argv: list[bytes]) -> bytes:
    """One command's argv alone (for the commands of a transaction, see RAFT.EXEC)."""
    out = bytearray()
    _put_uvarint(out, len(argv))
    for arg in argv:
        _put_bytes(out, arg)
    return bytes(out)


def decode_argv(data: bytes) -> list[bytes]:
    cur = _Cursor(data, CommandDecodeError)
    argv = [cur.bytes_() for _ in range(cur.count())]
    cur.done()
    if not argv:
        raise CommandDecodeError("empty argv")
    return argv


# --------------------------------------------------------------------------- reply encoding
# Session replies live in snapshots, so replies need a binary form too.


def _put_value(out: bytearray, v: Reply) -> None:
    if isinstance(v, ErrorReply):
        out += b"e"
        _put_bytes(out, v.encode())
    elif isinstance(v, Status):
        out += b"s"
        _put_bytes(out, v.encode())
    elif isinstance(v, bytes):
        out += b"b"
        _put_bytes(out, v)
    elif v is None:
        out += b"n"
    elif v is NULL_ARRAY:
        out += b"N"
    elif isinstance(v, bool) or not isinstance(v, (int, list)):
        raise TypeError(f"cannot encode reply {v!r}")
    elif isinstance(v, int):
        out += b"i"
        _put_uvarint(out, v * 2 if v >= 0 else -v * 2 - 1)  # zigzag: small negatives stay short
    else:
        out += b"l"
        _put_uvarint(out, len(v))
        for item in v:
            _put_value(out, item)


def _get_value(cur: _Cursor) -> Reply:
    tag = cur.byte()
    if tag == ord("b"):
        return cur.bytes_()
    if tag == ord("i"):
        z = cur.uvarint()
        return z // 2 if z % 2 == 0 else -(z + 1) // 2
    if tag == ord("n"):
        return None
    if tag == ord("N"):
        return NULL_ARRAY
    if tag == ord("s"):
        return Status(cur.bytes_().decode())
    if tag == ord("e"):
        return ErrorReply(cur.bytes_().decode())
    if tag == ord("l"):
        return [_get_value(cur) for _ in range(cur.count())]
    raise cur.error(f"unknown reply tag {tag}")
