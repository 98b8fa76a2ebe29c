"""The RESP2/RESP3 (Redis protocol) front end of a node (``raft.resp``).

Rooms: ``protocol`` (sans-IO parsing and encoding, and ``ServerConfig``),
``connection`` (``RespServer`` and one client connection: ordering, writes through
the log, linearizable reads), ``commands`` (what the server answers itself), ``frontend`` (``resp_frontend``:
the server a ``RaftNode`` starts). The node behind it is any ``raft.api.NodeAPI``.
"""

from raft.api import NodeAPI, NotLeaderError, ReadTimeoutError
from raft.resp.connection import RespConnection, RespServer, serve_resp
from raft.resp.frontend import resp_frontend
from raft.resp.protocol import ProtocolError, RequestParser, ServerConfig, encode_reply

__all__ = [
    "NodeAPI",
    "NotLeaderError",
    "ProtocolError",
    "ReadTimeoutError",
    "RequestParser",
    "RespConnection",
    "RespServer",
    "ServerConfig",
    "encode_reply",
    "resp_frontend",
    "serve_resp",
]
