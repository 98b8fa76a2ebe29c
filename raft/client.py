"""A small redis-py helper for a Raft KV cluster.

It sends each command to the node it believes is the leader, follows ``-MOVED 0
host:port`` redirects, waits out ``-CLUSTERDOWN`` (no leader yet) and retries after
connection errors. Writes go through an exactly-once session: the first write opens one
with ``RAFT.SESSION``, and every write is sent as ``RAFT.SEQ <session> <seq> cmd ...`` with
the same seq on every retry, so a write whose reply was lost is not applied twice.

    with RaftClient(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]) as c:
        c.execute("SET", "k", "v")
        c.execute("INCR", "counter")

Replies are redis-py's raw replies (``execute_command`` without per-command parsing).
One RaftClient is one logical client with one outstanding command: not thread-safe.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, MovedError, ResponseError, TryAgainError
from redis.retry import Retry

from raft.errors import RaftError
from .kv import is_write

__all__ = ["RaftClient", "SessionExpiredError", "NoLeaderError"]


class SessionExpiredError(RaftError, ResponseError):
    """A retried write found its session expired: it may or may not have been applied."""


class NoLeaderError(RaftError, ConnectionError):
    """No leader answered within the retry budget."""


def _arg(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    return str(a).encode() if not isinstance(a, (bytearray, memoryview)) else bytes(a)


class RaftClient:
    def __init__(
        self,
        addrs: Sequence[str],
        *,
        password: str | None = None,
        timeout: float = 2.0,
        attempts: int = 50,
        backoff: float = 0.05,
        exactly_once: bool = True,
    ) -> None:
        if not addrs:
            raise ValueError("need at least one address")
        self.addrs = list(addrs)
        self.password = password
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.exactly_once = exactly_once
        self.session: int | None = None
        self._seq = 0
        self._next = 0
        self._target = self.addrs[0]
        self._conns: dict[str, redis.Redis] = {}

    def execute(self, *args: Any) -> Any:
        """Run one command on the leader (reads too: the server redirects them there)."""
        argv = [_arg(a) for a in args]
        if self.exactly_once and is_write(argv):
            return self._write_once(argv)
        return self._retrying(lambda conn: conn.execute_command(*argv))

    def _write_once(self, argv: list[bytes]) -> Any:
        if self.session is None:
            self.session = int(self._retrying(lambda conn: conn.execute_command("RAFT.SESSION")))
        self._seq += 1
        seq, tries = self._seq, [0]

        def attempt(conn: redis.Redis) -> Any:
            tries[0] += 1
            return conn.execute_command("RAFT.SEQ", self.session, seq, *argv)

        try:
            return self._retrying(attempt)
        except ResponseError as e:
            if not str(e).startswith("SESSIONEXPIRED"):
                raise
            if tries[0] > 1:  # an earlier try may have been applied before the expiry
                raise SessionExpiredError(str(e)) from e
            self.session = None  # the first try, refused unapplied: redo in a new session
            return self._write_once(argv)

    def _retrying(self, call: Any) -> Any:
        delay = self.backoff
        for _ in range(self.attempts):
            try:
                return call(self._conn(self._target))
            except MovedError as e:
                self._target = f"{e.host}:{e.port}"  # straight to the leader, no sleep
                continue
            except (ClusterDownError, TryAgainError):
                pass  # election under way, or outcome unknown: the same seq is safe
            except (redis.ConnectionError, redis.TimeoutError):
                self._drop(self._target)
                self._next = (self._next + 1) % len(self.addrs)  # try the next node
                self._target = self.addrs[self._next]
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise NoLeaderError(f"no leader answered after {self.attempts} attempts")

    def _conn(self, addr: str) -> redis.Redis:
        if addr not in self._conns:
            host, port = addr.rsplit(":", 1)
            self._conns[addr] = redis.Redis(
                host=host, port=int(port), password=self.password, protocol=2,
                socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # retries are ours: they must keep the seq
            )
        return self._conns[addr]

    def _drop(self, addr: str) -> None:
        conn = self._conns.pop(addr, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for addr in list(self._conns):
            self._drop(addr)

    def __enter__(self) -> "RaftClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
