"""``python -m raft.cli``: the ``raft`` command."""
import sys

from raft.cli.main import main

sys.exit(main())
