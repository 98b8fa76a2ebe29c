"""Cluster membership in the runtime: where each member listens, and which peers the
transport talks to as the configuration changes.

The core decides who is a member (``RawNode.voters``/``learners``, configuration
entries: docs/protocol.md, "Membership changes"); it carries an opaque ``context``
with every configuration, and this module fills it with the members' addresses, so a
node learns how to reach a new member from the same log entry that makes it one.

Context format (JSON, UTF-8, at most ``MAX_CONTEXT_BYTES``)::

    {"members": {"4": {"raft": "127.0.0.1:7004", "client": "127.0.0.1:6384"}, ...}}

Nothing here does IO: ``AddressBook`` is plain data, ``peer_targets`` a pure function.
"""
from __future__ import annotations

import json
from typing import Iterable

from raft.config import PeerAddress, format_host_port, parse_host_port
from raft.errors import RaftError

__all__ = ["AddressBook", "AnyPeerExcept", "MAX_CONTEXT_BYTES", "MembershipError",
           "decode_context", "encode_context", "peer_targets"]

#: A configuration's context is replicated in its log entry and kept in snapshots:
#: bounded, like every input. 64 KiB holds the addresses of ~600 members.
MAX_CONTEXT_BYTES = 64 * 1024
_MAX_ID = (1 << 63) - 1


class MembershipError(RaftError, ValueError):
    """A membership request or a configuration context that cannot be used."""


def encode_context(members: dict[int, PeerAddress]) -> bytes:
    """The context of a configuration whose members listen at ``members``."""
    doc = {"members": {str(pid): {"raft": format_host_port(a.raft),
                                  "client": format_host_port(a.client)}
                       for pid, a in sorted(members.items())}}
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_CONTEXT_BYTES:
        raise MembershipError(f"configuration context of {len(data)} bytes exceeds "
                              f"{MAX_CONTEXT_BYTES}")
    return data


def decode_context(data: bytes) -> dict[int, PeerAddress]:
    """The addresses in a configuration's context ({} for b"", the initial
    configuration, whose addresses are the config file's). Raises MembershipError
    on anything malformed: a context comes from the leader's log, never trust it
    blindly (and never unpickle it)."""
    if not data:
        return {}
    if len(data) > MAX_CONTEXT_BYTES:
        raise MembershipError(f"configuration context of {len(data)} bytes exceeds {MAX_CONTEXT_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"))
        members = doc["members"]
        if not isinstance(members, dict):
            raise TypeError("members is not an object")
        out: dict[int, PeerAddress] = {}
        for key, addr in members.items():
            pid = int(key)
            if not 0 < pid <= _MAX_ID:
                raise ValueError(f"member id {pid} out of range")
            out[pid] = PeerAddress(parse_host_port(addr["raft"], f"members.{pid}.raft"),
                                   parse_host_port(addr["client"], f"members.{pid}.client"))
        return out
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as e:
        raise MembershipError(f"unreadable configuration context: {e}") from None


class AddressBook:
    """Where each known node listens: the config file's ``[peers]`` first, then what
    every configuration's context says (later contexts win: a replaced node may come
    back at a new address)."""

    def __init__(self, peers: dict[int, PeerAddress]) -> None:
        self._addrs: dict[int, PeerAddress] = dict(peers)

    def learn(self, context: bytes) -> None:
        self._addrs.update(decode_context(context))

    def add(self, pid: int, addr: PeerAddress) -> None:
        self._addrs[pid] = addr

    def get(self, pid: int) -> PeerAddress | None:
        return self._addrs.get(pid)

    def client_addr_of(self, pid: int) -> str | None:
        a = self._addrs.get(pid)
        return a.client_addr if a is not None else None

    def known(self) -> frozenset[int]:
        return frozenset(self._addrs)

    def context_for(self, members: Iterable[int]) -> bytes:
        """The context for a configuration of ``members`` (each must be known)."""
        missing = [pid for pid in members if pid not in self._addrs]
        if missing:
            raise MembershipError(f"no address known for node(s) {sorted(missing)}")
        return encode_context({pid: self._addrs[pid] for pid in members})


def peer_targets(me: int, members: Iterable[int], previous: Iterable[int],
                 committed: bool, leader: int) -> frozenset[int]:
    """Whom the transport connects to: every member but us; while the configuration
    is not committed, also the previous one's members (a removed server still gets
    the log until the change commits, and a removed leader still leads until then);
    and the leader we follow, whichever configuration it is in."""
    out = set(members)
    if not committed:
        out.update(previous)
    if leader:
        out.add(leader)
    out.discard(me)
    return frozenset(out)


class AnyPeerExcept:
    """Whose peer handshakes a node accepts: any node that proves it holds the cluster
    secret, except the ones a committed configuration removed. Not just the members
    we know of: a node whose log is behind does not know a member added since, and
    that member may be the leader that must catch it up (it would never learn of
    it otherwise). Used as ``PeerTransport``'s ``allowed`` (only ``in`` is asked)."""

    __slots__ = ("removed",)

    def __init__(self, removed: Iterable[int]) -> None:
        self.removed = frozenset(removed)

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, int) and pid > 0 and pid not in self.removed

    def __repr__(self) -> str:
        return f"AnyPeerExcept({sorted(self.removed)})"
