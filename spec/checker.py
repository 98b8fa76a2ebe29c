"""The trace checker moved next to the trace schema: ``raft.trace_checker`` (the
runtime uses it; nothing under raft/ imports spec). This module re-exports it, so
``spec.checker`` keeps working for tools and tests."""
from raft.trace_checker import *  # noqa: F401,F403
from raft.trace_checker import (  # noqa: F401
    MSG_NAME, NO_STEP_MSGS, NOOP, Checker, TraceViolation, check_events, event_from_json,
    event_to_json, merge_by_causality, read_ndjson, read_ndjson_file, write_ndjson,
)
