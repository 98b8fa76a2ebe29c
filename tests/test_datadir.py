"""Issue 15, item 6: a data directory deleted or replaced under a running node, and a
restart on an empty directory that held state before.

The follower used to keep acknowledging writes after its directory was deleted, exit
0 on SIGTERM, and come back at term 0 with no vote and an empty log (forgetting a
vote Raft requires to be durable). Now it fail-stops (CRITICAL, exit 1) and refuses
to restart on the empty directory unless started with ``raft serve --force-new``.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from raft import Entry, HardState
from raft.testing.cluster import LocalCluster
from raft.resp.probe import resp_command
from raft.storage.base import StorageError
from raft.storage.guard import DataDirLost, marker_path
from raft.storage.wal import DiskStorage


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- storage level ------------------------------------------------------------------


def test_deleted_directory_is_noticed_on_check_and_save(tmp_path) -> None:
    d = str(tmp_path / "node1")
    s = DiskStorage(d, durability="none", node_id=1)
    try:
        s.save(HardState(1, 1, 0), [Entry(1, 1, 0, b"a")])
        s.check_data_dir()                     # intact: no error
        shutil.rmtree(d)
        with pytest.raises(DataDirLost, match="was deleted"):
            s.check_data_dir()
        with pytest.raises(StorageError):
            s.save(HardState(2, 2, 0), [])     # unusable from now on
    finally:
        s.close()


def test_replaced_directory_is_noticed_before_the_save(tmp_path) -> None:
    d = str(tmp_path / "node1")
    s = DiskStorage(d, durability="none", node_id=1)
    try:
        s.save(HardState(1, 1, 0), [Entry(1, 1, 0, b"a")])
        os.rename(d, d + ".old")
        os.mkdir(d)
        with pytest.raises(DataDirLost, match="was (replaced|deleted)"):
            s.save(HardState(1, 1, 1), [Entry(2, 1, 0, b"b")])
    finally:
        s.close()


def test_empty_directory_with_a_marker_is_refused_unless_forced(tmp_path) -> None:
    d = str(tmp_path / "node1")
    s = DiskStorage(d, durability="none", node_id=1)
    assert not os.path.exists(marker_path(d))      # nothing durable yet: no marker
    s.save(HardState(1, 1, 0), [])
    assert os.path.exists(marker_path(d))          # marked with the first durable state
    s.close()
    DiskStorage(d, durability="none", node_id=1).close()      # state intact: fine
    shutil.rmtree(d)
    with pytest.raises(StorageError, match="--force-new"):
        DiskStorage(d, durability="none", node_id=1)
    s = DiskStorage(d, durability="none", node_id=1, force_new=True)
    assert s.load().hard_state == HardState()
    s.close()


def test_a_directory_marked_for_another_node_is_refused(tmp_path) -> None:
    d = str(tmp_path / "node1")
    s = DiskStorage(d, durability="none", node_id=1)
    s.save(HardState(1, 1, 0), [])
    s.close()
    with pytest.raises(StorageError, match="belongs to node 1"):
        DiskStorage(d, durability="none", node_id=2)


# --- real processes -----------------------------------------------------------------


def _log(c: LocalCluster, i: int) -> str:
    with open(c.nodes[i].log_path, errors="replace") as fp:
        return fp.read()


def _applied(c: LocalCluster, i: int) -> int:
    info = c.info(i, 2.0)
    return int(info["raft_applied_index"]) if info and "raft_applied_index" in info else -1


def test_follower_whose_data_dir_is_deleted_fail_stops_and_refuses_to_restart() -> None:
    with LocalCluster(3, durability="fsync", election_ticks=50) as c:
        c.start()
        leader = c.wait_for_leader(60)
        assert resp_command(*c.nodes[leader].client, "SET", "a", "1", timeout=10) == "OK"
        f = next(i for i in c.nodes if i != leader)
        node = c.nodes[f]
        shutil.rmtree(node.config.data_dir)
        wait_until(lambda: not node.running, 30, "the follower to stop by itself")
        assert node.proc is not None and node.proc.returncode == 1
        text = _log(c, f)
        assert "CRITICAL" in text and "was deleted while the node was running" in text
        # The cluster goes on without it.
        assert resp_command(*c.nodes[leader].client, "SET", "b", "2", timeout=10) == "OK"
        # Restarted on the now empty directory: refused, not a fresh voter at term 0.
        c.start(f)
        wait_until(lambda: not node.running, 30, "the restarted follower to refuse")
        assert node.proc.returncode == 1
        assert "--force-new" in _log(c, f)
        # The operator's explicit choice: it rejoins empty and catches up.
        plain = c.serve_command
        c.serve_command = lambda path: plain(path) + ["--force-new"]  # type: ignore[method-assign]
        c.start(f)
        c.serve_command = plain  # type: ignore[method-assign]
        target = _applied(c, leader)
        wait_until(lambda: _applied(c, f) >= target, 60, "the forced follower to catch up")
        assert node.running
