"""Wire the RESP server to a node: ``RaftNode(config, frontend=resp_frontend)``.

Kept out of raft/node.py so that the node depends on no client protocol; the node
knows only that a front end starts and closes (``raft.api.ClientFrontend``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from raft.resp.connection import RespServer
from raft.resp.protocol import ServerConfig

if TYPE_CHECKING:
    from raft.node import RaftNode

__all__ = ["resp_frontend", "server_config"]


def server_config(node: RaftNode) -> ServerConfig:
    """The RESP server's settings and limits from the node's configuration;
    max_clients as the node's descriptor budget allows."""
    cfg = node.config
    return ServerConfig(password=cfg.client_password, max_clients=node.max_clients(),
                        auth_timeout=cfg.auth_timeout,
                        preauth_query_buffer=cfg.preauth_query_buffer,
                        max_entry_bytes=cfg.max_entry_bytes,
                        max_multi_commands=cfg.max_multi_commands,
                        debug_stale_reads=cfg.debug_stale_reads)


def resp_frontend(node: RaftNode) -> RespServer:
    """A RESP server in front of ``node`` (not started: the node starts it)."""
    return RespServer(node, server_config(node))
