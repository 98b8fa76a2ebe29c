# The in-memory log (RaftLog).
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

# --- the log -----------------------------------------------------------------

cdef class RaftLog:
    """The in-memory Raft log with commit/apply/stable bookkeeping.

    Indexes start at 1; index 0 (term 0) is the empty prefix every log shares.
    """

    def __cinit__(self):
        self._cap = 64
        self._terms = <uint64_t*>malloc(self._cap * sizeof(uint64_t))
        if self._terms == NULL:
            raise MemoryError()
        self._len = 0
        self._entries = []
        self.offset = 1
        self.snapshot_term = 0

    def __init__(self, list entries=None, uint64_t snapshot_index=0, uint64_t snapshot_term=0):
        """A log holding ``entries`` (durable: stable up to the last of them) after
        a snapshot ending at (snapshot_index, snapshot_term)."""
        cdef Entry e
        self.offset = snapshot_index + 1
        self.snapshot_term = snapshot_term
        self.committed = snapshot_index
        self.applied = snapshot_index
        for e in entries or ():
            if e.index != self.last() + 1:
                raise LocalProtocolError(
                    f"restored entries are not contiguous: {e.index} after {self.last()}")
            if e.term < self.term_at(self.last()):
                raise LocalProtocolError(f"restored entry {e.index} has a decreasing term")
            self.append_entry(e)
        self.stable = self.last()
        self.unstable_from = self.last() + 1

    def __dealloc__(self):
        free(self._terms)

    # -- queries --

    cdef inline uint64_t last(self):
        return self.offset + <uint64_t>self._len - 1

    cdef uint64_t term_at(self, uint64_t index) except? 0:
        """Term of the entry at ``index``; the snapshot's term for offset - 1.
        Raises IndexError for compacted or missing indexes."""
        if index >= self.offset and index <= self.last():
            return self._terms[index - self.offset]
        if index == self.offset - 1:
            return self.snapshot_term
        raise IndexError(f"index {index} not in log [{self.offset - 1}, {self.last()}]")

    cdef bint match_term(self, uint64_t index, uint64_t term) except -1:
        """Does our log hold an entry (index, term)? Below the snapshot every entry
        is committed, hence in every future leader's log (Leader Completeness)."""
        if index > self.last():
            return False
        if index < self.offset - 1:
            return True
        return self.term_at(index) == term

    cdef uint64_t find_conflict_by_term(self, uint64_t index, uint64_t term) except? 0:
        """Largest j <= index with term(j) <= term (etcd's findConflictByTerm).

        Used on both sides of a rejected AppendEntries: each step skips a whole
        term, so a lagging follower is repaired in O(terms) round trips."""
        if index > self.last():
            index = self.last()
        while index >= self.offset and self._terms[index - self.offset] > term:
            index -= 1
        return index

    cdef list slice(self, uint64_t lo, uint64_t hi, Py_ssize_t max_bytes):
        """Entries [lo, hi) -- at least one if lo < hi, then up to max_bytes of data."""
        if lo >= hi:
            return []
        cdef Py_ssize_t start = lo - self.offset
        cdef Py_ssize_t stop = hi - self.offset
        cdef Py_ssize_t i, total = 0
        for i in range(start, stop):
            total += PyBytes_GET_SIZE((<Entry>PyList_GET_ITEM(self._entries, i)).data) + 16
            if total > max_bytes and i > start:
                stop = i
                break
        return self._entries[start:stop]

    # -- mutations --

    cdef int append_entry(self, Entry e) except -1:
        cdef uint64_t* grown
        if e.index != self.last() + 1:
            raise InvariantViolation(f"log entries must be contiguous: {e.index} after {self.last()}")
        if self._len == self._cap:
            grown = <uint64_t*>realloc(self._terms, 2 * self._cap * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self._terms = grown
            self._cap *= 2
        self._terms[self._len] = e.term
        self._len += 1
        self._entries.append(e)
        self.mem_bytes += PyBytes_GET_SIZE(e.data) + _ENTRY_MEM_OVERHEAD
        return 0

    cdef Py_ssize_t _bytes_of(self, Py_ssize_t lo, Py_ssize_t hi):
        """mem_bytes of the entries at positions [lo, hi) of _entries."""
        cdef Py_ssize_t i, total = 0
        for i in range(lo, hi):
            total += PyBytes_GET_SIZE((<Entry>PyList_GET_ITEM(self._entries, i)).data) + _ENTRY_MEM_OVERHEAD
        return total

    cdef int truncate_from(self, uint64_t index) except -1:
        """Drop entries index.. (a conflicting suffix, §5.3)."""
        # Safety (§5.4, State Machine Safety): a committed entry is never removed.
        # A leader asking for it is broken, or we are: stop rather than diverge.
        if index <= self.committed:
            raise InvariantViolation(f"attempt to truncate committed entry {index} "
                                     f"(commit index {self.committed}, last index {self.last()})")
        if index < self.offset:
            raise InvariantViolation(f"attempt to truncate compacted entry {index} (first {self.offset})")
        if index > self.last():
            return 0
        self._len = index - self.offset
        self.mem_bytes -= self._bytes_of(self._len, PyList_GET_SIZE(self._entries))
        del self._entries[self._len:]
        if self.stable >= index:
            self.stable = index - 1
        if self.unstable_from > index:
            self.unstable_from = index
        return 0

    cdef int restore(self, uint64_t index, uint64_t term) except -1:
        """Replace the whole log by a snapshot ending at (index, term) (§7: the
        follower's log conflicts with or is shorter than the snapshot). Every index
        up to ``index`` is then committed, applied (the runtime restores the state
        machine from the snapshot) and durable once the Ready holding it is written."""
        if index <= self.committed:
            raise InvariantViolation(f"a snapshot install must move the commit index forward "
                                     f"({index} <= {self.committed})")
        self._len = 0
        del self._entries[:]
        self.mem_bytes = 0
        self.offset = index + 1
        self.snapshot_term = term
        self.committed = index
        self.applied = index
        self.stable = index
        self.unstable_from = index + 1
        return 0

    def compact(self, uint64_t index):
        """Drop entries up to and including ``index`` (covered by a snapshot)."""
        if index < self.offset:
            return
        if index > self.applied:
            raise LocalProtocolError(f"cannot compact {index}: only {self.applied} applied")
        cdef uint64_t term = self.term_at(index)
        cdef Py_ssize_t k = index - self.offset + 1
        memmove(self._terms, self._terms + k, (self._len - k) * sizeof(uint64_t))
        self._len -= k
        self.mem_bytes -= self._bytes_of(0, k)
        del self._entries[:k]
        self.offset = index + 1
        self.snapshot_term = term

    # -- Python API (tests, storage, tools) --

    @property
    def first_index(self):
        return self.offset

    @property
    def last_index(self):
        return self.last()

    @property
    def last_term(self):
        return self.term_at(self.last())

    def term(self, uint64_t index):
        return self.term_at(index)

    def entries(self, uint64_t lo, uint64_t hi):
        """Entries [lo, hi)."""
        if lo < self.offset or hi > self.last() + 1:
            raise IndexError(f"[{lo}, {hi}) not in log [{self.offset}, {self.last() + 1})")
        return self._entries[lo - self.offset:hi - self.offset]

    def matches(self, uint64_t index, uint64_t term):
        return self.match_term(index, term)

    def conflict_hint(self, uint64_t index, uint64_t term):
        return self.find_conflict_by_term(index, term)

    def is_up_to_date(self, uint64_t last_index, uint64_t last_term):
        """§5.4.1: is a log ending at (last_index, last_term) at least as up-to-date as ours?"""
        cdef uint64_t our_term = self.term_at(self.last())
        return last_term > our_term or (last_term == our_term and last_index >= self.last())

    def __len__(self):
        return self._len


