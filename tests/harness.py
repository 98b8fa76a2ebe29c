"""A tiny in-process cluster for scripted scenario tests: instant persistence,
and a network the test controls message by message. ``Cluster.process`` is the Ready
loop of docs/ready-loop.md with an instant disk."""
from __future__ import annotations

from raft import Entry, HardState, RawNode
from raft.storage.memory import MemoryStorage


def entries_with_terms(terms: list[int], start: int = 1) -> list[Entry]:
    """Entries start, start+1, ... with the given terms (data names index and term)."""
    return [Entry(start + i, t, 0, b"i%d-t%d" % (start + i, t)) for i, t in enumerate(terms)]


class Cluster:
    def __init__(self, logs: dict[int, list[int]], terms: dict[int, int] | None = None, **node_kw):
        self.ids = sorted(logs)
        self.disks: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.queue: list = []          # messages in flight, in send order
        self.dropped: set[tuple[int, int]] = set()
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.read_states: dict[int, list] = {i: [] for i in self.ids}
        self.installed: dict[int, list] = {i: [] for i in self.ids}   # snapshots from leaders
        for i in self.ids:
            disk = MemoryStorage()
            hs = HardState((terms or {}).get(i, max(logs[i], default=0)), 0, 0)
            disk.save(hs, entries_with_terms(logs[i]))
            self.disks[i] = disk
            self.nodes[i] = self._start(i, **node_kw)
        self.node_kw = node_kw

    def _start(self, i: int, **kw) -> RawNode:
        st = self.disks[i].load()
        return RawNode(i, self.ids, seed=i, hard_state=st.hard_state, entries=st.entries,
                       snapshot=st.snapshot, **kw)

    def restart(self, i: int) -> None:
        self.queue = [m for m in self.queue if m.dst != i and m.src != i]
        self.nodes[i] = self._start(i, **self.node_kw)
        self.applied[i] = []

    def process(self, i: int) -> None:
        """Drain node i's Readys: persist instantly, queue messages, apply."""
        n = self.nodes[i]
        while n.has_ready():
            rd = n.ready()
            self.queue.extend(rd.messages)
            if rd.snapshot is not None:
                self.disks[i].install_snapshot(rd.snapshot)
                self.installed[i].append(rd.snapshot)
            self.disks[i].save(rd.hard_state, rd.entries)
            self.queue.extend(rd.messages_after_persist)
            self.applied[i].extend(rd.committed_entries)
            self.read_states[i].extend(rd.read_states)
            n.advance(rd)

    def process_all(self) -> None:
        for i in self.ids:
            self.process(i)

    def deliver(self, pred=lambda m: True, limit: int = 100_000) -> int:
        """Deliver queued messages matching pred (others stay queued) until none match."""
        delivered = 0
        while delivered < limit:
            self.process_all()
            idx = next((k for k, m in enumerate(self.queue) if pred(m)), None)
            if idx is None:
                return delivered
            m = self.queue.pop(idx)
            delivered += 1
            if (m.src, m.dst) in self.dropped or m.dst not in self.nodes:
                continue                 # a cut link, or a server that is not running
            self.nodes[m.dst].step(m)
        raise AssertionError("network did not quiesce")

    def heartbeat(self, i: int, pred=lambda m: True) -> None:
        """Leader i's next heartbeat, delivered (with ``pred`` as in deliver): how
        followers learn a commit index that no later AppendEntries carried (§5.3)."""
        n = self.nodes[i]
        assert n.role_name == "leader", n.status()
        for _ in range(self.node_kw.get("heartbeat_tick", 1)):
            n.tick()
        self.deliver(pred)

    def compact(self, i: int, index: int) -> None:
        """Node i snapshots at ``index`` (data names the index) and compacts."""
        from raft import Snapshot

        data = b"state@%d" % index
        snap = Snapshot(index, self.nodes[i].log.term(index), data, self.nodes[i].conf_at(index))
        self.disks[i].save_snapshot(snap)
        self.nodes[i].compact(index, data)
        self.disks[i].compact(index)

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.dropped.add((i, j))
                self.dropped.add((j, i))

    def heal(self) -> None:
        self.dropped.clear()

    def elect(self, i: int) -> None:
        self.nodes[i].campaign()
        self.deliver()
        assert self.nodes[i].role_name == "leader", self.nodes[i].status()

    def log_terms(self, i: int) -> list[int]:
        log = self.nodes[i].log
        return [log.term(k) for k in range(log.first_index, log.last_index + 1)]
