"""Peer authentication: a cluster-secret HMAC-SHA256 challenge-response handshake.

Every peer connection starts with this exchange (frames as in docs/wire.md; the
dialer is the client, the accepting node the server)::

    client -> server  HELLO     client_id u64 | server_id u64 | nonce_c (32 bytes)
    server -> client  CHALLENGE nonce_s (32 bytes) | mac_s (32 bytes)
    client -> server  RESPONSE  mac_c (32 bytes)
    server -> client  ACCEPT    (empty)

    mac_s = HMAC-SHA256(secret, "raft-net-auth-v1 server" | transcript)
    mac_c = HMAC-SHA256(secret, "raft-net-auth-v1 client" | transcript)
    transcript = version u8 | client_id u64 | server_id u64 | nonce_c | nonce_s

Why this shape:
- Both sides contribute a fresh 32-byte random nonce, so a recorded handshake
  cannot be replayed in either direction.
- Both node ids are inside the MAC, so a proof for "node 3 talking to node 1"
  cannot be reused to claim another identity or against another node.
- The two MACs use different labels, so the server's proof can never be
  reflected back to it as a client proof.
- The server proves first, so a client never sends anything derived from the
  secret to a server that does not know it. (The server only answers with its
  MAC after checking the ids, and its MAC covers its own fresh nonce, so it is no
  oracle for forging a client MAC.)
- MACs are compared with hmac.compare_digest (constant time), and the whole
  exchange runs under a timeout so a silent peer cannot hold a slot forever.

Mutual TLS (``server_ssl_context`` / ``client_ssl_context``) is optional and sits
under the same handshake: TLS authenticates and encrypts the channel, the HMAC
exchange still proves cluster membership and binds node ids.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import ssl
import struct
from collections.abc import Callable, Container

from raft.errors import RaftError
from raft.net import codec
from raft.net.codec import FrameError

log = logging.getLogger("raft.net.auth")

NONCE_SIZE = 32
MAC_SIZE = 32
# A real peer completes the handshake in a few round trips (milliseconds on a LAN);
# an unauthenticated connection must not hold a handshake slot much longer.
DEFAULT_HANDSHAKE_TIMEOUT = 2.0
MIN_SECRET_SIZE = 16

_LABEL_SERVER = b"raft-net-auth-v1 server"
_LABEL_CLIENT = b"raft-net-auth-v1 client"
_IDS = struct.Struct("<QQ")

# The exact body size of each handshake frame: anything else is refused before a
# byte of the body is read, so a handshake can never make us buffer much.
_BODY_SIZE = {
    codec.FRAME_HELLO: _IDS.size + NONCE_SIZE,
    codec.FRAME_CHALLENGE: NONCE_SIZE + MAC_SIZE,
    codec.FRAME_RESPONSE: MAC_SIZE,
    codec.FRAME_ACCEPT: 0,
}
_MAX_HANDSHAKE_FRAME = 2 + max(_BODY_SIZE.values())


class AuthError(RaftError):
    """The peer failed (or aborted) the handshake; ``str()`` is the reason."""


def check_secret(secret: bytes) -> bytes:
    """Refuse secrets too short to be a real shared key (a typo'd config, say)."""
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError("the cluster secret must be bytes")
    if len(secret) < MIN_SECRET_SIZE:
        raise ValueError(f"the cluster secret must be at least {MIN_SECRET_SIZE} bytes")
    return bytes(secret)


def _mac(secret: bytes, label: bytes, client_id: int, server_id: int,
         nonce_c: bytes, nonce_s: bytes) -> bytes:
    transcript = bytes([codec.VERSION]) + _IDS.pack(client_id, server_id) + nonce_c + nonce_s
    return hmac.new(secret, label + transcript, hashlib.sha256).digest()


async def _read_frame(reader: asyncio.StreamReader, expected_type: int) -> bytes:
    """Read one handshake frame of ``expected_type``; return its body."""
    try:
        header = await reader.readexactly(codec.HEADER_SIZE)
        frame_type, body_len = codec.parse_header(header, _MAX_HANDSHAKE_FRAME)
        if frame_type != expected_type:
            raise AuthError(f"expected handshake frame type {expected_type}, got {frame_type}")
        if body_len != _BODY_SIZE[expected_type]:
            raise AuthError(f"handshake frame type {frame_type} has {body_len} body bytes, "
                            f"expected {_BODY_SIZE[expected_type]}")
        return await reader.readexactly(body_len)
    except asyncio.IncompleteReadError as exc:
        raise AuthError(f"connection closed during handshake ({len(exc.partial)} bytes "
                        "of a frame received)") from None
    except FrameError as exc:
        raise AuthError(f"malformed handshake frame: {exc}") from None
    except (ConnectionError, ssl.SSLError) as exc:
        raise AuthError(f"connection failed during handshake: {exc!r}") from None


async def _write(writer: asyncio.StreamWriter, frame_type: int, body: bytes) -> None:
    try:
        writer.write(codec.encode_frame(frame_type, body))
        await writer.drain()
    except (ConnectionError, ssl.SSLError) as exc:
        raise AuthError(f"connection failed during handshake: {exc!r}") from None


async def client_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                           secret: bytes, node_id: int, peer_id: int,
                           timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
    """Authenticate to ``peer_id`` as ``node_id`` over a fresh connection.

    Returns once the server has proved knowledge of the secret and accepted our
    proof; raises AuthError (with the reason) otherwise, including on timeout.
    """
    try:
        async with asyncio.timeout(timeout):
            await _client_exchange(reader, writer, secret, node_id, peer_id)
    except TimeoutError:
        raise AuthError(f"handshake timed out after {timeout}s") from None


async def _client_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           secret: bytes, node_id: int, peer_id: int) -> None:
    nonce_c = os.urandom(NONCE_SIZE)
    await _write(writer, codec.FRAME_HELLO, _IDS.pack(node_id, peer_id) + nonce_c)
    body = await _read_frame(reader, codec.FRAME_CHALLENGE)
    nonce_s, mac_s = body[:NONCE_SIZE], body[NONCE_SIZE:]
    expected = _mac(secret, _LABEL_SERVER, node_id, peer_id, nonce_c, nonce_s)
    if not hmac.compare_digest(mac_s, expected):
        raise AuthError(f"node {peer_id} failed to prove the cluster secret "
                        "(wrong secret, or not the node we meant to dial)")
    await _write(writer, codec.FRAME_RESPONSE,
                 _mac(secret, _LABEL_CLIENT, node_id, peer_id, nonce_c, nonce_s))
    # Wait for ACCEPT so we never queue messages on a connection about to be refused.
    await _read_frame(reader, codec.FRAME_ACCEPT)


async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                           secret: bytes, node_id: int, allowed_peers: Container[int],
                           timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                           on_hello: Callable[[], None] | None = None) -> int:
    """Authenticate an inbound connection; return the proven peer id.

    ``on_hello`` is called once the client's HELLO frame has arrived (the transport
    evicts connections that never sent one first when its handshake slots run out).
    Raises AuthError with the reason if the client names the wrong node or an
    unknown peer, fails to prove the secret, misbehaves, or times out.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _server_exchange(reader, writer, secret, node_id, allowed_peers,
                                          on_hello)
    except TimeoutError:
        raise AuthError(f"handshake timed out after {timeout}s") from None


async def _server_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           secret: bytes, node_id: int, allowed_peers: Container[int],
                           on_hello: Callable[[], None] | None = None) -> int:
    body = await _read_frame(reader, codec.FRAME_HELLO)
    if on_hello is not None:
        on_hello()
    client_id, server_id = _IDS.unpack_from(body)
    nonce_c = body[_IDS.size:]
    if server_id != node_id:
        raise AuthError(f"client dialed node {server_id}, this is node {node_id}")
    if client_id not in allowed_peers:
        raise AuthError(f"client claims to be node {client_id}, which is not a configured peer")
    nonce_s = os.urandom(NONCE_SIZE)
    await _write(writer, codec.FRAME_CHALLENGE,
                 nonce_s + _mac(secret, _LABEL_SERVER, client_id, node_id, nonce_c, nonce_s))
    mac_c = await _read_frame(reader, codec.FRAME_RESPONSE)
    expected = _mac(secret, _LABEL_CLIENT, client_id, node_id, nonce_c, nonce_s)
    if not hmac.compare_digest(mac_c, expected):
        raise AuthError(f"client claiming node {client_id} failed to prove the cluster secret")
    await _write(writer, codec.FRAME_ACCEPT, b"")
    return client_id


# --- mutual TLS ------------------------------------------------------------------

def tls_node_name(node_id: int) -> str:
    """The name a node's certificate must carry, as its subject CN or as a DNS
    subjectAltName, when peers use mutual TLS: ``raft-node-<id>``."""
    return f"raft-node-{node_id}"


def certificate_names(cert: dict) -> set[str]:
    """Subject common names and DNS subjectAltNames of a verified peer certificate
    (``SSLSocket.getpeercert()``)."""
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName"}
    names.update(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    return names


def check_tls_node_id(writer: asyncio.StreamWriter, node_id: int) -> None:
    """With TLS, the peer's certificate must name ``node_id`` (``raft-node-<id>``, CN or
    DNS SAN): otherwise any certificate the cluster CA signed could claim any node id,
    and a stolen key of one node could impersonate another. No-op without TLS.
    Raises AuthError."""
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return
    cert = ssl_object.getpeercert()
    if not cert:
        raise AuthError("the peer presented no verified TLS certificate")
    want = tls_node_name(node_id)
    names = certificate_names(cert)
    if want not in names:
        shown = ", ".join(sorted(names)[:4]) or "none"
        raise AuthError(f"TLS certificate does not name {want} (it names: {shown})")


def server_ssl_context(certfile: str, keyfile: str, cafile: str) -> ssl.SSLContext:
    """A TLS server context that presents ``certfile`` and requires a client
    certificate signed by the cluster CA in ``cafile`` (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.load_verify_locations(cafile)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(certfile: str, keyfile: str, cafile: str, *,
                       check_hostname: bool = False) -> ssl.SSLContext:
    """A TLS client context that presents ``certfile`` and trusts only the cluster
    CA in ``cafile``.

    Hostname checking is off by default: peers are usually dialed by IP, and a
    peer's identity is proven by the CA signature plus the HMAC handshake (which
    binds node ids). Turn it on if node certificates carry the dialed names.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.load_verify_locations(cafile)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
