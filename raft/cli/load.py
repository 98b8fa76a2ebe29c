"""The RESP load generator of ``raft bench`` and ``raft bench --compare``: ``clients``
connections (asyncio protocol + hiredis), each keeping ``pipeline`` requests in
flight, following ``-MOVED``, every latency in an HdrHistogram."""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BenchConfig", "LoadResult", "latency_summary", "new_histogram", "run_load",
           "run_load_sync"]

LAT_MAX_US = 120_000_000      # histogram range: 1 us .. 120 s
PLAN_LENGTH = 1 << 16         # requests drawn ahead from the seed, then cycled
_OK_REPLY = b"+OK\r\n"
_NULL_REPLY = b"$-1\r\n"
RETRY_ERRORS = (b"CLUSTERDOWN", b"TRYAGAIN")
DRAIN_TIMEOUT = 10.0          # seconds to wait for in-flight replies after the load
CONNECT_TIMEOUT = 5.0


# --- configuration and results --------------------------------------------------------


@dataclass
class BenchConfig:
    nodes: int = 3
    clients: int = 16
    pipeline: int = 8
    value_size: int = 100
    duration: float = 10.0
    durability: str = "fsync"
    read_ratio: float = 0.0
    keys: int = 10_000
    max_requests: int = 10_000_000
    trace: bool = True
    leader_timeout: float = 60.0
    seed: int = 1


@dataclass
class LoadResult:
    """What the client side saw. Latencies in microseconds."""
    seconds: float = 0.0
    writes: int = 0
    reads: int = 0
    sent: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    redirects: int = 0
    retries: int = 0
    errors: int = 0
    reconnects: int = 0
    error_samples: list[str] = field(default_factory=list)
    per_second: list[dict[str, float]] = field(default_factory=list)
    hist: Any = None          # HdrHistogram of every successful request
    write_hist: Any = None
    read_hist: Any = None
    # Latencies as measured, recorded into the histograms once the load is over
    # (finish_histograms): an append costs the load generator ~50 ns, a Python
    # HdrHistogram.record_value a few microseconds, and the generator shares the
    # machine's cores with the nodes it measures.
    write_us: array = field(default_factory=lambda: array("q"))
    read_us: array = field(default_factory=lambda: array("q"))

    def finish_histograms(self) -> None:
        for samples, hist in ((self.write_us, self.write_hist), (self.read_us, self.read_hist)):
            for us in samples:
                hist.record_value(us)
                self.hist.record_value(us)
        self.write_us, self.read_us = array("q"), array("q")

    @property
    def ok_ops(self) -> int:
        return self.writes + self.reads


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, LAT_MAX_US, 3)


def latency_summary(hist: Any) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean in microseconds (None when nothing was recorded)."""
    if hist is None or hist.get_total_count() == 0:
        return {k: None for k in ("p50", "p90", "p99", "p99.9", "max", "mean", "count")}
    pct = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
    out: dict[str, float | None] = {k: float(hist.get_value_at_percentile(v))
                                    for k, v in pct.items()}
    out["max"] = float(hist.get_max_value())
    out["mean"] = round(float(hist.get_mean_value()), 1)
    out["count"] = float(hist.get_total_count())
    return out


# --- the RESP load generator ---------------------------------------------------------


def encode_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Shared:
    """State all connections of one load run share (one event loop, no locks)."""

    def __init__(self, cfg: BenchConfig, deadline: float, result: LoadResult) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.result = result
        self.rng = random.Random(cfg.seed)
        self.value = b"v" * cfg.value_size
        self.stopping = False
        self.leader_addr: tuple[str, int] | None = None
        self._sets: dict[int, bytes] = {}
        self._gets: dict[int, bytes] = {}
        # The load generator shares the machine's cores with the nodes it measures:
        # the requests are drawn from the seed once, up front, and cycled; a window of
        # them is a slice of one blob, their kinds a slice of one bytes (1: a read).
        plan = [self._draw() for _ in range(min(PLAN_LENGTH, cfg.max_requests))]
        self._kinds = bytes(is_read for is_read, _ in plan)
        self._blob = b"".join(cmd for _, cmd in plan)
        self._starts = array("q", itertools.accumulate((len(cmd) for _, cmd in plan),
                                                       initial=0))
        self._plan_pos = 0
        #: A GET's reply once its key is set: every SET writes the same value.
        self.value_reply = b"$%d\r\n%s\r\n" % (len(self.value), self.value)

    def budget_left(self) -> bool:
        return (not self.stopping and self.result.sent < self.cfg.max_requests
                and time.monotonic() < self.deadline)

    def take(self, want: int) -> tuple[bytes, bytes]:
        """The next ``want`` requests of the plan: their kinds (1: a read) and their
        encoded commands (fewer once the budget is spent: ``max_requests``, the
        deadline, or the run stopping)."""
        if not self.budget_left():
            return b"", b""
        want = min(want, self.cfg.max_requests - self.result.sent)
        kinds, blob, starts = self._kinds, self._blob, self._starts
        pos, size = self._plan_pos, len(kinds)
        end = pos + want
        if end <= size:
            self._plan_pos = end % size
            return kinds[pos:end], blob[starts[pos]:starts[end]]
        kind_parts, data_parts = [], []
        while want > 0:            # across the end of the plan: it wraps
            end = min(size, pos + want)
            kind_parts.append(kinds[pos:end])
            data_parts.append(blob[starts[pos]:starts[end]])
            want -= end - pos
            pos = end % size
        self._plan_pos = pos
        return b"".join(kind_parts), b"".join(data_parts)

    def _draw(self) -> tuple[bool, bytes]:
        """(is_read, encoded command). Each key's SET and GET are encoded once."""
        k = self.rng.randrange(self.cfg.keys)
        if self.cfg.read_ratio > 0 and self.rng.random() < self.cfg.read_ratio:
            cmd = self._gets.get(k)
            if cmd is None:
                cmd = self._gets[k] = encode_command(b"GET", b"key:%d" % k)
            return True, cmd
        cmd = self._sets.get(k)
        if cmd is None:
            cmd = self._sets[k] = encode_command(b"SET", b"key:%d" % k, self.value)
        return False, cmd

    def note_error(self, text: str) -> None:
        self.result.errors += 1
        if len(self.result.error_samples) < 5:
            self.result.error_samples.append(text)


def _count_replies(res: LoadResult, kinds: bytes, start: int, end: int, elapsed_ns: int) -> None:
    """Successful replies to the requests ``kinds[start:end]`` of one window (sent
    together, answered in one chunk: one latency): counted, the latency kept once
    per request (microseconds, clamped to the histogram's range)."""
    us = min(max(1, elapsed_ns // 1000), LAT_MAX_US)
    reads = kinds.count(1, start, end)
    writes = end - start - reads
    if reads:
        res.reads += reads
        res.read_us.extend(itertools.repeat(us, reads))
    if writes:
        res.writes += writes
        res.write_us.extend(itertools.repeat(us, writes))


class _LoadProtocol(asyncio.Protocol):
    """One connection keeping ``pipeline`` requests in flight; replies come back in
    order, so a FIFO of the windows sent ([send time, kinds, how many answered])
    pairs them with their requests."""

    def __init__(self, shared: _Shared) -> None:
        import hiredis

        self.shared = shared
        self.reader = hiredis.Reader()
        self.inflight: deque[list[Any]] = deque()
        self.outstanding = 0           # requests sent and not answered
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.retry_pause = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(("lost", exc))

    def _fill(self) -> None:
        sh = self.shared
        want = sh.cfg.pipeline - self.outstanding
        if want <= 0 or self.transport is None or self.retry_pause:
            return
        kinds, data = sh.take(want)
        if kinds:
            self.inflight.append([time.perf_counter_ns(), kinds, 0])
            self.outstanding += len(kinds)
            sh.result.sent += len(kinds)
            sh.result.bytes_out += len(data)
            self.transport.write(data)
        elif not self.outstanding and not self.done.done():
            self.done.set_result(("finished", None))

    def data_received(self, data: bytes) -> None:
        sh = self.shared
        res = sh.result
        res.bytes_in += len(data)
        now = time.perf_counter_ns()
        if not self.reader.has_data():
            n = self._plain_replies(data)
            if 0 < n <= self.outstanding:
                self._answered(n, now)
                if not self.done.done():
                    self._fill()
                return
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            if not self.outstanding:
                sh.note_error(f"unexpected reply {reply!r:.60}")
                continue
            if isinstance(reply, Exception):
                self._answered(1, now, success=False)
                self._on_error(str(reply).encode())
                continue
            self._answered(1, now)
        if self.done.done():
            return
        self._fill()

    def _plain_replies(self, data: bytes) -> int:
        """The common chunk: how many replies it holds if it is nothing but whole
        ``+OK``, value (``_Shared.value_reply``) and null replies, counted without
        parsing each; else -1. "+" and "$" occur in them only as their first byte
        (the value is all "v"), and the second bytes differ ("O", a digit, "-"), so
        no two occurrences overlap: if their lengths add up to the chunk's, they
        tile it."""
        size = len(data)
        replies = data.count(_OK_REPLY)
        covered = replies * 5
        if covered != size:
            value_reply = self.shared.value_reply
            n = data.count(value_reply)
            replies += n
            covered += n * len(value_reply)
            if covered != size:
                n = data.count(_NULL_REPLY)
                replies += n
                covered += n * 5
        return replies if covered == size else -1

    def _answered(self, n: int, now: int, success: bool = True) -> None:
        """The next ``n`` requests in flight are answered (``success``: and counted)."""
        inflight, res = self.inflight, self.shared.result
        self.outstanding -= n
        while n:
            window = inflight[0]
            sent, kinds, start = window
            end = min(len(kinds), start + n)
            if success:
                _count_replies(res, kinds, start, end, now - sent)
            n -= end - start
            if end == len(kinds):
                inflight.popleft()
            else:
                window[2] = end

    def _on_error(self, text: bytes) -> None:
        sh = self.shared
        if text.startswith(b"MOVED"):
            if self.done.done():
                return            # the rest of this window's redirects: already moving
            sh.result.redirects += 1
            host, _, port = text.split()[-1].decode().rpartition(":")
            addr = (host.strip("[]"), int(port))
            sh.leader_addr = addr
            if not self.done.done():
                self.done.set_result(("moved", addr))
        elif text.startswith(RETRY_ERRORS):
            sh.result.retries += 1
            if not self.retry_pause:   # back off briefly, then refill the window
                self.retry_pause = True
                asyncio.get_running_loop().call_later(0.05, self._resume)
        else:
            sh.note_error(text.decode(errors="replace"))

    def _resume(self) -> None:
        self.retry_pause = False
        if not self.done.done():
            self._fill()


async def _one_client(shared: _Shared, addr: tuple[str, int]) -> None:
    """Run one connection until the budget is spent, following MOVED redirects."""
    loop = asyncio.get_running_loop()
    hops = 0
    while shared.budget_left() and hops < 50:
        try:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _LoadProtocol(shared), *addr), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            shared.note_error(f"connect {addr[0]}:{addr[1]}: {e}")
            await asyncio.sleep(0.1)
            hops += 1
            continue
        try:
            remaining = max(0.1, shared.deadline - time.monotonic()) + DRAIN_TIMEOUT
            try:
                why, detail = await asyncio.wait_for(asyncio.shield(proto.done), remaining)
            except asyncio.TimeoutError:
                why, detail = "timeout", None
        finally:
            transport.close()
        if why == "finished":
            return
        if why == "moved":
            addr = detail
        elif why == "timeout":
            shared.note_error(f"{proto.outstanding} replies outstanding after the drain timeout")
            return
        elif why == "lost" and shared.budget_left():
            shared.note_error(f"connection to {addr[0]}:{addr[1]} lost: {detail}")
            addr = shared.leader_addr or addr
            await asyncio.sleep(0.05)
        shared.result.reconnects += 1
        hops += 1


async def _sample_progress(shared: _Shared, start: float, on_tick: Any) -> None:
    """Once per 0.25 s: progress callback; once per second: a throughput sample."""
    res = shared.result
    last_t, last_ops, next_sample = start, 0, start + 1.0
    while True:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        if on_tick is not None:
            on_tick(now - start, res.ok_ops)
        if now >= next_sample:
            res.per_second.append({"t": round(now - start, 2),
                                   "ops_per_s": (res.ok_ops - last_ops) / (now - last_t)})
            last_t, last_ops, next_sample = now, res.ok_ops, next_sample + 1.0


async def run_load(addrs: list[tuple[str, int]], cfg: BenchConfig,
                   on_tick: Any = None) -> LoadResult:
    """Drive the workload against ``addrs`` (clients spread round-robin); bounded by
    ``cfg.duration`` and ``cfg.max_requests`` plus DRAIN_TIMEOUT for the last replies."""
    result = LoadResult(hist=new_histogram(), write_hist=new_histogram(),
                        read_hist=new_histogram())
    start = time.monotonic()
    shared = _Shared(cfg, start + cfg.duration, result)
    sampler = asyncio.create_task(_sample_progress(shared, start, on_tick))
    clients = [asyncio.create_task(_one_client(shared, addrs[i % len(addrs)]))
               for i in range(cfg.clients)]
    try:
        await asyncio.wait_for(asyncio.gather(*clients),
                               cfg.duration + DRAIN_TIMEOUT + CONNECT_TIMEOUT + 5)
    except asyncio.TimeoutError:
        shared.note_error("the load did not finish in time")
    finally:
        shared.stopping = True
        sampler.cancel()
        for t in clients:
            t.cancel()
        await asyncio.gather(sampler, *clients, return_exceptions=True)
    result.seconds = time.monotonic() - start
    result.finish_histograms()
    return result


def run_load_sync(addrs: list[tuple[str, int]], cfg: BenchConfig,
                  on_tick: Any = None) -> LoadResult:
    from raft.net.transport import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_load(addrs, cfg, on_tick))
