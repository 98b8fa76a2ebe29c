"""A linearizability checker for histories of the KV / stream front end.

    raft lincheck HISTORY [--html FILE] [--budget SECONDS] [--json]

A *history* is what clients saw: every operation with its invocation and completion
times and its outcome, ``ok`` (it took effect, with this output), ``fail`` (it certainly
did not take effect) or ``info`` (unknown: a timeout or a dropped connection after the
request was sent). The question (Herlihy & Wing 1990) is whether some total order of the
operations (a) respects real time (an operation that completed before another was
invoked comes first), (b) obeys the sequential model of each key, and (c) contains every
``ok`` operation, no ``fail`` one, and any subset of the ``info`` ones, each placed after
its invocation.

Algorithm (as in Porcupine, after Lowe's refinement of Wing & Gong):

* **P-compositionality.** Linearizability is local (Herlihy & Wing, Theorem 1): a history
  is linearizable iff its restriction to each key is. Each key is checked on its own,
  which turns one exponential search into many small ones.
* **Search.** The key's call and return events, sorted by time, form a doubly linked
  list. Scanning from the front, the first call whose operation the model accepts in the
  current state is *linearized*: its call and return are lifted out of the list, and the
  scan restarts. Meeting a return event means its operation was not linearized in time:
  undo the last choice (a stack) and try the next call. Reaching the end of the list
  means every ``ok`` operation is placed (left-over ``info`` operations never happened).
* **Memoization.** (bitmap of linearized operations, model state) pairs already explored
  are never explored again (Lowe's cache): the search is exponential only in the width of
  real concurrency, not in the history's length.
* **Unknown outcomes.** An ``info`` operation has no return event: it can be linearized
  at any point after its call, or never; reads with unknown outcome are dropped (they
  change nothing). Identical ones are used in call order only (symmetry reduction) and
  are tried after the known-outcome candidates (see ``_search``); unique-valued writes
  are pinned exactly where a read observed them (``_pin_unknowns``).
* **Budget.** A time budget per check; when it runs out the verdict is ``unknown``,
  never a guess.
* **Counterexample.** For a key that is not linearizable, a short failing sub-history:
  (1) the shortest prefix in time that is still not linearizable (linearizability is
  prefix-closed: operations pending at the cut become ``info``); (2) a window starting
  at the latest quiescent moment that still fails from every state the key can be in at
  that moment (computed by exploring the part before it); (3) reads dropped one by one
  while it still fails. Each step keeps the result a proof: if the sub-history cannot be
  linearized, neither can the whole. An HTML timeline of it can be written.

History formats (docs/torture.md): JSON close to Porcupine's ``Operation`` (client id,
input, call, output, return), and Jepsen's EDN lines.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from raft.errors import RaftError

__all__ = ["Operation", "CheckResult", "KeyResult", "check", "check_key", "load_history",
           "parse_edn_history", "parse_json_history", "write_json_history", "write_edn_history",
           "render_html", "format_counterexample", "add_lincheck_subcommand"]

INF = math.inf

# Operation kinds. Names follow Jepsen's (:read, :write, ...); Redis names are aliases.
READ, WRITE, INCR, DELETE, XADD, XRANGE = "read", "write", "incr", "delete", "xadd", "xrange"
_ALIASES = {"get": READ, "set": WRITE, "del": DELETE, "r": READ, "w": WRITE}
KINDS = (READ, WRITE, INCR, DELETE, XADD, XRANGE)
_READS = (READ, XRANGE)
_STREAM = (XADD, XRANGE)
OK, FAIL, INFO = "ok", "fail", "info"


@dataclass(slots=True)
class Operation:
    """One client operation. ``ret`` is None when the outcome is unknown (``info``)."""

    client: int
    key: str
    f: str
    value: Any          # input: the value written (write), appended (xadd); else None
    output: Any         # ok: the reply (read value or None, incr result, del count, xadd id,
                        # xrange [[id, value], ...]); info/fail: None
    call: float
    ret: float | None
    status: str = OK
    index: int = 0      # position in the history it came from
    error: str | None = None

    def describe(self) -> str:
        arg = "" if self.value is None else f" {self.value!r}"
        if self.status == OK and self.f == XRANGE and len(self.output) > 4:
            tail = ", ".join(f"{i} {v!r}" for i, v in self.output[-3:])
            out = f" -> [{len(self.output)} entries: ..., {tail}]"
        elif self.status == OK:
            out = f" -> {self.output!r}"
        elif self.status == INFO:
            out = f" -> ? ({self.error or 'unknown outcome'})"
        else:
            out = f" -> fail ({self.error or ''})"
        return f"{self.f.upper()} {self.key}{arg}{out}"


def normalize_kind(f: str) -> str:
    k = _ALIASES.get(f.lower(), f.lower())
    if k not in KINDS:
        raise ValueError(f"unknown operation kind {f!r} (expected one of {', '.join(KINDS)})")
    return k


# --------------------------------------------------------------------------- models
# A model is step(state, op) -> (accepted, new_state). States are hashable (memo keys).

_NOT_INT = "!not-an-integer"


def _kv_step(state: Any, op: Operation) -> tuple[bool, Any]:
    """A Redis string key: GET of a missing key is nil, INCR of a missing key is 0 + 1,
    DEL answers how many keys it removed (0 or 1)."""
    f = op.f
    known = op.status == OK
    if f == READ:
        return op.output == state, state
    if f == WRITE:
        return True, op.value
    if f == DELETE:
        return (not known or op.output == (0 if state is None else 1)), None
    # INCR
    if state is None:
        n = 1
    else:
        try:
            n = int(state) + 1
        except ValueError:
            return (not known or op.output == _NOT_INT), state
    return (not known or op.output == n), str(n)


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _stream_step(state: tuple, op: Operation) -> tuple[bool, Any]:
    """An append-only stream: XADD appends (id, value) and returns the new id, which must
    exceed every earlier id; XRANGE - + returns the whole stream. An XADD with unknown
    outcome appends (None, value): a later XRANGE may reveal any id for it."""
    if op.f == XADD:
        if op.status == OK:
            new_id = str(op.output)
            for eid, _ in reversed(state):
                if eid is not None:
                    if _stream_id(new_id) <= _stream_id(eid):
                        return False, state
                    break
            return True, state + ((new_id, op.value),)
        return True, state + ((None, op.value),)
    # XRANGE
    out = op.output
    if len(out) != len(state):
        return False, state
    for (sid, sval), got in zip(state, out):
        gid, gval = got[0], got[1]
        if gval != sval or (sid is not None and gid != sid):
            return False, state
    return True, state


def model_for(ops: list[Operation]) -> tuple[str, Callable[[Any, Operation], tuple[bool, Any]], Any]:
    """(name, step, initial state) for one key's operations."""
    stream = any(op.f in _STREAM for op in ops)
    if stream:
        if not all(op.f in _STREAM for op in ops):
            raise ValueError(f"key {ops[0].key!r} mixes stream and string operations")
        return "stream", _stream_step, ()
    return "register", _kv_step, None


# --------------------------------------------------------------------------- search


class BudgetExceeded(RaftError):
    pass


def _prepare(ops: Iterable[Operation]) -> list[Operation]:
    """Drop what cannot matter: failed operations (they did not happen) and reads whose
    outcome is unknown (a read changes nothing)."""
    out = []
    for op in ops:
        if op.status == FAIL:
            continue
        if op.status == INFO:
            if op.f in _READS:
                continue
            if op.ret is not None:
                op = _as_info(op)
        out.append(op)
    return out


def _pin_unknowns(ops: list[Operation]) -> list[Operation]:
    """Resolve unknown-outcome writes whose value is unique on the key, an exact
    rewrite that keeps the search from trying them at every later point:

    * observed by a completed read (a GET returning the value, on a key without INCR;
      an XRANGE listing it):
      it took effect before that read did, so it is an ``ok`` operation returning at
      the earliest such read's completion (for XADD, with the id the read showed);
    * never observed, on a stream or on a key with only GET/SET: had it taken effect
      before some read, that read would show it (a stream only grows; a GET would
      see it until the next write, which no read then observed either), so it is
      indistinguishable from one that never happened: dropped.
    """
    writes = [o for o in ops if o.f in (WRITE, XADD)]
    if not any(o.status == INFO for o in writes):
        return ops
    counts: dict[Any, int] = {}
    for o in writes:
        counts[_hashable(o.value)] = counts.get(_hashable(o.value), 0) + 1
    seen: dict[Any, tuple[float, Any]] = {}
    for o in ops:
        if o.status != OK or o.ret is None:
            continue
        if o.f == READ and o.output is not None:
            pairs: Iterable[tuple[Any, Any]] = ((o.output, None),)
        elif o.f == XRANGE:
            pairs = ((e[1], e[0]) for e in o.output)
        else:
            continue
        for value, eid in pairs:
            v = _hashable(value)
            if v not in seen or o.ret < seen[v][0]:
                seen[v] = (o.ret, eid)
    droppable = all(o.f in (READ, WRITE, XADD, XRANGE) for o in ops)
    no_incr = not any(o.f == INCR for o in ops)   # an INCR can also produce the value
    out = []
    for o in ops:
        v = _hashable(o.value)
        if o.status != INFO or o.f not in (WRITE, XADD) or counts.get(v) != 1:
            out.append(o)
        elif v in seen and seen[v][0] >= o.call and (o.f == XADD or no_incr):
            ret, eid = seen[v]
            out.append(Operation(o.client, o.key, o.f, o.value,
                                 "OK" if o.f == WRITE else eid, o.call, ret, OK, o.index,
                                 "outcome unknown; seen by a read"))
        elif v in seen or not droppable:
            out.append(o)
    return out


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _as_info(op: Operation) -> Operation:
    return Operation(op.client, op.key, op.f, op.value, None, op.call, None, INFO, op.index,
                     op.error or "pending at the cut")


def _search(ops: list[Operation], step: Callable, init: Any, deadline: float,
            collect: set | None = None) -> bool:
    """Lowe's just-in-time linearization search with memoization. True if ``ops`` can be
    linearized from ``init``. With ``collect``, explore every linearization instead and
    add (final state, bitmap of the info operations used) to it.

    Operations with a known outcome live in the linked list of call and return events.
    Candidates at a state are the calls before the first return entry (Lowe), tried
    in any order: known-outcome ones first (phase 0), unknown-outcome ones (phase 1)
    only when those are exhausted, so a timed-out INCR is not applied at every step to
    let the search run ahead through reads it does not explain. Unknown-outcome
    operations have no return event and are kept out of the list, in groups of
    identical ones (same kind and input), each group used in call order: any
    linearization using a later-called twin while an earlier-called one is unused can
    swap the two (symmetry reduction), so k timed-out INCRs give k + 1 choices, not 2^k.
    """
    events = []
    for i, op in enumerate(ops):
        if op.ret is not None:
            events.append((op.call, 0, i))
            events.append((op.ret, 1, i))
    # At equal times a call sorts before a return: the two are treated as concurrent,
    # which can only make the check more permissive (never a false violation).
    events.sort()
    m = len(events)
    head = m
    nxt = list(range(1, m + 2))
    nxt[m - 1 if m else head] = -1
    nxt[head] = 0 if m else -1
    prv = [p - 1 for p in range(m + 1)]
    if m:
        prv[0] = head
    is_call = [e[1] == 0 for e in events]
    ev_time = [e[0] for e in events]
    opid = [e[2] for e in events]
    ret_pos = [-1] * len(ops)
    for p, e in enumerate(events):
        if e[1] == 1:
            ret_pos[e[2]] = p
    by_sig: dict[Any, list[int]] = {}
    info_mask = 0
    for i in sorted(range(len(ops)), key=lambda i: (ops[i].call, i)):
        if ops[i].ret is None:
            info_mask |= 1 << i
            by_sig.setdefault((ops[i].f, _hashable(ops[i].value)), []).append(i)
    groups = list(by_sig.values())
    used = [0] * len(groups)      # how many of each group are linearized (a prefix)

    def remove(p: int) -> None:
        n = nxt[p]
        nxt[prv[p]] = n
        if n != -1:
            prv[n] = prv[p]

    def restore(p: int) -> None:
        n = nxt[p]
        nxt[prv[p]] = p
        if n != -1:
            prv[n] = p

    cache: set = set()
    # (entry p, or -1 - group for an unknown-outcome choice; state; deadline time tR)
    stack: list[tuple[int, Any, float]] = []
    state = init
    lin = 0
    p = nxt[head]
    g = -1                # >= 0: in phase 1, the next group to try
    t_ret = INF           # phase 1: time of the return entry that blocked phase 0
    steps = 0
    while True:
        steps += 1
        if steps & 1023 == 0 and time.monotonic() > deadline:
            raise BudgetExceeded
        if g < 0:
            # Phase 0: scan the list for a known-outcome call the model accepts.
            if p != -1 and is_call[p]:
                i = opid[p]
                accepted, new_state = step(state, ops[i])
                if accepted:
                    new_lin = lin | (1 << i)
                    memo = (new_lin, new_state)
                    if memo not in cache:
                        cache.add(memo)
                        stack.append((p, state, INF))
                        state, lin = new_state, new_lin
                        remove(p)
                        remove(ret_pos[i])
                        p = nxt[head]
                        continue
                p = nxt[p]
                continue
            if p == -1:  # no return left: every ok operation is placed
                if collect is None:
                    return True
                collect.add((state, lin & info_mask))
            elif groups:
                g, t_ret = 0, ev_time[p]
                continue
        else:
            # Phase 1: the next unused member of each group, if called before t_ret.
            while g < len(groups):
                k = used[g]
                if k < len(groups[g]):
                    i = groups[g][k]
                    if ops[i].call <= t_ret:
                        accepted, new_state = step(state, ops[i])
                        if accepted:
                            new_lin = lin | (1 << i)
                            memo = (new_lin, new_state)
                            if memo not in cache:
                                cache.add(memo)
                                stack.append((-1 - g, state, t_ret))
                                state, lin = new_state, new_lin
                                used[g] = k + 1
                                break
                g += 1
            if g < len(groups):   # linearized one: back to phase 0 from the head
                g, p = -1, nxt[head]
                continue
        # Nothing left to try at this state: undo the last choice.
        if not stack:
            return False if collect is None else bool(collect)
        top, state, t_ret = stack.pop()
        if top >= 0:
            i = opid[top]
            lin &= ~(1 << i)
            restore(ret_pos[i])
            restore(top)
            g, p = -1, nxt[top]
        else:
            g = -1 - top
            used[g] -= 1
            lin &= ~(1 << groups[g][used[g]])
            g += 1


# --------------------------------------------------------------------------- results


@dataclass
class KeyResult:
    key: str
    model: str
    verdict: str                       # "ok", "violation" or "unknown"
    operations: int
    seconds: float
    counterexample: list[Operation] = field(default_factory=list)
    initial_states: list[Any] = field(default_factory=list)  # before the counterexample


@dataclass
class CheckResult:
    verdict: str                       # "ok", "violation" or "unknown"
    operations: int
    keys: int
    seconds: float
    per_key: list[KeyResult]

    @property
    def violations(self) -> list[KeyResult]:
        return [k for k in self.per_key if k.verdict == "violation"]

    @property
    def unknown(self) -> list[KeyResult]:
        return [k for k in self.per_key if k.verdict == "unknown"]

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "operations": self.operations, "keys": self.keys,
                "seconds": round(self.seconds, 3),
                "violating_keys": [k.key for k in self.violations],
                "unknown_keys": [k.key for k in self.unknown]}


def _linearizable(ops: list[Operation], step: Callable, inits: Iterable[Any],
                  deadline: float) -> bool:
    return any(_search(ops, step, s, deadline) for s in inits)


def check_key(ops: list[Operation], budget: float = 10.0, minimize: bool = True,
              minimize_budget: float = 5.0) -> KeyResult:
    """Check one key's operations (all with the same key)."""
    t0 = time.monotonic()
    ops = _prepare(ops)
    key = ops[0].key if ops else ""
    if not ops:
        return KeyResult(key, "register", "ok", 0, 0.0)
    name, step, init = model_for(ops)
    ops = _pin_unknowns(ops)
    try:
        ok = _search(ops, step, init, t0 + budget)
    except BudgetExceeded:
        return KeyResult(key, name, "unknown", len(ops), time.monotonic() - t0)
    res = KeyResult(key, name, "ok" if ok else "violation", len(ops), time.monotonic() - t0)
    if not ok:
        if minimize:
            res.counterexample, res.initial_states = _minimize(ops, step, init,
                                                               time.monotonic() + minimize_budget)
        else:
            res.counterexample, res.initial_states = ops, [init]
    return res


def check(history: Iterable[Operation], budget: float = 30.0, minimize: bool = True,
          max_minimized: int = 3) -> CheckResult:
    """Check a whole history: each key on its own (P-compositionality), within
    ``budget`` seconds in all; counterexamples are minimized for the first
    ``max_minimized`` failing keys (the others keep their whole history)."""
    t0 = time.monotonic()
    by_key: dict[str, list[Operation]] = {}
    n = 0
    for op in history:
        by_key.setdefault(op.key, []).append(op)
        n += 1
    keys = sorted(by_key)
    res: dict[str, KeyResult] = {}
    # Two passes, so one hard key cannot starve the others: each key first gets an equal
    # share of half the budget; the keys left unknown then share what remains.
    first = max(0.05, budget / (2 * max(1, len(keys))))
    for key in keys:
        shrink = minimize and sum(r.verdict == "violation" for r in res.values()) < max_minimized
        res[key] = check_key(by_key[key], budget=first, minimize=shrink)
    hard = [k for k in keys if res[k].verdict == "unknown"]
    for done, key in enumerate(hard):
        left = max(0.05, (budget - (time.monotonic() - t0)) / (len(hard) - done))
        shrink = minimize and sum(r.verdict == "violation" for r in res.values()) < max_minimized
        res[key] = check_key(by_key[key], budget=left, minimize=shrink)
    results = [res[k] for k in keys]
    verdicts = {r.verdict for r in results}
    verdict = "violation" if "violation" in verdicts else "unknown" if "unknown" in verdicts else "ok"
    return CheckResult(verdict, n, len(by_key), time.monotonic() - t0, results)


# --------------------------------------------------------------------------- minimization


def _prefix(ops: list[Operation], t: float) -> list[Operation]:
    """The history as it stood at time ``t``: operations invoked by then, the ones still
    pending turned into unknown outcomes (pending reads dropped)."""
    out = []
    for op in ops:
        if op.call > t:
            continue
        if op.ret is None or op.ret <= t:
            out.append(op)
        elif op.f not in _READS:
            out.append(_as_info(op))
    return out


def _shortest_prefix(ops: list[Operation], step: Callable, inits: list[Any],
                     deadline: float) -> list[Operation]:
    times = sorted({op.ret for op in ops if op.ret is not None})
    lo, hi = 0, len(times) - 1          # the prefix at times[hi] fails (it is all of ops' ok part)
    if not times or _linearizable(_prefix(ops, times[hi]), step, inits, deadline):
        return ops
    while lo < hi:
        mid = (lo + hi) // 2
        if _linearizable(_prefix(ops, times[mid]), step, inits, deadline):
            lo = mid + 1
        else:
            hi = mid
    return _prefix(ops, times[hi])


def _quiescent_cuts(ops: list[Operation]) -> list[float]:
    """Times at which no ok operation is in progress (a return not overlapped by any
    other completed operation), in increasing order."""
    spans = sorted((op.call, op.ret) for op in ops if op.ret is not None)
    cuts = []
    reach = -INF
    for i, (c, r) in enumerate(spans):
        reach = max(reach, r)
        nxt_call = spans[i + 1][0] if i + 1 < len(spans) else INF
        if reach < nxt_call and i + 1 < len(spans):
            cuts.append(reach)
    return cuts


def _rebase(ops: list[Operation], step: Callable, inits: list[Any], cut: float,
            deadline: float) -> tuple[list[tuple[Any, list[Operation]]], list[Operation]] | None:
    """Split at a quiescent ``cut``: the states the key can be in there (each with the
    unknown-outcome operations from before the cut still free to happen later), and the
    operations after it. None if that is too costly to work out."""
    before = [op for op in ops if op.call < cut]
    after = [op for op in ops if op.call >= cut]
    finals: set = set()
    for s in inits:
        _search(before, step, s, deadline, collect=finals)
    if not finals or len(finals) > 32:
        return None
    starts = []
    for state, used in finals:
        carried = [op for i, op in enumerate(before) if op.ret is None and not used >> i & 1]
        starts.append((state, carried))
    return starts, after


def _minimize(ops: list[Operation], step: Callable, init: Any, deadline: float
              ) -> tuple[list[Operation], list[Any]]:
    """A short sub-history that is still not linearizable, and the states the key may be
    in before it. Bounded by ``deadline``: on timeout, the best found so far."""
    best, inits = ops, [init]
    try:
        best = _shortest_prefix(ops, step, inits, deadline)
        best, inits = _latest_window(best, step, inits, deadline)
        best = _drop_reads(best, step, inits, deadline)
    except BudgetExceeded:
        pass
    return sorted(best, key=lambda o: (o.call, o.index)), inits


def _latest_window(ops: list[Operation], step: Callable, inits: list[Any], deadline: float
                   ) -> tuple[list[Operation], list[Any]]:
    cuts = _quiescent_cuts(ops)
    best: tuple[list[Operation], list[Any]] = (ops, inits)
    lo, hi = 0, len(cuts) - 1
    # Later cuts give shorter windows. Failing is roughly monotone in the cut (an
    # earlier cut's window starts from states the later cut's exploration includes), so
    # binary-search it; every window kept is verified to fail on its own.
    while lo <= hi:
        mid = (lo + hi) // 2
        found = _window(ops, step, inits, cuts[mid], deadline)
        if found is not None:
            best = found
            lo = mid + 1
        else:
            hi = mid - 1
    return _with_a_write(ops, step, inits, cuts, hi, best, deadline)


def _window(ops: list[Operation], step: Callable, inits: list[Any], cut: float,
            deadline: float) -> tuple[list[Operation], list[Any]] | None:
    """The window after ``cut`` and the states it may start from, if it fails alone."""
    split = _rebase(ops, step, inits, cut, deadline)
    if split is None:
        return None
    starts, after = split
    carried = {id(o): o for _, c in starts for o in c}
    window = sorted(list(carried.values()) + after, key=lambda o: (o.call, o.index))
    states = sorted({s for s, _ in starts}, key=repr)
    # Every carried unknown operation free from every state is more permissive than
    # each (state, carried) pair: failing like this is the stronger proof.
    if _linearizable(window, step, states, deadline):
        return None
    return window, states


def _with_a_write(ops: list[Operation], step: Callable, inits: list[Any], cuts: list[float],
                  j: int, best: tuple[list[Operation], list[Any]], deadline: float
                  ) -> tuple[list[Operation], list[Any]]:
    """A window of reads only is a proof but a poor explanation: move the cut back to
    just before the last completed write, so the write the reads contradict is shown."""
    if j < 0 or any(o.f not in _READS and o.status == OK for o in best[0]):
        return best
    last_write = max((o.call for o in ops if o.f not in _READS and o.status == OK
                      and o.call < cuts[j]), default=None)
    if last_write is None:
        return (ops, inits) if len(ops) <= 3 * len(best[0]) + 10 else best
    earlier = [k for k in range(j) if cuts[k] <= last_write]
    if not earlier:
        return ops, inits
    found = _window(ops, step, inits, cuts[earlier[-1]], deadline)
    return found if found is not None else best


def _drop_reads(ops: list[Operation], step: Callable, inits: list[Any], deadline: float
                ) -> list[Operation]:
    """Remove reads one at a time while the rest still fails (removing a read from a
    linearizable history leaves it linearizable, so the result is still a proof)."""
    cur = list(ops)
    for op in sorted((o for o in ops if o.f in _READS), key=lambda o: -o.call):
        trial = [o for o in cur if o is not op]
        if not _linearizable(trial, step, inits, deadline):
            cur = trial
    return cur


# --------------------------------------------------------------------------- formats


def _norm_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, (list, tuple)):
        return [_norm_value(x) for x in v]
    return v


def _normalize_output(f: str, out: Any) -> Any:
    if f == XRANGE and out is not None:
        return tuple((str(e[0]), _norm_value(e[1])) for e in out)
    if f in (INCR, DELETE) and isinstance(out, str) and re.fullmatch(r"-?\d+", out):
        return int(out)
    return _norm_value(out)


def parse_json_history(data: Any) -> list[Operation]:
    """The JSON format (docs/torture.md): ``{"operations": [...]}`` or a bare list; each
    operation ``{"client_id", "call", "return", "input": {"f", "key", "value"},
    "output": {"type": "ok"|"fail"|"info", "value", "error"}}``. Porcupine's capitalized
    field names (ClientId, Input, Call, Output, Return) are accepted too."""
    items = data.get("operations") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("expected a list of operations or {\"operations\": [...]}")
    out = []
    for n, item in enumerate(items):
        g = (lambda k, d=None, item=item: item.get(k, item.get(k[:1].upper() + k[1:], d)))
        inp = g("input") or {}
        outp = g("output") or {}
        client = item.get("client_id", item.get("ClientId", 0))
        status = outp.get("type", OK)
        if status not in (OK, FAIL, INFO):
            raise ValueError(f"operation {n}: output type must be ok, fail or info")
        f = normalize_kind(inp["f"])
        ret = g("return")
        if status == INFO:
            ret = None
        elif ret is None:
            raise ValueError(f"operation {n}: an ok/fail operation needs a return time")
        output = _normalize_output(f, outp.get("value")) if status == OK else None
        out.append(Operation(int(client), str(inp["key"]), f, _norm_value(inp.get("value")),
                             output, float(g("call")), None if ret is None else float(ret),
                             status, n, outp.get("error")))
    return out


def operation_to_json(op: Operation) -> dict[str, Any]:
    output: dict[str, Any] = {"type": op.status}
    if op.status == OK:
        output["value"] = [list(e) for e in op.output] if op.f == XRANGE else op.output
    if op.error:
        output["error"] = op.error
    inp: dict[str, Any] = {"f": op.f, "key": op.key}
    if op.value is not None:
        inp["value"] = op.value
    return {"client_id": op.client, "call": op.call, "return": op.ret, "input": inp,
            "output": output}


def write_json_history(ops: Iterable[Operation], fp: Any, meta: dict | None = None) -> None:
    doc = {"format": "raft-lincheck/1", **(meta or {}),
           "operations": [operation_to_json(o) for o in ops]}
    json.dump(doc, fp, indent=None, separators=(",", ":"))
    fp.write("\n")


# --- EDN (Jepsen) ---

_EDN_TOKEN = re.compile(r"""[\s,]+|(\#\{|[\[\]{}()])|("(?:[^"\\]|\\.)*")|([^\s,\[\]{}()"]+)|(.)""",
                        re.S)


def _edn_tokens(text: str) -> list[tuple[str, str]]:
    toks = []
    append = toks.append
    for punct, string, atom, bad in _EDN_TOKEN.findall(text):
        if punct:
            append(("punct", punct))
        elif atom:
            append(("atom", atom))
        elif string:
            append(("str", string[1:-1]))
        elif bad:
            raise ValueError(f"EDN: cannot parse {bad!r}")
    return toks


def _edn_atom(a: str) -> Any:
    if a == "nil":
        return None
    if a == "true":
        return True
    if a == "false":
        return False
    if a.startswith(":"):
        return Keyword(a[1:])
    if re.fullmatch(r"[-+]?\d+N?", a):
        return int(a.rstrip("N"))
    try:
        return float(a.rstrip("M"))
    except ValueError:
        return Keyword(a)  # a symbol: keep its name


class Keyword(str):
    """An EDN keyword (``:ok``), a str subclass that prints back with its colon."""


def _edn_parse(toks: list[tuple[str, str]], pos: int) -> tuple[Any, int]:
    """One form starting at ``toks[pos]``: (value, position after it)."""
    if pos >= len(toks):
        raise ValueError("EDN: unexpected end of input")
    kind, tok = toks[pos]
    if kind == "str":
        return (json.loads('"' + tok + '"') if "\\" in tok else tok), pos + 1
    if kind == "atom":
        return _edn_atom(tok), pos + 1
    close = {"[": "]", "(": ")", "{": "}", "#{": "}"}.get(tok)
    if close is None:
        raise ValueError(f"EDN: unexpected {tok!r}")
    items = []
    pos += 1
    while True:
        if pos >= len(toks):
            raise ValueError("EDN: unterminated collection")
        if toks[pos] == ("punct", close):
            pos += 1
            break
        item, pos = _edn_parse(toks, pos)
        items.append(item)
    if tok == "{":
        if len(items) % 2:
            raise ValueError("EDN: a map needs an even number of forms")
        return dict(zip(items[::2], items[1::2])), pos
    return items, pos


def read_edn(text: str) -> list[Any]:
    """Every top-level EDN form in ``text`` (the small subset Jepsen histories use)."""
    toks = _edn_tokens(text)
    forms = []
    pos = 0
    while pos < len(toks):
        form, pos = _edn_parse(toks, pos)
        forms.append(form)
    return forms


def _edn_str(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, Keyword):
        return ":" + v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_edn_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_edn_str(k)} {_edn_str(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as EDN")


def write_edn_history(ops: Iterable[Operation], fp: Any) -> None:
    """Jepsen's history format: an ``:invoke`` line and an ``:ok``/``:fail``/``:info``
    line per operation, in time order; ``:value`` is ``[key value]`` (jepsen.independent
    tuples); ``:time`` in nanoseconds. Unknown outcomes get their ``:info`` line at the
    end of the history, as Jepsen writes them when the client gave up."""
    ops = list(ops)
    process = _jepsen_processes(ops)
    events = []
    last = 0.0
    for op in ops:
        last = max(last, op.call, op.ret or 0.0)
        events.append((op.call, 0, op, "invoke"))
    for op in ops:
        t = op.ret if op.ret is not None else None
        events.append((t if t is not None else INF, 1, op, op.status))
    events.sort(key=lambda e: (e[0], e[1], e[2].index))
    for n, (t, _, op, typ) in enumerate(events):
        if typ == "invoke":
            value = [op.key, op.value]
        elif typ == OK:
            value = [op.key, [list(e) for e in op.output] if op.f == XRANGE else
                     (op.value if op.f == WRITE else op.output)]
        else:
            value = [op.key, op.value]
        rec: dict[Any, Any] = {Keyword("type"): Keyword(typ), Keyword("f"): Keyword(op.f),
                               Keyword("value"): value, Keyword("process"): process[id(op)],
                               Keyword("time"): int(last if t == INF else t),
                               Keyword("index"): n}
        if op.error and typ != "invoke":
            rec[Keyword("error")] = op.error
        fp.write(_edn_str(rec) + "\n")


def _jepsen_processes(ops: list[Operation]) -> dict[int, int]:
    """Jepsen's process ids: a process runs one operation at a time, and one whose
    operation ended ``info`` is never reused (Jepsen gives its client a new process). A
    client that has an operation in flight keeps its id; an overlapping or post-info
    operation of the same client gets a fresh id above every client id."""
    busy: dict[int, float] = {}
    current: dict[int, int] = {}
    fresh = max((o.client for o in ops), default=0) + 1
    out = {}
    for op in sorted(ops, key=lambda o: (o.call, o.index)):
        p = current.get(op.client, op.client)
        if busy.get(p, -INF) >= op.call:
            p, fresh = fresh, fresh + 1
        current[op.client] = p
        busy[p] = INF if op.ret is None else op.ret
        out[id(op)] = p
    return out


def parse_edn_history(text: str) -> list[Operation]:
    """Jepsen history lines: each process's ``:invoke`` is paired with its next
    completion (``:ok``, ``:fail``, ``:info``); an invoke never completed is ``info``.
    ``:value`` is ``[key value]`` (a jepsen.independent tuple); ``:time`` any unit."""
    forms = read_edn(text)
    if len(forms) == 1 and isinstance(forms[0], list):
        forms = forms[0]
    open_: dict[Any, tuple[int, dict]] = {}
    ops: list[Operation | None] = []
    for n, ev in enumerate(forms):
        if not isinstance(ev, dict):
            raise ValueError(f"EDN event {n} is not a map")
        typ = str(ev.get(Keyword("type")))
        proc = ev.get(Keyword("process"))
        if not isinstance(proc, int) or isinstance(proc, bool):
            continue   # :nemesis and other non-client processes
        if typ == "invoke":
            open_[proc] = (len(ops), ev)
            ops.append(None)
            continue
        if proc not in open_:
            continue  # a nemesis event or a completion without invoke
        slot, inv = open_.pop(proc)
        ops[slot] = _edn_operation(inv, ev, typ, slot)
    for proc, (slot, inv) in open_.items():
        ops[slot] = _edn_operation(inv, None, INFO, slot)
    return [o for o in ops if o is not None]


def _edn_operation(inv: dict, done: dict | None, typ: str, index: int) -> Operation:
    K = Keyword
    f = normalize_kind(str(inv[K("f")]))
    key, value = _key_value(inv.get(K("value")))
    output = None
    if typ == OK and done is not None:
        _, out = _key_value(done.get(K("value")))
        output = _normalize_output(f, out) if f != WRITE else "OK"
    client = int(inv[K("process")])
    ret = float(done[K("time")]) if done is not None and typ != INFO else None
    err = done.get(K("error")) if done is not None else None
    return Operation(client, str(key), f, _norm_value(value), output, float(inv[K("time")]),
                     ret, typ if typ in (OK, FAIL) else INFO, index,
                     None if err is None else str(err))


def _key_value(v: Any) -> tuple[Any, Any]:
    if isinstance(v, list) and len(v) == 2:
        return v[0], v[1]
    return "", v   # a single-register history without independent keys


def load_history(path: str) -> list[Operation]:
    """Read a history file, JSON or EDN (decided by its first non-blank character)."""
    with open(path, encoding="utf-8") as fp:
        text = fp.read()
    first = text.lstrip()[:1]
    if first in ("[", "{") and not text.lstrip().startswith("{:"):
        try:
            return parse_json_history(json.loads(text))
        except json.JSONDecodeError:
            pass
    return parse_edn_history(text)


# --------------------------------------------------------------------------- reporting


def format_counterexample(kr: KeyResult, t0: float | None = None) -> str:
    """The failing sub-history of one key, one operation a line, times in ms."""
    ops = kr.counterexample
    if t0 is None:
        t0 = min((o.call for o in ops), default=0.0)
    lines = [f"key {kr.key!r} ({kr.model}) is not linearizable; a failing sub-history of "
             f"{len(ops)} operation(s) (of {kr.operations}):"]
    if kr.initial_states != [None] and kr.initial_states != [()]:
        states = ", ".join(_show_state(s) for s in kr.initial_states)
        lines.append(f"  the key's possible state(s) just before it: {states}")
    for o in ops:
        end = "     ?" if o.ret is None else f"{(o.ret - t0) / 1e6:10.3f}"
        lines.append(f"  client {o.client:>3}  [{(o.call - t0) / 1e6:10.3f} ms, {end} ms]  "
                     f"{o.describe()}")
    return "\n".join(lines)


def _show_state(s: Any) -> str:
    if isinstance(s, tuple):
        return "[" + ", ".join(str(v) for _, v in s) + "]" if len(s) <= 6 else \
            f"[... {len(s)} entries, last {s[-1][1]!r}]"
    return "nil" if s is None else repr(s)


def render_html(kr: KeyResult, context: list[Operation] | None = None,
                title: str = "lincheck counterexample") -> str:
    """A self-contained HTML timeline: one lane per client, the counterexample's
    operations in red, other operations of the key in the same time span in grey."""
    bad = {id(o) for o in kr.counterexample}
    ops = list(kr.counterexample)
    if ops and context:
        lo = min(o.call for o in ops)
        hi = max((o.ret if o.ret is not None else o.call) for o in ops)
        ops += [o for o in context if id(o) not in bad and o.key == kr.key and o.status != FAIL
                and o.call <= hi and (o.ret is None or o.ret >= lo)]
    if not ops:
        return f"<!doctype html><title>{html.escape(title)}</title><p>no operations</p>"
    t0 = min(o.call for o in ops)
    t1 = max((o.ret if o.ret is not None else o.call) for o in ops)
    span = max(t1 - t0, 1.0) * 1.15
    clients = sorted({o.client for o in ops})
    lane = {c: n for n, c in enumerate(clients)}
    rows = []
    for o in sorted(ops, key=lambda o: o.call):
        left = 100 * (o.call - t0) / span
        end = o.ret if o.ret is not None else t0 + span
        width = max(0.6, 100 * (end - o.call) / span)
        cls = "bad" if id(o) in bad else "ctx"
        if o.ret is None:
            cls += " info"
        label = html.escape(o.describe())
        tip = html.escape(f"{o.describe()}  call {(o.call - t0) / 1e6:.3f} ms, return "
                          + ("?" if o.ret is None else f"{(o.ret - t0) / 1e6:.3f} ms"))
        rows.append(f'<div class="op {cls}" style="top:{lane[o.client] * 44 + 4}px;'
                    f'left:{left:.3f}%;width:{width:.3f}%" title="{tip}">{label}</div>')
    lanes = "".join(f'<div class="lane" style="top:{lane[c] * 44}px">client {c}</div>'
                    for c in clients)
    states = ", ".join(html.escape(_show_state(s)) for s in kr.initial_states)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 13px sans-serif; margin: 20px; }}
.wrap {{ position: relative; margin-left: 80px; height: {len(clients) * 44 + 10}px;
        border-left: 1px solid #888; }}
.lane {{ position: absolute; left: -80px; width: 76px; height: 40px; line-height: 40px;
        color: #444; }}
.op {{ position: absolute; height: 34px; overflow: hidden; white-space: nowrap;
      font: 12px monospace; padding: 2px 4px; box-sizing: border-box; border-radius: 3px; }}
.bad {{ background: #f4b4b4; border: 2px solid #c00; }}
.ctx {{ background: #e4e4e4; border: 1px solid #999; color: #555; }}
.info {{ border-right-style: dashed; opacity: .8; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<p>Key <b>{html.escape(kr.key)}</b> ({kr.model}) is not linearizable. In red: a failing
sub-history of {len(kr.counterexample)} operation(s) (of {kr.operations} on this key); in grey:
other operations on the key in the same span. Possible state of the key before it:
<b>{states}</b>. A box spans invocation to completion; a dashed end means the outcome is
unknown (it may take effect at any later time, or never). Times in ms from the first
invocation shown; hover for details.</p>
<div class="wrap">{lanes}{''.join(rows)}</div>
</body></html>
"""


# --------------------------------------------------------------------------- CLI


def lincheck_main(args: argparse.Namespace) -> int:
    try:
        ops = load_history(args.history)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"raft lincheck: {args.history}: {e}", file=sys.stderr)
        return 2
    result = check(ops, budget=args.budget)
    report(result, ops, html_path=args.html, out=sys.stdout)
    if args.json:
        print(json.dumps(result.summary(), sort_keys=True))
    return {"ok": 0, "violation": 1}.get(result.verdict, 3)


def report(result: CheckResult, ops: list[Operation], html_path: str | None = None,
           out: Any = sys.stdout) -> None:
    """Print the verdict and, for the first violating key, its counterexample (and write
    the HTML timeline if asked)."""
    print(f"lincheck: {result.verdict}: {result.operations} operations on {result.keys} "
          f"key(s) checked in {result.seconds:.2f} s", file=out)
    for kr in result.unknown:
        print(f"  key {kr.key!r}: unknown (budget exhausted after {kr.seconds:.1f} s)", file=out)
    bad = result.violations
    if bad:
        print(f"  not linearizable: {', '.join(repr(k.key) for k in bad)}", file=out)
        print(format_counterexample(bad[0]), file=out)
        if html_path:
            with open(html_path, "w", encoding="utf-8") as fp:
                fp.write(render_html(bad[0], ops))
            print(f"  timeline: {html_path}", file=out)


def add_lincheck_subcommand(sub: Any) -> None:
    p = sub.add_parser("lincheck", help="check a history (JSON or Jepsen EDN) for linearizability")
    p.add_argument("history", metavar="HISTORY", help="a history file (docs/torture.md)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds for the search; past it the verdict is 'unknown' (default 60)")
    p.add_argument("--html", metavar="FILE", help="write an HTML timeline of the counterexample")
    p.add_argument("--json", action="store_true", help="also print a JSON summary line")
    p.set_defaults(func=lincheck_main)
