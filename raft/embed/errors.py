"""Errors raised to callers of raft.embed."""
from __future__ import annotations

from typing import Any

from raft.errors import RaftError
from raft.embed.codec import OUTCOME_OK, OUTCOME_SESSION_EXPIRED, DecodeError, EncodeError, unpack

__all__ = ["EmbedError", "NotLeader", "CallTimeout", "ReplicatedError", "SessionExpired",
           "LogCompacted", "EncodeError", "DecodeError", "decode_outcome"]


class EmbedError(RaftError):
    """Base of raft.embed's errors."""


class NotLeader(EmbedError):
    """This node cannot serve the request: it is not the leader. ``leader_id`` (0 when
    unknown: an election is under way) and ``leader_addr`` ("host:port" of the leader's
    embed RPC endpoint, the config's client address) say where to go."""

    def __init__(self, leader_id: int, leader_addr: str | None) -> None:
        super().__init__(f"not the leader; the leader is "
                         f"{f'node {leader_id} at {leader_addr}' if leader_id else 'unknown'}")
        self.leader_id = leader_id
        self.leader_addr = leader_addr


class CallTimeout(EmbedError, TimeoutError):
    """The call was not answered in time. Its outcome is unknown: it may still be
    applied (once: a retry under the same session and seq returns its first result)."""


class SessionExpired(EmbedError):
    """The state machine no longer knows this caller's session, or discarded the
    outcome of this call: it cannot tell whether it was applied. Open a new session."""


class ReplicatedError(EmbedError):
    """The replicated method raised; the same exception happened on every replica.
    ``kind`` is the exception's type name, ``message`` its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class LogCompacted(EmbedError):
    """The log no longer holds ``from_index``: it is covered by a snapshot. Resume from
    ``first_index`` (after restoring state from the snapshot by other means)."""

    def __init__(self, from_index: int, first_index: int) -> None:
        super().__init__(f"log index {from_index} was compacted into a snapshot; the log "
                         f"now starts at {first_index}")
        self.from_index = from_index
        self.first_index = first_index


def decode_outcome(outcome: bytes) -> Any:
    """A call's outcome bytes (from the state machine) -> its result, or raise."""
    v = unpack(outcome, "call outcome")
    if not isinstance(v, list) or not v:
        raise DecodeError("malformed call outcome")
    if v[0] == OUTCOME_OK and len(v) == 2:
        return v[1]
    if len(v) == 3:
        if v[0] == OUTCOME_SESSION_EXPIRED:
            raise SessionExpired(v[2])
        if v[1] == "EncodeError":
            raise EncodeError(v[2])
        raise ReplicatedError(str(v[1]), str(v[2]))
    raise DecodeError("malformed call outcome")
