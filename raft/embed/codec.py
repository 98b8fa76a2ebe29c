"""msgpack encodings of raft.embed: log entries, call outcomes, snapshots, RPC frames.

Never pickle: a log entry, snapshot or RPC frame from a peer or a client can at worst
be rejected with a clear error, never run code. Only msgpack's own types travel:
None, bool, int (-2**63 .. 2**64-1), float, str, bytes, and lists/tuples and dicts of
those (tuples come back as lists; dict keys may be any of the scalar types).
"""
from __future__ import annotations

from typing import Any

import msgpack

from raft.errors import RaftError

__all__ = ["EncodeError", "DecodeError", "ENTRY_VERSION", "OP_CALL", "OP_OPEN", "Entry",
           "encode_entry", "decode_entry", "pack", "unpack", "ok_outcome", "error_outcome",
           "OUTCOME_OK", "OUTCOME_ERROR", "OUTCOME_SESSION_EXPIRED"]

#: Version of the entry envelope itself (a state machine's own version travels in
#: every entry too, see StateMachine.version).
ENTRY_VERSION = 1
OP_CALL = 1   # a call of a @replicated method (or a raw submit())
OP_OPEN = 2   # open a client session (its id is this entry's log index, diss. §6.3)

OUTCOME_OK = 0
OUTCOME_ERROR = 1
OUTCOME_SESSION_EXPIRED = 2

#: Bounds on what unpack accepts (a hostile or corrupt buffer must not allocate much).
MAX_UNPACK_BYTES = 64 << 20

ALLOWED = ("None, bool, int (64-bit), float, str, bytes, and lists, tuples and dicts "
           "of those")


class EncodeError(RaftError, TypeError):
    """A value cannot be encoded with msgpack (raft.embed never pickles)."""


class DecodeError(RaftError, ValueError):
    """Bytes from the log, a snapshot or the network are not what raft.embed wrote."""


def pack(value: Any, what: str = "value") -> bytes:
    """msgpack ``value``; EncodeError names ``what`` and the allowed types."""
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"{what} cannot be encoded with msgpack ({e}); "
                          f"allowed: {ALLOWED}") from None


def unpack(data: bytes, what: str = "data") -> Any:
    """The inverse of pack; DecodeError on anything malformed."""
    try:
        if len(data) > MAX_UNPACK_BYTES:
            raise ValueError(f"{len(data)} bytes is over the {MAX_UNPACK_BYTES} limit")
        # unpackb bounds every container by the buffer's size: no huge allocation.
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types, incl. TypeError for bad keys
        raise DecodeError(f"{what} is not valid msgpack: {type(e).__name__}: {e}") from None


def check_args(args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> None:
    """Raise EncodeError naming the first argument that msgpack cannot encode."""
    for i, a in enumerate(args):
        pack(a, f"argument {i + 1} of {what}")
    for k, a in kwargs.items():
        pack(a, f"argument {k!r} of {what}")


class Entry:
    """A decoded log entry of raft.embed."""

    __slots__ = ("op", "version", "client_id", "seq", "ack", "time_ms", "target", "name",
                 "args", "kwargs")

    def __init__(self, op: int, version: int, client_id: int, seq: int, ack: int,
                 time_ms: int, target: str, name: str, args: list[Any],
                 kwargs: dict[str, Any]) -> None:
        self.op = op
        self.version = version
        self.client_id = client_id
        self.seq = seq
        self.ack = ack
        self.time_ms = time_ms
        self.target = target
        self.name = name
        self.args = args
        self.kwargs = kwargs


def encode_entry(op: int, version: int, client_id: int, seq: int, ack: int, time_ms: int,
                 target: str, name: str, args: Any, kwargs: dict[str, Any]) -> bytes:
    return pack([ENTRY_VERSION, op, version, client_id, seq, ack, time_ms, target, name,
                 list(args), kwargs], f"the call {target}.{name}")


def decode_entry(data: bytes) -> Entry:
    v = unpack(data, "log entry")
    if not isinstance(v, list) or len(v) != 11 or v[0] != ENTRY_VERSION:
        raise DecodeError("not a raft.embed log entry (or a newer envelope version)")
    _, op, version, cid, seq, ack, time_ms, target, name, args, kwargs = v
    if op not in (OP_CALL, OP_OPEN) or type(version) is not int or type(cid) is not int \
            or type(seq) is not int or type(ack) is not int or type(time_ms) is not int \
            or min(version, cid, seq, ack, time_ms) < 0 or not isinstance(target, str) or not isinstance(name, str) \
            or not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not all(isinstance(k, str) for k in kwargs):
        raise DecodeError("malformed raft.embed log entry")
    return Entry(op, version, cid, seq, ack, time_ms, target, name, args, kwargs)


def ok_outcome(result: Any, what: str) -> bytes:
    """What a call's entry produced, as the bytes that sessions keep and callers decode.
    A result msgpack cannot encode becomes an error outcome (the same on every replica)."""
    try:
        return msgpack.packb([OUTCOME_OK, result], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        return error_outcome("EncodeError", f"the result of {what} cannot be encoded with "
                                            f"msgpack ({e}); allowed: {ALLOWED}")


def error_outcome(kind: str, message: str, code: int = OUTCOME_ERROR) -> bytes:
    return msgpack.packb([code, kind, message], use_bin_type=True)
