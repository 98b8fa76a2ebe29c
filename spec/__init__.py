"""The formal side of the project: spec/Raft.tla (TLA+, model-checked with TLC)
and spec.checker, which replays traces of the core against it."""
