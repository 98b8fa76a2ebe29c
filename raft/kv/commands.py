"""All command metadata: the table of state machine commands (name, arity,
write or read, handler) that ``KVStateMachine`` methods register into, lookups and
the checks done before anything enters the log, and COMMAND INFO key positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raft.kv.replies import ErrorReply, Reply, arity_error, unknown_command_error


# --------------------------------------------------------------------------- command table


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str  # lowercase, as Redis prints it in errors
    arity: int  # Redis convention: N exact, -N at least N (argv[0] included)
    write: bool
    handler: Callable[..., Reply]


def arity_ok(arity: int, argc: int) -> bool:
    """Redis's arity convention: ``arity`` N means exactly N arguments (the command
    name included), -N at least N."""
    return argc == arity if arity >= 0 else argc >= -arity


_COMMANDS: dict[bytes, CommandSpec] = {}


def _command(name: str, arity: int, *, write: bool) -> Callable:
    def register(fn: Callable[..., Reply]) -> Callable[..., Reply]:
        _COMMANDS[name.encode()] = CommandSpec(name, arity, write, fn)
        return fn

    return register


def _spec(argv: list[bytes] | tuple[bytes, ...]) -> CommandSpec | None:
    return _COMMANDS.get(argv[0].lower()) if argv else None


def lookup_command(argv: list[bytes]) -> CommandSpec | ErrorReply:
    """The command's spec, or Redis's unknown-command / wrong-arity error."""
    if not argv:
        return ErrorReply("ERR empty command")
    spec = _spec(argv)
    if spec is None:
        return unknown_command_error(argv)
    if not arity_ok(spec.arity, len(argv)):
        return arity_error(spec.name)
    return spec


def check_command(argv: list[bytes]) -> ErrorReply | None:
    """The unknown-command and arity errors, checked before anything enters the log."""
    spec = lookup_command(argv)
    return spec if isinstance(spec, ErrorReply) else None


def is_write(argv: list[bytes]) -> bool:
    """True if the command changes state (goes through the log); False for reads.

    ``RAFT.SEQ <client> <seq> cmd ...`` is classified by the wrapped command.
    Unknown commands are not writes (they are rejected before reaching the log).
    """
    if len(argv) >= 4 and argv[0].lower() == b"raft.seq":
        argv = argv[3:]
    spec = _spec(argv)
    return spec is not None and spec.write


def command_names() -> list[str]:
    """Lowercase names of the state machine commands (for COMMAND)."""
    return sorted(s.name for s in _COMMANDS.values())


def command_spec(name: bytes) -> CommandSpec | None:
    return _COMMANDS.get(name.lower())


# (first key, last key, step) for COMMAND INFO; the rest take one key at argv[1].
_KEY_POSITIONS = {
    "mget": (1, -1, 1), "exists": (1, -1, 1), "del": (1, -1, 1), "unlink": (1, -1, 1),
    "mset": (1, -1, 2), "dbsize": (0, 0, 0), "flushdb": (0, 0, 0), "flushall": (0, 0, 0),
    "raft.session": (0, 0, 0), "xread": (0, 0, 0),
}


def key_positions(name: str) -> tuple[int, int, int]:
    """(first key, last key, step) of state machine command ``name``, as COMMAND INFO
    reports them."""
    return _KEY_POSITIONS.get(name, (1, 1, 1))
