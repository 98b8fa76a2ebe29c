"""The linearizability checker (raft/testing/lincheck.py) on generated histories with known
verdicts: linearizable ones (concurrent operations, unknown outcomes, every operation
kind) and four kinds of planted anomaly (stale read, lost update, lost increment, two
writes seen in opposite orders). Every generator takes a seed; failures print it."""
from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time

import pytest

from raft.testing.lincheck import (
    DELETE, INCR, INFO, OK, READ, WRITE, XADD, XRANGE, Operation, _search,
    check, check_key, load_history, model_for, parse_edn_history, parse_json_history,
    render_html, write_edn_history, write_json_history,
)

SEEDS = range(32)


# --------------------------------------------------------------------------- generators


class Gen:
    """Builds histories of a linearizable system: each operation takes effect at a point
    drawn inside its [call, return] interval (or, for unknown outcomes, at any later
    point or never), and outputs are computed by applying the effects in that order."""

    def __init__(self, seed: int, clients: int = 6) -> None:
        self.rng = random.Random(seed)
        self.clients = clients
        self.free = [0] * clients          # when each client may call next
        self.planned: list[tuple[float, Operation]] = []
        self.unapplied: list[Operation] = []  # info ops that never take effect
        self.index = 0

    def op(self, client: int, key: str, f: str, value: object = None, *, call: int,
           ret: int, info: bool = False, lin: float | None = None,
           never: bool = False) -> Operation:
        o = Operation(client, key, f, value, None, call, None if info else ret,
                      INFO if info else OK, self.index)
        self.index += 1
        if never:
            self.unapplied.append(o)
        else:
            if lin is None:
                lin = self.rng.uniform(call, ret) if not info else \
                    call + self.rng.uniform(0, 4 * (ret - call) + 1)
            self.planned.append((lin, o))
        self.free[client] = max(self.free[client], ret)
        return o

    def random_ops(self, n: int, keys: list[str], p_info: float = 0.05) -> None:
        rng = self.rng
        for _ in range(n):
            c = rng.randrange(self.clients)
            call = self.free[c] + rng.randint(1, 40)
            ret = call + rng.randint(1, 120)
            key = rng.choice(keys)
            if key.startswith("s"):
                f = rng.choice((XADD, XADD, XRANGE))
                value = f"e{self.index}" if f == XADD else None
            else:
                f = rng.choice((READ, READ, WRITE, WRITE, INCR, DELETE))
                value = str(rng.randint(0, 9)) if f == WRITE else None
            info = rng.random() < p_info
            self.op(c, key, f, value, call=call, ret=ret, info=info,
                    never=info and rng.random() < 0.5)

    def history(self) -> list[Operation]:
        """Apply the planned effects in order and fill in the outputs."""
        kv: dict[str, object] = {}
        streams: dict[str, tuple] = {}
        last_id = (0, 0)
        for lin, o in sorted(self.planned, key=lambda p: (p[0], p[1].index)):
            out: object
            if o.f == READ:
                out = kv.get(o.key)
            elif o.f == WRITE:
                kv[o.key], out = o.value, "OK"
            elif o.f == DELETE:
                out = 1 if kv.pop(o.key, None) is not None else 0
            elif o.f == INCR:
                n = int(kv.get(o.key) or 0) + 1
                kv[o.key], out = str(n), n
            elif o.f == XADD:
                ms = int(lin)
                last_id = (ms, 0) if ms > last_id[0] else (last_id[0], last_id[1] + 1)
                out = f"{last_id[0]}-{last_id[1]}"
                streams[o.key] = streams.get(o.key, ()) + ((out, o.value),)
            else:
                out = streams.get(o.key, ())
            if o.status == OK:
                o.output = out
        ops = [o for _, o in self.planned] + self.unapplied
        return sorted(ops, key=lambda o: o.index)


def linearizable_history(seed: int, n: int = 200) -> list[Operation]:
    g = Gen(seed)
    g.random_ops(n, ["a", "b", "n", "s1"], p_info=0.08)
    return g.history()


def _base(seed: int) -> Gen:
    """Background traffic on other keys, so the anomaly hides among correct operations."""
    g = Gen(seed, clients=8)
    g.random_ops(60, ["a", "b", "s1"], p_info=0.05)
    return g


def _prefix_on_key(g: Gen, key: str, n: int) -> int:
    """A few sequential correct writes/reads on ``key``; returns the time after them."""
    t = max(g.free)
    for i in range(n):
        c = g.rng.randrange(g.clients)
        g.op(c, key, WRITE, f"p{i}", call=t + 1, ret=t + 10)
        g.op((c + 1) % g.clients, key, READ, call=t + 12, ret=t + 20)
        t += 21
    return t


def stale_read(seed: int) -> list[Operation]:
    """W(old) < W(new) < R, and R returns old: the reader saw a state already replaced."""
    g = _base(seed)
    t = _prefix_on_key(g, "x", g.rng.randint(0, 3))
    r = g.rng.randint
    w1 = g.op(0, "x", WRITE, "old", call=t + 1, ret=t + 1 + r(1, 30))
    w2 = g.op(1, "x", WRITE, "new", call=w1.ret + r(1, 20), ret=w1.ret + r(21, 60))
    for k in range(r(0, 3)):  # correct concurrent reads
        call = w2.call - r(0, 5)
        g.op(3 + k, "x", READ, call=call, ret=w2.call + r(0, 5), lin=call)
    bad = g.op(2, "x", READ, call=w2.ret + r(1, 30), ret=w2.ret + r(31, 60),
               lin=w1.ret + 0.01)   # answered from the state between the two writes
    g.op(2, "x", READ, call=bad.ret + 1, ret=bad.ret + r(2, 20))  # a later correct read
    return g.history()


def lost_update(seed: int) -> list[Operation]:
    """An acknowledged write that no later read ever sees."""
    g = _base(seed)
    t = _prefix_on_key(g, "x", g.rng.randint(1, 3))
    r = g.rng.randint
    w = g.op(0, "x", WRITE, "lost", call=t + 1, ret=t + r(2, 40), never=True)
    w.output = "OK"
    t = w.ret
    for k in range(r(2, 4)):
        t += r(1, 30)
        g.op(1 + k, "x", READ, call=t, ret=t + r(1, 20))
    return g.history()


def lost_increment(seed: int) -> list[Operation]:
    """Acknowledged increments of which one vanished: either two INCRs answer the same
    number, or a read after all of them sees one fewer."""
    g = _base(seed)
    r = g.rng.randint
    t = max(g.free)
    n = r(3, 8)
    incs = []
    for i in range(n):   # overlapping increments, as from concurrent clients
        c = i % g.clients
        call = t + r(0, 15)
        incs.append(g.op(c, "n", INCR, call=call, ret=call + r(5, 40)))
        t = call
    hist = g.history()
    end = max(o.ret for o in incs)
    if seed % 2 == 0:
        victim = max(incs, key=lambda o: o.output)
        other = min(incs, key=lambda o: o.output)
        victim.output = other.output           # answered a number already given out
    else:
        read = Operation(7, "n", READ, None, str(n - 1), end + r(1, 10), end + r(11, 30),
                         OK, g.index)
        hist.append(read)
    return hist


def impossible_order(seed: int) -> list[Operation]:
    """Two concurrent writes; one reader sees a then b, another b then a."""
    g = _base(seed)
    t = _prefix_on_key(g, "x", g.rng.randint(0, 2))
    r = g.rng.randint
    wa = g.op(0, "x", WRITE, "a", call=t + r(1, 5), ret=t + r(200, 260))
    wb = g.op(1, "x", WRITE, "b", call=t + r(1, 5), ret=t + r(200, 260))
    x1 = t + r(10, 40)
    hist = g.history()
    reads = [Operation(2, "x", READ, None, "a", x1, x1 + 20, OK, g.index),
             Operation(2, "x", READ, None, "b", x1 + 40, x1 + 60, OK, g.index + 1),
             Operation(3, "x", READ, None, "b", x1 + r(0, 5), x1 + 25, OK, g.index + 2),
             Operation(3, "x", READ, None, "a", x1 + 45, x1 + 70, OK, g.index + 3)]
    assert all(o.ret < min(wa.ret, wb.ret) for o in reads)
    return hist + reads


def concurrent_unknown(seed: int) -> list[Operation]:
    """Linearizable but only through the permissive cases: a timed-out write whose value
    is read much later, reads concurrent with writes seeing either side, an unknown
    INCR that did apply, stream entries added by a timed-out XADD."""
    g = _base(seed)
    t = _prefix_on_key(g, "x", 1)
    r = g.rng.randint
    g.op(0, "x", WRITE, "late", call=t + 1, ret=t + 5, info=True, lin=t + 500)
    g.op(1, "x", READ, call=t + 10, ret=t + 20)                     # before it applies
    g.op(2, "x", READ, call=t + 400, ret=t + 600, lin=t + 550)       # after
    g.op(3, "n", INCR, call=t + 1, ret=t + 4, info=True, lin=t + 30)
    g.op(3, "n", INCR, call=t + 40, ret=t + 60)
    g.op(4, "s2", XADD, "e-a", call=t + 1, ret=t + 9, info=True, lin=t + 70)
    g.op(4, "s2", XADD, "e-b", call=t + 80, ret=t + 90)
    g.op(5, "s2", XRANGE, call=t + 100, ret=t + 110)
    for k in range(r(1, 4)):
        g.op(6, "x", WRITE, f"w{k}", call=t + 700 + 50 * k, ret=t + 720 + 50 * k,
             info=k % 2 == 0, never=k == 0)
    return g.history()


BUGGY = {"stale_read": stale_read, "lost_update": lost_update,
         "lost_increment": lost_increment, "impossible_order": impossible_order}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", SEEDS)
def test_random_linearizable_histories_pass(seed: int) -> None:
    h = linearizable_history(seed)
    res = check(h, budget=20)
    assert res.verdict == "ok", f"seed {seed}: {res.summary()}"


@pytest.mark.parametrize("seed", SEEDS)
def test_concurrent_and_unknown_outcomes_pass(seed: int) -> None:
    res = check(concurrent_unknown(seed), budget=20)
    assert res.verdict == "ok", f"seed {seed}: {res.summary()}"


@pytest.mark.parametrize("kind", sorted(BUGGY))
@pytest.mark.parametrize("seed", SEEDS)
def test_anomalies_are_found_with_a_short_counterexample(kind: str, seed: int) -> None:
    h = BUGGY[kind](seed)
    res = check(h, budget=20)
    assert res.verdict == "violation", f"{kind} seed {seed}: {res.summary()}"
    bad_keys = {k.key for k in res.violations}
    assert bad_keys == {"n" if kind == "lost_increment" else "x"}, f"{kind} seed {seed}"
    kr = res.violations[0]
    cex = kr.counterexample
    assert 1 <= len(cex) <= 12, f"{kind} seed {seed}: {len(cex)} ops"
    # The counterexample is itself a proof: not linearizable from any state listed.
    _, step, _ = model_for(cex)
    deadline = time.monotonic() + 10
    assert not any(_search(list(cex), step, s, deadline) for s in kr.initial_states), \
        f"{kind} seed {seed}"


def test_counterexample_of_a_stale_read_names_the_write_and_the_read() -> None:
    kr = check(stale_read(3)).violations[0]
    fs = [(o.f, o.value if o.f == WRITE else o.output) for o in kr.counterexample]
    assert (READ, "old") in fs and (WRITE, "new") in fs, fs


def test_unknown_verdict_when_the_budget_runs_out() -> None:
    """18 concurrent writes of unknown outcome and a read of a value nobody wrote: the
    search must try every subset, far beyond 0.2 s; the answer is 'unknown', not 'ok'."""
    ops = [Operation(i, "k", WRITE, f"v{i}", None, 0, None, INFO, i) for i in range(18)]
    ops += [Operation(30 + i, "k", READ, None, f"v{i}", 10, 20, OK, 18 + i) for i in range(18)]
    ops.append(Operation(99, "k", READ, None, "nobody", 10, 20, OK, 99))
    res = check_key(ops, budget=0.2)
    assert res.verdict == "unknown"


def test_json_and_edn_round_trips_keep_the_verdict() -> None:
    for h, want in ((linearizable_history(5), "ok"), (stale_read(5), "violation"),
                    (lost_increment(4), "violation"), (concurrent_unknown(2), "ok")):
        buf = io.StringIO()
        write_json_history(h, buf)
        again = parse_json_history(json.loads(buf.getvalue()))
        assert check(again).verdict == want
        buf = io.StringIO()
        write_edn_history(h, buf)
        assert buf.getvalue().startswith("{:type :invoke")
        again = parse_edn_history(buf.getvalue())
        assert len(again) == len(h)
        assert check(again).verdict == want


def test_jepsen_edn_lines_are_read() -> None:
    text = """{:type :invoke, :f :write, :value [:k 1], :process 0, :time 10}
{:type :ok, :f :write, :value [:k 1], :process 0, :time 20}
{:type :invoke, :f :write, :value [:k 2], :process 1, :time 30}
{:type :info, :f :start-partition, :value nil, :process :nemesis, :time 40}
{:type :invoke, :f :read, :value [:k nil], :process 2, :time 50}
{:type :info, :f :write, :value [:k 2], :process 1, :time 60, :error :timeout}
{:type :ok, :f :read, :value [:k 2], :process 2, :time 70}
{:type :invoke, :f :read, :value [:k nil], :process 2, :time 80}
{:type :ok, :f :read, :value [:k 1], :process 2, :time 90}
"""
    ops = parse_edn_history(text)
    assert [o.status for o in ops] == [OK, INFO, OK, OK]
    assert ops[0].value == 1 and ops[2].output == 2
    res = check(ops)
    assert res.verdict == "violation"   # 2 was seen, then 1 again: the register went back


def test_html_timeline_is_self_contained(tmp_path) -> None:
    h = stale_read(1)
    kr = check(h).violations[0]
    page = render_html(kr, h)
    assert "<html>" in page and 'class="op bad' in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert sum(page.count(f"client {c}</div>") for c in {o.client for o in kr.counterexample}) \
        == len({o.client for o in kr.counterexample})


def test_cli_verdicts_and_exit_status(tmp_path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.edn"
    with open(good, "w") as fp:
        write_json_history(linearizable_history(7), fp)
    with open(bad, "w") as fp:
        write_edn_history(impossible_order(7), fp)
    assert len(load_history(str(bad))) == len(impossible_order(7))
    run = [sys.executable, "-c", "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))",
           "lincheck"]
    p = subprocess.run(run + [str(good)], capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))   # not the source tree: no compiled core there
    assert p.returncode == 0, p.stdout + p.stderr
    html_path = tmp_path / "t.html"
    p = subprocess.run(run + [str(bad), "--html", str(html_path), "--json"],
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "not linearizable" in p.stdout and html_path.exists()
    assert json.loads(p.stdout.strip().splitlines()[-1])["violating_keys"] == ["x"]


def test_ten_thousand_operations_on_twenty_keys_check_in_seconds() -> None:
    seed = 11
    g = Gen(seed, clients=12)
    g.random_ops(10_000, [f"k{i}" for i in range(16)] + [f"s{i}" for i in range(4)],
                 p_info=0.02)
    h = g.history()
    t0 = time.monotonic()
    res = check(h, budget=60)
    dt = time.monotonic() - t0
    assert res.verdict == "ok", f"seed {seed}: {res.summary()}"
    assert dt < 30, f"seed {seed}: {dt:.1f} s"   # about 1-3 s unloaded; generous for CI


def counter_history(seed: int, n: int, p_info: float) -> list[Operation]:
    """An INCR/GET counter where a fraction of the INCRs time out (half of those applied
    later, half never): the case the symmetry reduction exists for."""
    g = Gen(seed, clients=10)
    rng = g.rng
    for _ in range(n):
        c = rng.randrange(g.clients)
        call = g.free[c] + rng.randint(1, 40)
        ret = call + rng.randint(1, 120)
        f = INCR if rng.random() < 0.6 else READ
        info = f == INCR and rng.random() < p_info
        g.op(c, "counter", f, call=call, ret=ret, info=info, never=info and rng.random() < 0.5)
    return g.history()


@pytest.mark.parametrize("seed", range(2))
def test_counter_with_many_timed_out_increments(seed: int) -> None:
    h = counter_history(seed, 800, 0.05)
    assert sum(o.status == INFO for o in h) > 10, f"seed {seed}"
    t0 = time.monotonic()
    res = check(h, budget=60)
    assert res.verdict == "ok", f"seed {seed}: {res.summary()}"
    assert time.monotonic() - t0 < 20, f"seed {seed}"   # about 0.15 s unloaded
    # A final read lower than the number of acknowledged INCRs: an increment was lost,
    # whatever the timed-out ones did (they can only add).
    end = max(o.ret for o in h if o.ret is not None)
    acked = sum(1 for o in h if o.f == INCR and o.status == OK)
    h.append(Operation(99, "counter", READ, None, str(acked - 1), end + 1, end + 2, OK, len(h)))
    # (proving it means exhausting the search: a few seconds; minimizing a counter's
    # history is the slow part and is not what this test is about)
    res = check(h, budget=60, minimize=False)
    assert res.verdict == "violation", f"seed {seed}: {res.summary()}"
