"""Wire codec benchmarks: run as a script to print figures, or with pytest-benchmark.

    python benchmarks/bench_codec.py [--quick]
    pytest benchmarks/bench_codec.py --benchmark-only

Workloads (batches as the transport builds them, one frame per batch):
1. AppendEntries of 64 entries x 100-byte payloads, 16 messages per frame.
2. Heartbeats (empty AppendEntries), 256 per frame.
3. Stream decoding: the AppendEntries frames concatenated and fed to a
   FrameDecoder in 64 KiB reads, as the transport does.
4. (script only) End to end through two PeerTransports on 127.0.0.1 with uvloop:
   AppendEntries sent in bursts of 16 (what a leader's Ready holds), bounded to a
   few seconds.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import asyncio
import socket
import sys

from raft import MSG_APP, Entry, Message
from raft.net.codec import FrameDecoder, decode, encode
from raft.net.transport import PeerTransport, new_event_loop

PAYLOAD = b"x" * 100
ENTRIES_PER_MSG = 64
APPENDS_PER_FRAME = 16
HEARTBEATS_PER_FRAME = 256
READ_SIZE = 64 * 1024


def make_appends(n: int) -> list[Message]:
    msgs, index = [], 0
    for i in range(n):
        ents = [Entry(index + k + 1, 3, 0, PAYLOAD) for k in range(ENTRIES_PER_MSG)]
        msgs.append(Message(MSG_APP, 1, 2, term=3, log_term=3, index=index, commit=index,
                            entries=ents, msg_id=i))
        index += ENTRIES_PER_MSG
    return msgs


def make_heartbeats(n: int) -> list[Message]:
    return [Message(MSG_APP, 1, 2, term=3, log_term=3, index=1000, commit=1000, msg_id=i)
            for i in range(n)]


def stream_decode(stream: bytes) -> int:
    dec = FrameDecoder()
    n = 0
    for i in range(0, len(stream), READ_SIZE):
        for batch in dec.feed(stream[i:i + READ_SIZE]):
            n += len(batch)
    return n


def best_rate(fn: Callable[[], object], units: int, repeat: int = 7,
              min_time: float = 0.2) -> tuple[float, float]:
    """(best, median) units per second over `repeat` samples of at least min_time each."""
    rates = []
    for _ in range(repeat):
        loops, start = 0, time.perf_counter()
        while True:
            fn()
            loops += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(units * loops / elapsed)
    return max(rates), statistics.median(rates)


async def _loopback(total_msgs: int, burst: int) -> float:
    """Messages/s from one PeerTransport to another over 127.0.0.1."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    got = 0
    done = asyncio.Event()

    def on_messages(msgs: list[Message]) -> None:
        nonlocal got
        got += len(msgs)
        if got >= total_msgs:
            done.set()
    secret = b"benchmark-cluster-secret-0123456789"
    a = PeerTransport(1, ("127.0.0.1", ports[0]), {2: ("127.0.0.1", ports[1])}, secret,
                      lambda msgs: None, max_buffered_bytes=64 << 20)
    b = PeerTransport(2, ("127.0.0.1", ports[1]), {1: ("127.0.0.1", ports[0])}, secret,
                      on_messages)
    await a.start()
    await b.start()
    try:
        async with asyncio.timeout(5):
            while not a.stats()["peers"][2]["connected"]:
                await asyncio.sleep(0.01)
        batch = make_appends(burst)
        start = time.perf_counter()
        sent = 0
        async with asyncio.timeout(30):
            while sent < total_msgs:
                a.send(batch)
                sent += burst
                # Yield like a node's loop would; back off when the socket is full.
                await asyncio.sleep(0 if a.stats()["buffered_bytes"] < (8 << 20) else 0.001)
            await done.wait()
        elapsed = time.perf_counter() - start
        assert a.stats()["messages_dropped"] == 0
        return total_msgs / elapsed
    finally:
        await a.close()
        await b.close()


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)  # a smoke run
    appends = make_appends(APPENDS_PER_FRAME)
    app_frame = encode(appends)
    beats = make_heartbeats(HEARTBEATS_PER_FRAME)
    hb_frame = encode(beats)
    stream = app_frame * 64
    n_ent = APPENDS_PER_FRAME * ENTRIES_PER_MSG
    rows = [
        ("encode AppendEntries 64x100B", lambda: encode(appends), APPENDS_PER_FRAME, n_ent),
        ("decode AppendEntries 64x100B", lambda: decode(app_frame), APPENDS_PER_FRAME, n_ent),
        ("stream-decode AppendEntries (64 KiB reads)", lambda: stream_decode(stream),
         64 * APPENDS_PER_FRAME, 64 * n_ent),
        ("encode heartbeats", lambda: encode(beats), HEARTBEATS_PER_FRAME, 0),
        ("decode heartbeats", lambda: decode(hb_frame), HEARTBEATS_PER_FRAME, 0),
    ]
    print(f"frame sizes: AppendEntries x{APPENDS_PER_FRAME} = {len(app_frame)} B "
          f"({len(app_frame) / APPENDS_PER_FRAME:.0f} B/msg), heartbeats x{HEARTBEATS_PER_FRAME} "
          f"= {len(hb_frame)} B ({len(hb_frame) / HEARTBEATS_PER_FRAME:.0f} B/msg)")
    for name, fn, msgs, ents in rows:
        best, median = best_rate(fn, msgs, *((1, 0.01) if quick else ()))
        extra = (f"  {best * ents / msgs / 1e6:6.2f} M entries/s"
                 f"  {best * len(app_frame) / APPENDS_PER_FRAME / 1e6:7.0f} MB/s") if ents else ""
        print(f"{name:45s} {best / 1e6:6.3f} M msgs/s (median {median / 1e6:.3f}){extra}")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        rate = runner.run(_loopback(total_msgs=2_000 if quick else 40_000,
                                    burst=APPENDS_PER_FRAME))
    print(f"{'loopback PeerTransport AppendEntries 64x100B':45s} {rate / 1e6:6.3f} M msgs/s"
          f"  {rate * ENTRIES_PER_MSG / 1e6:6.2f} M entries/s")


# --- pytest-benchmark -----------------------------------------------------------------

def test_encode_appends(benchmark):
    appends = make_appends(APPENDS_PER_FRAME)
    benchmark(encode, appends)


def test_decode_appends(benchmark):
    frame = encode(make_appends(APPENDS_PER_FRAME))
    out = benchmark(decode, frame)
    assert len(out) == APPENDS_PER_FRAME


def test_stream_decode_appends(benchmark):
    stream = encode(make_appends(APPENDS_PER_FRAME)) * 64
    assert benchmark(stream_decode, stream) == 64 * APPENDS_PER_FRAME


def test_encode_heartbeats(benchmark):
    benchmark(encode, make_heartbeats(HEARTBEATS_PER_FRAME))


def test_decode_heartbeats(benchmark):
    frame = encode(make_heartbeats(HEARTBEATS_PER_FRAME))
    assert len(benchmark(decode, frame)) == HEARTBEATS_PER_FRAME


if __name__ == "__main__":
    main()
