"""raft/trace.py: the runtime's fast NDJSON writer gives, byte for byte, the lines of
the reference encoding (json.dumps of event_to_json), and reads back to the events."""
import io
import json

import pytest

from raft.testing.sim import SimConfig, Simulation
from raft.trace import (NdjsonWriter, event_from_json, event_to_json, format_event,
                        read_ndjson, write_ndjson)


def _trace(seed: int, **kw) -> list:
    sim = Simulation(SimConfig(seed=seed, nodes=3, steps=300, **kw))
    sim.run()
    return sim.trace


@pytest.mark.parametrize("seed", [1, 7, 11279])
def test_fast_writer_matches_the_reference_encoding(seed):
    events = _trace(seed)
    kinds = {ev[0] for ev in events}
    assert {"state", "send", "recv", "ready", "advance", "propose", "commit"} <= kinds, kinds
    cache: dict = {}
    for ev in events:
        ref = json.dumps(event_to_json(ev), separators=(",", ":"))
        assert format_event(ev) == ref, ev
        assert format_event(ev, cache) == ref, ev    # entries formatted once, reused


def test_writer_output_reads_back_and_names_the_voters():
    events = _trace(7)
    fp = io.StringIO()
    NdjsonWriter(fp, [1, 2, 3]).write(events)
    ref = io.StringIO()
    write_ndjson(events, ref, voters=[1, 2, 3])
    assert fp.getvalue() == ref.getvalue()
    fp.seek(0)
    back, voters = read_ndjson(fp)
    assert voters == [1, 2, 3] and len(back) == len(events)
    assert [event_to_json(e) for e in back] == [event_to_json(e) for e in events]
    assert event_from_json(event_to_json(events[-1])) is not None
