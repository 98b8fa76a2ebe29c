"""The peer-to-peer layer of the networked Raft node.

- ``raft.net.codec`` (Cython): the wire format, a batch of ``raft._core.Message``
  per length-prefixed frame, and an incremental ``FrameDecoder`` (docs/wire.md).
- ``raft.net.auth``: the cluster-secret HMAC handshake every connection starts
  with, and mutual-TLS context builders.
- ``raft.net.transport``: ``PeerTransport``, persistent authenticated asyncio
  connections to every peer with batching, bounded buffers and reconnects.
"""
from raft.net.auth import AuthError, client_ssl_context, server_ssl_context
from raft.net.codec import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, decode, encode
from raft.net.transport import PeerTransport, install_event_loop_policy, new_event_loop

__all__ = [
    "DEFAULT_MAX_FRAME", "AuthError", "FrameDecoder", "FrameError", "PeerTransport",
    "client_ssl_context", "decode", "encode", "install_event_loop_policy", "new_event_loop",
    "server_ssl_context",
]
