"""The runtime side of membership changes: configuration contexts (addresses carried in
configuration entries), the transport following the configuration, snapshot files
keeping the configuration, and the RESP admin commands' argument checks. The end-to-end
scenarios on real processes are in tests/test_membership_cluster.py."""
from __future__ import annotations

import asyncio
import struct

import pytest

from raft._core import decode_conf, encode_conf
from raft.config import PeerAddress
from raft.membership import (MAX_CONTEXT_BYTES, AddressBook, AnyPeerExcept, MembershipError,
                             decode_context, encode_context, peer_targets)
from raft.storage.segment import CHECKSUM_CRC32C, checksum
from raft.storage.snapshot import (SNAP_MAGIC, SNAP_VERSION, _CRC, _HEAD, read_snapshot,
                                   snapshot_name, write_snapshot)

from test_transport import HOST, Node, free_ports, hb, run, wait_until


def addr(n: int) -> PeerAddress:
    return PeerAddress(("127.0.0.1", 7000 + n), ("127.0.0.1", 6000 + n))


# --- contexts ----------------------------------------------------------------------

def test_context_round_trips():
    members = {1: addr(1), 4: addr(4)}
    assert decode_context(encode_context(members)) == members
    assert decode_context(b"") == {}


@pytest.mark.parametrize("data", [
    b"\xff\xfe", b"[]", b'{"members": []}', b'{"members": {"x": {}}}',
    b'{"members": {"0": {"raft": "h:1", "client": "h:2"}}}',
    b'{"members": {"3": {"raft": "h:99999", "client": "h:2"}}}',
    b'{"members": {"3": {"raft": "h:1"}}}',
    b"{" * (MAX_CONTEXT_BYTES + 1),
])
def test_malformed_context_is_refused(data):
    with pytest.raises(MembershipError):
        decode_context(data)


def test_address_book_learns_and_later_contexts_win():
    book = AddressBook({1: addr(1), 2: addr(2)})
    book.learn(encode_context({2: addr(22), 3: addr(3)}))
    assert book.get(2) == addr(22) and book.client_addr_of(3) == "127.0.0.1:6003"
    with pytest.raises(MembershipError, match="no address known for node"):
        book.context_for([1, 9])


def test_peer_targets_keep_removed_members_until_commit():
    assert peer_targets(1, {1, 2, 3}, {1, 2, 3, 4}, committed=False, leader=1) == {2, 3, 4}
    assert peer_targets(1, {1, 2, 3}, {1, 2, 3, 4}, committed=True, leader=1) == {2, 3}
    assert peer_targets(5, set(), set(), committed=True, leader=2) == {2}   # joining


def test_handshakes_are_refused_only_to_removed_nodes():
    """A node whose log is behind must accept a member added since (it may be the
    leader that catches it up); a node a committed configuration removed is refused."""
    allowed = AnyPeerExcept({3})
    assert 7 in allowed and 1 in allowed
    assert 3 not in allowed and 0 not in allowed and "7" not in allowed


# --- transport ---------------------------------------------------------------------

def test_transport_follows_the_configuration():
    async def main():
        ports = dict(zip((1, 2, 3), free_ports(3)))
        a = Node(1, {1: ports[1], 2: ports[2]})
        b = Node(2, {1: ports[1], 2: ports[2]})
        c = Node(3, ports)
        for n in (a, b, c):
            await n.t.start()
        try:
            a.t.send([hb(1, 3)])                        # 3 is not a peer of 1 yet: dropped
            a.t.set_peers({2: (HOST, ports[2]), 3: (HOST, ports[3])})
            a.t.send([hb(1, 3, 1)])
            await wait_until(lambda: [m.msg_id for m in c.received] == [1])
            assert a.t.peer_ids == {2, 3}
            # Remove 2: no more dialing it, and its handshakes are refused.
            a.t.set_peers({3: (HOST, ports[3])})
            assert a.t.peer_ids == {3}
            b.t.send([hb(2, 1, 7)])
            a.t.send([hb(1, 2, 8)])
            c.t.send([hb(3, 1, 9)])
            await wait_until(lambda: any(m.msg_id == 9 for m in a.received))
            assert not any(m.src == 2 and m.msg_id == 7 for m in a.received)
            assert not b.received
            # A node we never heard of may connect unless it was removed.
            a.t.set_peers({3: (HOST, ports[3])}, AnyPeerExcept({2}))
            d = Node(4, {1: ports[1], 4: free_ports(1)[0]})
            await d.t.start()
            try:
                d.t.send([hb(4, 1, 11)])
                await wait_until(lambda: any(m.msg_id == 11 for m in a.received))
            finally:
                await d.t.close()
        finally:
            for n in (a, b, c):
                await n.t.close()
    run(main())


# --- snapshot files ---------------------------------------------------------------

def test_snapshot_file_keeps_the_whole_configuration(tmp_path):
    conf = encode_conf([1, 2, 3], [4], encode_context({4: addr(4)}))
    path = write_snapshot(tmp_path, 10, 2, conf, b"state")
    f = read_snapshot(path)
    assert (f.conf, f.voters, f.data) == (conf, (1, 2, 3), b"state")
    assert decode_conf(f.conf)[1] == (4,)


def test_version_1_snapshot_files_are_still_read(tmp_path):
    """Before membership changes a snapshot held only the voter ids."""
    voters = (1, 2, 3)
    body = struct.pack("<3Q", *voters) + b"old"
    head = _HEAD.pack(SNAP_MAGIC, 1, CHECKSUM_CRC32C, 0, len(voters), 7, 1, 3, checksum(body))
    head += _CRC.pack(checksum(head))
    path = tmp_path / snapshot_name(7, 1)
    path.write_bytes(head + body)
    f = read_snapshot(str(path))
    assert SNAP_VERSION == 2
    assert (f.voters, f.data, decode_conf(f.conf)[:2]) == (voters, b"old", (voters, ()))
