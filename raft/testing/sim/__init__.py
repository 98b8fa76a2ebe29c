"""The deterministic simulator (TigerBeetle's VOPR, FoundationDB's simulation): one seed
drives a cluster of cores through faults, and every event is checked against the
safety invariants and, at the end, the spec (see ``simulation``'s docstring).

Rooms: ``config`` (fault profile, run settings, result, coverage counters), ``node``
(one simulated server), ``network`` (delivery, partitions, link flaps), ``disk``
(persist latency, stalls, crashes and restarts), ``client`` (proposals and reads),
``invariants`` (the safety checks and the trace check), ``membership`` (the operator
that draws membership changes and leader transfers, ``SimConfig.membership``), ``simulation`` (the
scheduler and the Ready loops; ``run``).
"""
from raft.testing.sim.config import (
    COVERAGE_KINDS,
    FAULT_KINDS,
    TICK,
    FaultProfile,
    SimConfig,
    SimResult,
    Violation,
)
from raft.testing.sim.node import SimNode
from raft.testing.sim.simulation import Simulation, run

__all__ = ["COVERAGE_KINDS", "FAULT_KINDS", "TICK", "FaultProfile", "SimConfig", "SimResult",
           "Violation", "SimNode", "Simulation", "run"]
