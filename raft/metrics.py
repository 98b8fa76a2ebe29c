"""Prometheus metrics of a node (``NodeMetrics``): counters and gauges read from a
snapshot the node's loop refreshes, and the fsync latency histogram."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raft.node import RaftNode

__all__ = ["NodeMetrics"]

_TRANSPORT_GAUGES = frozenset(("buffered_bytes", "max_buffered_bytes_per_peer",
                               "inbound_connections"))


class NodeMetrics:
    """Prometheus metrics of one node, on their own registry (several nodes may share
    a process in tests) and HTTP endpoint (prometheus-client's server thread).

    Counters and gauges are read at scrape time from a snapshot that the loop thread
    refreshes every ``raft.node.METRICS_PERIOD``: the scrape runs on the HTTP thread, which must not
    call into the core (not thread-safe). The save (fsync) latency is a histogram
    observed on the loop thread.
    """

    def __init__(self, node: RaftNode) -> None:
        try:
            import prometheus_client as prom
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise RuntimeError("metrics_port is set but prometheus-client is not installed "
                               "(pip install prometheus-client)") from None
        self._node = node
        self._snapshot: dict[str, Any] = {}
        self._httpd: Any = None
        self.address: tuple[str, int] = ("", 0)
        self.registry = prom.CollectorRegistry()
        self._counter_family = CounterMetricFamily
        self._gauge_family = GaugeMetricFamily
        self.fsync_seconds = prom.Histogram(
            "raft_fsync_seconds", "Time to make one Ready durable (one write + one fdatasync)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0), registry=self.registry)
        self.batch_entries = prom.Histogram(
            "raft_save_batch_entries", "Entries made durable per save (group commit size)",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry)
        self.registry.register(self)

    def observe_save(self, seconds: float, entries: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.batch_entries.observe(entries)

    def refresh(self) -> None:
        """On the loop thread: copy what the scrape will report."""
        node = self._node
        snap: dict[str, Any] = {"counters": dict(node.counters), "status": node.status()}
        if node.transport is not None:
            stats = node.transport.stats()
            snap["transport"] = {k: v for k, v in stats.items() if isinstance(v, int)}
        self._snapshot = snap

    def _members_family(self, st: dict[str, Any]) -> Any:
        """raft_member{member, role} = 1 for each member of the configuration in force."""
        fam = self._gauge_family("raft_member", "Members of the configuration in force, by role",
                                 labels=["member", "role"])
        for role in ("voters", "learners"):
            for member in filter(None, str(st.get(role, "")).split(",")):
                fam.add_metric([member, role[:-1]], 1)
        return fam

    # prometheus_client collector protocol (called on the HTTP thread).
    def collect(self) -> Any:
        snap = self._snapshot
        if not snap:
            return
        c, st = snap["counters"], snap["status"]
        help_ = {
            "proposals": "Client writes proposed on this node while leader",
            "proposals_failed": "Proposals whose entry was overwritten (not applied)",
            "proposals_timed_out": "Proposals that outlived propose_timeout (outcome unknown)",
            "read_barriers": "Linearizable reads served through a log barrier",
            "entries_applied": "Committed log entries applied (commits seen by this node)",
            "commands_applied": "Client commands applied to the state machine",
            "saves": "Durable writes (Ready batches persisted)",
            "entries_saved": "Log entries written to the WAL",
            "messages_sent": "Raft messages handed to the transport",
            "messages_received": "Raft messages received from peers",
            "bad_messages": "Malformed messages dropped (RemoteProtocolError)",
            "elections": "Elections this node started (became candidate)",
            "leader_changes": "Times this node learned of a new leader",
            "became_leader": "Times this node became leader",
            "snapshots_taken": "State machine snapshots taken and saved by this node",
            "snapshots_installed": "Snapshots installed from a leader (InstallSnapshot)",
            "compactions": "Log compactions (entries covered by a snapshot dropped)",
        }
        for name, text in help_.items():
            fam = self._counter_family(f"raft_{name}", text)
            fam.add_metric([], c.get(name, 0))
            yield fam
        fam = self._counter_family(
            "raft_wal_io_seconds", "Time in the WAL writer thread's write + fdatasync alone "
            "(the common saves; raft_fsync_seconds is the whole save as the loop waits for it)")
        fam.add_metric([], c.get("wal_io_us", 0) / 1e6)
        yield fam
        gauges = {
            "term": ("Current term", st.get("term", 0)),
            "commit_index": ("Highest log index known committed", st.get("commit_index", 0)),
            "applied_index": ("Highest log index applied", st.get("applied_index", 0)),
            "last_index": ("Last index in the log", st.get("last_index", 0)),
            "stable_index": ("Last index known durable", st.get("stable_index", 0)),
            "snapshot_index": ("Last index covered by this node's newest snapshot",
                               st.get("snapshot_index", 0)),
            "snapshot_bytes": ("Size of this node's newest snapshot", st.get("snapshot_bytes", 0)),
            "log_bytes_since_snapshot": ("Bytes applied since the last snapshot (compared "
                                         "with snapshot_threshold_bytes)",
                                         st.get("log_bytes_since_snapshot", 0)),
            "log_mem_bytes": ("Bytes held by the in-memory log (entry data + 96 an entry), "
                              "bounded by snapshot.max_log_bytes", st.get("log_mem_bytes", 0)),
            "is_leader": ("1 if this node is the leader", int(st.get("role") == "leader")),
            "leader_id": ("The leader this node knows of (0: none)", st.get("leader", 0)),
            "pending_requests": ("Proposals and barriers waiting to be applied",
                                 st.get("pending_requests", 0)),
            "conf_index": ("Log index of the configuration in force (0: the initial one)",
                           st.get("conf_index", 0)),
        }
        for name, (text, value) in gauges.items():
            fam = self._gauge_family(f"raft_{name}", text)
            fam.add_metric([], value)
            yield fam
        yield self._members_family(st)
        lag = self._gauge_family("raft_replication_lag_entries",
                                 "Leader only: entries a peer is behind the leader's log",
                                 labels=["peer"])
        match = self._gauge_family("raft_peer_match_index",
                                   "Leader only: highest index known replicated on a peer",
                                   labels=["peer"])
        connected = self._gauge_family("raft_peer_connected",
                                       "1 if the outbound connection to a peer is up",
                                       labels=["peer"])
        for key, value in st.items():
            if key.startswith("peer_"):
                _, peer, what = key.split("_", 2)
                if what == "lag":
                    lag.add_metric([peer], value)
                elif what == "match":
                    match.add_metric([peer], value)
                elif what == "connected":
                    connected.add_metric([peer], value)
        yield lag
        yield match
        yield connected
        for name, value in snap.get("transport", {}).items():
            family = self._gauge_family if name in _TRANSPORT_GAUGES else self._counter_family
            fam = family(f"raft_transport_{name}", f"PeerTransport stats(): {name}")
            fam.add_metric([], value)
            yield fam

    def serve(self, host: str, port: int) -> None:
        import prometheus_client as prom

        started = prom.start_http_server(port, addr=host, registry=self.registry)
        self._httpd = started[0] if isinstance(started, tuple) else None
        bound = self._httpd.server_address[:2] if self._httpd is not None else (host, port)
        self.address = (host, int(bound[1]))

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
