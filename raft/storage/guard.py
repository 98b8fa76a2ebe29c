"""Notice a data directory deleted or replaced under a running node, and refuse to
restart a node whose durable state is gone (issue 15, item 6).

Raft's safety rests on a node never forgetting its term, its vote and the entries it
acknowledged (Figure 2, "persistent state"; §5.2: one vote per term). Two ways to
lose them without any error:

* The directory is deleted (or moved away and replaced by an empty one) while the
  node runs. Its open file descriptors keep working on the unlinked files, so it
  goes on voting and acknowledging writes that no longer exist anywhere, and a
  restart finds an empty directory. ``DataDirGuard`` holds the directory open and
  compares its (st_dev, st_ino) and the LOCK file's with what the path names now:
  on every ``save()`` and periodically from the node's tick loop. A mismatch raises
  ``DataDirLost``: the node stops (fail-stop, as etcd and TigerBeetle do on storage
  faults) before it promises anything more.
* The node is restarted on an empty directory: it would come up at term 0 with no
  vote and an empty log and join as a fresh voter, which can vote twice in a term
  or help elect a leader that lacks committed entries. Once the directory first
  holds durable state, a marker file is written *next to* it
  (``<data_dir>.initialized``, naming the node id), where deleting the directory does
  not remove it. Opening an empty directory whose marker exists is refused unless
  the operator says ``raft serve --force-new`` (docs/operations.md).
"""
from __future__ import annotations

import os

from raft.storage import fileio
from raft.storage.base import StorageError

__all__ = ["DataDirGuard", "DataDirLost", "marker_path"]

MARKER_SUFFIX = ".initialized"


class DataDirLost(StorageError):
    """The data directory (or its LOCK file) was deleted or replaced while open."""


def marker_path(data_dir: str) -> str:
    """``<data_dir>.initialized``: beside the directory, so deleting it keeps the marker."""
    return os.path.normpath(os.path.abspath(data_dir)) + MARKER_SUFFIX


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class DataDirGuard:
    """Holds ``path`` open and checks that the path still names that directory, and
    that ``path/LOCK`` is still the file ``lock_fd`` holds."""

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_path = os.path.join(path, "LOCK")
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dir = _ident(os.fstat(self._fd))
        self._lock = _ident(os.fstat(lock_fd))

    def check(self) -> None:
        """Raise DataDirLost if the directory or its LOCK file is gone or replaced."""
        if self._fd < 0:
            return
        for what, path, expected in (("data directory", self.path, self._dir),
                                     ("LOCK file", self._lock_path, self._lock)):
            try:
                now = _ident(os.stat(path))
            except FileNotFoundError:
                raise DataDirLost(f"the {what} {path} was deleted while the node was running: "
                                  f"its durable state (term, vote, log) is gone") from None
            if now != expected:
                raise DataDirLost(f"the {what} {path} was replaced while the node was running "
                                  f"(inode {expected[1]} is now {now[1]}): its durable state "
                                  f"(term, vote, log) is not the one this node holds")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def check_marker(data_dir: str, node_id: int | None, empty: bool, force_new: bool) -> None:
    """Before using a data directory: refuse an empty one whose marker says it held
    state (unless ``force_new``), and one marked for another node id."""
    path = marker_path(data_dir)
    try:
        with open(path, encoding="utf-8") as fp:
            text = fp.read()
    except FileNotFoundError:
        return
    marked = _marked_id(text)
    if node_id is not None and marked is not None and marked != node_id and not empty:
        raise StorageError(f"{data_dir} belongs to node {marked} (marker {path}), not node "
                           f"{node_id}: check data_dir in the config")
    if empty and not force_new:
        raise StorageError(
            f"{data_dir} is empty, but node {marked if marked is not None else '?'} kept its "
            f"durable state there before ({path} exists): its term, vote and log are lost. "
            f"Raft needs them (a node that forgot its vote can vote twice in one term; one that "
            f"forgot its log can help elect a leader missing committed entries). Restore the "
            f"directory from a backup, or, if you accept that risk (e.g. the rest of the cluster "
            f"is healthy and this node's vote is not needed to decide anything), start it with "
            f"`raft serve --force-new`")


def write_marker(data_dir: str, node_id: int | None) -> None:
    """Durably create the marker (temp file, fsync, rename, fsync of the parent)."""
    path = marker_path(data_dir)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fp:
        fp.write(f"node_id = {node_id if node_id is not None else 0}\n"
                 f"# raft: {data_dir} holds this node's durable state; see docs/operations.md\n")
        fp.flush()
        fileio.fsync(fp.fileno())
    fileio.replace(tmp, path)
    fileio.fsync_dir(os.path.dirname(path) or ".")


def _marked_id(text: str) -> int | None:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "node_id":
            try:
                return int(value.strip()) or None
            except ValueError:
                return None
    return None
