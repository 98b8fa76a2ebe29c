"""The replicated key-value + stream state machine (``raft.kv``).

Rooms: ``replies`` (reply values and shared errors), ``codec`` (log command and
snapshot reply encodings), ``commands`` (all command metadata: the table, arity and
write checks, COMMAND INFO key positions), ``args`` (argument parsing), ``machine``
(``KVStateMachine``: the data types, sessions, snapshots and every command handler;
its module docstring explains determinism and sessions). Importing the package
registers every command (``machine`` fills the table in ``commands``).
"""

from raft.kv.args import XReadArgs, parse_int, parse_xread
from raft.kv.codec import (Command, CommandDecodeError, decode_argv, decode_command, encode_argv,
                           encode_command)
from raft.kv.commands import (CommandSpec, arity_ok, check_command, command_names, command_spec, is_write,
                              key_positions, lookup_command)
from raft.kv.machine import KVStateMachine, SnapshotError
from raft.kv.replies import (E_NOT_INT, E_SYNTAX, NULL_ARRAY, OK, ErrorReply, Reply, Status, arity_error,
                             as_text, unknown_command_error)

__all__ = [
    "Command",
    "E_NOT_INT",
    "E_SYNTAX",
    "CommandDecodeError",
    "CommandSpec",
    "ErrorReply",
    "KVStateMachine",
    "NULL_ARRAY",
    "OK",
    "Reply",
    "SnapshotError",
    "Status",
    "XReadArgs",
    "arity_error",
    "arity_ok",
    "as_text",
    "check_command",
    "command_names",
    "command_spec",
    "decode_argv",
    "decode_command",
    "encode_argv",
    "encode_command",
    "is_write",
    "key_positions",
    "lookup_command",
    "parse_int",
    "parse_xread",
    "unknown_command_error",
]
