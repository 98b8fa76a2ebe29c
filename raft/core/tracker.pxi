# Tracker: the leader's view of each follower (Progress, with its in-flight ring)
# and the one function that counts majorities.
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

# --- leader's view of a follower --------------------------------------------

cdef class Progress:
    def __cinit__(self, uint64_t next, int max_inflight, Py_ssize_t max_inflight_bytes=0):
        if max_inflight < 1:
            raise LocalProtocolError("max_inflight must be positive")
        self.match = 0
        self.next = next
        self.state = _PROBE
        self.probe_sent = False
        self.progressed = False
        self._inflight_cap = max_inflight
        self._inflight = <uint64_t*>malloc(max_inflight * sizeof(uint64_t))
        self._inflight_size = <Py_ssize_t*>malloc(max_inflight * sizeof(Py_ssize_t))
        if self._inflight == NULL or self._inflight_size == NULL:
            raise MemoryError()
        self._max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0
        self._inflight_start = 0
        self.inflight = 0

    def __dealloc__(self):
        free(self._inflight)
        free(self._inflight_size)

    cdef void become_probe(self):
        # Resume from the last known match: everything after it may be lost.
        self.state = _PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight = 0
        self.inflight_bytes = 0

    cdef void become_replicate(self):
        self.state = _REPLICATE
        self.next = self.match + 1
        self.inflight = 0
        self.inflight_bytes = 0

    cdef void become_snapshot(self, uint64_t index):
        # The entries the follower needs are compacted: send snapshot `index` instead.
        self.state = _SNAPSHOT
        self.inflight = 0
        self.inflight_bytes = 0
        self.probe_sent = False
        self.snap_index = index
        self.snap_next = 0
        self.snap_acked = 0

    cdef void free_le(self, uint64_t index):
        """Release in-flight AppendEntries whose last index <= index (acknowledged)."""
        while self.inflight > 0 and self._inflight[self._inflight_start] <= index:
            self.inflight_bytes -= self._inflight_size[self._inflight_start]
            self._inflight_start = (self._inflight_start + 1) % self._inflight_cap
            self.inflight -= 1

    cdef inline void note_commit_sent(self, uint64_t commit):
        if commit > self.sent_commit:
            self.sent_commit = commit

    cdef inline void add_inflight(self, uint64_t last, Py_ssize_t size):
        cdef int slot = (self._inflight_start + self.inflight) % self._inflight_cap
        self._inflight[slot] = last
        self._inflight_size[slot] = size
        self.inflight += 1
        self.inflight_bytes += size

    cdef bint is_paused(self):
        """May AppendEntries be sent? (Snapshot chunks have their own window.)"""
        if self.state == _PROBE:
            return self.probe_sent
        if self.state == _SNAPSHOT:
            return True
        # By bytes too: pipelining more large entries than the peer's send buffer holds
        # would only get them dropped and resent. At least one message always goes.
        return self.inflight >= self._inflight_cap or (
            self._max_inflight_bytes > 0 and self.inflight_bytes >= self._max_inflight_bytes)

    cdef bint maybe_update(self, uint64_t index):
        """The follower acknowledged holding our log up to ``index``: raise match
        (etcd's Progress.MaybeUpdate). True if match moved."""
        if index > self.match:
            self.match = index
            self.progressed = True
            return True
        return False

    # -- Python entry points (unit tests, tools); the core calls the cdef methods --

    def sent(self, uint64_t last, Py_ssize_t size=0) -> None:
        """Record an AppendEntries in flight whose last entry is ``last``, carrying
        ``size`` bytes (REPLICATE state: the caller checks ``paused()`` first)."""
        if self.inflight >= self._inflight_cap:
            raise LocalProtocolError("in-flight window is full")
        self.add_inflight(last, size)

    def acked(self, uint64_t index) -> bool:
        """An ack for ``index``: raise match and free the in-flight messages it covers."""
        cdef bint moved = self.maybe_update(index)
        self.free_le(index)
        return moved

    def paused(self) -> bool:
        """Must the leader hold back AppendEntries to this follower?"""
        return self.is_paused()

    def to_probe(self) -> None:
        self.become_probe()

    def to_replicate(self) -> None:
        self.become_replicate()

    def to_snapshot(self, uint64_t index) -> None:
        self.become_snapshot(index)

    def __repr__(self):
        state = ("probe", "replicate", "snapshot")[self.state]
        return f"Progress(match={self.match}, next={self.next}, {state}, inflight={self.inflight})"


# --- majorities ----------------------------------------------------------------
# The one place that counts majorities (elections, PreVote, commit, ReadIndex,
# CheckQuorum all go through RawNode._is_quorum/_quorum_index, which call these).
# Joint consensus (diss. §4.3) will go here: a decision then needs a majority of
# the old configuration AND of the new one.

cdef inline bint _majority_won(Py_ssize_t n, tuple voters) noexcept:
    """Do ``n`` of ``voters`` (ourselves included) make a majority?"""
    return n > len(voters) // 2


cdef uint64_t _majority_index(list matches, tuple voters) except? 0:
    """The largest index a majority of ``voters`` holds, given one match index
    per voter (``matches`` is sorted in place)."""
    matches.sort(reverse=True)
    return matches[len(voters) // 2]


def majority_index(list matches, tuple voters) -> int:
    """Python entry point to ``_majority_index`` (unit tests)."""
    return _majority_index(list(matches), voters)


def majority_won(Py_ssize_t n, tuple voters) -> bool:
    """Python entry point to ``_majority_won`` (unit tests)."""
    return _majority_won(n, voters)
