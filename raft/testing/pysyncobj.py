"""The PySyncObj side of the comparisons (``raft bench --compare``, ``raft bench
--embedded``): start a 3-process PySyncObj cluster and collect the result its leader
writes, and, inside each process, wait for the cluster and decide who drives the
load. PySyncObj has no client protocol, so the leader's process runs the load itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable

from raft.testing.cluster import free_ports, stop_process

__all__ = ["lead_or_wait", "run_cluster"]


def lead_or_wait(obj: Any, me: str, out: str, deadline: float) -> bool | None:
    """In a PySyncObj node process: wait until the cluster is ready with a leader.

    True: we lead, so drive the load and write ``out``. False: another node leads;
    returns once it has written ``out`` (or at ``deadline``). None: no leader by
    ``deadline``."""
    while not (obj.isReady() and obj._getLeader() is not None):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    if str(obj._getLeader()) == me:
        return True
    while not os.path.exists(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    return False


def run_cluster(argv_of: Callable[[int, str, str], list[str]], out: str, timeout: float, *,
                nodes: int = 3, cwd: str | None = None, pids_file: str | None = None,
                skipped: str = "no result in time") -> dict[str, Any]:
    """Start ``nodes`` PySyncObj processes on free 127.0.0.1 ports (node i runs
    ``argv_of(i, its address, the others' addresses joined by commas)``), wait up to
    ``timeout`` seconds for the leader's JSON result in ``out`` and return it, or
    ``{"skipped": skipped}``. Every process is stopped by PID before returning.
    ``pids_file``: where to write the children's PIDs (space-separated) first."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(nodes)]
    procs = []
    try:
        for i, a in enumerate(addrs):
            others = ",".join(x for x in addrs if x != a)
            procs.append(subprocess.Popen(argv_of(i, a, others), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          cwd=cwd))
        if pids_file is not None:
            with open(pids_file, "w") as fp:
                fp.write(" ".join(str(p.pid) for p in procs))
        deadline = time.monotonic() + timeout
        while not os.path.exists(out):
            if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                return {"skipped": skipped}
            time.sleep(0.1)
        with open(out) as fp:
            return json.load(fp)
    finally:
        for p in procs:
            stop_process(p, 5.0)
