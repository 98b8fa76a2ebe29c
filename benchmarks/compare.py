"""Side-by-side comparison with PySyncObj and Redis; see raft/cli/compare.py.

    python benchmarks/compare.py [--out-dir D] [--quick]    (same as: raft bench --compare)
"""
import sys

from raft.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
