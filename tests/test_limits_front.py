"""Limits of the client front end (issue 15 items 2, 4 and 7): malformed RESP headers are
answered with a protocol error after the commands before them; before AUTH a client can
make the server buffer only a little and must authenticate in time; connections beyond
max_clients are refused with Redis's error.

In-process, against the fake node of test_resp (a RespServer on its own loop)."""

from __future__ import annotations

import os
import random
import socket

import pytest
from test_resp import FakeNode, ServerThread, pack, recv_closed, recv_until, srv, wait_until  # noqa: F401

from raft.resp import ProtocolError, RequestParser, ServerConfig


def line(s: socket.socket) -> bytes:
    return recv_until(s, lambda b: b.endswith(b"\r\n"))


# --------------------------------------------------------------------------- item 7


@pytest.mark.parametrize("garbage, error", [
    (b"*1\r\n$" + b"9" * 5000 + b"\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$" + b"1" * 19 + b"\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$" + b"9" * 18 + b"\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
], ids=["5000-digits", "19-digits", "18-digits"])
def test_malformed_bulk_length_gets_a_protocol_error(srv, garbage, error):
    with srv.sock() as s:
        s.sendall(pack("PING") + pack("ECHO", "x") + garbage)
        assert recv_closed(s) == b"+PONG\r\n$1\r\nx\r\n" + error
    assert not srv.errors


@pytest.mark.parametrize("header", [b"*-5\r\n", b"*-2\r\n", b"*-1\r\n", b"*0\r\n",
                                    b"*-999999999999999999\r\n"],
                         ids=["-5", "-2", "-1", "0", "-10^18"])
def test_non_positive_multibulk_count_is_an_empty_request(srv, header):
    # Redis skips a request whose count is <= 0; the commands around it are answered.
    with srv.sock() as s:
        s.sendall(pack("PING") + header + pack("ECHO", "after"))
        assert recv_until(s, lambda b: b.count(b"\r\n") >= 3) == b"+PONG\r\n$5\r\nafter\r\n"
    assert not srv.errors


def test_parser_survives_unexpected_internal_errors(srv, monkeypatch):
    """Whatever the parser raises, the client gets a protocol error after the replies to
    the commands before it, and the server keeps serving (no traceback on the loop)."""
    def broken(self, run_start):
        raise ValueError("boom")

    with srv.sock() as s:
        s.sendall(pack("PING"))
        assert line(s) == b"+PONG\r\n"
        monkeypatch.setattr(RequestParser, "_hiredis", broken)
        s.sendall(pack("PING"))
        assert recv_closed(s) == b"-ERR Protocol error: invalid request\r\n"
    monkeypatch.undo()
    with srv.sock() as s:
        s.sendall(pack("PING"))
        assert line(s) == b"+PONG\r\n"
    assert not srv.errors


def _mutated_header(rng: random.Random) -> bytes:
    """A request whose multibulk or bulk header is damaged in one of many ways."""
    nums = [b"-5", b"-1", b"0", b"-0", b"01", b"+3", b" 3", b"3 ", b"", b"x", b"9" * 19,
            b"9" * rng.randrange(20, 6000), b"-" + b"9" * 30, b"1e3", b"\x00", b"\xff\xfe",
            b"18446744073709551616", str(rng.randrange(-10**6, 10**6)).encode()]
    n = rng.choice(nums)
    kind = rng.randrange(4)
    if kind == 0:
        return b"*" + n + b"\r\n"
    if kind == 1:
        return b"*1\r\n$" + n + b"\r\nPING\r\n"
    if kind == 2:
        return b"*2\r\n$4\r\nECHO\r\n$" + n + b"\r\n" + bytes(rng.randrange(256) for _ in range(8))
    return b"*" + n + b"\r\n$4\r\nPING\r\n"


def test_fuzz_malformed_headers_never_escape_the_parser():
    """Seeded fuzz of damaged length headers, at the parser and split at random points:
    each feed returns commands or raises ProtocolError, never anything else, and the
    commands before the damage are always returned (directly or in ``pending``)."""
    seed = int(os.environ.get("RAFT_FUZZ_SEED", "20261127"))
    rng = random.Random(seed)
    for i in range(600):
        bad = _mutated_header(rng)
        stream = b"*1\r\n$4\r\nPING\r\n" + bad + b"*1\r\n$4\r\nPING\r\n"
        p = RequestParser(ServerConfig(), preauth=rng.random() < 0.3)
        got: list[list[bytes]] = []
        cuts = sorted(rng.sample(range(1, len(stream)), min(3, len(stream) - 1)))
        try:
            for a, b in zip([0, *cuts], [*cuts, len(stream)]):
                got += p.feed(stream[a:b])
        except ProtocolError:
            got += p.pending
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {seed} case {i}: {bad[:60]!r} raised {type(e).__name__}: {e}")
        assert got[:1] == [[b"PING"]], f"seed {seed} case {i}: {bad[:60]!r} gave {got[:3]}"


def test_fuzz_malformed_headers_over_a_socket(srv):
    seed = int(os.environ.get("RAFT_FUZZ_SEED", "7"))
    rng = random.Random(seed)
    for i in range(40):
        bad = _mutated_header(rng)
        with srv.sock() as s:
            s.sendall(pack("PING") + bad)
            s.shutdown(socket.SHUT_WR)
            try:
                out = recv_closed(s)
            except ConnectionResetError:
                out = b"+PONG\r\n"  # the server closed on garbage it had not read yet
            assert out.startswith(b"+PONG\r\n"), f"seed {seed} case {i}: {bad[:60]!r}: {out!r}"
    assert not srv.errors, f"seed {seed}: {srv.errors}"


# --------------------------------------------------------------------------- item 4


@pytest.fixture
def auth_srv():
    with ServerThread(FakeNode(), password="s3cret") as s:
        yield s


def test_preauth_bulk_and_argument_limits(auth_srv):
    with auth_srv.sock() as s:
        s.sendall(pack("PING") + pack("SET", "k", "v" * (16 << 10 + 1)))
        assert recv_closed(s) == (b"+PONG\r\n"
                                  b"-ERR Protocol error: unauthenticated bulk length\r\n")
    with auth_srv.sock() as s:
        s.sendall(pack("PING") + pack("MSET", *["k"] * 11))
        assert recv_closed(s) == (b"+PONG\r\n"
                                  b"-ERR Protocol error: unauthenticated multibulk length\r\n")


def test_preauth_partial_request_cannot_pin_memory(auth_srv):
    """A request that never completes: before AUTH the server keeps at most 16 KB of it
    (Redis 7's limit), not max_request_len (128 MiB)."""
    arg = b"$2000\r\n" + b"x" * 2000 + b"\r\n"
    with auth_srv.sock() as s:
        s.sendall(b"*10\r\n" + arg * 8)  # 8 of 10 arguments, 16,053 bytes: kept
        s.sendall(arg)  # 9 of 10: 18 KB of a request that is still not complete: refused
        assert recv_closed(s) == b"-ERR Protocol error: unauthenticated request too big\r\n"
    with auth_srv.sock() as s:  # under the limit: parsed, then refused for want of AUTH
        s.sendall(b"*8\r\n$3\r\nSET\r\n" + arg * 7)
        assert line(s) == b"-NOAUTH Authentication required.\r\n"


def test_after_auth_the_full_limits_apply_even_in_the_same_write(auth_srv):
    """AUTH and a large command pipelined in one write: the parser stops after AUTH
    until it has run, so the large command is judged by the authenticated limits."""
    big = b"v" * (200 << 10)
    with auth_srv.sock() as s:
        s.sendall(pack("AUTH", "s3cret") + pack("SET", "k", big) + pack("GET", "k"))
        want = b"+OK\r\n+OK\r\n$204800\r\n" + big + b"\r\n"
        assert recv_until(s, lambda b: len(b) >= len(want)) == want
    with auth_srv.sock() as s:  # inline AUTH, and HELLO ... AUTH, hold the parser too
        s.sendall(b"AUTH s3cret\r\n" + pack("ECHO", big))
        assert recv_until(s, lambda b: len(b) >= len(big) + 16)[:14] == b"+OK\r\n$204800\r\n"
    with auth_srv.sock() as s:  # a failed AUTH keeps the small limits
        # (the header alone: with the body unread, closing would reset the connection)
        s.sendall(pack("AUTH", "wrong") + b"*2\r\n$4\r\nECHO\r\n$204800\r\n")
        assert recv_closed(s) == (
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            b"-ERR Protocol error: unauthenticated bulk length\r\n")
    with auth_srv.sock() as s:  # EOF right after: every request held is still answered
        s.sendall(pack("HELLO", "3", "AUTH", "default", "s3cret") + pack("ECHO", big))
        s.shutdown(socket.SHUT_WR)
        out = recv_closed(s)
        assert out.endswith(b"$204800\r\n" + big + b"\r\n") and b"proto" in out


def test_unauthenticated_connections_are_closed_after_auth_timeout():
    with ServerThread(FakeNode(), password="pw", auth_timeout=0.3) as srv:
        idle = srv.sock()
        authed = srv.sock()
        authed.sendall(pack("AUTH", "pw"))
        assert line(authed) == b"+OK\r\n"
        assert recv_closed(idle) == b""  # closed by the server, without a word
        wait_until(lambda: srv.call(lambda: len(srv.resp.connections)) == 1,
                   "the idle connection to be dropped")
        authed.sendall(pack("PING"))
        assert line(authed) == b"+PONG\r\n"
        idle.close()
        authed.close()


def test_no_password_means_no_preauth_limits(srv):
    big = b"v" * (100 << 10)
    with srv.sock() as s:
        s.sendall(pack("ECHO", big))
        want = b"$102400\r\n" + big + b"\r\n"
        assert recv_until(s, lambda b: len(b) >= len(want)) == want


# --------------------------------------------------------------------------- item 2


def test_max_clients_refuses_with_redis_error():
    with ServerThread(FakeNode(), max_clients=5) as srv:
        socks = [srv.sock() for _ in range(5)]
        for s in socks:
            s.sendall(pack("PING"))
            assert line(s) == b"+PONG\r\n"
        extra = srv.sock()
        assert recv_closed(extra) == b"-ERR max number of clients reached\r\n"
        extra.close()
        socks.pop().close()  # a slot frees up when a client leaves
        wait_until(lambda: srv.call(lambda: len(srv.resp.connections)) == 4, "a free slot")
        with srv.sock() as s:
            s.sendall(pack("INFO", "clients"))
            info = recv_until(s, lambda b: b"rejected_connections" in b and b.endswith(b"\r\n"))
        assert b"maxclients:5" in info and b"rejected_connections:1" in info
        for s in socks:
            s.close()
