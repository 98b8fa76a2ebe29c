"""RESP2/RESP3 without IO (h11 style): ``RequestParser`` turns bytes into requests,
enforcing every size limit before it buffers or allocates; ``encode_reply`` turns
replies into bytes. ``ServerConfig`` holds those limits and the server's settings.

Parsing: a small scanner validates each request's framing (array of bulk strings, length
limits) before ``hiredis.Reader`` turns it into Python objects. The scanner exists because
hiredis allocates an array as soon as it reads its header, so ``*4000000000\\r\\n`` would
try to allocate 32 GB; it also lets inline commands (``PING\\r\\n`` from telnet) work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import hiredis

from raft.errors import RaftError
from raft import _fastpath
from raft.kv import NULL_ARRAY, ErrorReply, Reply, Status
from raft.limits import DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_MULTI_COMMANDS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    password: str | None = None
    # Redis allows 512 MB bulk strings; a Raft entry that large stalls replication, so the
    # default is lower. Every buffered request is bounded by these two numbers.
    max_bulk_len: int = 64 << 20
    max_request_len: int = 128 << 20
    max_args: int = 1 << 20
    max_inline_len: int = 64 << 10
    # Commands queued plus replies not yet sent, per connection: beyond this we stop
    # reading from the socket until the client catches up.
    max_pipeline: int = 1024
    # Connections served at once; one more is answered "-ERR max number of clients
    # reached" and closed (Redis's maxclients). The node lowers it to fit its file
    # descriptor limit (raft.limits).
    max_clients: int = 10000
    # Before AUTH (when a password is set) a client can only make the server buffer
    # this much: each bulk string, an inline command and a partial request are capped
    # at it, and a request may have at most PREAUTH_MAX_ARGS arguments (Redis 7: 16 KB
    # and 10, CVE-2021-32675). A connection that has not authenticated within
    # auth_timeout seconds of connecting is closed.
    preauth_query_buffer: int = 16 << 10
    auth_timeout: float = 10.0
    # Issue 15 item 1 (raft/limits.py): the largest log entry a write may become, and
    # the commands one MULTI may queue (its bytes are bounded by max_entry_bytes: EXEC
    # is one entry).
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_multi_commands: int = DEFAULT_MAX_MULTI_COMMANDS
    # TEST ONLY ([debug] stale_reads): answer reads locally, without ReadIndex.
    debug_stale_reads: bool = False


# --------------------------------------------------------------------------- encoding


def encode_reply(reply: Reply | Any, out: bytearray, proto: int = 2) -> None:
    """Append the RESP encoding of ``reply`` to ``out``.

    ``proto`` 3 (after ``HELLO 3``) differs only where our replies need it: nil is
    ``_`` and a ``dict`` is a map (in RESP2 a flat key, value, ... array)."""
    t = type(reply)
    if t is bytes:
        out += b"$%d\r\n" % len(reply)
        out += reply
        out += b"\r\n"
    elif t is int:
        out += b":%d\r\n" % reply
    elif reply is None or reply is NULL_ARRAY:
        out += b"_\r\n" if proto == 3 else (b"$-1\r\n" if reply is None else b"*-1\r\n")
    elif t is Status:
        if reply == "OK":
            out += b"+OK\r\n"     # the reply to every SET: skip the escaping
        else:
            out += b"+%s\r\n" % _one_line(reply).encode()
    elif t is ErrorReply:
        out += b"-%s\r\n" % _one_line(reply).encode()
    elif t is list or t is tuple:
        out += b"*%d\r\n" % len(reply)
        for item in reply:
            encode_reply(item, out, proto)
    elif t is dict:
        out += b"%%%d\r\n" % len(reply) if proto == 3 else b"*%d\r\n" % (2 * len(reply))
        for k, v in reply.items():
            encode_reply(k, out, proto)
            encode_reply(v, out, proto)
    elif t is bool:
        out += b":1\r\n" if reply else b":0\r\n"
    elif isinstance(reply, str):
        encode_reply(reply.encode(), out, proto)
    elif isinstance(reply, (bytearray, memoryview)):
        encode_reply(bytes(reply), out, proto)
    else:
        raise TypeError(f"cannot encode {type(reply).__name__} as RESP")


def _one_line(s: str) -> str:
    return s.replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------- parsing

_MBULK_RE = re.compile(rb"-?(?:0|[1-9][0-9]{0,17})")
_MAX_HEADER = 64 << 10  # a length line longer than this is garbage
_MAX_LEN_DIGITS = 18  # a bulk length with more digits is garbage (and int() of
# thousands of digits is slow, then raises ValueError past 4,300 digits)
PREAUTH_MAX_ARGS = 10  # Redis 7's limit on a request before AUTH
# Commands that may authenticate: before AUTH the parser stops after one of them until
# it has run, so the requests behind it get the limits that apply after it.
_AUTH_COMMANDS = frozenset((b"auth", b"hello"))


class ProtocolError(RaftError):
    """A client sent something that is not RESP; the message is the reply (Redis's text)."""


class RequestParser:
    """Turns a client's byte stream into commands (lists of bytes).

    ``feed(data)`` returns the commands completed by ``data``. On a framing error it
    raises ProtocolError; the commands completed by the same call before the error are
    then in ``pending``, for the caller to answer before the error.

    With ``preauth`` (a password is set and the client has not authenticated yet) the
    limits are small (``ServerConfig.preauth_query_buffer``, ``PREAUTH_MAX_ARGS``), and
    parsing stops after an AUTH or HELLO command (``held`` is then true): the caller
    runs it, then calls ``resume(authenticated)`` for the rest.
    """

    def __init__(self, config: ServerConfig, preauth: bool = False) -> None:
        self._cfg = config
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._cmd_start = 0  # start of the command being scanned
        self._args_left = -1  # -1: at a command boundary
        self._line_end = 0  # set by _line: where the line after the header starts
        self._reader = hiredis.Reader()
        self.pending: list[list[bytes]] = []
        self.held = False
        self._set_limits(preauth)

    def _set_limits(self, preauth: bool) -> None:
        cfg = self._cfg
        self._preauth = preauth
        if preauth:
            small = cfg.preauth_query_buffer
            self._max_args = min(cfg.max_args, PREAUTH_MAX_ARGS)
            self._max_bulk = min(cfg.max_bulk_len, small)
            self._max_inline = min(cfg.max_inline_len, small)
            self._max_buffer = min(cfg.max_request_len, small)
        else:
            self._max_args, self._max_bulk = cfg.max_args, cfg.max_bulk_len
            self._max_inline, self._max_buffer = cfg.max_inline_len, cfg.max_request_len

    def resume(self, authenticated: bool) -> list[list[bytes]]:
        """After the AUTH/HELLO that ``held`` the parser ran: parse what follows it,
        with the full limits if it authenticated the client."""
        self.held = False
        self._set_limits(self._preauth and not authenticated)
        return self.feed(b"")

    def feed(self, data: bytes) -> list[list[bytes]]:
        self._buf += data
        self.pending = []
        if self.held:
            return self.pending
        run_start = -1  # start of scanned RESP commands not yet given to hiredis
        try:
            while not self.held:
                if self._args_left < 0:
                    if self._pos >= len(self._buf):
                        break
                    if self._buf[self._pos] == 42 and not self._preauth:   # "*"
                        # The compiled scanner takes every complete, well-formed
                        # command it can; we read what it stops at.
                        run_start = self._hiredis(run_start)
                        pos = _fastpath.scan_requests(self._buf, self._pos, self._max_args,
                                                      self._max_bulk, self.pending)
                        if pos != self._pos:
                            self._pos = self._cmd_start = pos
                            continue
                    if self._buf[self._pos] != ord("*"):
                        run_start = self._hiredis(run_start)  # keep commands in order
                        if not self._inline():
                            break
                        continue
                    if not self._multibulk_header():
                        break
                    if self._args_left == 0:
                        # "*0", "*-1", "*-5": an empty request, skipped as Redis does
                        # (hiredis would raise on a count below -1).
                        run_start = self._hiredis(run_start)
                        self._args_left = -1
                        continue
                if not self._bulks():
                    break
                self._args_left = -1
                if run_start < 0:
                    run_start = self._cmd_start
                if self._preauth:
                    run_start = self._hold_after_auth(run_start)
        finally:
            self._hiredis(run_start)
            self._compact()
        if len(self._buf) > self._max_buffer and not self.held:
            if self._preauth:
                raise ProtocolError("ERR Protocol error: unauthenticated request too big")
            raise ProtocolError("ERR Protocol error: request exceeds the query buffer limit")
        return self.pending

    def _hold_after_auth(self, run_start: int) -> int:
        """Before AUTH: hand each command to hiredis on its own, and stop after one
        that may authenticate (its outcome decides the limits for what follows)."""
        run_start = self._hiredis(run_start)
        if self.pending and self.pending[-1] and \
                self.pending[-1][0].lower() in _AUTH_COMMANDS:
            self.held = True
        return run_start

    def _hiredis(self, run_start: int) -> int:
        """Let hiredis build the argv lists of the complete commands scanned so far."""
        if run_start < 0:
            return -1
        end = self._cmd_start if self._args_left >= 0 else self._pos
        if end > run_start:
            self._reader.feed(self._buf, run_start, end - run_start)
            while (msg := self._reader.gets()) is not False:
                if msg:  # "*0" and "*-1" are empty commands, ignored like Redis
                    self.pending.append(msg)
        return -1

    def _line(self, what: str) -> bytes | None:
        end = self._buf.find(b"\r\n", self._pos)
        if end < 0:
            if len(self._buf) - self._pos > _MAX_HEADER:
                raise ProtocolError(f"ERR Protocol error: too big {what} count string")
            return None
        line = bytes(self._buf[self._pos + 1 : end])
        self._line_end = end + 2
        return line

    def _multibulk_header(self) -> bool:
        line = self._line("mbulk")
        if line is None:
            return False
        if not _MBULK_RE.fullmatch(line):
            raise ProtocolError("ERR Protocol error: invalid multibulk length")
        if int(line) > self._max_args:
            if self._preauth:
                raise ProtocolError("ERR Protocol error: unauthenticated multibulk length")
            raise ProtocolError("ERR Protocol error: invalid multibulk length")
        self._cmd_start = self._pos
        self._pos = self._line_end
        self._args_left = max(int(line), 0)
        return True

    def _bulks(self) -> bool:
        # The hot loop of the server: locals, and no regex for the common length line.
        buf, pos, left, max_bulk = self._buf, self._pos, self._args_left, self._max_bulk
        try:
            while left > 0:
                if pos >= len(buf):
                    return False
                if buf[pos] != 36:  # "$"
                    got = _one_line(chr(buf[pos]))
                    raise ProtocolError(f"ERR Protocol error: expected '$', got '{got}'")
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > _MAX_HEADER:
                        raise ProtocolError("ERR Protocol error: too big bulk count string")
                    return False
                digits = buf[pos + 1 : eol]
                if (not digits.isdigit() or len(digits) > _MAX_LEN_DIGITS
                        or (digits[0] == 48 and len(digits) > 1)):  # no "01"
                    raise ProtocolError("ERR Protocol error: invalid bulk length")
                n = int(digits)
                if n > max_bulk:
                    if self._preauth:
                        raise ProtocolError("ERR Protocol error: unauthenticated bulk length")
                    raise ProtocolError("ERR Protocol error: invalid bulk length")
                end = eol + 2 + n + 2
                if end > len(buf):
                    return False  # wait for the body; the header is re-read next time
                if buf[end - 2] != 13 or buf[end - 1] != 10:
                    raise ProtocolError("ERR Protocol error: expected CRLF after bulk string")
                pos = end
                left -= 1
            return True
        finally:
            self._pos, self._args_left = pos, left

    def _inline(self) -> bool:
        """An inline command (``PING\\r\\n``), as telnet and nc users type them."""
        nl = self._buf.find(b"\n", self._pos)
        if (nl if nl >= 0 else len(self._buf)) - self._pos > self._max_inline:
            raise ProtocolError("ERR Protocol error: too big inline request")
        if nl < 0:
            return False
        argv = bytes(self._buf[self._pos : nl]).split()
        self._pos = self._cmd_start = nl + 1
        if argv:
            if argv[0].lower() in (b"post", b"host:"):
                # An HTTP request: a browser being used against us (cross-protocol attack);
                # Redis drops these connections silently.
                raise ProtocolError("")
            if self._preauth and len(argv) > self._max_args:
                raise ProtocolError("ERR Protocol error: unauthenticated multibulk length")
            self.pending.append(argv)
            if self._preauth and argv[0].lower() in _AUTH_COMMANDS:
                self.held = True
        return True

    def _compact(self) -> None:
        keep_from = self._cmd_start if self._args_left >= 0 else self._pos
        if keep_from:
            del self._buf[:keep_from]
            self._pos -= keep_from
            self._cmd_start -= keep_from
