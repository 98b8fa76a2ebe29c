"""@replicated calls/s on 3 nodes: raft.embed (durability none and fsync) side by side
with PySyncObj's @replicated, in one run. The benchmark lives in the installed package
(raft/embed/bench.py) so that ``raft bench --embedded`` runs it too.

    python benchmarks/bench_embedded.py [--quick] [--levels L,...] [--secs S] [--json OUT]
"""
import sys

from raft.embed.bench import main

if __name__ == "__main__":
    sys.exit(main())
