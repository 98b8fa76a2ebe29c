"""A fast, spec-checked Raft consensus system.

The protocol core is the compiled module ``raft._core`` (sans-IO; see its
docstring for the Ready/advance persistence contract). ``raft.testing.sim`` drives it in
a deterministic, seeded simulator with fault injection.
"""
from raft._core import (
    CANDIDATE,
    ENTRY_NOOP,
    ENTRY_NORMAL,
    FOLLOWER,
    LEADER,
    MSG_APP,
    MSG_APP_RESP,
    MSG_SNAP,
    MSG_SNAP_RESP,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
    HardState,
    InvariantViolation,
    LocalProtocolError,
    Message,
    NotLeader,
    RaftError,
    RaftLog,
    RawNode,
    Ready,
    RemoteProtocolError,
    Snapshot,
)

__all__ = [
    "CANDIDATE", "ENTRY_NOOP", "ENTRY_NORMAL", "FOLLOWER", "LEADER",
    "MSG_APP", "MSG_APP_RESP", "MSG_SNAP", "MSG_SNAP_RESP", "MSG_VOTE", "MSG_VOTE_RESP",
    "Entry", "HardState", "InvariantViolation", "LocalProtocolError", "Message", "NotLeader", "RaftError",
    "RaftLog", "RawNode", "Ready", "RemoteProtocolError", "Snapshot",
]
__version__ = "0.1.0"
