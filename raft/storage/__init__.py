"""Durable state for a Raft node: the storage interface and its implementations."""
from raft.storage.base import PersistedState, Storage, StorageError
from raft.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "PersistedState", "Storage", "StorageError"]
