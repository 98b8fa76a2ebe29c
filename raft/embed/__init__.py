"""raft.embed: replicate your own Python state machine on the raft runtime.

See docs/embedding.md. The asyncio API is EmbeddedNode; SyncNode is its blocking
facade for threaded programs; ClusterClient calls a cluster from another process.
"""
from raft.embed.api import ClientSession, EmbeddedNode, LeaderInfo, TailEntry
from raft.embed.batteries import Counter, Lease, LockManager, LockNotHeld, Queue, ReplicatedDict
from raft.embed.client import ClusterClient
from raft.embed.codec import DecodeError, EncodeError
from raft.embed.errors import (
    CallTimeout,
    EmbedError,
    LogCompacted,
    NotLeader,
    ReplicatedError,
    SessionExpired,
)
from raft.embed.machine import Command, IncompatibleCommand, StateMachine, query, replicated
from raft.embed.sync import SyncNode

__all__ = [
    "CallTimeout", "ClientSession", "ClusterClient", "Command", "Counter", "DecodeError",
    "EmbedError", "EmbeddedNode", "EncodeError", "IncompatibleCommand", "LeaderInfo", "Lease",
    "LockManager", "LockNotHeld", "LogCompacted", "NotLeader", "Queue", "ReplicatedDict",
    "ReplicatedError", "SessionExpired", "StateMachine", "SyncNode", "TailEntry", "query",
    "replicated",
]
