"""The formal side of the project: spec/Raft.tla (TLA+, model-checked with TLC) and
tla_trace, which replays traces of the core with TLC. The Python trace checker is
``raft.trace_checker`` (``spec.checker`` re-exports it); spec depends on raft.trace,
never the reverse."""
