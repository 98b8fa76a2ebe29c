# Included by raft/_fastpath.pyx.
#
# SyncWriter: the WAL's write + fdatasync on a thread that never takes the GIL.
#
# Why: a node saves ~500-700 times a second under load. On the Python disk thread
# (raft/storage/disk_thread.py) every save took the GIL four or five times (to
# start, after the stat of the data directory, after pwritev, after fdatasync, to
# post the result), and each time the loop thread held it, the disk thread waited
# up to the switch interval and then forced a switch: measured under `raft bench`,
# 150-300 us of waiting before a save even started, another 100 us inside it, and
# ~8,000 context switches a second per node (1,200 with durability "none").
# Here the loop thread builds the batch (raft/storage/wal.py begin_save), this
# thread only runs pwritev + fdatasync, and the result comes back through an
# eventfd the loop watches (add_reader): no GIL, no Python object touched.
#
# The protocol (one write in flight at a time: the node's Ready loop awaits each
# save before the next, and submit refuses a second one):
#   loop thread:  submit() fills the job fields, sets _pending, signals _req_fd
#   this thread:  reads _req_fd, runs the job, clears _pending, signals _done_fd
#   loop thread:  _done_fd readable -> result() reads it and the job's outcome
# The eventfd write/read pairs order the field accesses between the threads (the
# kernel takes a lock on both sides).

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t pwritev(int fd, const iovec* iov, int iovcnt, long long offset)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read" (int fd, void* buf, size_t count)
    ssize_t c_write "write" (int fd, const void* buf, size_t count)
    int c_close "close" (int fd)
    int c_fdatasync "fdatasync" (int fd)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    int CLOCK_MONOTONIC

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR
    int EAGAIN
    int EIO

DEF SYNC_WRITER_MAX_BUFS = 8


cdef class SyncWriter:
    """One thread that writes buffers at an offset of a file and fdatasyncs it, with
    no GIL. ``submit`` starts a write; when ``done_fd`` is readable, ``result()``
    returns ``(bytes written, errno, nanoseconds)`` (errno 0: written in full and,
    if asked, synced; the time is the write + fdatasync's alone, measured on the
    writer thread). The buffers are held (and cannot be resized) until then."""

    cdef int _req_fd
    cdef int _done_fd
    cdef int _fd
    cdef long long _offset
    cdef long long _total
    cdef long long _written
    cdef long long _io_ns
    cdef long long _submit_ns
    cdef long long _start_ns
    cdef long long _end_ns
    cdef int _sync
    cdef int _err
    cdef int _pending
    cdef int _stop
    cdef int _busy
    cdef int _nbufs
    cdef iovec _iov[SYNC_WRITER_MAX_BUFS]
    cdef list _held
    cdef object _thread

    def __cinit__(self):
        self._req_fd = -1
        self._done_fd = -1

    def __init__(self, str name="raft-wal-writer"):
        import threading

        self._req_fd = eventfd(0, EFD_CLOEXEC)
        if self._req_fd < 0:
            raise OSError(errno, "eventfd failed")
        self._done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self._done_fd < 0:
            raise OSError(errno, "eventfd failed")
        self._held = []
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def done_fd(self) -> int:
        """Readable when a submitted write has finished (watch it with add_reader)."""
        return self._done_fd

    @property
    def busy(self) -> bool:
        """A write was submitted and its result not yet taken."""
        return self._busy != 0

    def submit(self, int fd, bufs, long long offset, bint sync):
        """Write ``bufs`` (contiguous byte buffers) at ``offset`` of ``fd``, then
        fdatasync it if ``sync``, on the thread. One write at a time."""
        self._prepare(fd, bufs, offset, sync)
        self._pending = 1
        self._submit_ns = _now_ns()
        _signal(self._req_fd)

    def write_here(self, int fd, bufs, long long offset, bint sync):
        """``submit`` then ``result``, but run in the calling thread with the GIL
        released: for a caller with nothing else to do while the disk works (a
        follower's save), it spares the two thread handoffs. Returns
        ``(written, errno, ns)``."""
        self._prepare(fd, bufs, offset, sync)
        self._submit_ns = self._start_ns = _now_ns()
        with nogil:
            self._run_job()
        self._end_ns = _now_ns()
        self._io_ns = self._end_ns - self._start_ns
        self._busy = 0
        self._held = []
        return self._written, self._err, self._io_ns

    cdef int _prepare(self, int fd, bufs, long long offset, bint sync) except -1:
        """Take the job: pin ``bufs`` and fill the iovecs. The thread runs a job only
        once ``_pending`` is set (submit), so ``write_here`` never races it."""
        cdef const uint8_t[::1] view
        cdef int i = 0
        cdef long long total = 0
        if self._busy:
            raise RuntimeError("SyncWriter: a write is already in flight")
        if self._stop:
            raise RuntimeError("SyncWriter: closed")
        if len(bufs) > SYNC_WRITER_MAX_BUFS:
            raise ValueError(f"SyncWriter: at most {SYNC_WRITER_MAX_BUFS} buffers")
        held = []
        for b in bufs:
            view = b
            held.append(view)     # holds the export: the buffer stays put until result()
            self._iov[i].iov_base = <void*>&view[0] if view.shape[0] else NULL
            self._iov[i].iov_len = view.shape[0]
            total += view.shape[0]
            i += 1
        self._held = held
        self._nbufs = i
        self._fd = fd
        self._offset = offset
        self._total = total
        self._written = 0
        self._sync = sync
        self._err = 0
        self._busy = 1
        return 0

    def result(self):
        """``(written, errno, ns)`` of the finished write, or None if it has not finished
        (a spurious wakeup). Releases the buffers."""
        cdef uint64_t count = 0
        cdef ssize_t n = c_read(self._done_fd, &count, 8)
        if n != 8:
            return None
        self._busy = 0
        self._held = []
        return self._written, self._err, self._io_ns

    def timings(self):
        """CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns``'s clock) of the last
        write: submitted, started on the thread, finished. For diagnostics: the
        first gap is the thread's wakeup, the rest of a save's wait the loop's."""
        return self._submit_ns, self._start_ns, self._end_ns

    def close(self):
        """Finish the write in flight (if any), then end the thread and wait for it."""
        if self._thread is not None:
            self._stop = 1
            _signal(self._req_fd)
            self._thread.join()
            self._thread = None
        if self._req_fd >= 0:
            c_close(self._req_fd)
            self._req_fd = -1
        if self._done_fd >= 0:
            c_close(self._done_fd)
            self._done_fd = -1

    def _serve(self):
        with nogil:
            self._loop()

    cdef void _loop(self) noexcept nogil:
        cdef uint64_t count
        cdef ssize_t n
        while True:
            n = c_read(self._req_fd, &count, 8)
            if n < 0 and errno == EINTR:
                continue
            if self._pending:
                self._start_ns = _now_ns()
                self._run_job()
                self._end_ns = _now_ns()
                self._io_ns = self._end_ns - self._start_ns
                self._pending = 0
                _signal(self._done_fd)
            if self._stop:
                return

    cdef void _run_job(self) noexcept nogil:
        """pwritev until everything is written (a regular file writes short only near
        ENOSPC-like conditions), then fdatasync."""
        cdef iovec* iov = self._iov
        cdef int nbufs = self._nbufs
        cdef ssize_t n
        cdef size_t left
        while nbufs > 0 and self._written < self._total:
            n = pwritev(self._fd, iov, nbufs, self._offset + self._written)
            if n < 0:
                if errno == EINTR:
                    continue
                self._err = errno
                return
            if n == 0:
                self._err = EIO     # no progress on a regular file: never loop forever
                return
            self._written += n
            left = <size_t>n
            while nbufs > 0 and left >= iov[0].iov_len:   # drop the buffers written whole
                left -= iov[0].iov_len
                iov += 1
                nbufs -= 1
            if nbufs > 0:
                iov[0].iov_base = <void*>(<char*>iov[0].iov_base + left)
                iov[0].iov_len -= left
        # No retry after a failed fdatasync, EINTR included: Linux may have dropped
        # the dirty pages, so a second call could report success for lost data.
        if self._sync and c_fdatasync(self._fd) != 0:
            self._err = errno

    def __dealloc__(self):
        # Only reached when the thread is gone (it holds a reference while it runs).
        if self._req_fd >= 0:
            c_close(self._req_fd)
        if self._done_fd >= 0:
            c_close(self._done_fd)


cdef inline void _signal(int fd) noexcept nogil:
    cdef uint64_t one = 1
    while c_write(fd, &one, 8) < 0 and errno == EINTR:
        pass


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000LL + ts.tv_nsec
