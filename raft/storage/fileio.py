"""The storage layer's durability calls in one place, so that tests can watch and break them.

Every call that decides what survives a power loss -- fsync/fdatasync of a file or a
directory, rename/replace, unlink, ftruncate -- goes through this module (wal.py,
snapshot.py, guard.py). In production these are the ``os`` functions plus one
dictionary check. Two TEST-ONLY facilities hang off them, both off by default:

**Power-loss journal** (``[debug] power_loss``; ``record_durability``). SIGKILL keeps
the page cache, so a killed process loses nothing it wrote: a kill cannot tell
``durability = "fsync"`` from ``"none"``. The journal records, as the node runs, what
the disk has really been told to keep (LazyFS's model: a file's content is durable up to
its last fsync/fdatasync; a directory's entries -- creations, renames, unlinks -- up to
the last fsync of the directory). After the node is killed, ``simulate_power_loss``
rolls the data directory back to exactly that: files not yet in a synced directory
listing vanish, renamed or unlinked names come back, and every file is cut to its last
synced length. It relies on the WAL's files being append-only (what a write adds is a
suffix; the only shrinking is ftruncate, which the WAL always syncs at once and this
model treats as immediate) -- or, for a preallocated segment (zero-filled and synced
before the WAL writes into it), on the WAL saying where its data ends at each sync
(``fdatasync(fd, data_end)``): past that point the durable content is the zeros, so
the rollback zero-fills it. Inodes that an unlink or a replacing rename would free are
kept alive by a hard link in a graveyard beside the data directory until the rollback.

**Failpoints** (``[debug] failpoints``; ``enable_failpoints``), as etcd's gofail: named
points in the storage code (``FAILPOINTS``) that can be made slow (``sleep(MS)``) or
fail (``error``: an EIO ``OSError``, which makes the node fail-stop) while it runs.
They are read from a control file beside the data directory, polled as the node
runs (``write_failpoints`` replaces it atomically).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import threading
import time

from raft.errors import RaftError

__all__ = ["fsync", "fdatasync", "note_fdatasync", "failpoints_enabled", "fsync_dir", "rename", "replace", "unlink", "ftruncate",
           "failpoint", "FAILPOINTS", "record_durability", "stop_recording",
           "simulate_power_loss", "powerloss_dir", "enable_failpoints", "disable_failpoints",
           "failpoints_path", "write_failpoints", "set_failpoints", "PowerLossError"]

#: The named failpoints and where they sit.
FAILPOINTS = {
    "wal.write": "before a WAL batch is written (wal.py DiskStorage.save)",
    "wal.sync": "before a WAL batch is fdatasync'ed",
    "snapshot.write": "before a snapshot file is written (snapshot.py write_snapshot)",
}


class PowerLossError(RaftError):
    """The power-loss rollback cannot rebuild the durable state (a file went away
    without passing through this module)."""


# --------------------------------------------------------------------- failpoints

# name -> action; replaced whole (never mutated) so the disk thread reads it safely.
_failpoints: dict[str, tuple[str, float]] = {}
_ACTION = re.compile(r"^(off|error|sleep\((\d+(?:\.\d+)?)\))$")
_control: "_ControlFile | None" = None    # None: failpoints disabled (production)


def failpoints_enabled() -> bool:
    """True while failpoints are enabled (then every storage write takes the path
    that passes them: wal.py begin_save)."""
    return _control is not None


def failpoint(name: str) -> None:
    """Run the action armed at ``name``, if any (disabled: one global check)."""
    if _control is None:
        return
    _control.poll()
    action = _failpoints.get(name)
    if action is None:
        return
    kind, ms = action
    if kind == "sleep":
        time.sleep(ms / 1000.0)
    elif kind == "error":
        raise OSError(errno.EIO, f"failpoint {name}: injected I/O error")


def parse_failpoints(text: str) -> dict[str, tuple[str, float]]:
    """``name=action`` lines (``#`` comments); actions ``off``, ``error``, ``sleep(MS)``."""
    armed: dict[str, tuple[str, float]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, action = (s.strip() for s in line.partition("="))
        if name not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(FAILPOINTS)}")
        m = _ACTION.match(action)
        if m is None:
            raise ValueError(f"failpoint {name}: bad action {action!r} (off, error, sleep(MS))")
        if m.group(1) != "off":
            armed[name] = ("sleep", float(m.group(2))) if m.group(2) else ("error", 0.0)
    return armed


def set_failpoints(text: str) -> None:
    """Arm the failpoints ``text`` names (and disarm every other)."""
    global _failpoints
    _failpoints = parse_failpoints(text)


def failpoints_path(data_dir: str) -> str:
    """The control file of the node whose data directory is ``data_dir``."""
    return os.path.abspath(data_dir).rstrip("/") + ".failpoints"


def write_failpoints(data_dir: str, text: str) -> None:
    """Replace a node's control file atomically (for the tool that arms them)."""
    parse_failpoints(text)          # refuse a bad file here, not in the node
    path = failpoints_path(data_dir)
    with open(path + ".tmp", "w", encoding="utf-8") as fp:
        fp.write(text)
    os.replace(path + ".tmp", path)


class _ControlFile:
    """The control file, re-read when its (mtime, size) changes, checked at most every
    POLL seconds (no signal: one sent before the handler is installed kills the node)."""

    POLL = 0.05

    def __init__(self, path: str, log=None) -> None:
        self.path, self.log = path, log
        self._seen: tuple[int, int] | None = None
        self._next = 0.0
        self._lock = threading.Lock()

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        with self._lock:
            self._next = now + self.POLL
            try:
                st = os.stat(self.path)
                seen = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                seen = None
            if seen == self._seen:
                return
            self._seen = seen
            self._reload(seen is not None)

    def _reload(self, exists: bool) -> None:
        try:
            if exists:
                with open(self.path, encoding="utf-8") as fp:
                    set_failpoints(fp.read())
            else:
                set_failpoints("")
        except (OSError, ValueError) as e:
            if self.log is not None:
                self.log.error("failpoints: %s: %s (unchanged)", self.path, e)
            return
        if self.log is not None:
            self.log.warning("failpoints (TEST ONLY) armed: %s",
                             ", ".join(f"{k}={a}" for k, (a, _) in sorted(_failpoints.items()))
                             or "none")


def enable_failpoints(data_dir: str, log=None) -> str:
    """Arm failpoints from ``failpoints_path(data_dir)`` from now on (TEST ONLY)."""
    global _control
    _control = _ControlFile(failpoints_path(data_dir), log)
    _control.poll()
    return _control.path


def disable_failpoints() -> None:
    global _control, _failpoints
    _control, _failpoints = None, {}


# --------------------------------------------------------------------- power-loss journal

class _Journal:
    """What the disk has been told to keep under one data directory, as journal lines:

        D <reldir>\\t<json {name: inode}>   the directory's entries, durable from here on
        F <inode> <size>                  the file's first <size> bytes are durable
        Z <inode> <size> <end>            as F, but only the first <end> bytes as now
                                          written: the rest is still the synced zeros
        T <inode> <size>                  the file was cut to <size> (treated as durable)
        B                                 the baseline (everything present at start) is complete

    The journal itself is written unsynced: it only has to survive SIGKILL (the page
    cache does), not the power loss it describes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = powerloss_dir(root)
        self.grave = os.path.join(self.dir, "grave")
        os.makedirs(self.grave, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(os.path.join(self.dir, "journal"),
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        # Whatever is on disk now is the baseline: make it really durable first.
        os.sync()
        for d, dirs, files in os.walk(root):
            self.dir_synced(d)
            for name in files:
                path = os.path.join(d, name)
                st = os.lstat(path)
                if name.endswith(".wal"):
                    # A segment may end in preallocated zeros: what a restarted node
                    # writes into them is durable only once synced, as any write.
                    with open(path, "rb") as fp:
                        end = len(fp.read().rstrip(b"\0"))
                    self._write(f"Z {st.st_ino} {st.st_size} {end}")
                else:
                    self._write(f"F {st.st_ino} {st.st_size}")
        self._write("B")

    def _write(self, line: str) -> None:
        with self._lock:
            os.write(self._fd, (line + "\n").encode())

    def dir_synced(self, path: str) -> None:
        listing = {}
        with os.scandir(path) as it:
            for e in it:
                listing[e.name + ("/" if e.is_dir(follow_symlinks=False) else "")] = e.inode()
        rel = os.path.relpath(path, self.root)
        self._write(f"D {rel}\t{json.dumps(listing, sort_keys=True)}")

    def file_synced(self, fd: int, data_end: int | None = None) -> None:
        st = os.fstat(fd)
        if data_end is None:
            self._write(f"F {st.st_ino} {st.st_size}")
        else:
            self._write(f"Z {st.st_ino} {st.st_size} {data_end}")

    def truncated(self, fd: int, size: int) -> None:
        self._write(f"T {os.fstat(fd).st_ino} {size}")

    def keep_inode(self, path: str) -> None:
        """Keep ``path``'s inode alive: an unlink or a replacing rename that the power
        loss undoes needs its content back."""
        if os.path.lexists(path):
            _link_into(path, self.grave)

    def close(self) -> None:
        os.close(self._fd)


_journals: dict[str, _Journal] = {}    # data dir (absolute) -> journal


def powerloss_dir(data_dir: str) -> str:
    """Where the journal and the graveyard of ``data_dir`` live (beside it, on the same
    file system, so hard links work)."""
    return os.path.abspath(data_dir).rstrip("/") + ".powerloss"


def record_durability(data_dir: str) -> None:
    """Start journaling ``data_dir`` (TEST ONLY; syncs the whole machine once)."""
    root = os.path.abspath(data_dir)
    if root not in _journals:
        _journals[root] = _Journal(root)


def stop_recording(data_dir: str) -> None:
    j = _journals.pop(os.path.abspath(data_dir), None)
    if j is not None:
        j.close()


def _journal_of(path: str) -> _Journal | None:
    for root, j in _journals.items():
        if path == root or path.startswith(root + "/"):
            return j
    return None


def _path_of_fd(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _journal_of_fd(fd: int) -> _Journal | None:
    path = _path_of_fd(fd)
    return _journal_of(path) if path is not None else None


# --------------------------------------------------------------------- the calls

def fsync(fd: int) -> None:
    os.fsync(fd)
    if _journals:
        _note_sync(fd)


def fdatasync(fd: int, data_end: int | None = None) -> None:
    """``data_end``: the file was preallocated (zero-filled and synced) and its data
    ends there; what lies beyond is still zeros (for the power-loss journal)."""
    os.fdatasync(fd)
    if _journals:
        _note_sync(fd, data_end)


def note_fdatasync(fd: int, data_end: int | None = None) -> None:
    """An fdatasync of ``fd`` made elsewhere (the WAL's writer thread, which runs
    without the GIL) succeeded: tell the power-loss journal, as fdatasync() does."""
    if _journals:
        _note_sync(fd, data_end)


def _note_sync(fd: int, data_end: int | None = None) -> None:
    path = _path_of_fd(fd)
    j = _journal_of(path) if path is not None else None
    if j is None:
        return
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        j.dir_synced(path)
    else:
        j.file_synced(fd, data_end)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def rename(src: str, dst: str) -> None:
    if _journals:
        _keep(dst)
    os.rename(src, dst)


def replace(src: str, dst: str) -> None:
    if _journals:
        _keep(dst)
    os.replace(src, dst)


def unlink(path: str) -> None:
    if _journals:
        _keep(path)
    os.unlink(path)


def ftruncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)
    if _journals:
        j = _journal_of_fd(fd)
        if j is not None:
            j.truncated(fd, size)


def _keep(path: str) -> None:
    j = _journal_of(os.path.abspath(path))
    if j is not None:
        j.keep_inode(path)


# --------------------------------------------------------------------- the power loss

def _read_journal(path: str) -> tuple[dict[str, dict[str, int]], dict[int, int],
                                       dict[int, int], bool]:
    """The durable listings and sizes, where a preallocated file's durable data
    ends (zeros after it), and whether the baseline was complete."""
    listings: dict[str, dict[str, int]] = {}
    sizes: dict[int, int] = {}
    data_ends: dict[int, int] = {}
    baseline = False
    with open(path, encoding="utf-8") as fp:
        for line in fp:
            if not line.endswith("\n"):
                break           # a line cut by the kill: the sync it names never returned
            kind, rest = line[0], line[2:-1]
            if kind == "B":
                baseline = True
            elif kind == "D":
                rel, _, listing = rest.partition("\t")
                listings[rel] = json.loads(listing)
            elif kind in "FT":
                ino, size = map(int, rest.split())
                sizes[ino] = size if kind == "F" else min(size, sizes.get(ino, size))
                if kind == "F":
                    data_ends.pop(ino, None)
            elif kind == "Z":
                ino, size, end = map(int, rest.split())
                sizes[ino], data_ends[ino] = size, end
    return listings, sizes, data_ends, baseline


def simulate_power_loss(data_dir: str) -> dict[str, int]:
    """Roll ``data_dir`` back to what its (killed) node had made durable, then drop the
    journal. Returns counts of what was undone. The node must not be running."""
    root = os.path.abspath(data_dir)
    pdir = powerloss_dir(root)
    undone = {"removed": 0, "restored": 0, "truncated_bytes": 0, "zeroed_bytes": 0}
    journal = os.path.join(pdir, "journal")
    listings, sizes, data_ends, baseline = (_read_journal(journal) if os.path.exists(journal)
                                            else ({}, {}, {}, False))
    if not baseline:
        # Killed before its journal's baseline was complete: the node had not opened
        # its storage yet (it journals first), and the last rollback, or the baseline's
        # own sync, left everything durable. Nothing to undo.
        shutil.rmtree(pdir, ignore_errors=True)
        return undone
    if "." not in listings:
        raise PowerLossError(f"{journal}: a complete baseline without {root} itself")
    grave = os.path.join(pdir, "grave")
    # Every inode now present gets a name in the graveyard, so a rename's source can
    # come back under its old name after the new one is removed.
    for d, _dirs, files in os.walk(root):
        for name in files:
            _link_into(os.path.join(d, name), grave)
    _restore_dir(root, ".", listings, grave, undone)
    for d, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            durable = sizes.get(st.st_ino, 0)
            if st.st_size > durable:
                os.truncate(path, durable)
                undone["truncated_bytes"] += st.st_size - durable
            end = data_ends.get(st.st_ino)
            if end is not None and end < min(st.st_size, durable):
                undone["zeroed_bytes"] += _zero_fill(path, end, min(st.st_size, durable))
    shutil.rmtree(pdir)
    os.sync()
    return undone


def _zero_fill(path: str, start: int, end: int) -> int:
    """Put back the zeros of a preallocated file's never-synced writes; returns how
    many bytes were not zero already."""
    changed = 0
    with open(path, "r+b") as f:
        f.seek(start)
        old = f.read(end - start)
        changed = len(old) - old.count(0)
        f.seek(start)
        f.write(bytes(end - start))
    return changed


def _link_into(path: str, grave: str) -> None:
    """A hard link to ``path``'s inode in the graveyard, named by the inode (once)."""
    st = os.lstat(path)
    keep = os.path.join(grave, str(st.st_ino))
    if stat.S_ISREG(st.st_mode) and not os.path.exists(keep):
        os.link(path, keep)


def _restore_dir(root: str, rel: str, listings: dict[str, dict[str, int]], grave: str,
                 undone: dict[str, int]) -> None:
    path = os.path.normpath(os.path.join(root, rel))
    durable = listings.get(rel)
    if durable is None:             # never synced: as if created after the last sync
        shutil.rmtree(path)
        undone["removed"] += 1
        return
    with os.scandir(path) as it:
        present = {e.name + ("/" if e.is_dir(follow_symlinks=False) else ""): e.inode() for e in it}
    for name, ino in present.items():
        if durable.get(name) != ino and not name.endswith("/"):
            os.unlink(os.path.join(path, name))
            undone["removed"] += 1
        elif name.endswith("/") and name not in durable:
            shutil.rmtree(os.path.join(path, name[:-1]))
            undone["removed"] += 1
    for name, ino in durable.items():
        if name.endswith("/"):
            sub = os.path.join(rel, name[:-1]) if rel != "." else name[:-1]
            if os.path.isdir(os.path.join(path, name[:-1])):
                _restore_dir(root, sub, listings, grave, undone)
            continue
        target = os.path.join(path, name)
        if present.get(name) != ino:
            keep = os.path.join(grave, str(ino))
            if not os.path.exists(keep):
                raise PowerLossError(f"{target}: inode {ino} is gone (removed outside "
                                     f"raft.storage.fileio?)")
            os.link(keep, target)
            undone["restored"] += 1
