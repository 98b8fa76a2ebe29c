"""raft/_tracefmt.pyx: the compiled trace formatter gives, byte for byte, the lines of
the Python formatter (raft.trace.format_event, itself checked against json.dumps in
tests/test_trace_io.py) for every event kind and every edge it formats in C, hands
everything else to the Python formatter (same text, same errors), and its output reads
back to the same events."""
import io
import json
import os

import pytest

import raft.trace as trace_mod
from raft._core import Entry, Message
import raft._tracefmt as tracefmt
from raft.testing.sim import SimConfig, Simulation
from raft.trace import DIGEST_OVER, NdjsonWriter, event_to_json, format_event, read_ndjson

BIG = 2**64 - 1      # the largest uint64 a core field holds


def format_events(events) -> bytes:
    return tracefmt.format_events(events, format_event)


def _ref(events) -> bytes:
    return "".join(format_event(ev) + "\n" for ev in events).encode()


def _msg(**kw) -> Message:
    base = dict(src=1, dst=2, term=3, msg_id=BIG)
    base.update(kw)
    return Message(kw.pop("type", 1), **{k: v for k, v in base.items() if k != "type"})


# One event of every kind the core emits (spec/README.md), with zero and non-zero
# optional message fields, the largest values, empty and non-empty entry data.
EVERY_KIND = [
    ("restart", 1, 0, 0, 0, 1, 0, 0),
    ("restart", 2, BIG, 3, BIG, 7, BIG, 9),
    ("state", 1, 5, 2, 0, 4, 9, 5),
    ("state", 3, BIG, BIG, 2, BIG, BIG, BIG),
    ("timeout", 1, 4),
    ("leader", 2, 6),
    ("stepdown", 3, BIG),
    ("commit", 1, 17),
    ("ready", 1, 0),
    ("advance", 2, BIG),
    ("compact", 3, 100, 7),
    ("propose", 1, []),
    ("propose", 1, [Entry(10, 3, 0, b""), Entry(11, 3, 1, bytes(range(256))),
                    Entry(BIG, BIG, 0, b"\x00\xff\x10")]),
    ("send", 1, _msg(), False),
    ("send", 1, _msg(type=1, index=9, log_term=2, commit=8,
                     entries=[Entry(10, 3, 0, b"abc")]), True),
    ("send", 2, _msg(type=2, reject=True, reject_hint=4, index=3), True),
    ("send", 2, _msg(type=5, index=BIG, data=b"x" * 300), False),
    ("send", 2, _msg(type=4, data=b""), False),          # empty data: no data_len
    ("recv", 2, _msg(type=3, log_term=1, index=2)),
    ("recv", 3, _msg(type=1, entries=[Entry(1, 1, 1, b"")], commit=BIG)),
    ("install", 2, _msg(type=5, index=9, log_term=2, data=b"snap"), True),
    ("install", 2, _msg(type=5, index=9, log_term=2, data=b"snap"), False),
]


def test_the_writer_uses_the_compiled_formatter():
    # a build without raft._tracefmt would fall back to Python silently (6x slower)
    assert trace_mod._TraceFormatter is tracefmt.TraceFormatter
    assert trace_mod._format_events_c is tracefmt.format_events


def test_every_kind_matches_the_python_formatter():
    kinds = {ev[0] for ev in EVERY_KIND}
    assert kinds == {"restart", "state", "timeout", "leader", "stepdown", "commit",
                     "ready", "advance", "compact", "propose", "send", "recv", "install"}
    for ev in EVERY_KIND:
        assert format_events([ev]) == _ref([ev]), ev
    assert format_events(EVERY_KIND) == _ref(EVERY_KIND)
    assert format_events([]) == b""


def test_every_kind_reads_back():
    fp = io.BytesIO()
    NdjsonWriter(fp, [1, 2, 3]).write(EVERY_KIND)
    back, voters = read_ndjson(io.StringIO(fp.getvalue().decode()))
    assert voters == [1, 2, 3]
    assert [event_to_json(e) for e in back] == [event_to_json(e) for e in EVERY_KIND]


@pytest.mark.parametrize("seed", [1, 7, 11279])
def test_simulator_traces_match_the_python_formatter(seed):
    sim = Simulation(SimConfig(seed=seed, nodes=3, steps=300))
    sim.run()
    assert format_events(sim.trace) == _ref(sim.trace)


@pytest.mark.parametrize("etype", [0, 1, 2])
def test_hex_and_digests_of_every_byte_and_length(etype):
    # the hex loop works 4 bytes at a time, then byte by byte: every length mod 4; a
    # normal entry (type 0) over DIGEST_OVER bytes is written as its digest instead
    rows = [Entry(n, 1, etype, os.urandom(n)) for n in range(0, 70)]
    rows += [Entry(1, 1, etype, bytes(range(256))), Entry(1, 1, etype, bytes(range(255, -1, -1)))]
    ev = ("propose", 1, rows)
    assert format_events([ev]) == _ref([ev])
    text = format_events([ev]).decode()
    digests = text.count('"#')
    assert digests == (0 if etype else 70 - DIGEST_OVER - 1 + 2), text


def test_a_digest_is_fnv1a_64_and_reads_back_as_a_stand_in():
    """The digest is FNV-1a-64 (its published test vectors), and reading a trace
    gives each digested entry the same stand-in for the same data, another for other
    data, never equal to a short entry's real data."""
    from raft.trace import DIGEST_OVER, entry_data_from_text, entry_data_text, fnv1a_64

    assert fnv1a_64(b"") == 0xcbf29ce484222325
    assert fnv1a_64(b"a") == 0xaf63dc4c8601ec8c
    assert fnv1a_64(b"foobar") == 0x85944171f73967e8
    long_a, long_b = b"a" * (DIGEST_OVER + 1), b"b" * (DIGEST_OVER + 1)
    for data in (long_a, long_b):
        ev = ("propose", 1, [Entry(1, 1, 0, data)])
        assert format_events([ev]) == _ref([ev])
        assert f'"#{fnv1a_64(data):016x}"' in format_events([ev]).decode()
    a = entry_data_from_text(entry_data_text(Entry(1, 1, 0, long_a)))
    assert a == entry_data_from_text(entry_data_text(Entry(2, 3, 0, long_a)))
    assert a != entry_data_from_text(entry_data_text(Entry(1, 1, 0, long_b)))
    assert len(a) == 17 and a.startswith(b"#")      # longer than any hex-written data
    short = b"#" * DIGEST_OVER
    assert entry_data_from_text(entry_data_text(Entry(1, 1, 0, short))) == short


# Events the C path does not format: the Python formatter's text (or its error) instead.
ODD = [
    ("state", True, 1, 2, 3, 4, 5, 6),        # a bool: %d writes 1
    ("commit", 1, 2**64),                     # beyond uint64
    ("commit", 1, -3),                        # negative
    ("commit", 1, 2, "extra"),                # %-format ignores extra fields
    ("timeout", 1, True),                     # json.dumps writes true
    ("compact", 1, 5, 2, "extra"),
    ("propose", 1, (Entry(1, 1, 0, b"t"),)),  # a tuple of entries
    ("recv", 2, _msg(), "extra"),
    ("send", 2, _msg(type=1, entries=[Entry(1, 1, -1, b"n")]), 0),   # negative entry type
]


def test_odd_events_give_the_python_formatters_text():
    for ev in ODD:
        assert format_events([ev]) == _ref([ev]), ev
    # a partly written line is dropped before the fallback writes the event
    assert format_events([EVERY_KIND[2]] + ODD + [EVERY_KIND[3]]) == \
        _ref([EVERY_KIND[2]] + ODD + [EVERY_KIND[3]])


def test_rows_written_twice_and_slot_collisions():
    # an entry's row is copied from its first occurrence in the batch (remembered by
    # address in a small table, so many entries overwrite each other's slots)
    e = Entry(5, 2, 0, b"shared")
    batch = [("propose", 1, [e]), ("send", 1, _msg(entries=[e, e]), False),
             ("send", 1, _msg(entries=[Entry(6, 2, 0, b"late"), e]), True),
             ("commit", 1, -1), ("recv", 1, _msg(entries=[e]))]
    many = [Entry(i, 1, 0, bytes([i % 256])) for i in range(1000)]    # slot collisions
    batch += [("propose", 1, many), ("send", 1, _msg(entries=many[::-1]), False)]
    assert format_events(batch) == _ref(batch)


@pytest.mark.parametrize("ev", [("nonsense", 1, 2), ("recv", 1, "not a message"),
                                ("propose", 1, [object()]), ("state", 1)])
def test_bad_events_fail_as_in_the_python_formatter(ev):
    with pytest.raises(Exception) as c_err:
        format_events([ev])
    with pytest.raises(Exception) as py_err:
        format_event(ev)
    assert type(c_err.value) is type(py_err.value)


def test_writer_binary_and_text_files_hold_the_same_bytes(tmp_path):
    path = tmp_path / "n1.ndjson"
    with open(path, "ab") as fp:
        w = NdjsonWriter(fp, [1, 2, 3])
        w.add(EVERY_KIND[:5])
        assert path.read_bytes().count(b"\n") == 1     # only the meta line so far
        w.add(EVERY_KIND[5:])
        w.flush()
    with open(path, "ab") as fp:                        # a restart appends, no second meta
        NdjsonWriter(fp, [1, 2, 3]).write(EVERY_KIND[:2])
    text = io.StringIO()
    w = NdjsonWriter(text, [1, 2, 3])
    w.write(EVERY_KIND)
    w.write(EVERY_KIND[:2])
    assert path.read_bytes() == text.getvalue().encode()
    assert json.loads(text.getvalue().splitlines()[0]) == {"e": "meta", "voters": [1, 2, 3]}


def test_formatter_keeps_batches_apart():
    # one buffer for many batches; an entry row is copied only within its batch (a
    # later entry may get the address of one that was freed)
    f = tracefmt.TraceFormatter(format_event)
    assert len(f) == 0 and f.take() == b""
    expect = []
    for i in range(300):
        batch = [("propose", 1, [Entry(i, 1, 0, bytes([i % 256]) * (i % 7))]),
                 EVERY_KIND[i % len(EVERY_KIND)]]
        f.add(batch)
        expect += batch
        if i % 100 == 99:
            assert f.take() == _ref(expect)
            expect = []
    assert len(f) == 0


def test_writer_to_a_text_file_and_a_failing_one(tmp_path):
    path = tmp_path / "t.ndjson"
    with open(path, "a", encoding="utf-8") as fp:        # text mode: the same bytes
        NdjsonWriter(fp, [1]).write(EVERY_KIND)
    assert path.read_bytes() == b'{"e": "meta", "voters": [1]}\n' + format_events(EVERY_KIND)
    with open(path, "rb") as fp:                          # not writable: the error
        fp.seek(0, os.SEEK_END)                           # (not empty: no meta line)
        w = NdjsonWriter(fp, [1])
        w.add(EVERY_KIND)
        with pytest.raises(OSError):
            w.flush()
        assert len(w._fmt) == len(format_events(EVERY_KIND))   # kept for a retry


def test_python_fallback_gives_the_same_bytes(monkeypatch, tmp_path):
    monkeypatch.setattr(trace_mod, "_format_events_c", None)
    monkeypatch.setattr(trace_mod, "_TraceFormatter", None)
    assert trace_mod.format_events(EVERY_KIND + ODD) == format_events(EVERY_KIND + ODD)
    fp = io.BytesIO()
    w = NdjsonWriter(fp, [1, 2, 3])
    w.add(EVERY_KIND)
    w.add(ODD)
    w.flush()
    assert fp.getvalue().split(b"\n", 1)[1] == format_events(EVERY_KIND + ODD)
