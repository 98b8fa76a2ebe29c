"""raft.embed across processes: 3 node processes run a user state machine; a client
in this process streams @replicated calls while the leader is SIGKILLed. No
acknowledged call is lost, none is applied twice, and a retried call (same session
and seq) returns its first result."""
from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys

import pytest

from embed_cluster import run
from raft.embed.launch import EmbedLocalCluster, wait_for_leader

NODE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embed_proc_node.py")


def test_leader_sigkill_during_a_stream_of_calls(tmp_path):
    seed = int(os.environ.get("EMBED_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    total = 300
    kill_after = rng.randrange(60, 150)
    in_flight = rng.choice([4, 8, 16])
    cluster = EmbedLocalCluster([sys.executable, NODE_SCRIPT], 3, directory=str(tmp_path),
                                durability="fsync", log_level="warning")

    async def main() -> None:
        client = cluster.client(timeout=30.0)
        try:
            first_leader = await wait_for_leader(client)
            acked: dict[int, int] = {}        # value -> position the call returned
            seqs: dict[int, int] = {}         # value -> its seq in the session
            sess = await client.open_session()
            todo = list(range(total))
            # Calls we will retry as if their answer had been lost: the client keeps
            # them unacknowledged (the lowest outstanding seq rides along in every
            # call, diss. §6.3), so the state machine keeps their outcomes.
            retried = set(rng.sample(range(20), 5))
            killed = asyncio.Event()

            async def worker() -> None:
                while todo:
                    x = todo.pop(0)
                    seq = sess.begin()
                    seqs[x] = seq
                    try:
                        acked[x] = await client.invoke("Journal", "add", [x], {}, seq=seq)
                    finally:
                        if x not in retried:
                            sess.end(seq)
                    if len(acked) >= kill_after and not killed.is_set():
                        killed.set()
                        cluster.kill(first_leader)     # SIGKILL, by pid, mid-stream

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            assert killed.is_set()
            assert client.retries > 0, "no call was retried: the kill did not hit the stream"
            new_leader = await wait_for_leader(client)
            assert new_leader != first_leader
            items = await client.query("Journal", "all")
            assert len(items) == len(set(items)), "a call was applied twice"
            assert sorted(items) == list(range(total)), "an acknowledged call was lost"
            for x, pos in acked.items():
                assert items[pos - 1] == x, (x, pos)
            # Retry calls answered before the kill (by the old leader): each returns its
            # first result and applies nothing.
            for x in sorted(retried):
                again = await client.invoke("Journal", "add", [x], {}, seq=seqs[x])
                assert again == acked[x]
                sess.end(seqs[x])
            assert len(await client.query("Journal", "all")) == total
        finally:
            await client.close()

    try:
        cluster.start()
        run(main(), limit=120)
    except BaseException:
        print(f"seed={seed} kill_after={kill_after} in_flight={in_flight} "
              f"(rerun with EMBED_SEED={seed}); logs in {tmp_path}")
        for n in cluster.nodes.values():
            if os.path.exists(n.log_path):
                print(f"--- node {n.id} log tail ---")
                print(open(n.log_path).read()[-3000:])
        raise
    finally:
        cluster.close(keep_dir=True)


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.mark.parametrize("script, expect", [
    ("counter.py", "counter = 300"),
    ("log_consumer.py", "node 1 consumed 20 entries"),
    ("locks.py", "after the lease expired: holder"),
])
def test_examples_run_as_three_processes(tmp_path, script, expect):
    """Each example starts its 3-process cluster in one command and does its job."""
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), "--cluster", "3",
                          "--durability", "none", "--dir", str(tmp_path / "cluster")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert expect in out.stdout, out.stdout + out.stderr
