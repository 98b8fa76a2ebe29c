"""Test and benchmark tooling that ships with the package (TigerBeetle's src/testing
wing): ``cluster`` (``LocalCluster``: ``raft serve`` processes on 127.0.0.1, and
process helpers), ``inproc`` (``InProcessCluster``: nodes on one event loop),
``pysyncobj`` (the PySyncObj side of the comparisons), ``sim/`` (the deterministic
simulator), ``torture`` and ``lincheck`` (Jepsen-style tests of a real cluster and
the linearizability checker). Nothing in the runtime imports it.
"""
