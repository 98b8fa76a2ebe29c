# ReadIndex bookkeeping (diss. §6.4; etcd's read_only.go): the reads a leader has
# been asked for, the heartbeat round each waits on, and the ones confirmed.
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.
# Whether a round is confirmed is a majority question, answered by the node
# (_Raft._confirm_reads, through the tracker's majority function).

cdef class ReadOnly:
    def __cinit__(self):
        self.seq = 0
        self.pending = []
        self.states = []

    cdef inline void add(self, object ctx):
        """A read ``ctx`` waits for the next round (round 0: not started yet)."""
        self.pending.append([ctx, 0, 0])

    cdef inline bint round_due(self):
        """Should a round start: reads wait for one, and none is in flight? (Rounds
        never decrease along ``pending``, so the oldest read is in a round iff one is
        in flight.) Reads arriving while a round is out join the next one, started
        as soon as that round is confirmed (etcd does the same): under load a round
        serves every read that arrived during the one before, with two heartbeats in
        all, rather than two per loop turn."""
        return bool(self.pending) and self.pending[0][2] == 0

    cdef uint64_t start_round(self, uint64_t committed):
        """Start a new round: every read not yet in one reads at ``committed``
        (diss. §6.4 step 2). Returns the round, which the leader's next heartbeat
        carries (Message.context)."""
        cdef list read
        self.seq += 1
        for read in self.pending:
            if read[2] == 0:
                read[1] = committed
                read[2] = self.seq
        return self.seq

    cdef void confirm_first(self, Py_ssize_t k):
        """The first ``k`` pending reads are confirmed: hand them out next."""
        cdef list read
        for read in self.pending[:k]:
            self.states.append((read[0], read[1]))
        del self.pending[:k]

    cdef list take_states(self):
        cdef list out = self.states
        self.states = []
        return out

    cdef inline void drop_pending(self):
        """Leadership lost: reads not yet confirmed die with it (the runtime fails
        them when it sees the role change); confirmed ones stay valid."""
        self.pending = []

    @property
    def pending_count(self) -> int:
        return len(self.pending)
