"""Trace events: the schema the core emits and NDJSON files of them.

The core (``RawNode(trace=list)``) appends one tuple per event; ``spec/README.md``
documents each kind and how ``raft/trace_checker.py`` maps it to spec actions. This
module is the one place that knows their file form: one JSON object per line,
a first ``meta`` line naming the voters. The runtime writes traces with
``NdjsonWriter`` (lines formatted directly, byte for byte what ``json.dumps`` of
``event_to_json`` gives: in C by ``raft._tracefmt.TraceFormatter``, with
``format_event`` here as its reference and fallback; the node traces every message,
formats after every Ready and writes every 200 ms);
tools read them with ``read_ndjson`` and order per-node files with
``merge_by_causality``. Nothing here imports ``spec``; the trace checker
(raft/trace_checker.py) depends on this module, never the reverse.
"""
from __future__ import annotations

import io
import json
from typing import IO, Any

#: Message type -> name, as traces, the spec and error messages name them. The
#: core holds the one copy of the table (raft/core/types.pxi); the trace checker and
#: spec/tla_trace.py take it from here.
from raft._core import ENTRY_NORMAL, MSG_NAMES

try:
    from raft._tracefmt import TraceFormatter as _TraceFormatter
    from raft._tracefmt import format_events as _format_events_c
except ImportError:     # a source tree whose extensions are not built: the Python formatter
    _TraceFormatter = _format_events_c = None

__all__ = ["MSG_NAMES", "NdjsonWriter", "event_from_json", "event_to_json", "format_event",
           "format_events", "merge_by_causality", "read_ndjson", "read_ndjson_file",
           "write_ndjson"]


#: A normal entry's data longer than this is traced as its digest, ``#`` and the 16
#: hex digits of its FNV-1a-64 (entry_data_text); shorter data and every other entry's
#: (configurations, which the checker decodes; no-ops) in hex. The checker needs only
#: to tell entries apart -- log matching, truncation, committed entries never change
#: -- and a client command's bytes in hex were most of what a traced write cost
#: (docs/benchmarks.md, 23).
DIGEST_OVER = 16
_FNV_OFFSET, _FNV_PRIME, _U64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    """FNV-1a, 64 bits (the reference; raft._tracefmt computes it in C)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _U64
    return h


def entry_data_text(e: Any) -> str:
    """How a trace writes an entry's data: hex, or a digest (see DIGEST_OVER)."""
    data = e.data
    if e.type == ENTRY_NORMAL and len(data) > DIGEST_OVER:
        return "#%016x" % fnv1a_64(data)
    return data.hex()


def entry_data_from_text(text: str) -> bytes:
    """The data entry_data_text wrote, or for a digest the digest's own bytes: a
    stand-in equal for equal data (which is all the checker compares)."""
    return text.encode() if text.startswith("#") else bytes.fromhex(text)


def _msg_to_json(m) -> dict:
    d = {"type": m.type, "src": m.src, "dst": m.dst, "term": m.term, "id": m.msg_id}
    if m.index:
        d["index"] = m.index
    if m.log_term:
        d["log_term"] = m.log_term
    if m.commit:
        d["commit"] = m.commit
    if m.reject:
        d["reject"] = True
    if m.reject_hint:
        d["hint"] = m.reject_hint
    if m.entries:
        d["entries"] = [[e.index, e.term, e.type, entry_data_text(e)] for e in m.entries]
    if m.data:
        d["data_len"] = len(m.data)      # snapshot bytes are not traced, only their size
    return d


def event_to_json(ev) -> dict:
    kind, n = ev[0], ev[1]
    if kind in ("recv", "send"):
        d = {"e": kind, "n": n, "m": _msg_to_json(ev[2])}
        if kind == "send":
            d["after_persist"] = bool(ev[3])
        return d
    if kind == "propose":
        return {"e": kind, "n": n,
                "entries": [[e.index, e.term, e.type, entry_data_text(e)] for e in ev[2]]}
    if kind == "state":
        return {"e": kind, "n": n, "term": ev[2], "vote": ev[3], "role": ev[4], "commit": ev[5],
                "last": ev[6], "last_term": ev[7]}
    if kind == "restart":
        return {"e": kind, "n": n, "term": ev[2], "vote": ev[3], "commit": ev[4], "first": ev[5],
                "last": ev[6], "last_term": ev[7]}
    if kind in ("timeout", "leader", "stepdown"):
        return {"e": kind, "n": n, "term": ev[2]}
    if kind == "commit":
        return {"e": kind, "n": n, "commit": ev[2]}
    if kind == "ready" and len(ev) == 4:
        return {"e": kind, "n": n, "seq": ev[2], "hint": ev[3]}
    if kind in ("ready", "advance"):
        return {"e": kind, "n": n, "seq": ev[2]}
    if kind == "install":
        return {"e": kind, "n": n, "m": _msg_to_json(ev[2]), "installed": bool(ev[3])}
    if kind == "compact":
        return {"e": kind, "n": n, "index": ev[2], "term": ev[3]}
    if kind == "conf":
        return {"e": kind, "n": n, "index": ev[2], "voters": list(ev[3]), "learners": list(ev[4])}
    raise ValueError(f"unknown event {kind!r}")


def write_ndjson(events: list, fp, voters: list[int] | None = None) -> None:
    """One JSON object per line; a first `meta` line names the voters."""
    if voters is not None:
        fp.write(json.dumps({"e": "meta", "voters": list(voters)}) + "\n")
    for ev in events:
        fp.write(json.dumps(event_to_json(ev), separators=(",", ":")))
        fp.write("\n")


def _entries_from_json(rows):
    from raft._core import Entry

    return [Entry(i, t, ty, entry_data_from_text(h)) for i, t, ty, h in rows]


def _msg_from_json(d):
    from raft._core import Message

    return Message(d["type"], src=d["src"], dst=d["dst"], term=d["term"],
                   log_term=d.get("log_term", 0), index=d.get("index", 0),
                   commit=d.get("commit", 0), entries=_entries_from_json(d.get("entries", [])),
                   reject=d.get("reject", False), reject_hint=d.get("hint", 0), msg_id=d["id"],
                   data=bytes(d["data_len"]) if "data_len" in d else None)


def event_from_json(d: dict):
    kind, n = d["e"], d["n"]
    if kind == "recv":
        return (kind, n, _msg_from_json(d["m"]))
    if kind == "send":
        return (kind, n, _msg_from_json(d["m"]), d.get("after_persist", False))
    if kind == "propose":
        return (kind, n, _entries_from_json(d["entries"]))
    if kind == "state":
        return (kind, n, d["term"], d["vote"], d["role"], d["commit"], d["last"], d["last_term"])
    if kind == "restart":
        return (kind, n, d["term"], d["vote"], d["commit"], d["first"], d["last"], d["last_term"])
    if kind in ("timeout", "leader", "stepdown"):
        return (kind, n, d["term"])
    if kind == "commit":
        return (kind, n, d["commit"])
    if kind == "ready" and "hint" in d:
        return (kind, n, d["seq"], d["hint"])
    if kind in ("ready", "advance"):
        return (kind, n, d["seq"])
    if kind == "install":
        return (kind, n, _msg_from_json(d["m"]), d["installed"])
    if kind == "compact":
        return (kind, n, d["index"], d["term"])
    if kind == "conf":
        return (kind, n, d["index"], tuple(d["voters"]), tuple(d["learners"]))
    raise ValueError(f"unknown event kind {kind!r}")


def read_ndjson(fp) -> tuple[list, list[int]]:
    """Events and voters (from the `meta` line, if any) of an NDJSON trace."""
    events, voters = [], []
    for lineno, line in enumerate(fp, 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
            if d.get("e") == "meta":
                voters = [int(v) for v in d["voters"]]
                continue
            events.append(event_from_json(d))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"line {lineno}: malformed trace event: {e}") from None
    return events, voters


def read_ndjson_file(path: str) -> tuple[list, list[int]]:
    with open(path, encoding="utf-8") as fp:
        return read_ndjson(fp)


def merge_by_causality(streams: list[list]) -> list:
    """Merge per-node traces (each in its node's order) into one order in which
    every receive comes after its send. A node's events stay in order; among
    ready nodes the one whose next event is earliest in a round-robin is taken."""
    pos = [0] * len(streams)
    sent: set = set()                 # messages on the network
    held: dict = {}                   # node -> messages waiting for that node's next Persist
    out = []
    total = sum(len(s) for s in streams)
    while len(out) < total:
        progressed = False
        for k, s in enumerate(streams):
            while pos[k] < len(s):
                ev = s[pos[k]]
                if ev[0] == "recv" and (ev[2].src, ev[2].msg_id) not in sent:
                    break                       # wait for the sender's stream
                if ev[0] == "send":
                    key = (ev[2].src, ev[2].msg_id)
                    if ev[3]:
                        held.setdefault(ev[1], []).append(key)
                    else:
                        sent.add(key)
                elif ev[0] == "ready":
                    sent.update(held.pop(ev[1], ()))
                elif ev[0] == "restart":
                    held.pop(ev[1], None)
                out.append(ev)
                pos[k] += 1
                progressed = True
        if not progressed:
            k = next(k for k, s in enumerate(streams) if pos[k] < len(s))
            ev = streams[k][pos[k]]
            raise ValueError(f"cannot order the traces: node {ev[1]} receives message "
                             f"{(ev[2].src, ev[2].msg_id)} that no trace sends")
    return out


# -- the fast writer --------------------------------------------------------------------

def _entries_text(entries: Any, cache: dict[int, str] | None) -> str:
    """The entries' JSON rows. ``cache`` (id(entry) -> row, for one batch of events whose
    entries stay alive meanwhile) formats each entry once: a leader's entry appears in
    its propose event and in the AppendEntries to every follower."""
    if cache is None:
        return ",".join("[%d,%d,%d,\"%s\"]" % (e.index, e.term, e.type, entry_data_text(e))
                        for e in entries)
    rows = []
    for e in entries:
        row = cache.get(id(e))
        if row is None:
            row = cache[id(e)] = "[%d,%d,%d,\"%s\"]" % (e.index, e.term, e.type,
                                                        entry_data_text(e))
        rows.append(row)
    return ",".join(rows)


def _msg_text(m: Any, cache: dict[int, str] | None = None) -> str:
    """``json.dumps(_msg_to_json(m), separators=(",", ":"))``, formatted directly."""
    out = '{"type":%d,"src":%d,"dst":%d,"term":%d,"id":%d' % (m.type, m.src, m.dst, m.term,
                                                               m.msg_id)
    if m.index:
        out += ',"index":%d' % m.index
    if m.log_term:
        out += ',"log_term":%d' % m.log_term
    if m.commit:
        out += ',"commit":%d' % m.commit
    if m.reject:
        out += ',"reject":true'
    if m.reject_hint:
        out += ',"hint":%d' % m.reject_hint
    if m.entries:
        out += ',"entries":[%s]' % _entries_text(m.entries, cache)
    if m.data:
        out += ',"data_len":%d' % len(m.data)
    return out + "}"


_STATE = '{"e":"state","n":%d,"term":%d,"vote":%d,"role":%d,"commit":%d,"last":%d,"last_term":%d}'
_RESTART = ('{"e":"restart","n":%d,"term":%d,"vote":%d,"commit":%d,"first":%d,"last":%d,'
            '"last_term":%d}')


def format_event(ev: tuple, cache: dict[int, str] | None = None) -> str:
    """One event as its NDJSON line (without the newline): the same text as
    ``json.dumps(event_to_json(ev), separators=(",", ":"))``. ``cache``: see
    _entries_text."""
    kind = ev[0]
    if kind == "state":
        return _STATE % ev[1:]
    if kind == "ready" and len(ev) == 4:
        return '{"e":"ready","n":%d,"seq":%d,"hint":%d}' % ev[1:]
    if kind == "ready" or kind == "advance":
        return '{"e":"%s","n":%d,"seq":%d}' % ev
    if kind == "send":
        return '{"e":"send","n":%d,"m":%s,"after_persist":%s}' % (
            ev[1], _msg_text(ev[2], cache), "true" if ev[3] else "false")
    if kind == "recv":
        return '{"e":"recv","n":%d,"m":%s}' % (ev[1], _msg_text(ev[2], cache))
    if kind == "propose":
        return '{"e":"propose","n":%d,"entries":[%s]}' % (ev[1], _entries_text(ev[2], cache))
    if kind == "commit":
        return '{"e":"commit","n":%d,"commit":%d}' % (ev[1], ev[2])
    if kind == "restart":
        return _RESTART % ev[1:]
    if kind == "conf":
        return '{"e":"conf","n":%d,"index":%d,"voters":[%s],"learners":[%s]}' % (
            ev[1], ev[2], ",".join("%d" % v for v in ev[3]), ",".join("%d" % v for v in ev[4]))
    return json.dumps(event_to_json(ev), separators=(",", ":"))


class _PyFormatter:
    """raft._tracefmt.TraceFormatter in Python, on format_event (the fallback)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def add(self, events: list) -> None:
        cache: dict[int, str] = {}
        self._parts.append("".join([format_event(ev, cache) + "\n" for ev in events])
                           .encode("utf-8"))

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data

    def __len__(self) -> int:
        return sum(map(len, self._parts))


def format_events(events: list) -> bytes:
    """The NDJSON lines of ``events``, each ending in a newline, as UTF-8 bytes (the
    text is ASCII): the compiled formatter (raft/_tracefmt.pyx, byte for byte
    ``format_event``, several times cheaper) when built, else ``format_event``."""
    if _format_events_c is not None:
        return _format_events_c(events, format_event)
    fmt = _PyFormatter()
    fmt.add(events)
    return fmt.take()


class NdjsonWriter:
    """Appends events to an open file, binary (what the node uses) or text; the first
    write to an empty file names the voters (``meta``). ``add`` formats events at once
    (the caller may then drop them: the node does so after every Ready, so that the
    event tuples and the Messages they hold die young instead of filling the garbage
    collector's oldest generation); ``flush`` writes what was added, in one write."""

    def __init__(self, fp: IO[Any], voters: list[int] | tuple[int, ...]) -> None:
        self.fp = fp
        self._text = isinstance(fp, io.TextIOBase)
        self._fmt = (_TraceFormatter(format_event) if _TraceFormatter is not None
                     else _PyFormatter())
        if fp.tell() == 0:
            self._write((json.dumps({"e": "meta", "voters": list(voters)}) + "\n")
                        .encode("utf-8"))
        self._fd = self._raw_fd()

    def _raw_fd(self) -> int | None:
        """The OS file under ``fp`` when the compiled formatter can write to it
        directly (a file opened for appending; ``fp`` itself is then never written
        again), else None (StringIO, BytesIO: through ``fp``)."""
        if _TraceFormatter is None:
            return None
        try:
            return self.fp.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            return None

    def add(self, events: list) -> None:
        if events:
            self._fmt.add(events)

    def flush(self) -> None:
        if len(self._fmt):
            if self._fd is not None:
                self._fmt.write_to(self._fd)
            else:
                self._write(self._fmt.take())

    def write(self, events: list) -> None:
        self.add(events)
        self.flush()

    def _write(self, data: bytes) -> None:
        self.fp.write(data.decode("utf-8") if self._text else data)
        self.fp.flush()
