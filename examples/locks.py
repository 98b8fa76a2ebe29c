"""A lock service: LockManager (leases + fencing tokens) on raft.embed.

    python examples/locks.py --cluster 3

starts 3 node processes; in each, a worker competes for the lock "job" with a short
lease, "works" while its lease is valid (renewing it), and releases it. Every new
holder gets a larger fencing token (the log index of its acquisition), which a
resource can use to refuse a paused old holder. Then this process SIGKILLs the node
holding the lock: another node gets it once its lease has expired (by the log's
clock), with a larger token.
"""
from __future__ import annotations

import asyncio
import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(_ROOT, "raft", "_core.*.so")) \
        or glob.glob(os.path.join(_ROOT, "raft", "_core.*.pyd")):
    sys.path.insert(0, _ROOT)   # a source checkout built in place; else the installed raft

from raft.embed import CallTimeout, EmbeddedNode, LockManager, NotLeader  # noqa: E402
from raft.embed.launch import example_main  # noqa: E402

LEASE_MS = 1500


async def work(node: EmbeddedNode) -> None:
    """Runs inside every node process: take the lock, hold it for a while, release."""
    locks: LockManager = node.machines["LockManager"]
    me = f"node{node.id}"
    await node.wait_leader(30)
    while True:
        try:
            lease = await locks.lease("job", me, LEASE_MS)
        except (CallTimeout, NotLeader):
            continue
        if lease is None:
            await asyncio.sleep(0.2)
            continue
        print(f"{me} holds 'job' with fencing token {lease.token}", flush=True)
        try:
            for _ in range(3):                      # work, renewing while the lease lives
                await asyncio.sleep(LEASE_MS / 3000)
                if not lease.valid:
                    break
                await locks.renew("job", me, lease.token, LEASE_MS)
            await locks.release("job", me, lease.token)
        except Exception as e:                       # lost it (expired): stop working
            print(f"{me} lost the lock: {e}", flush=True)
        await asyncio.sleep(0.3)


async def demo(client, cluster, args) -> None:
    tokens = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while loop.time() < deadline:                   # watch the lock change hands
        row = await client.query("LockManager", "holder", "job")
        if row and (not tokens or tokens[-1][1] != row[1]):
            tokens.append((row[0], row[1]))
            print(f"holder {row[0]}, token {row[1]}")
        await asyncio.sleep(0.05)
    row = None
    while not row:
        row = await client.query("LockManager", "holder", "job")
    victim = int(row[0][4:])
    print(f"SIGKILL node {victim}, which holds the lock (token {row[1]})")
    cluster.kill(victim)
    while True:
        try:
            new = await client.query("LockManager", "holder", "job")
        except CallTimeout:
            continue
        if new and new[0] != row[0]:
            print(f"after the lease expired: holder {new[0]}, token {new[1]} > {row[1]}")
            break
        await asyncio.sleep(0.05)
    assert all(a[1] < b[1] for a, b in zip(tokens, tokens[1:])), "tokens must increase"


if __name__ == "__main__":
    example_main(__doc__.splitlines()[0], LockManager, demo, work=work)
