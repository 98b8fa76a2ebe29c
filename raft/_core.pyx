# cython: language_level=3
"""The sans-IO Raft core.

Inputs: ``tick()`` (logical time), ``step(message)``, ``propose(data)`` /
``propose_batch(datas)``, ``campaign()``, ``read_index(ctx)``, and
``compact(index, data)`` once the application has saved a snapshot.
Output: a ``Ready`` batch (hard state and entries to persist, messages to send,
committed entries to apply), acknowledged with ``advance(ready)``.

No sockets, clocks, threads or unseeded randomness: the same inputs give the same
outputs, in the simulator and in production. The protocol is Figure 2 of the Raft
paper with the refinements written down in docs/protocol.md; section references
below are to the paper ("§") and Ongaro's dissertation ("diss. §").

The persistence contract (what must be durable before what may be sent):

1. ``ready.messages`` may be sent at once, even while ``ready.entries`` are being
   written: they are AppendEntries from a leader, which may write its own log in
   parallel with replication because it counts itself only after ``advance``
   (diss. §10.2.1).
2. ``ready.hard_state`` (if not None) and ``ready.entries`` must be durable before
   ``ready.messages_after_persist`` are sent: those are responses promising
   durability (vote grants, AppendEntries acks) and RequestVotes (the candidate's
   self-vote must survive a crash, or it could vote twice in its term). Storage
   truncates everything from ``ready.entries[0].index`` on before appending.
   If ``ready.snapshot`` is not None (installed from the leader, §7), it comes
   first: make it durable, discard the whole stored log, and restore the state
   machine from it; ``ready.entries`` then follow it.
3. ``ready.committed_entries`` are committed and locally durable: apply them in order.
4. Call ``advance(ready)``. Only one Ready is outstanding at a time.
"""

cimport cython
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memmove

# The hub: one extension module built from the parts below, in dependency order
# (as uvloop's loop.pyx and msgpack's _cmsgpack.pyx include theirs). Each part is
# a room: change the protocol in core/raft.pxi, the log in core/log.pxi, and so on.
# The C enums (message types, roles, progress states) and the class layouts are
# in raft/_core.pxd, written once for the core and the wire codec.

include "core/types.pxi"       # constants, errors, Entry/HardState/Snapshot/Message
include "core/conf.pxi"        # configurations: encoding, single-server change rule
include "core/log.pxi"         # RaftLog
include "core/tracker.pxi"     # Progress + in-flight ring, majority counting
include "core/read_only.pxi"   # ReadOnly: ReadIndex requests and rounds
include "core/raft.pxi"        # _Raft: roles, elections, replication, snapshots
include "core/rawnode.pxi"     # RawNode (public API) and Ready
