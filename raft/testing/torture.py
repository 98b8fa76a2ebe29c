"""``raft torture``: a Jepsen-style test of a real local cluster.

    raft torture                                   5 nodes, 10 clients, 30 s, every fault
    raft torture --nodes 3 --duration 60 --seed 42 --nemesis kill,partition-one
    raft torture --debug-stale-reads               plant a bug: it must be caught

What it does:

1. starts ``--nodes`` ``raft serve`` processes (``LocalCluster``, fsync on), each under
   its own group id so that iptables can tell their packets apart on loopback;
2. runs ``--clients`` concurrent clients, each one operation at a time, over a small key
   set: SET (unique values) / GET / INCR / DEL on string keys, XADD / XRANGE on streams.
   Writes go to the node the client believes leads; reads go to a random node half of
   the time. ``-MOVED`` is followed (up to 3 hops) within the operation. Each operation
   is recorded with its invocation and completion times and an outcome: ``ok``;
   ``fail`` when it certainly did not take effect (``-MOVED``, ``-CLUSTERDOWN``, a
   refused connection: nothing was executed); ``info`` when unknown (a timeout or a
   dropped connection after sending, ``-TRYAGAIN``, any other error);
3. meanwhile a **nemesis** injects one fault at a time from a schedule drawn from the
   seed (same seed, same schedule): SIGKILL + restart of the leader or a random node,
   SIGSTOP/SIGCONT pauses, and partitions of the peer ports (one node isolated, a
   minority/majority split, a one-way drop) made of iptables rules tagged with a comment
   unique to this run and always removed (finally, atexit, SIGTERM);
4. heals everything, waits for a leader, reads every key back, reports every
   acknowledged write that is missing (stream entries, counter increments), writes the
   history (JSON and Jepsen EDN) and checks it with ``raft.testing.lincheck``.

Exit status: 0 if the history is linearizable and nothing acknowledged is missing; 1 on
a violation; 2 for bad arguments or a cluster that never served; 3 if the checker ran
out of budget (``unknown``).
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis

from raft.testing import lincheck
from raft.testing.lincheck import FAIL, INFO, OK, Operation
from raft.storage import fileio
from raft.testing.cluster import LocalCluster
from raft.resp.probe import RespClientError, resp_command

__all__ = ["TortureConfig", "NEMESIS_KINDS", "Firewall", "nemesis_schedule", "run_torture",
           "add_torture_subcommand"]

NEMESIS_KINDS = ("kill", "kill-leader", "pause", "pause-leader", "partition-one",
                 "partition-split", "partition-oneway", "power-loss", "power-loss-all",
                 "disk-slow", "disk-fail", "transfer")
PARTITION_KINDS = ("partition-one", "partition-split", "partition-oneway")
POWER_KINDS = ("power-loss", "power-loss-all")      # need [debug] power_loss on the nodes
DISK_KINDS = ("disk-slow", "disk-fail")             # need [debug] failpoints
FINAL_CLIENT = 1_000_000        # the client id of the final read-back


@dataclass
class TortureConfig:
    nodes: int = 5
    clients: int = 10
    duration: float = 30.0
    seed: int | None = None
    keys: int = 6               # string keys k0..; plus one INCR-only counter and streams
    streams: int = 2            # stream keys written at a time
    stream_appends: int = 200   # XADDs a stream key takes before a fresh key replaces it
    key_ops: int = 2000         # operations a string/counter key takes before it is replaced
    nemesis: tuple[str, ...] = NEMESIS_KINDS
    fault_min: float = 1.0      # seconds a fault lasts
    fault_max: float = 3.0
    gap_min: float = 0.5        # seconds between faults
    gap_max: float = 2.0
    read_any: float = 0.5       # probability a read goes to a random node
    op_timeout: float = 2.0     # seconds before a client gives up on a reply: info
    propose_timeout: float = 1.5
    election_ticks: int = 30
    durability: str = "fsync"
    debug_stale_reads: bool = False
    directory: str | None = None
    keep: bool = False
    check_budget: float = 60.0
    html: str | None = None


# --------------------------------------------------------------------------- nemesis


@dataclass
class NemesisEvent:
    at: float                   # seconds after the start of the load
    kind: str
    duration: float
    node: int                   # the random node (for the *-leader kinds: a fallback)
    group: tuple[int, ...] = () # partition-split: the minority side
    to_leader: bool = False     # partition-one / -oneway, power-loss, disk-*: aim at the leader
    slow_ms: float = 0.0        # disk-slow: each WAL sync sleeps this long first

    def describe(self) -> str:
        extra = f" minority={list(self.group)}" if self.group else ""
        target = "leader" if self.kind.endswith("-leader") or self.to_leader else f"node {self.node}"
        if self.kind == "partition-split":
            target = "split"
        if self.kind == "power-loss-all":
            target = "every node"
        if self.kind == "disk-slow":
            extra = f" +{self.slow_ms:.0f} ms per sync"
        return f"t={self.at:6.2f}s {self.kind:<17} {target}{extra} for {self.duration:.2f}s"


def nemesis_schedule(seed: int, kinds: tuple[str, ...], nodes: int, duration: float,
                     cfg: TortureConfig) -> list[NemesisEvent]:
    """One fault at a time, drawn from ``seed`` alone: the same seed gives the same
    schedule (which node is the leader at run time is the only thing left to chance)."""
    rng = random.Random(f"nemesis-{seed}")
    ids = list(range(1, nodes + 1))
    events: list[NemesisEvent] = []
    t = 1.0
    if not kinds:
        return events
    while True:
        kind = rng.choice(kinds)
        dur = rng.uniform(cfg.fault_min, cfg.fault_max)
        node = rng.choice(ids)
        group = tuple(sorted(rng.sample(ids, (nodes - 1) // 2))) if nodes > 1 else ()
        to_leader = rng.random() < 0.5
        if t + dur > duration - 1.0:
            break
        # Drawn for every event (used or not), so adding kinds keeps older draws.
        slow_ms = float(rng.choice((5, 20, 50, 200)))
        events.append(NemesisEvent(t, kind, dur, node,
                                   group if kind == "partition-split" else (), to_leader,
                                   slow_ms if kind == "disk-slow" else 0.0))
        t += dur + rng.uniform(cfg.gap_min, cfg.gap_max)
    return events


class Firewall:
    """iptables DROP rules on loopback between node processes, told apart by group id
    (``-m owner --gid-owner``: node i runs with its own gid). Cutting i -> j drops the
    packets i sends to j's peer port, on i's own connection to j, where every message
    i sends j travels (the transport sends on the connection it dialed): j -> i keeps
    working, so one-way drops are possible. Every rule carries this run's comment tag
    and is removed by ``heal`` (and at exit)."""

    def __init__(self, tag: str, gids: dict[int, int], raft_ports: dict[int, int]) -> None:
        self.tag = tag
        self.gids = gids
        self.ports = raft_ports
        self.rules: list[list[str]] = []
        self.lock = threading.Lock()

    @staticmethod
    def available() -> str | None:
        """None if iptables can be used, else why not."""
        if os.geteuid() != 0:
            return "not root"
        if shutil.which("iptables") is None:
            return "iptables is not installed (apt-get install -y iptables)"
        try:
            p = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"iptables failed: {e}"
        if p.returncode != 0:
            return f"iptables failed: {p.stderr.strip()}"
        # The owner and comment matches must exist too (xt_owner, xt_comment): try one.
        probe = Firewall(f"raft-torture-probe-{os.getpid()}", {1: 4_000_001, 2: 4_000_002},
                         {1: 1, 2: 2})
        try:
            probe.cut(1, 2)
        except (OSError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", b"") or b""
            return f"iptables cannot match on owner/comment: {err.decode(errors='replace').strip() or e}"
        finally:
            probe.heal()
        return None

    def _rule(self, src: int, dst: int) -> list[str]:
        return ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(self.ports[dst]),
                "-m", "owner", "--gid-owner", str(self.gids[src]),
                "-m", "comment", "--comment", self.tag, "-j", "DROP"]

    def cut(self, src: int, dst: int) -> None:
        """Drop everything ``src`` sends to ``dst`` (one way)."""
        rule = self._rule(src, dst)
        with self.lock:
            subprocess.run(["iptables", "-I"] + rule, check=True, capture_output=True, timeout=10)
            self.rules.append(rule)

    def heal(self) -> None:
        """Remove every rule this run added, including any left by a crash of ours."""
        with self.lock:
            for rule in self.rules:
                subprocess.run(["iptables", "-D"] + rule, capture_output=True, timeout=10)
            self.rules.clear()
            self._sweep()

    def _sweep(self) -> None:
        p = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True, timeout=10)
        for line in p.stdout.splitlines():
            if f'"{self.tag}"' in line or f" {self.tag} " in line + " ":
                args = line.split()
                if args[:1] == ["-A"]:
                    subprocess.run(["iptables", "-D"] + [a.strip('"') for a in args[1:]],
                                   capture_output=True, timeout=10)


class TortureCluster(LocalCluster):
    """A LocalCluster whose node i runs with group id ``gid_base + i`` (for the
    firewall's owner match)."""

    gid_base: int | None = None
    #: nodes whose next start is ``raft serve --force-new`` (a power loss under
    #: durability none leaves an empty directory: only the operator's override starts it)
    force_new: set[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.force_new = set()
        super().__init__(*args, **kwargs)

    def spawn(self, config_path: str, log_path: str) -> subprocess.Popen[bytes]:
        node = next(n for n in self.nodes.values() if n.config_path == config_path)
        command = self.serve_command(config_path)
        if node.id in self.force_new:
            self.force_new.discard(node.id)
            command.append("--force-new")
        group = {} if self.gid_base is None else {"group": self.gid_base + node.id}
        with open(log_path, "ab") as log_fp:
            return subprocess.Popen(
                command, cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=log_fp, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._preexec, **group)

    def data_dir(self, node_id: int) -> str:
        return os.path.join(self.dir, self.nodes[node_id].config.data_dir)


class Nemesis:
    def __init__(self, cluster: TortureCluster, firewall: Firewall | None,
                 rng: random.Random) -> None:
        self.cluster = cluster
        self.fw = firewall
        self.rng = rng
        self.paused: set[int] = set()
        self.killed: set[int] = set()
        self.disk_armed: set[int] = set()     # failpoints armed (disk-slow / disk-fail)
        self.power_lost: set[int] = set()     # killed AND rolled back to their last syncs
        self.log: list[tuple[float, float, str, str]] = []   # (start, end, kind, what)

    def leader(self) -> int | None:
        for i, n in self.cluster.nodes.items():
            if not n.running or i in self.paused:
                continue
            info = self.cluster.info(i, timeout=0.5)
            if info and info.get("raft_role") == "leader":
                return i
        return None

    def _target(self, ev: NemesisEvent, leader: bool) -> int:
        if leader:
            lid = self.leader()
            if lid is not None:
                return lid
        return ev.node

    def start(self, ev: NemesisEvent) -> str:
        """Inject ``ev``'s fault; returns what was done."""
        ids = list(self.cluster.nodes)
        if ev.kind in ("kill", "kill-leader"):
            i = self._target(ev, ev.kind == "kill-leader")
            self.cluster.kill(i)
            self.killed.add(i)
            return f"SIGKILL node {i}"
        if ev.kind in ("pause", "pause-leader"):
            i = self._target(ev, ev.kind == "pause-leader")
            pid = self.cluster.nodes[i].pid
            if pid is not None and self.cluster.nodes[i].running:
                os.kill(pid, signal.SIGSTOP)
                self.paused.add(i)
            return f"SIGSTOP node {i}"
        if ev.kind in POWER_KINDS:
            return self._power_loss(ids if ev.kind == "power-loss-all"
                                    else [self._target(ev, ev.to_leader)])
        if ev.kind == "transfer":
            return self._transfer(ev.node)
        if ev.kind in DISK_KINDS:
            i = self._target(ev, ev.to_leader)
            action = f"sleep({ev.slow_ms:g})" if ev.kind == "disk-slow" else "error"
            fileio.write_failpoints(self.cluster.data_dir(i), f"wal.sync={action}\n")
            self.disk_armed.add(i)
            return (f"node {i}: every WAL sync +{ev.slow_ms:g} ms" if ev.kind == "disk-slow"
                    else f"node {i}: WAL syncs fail (EIO: the node must fail-stop)")
        assert self.fw is not None
        if ev.kind == "partition-one":
            i = self._target(ev, ev.to_leader)
            for j in ids:
                if j != i:
                    self.fw.cut(i, j)
                    self.fw.cut(j, i)
            return f"isolate node {i}"
        if ev.kind == "partition-split":
            minority = set(ev.group)
            for i in minority:
                for j in ids:
                    if j not in minority:
                        self.fw.cut(i, j)
                        self.fw.cut(j, i)
            return f"split {sorted(minority)} | {sorted(set(ids) - minority)}"
        if ev.kind == "partition-oneway":
            i = self._target(ev, ev.to_leader)
            for j in ids:
                if j != i:
                    self.fw.cut(i, j)
            return f"drop everything node {i} sends"
        raise ValueError(ev.kind)

    def _transfer(self, target: int) -> str:
        """Ask the leader to hand leadership to ``target`` (another node if it leads
        already): RAFT.TRANSFER, diss. §3.10. Writes meanwhile get -TRYAGAIN."""
        lid = self.leader()
        if lid is None:
            return "transfer: no leader to ask"
        if target == lid:
            target = next(i for i in sorted(self.cluster.nodes) if i != lid)
        try:
            resp_command(*self.cluster.nodes[lid].client, "RAFT.TRANSFER", str(target),
                         password=self.cluster.password, timeout=5.0)
        except RespClientError as e:
            return f"transfer leadership {lid} -> {target}: {e}"
        return f"transfer leadership {lid} -> {target}"

    def _power_loss(self, victims: list[int]) -> str:
        """SIGKILL every victim at once, then roll each one's data directory back to what
        it had made durable (raft/storage/fileio.py), as a power cut would."""
        for i in victims:
            self.cluster.kill(i)
            self.killed.add(i)
        done = []
        for i in victims:
            undone = fileio.simulate_power_loss(self.cluster.data_dir(i))
            self.power_lost.add(i)
            if self.cluster.nodes[i].config.durability == "none":
                self.cluster.force_new.add(i)
            done.append(f"node {i} (-{undone['removed']} files, +{undone['restored']} restored, "
                        f"-{undone['truncated_bytes']} B)")
        return "power loss: " + ", ".join(done)

    def heal(self) -> None:
        self.reconnect()
        self.restart()

    def reconnect(self) -> None:
        """Remove the partitions, disarm the disks and resume paused nodes (safe from any
        thread)."""
        for i in sorted(self.disk_armed):
            fileio.write_failpoints(self.cluster.data_dir(i), "")
        if self.fw is not None:
            self.fw.heal()
        for i in sorted(self.paused):
            n = self.cluster.nodes[i]
            if n.pid is not None and n.running:
                os.kill(n.pid, signal.SIGCONT)
        self.paused.clear()

    def restart(self) -> None:
        """Restart killed nodes. Call it from the main thread only: a node's parent-death
        signal (PR_SET_PDEATHSIG) fires when the *thread* that spawned it exits, so a node
        started from a worker thread would be SIGTERMed when that thread is retired."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Nemesis.restart must run on the main thread")
        # A node whose disk failed has fail-stopped (or will at its next sync): an
        # operator restarts it once the disk is back.
        for i in sorted(self.disk_armed):
            if not self.cluster.nodes[i].running:
                self.killed.add(i)
        self.disk_armed.clear()
        for i in sorted(self.killed):
            self.cluster.start(i)
        self.killed.clear()


# --------------------------------------------------------------------------- clients


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader(notEnoughData=_NEED)

    async def call(self, args: list[bytes]) -> Any:
        out = bytearray(b"*%d\r\n" % len(args))
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.writer.write(bytes(out))
        await self.writer.drain()
        while True:
            reply = self.parser.gets()
            if reply is not _NEED:
                return reply
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("connection closed")
            self.parser.feed(data)

    def close(self) -> None:
        self.writer.transport.abort()


_NEED = object()


class _Sent(Exception):
    """The request may have been sent: an error now leaves the outcome unknown."""


class KeyRotation:
    """``slots`` keys in use at a time; each is replaced by a fresh key (``<prefix><n>``)
    once it has taken ``limit`` counted operations."""

    def __init__(self, prefix: str, slots: int, limit: int) -> None:
        self.prefix, self.limit = prefix, max(1, limit)
        self.live = [f"{prefix}{i}" for i in range(slots)]
        self.all = list(self.live)              # every key ever used, in order
        self._ops = dict.fromkeys(self.live, 0)

    def use(self, slot: int, count: bool = True) -> str:
        """The key in ``slot`` for one operation (counted unless ``count`` is false)."""
        key = self.live[slot]
        if count:
            self._ops[key] += 1
            if self._ops[key] >= self.limit:
                fresh = f"{self.prefix}{len(self.all)}"
                self.live[slot] = fresh
                self.all.append(fresh)
                self._ops[fresh] = 0
        return key


class Workload:
    """Shared state of the clients: the cluster's addresses, the history, the clock."""

    def __init__(self, cfg: TortureConfig, seed: int, addrs: dict[int, tuple[str, int]]) -> None:
        self.cfg = cfg
        self.seed = seed
        self.addrs = addrs
        self.by_port = {port: i for i, (_, port) in addrs.items()}
        self.history: list[Operation] = []
        self.t0 = time.monotonic_ns()
        # Keys are rotated (Jepsen's "independent" keys): a key that took its share of
        # operations is replaced by a fresh one, so every key's history, and so its
        # check, stays bounded however long the run. Unrotated, a 300 s run had 400 MB
        # of XRANGE replies (each returns the whole stream) and string keys of 18,000
        # operations whose unknown-outcome writes took the checker minutes.
        self.kv = KeyRotation("k", cfg.keys, cfg.key_ops)
        self.counters = KeyRotation("counter", 1, cfg.key_ops)
        self.streams = KeyRotation("s", cfg.streams, cfg.stream_appends)
        self.crashed: list[str] = []

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    def record(self, op: Operation) -> None:
        op.index = len(self.history)
        self.history.append(op)


def _choose(rng: random.Random, w: Workload, cid: int, n: int) -> tuple[str, str, Any]:
    """(kind, key, value) of the next operation."""
    r = rng.random()
    if w.streams.live and r < 0.2:
        slot = rng.randrange(len(w.streams.live))
        if rng.random() < 0.5:
            return "xadd", w.streams.use(slot), f"c{cid}-{n}"
        return "xrange", w.streams.use(slot, count=False), None
    if r < 0.3:
        key = w.counters.use(0)
        return ("incr", key, None) if rng.random() < 0.6 else ("read", key, None)
    key = w.kv.use(rng.randrange(len(w.kv.live)))
    r = rng.random()
    if r < 0.45:
        return "read", key, None
    if r < 0.8:
        return "write", key, str(cid * 1_000_000 + n)   # unique: the checker pins on it
    if r < 0.93:
        return "incr", key, None
    return "delete", key, None


def _command(f: str, key: str, value: Any) -> list[bytes]:
    k = key.encode()
    return {"read": lambda: [b"GET", k], "write": lambda: [b"SET", k, str(value).encode()],
            "incr": lambda: [b"INCR", k], "delete": lambda: [b"DEL", k],
            "xadd": lambda: [b"XADD", k, b"*", b"v", str(value).encode()],
            "xrange": lambda: [b"XRANGE", k, b"-", b"+"]}[f]()


def _output(f: str, reply: Any) -> Any:
    if f == "read":
        return None if reply is None else reply.decode()
    if f == "write":
        return "OK"
    if f == "xadd":
        return reply.decode()
    if f == "xrange":
        return tuple((e[0].decode(), e[1][1].decode()) for e in reply)
    return reply   # incr, delete: integers


class Client:
    def __init__(self, w: Workload, cid: int, deadline: float) -> None:
        self.w = w
        self.cid = cid
        self.deadline = deadline
        self.rng = random.Random(f"client-{w.seed}-{cid}")
        self.conns: dict[int, _Conn] = {}
        self.leader = self.rng.choice(list(w.addrs))

    async def run(self) -> None:
        n = 0
        while time.monotonic() < self.deadline:
            n += 1
            f, key, value = _choose(self.rng, self.w, self.cid, n)
            target = self.leader
            if f in ("read", "xrange") and self.rng.random() < self.w.cfg.read_any:
                target = self.rng.choice(list(self.w.addrs))
            op = await self.one(f, key, value, target)
            self.w.record(op)
            if op.status != OK:
                await asyncio.sleep(self.rng.uniform(0.01, 0.05))
        for c in self.conns.values():
            c.close()

    async def _conn(self, node: int) -> _Conn:
        c = self.conns.get(node)
        if c is None:
            host, port = self.w.addrs[node]
            r, wr = await asyncio.open_connection(host, port)
            c = self.conns[node] = _Conn(r, wr)
        return c

    def _drop(self, node: int) -> None:
        c = self.conns.pop(node, None)
        if c is not None:
            c.close()

    async def one(self, f: str, key: str, value: Any, node: int) -> Operation:
        w = self.w
        call = w.now()
        op = Operation(self.cid, key, f, value, None, call, None, INFO)
        try:
            async with asyncio.timeout(w.cfg.op_timeout):
                status, out, err = await self._attempts(f, key, value, node)
        except (TimeoutError, _Sent) as e:
            self._drop_all_suspect()
            self.leader = self.rng.choice(list(w.addrs))   # it may be paused or cut off
            op.error = "timeout" if isinstance(e, TimeoutError) else str(e)
            return op   # info: no return time
        except Exception as e:   # a reply we cannot parse: unknown outcome, say so
            self._drop_all_suspect()
            op.error = f"client error: {e!r}"
            print(f"raft torture: client {self.cid}: {f} {key}: {e!r}", file=sys.stderr)
            return op
        op.status, op.output, op.error = status, out, err
        if status != INFO:
            op.ret = w.now()
        return op

    def _drop_all_suspect(self) -> None:
        # A connection with a request in flight cannot be reused: its reply may come late.
        for node in list(self.conns):
            self._drop(node)

    async def _attempts(self, f: str, key: str, value: Any, node: int
                        ) -> tuple[str, Any, str | None]:
        args = _command(f, key, value)
        for _ in range(4):
            try:
                conn = await self._conn(node)
            except OSError as e:
                self.leader = self.rng.choice(list(self.w.addrs))
                return FAIL, None, f"connect: {e.__class__.__name__}"
            try:
                reply = await conn.call(args)
            except (OSError, ConnectionError) as e:
                self._drop(node)
                self.leader = self.rng.choice(list(self.w.addrs))
                raise _Sent(f"connection lost: {e.__class__.__name__}") from None
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                if text.startswith("MOVED"):
                    port = int(text.rsplit(":", 1)[1])
                    nxt = self.w.by_port.get(port)
                    if nxt is None:
                        return FAIL, None, text
                    self.leader = node = nxt
                    continue
                if text.startswith("CLUSTERDOWN"):
                    return FAIL, None, text
                if f == "incr" and "not an integer" in text:
                    return OK, lincheck._NOT_INT, None
                return INFO, None, text   # TRYAGAIN or anything else: unknown outcome
            return OK, _output(f, reply), None
        return FAIL, None, "too many redirects"


# --------------------------------------------------------------------------- the run


@dataclass
class TortureResult:
    seed: int
    verdict: str
    counts: dict[str, int]
    nemesis_counts: dict[str, int]
    availability: float
    longest_unavailable: dict[str, float]
    missing: list[str]
    history_path: str | None
    crashed: list[str] = field(default_factory=list)
    check: lincheck.CheckResult | None = None
    schedule: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict == "violation" or bool(self.missing) or bool(self.crashed)


def _say(msg: str) -> None:
    print(msg, flush=True)


async def _run_nemesis(nem: Nemesis, schedule: list[NemesisEvent], start: float,
                       stop: asyncio.Event) -> None:
    for ev in schedule:
        delay = start + ev.at - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except TimeoutError:
                pass
        t = time.monotonic() - start
        try:
            what = await asyncio.to_thread(nem.start, ev)
        except Exception as e:   # a node already gone, an iptables hiccup: keep going
            what = f"failed: {e!r}"
        _say(f"nemesis: t={t:6.2f}s {ev.kind}: {what} for {ev.duration:.2f}s")
        try:
            await asyncio.wait_for(stop.wait(), ev.duration)
        except TimeoutError:
            pass
        await asyncio.to_thread(nem.reconnect)
        nem.restart()   # on the loop's (main) thread: see Nemesis.restart
        end = time.monotonic() - start
        nem.log.append((t, end, ev.kind, what))
        _say(f"nemesis: t={end:6.2f}s healed")
        if stop.is_set():
            return


async def _final_reads(w: Workload, leader: int) -> None:
    """Read every key back from the leader (recorded in the history too)."""
    client = Client(w, FINAL_CLIENT, time.monotonic() + 60)
    client.leader = leader
    for key in w.kv.all + w.counters.all:
        await _read_until_ok(client, w, "read", key)
    for key in w.streams.all:
        await _read_until_ok(client, w, "xrange", key)
    for c in client.conns.values():
        c.close()


async def _read_until_ok(client: Client, w: Workload, f: str, key: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        op = await client.one(f, key, None, client.leader)
        w.record(op)
        if op.status == OK:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"could not read {key} back from the cluster within 30 s")


def acknowledged_missing(history: list[Operation], w: Workload) -> list[str]:
    """Acknowledged writes absent from the final state: stream entries (an acknowledged
    XADD must be in the final XRANGE, with its id) and counter increments (the final
    counter must be at least the number of acknowledged INCRs)."""
    final = {}
    for op in history:
        if op.client == FINAL_CLIENT and op.status == OK:
            final[op.key] = op.output
    missing = []
    for key in w.streams.all:
        present = {v: i for i, v in final.get(key, ())}
        for op in history:
            if op.key == key and op.f == "xadd" and op.status == OK:
                if present.get(op.value) != op.output:
                    missing.append(f"XADD {key} {op.value} acknowledged with id {op.output}, "
                                   f"final stream has {present.get(op.value, 'no such entry')}")
    for key in w.counters.all:
        acked = sum(1 for op in history if op.key == key and op.f == "incr" and op.status == OK)
        maybe = sum(1 for op in history if op.key == key and op.f == "incr" and op.status == INFO)
        value = int(final.get(key) or 0)
        if value < acked:
            missing.append(f"{key}: {acked} INCRs acknowledged but the final value is {value}")
        if value > acked + maybe:
            missing.append(f"{key}: final value {value} exceeds the {acked} acknowledged and "
                           f"{maybe} unknown INCRs")
    return missing


OPENED_BY = 0.1     # seconds: see unavailability()


def unavailability(history: list[Operation], log: list[tuple[float, float, str, str]],
                   duration_ns: int) -> dict[str, float]:
    """The longest stretch with no ok operation completing, per nemesis kind: a gap is
    charged to the last fault that started before the gap began (give or take
    ``OPENED_BY`` seconds: operations in flight when a fault strikes still complete),
    i.e. the fault that opened it, not one that struck during the outage; "none" for
    gaps before the first fault. (Charging the fault last started before the gap ended
    blamed a 7.6 s outage opened by a power cut of every node on a kill-leader that
    struck while the cluster was still recovering.)"""
    done = sorted(op.ret for op in history if op.status == OK and op.ret is not None
                  and op.client != FINAL_CLIENT)
    points = [0] + done + [duration_ns]
    worst: dict[str, float] = {}
    for a, b in zip(points, points[1:]):
        if b <= a:
            continue
        opened = a / 1e9 + OPENED_BY
        kind = "none"
        for s, _, k, _ in log:
            if s < opened:
                kind = k
        worst[kind] = max(worst.get(kind, 0.0), (b - a) / 1e9)
    return worst


def run_torture(cfg: TortureConfig) -> TortureResult:
    seed = cfg.seed if cfg.seed is not None else random.randrange(1 << 31)
    _say(f"raft torture: seed {seed} (rerun with --seed {seed}); {cfg.nodes} nodes, "
         f"{cfg.clients} clients, {cfg.duration:g} s, durability {cfg.durability}"
         + (", PLANTED BUG: stale reads" if cfg.debug_stale_reads else ""))
    kinds = tuple(cfg.nemesis)
    why = Firewall.available() if any(k in PARTITION_KINDS for k in kinds) else None
    if why is not None:
        _say(f"raft torture: partitions skipped: {why}")
        kinds = tuple(k for k in kinds if k not in PARTITION_KINDS)
    schedule = nemesis_schedule(seed, kinds, cfg.nodes, cfg.duration, cfg)
    for ev in schedule:
        _say(f"  schedule: {ev.describe()}")
    directory = cfg.directory or tempfile.mkdtemp(prefix="raft-torture-")
    cluster = TortureCluster(cfg.nodes, directory=os.path.join(directory, "cluster"),
                             durability=cfg.durability, election_ticks=cfg.election_ticks,
                             propose_timeout=cfg.propose_timeout,
                             debug_stale_reads=cfg.debug_stale_reads,
                             node_settings={
                                 "debug_power_loss": any(k in POWER_KINDS for k in kinds),
                                 "debug_failpoints": any(k in DISK_KINDS for k in kinds)})
    if os.geteuid() == 0:
        cluster.gid_base = 100_000 + (os.getpid() % 100_000) * 10
    firewall = None
    if any(k in PARTITION_KINDS for k in kinds):
        firewall = Firewall(f"raft-torture-{os.getpid()}-{seed}",
                            {i: cluster.gid_base + i for i in cluster.nodes},  # type: ignore[operator]
                            {i: n.config.me.raft[1] for i, n in cluster.nodes.items()})
        atexit.register(firewall.heal)
        _say(f"raft torture: iptables rules tagged {firewall.tag}")
    nem = Nemesis(cluster, firewall, random.Random(seed))
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_exit) if in_main else None
    try:
        cluster.start()
        leader = cluster.wait_for_leader(60)
        _say(f"raft torture: cluster up, leader node {leader}, dir {directory}")
        addrs = {i: n.client for i, n in cluster.nodes.items()}
        w = Workload(cfg, seed, addrs)
        asyncio.run(_load(cfg, w, nem, schedule))
        nem.heal()
        leader = cluster.wait_for_leader(60)
        asyncio.run(_final_reads(w, leader))
        # Every node was healed and restarted: one that is not running crashed by itself.
        w.crashed = [f"node {i} exited with status {n.proc.returncode if n.proc else '?'} "
                     f"(see {n.log_path})" for i, n in cluster.nodes.items() if not n.running]
    finally:
        try:
            nem.heal()
        finally:
            if firewall is not None:
                firewall.heal()
                atexit.unregister(firewall.heal)
            if in_main:
                signal.signal(signal.SIGTERM, old_term)
            cluster.close(keep_dir=True)
    return _finish(cfg, seed, w, nem, schedule, directory)


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)   # run the finally blocks: heal, stop the nodes


async def _load(cfg: TortureConfig, w: Workload, nem: Nemesis,
                schedule: list[NemesisEvent]) -> None:
    start = time.monotonic()
    w.t0 = time.monotonic_ns()
    deadline = start + cfg.duration
    stop = asyncio.Event()
    nemesis = asyncio.create_task(_run_nemesis(nem, schedule, start, stop))
    clients = [asyncio.create_task(Client(w, c, deadline).run()) for c in range(cfg.clients)]
    await asyncio.gather(*clients)
    stop.set()
    await nemesis


def _finish(cfg: TortureConfig, seed: int, w: Workload, nem: Nemesis,
            schedule: list[NemesisEvent], directory: str) -> TortureResult:
    h = w.history
    counts = {s: sum(1 for o in h if o.status == s and o.client != FINAL_CLIENT)
              for s in (OK, FAIL, INFO)}
    total = sum(counts.values())
    nem_counts: dict[str, int] = {}
    for _, _, kind, _ in nem.log:
        nem_counts[kind] = nem_counts.get(kind, 0) + 1
    missing = acknowledged_missing(h, w)
    hist_path = os.path.join(directory, "history.json")
    with open(hist_path, "w") as fp:
        lincheck.write_json_history(h, fp, {"seed": seed, "time_unit": "ns",
                                            "nemesis": [list(e) for e in nem.log]})
    with open(os.path.join(directory, "history.edn"), "w") as fp:
        lincheck.write_edn_history(h, fp)
    res = lincheck.check(h, budget=cfg.check_budget)
    gaps = unavailability(h, nem.log, int(cfg.duration * 1e9))
    result = TortureResult(seed, res.verdict, counts, nem_counts,
                           counts[OK] / total if total else 0.0, gaps, missing, hist_path,
                           w.crashed, res, [e.describe() for e in schedule])
    _say(f"operations: {total}  ok {counts[OK]}  fail {counts[FAIL]}  info {counts[INFO]}")
    _say("nemesis events: " + (", ".join(f"{k} {v}" for k, v in sorted(nem_counts.items()))
                               or "none"))
    _say(f"availability: {result.availability:.1%} of operations ok")
    _say("longest unavailability (s), by the fault that opened the gap: "
         + ", ".join(f"{k} {v:.2f}" for k, v in sorted(gaps.items())))
    for line in w.crashed:
        _say(f"NODE CRASHED: {line}")
    if missing:
        _say(f"ACKNOWLEDGED WRITES MISSING: {len(missing)}")
        for line in missing[:20]:
            _say("  " + line)
    else:
        _say("acknowledged writes: all present in the final state")
    html_path = cfg.html or os.path.join(directory, "counterexample.html")
    lincheck.report(res, h, html_path=html_path if res.violations else None, out=sys.stdout)
    verdict = "FAILED" if result.failed else "unknown" if res.verdict == "unknown" else "passed"
    if not cfg.keep and verdict == "passed" and cfg.directory is None:
        shutil.rmtree(directory, ignore_errors=True)
        result.history_path = None
    else:
        _say(f"history: {hist_path} (and history.edn); node logs in {directory}/cluster")
    _say(f"raft torture: {verdict} (seed {seed})")
    return result


# --------------------------------------------------------------------------- CLI


def _kinds(text: str) -> tuple[str, ...]:
    if text in ("all", "none", ""):
        return NEMESIS_KINDS if text == "all" else ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in NEMESIS_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown nemesis {bad[0]!r}; choose from "
                                         f"{', '.join(NEMESIS_KINDS)} (or all, or none)")
    return kinds


def torture_main(args: argparse.Namespace) -> int:
    cfg = TortureConfig(nodes=args.nodes, clients=args.clients, duration=args.duration,
                        seed=args.seed, nemesis=args.nemesis, keys=args.keys,
                        stream_appends=max(1, args.stream_appends),
                        key_ops=max(1, args.key_ops),
                        durability=args.durability, debug_stale_reads=args.debug_stale_reads,
                        directory=args.dir, keep=args.keep, html=args.html,
                        read_any=args.read_any, election_ticks=args.election_ticks,
                        check_budget=args.check_budget)
    try:
        res = run_torture(cfg)
    except (TimeoutError, RuntimeError, OSError) as e:
        print(f"raft torture: {e}", file=sys.stderr)
        return 2
    if res.failed:
        return 1
    return 3 if res.verdict == "unknown" else 0


def add_torture_subcommand(sub: Any) -> None:
    p = sub.add_parser("torture", help="Jepsen-style test: clients + faults on a local cluster, "
                                       "then a linearizability check")
    p.add_argument("--nodes", type=int, default=5, choices=(3, 5, 7))
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--duration", "--seconds", type=float, default=30.0,
                   help="seconds of load (default 30)")
    p.add_argument("--seed", type=int, default=None, help="drives the nemesis and the clients")
    p.add_argument("--nemesis", type=_kinds, default=NEMESIS_KINDS,
                   help=f"comma-separated faults (default all: {','.join(NEMESIS_KINDS)}; "
                        f"'none' for no faults)")
    p.add_argument("--keys", type=int, default=6, help="string keys (default 6)")
    p.add_argument("--stream-appends", type=int, default=200,
                   help="XADDs a stream key takes before a fresh key replaces it (default 200)")
    p.add_argument("--key-ops", type=int, default=2000,
                   help="operations a string or counter key takes before a fresh key "
                        "replaces it (default 2000)")
    p.add_argument("--read-any", type=float, default=0.5,
                   help="probability that a read goes to a random node (default 0.5)")
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    p.add_argument("--election-ticks", type=int, default=30)
    p.add_argument("--check-budget", type=float, default=60.0,
                   help="seconds for the linearizability check (default 60)")
    p.add_argument("--dir", default=None, help="keep the cluster, history and report here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    p.add_argument("--html", default=None, help="where to write the counterexample timeline")
    p.add_argument("--debug-stale-reads", action="store_true",
                   help="TEST ONLY: plant a bug (nodes serve reads locally, without ReadIndex)")
    p.set_defaults(func=torture_main)
