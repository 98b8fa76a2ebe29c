"""Snapshot figures: KV snapshot/restore cost and size, DiskStorage save_snapshot /
compact / install_snapshot / open, and a lagging follower caught up by InstallSnapshot
in a 3-node in-process cluster (real TCP on 127.0.0.1, real DiskStorage).

    python benchmarks/bench_snapshot.py [--keys 10000,100000] [--catchup-keys 100000]
                                        [--durability none|fsync] [--dir DIR]

Figures in docs/storage.md and docs/operations.md come from this script.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from raft._core import Entry, HardState, Snapshot  # noqa: E402
from raft.kv import KVStateMachine, encode_command  # noqa: E402
from raft.storage import DiskStorage  # noqa: E402

VALUE_BYTES = 100


def kv_with(n: int) -> KVStateMachine:
    sm = KVStateMachine()
    for i in range(n):
        sm.apply(i + 1, encode_command(0, 0, [b"SET", b"key%d" % i, b"v" * VALUE_BYTES], time_ms=1))
    return sm


def storage_figures(n: int, directory: str) -> None:
    sm = kv_with(n)
    t = time.perf_counter()
    data = sm.snapshot()
    t_snap = time.perf_counter() - t
    t = time.perf_counter()
    KVStateMachine().restore(data)
    t_restore = time.perf_counter() - t
    d = tempfile.mkdtemp(dir=directory)
    try:
        s = DiskStorage(d, durability="fsync")
        s.save(HardState(1, 1, n), [Entry(i, 1, 0, b"x" * 120) for i in range(1, n + 1)])
        t = time.perf_counter()
        s.save_snapshot(Snapshot(n, 1, data))
        t_save = time.perf_counter() - t
        t = time.perf_counter()
        s.compact(n)
        t_compact = time.perf_counter() - t
        t = time.perf_counter()
        s.install_snapshot(Snapshot(n + 10, 2, data))
        t_install = time.perf_counter() - t
        s.close()
        t = time.perf_counter()
        with DiskStorage(d) as s:
            s.load()
        t_open = time.perf_counter() - t
    finally:
        shutil.rmtree(d)
    ms = 1000
    print(f"{n} keys x {VALUE_BYTES} B: snapshot {len(data) / 1e6:.2f} MB; kv.snapshot "
          f"{t_snap * ms:.0f} ms, kv.restore {t_restore * ms:.0f} ms; save_snapshot (fsync) "
          f"{t_save * ms:.0f} ms, compact {t_compact * ms:.0f} ms, install_snapshot "
          f"{t_install * ms:.0f} ms, open + load {t_open * ms:.0f} ms", flush=True)


def catchup_figure(n: int, durability: str, directory: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import pathlib

    import test_node as tn  # the in-process Cluster helper (needs redis-py)

    async def body(c):
        leader = await c.leader()
        r = c.redis(leader.id)
        fid = next(i for i in c.nodes if i != leader.id)
        await c.stop(fid)
        t = time.perf_counter()
        for lo in range(0, n, 2000):
            async with r.pipeline(transaction=False) as p:
                for i in range(lo, min(n, lo + 2000)):
                    p.set(f"key{i}", "v" * VALUE_BYTES)
                await p.execute()
        t_writes = time.perf_counter() - t
        await tn.wait_until(lambda: leader.counters["compactions"] >= 1, 60)
        snap = leader.core.snapshot
        t0 = time.perf_counter()
        await c.start(fid)
        node = c.nodes[fid]
        await tn.wait_until(lambda: node.applied_index >= leader.core.commit, 120)
        dt = time.perf_counter() - t0
        ls, fs = leader.last_snapshot, node.last_snapshot
        print(f"catch-up ({durability}): {n} keys written in {t_writes:.1f}s with the follower down; "
              f"leader's snapshot at index {snap.index} of {leader.core.commit}, "
              f"{len(snap.data) / 1e6:.1f} MB (kv.snapshot {ls.get('snapshot_seconds', 0):.3f}s, "
              f"saved in {ls.get('save_seconds', 0):.3f}s); the restarted follower applied the "
              f"leader's commit index {dt:.2f}s after start() (install: restore "
              f"{fs.get('restore_seconds', 0):.3f}s, save {fs.get('save_seconds', 0):.3f}s; "
              f"then {leader.core.commit - snap.index} entries by AppendEntries)", flush=True)

    d = pathlib.Path(tempfile.mkdtemp(dir=directory))
    try:
        tn.with_cluster(d, body, durability=durability, snapshot_threshold_bytes=4 << 20,
                        snapshot_trailing_entries=0)
    finally:
        shutil.rmtree(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", default="10000,100000")
    ap.add_argument("--catchup-keys", type=int, default=100_000)
    ap.add_argument("--durability", choices=("none", "fsync"), default="fsync")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    for n in (int(k) for k in args.keys.split(",") if k):
        storage_figures(n, args.dir)
    if args.catchup_keys:
        catchup_figure(args.catchup_keys, args.durability, args.dir)


if __name__ == "__main__":
    main()
