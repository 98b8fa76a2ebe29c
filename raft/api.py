"""What the front ends need from a Raft node: the ``NodeAPI`` protocol the node
implements, and the errors it raises (``NotLeaderError``, ``ReadTimeoutError``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Protocol

from raft.errors import RaftError

if TYPE_CHECKING:
    from raft.kv import KVStateMachine

__all__ = ["ClientFrontend", "NodeAPI", "NotLeaderError", "ReadTimeoutError", "TryAgainError"]


class NotLeaderError(RaftError):
    """Raised by NodeAPI when this node cannot serve the request: not the leader.

    ``leader_addr`` is the leader's *client* (RESP) address, ``"host:port"``, or None if
    no leader is known (an election is under way)."""

    def __init__(self, leader_addr: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_addr or 'unknown'}")
        self.leader_addr = leader_addr


class ReadTimeoutError(RaftError, asyncio.TimeoutError):
    """No majority confirmed a linearizable read's leadership check in time."""


class TryAgainError(RaftError):
    """The leader cannot take the request now, and nothing was done: a leadership
    transfer is under way, or a configuration change is still pending. Retry shortly
    (RESP: ``-TRYAGAIN``)."""


class NodeAPI(Protocol):
    """What the server needs from the Raft node.

    Ordering contract: ``submit`` fixes its entry's place in the log before it returns
    (as calling ``RawNode.propose`` does), because the server submits one connection's
    pipelined writes in request order and answers them in that order.
    The state machine is only touched from the event loop thread.
    """

    state_machine: KVStateMachine

    def submit(self, data: bytes) -> tuple[int, asyncio.Future[Any]]:
        """Append ``data`` to the log now; returns its log index and a future that
        resolves to ``state_machine.apply``'s reply once applied locally, or fails with NotLeaderError (leadership lost: not
        applied) or asyncio.TimeoutError (outcome unknown: answered ``-TRYAGAIN``).
        Raises NotLeaderError at once on a follower. No task per write: the hot path."""

    def submit_batch(self, datas: list[bytes], read_before: Callable[[], Any] | None = None
                     ) -> tuple[int, asyncio.Future[list[Any]]]:
        """``submit`` for several commands at once: all are appended now, in order and
        next to each other, or none is (the same errors, raised at once). Returns the
        log index of the last, and one future that resolves once every one of them is
        settled, to their outcomes in order: each is what ``submit``'s future would
        give, the state machine's reply, or the exception it would fail with
        (NotLeaderError: not applied; asyncio.TimeoutError: outcome unknown).

        ``read_before``, if given, is a linearizable read: it runs against the state
        machine right before the first of them is applied, and its value (or the
        exception the read failed with) is one more outcome, the last. It stands only
        if the first command is applied (else it fails as that command did): that
        confirms the leadership the read needs, with no ReadIndex round."""

    async def read_barrier(self) -> None:
        """Return once the local state machine reflects every write committed before the
        call (ReadIndex). Raises NotLeaderError."""

    def read(self, evaluate: Callable[[], Any], after_index: int = 0) -> asyncio.Future[Any] | None:
        """A linearizable read that does not block the connection: ``evaluate`` runs
        once every entry up to max(commit now, ``after_index``) is applied, before any
        later one; the future gets its value once leadership is confirmed, or fails
        with NotLeaderError / ReadTimeoutError. None: not possible yet (use
        ``read_barrier``). Raises NotLeaderError on a follower."""

    def status(self) -> dict:
        """For INFO: e.g. role, term, leader, commit_index, applied_index."""

    async def wait_applied(self, after_index: int, timeout: float) -> None:
        """Return when ``state_machine.last_applied > after_index`` or ``timeout`` seconds
        have passed (whichever is first; no exception on timeout)."""


class ClientFrontend(Protocol):
    """A server for clients that a node starts and stops (``raft.resp.RespServer``);
    ``RaftNode(frontend=...)`` builds one from the node, so the node never imports
    a client protocol."""

    async def start(self, host: str, port: int) -> None:
        """Listen on (host, port)."""

    async def close(self) -> None:
        """Stop listening and close every client connection."""
