# Decimal digits of an unsigned integer, as ``%d`` writes them: the one loop the trace
# formatter (raft/_tracefmt.pyx) and the RESP reply encoder (raft/_fastpath.pyx) share.
# `include`d by both; each gets its own inline copy.

from libc.stdint cimport uint64_t

DEF DECIMAL_MAX = 24      # digits of any uint64_t, with room to spare


cdef inline int _decimal(char* tmp, uint64_t v) noexcept nogil:
    """Write the digits of ``v`` at the end of ``tmp`` (DECIMAL_MAX bytes); return
    the index of the first: the digits are tmp[start:DECIMAL_MAX]."""
    cdef int i = DECIMAL_MAX
    while True:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            return i
