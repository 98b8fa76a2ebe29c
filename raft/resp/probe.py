"""A tiny blocking RESP client: one command on a fresh connection (``raft status``,
readiness probes of local clusters and tests; no redis-py needed)."""
from __future__ import annotations

import socket
from typing import Any

from raft.errors import RaftError

__all__ = ["RespClientError", "parse_info", "resp_command"]


class RespClientError(RaftError):
    """An error reply (``-ERR ...``), or a connection that failed."""


def _read_reply(fp: Any) -> Any:
    line = fp.readline()
    if not line.endswith(b"\r\n"):
        raise RespClientError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RespClientError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = fp.read(n + 2)
        if len(data) != n + 2:
            raise RespClientError("connection closed")
        return data[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_read_reply(fp) for _ in range(n)]
    raise RespClientError(f"unexpected reply {line[:40]!r}")


def resp_command(host: str, port: int, *args: str | bytes, password: str | None = None,
                 timeout: float = 2.0) -> Any:
    """Send one command on a fresh connection and return its reply (bytes for bulk
    strings); raises RespClientError for error replies and connection failures."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            fp = sock.makefile("rb")
            commands = ([["AUTH", password]] if password else []) + [list(args)]
            out = bytearray()
            for argv in commands:
                out += b"*%d\r\n" % len(argv)
                for a in argv:
                    b = a if isinstance(a, bytes) else str(a).encode()
                    out += b"$%d\r\n%s\r\n" % (len(b), b)
            sock.sendall(out)
            if password:
                _read_reply(fp)
            return _read_reply(fp)
    except OSError as e:
        raise RespClientError(f"{host}:{port}: {e}") from None


def parse_info(text: bytes) -> dict[str, str]:
    out = {}
    for line in text.decode(errors="replace").splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out
