"""RESP reply values the state machine returns and the RESP layer encodes: bulk
``bytes``, ``int``, ``None``, ``list``, :class:`Status`, :class:`ErrorReply`,
:data:`NULL_ARRAY`; and the shared error replies."""

from __future__ import annotations

from typing import Union


# --------------------------------------------------------------------------- replies


class Status(str):
    """A RESP simple string (``+OK``). Bulk strings are ``bytes``."""

    __slots__ = ()


class ErrorReply(str):
    """A RESP error; the text includes the code, e.g. ``"ERR syntax error"``.

    Errors are replies, not exceptions: a failed command is still a deterministic
    outcome that sessions save and replay.
    """

    __slots__ = ()


class _NullArray:
    """RESP2's null array (``*-1``), which XREAD and XRANGE COUNT 0 return."""

    _instance: "_NullArray | None" = None

    def __new__(cls) -> "_NullArray":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = _NullArray()
OK = Status("OK")

Reply = Union[bytes, int, None, list, Status, ErrorReply, _NullArray]

# Redis's exact error texts: clients (and people) match on them.
E_SYNTAX = ErrorReply("ERR syntax error")
E_NOT_INT = ErrorReply("ERR value is not an integer or out of range")
E_OVERFLOW = ErrorReply("ERR increment or decrement would overflow")
E_WRONGTYPE = ErrorReply("WRONGTYPE Operation against a key holding the wrong kind of value")
E_BAD_ID = ErrorReply("ERR Invalid stream ID specified as stream command argument")
E_XADD_SMALL = ErrorReply(
    "ERR The ID specified in XADD is equal or smaller than the target stream top item"
)
E_XADD_ZERO = ErrorReply("ERR The ID specified in XADD must be greater than 0-0")
E_XADD_EXHAUSTED = ErrorReply(
    "ERR The stream has exhausted the last possible ID, unable to add more items"
)


def arity_error(name: str) -> ErrorReply:
    """Redis's wrong-arity error; ``name`` is the lowercase command (``client|setname``)."""
    return ErrorReply(f"ERR wrong number of arguments for '{name}' command")


def _sanitize(text: str) -> str:
    # Errors are one RESP line: Redis replaces CR/LF the same way.
    return text.replace("\r", " ").replace("\n", " ")


def as_text(b: bytes) -> str:
    """Bytes from a client, for an error message (never fails)."""
    return b.decode("utf-8", "replace")


def unknown_command_error(argv: list[bytes]) -> ErrorReply:
    """Redis 7's text, including the (truncated) argument list."""
    args = ""
    for a in argv[1:]:
        if len(args) >= 128:
            break
        args += "'%s' " % as_text(a)[: 128 - len(args)]
    name = as_text(argv[0])[:128]
    return ErrorReply(
        _sanitize(f"ERR unknown command '{name}', with args beginning with: {args}")
    )
