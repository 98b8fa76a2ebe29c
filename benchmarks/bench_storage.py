"""DiskStorage figures: durable append throughput with group commit, the
machine's raw write+fdatasync rate for comparison, sync latency by how a segment
makes room (append, zero-filled, fallocate), recovery time, cold reads.

    python benchmarks/bench_storage.py [--dir DIR] [--seconds S] [--recovery-entries N] [--quick]

Run it on the filesystem you care about (--dir); the temp dir is the default.
Figures in docs/storage.md come from this script. It imports the installed ``raft``
package (never the source tree, which has no compiled core after ``pip install .``);
``--quick`` is a few-second smoke run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from raft._core import Entry, HardState
from raft.storage import DiskStorage
from raft.storage.segment import CRC32C_NATIVE, RECORD_OVERHEAD

ENTRY_BYTES = 100


def raw_fdatasync_rate(directory: str, seconds: float, size: int = 128) -> float:
    """Appends of `size` bytes, each followed by fdatasync: the disk's sync rate,
    the ceiling for one-sync-per-save storage with batch size 1."""
    path = os.path.join(directory, "raw-sync-test")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    buf = b"x" * size
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, buf)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n / (time.perf_counter() - t0)


def _sync_latencies(path: str, mode: str, size: int, n: int, conn) -> None:
    """(child process) n writes of ``size`` bytes, each + fdatasync, into a file that is
    'append'ed, 'zero'-filled ahead (written zeros, synced) or 'fallocate'd ahead;
    sends the sorted latencies in ms."""
    room = max(1 << 20, size * n)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if mode == "zero":
            os.pwrite(fd, bytes(room), 0)
            os.fsync(fd)
        elif mode == "fallocate":
            os.posix_fallocate(fd, 0, room)
            os.fsync(fd)
        buf, lat = b"x" * size, []
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, buf, i * size)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t) * 1e3)
        conn.send(sorted(lat))
    finally:
        os.close(fd)
        os.unlink(path)


def preallocation(directory: str, size: int, n: int, procs: int = 3) -> dict:
    """p50 write+fdatasync latency (ms) of ``procs`` processes at once (a 3-node cluster
    on one disk) for each way of making room: why DiskStorage zero-fills ahead."""
    import multiprocessing as mp
    out = {}
    for mode in ("append", "zero", "fallocate"):
        pipes, workers = [], []
        for k in range(procs):
            here, there = mp.Pipe()
            w = mp.Process(target=_sync_latencies,
                           args=(os.path.join(directory, f"prealloc-{mode}-{k}"), mode, size, n, there))
            w.start()
            pipes.append(here)
            workers.append(w)
        lats = [p.recv() for p in pipes]
        for w in workers:
            w.join()
        out[f"{mode} p50 ms"] = f"{sorted(l[len(l) // 2] for l in lats)[procs // 2]:.3f}"
    return out


def append_throughput(directory: str, batch: int, seconds: float, durability: str) -> dict:
    path = tempfile.mkdtemp(dir=directory, prefix=f"append-{batch}-")
    payload = b"e" * ENTRY_BYTES
    try:
        with DiskStorage(path, durability=durability) as s:
            s.save(HardState(1, 1, 0), [Entry(1, 1, 0, payload)])  # create the segment first
            syncs0 = s.syncs
            nxt, saves, dt = 2, 0, 0.0
            wall = time.perf_counter()
            while time.perf_counter() - wall < seconds:
                # Entry objects are built by the core in a real node: not storage's cost.
                entries = [Entry(i, 1, 0, payload) for i in range(nxt, nxt + batch)]
                t0 = time.perf_counter()
                s.save(None, entries)
                dt += time.perf_counter() - t0
                nxt += batch
                saves += 1
            syncs = s.syncs - syncs0
        n = saves * batch
        return {"batch": batch, "durability": durability, "saves/s": saves / dt, "entries/s": n / dt,
                "MB/s payload": n * ENTRY_BYTES / dt / 1e6,
                "MB/s on disk": n * (ENTRY_BYTES + RECORD_OVERHEAD) / dt / 1e6,
                "syncs/s": syncs / dt, "seconds": dt}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_log(path: str, n: int, batch: int) -> None:
    payload = b"r" * ENTRY_BYTES
    with DiskStorage(path, durability="none") as s:
        for lo in range(1, n + 1, batch):
            s.save(HardState(1, 1, lo - 1) if lo == 1 else None,
                   [Entry(i, 1, 0, payload) for i in range(lo, min(lo + batch, n + 1))])
    # make it durable once, and drop nothing from the page cache: we measure
    # recovery's CPU cost (a cold cache adds the disk's read time on top)
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def recovery_time(directory: str, n: int, batch: int, repeats: int = 3) -> dict:
    path = tempfile.mkdtemp(dir=directory, prefix=f"recover-{batch}-")
    try:
        write_log(path, n, batch)
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        best = best_cpu = float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            with DiskStorage(path, durability="none") as s:
                st = s.load()
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            assert len(st.entries) == n and st.entries[-1].index == n
            del st
        # CPU time too: on a shared machine wall time includes waiting for a core
        return {"entries": n, "written in batches of": batch, "bytes": size,
                f"wall s (best of {repeats})": best, "cpu s": best_cpu, "entries/s (wall)": n / best}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cold_reads(directory: str, n: int = 200_000, chunk: int = 1000) -> dict:
    """entries() for ranges no longer in the cache: read back from segments."""
    path = tempfile.mkdtemp(dir=directory, prefix="cold-")
    try:
        write_log(path, n, 1024)
        with DiskStorage(path, durability="none", cache_bytes=0) as s:
            t0 = time.perf_counter()
            for lo in range(1, n + 1, chunk):
                s.entries(lo, min(lo + chunk, n + 1))
            dt = time.perf_counter() - t0
        return {"entries": n, "chunk": chunk, "entries/s": n / dt, "seconds": dt}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" if isinstance(v, int)
                     else f"{k} {v}" for k, v in d.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per append measurement")
    ap.add_argument("--recovery-entries", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="a few-second smoke run")
    args = ap.parse_args(argv)
    cold_entries = 200_000
    if args.quick:
        args.seconds, args.recovery_entries, cold_entries = 0.1, 5000, 5000
    directory = tempfile.mkdtemp(dir=args.dir, prefix="bench-storage-")
    try:
        print(f"# bench_storage: dir={directory} python={sys.version.split()[0]} "
              f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.1f} "
              f"crc32c native={CRC32C_NATIVE}")
        # The raw rate is measured before and after the durable appends: on a shared
        # or virtualised disk it drifts, and the bracket shows by how much.
        print(f"raw write(128B)+fdatasync loop, before: {raw_fdatasync_rate(directory, args.seconds):,.0f} /s")
        for batch in (1, 64, 1024):
            print(f"append {ENTRY_BYTES}B entries: " + fmt(append_throughput(directory, batch, args.seconds, "fsync")))
        print(f"raw write(128B)+fdatasync loop, after: {raw_fdatasync_rate(directory, args.seconds):,.0f} /s")
        for batch in (1, 64, 1024):
            print(f"append {ENTRY_BYTES}B entries: " + fmt(append_throughput(directory, batch, args.seconds, "none")))
        syncs = 100 if args.quick else 2000
        for size in (200, 4096):
            print(f"write({size}B)+fdatasync, 3 processes at once, by room: "
                  + fmt(preallocation(directory, size, syncs)))
        for batch in (1024, 64):
            print("recovery: " + fmt(recovery_time(directory, args.recovery_entries, batch)))
        print("cold reads: " + fmt(cold_reads(directory, cold_entries)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
