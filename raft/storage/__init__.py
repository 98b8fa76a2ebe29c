"""Durable state for a Raft node: the storage interface and its implementations."""
from raft.storage.base import PersistedState, Storage, StorageError
from raft.storage.memory import MemoryStorage
from raft.storage.snapshot import SnapshotFile, read_latest_snapshot, write_snapshot
from raft.storage.wal import DiskStorage

__all__ = ["DiskStorage", "MemoryStorage", "PersistedState", "SnapshotFile", "Storage", "StorageError",
           "read_latest_snapshot", "write_snapshot"]
