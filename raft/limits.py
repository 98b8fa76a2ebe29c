"""Limits that several parts of a node must agree on: the size of a log entry, and the
file descriptors a node keeps for itself. (docs/operations.md, "Limits", lists every
limit, its default and the error a client or peer gets.)

Sizes. Size limits that the front end, the core and the peer transport must agree on.

They live in one place because they depend on each other: a log entry the front end
accepts must fit, alone, in one AppendEntries frame (the core sends an entry larger
than ``max_msg_bytes`` alone in its message: ``RaftLog.slice``), and that frame must
fit in a peer's send buffer even while the previous one is still in the socket
buffer. An entry that does not fit is dropped by the transport on every retry: the
followers stop hearing from the leader (in PROBE state its heartbeat *is* that
AppendEntries), elect another, and the entry never commits (issue 15, item 1).

So the largest entry is bounded (``limits.max_entry_bytes``, as etcd's
``--max-request-bytes``; the client gets ``-ERR value too large ...`` like etcd's
``ErrRequestTooLarge``), and the transport bounds below are derived from it.

Descriptors. File descriptor budget of a node: raise the soft limit, keep a reserve.

A node needs descriptors for its write-ahead log (segments, the directory, snapshot
files), its peers (one connection each way per peer, plus handshakes in progress), the
metrics server, the trace file and the event loop itself. Client connections take the
rest. If clients could take them all, the next WAL segment or snapshot would fail with
EMFILE, and a node that cannot write its log must stop (fail-stop): one flood of idle
client sockets would take the leader down. So, as Redis does with ``maxclients``, the
client cap is lowered to what the descriptor limit leaves after a reserve.
"""
from __future__ import annotations

import logging

log = logging.getLogger("raft.limits")


# --- sizes ------------------------------------------------------------------------------
#: The largest log entry (an encoded client command) accepted by default. etcd
#: defaults to 1.5 MiB; larger values cost replication latency for every write
#: queued behind them, and memory in every node's log until a snapshot.
DEFAULT_MAX_ENTRY_BYTES = 8 << 20
#: The largest entry that can be configured.
MAX_MAX_ENTRY_BYTES = 512 << 20
#: Commands one MULTI may queue: EXEC applies them all in one step on the event loop
#: (10,000 SETs take a few tens of ms), which must stay well under an election timeout.
DEFAULT_MAX_MULTI_COMMANDS = 10_000
#: Room for everything in a frame besides the entry's data: frame, message and entry
#: headers (raft/net/codec.pyx), with a wide margin.
FRAME_ENVELOPE = 64 << 10
#: The transport's historical floors (kept so small configs behave as before).
MIN_MAX_FRAME = 64 << 20
MIN_SEND_BUFFER = 16 << 20


def transport_bounds(max_msg_bytes: int, max_entry_bytes: int) -> tuple[int, int]:
    """(max_frame, max_buffered_bytes per peer) for ``PeerTransport``.

    max_frame holds the largest AppendEntries (``max_msg_bytes`` of entries, or one
    entry of up to ``max_entry_bytes``) and snapshot chunk. The send buffer holds two
    of the largest frames (one still in the socket, the next queued) and the core's
    window of 4 snapshot chunks with the AppendEntries and heartbeats beside them.
    """
    largest = max(max_msg_bytes, max_entry_bytes) + FRAME_ENVELOPE
    max_frame = max(MIN_MAX_FRAME, 4 * max_msg_bytes, largest)
    max_buffered = max(MIN_SEND_BUFFER, 8 * max_msg_bytes, 2 * largest)
    return max_frame, max_buffered


def inflight_bytes_bound(max_msg_bytes: int, max_entry_bytes: int) -> int:
    """Entry bytes a leader keeps in flight to one follower (``RawNode(max_inflight_bytes=)``):
    a quarter of its send buffer. One more message may go past it (up to the largest
    entry, half the buffer), so pipelining alone never overflows the buffer; the rest
    is for heartbeats and snapshot chunks. 4 MiB by default: thousands of small entries."""
    return transport_bounds(max_msg_bytes, max_entry_bytes)[1] // 4


def command_size_bound(argv: list[bytes]) -> int:
    """An upper bound of ``len(kv.encode_command(..., argv))``: a version byte, four
    varints (at most 10 bytes each), and a length varint plus the bytes per argument."""
    return 51 + 10 * len(argv) + sum(map(len, argv))   # per write: builtins only


#: An upper bound of a RAFT.EXEC entry without its items: ``command_size_bound`` of
#: ``[b"RAFT.EXEC"]`` (51 + 9 + 10).
EXEC_ENVELOPE = 70


def exec_item_size_bound(argv: list[bytes]) -> int:
    """An upper bound of what one queued command adds to a RAFT.EXEC entry: its
    ``kv.encode_argv`` (a count varint plus length-prefixed arguments) as one argument."""
    return 20 + sum(len(a) + 10 for a in argv)


def too_large_message(size: int, limit: int) -> str:
    """The client's error (etcd: "request is too large"; Redis: proto-max-bulk-len)."""
    return (f"ERR value too large: the command would be a log entry of up to {size} bytes, "
            f"over the limit of {limit} bytes (limits.max_entry_bytes)")


# --- file descriptors --------------------------------------------------------------------
#: Descriptors kept for everything but clients and peers: WAL segments, the data
#: directory and its lock, snapshot files being written and read, the trace and log
#: files, the metrics listener and its connections, the event loop (epoll, self-pipe,
#: signal fd), worker threads and the interpreter's own files.
BASE_FD_RESERVE = 128


def fd_reserve(peers: int, max_handshakes: int) -> int:
    """Descriptors kept out of the clients' reach for a node with ``peers`` other
    voters: the base reserve, an inbound and an outbound connection per peer (twice,
    for a reconnect overlapping the old connection), and every handshake slot."""
    return BASE_FD_RESERVE + 4 * peers + max_handshakes


def nofile_limit() -> int | None:
    """The current soft RLIMIT_NOFILE, or None where there is none (not POSIX)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_nofile_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (any process may); returns the
    soft limit in force afterwards (None: unlimited or not POSIX). The common soft
    default, 1024, is far below what a server with many clients needs."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            # e.g. an infinite hard limit on a kernel whose nr_open is lower
            log.warning("cannot raise the open file limit from %d to %s: %s", soft, hard, e)
        else:
            log.info("raised the open file limit from %d to %s", soft, hard)
    return nofile_limit()


def effective_max_clients(configured: int, nofile: int | None, reserve: int) -> int:
    """``configured``, lowered to fit the descriptor limit after ``reserve`` (at
    least 1, so the node stays reachable; a warning says it was lowered)."""
    if nofile is None:
        return configured
    room = max(1, nofile - reserve)
    if room < configured:
        log.warning("limits.max_clients lowered from %d to %d: the open file limit is %d "
                    "and %d descriptors are kept for storage and peers (raise the hard "
                    "limit, e.g. `ulimit -Hn`, LimitNOFILE= in systemd)",
                    configured, room, nofile, reserve)
        return room
    return configured
