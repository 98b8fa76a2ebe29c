"""File descriptor budget of a node: raise the soft limit, keep a reserve.

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

__all__ = ["BASE_FD_RESERVE", "fd_reserve", "nofile_limit", "raise_nofile_limit",
           "effective_max_clients"]

log = logging.getLogger("raft.limits")

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
