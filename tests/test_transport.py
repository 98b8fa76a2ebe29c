"""PeerTransport on loopback: delivery, authentication, hostile peers, bounds, reconnects.

Every test runs in its own event loop under a hard time limit (asyncio.wait_for),
uses only 127.0.0.1, and closes every transport and socket it opened.
"""
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from raft.testing.cluster import free_ports as _free_ports
from raft import MSG_APP, MSG_APP_RESP, MSG_SNAP, MSG_SNAP_RESP, MSG_VOTE, Entry, Message
from raft.net import auth, codec
from raft.net.transport import PeerTransport, install_event_loop_policy, new_event_loop

SECRET = b"cluster-secret-for-tests-0123456789"
HOST = "127.0.0.1"
TIME_LIMIT = 20.0


def run(test_coro, loop_factory=new_event_loop, limit: float = TIME_LIMIT):
    """Run a test coroutine in a fresh loop, under a time limit, and fail on any
    error the loop reports on the side (exceptions in callbacks, lost tasks)."""
    side_errors = []
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.get_loop().set_exception_handler(lambda loop, ctx: side_errors.append(ctx))
        result = runner.run(asyncio.wait_for(test_coro, limit))
    assert not side_errors, side_errors
    return result


def free_ports(n: int) -> list[int]:
    return _free_ports(n, HOST)


async def wait_until(pred, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


class Node:
    """A PeerTransport plus the list of everything it delivered."""

    def __init__(self, node_id, ports, secret=SECRET, **kw):
        self.received: list[Message] = []
        self.batches = 0
        peers = {pid: (HOST, port) for pid, port in ports.items() if pid != node_id}
        kw.setdefault("backoff_base", 0.02)
        kw.setdefault("backoff_cap", 0.2)
        kw.setdefault("handshake_timeout", 2.0)
        self.t = PeerTransport(node_id, (HOST, ports[node_id]), peers, secret, self._on, **kw)

    def _on(self, msgs):
        self.batches += 1
        self.received.extend(msgs)


@contextlib.asynccontextmanager
async def two_nodes():
    """Nodes 1 and 2, started; closed on the way out."""
    ports = dict(zip((1, 2), free_ports(2)))
    a, b = Node(1, ports), Node(2, ports)
    await a.t.start()
    await b.t.start()
    try:
        yield a, b
    finally:
        await a.t.close()
        await b.t.close()


def hb(src, dst, i=0, entries=None):
    return Message(MSG_APP, src, dst, term=1, index=i, commit=i, msg_id=i, entries=entries)


async def raw_dial(port):
    return await asyncio.wait_for(asyncio.open_connection(HOST, port), 2.0)


# --- delivery ----------------------------------------------------------------------

@pytest.mark.parametrize("loop_factory", [new_event_loop, asyncio.new_event_loop],
                         ids=["uvloop", "asyncio"])
def test_two_nodes_exchange_and_batch(loop_factory):
    async def main():
        async with two_nodes() as (a, b):
            # Sent in one loop iteration: must travel as one frame.
            ents = [Entry(k, 1, 0, b"x" * 100) for k in range(1, 65)]
            a.t.send([hb(1, 2, i) for i in range(99)] + [hb(1, 2, 99, ents)])
            b.t.send([Message(MSG_APP_RESP, 2, 1, term=1, index=7)])
            await wait_until(lambda: len(b.received) == 100 and len(a.received) == 1)
            assert [m.msg_id for m in b.received] == list(range(100))
            assert b.received[-1].entries == ents
            assert b.batches == 1
            sa, sb = a.t.stats(), b.t.stats()
            assert sa["frames_sent"] == 1 and sa["messages_sent"] == 100
            assert sb["frames_received"] == 1 and sb["messages_received"] == 100
            assert sb["bytes_received"] == sa["bytes_sent"]
            assert sa["peers"][2]["connected"] and sa["buffered_bytes"] == 0
    run(main(), loop_factory)


@pytest.mark.parametrize("loop_factory", [new_event_loop, asyncio.new_event_loop],
                         ids=["uvloop", "asyncio"])
@pytest.mark.parametrize("now", [True, False], ids=["now", "next-iteration"])
def test_a_send_into_a_connection_that_just_broke_waits_for_the_next_one(loop_factory, now):
    """For a loop turn after a connection breaks, the peer still holds its writer (the
    pump has not noticed yet). A send then must neither raise (uvloop raises on a
    write to a closed transport; from send(now=True) that would stop the node) nor
    vanish into the dead socket: it waits in the queue and goes on the next
    connection."""
    async def main():
        async with two_nodes() as (a, b):
            peer = a.t._peers[2]
            await wait_until(lambda: peer.connected)
            old = peer.writer
            old.transport.abort()        # a reset: connection_lost runs, the pump has not
            await asyncio.sleep(0)
            assert peer.writer is old and old.transport.is_closing()
            a.t.send([hb(1, 2, 7)], now=now)
            await wait_until(lambda: [m.msg_id for m in b.received] == [7])
            assert peer.writer is not old
    run(main(), loop_factory)


def test_three_nodes_all_to_all():
    async def main():
        ports = dict(zip((1, 2, 3), free_ports(3)))
        nodes = {i: Node(i, ports) for i in ports}
        for n in nodes.values():
            await n.t.start()
        try:
            for round_ in range(5):
                for i, n in nodes.items():
                    n.t.send([Message(MSG_VOTE, i, j, term=round_ + 1) for j in ports if j != i])
                await asyncio.sleep(0)
            await wait_until(lambda: all(len(n.received) == 10 for n in nodes.values()))
            for i, n in nodes.items():
                assert all(m.dst == i for m in n.received)
                for j in ports:
                    if j != i:
                        terms = [m.term for m in n.received if m.src == j]
                        assert terms == [1, 2, 3, 4, 5]   # per-connection order kept
        finally:
            for n in nodes.values():
                await n.t.close()
    run(main())


def test_send_drops_unroutable_and_oversized():
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports, max_frame=1024)
        await a.t.start()
        try:
            a.t.send([hb(1, 9)])                                        # unknown node
            a.t.send([hb(1, 2, entries=[Entry(1, 1, 0, b"x" * 2000)])])  # > max_frame
            assert a.t.stats()["messages_dropped"] == 2
            with pytest.raises(ValueError):
                a.t.send([Message(77, 1, 2)])                           # caller's bug
        finally:
            await a.t.close()
    run(main())


def test_on_messages_exception_is_contained(caplog):
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a, b = Node(1, ports), Node(2, ports)
        calls = []

        def flaky(msgs):
            calls.append(msgs)
            if len(calls) == 1:
                raise RuntimeError("boom")
        b.t._on_messages = flaky
        await a.t.start()
        await b.t.start()
        try:
            a.t.send([hb(1, 2, 1)])
            await wait_until(lambda: len(calls) == 1)
            a.t.send([hb(1, 2, 2)])
            await wait_until(lambda: len(calls) == 2)   # same connection still serves
            assert b.t.stats()["delivery_errors"] == 1
            assert a.t.stats()["connects"] == 1
        finally:
            await a.t.close()
            await b.t.close()
    run(main())
    assert "on_messages raised" in caplog.text


# --- authentication --------------------------------------------------------------------

def test_wrong_secret_never_delivers(caplog):
    caplog.set_level(logging.INFO, logger="raft.net")

    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports)
        intruder = Node(2, ports, secret=b"not-the-cluster-secret-at-all!!")
        await a.t.start()
        await intruder.t.start()
        try:
            for i in range(20):
                intruder.t.send([hb(2, 1, i)])
                await asyncio.sleep(0.02)
            await wait_until(lambda: a.t.stats()["auth_failures"] >= 2
                             and intruder.t.stats()["auth_failures"] >= 2)
            assert a.received == [] and a.t.stats()["messages_received"] == 0
            assert a.t.stats()["inbound_accepted"] == 0
            # The other direction fails too: a proves nothing to a wrong-secret server.
            assert intruder.received == []
        finally:
            await a.t.close()
            await intruder.t.close()
    run(main())
    assert "rejected connection" in caplog.text
    assert "failed to prove the cluster secret" in caplog.text


def test_forged_response_is_rejected(caplog):
    """A client that skips verifying the server and answers with a made-up MAC."""
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports)
        await a.t.start()
        try:
            reader, writer = await raw_dial(ports[1])
            writer.write(codec.encode_frame(codec.FRAME_HELLO,
                                            struct.pack("<QQ", 2, 1) + os.urandom(32)))
            header = await reader.readexactly(6)
            assert codec.parse_header(header)[0] == codec.FRAME_CHALLENGE
            await reader.readexactly(64)
            writer.write(codec.encode_frame(codec.FRAME_RESPONSE, os.urandom(32)))
            writer.write(codec.encode([hb(2, 1)]))       # hoping it slips through
            assert await asyncio.wait_for(reader.read(), 3.0) == b""   # closed on us
            writer.close()
            await asyncio.sleep(0.05)
            assert a.received == []
            assert a.t.stats()["auth_failures"] == 1
        finally:
            await a.t.close()
    run(main())
    assert "client claiming node 2 failed to prove the cluster secret" in caplog.text


@pytest.mark.parametrize("ids, reason", [((2, 5), "this is node 1"),
                                         ((7, 1), "not a configured peer")])
def test_hello_with_wrong_ids_is_rejected(caplog, ids, reason):
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports)
        await a.t.start()
        try:
            reader, writer = await raw_dial(ports[1])
            writer.write(codec.encode_frame(codec.FRAME_HELLO,
                                            struct.pack("<QQ", *ids) + os.urandom(32)))
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
        finally:
            await a.t.close()
    run(main())
    assert reason in caplog.text


def test_silent_client_times_out(caplog):
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports, handshake_timeout=0.2)
        await a.t.start()
        try:
            reader, writer = await raw_dial(ports[1])
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
            assert a.t.stats()["auth_failures"] == 1
        finally:
            await a.t.close()
    run(main())
    assert "timed out" in caplog.text


# --- hostile bytes ----------------------------------------------------------------------

def test_garbage_closes_connection_and_others_are_served(caplog):
    async def main():
        ports = dict(zip((1, 2, 3), free_ports(3)))
        a, b = Node(1, ports), Node(2, ports)
        await a.t.start()
        try:
            # 1. Garbage instead of a handshake.
            reader, writer = await raw_dial(ports[1])
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
            # 2. Authenticated (as node 3), then garbage frames.
            reader, writer = await raw_dial(ports[1])
            await auth.client_handshake(reader, writer, secret=SECRET, node_id=3, peer_id=1)
            writer.write(codec.encode([hb(3, 1, 1)]))
            await wait_until(lambda: a.received)            # a good frame first
            writer.write(b"\x05\x00\x00\x00\x09\x09junk")
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
            assert [m.msg_id for m in a.received] == [1]
            # 3. Authenticated as 3, but speaking for node 2.
            reader, writer = await raw_dial(ports[1])
            await auth.client_handshake(reader, writer, secret=SECRET, node_id=3, peer_id=1)
            writer.write(codec.encode([hb(2, 1, 2)]))
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
            # 4. A message for someone else.
            reader, writer = await raw_dial(ports[1])
            await auth.client_handshake(reader, writer, secret=SECRET, node_id=3, peer_id=1)
            writer.write(codec.encode([hb(3, 2, 3)]))
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            writer.close()
            # The node still serves a real peer.
            await b.t.start()
            b.t.send([hb(2, 1, 42)])
            await wait_until(lambda: len(a.received) == 2)
            assert a.received[1].msg_id == 42
            s = a.t.stats()
            assert s["auth_failures"] == 1 and s["decode_errors"] == 1
            assert s["protocol_errors"] == 2
        finally:
            await a.t.close()
            await b.t.close()
    run(main())
    assert "bad frame" in caplog.text and "claims src 2" in caplog.text
    assert "for node 2 delivered to node 1" in caplog.text


def test_frames_sent_with_the_end_of_the_handshake_are_delivered():
    """A peer's first frames may arrive in the same read as its last handshake frame
    (here: sent with it, before ACCEPT); the receiver, which switches to handing each
    read straight to the node once authenticated, delivers them, in order, and then
    everything after them."""
    async def main():
        ports = dict(zip((1, 2, 3), free_ports(3)))
        a = Node(1, ports)
        await a.t.start()
        try:
            reader, writer = await raw_dial(ports[1])
            nonce_c = os.urandom(auth.NONCE_SIZE)
            writer.write(codec.encode_frame(codec.FRAME_HELLO, auth._IDS.pack(3, 1) + nonce_c))
            body = await auth._read_frame(reader, codec.FRAME_CHALLENGE)
            nonce_s = body[:auth.NONCE_SIZE]
            proof = auth._mac(SECRET, auth._LABEL_CLIENT, 3, 1, nonce_c, nonce_s)
            writer.write(codec.encode_frame(codec.FRAME_RESPONSE, proof)
                         + codec.encode([hb(3, 1, 1), hb(3, 1, 2)]) + codec.encode([hb(3, 1, 3)]))
            await auth._read_frame(reader, codec.FRAME_ACCEPT)
            await wait_until(lambda: len(a.received) == 3)
            writer.write(codec.encode([hb(3, 1, 4)]))
            await wait_until(lambda: len(a.received) == 4)
            assert [m.msg_id for m in a.received] == [1, 2, 3, 4]
            writer.close()
        finally:
            await a.t.close()
    run(main())


# --- bounded memory -----------------------------------------------------------------------

def test_peer_that_never_reads_keeps_memory_bounded():
    bound = 256 * 1024

    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        stuck = []
        release = asyncio.Event()

        async def never_reads(reader, writer):
            await auth.server_handshake(reader, writer, secret=SECRET, node_id=2,
                                        allowed_peers={1})
            stuck.append(writer)
            await release.wait()

        lsock = socket.socket()
        # A tiny receive window so the kernel cannot soak up the test's traffic.
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lsock.bind((HOST, ports[2]))
        server = await asyncio.start_server(never_reads, sock=lsock)
        a = Node(1, ports, max_buffered_bytes=bound)
        await a.t.start()
        try:
            await wait_until(lambda: a.t.stats()["peers"][2]["connected"])
            ents = [Entry(k, 1, 0, b"x" * 100) for k in range(1, 65)]
            peak = 0
            for i in range(4000):                        # ~27 MB offered
                a.t.send([hb(1, 2, i, ents)])
                if i % 10 == 0:
                    await asyncio.sleep(0)
                peak = max(peak, a.t.stats()["buffered_bytes"])
            s = a.t.stats()
            assert peak <= bound, peak
            assert s["messages_dropped"] > 0
            assert s["peers"][2]["dropped"] == s["messages_dropped"]
            assert s["messages_sent"] + s["messages_dropped"] + s["peers"][2]["queued_messages"] == 4000
        finally:
            await a.t.close()
            release.set()
            for w in stuck:
                w.transport.abort()
            server.close()
            await server.wait_closed()
    run(main())


def snap_chunk(src, dst, k, size, total):
    return Message(MSG_SNAP, src, dst, term=2, index=500, log_term=2, commit=k * size,
                   reject_hint=total, data=bytes([k & 0xFF]) * size, msg_id=k)


def test_snapshot_chunks_are_delivered_and_counted_in_the_buffer_bound():
    """InstallSnapshot chunks travel with their data; the data counts toward the
    per-peer bound (encoded_size includes it), so a peer that is down cannot make
    us hold more than max_buffered_bytes of chunks."""
    size, bound = 64 * 1024, 256 * 1024

    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports, max_buffered_bytes=bound)
        await a.t.start()               # node 2 is not listening yet: everything queues
        try:
            assert codec.encoded_size(snap_chunk(1, 2, 0, size, 10 * size)) == \
                codec.MESSAGE_HEADER_SIZE + size
            a.t.send([snap_chunk(1, 2, k, size, 10 * size) for k in range(10)])
            s = a.t.stats()
            assert s["buffered_bytes"] <= bound
            assert s["peers"][2]["queued_messages"] == 3   # 3 x (64 KiB + 82) fit in 256 KiB
            assert s["messages_dropped"] == 7
            # Once node 2 is up, the newest chunks (the oldest were dropped) arrive intact.
            b = Node(2, ports)
            await b.t.start()
            try:
                await wait_until(lambda: len(b.received) == 3)
                assert [m.msg_id for m in b.received] == [7, 8, 9]
                for m in b.received:
                    assert m.type == MSG_SNAP and m.data == bytes([m.msg_id]) * size
                    assert m.commit == m.msg_id * size and m.reject_hint == 10 * size
                b.t.send([Message(MSG_SNAP_RESP, 2, 1, term=2, index=500, reject_hint=size)])
                await wait_until(lambda: len(a.received) == 1)
                assert a.received[0].data is None and a.received[0].reject_hint == size
            finally:
                await b.t.close()
        finally:
            await a.t.close()
    run(main())


# --- reconnect ---------------------------------------------------------------------------

def test_reconnect_after_remote_restart():
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a, b = Node(1, ports), Node(2, ports)
        await a.t.start()
        await b.t.start()
        b2 = None
        try:
            a.t.send([hb(1, 2, 1)])
            await wait_until(lambda: len(b.received) == 1)
            await b.t.close()
            await wait_until(lambda: not a.t.stats()["peers"][2]["connected"])
            b2 = Node(2, ports)                       # same id and port, fresh process state
            await b2.t.start()
            for i in range(2, 500):                   # keep talking until it gets through
                a.t.send([hb(1, 2, i)])
                if b2.received:
                    break
                await asyncio.sleep(0.02)
            await wait_until(lambda: b2.received)
            assert a.t.stats()["connects"] == 2
            # b2 dials a, too: the inbound side accepts the new incarnation.
            b2.t.send([hb(2, 1, 7)])
            await wait_until(lambda: a.received)
        finally:
            await a.t.close()
            if b2 is not None:
                await b2.t.close()
    run(main())


def test_messages_to_an_unreachable_peer_are_dropped_not_replayed():
    """A failed dial drops the peer's queue: a node that comes back is not fed a
    backlog of stale messages (Raft retransmits; etcd's rafthttp does the same)."""
    async def main():
        ports = dict(zip((1, 2), free_ports(2)))
        a = Node(1, ports)
        await a.t.start()
        b = None
        try:
            failures = lambda: a.t.stats()["connect_failures"]
            await wait_until(lambda: failures() >= 1)
            a.t.send([hb(1, 2, 1)])                       # queued while 2 is down
            seen = failures()
            await wait_until(lambda: failures() > seen)   # the next dial fails: dropped
            assert a.t.stats()["peers"][2]["dropped"] == 1
            b = Node(2, ports)
            await b.t.start()
            for i in range(2, 500):                       # keep talking until it gets through
                a.t.send([hb(1, 2, i)])
                if b.received:
                    break
                await asyncio.sleep(0.02)
            await wait_until(lambda: b.received)
            assert 1 not in [m.msg_id for m in b.received]
        finally:
            await a.t.close()
            if b is not None:
                await b.t.close()
    run(main())


# --- mutual TLS ----------------------------------------------------------------------------

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls")

    def sh(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    sh("req", "-x509", *EC_KEY, "-nodes", "-days", "2", "-subj", "/CN=raft-test-ca",
       "-keyout", "ca.key", "-out", "ca.pem")
    # One certificate for both nodes of test_mutual_tls: it names both (a node's
    # certificate must name it, raft-node-<id>; test_tls_identity has one per node).
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:raft-node-1,DNS:raft-node-2\n")
    sh("req", *EC_KEY, "-nodes", "-subj", "/CN=raft-node",
       "-keyout", "node.key", "-out", "node.csr")
    sh("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "node.pem")
    # A certificate the cluster CA never signed.
    sh("req", "-x509", *EC_KEY, "-nodes", "-days", "2", "-subj", "/CN=rogue",
       "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "rogue.key", "-out", "rogue.pem")
    return {k: str(d / f) for k, f in (("cert", "node.pem"), ("key", "node.key"), ("ca", "ca.pem"),
                                       ("rogue_cert", "rogue.pem"), ("rogue_key", "rogue.key"))}


def test_mutual_tls(tls_files):
    f = tls_files
    server_ctx = auth.server_ssl_context(f["cert"], f["key"], f["ca"])
    client_ctx = auth.client_ssl_context(f["cert"], f["key"], f["ca"], check_hostname=True)

    async def main():
        ports = dict(zip((1, 2, 3, 4), free_ports(4)))
        a = Node(1, ports, ssl_server=server_ctx, ssl_client=client_ctx)
        b = Node(2, ports, ssl_server=server_ctx, ssl_client=client_ctx)
        plain = Node(3, ports)                        # right secret, but no TLS
        rogue_ctx = auth.client_ssl_context(f["rogue_cert"], f["rogue_key"], f["ca"])
        rogue = Node(4, ports, ssl_client=rogue_ctx)  # right secret, unsigned cert
        for n in (a, b, plain, rogue):
            await n.t.start()
        try:
            a.t.send([hb(1, 2, 1)])
            b.t.send([hb(2, 1, 2)])
            await wait_until(lambda: b.received and a.received)
            assert a.t.stats()["peers"][2]["connected"]
            for i in range(10):
                plain.t.send([hb(3, 1, i)])
                rogue.t.send([hb(4, 1, i)])
                await asyncio.sleep(0.02)
            await wait_until(lambda: plain.t.stats()["auth_failures"] >= 2
                             and rogue.t.stats()["auth_failures"] >= 2)
            assert [m.src for m in a.received] == [2]
            assert a.t.stats()["inbound_accepted"] == 1
        finally:
            for n in (a, b, plain, rogue):
                await n.t.close()
    run(main())


# --- event loop selection ----------------------------------------------------------------

def test_install_event_loop_policy(monkeypatch, caplog):
    original = asyncio.get_event_loop_policy()
    try:
        pytest.importorskip("uvloop")
        assert install_event_loop_policy() is True
        assert type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
        monkeypatch.setitem(sys.modules, "uvloop", None)   # as if not installed
        asyncio.set_event_loop_policy(original)
        assert install_event_loop_policy() is False
        assert asyncio.get_event_loop_policy() is original
        assert "uvloop is not installed" in caplog.text
    finally:
        asyncio.set_event_loop_policy(original)
