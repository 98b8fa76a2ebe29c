"""The ``raft`` command line (``raft.cli:main``).

Rooms: ``main`` (the parser; sim, check, storage; dispatch of the bench modes),
``serve`` (serve, cluster, status), ``bench`` (``raft bench``) and ``load`` (its RESP
load generator), ``compare`` with ``compare_etcd`` and ``compare_report``
(``raft bench --compare``). Arrows: compare -> bench -> load; nothing here is
imported by the runtime.
"""

from raft.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
