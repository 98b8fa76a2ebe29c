"""The project's error base class.

Every exception this project defines derives from ``RaftError``, so a caller can
catch all of them at once; each keeps the standard base it had (``ValueError``,
``ConnectionError``, ``TimeoutError`` ...) so code that catches those still works.
The core's own errors (``raft._core``: ``LocalProtocolError``, ``NotLeader``,
``RemoteProtocolError``, ``InvariantViolation``) derive from it too.
"""

__all__ = ["RaftError"]


class RaftError(Exception):
    """Base class of the project's errors."""
