"""Test and benchmark tooling that ships with the package (TigerBeetle's src/testing
wing): ``cluster`` (``LocalCluster``: ``raft serve`` processes on 127.0.0.1, and
process helpers), ``inproc`` (``InProcessCluster``: nodes on one event loop),
``pysyncobj`` (the PySyncObj side of the comparisons). Nothing in the runtime
imports it. The simulator (raft/sim.py) is to move here too.
"""
