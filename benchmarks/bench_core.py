"""Core benchmarks (no IO): run as a script to print figures, or with pytest-benchmark.

    python benchmarks/bench_core.py [--quick]
    pytest benchmarks/bench_core.py --benchmark-only

1. Follower AppendEntries handling: batches of 64 entries of 100 bytes
   (step + ready + advance per message). Target: >= 2,000,000 entries/s.
2. A 3-node cluster in one process, instant lossless network, no disk:
   sustained commits per second with batching. Target: >= 500,000 entries/s.
"""
from __future__ import annotations

import statistics
import sys
import time

from raft import MSG_APP, Entry, Message, RawNode

PAYLOAD = b"x" * 100


def make_appends(n_msgs: int, batch: int = 64) -> list[Message]:
    msgs, index = [], 0
    for _ in range(n_msgs):
        ents = [Entry(index + k + 1, 1, 0, PAYLOAD) for k in range(batch)]
        msgs.append(Message(MSG_APP, src=1, dst=2, term=1, index=index,
                            log_term=1 if index else 0, entries=ents, commit=index))
        index += batch
    return msgs


def follower_append(msgs: list[Message]) -> int:
    node = RawNode(2, [1, 2, 3], seed=1)
    for m in msgs:
        node.step(m)
        node.advance(node.ready())
    return node.last_index


def run_cluster(total: int, batch: int = 512) -> int:
    """Propose `total` entries in batches on a 3-node cluster; return entries applied by the leader."""
    nodes = {i: RawNode(i, [1, 2, 3], seed=i) for i in (1, 2, 3)}
    leader = nodes[1]
    leader.campaign()
    inbox: list[Message] = []
    applied = 0

    def pump() -> None:
        nonlocal applied
        while True:
            progressed = False
            for n in nodes.values():
                if n.has_ready():
                    rd = n.ready()
                    inbox.extend(rd.messages)
                    inbox.extend(rd.messages_after_persist)   # "persisted" instantly
                    if n is leader:
                        applied += len(rd.committed_entries)
                    n.advance(rd)
                    progressed = True
            if inbox:
                batch_msgs = inbox[:]
                inbox.clear()
                for m in batch_msgs:
                    nodes[m.dst].step(m)
                progressed = True
            if not progressed:
                return

    pump()
    proposals = [PAYLOAD] * batch
    for _ in range(total // batch):
        leader.propose_batch(proposals)
        pump()
    return applied


def _measure(fn, *args, repeat: int = 5) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)  # a smoke run
    n_msgs = 100 if quick else 2000
    msgs = make_appends(n_msgs)
    n_entries = n_msgs * 64
    t = statistics.median(_measure(follower_append, msgs))
    print(f"follower AppendEntries (64 x 100 B per message): {n_entries / t:,.0f} entries/s "
          f"(median of 5; target 2,000,000)")
    total = 5000 if quick else 200_000
    t = statistics.median(_measure(run_cluster, total))
    print(f"3-node in-process cluster, no disk, batches of 512: {total / t:,.0f} commits/s "
          f"(median of 5; target 500,000)")


# -- pytest-benchmark entry points --

def test_follower_append(benchmark):
    msgs = make_appends(500)
    benchmark.extra_info["entries"] = 500 * 64
    last = benchmark(follower_append, msgs)
    assert last == 500 * 64
    print(f"\nfollower: {500 * 64 / benchmark.stats.stats.median:,.0f} entries/s")


def test_cluster_commits(benchmark):
    total = 50_000
    applied = benchmark(run_cluster, total)
    assert applied >= total
    print(f"\n3-node cluster: {total / benchmark.stats.stats.median:,.0f} commits/s")


if __name__ == "__main__":
    main()
