"""@replicated calls/s on 3 nodes: raft.embed (durability none and fsync) side by side
with PySyncObj's @replicated (its in-memory journal, and its file journal), in one run.

    raft bench --embedded                          # ~45 s; --secs, --levels to change
    python benchmarks/bench_embedded.py            # the same
    python benchmarks/bench_embedded.py --quick    # a few seconds
    python benchmarks/bench_embedded.py --json out.json

Each system runs as 3 processes on loopback; the leader's process drives the load
in-process (PySyncObj has no client protocol): ``L`` calls in flight (L coroutines
awaiting ``counter.incr()`` for us; a semaphore of L callback calls for PySyncObj),
for each L of the sweep, and each system is reported at its best L. A call counts
once its result is back (committed on a majority and applied).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

# The installed package (pip install .), as every benchmark here: no sys.path changes.
from raft.embed import Counter, EmbeddedNode
from raft.embed.launch import EmbedLocalCluster, serve
from raft.testing.pysyncobj import lead_or_wait
from raft.testing.pysyncobj import run_cluster as run_pso_cluster

DEFAULT_LEVELS = "1,16,64,256,1024,4096"
# How a node process of the benchmark is started: this module's child_main, from the
# installed package (the caller's working directory may be a source tree without the
# compiled core, so no ``-m``).
_CHILD = [sys.executable, "-c", "import sys; from raft.embed.bench import child_main; "
          "sys.exit(child_main(sys.argv[1:]))"]
DEFAULT_SECS = 1.0


# --- ours -------------------------------------------------------------------------------


async def _ours_work(node: EmbeddedNode) -> None:
    """In each node process: the leader drives the sweep and writes the figures."""
    out = os.environ["EMBED_BENCH_OUT"]
    levels = [int(x) for x in os.environ["EMBED_BENCH_LEVELS"].split(",")]
    secs = float(os.environ["EMBED_BENCH_SECS"])
    await node.wait_leader(30)
    if node.leader_id != node.id:
        return
    await node.read()              # a leader of a working majority
    counter = node.machines["Counter"]
    await counter.incr()           # opens the session
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {}
    for level in levels:
        done = 0
        stop = loop.time() + secs

        async def caller() -> None:
            nonlocal done
            while loop.time() < stop:
                await counter.incr()
                done += 1

        t0 = loop.time()
        await asyncio.gather(*(caller() for _ in range(level)))
        result[str(level)] = round(done / (loop.time() - t0), 1)
    with open(out + ".tmp", "w") as fp:
        json.dump(result, fp)
    os.replace(out + ".tmp", out)


def ours(durability: str, levels: str, secs: float, tmp: str) -> dict[str, Any]:
    out = os.path.join(tmp, f"ours-{durability}.json")
    os.environ.update(EMBED_BENCH_OUT=out, EMBED_BENCH_LEVELS=levels,
                      EMBED_BENCH_SECS=str(secs))
    cluster = EmbedLocalCluster(_CHILD + ["--ours-node"], 3,
                                directory=os.path.join(tmp, f"ours-{durability}"),
                                durability=durability, log_level="warning")
    try:
        cluster.start()
        return _wait_json(out, 30 + 2 * secs * len(levels.split(",")))
    finally:
        cluster.close(keep_dir=True)


# --- PySyncObj ----------------------------------------------------------------------------


def pso_node(me: str, others: list[str], out: str, levels: list[int], secs: float,
             journal: str) -> int:
    """One PySyncObj node: a @replicated counter; the leader drives the sweep."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class PCounter(SyncObj):
        def __init__(self) -> None:
            conf = SyncObjConf(journalFile=journal or None)
            super().__init__(me, others, conf)
            self.value = 0

        @replicated
        def incr(self) -> int:
            self.value += 1
            return self.value

    obj = PCounter()
    leads = lead_or_wait(obj, me, out, time.monotonic() + 30 + 2 * secs * len(levels))
    if leads is None:
        return 1
    if not leads:
        time.sleep(0.5)
        return 0
    obj.incr(sync=True, timeout=10)
    result: dict[str, Any] = {}
    for level in levels:
        inflight = threading.BoundedSemaphore(level)
        done = {"ok": 0, "failed": 0}

        def cb(_result: Any, err: Any) -> None:
            done["ok" if err == FAIL_REASON.SUCCESS else "failed"] += 1
            inflight.release()

        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            if inflight.acquire(timeout=5):
                obj.incr(callback=cb)
        for _ in range(level):
            if not inflight.acquire(timeout=10):
                break
        result[str(level)] = round(done["ok"] / (time.monotonic() - t0), 1)
        if done["failed"]:
            result[f"{level}_failed"] = done["failed"]
    with open(out + ".tmp", "w") as fp:
        json.dump(result, fp)
    os.replace(out + ".tmp", out)
    return 0


def pysyncobj(journal: bool, levels: str, secs: float, tmp: str) -> dict[str, Any]:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return {"skipped": "pysyncobj is not installed (pip install 'raft[bench]')"}
    name = "pso-journal" if journal else "pso-memory"
    out = os.path.join(tmp, f"{name}.json")

    def argv(i: int, me: str, others: str) -> list[str]:
        jfile = os.path.join(tmp, f"{name}-{i}.journal") if journal else ""
        return _CHILD + ["--pso-node", me, others, out, levels, str(secs), jfile]

    return run_pso_cluster(argv, out, 40 + 2 * secs * len(levels.split(",")), cwd=tmp)


def _wait_json(path: str, timeout: float, procs: list[Any] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline or (procs and all(p.poll() is not None for p in procs)):
            return {"skipped": "no result in time"}
        time.sleep(0.1)
    with open(path) as fp:
        return json.load(fp)


# --- report -------------------------------------------------------------------------------


def table(rows: dict[str, dict[str, Any]], levels: list[str]) -> str:
    head = "| system | " + " | ".join(f"{lv} in flight" for lv in levels) + " | best |"
    lines = [head, "|" + "---|" * (len(levels) + 2)]
    for name, r in rows.items():
        if "skipped" in r:
            lines.append(f"| {name} | {r['skipped']} |" + " |" * (len(levels)))
            continue
        vals = [r.get(lv) for lv in levels]
        best = max((v for v in vals if v is not None), default=0)
        lines.append(f"| {name} | " + " | ".join(f"{v:,.0f}" if v is not None else "n/a"
                                              for v in vals) + f" | **{best:,.0f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default=DEFAULT_LEVELS, help="calls in flight to sweep")
    p.add_argument("--secs", type=float, default=DEFAULT_SECS, help="seconds per level")
    p.add_argument("--json", help="write the figures here too")
    p.add_argument("--quick", action="store_true", help="a few seconds: levels 1,64, 0.3 s each")
    args = p.parse_args(argv)
    if args.quick:
        args.levels, args.secs = "1,64", 0.3
    levels = args.levels.split(",")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        for name, run in (
                ("raft.embed, durability=none", lambda: ours("none", args.levels, args.secs, tmp)),
                ("raft.embed, durability=fsync (fdatasync per batch)",
                 lambda: ours("fsync", args.levels, args.secs, tmp)),
                ("PySyncObj 0.3, in-memory journal",
                 lambda: pysyncobj(False, args.levels, args.secs, tmp)),
                ("PySyncObj 0.3, journalFile (mmap, never fsynced)",
                 lambda: pysyncobj(True, args.levels, args.secs, tmp))):
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows[name] = run()
    print(f"@replicated calls/s, 3 nodes on loopback, {os.cpu_count()} CPUs, "
          f"{args.secs}s per level")
    print(table(rows, levels))
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(rows, fp, indent=2)
    return 0


def child_main(argv: list[str]) -> int:
    """A node process of the benchmark (ours or PySyncObj's)."""
    if argv and argv[0] == "--ours-node":
        # EmbedLocalCluster appends --node-config PATH.
        serve(argv[argv.index("--node-config") + 1], Counter, _ours_work)
        return 0
    a = argv[1:]
    return pso_node(a[0], a[1].split(","), a[2], [int(x) for x in a[3].split(",")],
                    float(a[4]), a[5] if len(a) > 5 else "") or 0


if __name__ == "__main__":
    sys.exit(main())
