"""Argument parsing for KV commands: integers, stream ids, XREAD, SET/EXPIRE
options, XADD/XTRIM trimming. Pure functions; errors are returned as replies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from raft.kv.replies import (E_BAD_ID, E_NOT_INT, E_SYNTAX, E_XADD_EXHAUSTED, E_XADD_SMALL,
                             E_XADD_ZERO, ErrorReply, _sanitize, as_text, arity_error)


INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
UINT64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------- parsing helpers

_LL_RE = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_ULL_FALLBACK_RE = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def parse_int(b: bytes) -> int | None:
    """Redis's string2ll: canonical signed 64-bit decimal only (no '+', spaces, '01', '-0')."""
    if not _LL_RE.fullmatch(b):
        return None
    n = int(b)
    return n if INT64_MIN <= n <= INT64_MAX else None


def _parse_u64(b: bytes) -> int | None:
    """Redis's string2ull (stream ids): string2ll, else what C strtoull accepts."""
    n = parse_int(b)
    if n is not None:
        return n if n >= 0 else None
    m = _ULL_FALLBACK_RE.fullmatch(b)
    if m is None:
        return None
    n = int(m[2])
    if n > UINT64_MAX:
        return None
    return (-n) % (1 << 64) if m[1] == b"-" else n


StreamID = tuple[int, int]
_MAX_ID: StreamID = (UINT64_MAX, UINT64_MAX)


def _parse_stream_id(
    b: bytes, missing_seq: int, *, strict: bool, allow_seq_star: bool = False
) -> tuple[StreamID, bool] | None:
    """Redis's streamGenericParseIDOrReply. Returns (id, seq_given) or None if invalid.

    ``seq_given`` is False only for ``<ms>-*`` (XADD's "auto sequence" form).
    """
    if len(b) > 127:
        return None
    if b in (b"-", b"+"):
        if strict:
            return None
        return ((0, 0) if b == b"-" else _MAX_ID), True
    ms_part, dash, seq_part = b.partition(b"-")
    ms = _parse_u64(ms_part)
    if ms is None:
        return None
    if not dash:
        return (ms, missing_seq), True
    if allow_seq_star and seq_part == b"*":
        return (ms, 0), False
    seq = _parse_u64(seq_part)
    if seq is None:
        return None
    return (ms, seq), True


def _incr_id(i: StreamID) -> StreamID | None:
    ms, seq = i
    if seq < UINT64_MAX:
        return ms, seq + 1
    return (ms + 1, 0) if ms < UINT64_MAX else None


def _decr_id(i: StreamID) -> StreamID | None:
    ms, seq = i
    if seq > 0:
        return ms, seq - 1
    return (ms - 1, UINT64_MAX) if ms > 0 else None


def _fmt_id(i: StreamID) -> bytes:
    return b"%d-%d" % i


# --------------------------------------------------------------------------- XREAD


@dataclass(slots=True)
class XReadArgs:
    """Parsed XREAD. ``ids`` entries are StreamIDs or ``None`` for ``$`` (unresolved)."""

    count: int  # 0 = no limit
    block_ms: int | None  # None = do not block; 0 = forever
    keys: list[bytes]
    ids: list[StreamID | None]


def parse_xread(argv: list[bytes]) -> XReadArgs | ErrorReply:
    """Parse XREAD's options (not the ids' key types: that needs the data, see ``xread``)."""
    count, block, streams_at = 0, None, 0
    i = 1
    while i < len(argv):
        opt, more = argv[i].lower(), len(argv) - i - 1
        if opt == b"block" and more:
            block = parse_int(argv[i + 1])
            if block is None:
                return ErrorReply("ERR timeout is not an integer or out of range")
            if block < 0:
                return ErrorReply("ERR timeout is negative")
            i += 2
        elif opt == b"count" and more:
            n = parse_int(argv[i + 1])
            if n is None:
                return E_NOT_INT
            count = max(n, 0)
            i += 2
        elif opt == b"streams" and more:
            streams_at = i + 1
            break
        elif opt == b"group" and more >= 2:
            return ErrorReply(
                "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."
            )
        else:
            return E_SYNTAX
    if not streams_at:
        return E_SYNTAX
    rest = argv[streams_at:]
    if len(rest) % 2:
        return ErrorReply(
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' "
            "must be specified."
        )
    half = len(rest) // 2
    return XReadArgs(count, block, list(rest[:half]), [None] * half)  # ids parsed later


# --------------------------------------------------------------------------- option parsers


def _parse_set_options(
    argv: list[bytes], now: int
) -> tuple[bool, bool, bool, bool, int | None] | ErrorReply:
    """SET's options, as Redis 7's parseExtendedStringArgumentsOrReply.

    Returns (nx, xx, get, keepttl, absolute expiry ms or None)."""
    nx = xx = get = keepttl = False
    unit: bytes | None = None
    expire_arg = b""
    i = 3
    while i < len(argv):
        opt = argv[i].lower()
        has_next = i + 1 < len(argv)
        if opt == b"nx" and not xx:
            nx = True
        elif opt == b"xx" and not nx:
            xx = True
        elif opt == b"get":
            get = True
        elif opt == b"keepttl" and unit is None:
            keepttl = True
        elif opt in (b"ex", b"px", b"exat", b"pxat") and has_next and unit is None and not keepttl:
            unit, expire_arg = opt, argv[i + 1]
            i += 1
        else:
            return E_SYNTAX
        i += 1
    if unit is None:
        return nx, xx, get, keepttl, None
    n = parse_int(expire_arg)
    if n is None:
        return E_NOT_INT
    invalid = ErrorReply("ERR invalid expire time in 'set' command")
    seconds = unit in (b"ex", b"exat")
    if n <= 0 or (seconds and n > INT64_MAX // 1000):
        return invalid
    ms = n * 1000 if seconds else n
    if unit in (b"ex", b"px"):
        ms += now
    if ms > INT64_MAX:  # overflowed C's long long in Redis
        return invalid
    return nx, xx, get, keepttl, ms


def _parse_expire_flags(args: list[bytes]) -> set[str] | ErrorReply:
    flags: set[str] = set()
    for a in args:
        f = a.lower().decode("latin-1")
        if f not in ("nx", "xx", "gt", "lt"):
            return ErrorReply(_sanitize(f"ERR Unsupported option {as_text(a)}"))
        flags.add(f)
    if "nx" in flags and len(flags) > 1:
        return ErrorReply("ERR NX and XX, GT or LT options at the same time are not compatible")
    if "gt" in flags and "lt" in flags:
        return ErrorReply("ERR GT and LT options at the same time are not compatible")
    return flags


def _parse_interval_id(
    b: bytes, missing_seq: int, *, exclusive_step: Callable, which: str
) -> StreamID | ErrorReply:
    """XRANGE's start/end: ``-``, ``+``, ``<ms>[-<seq>]``, or exclusive ``(<id>``."""
    if len(b) > 1 and b[:1] == b"(":
        parsed = _parse_stream_id(b[1:], missing_seq, strict=True)
        if parsed is None:
            return E_BAD_ID
        stepped = exclusive_step(parsed[0])
        if stepped is None:
            return ErrorReply(f"ERR invalid {which} ID for the interval")
        return stepped
    parsed = _parse_stream_id(b, missing_seq, strict=False)
    return E_BAD_ID if parsed is None else parsed[0]


_Trim = tuple[str, object]


def _parse_xadd(
    argv: list[bytes],
) -> tuple[StreamID | None, bool, bool, _Trim | None, int] | ErrorReply:
    """XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT n]] *|id field value ...

    Returns (id or None for ``*``, seq_given, nomkstream, trim, index of first field).
    ``~`` is accepted and trims exactly (Redis may keep a few more entries)."""
    nomkstream, trim, approx, limit = False, None, False, None
    entry_id: StreamID | None = None
    seq_given = True
    i = 2
    while i < len(argv):
        opt, more = argv[i].lower(), len(argv) - i - 1
        if opt == b"*":
            break
        if opt == b"nomkstream":
            nomkstream = True
        elif opt in (b"maxlen", b"minid") and more >= 1:
            if trim is not None:
                return ErrorReply(
                    "ERR syntax error, MAXLEN and MINID options at the same time are not "
                    "compatible"
                )
            if argv[i + 1] in (b"~", b"=") and more >= 2:
                approx = argv[i + 1] == b"~"
                i += 1
            threshold = _parse_trim_threshold(opt, argv[i + 1])
            if isinstance(threshold, ErrorReply):
                return threshold
            trim = (opt.decode(), threshold)
            i += 1
        elif opt == b"limit" and more >= 1:
            limit = parse_int(argv[i + 1])
            if limit is None:
                return E_NOT_INT
            if limit < 0:
                return ErrorReply("ERR The LIMIT argument must be >= 0.")
            i += 1
        else:
            parsed = _parse_stream_id(argv[i], 0, strict=True, allow_seq_star=True)
            if parsed is None:
                return E_BAD_ID
            entry_id, seq_given = parsed
            break
        i += 1
    if limit is not None and not approx:
        return ErrorReply("ERR syntax error, LIMIT cannot be used without the special ~ option")
    field_at = i + 1
    nfields = len(argv) - field_at
    if nfields < 2 or nfields % 2:
        return arity_error("xadd")
    if entry_id == (0, 0) and seq_given:
        return E_XADD_ZERO
    return entry_id, seq_given, nomkstream, trim, field_at


def _parse_trim_threshold(kind: bytes, arg: bytes) -> int | StreamID | ErrorReply:
    if kind == b"maxlen":
        n = parse_int(arg)
        if n is None:
            return E_NOT_INT
        return ErrorReply("ERR The MAXLEN argument must be >= 0.") if n < 0 else n
    parsed = _parse_stream_id(arg, 0, strict=True)
    return E_BAD_ID if parsed is None else parsed[0]


def _next_stream_id(
    last: StreamID, given: StreamID | None, seq_given: bool, now: int
) -> StreamID | ErrorReply:
    """The id XADD assigns: ``*`` from the log clock, ``<ms>-*``, or an explicit id that
    must exceed the stream's last id."""
    if given is None:  # "*": time-based, monotonic even if the clock is behind last
        if now > last[0]:
            return now, 0
        nxt = _incr_id(last)
        return E_XADD_EXHAUSTED if nxt is None else nxt
    ms, seq = given
    if not seq_given:  # "<ms>-*"
        if ms == last[0]:
            if last[1] == UINT64_MAX:
                return E_XADD_SMALL
            return ms, last[1] + 1
        return (ms, 0) if ms > last[0] else E_XADD_SMALL
    return given if given > last else E_XADD_SMALL
