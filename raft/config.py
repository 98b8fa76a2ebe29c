"""Node configuration: one TOML file per node, loaded and validated up front.

Everything a ``raft serve`` process needs to know is in this file, so that a
mistake (a typo'd key, a port out of range, a secret that is too short) stops
the node before it talks to anyone, with a message naming the file, the key and
what is wrong. Example (docs/operations.md is the full reference)::

    id = 1
    data_dir = "data/node1"          # relative paths are relative to this file
    durability = "fsync"             # or "none" (tests and benchmarks only)
    secret_file = "cluster.secret"   # or: secret = "..." (at least 16 bytes)

    [peers.1]
    raft = "127.0.0.1:7101"          # peer-to-peer (Raft) address
    client = "127.0.0.1:7001"        # Redis-protocol address
    [peers.2]
    raft = "127.0.0.1:7102"
    client = "127.0.0.1:7002"
    [peers.3]
    raft = "127.0.0.1:7103"
    client = "127.0.0.1:7003"

    [timing]
    tick_ms = 10
    election_ticks = 20
    heartbeat_ticks = 2
    pre_vote = true                  # PreVote before elections (diss. §9.6)
    check_quorum = true              # a leader without a majority steps down (diss. §6.2)

    [snapshot]
    threshold_bytes = 67108864       # snapshot + compact once the log since the last
                                     # snapshot holds this much (0: never)
    trailing_entries = 1000          # entries kept after the snapshot for slow followers

The ``peers`` table lists every voter, this node included: all nodes of a
cluster can share the same ``[peers]`` section and differ only in ``id`` and
``data_dir``.
"""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any

from raft.errors import RaftError
from raft.limits import DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_MULTI_COMMANDS, MAX_MAX_ENTRY_BYTES
from raft.net.auth import MIN_SECRET_SIZE
from raft.storage.wal import DURABILITY_MODES  # the WAL owns its modes

__all__ = ["ConfigError", "NodeConfig", "PeerAddress", "TLSConfig", "load_config",
           "config_from_dict", "parse_host_port", "format_host_port"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: Timing defaults. With a 10 ms tick, elections time out after 200-400 ms
#: (the core randomizes in [election, 2 x election) ticks, §5.2) and a leader
#: sends heartbeats every 20 ms: comfortably more than 10 heartbeats per
#: election timeout, as §5.6's broadcastTime << electionTimeout asks, with room
#: for a shared, loaded machine.
DEFAULT_TICK_MS = 10.0
DEFAULT_ELECTION_TICKS = 20
DEFAULT_HEARTBEAT_TICKS = 2
DEFAULT_PROPOSE_TIMEOUT = 10.0

#: Log compaction defaults. A node snapshots its state machine once the entries
#: applied since its last snapshot add up to this many bytes (entry data plus the
#: WAL's 28-byte record overhead); 0 disables snapshots. etcd's default is 10,000
#: entries; bytes bound restart time and disk use whatever the entry size.
DEFAULT_SNAPSHOT_THRESHOLD_BYTES = 64 << 20
#: Entries the log keeps after a snapshot, so a follower that is only slightly behind
#: is still served by AppendEntries rather than a whole snapshot (etcd keeps 5,000).
DEFAULT_SNAPSHOT_TRAILING_ENTRIES = 1000
#: Memory the in-memory log may hold once applied (RaftLog.mem_bytes): beyond it the
#: node snapshots and compacts early, dropping trailing entries (issue 15, item 5).
DEFAULT_MAX_LOG_BYTES = 128 << 20

#: Client front end limits (docs/operations.md, "Limits"). max_clients is lowered at
#: start to what the open file limit leaves after the storage/peer reserve.
DEFAULT_MAX_CLIENTS = 10000
DEFAULT_AUTH_TIMEOUT = 10.0
DEFAULT_PREAUTH_QUERY_BUFFER = 16 << 10

#: The range of every number in the config, (low, high), both inclusive except where
#: ``_OPEN_LOW`` says the low end is excluded. A value out of range (or NaN, or inf)
#: is a config error naming the key, never a crash or a node that silently never
#: ticks: e.g. max_msg_bytes sizes frames (4x must fit the wire's 32-bit length), an
#: election_ticks beyond a C int would overflow in the core.
BOUNDS: dict[str, tuple[float, float]] = {
    "timing.tick_ms": (0, 60_000),
    "timing.propose_timeout": (0, 86_400),
    "timing.election_ticks": (1, 1_000_000),
    "timing.heartbeat_ticks": (1, 1_000_000),
    "limits.max_msg_bytes": (1, 256 << 20),
    "limits.max_inflight": (1, 65_536),
    "limits.max_clients": (1, 1_000_000),
    "limits.auth_timeout": (0, 3_600),
    "limits.preauth_query_buffer": (1024, 1 << 20),
    "snapshot.threshold_bytes": (0, 1 << 50),
    "snapshot.trailing_entries": (0, 1 << 40),
    "snapshot.max_log_bytes": (1, 1 << 50),
    "limits.max_entry_bytes": (1, MAX_MAX_ENTRY_BYTES),
    "limits.max_multi_commands": (1, 10_000_000),
}
_OPEN_LOW = frozenset(("timing.tick_ms", "timing.propose_timeout", "limits.auth_timeout"))


class ConfigError(RaftError, ValueError):
    """The configuration is unusable; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class PeerAddress:
    """Where one voter listens: ``raft`` for peers, ``client`` for RESP clients."""

    raft: tuple[str, int]
    client: tuple[str, int]

    @property
    def client_addr(self) -> str:
        return format_host_port(self.client)


@dataclass(frozen=True)
class TLSConfig:
    """Mutual TLS between peers: this node's certificate and key, and the cluster CA."""

    cert: str
    key: str
    ca: str


@dataclass
class NodeConfig:
    """A validated node configuration (see the module docstring and docs/operations.md)."""

    node_id: int
    peers: dict[int, PeerAddress]          # every voter, this node included
    data_dir: str
    secret: bytes
    durability: str = "fsync"
    tls: TLSConfig | None = None
    client_password: str | None = None
    tick_ms: float = DEFAULT_TICK_MS
    election_ticks: int = DEFAULT_ELECTION_TICKS
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    pre_vote: bool = True
    check_quorum: bool = True
    propose_timeout: float = DEFAULT_PROPOSE_TIMEOUT
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 256
    max_clients: int = DEFAULT_MAX_CLIENTS
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    preauth_query_buffer: int = DEFAULT_PREAUTH_QUERY_BUFFER
    snapshot_threshold_bytes: int = DEFAULT_SNAPSHOT_THRESHOLD_BYTES
    snapshot_trailing_entries: int = DEFAULT_SNAPSHOT_TRAILING_ENTRIES
    # Size limits (raft/limits.py; docs/operations.md "Limits").
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_multi_commands: int = DEFAULT_MAX_MULTI_COMMANDS
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    # [debug] stale_reads: TEST ONLY. Serve reads from the local state machine on any
    # node, without ReadIndex: a planted linearizability bug for `raft torture` to find.
    debug_stale_reads: bool = False
    # [debug] power_loss: TEST ONLY. Journal what the disk was told to keep, so that
    # `raft torture` can roll the data directory back to it after a kill
    # (raft/storage/fileio.py). [debug] failpoints: TEST ONLY. Arm the storage
    # failpoints from <data_dir>.failpoints, polled while it runs.
    debug_power_loss: bool = False
    debug_failpoints: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    trace_file: str | None = None
    log_level: str = "info"
    source: str = field(default="<config>", compare=False)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def me(self) -> PeerAddress:
        return self.peers[self.node_id]

    @property
    def voters(self) -> list[int]:
        return sorted(self.peers)

    @property
    def other_peers(self) -> dict[int, tuple[str, int]]:
        """Raft addresses of the other voters (what the transport dials)."""
        return {pid: p.raft for pid, p in self.peers.items() if pid != self.node_id}

    def client_addr_of(self, node_id: int) -> str | None:
        """The RESP address of ``node_id`` (for -MOVED redirects), None if unknown."""
        peer = self.peers.get(node_id)
        return peer.client_addr if peer is not None else None


# --- parsing helpers ------------------------------------------------------------


def parse_host_port(text: Any, where: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6addr]:port"``) -> (host, port), with a clear error."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a \"host:port\" string, got {_kind(text)}")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: expected \"host:port\", got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port {port_text!r} in {text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} in {text!r} is outside 1-65535")
    return host, port


def format_host_port(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


class _Table:
    """One TOML table being read: typed getters that name the key on error, and a
    check at the end that every key was understood (typos fail loudly)."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {where or 'top level'}: expected a table, got {_kind(data)}")
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.source}: key '{self.where + '.' if self.where else ''}{name}'"

    def get(self, name: str, types: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)} is required but missing")
            return default
        value = self.data[name]
        # bool is an int subclass: `tick_ms = true` must not read as 1.
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise ConfigError(f"{self.key(name)}: expected {_type_names(types)}, got {_kind(value)}")
        if not isinstance(value, types):
            raise ConfigError(f"{self.key(name)}: expected {_type_names(types)}, got {_kind(value)}")
        return value

    def table(self, name: str, required: bool = False) -> "_Table | None":
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)} is required but missing (a [{name}] table)")
            return None
        where = f"{self.where}.{name}" if self.where else name
        return _Table(self.data[name], where, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key"
                              + (f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""))


def _type_names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _resolve(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _read_secret_file(path: str, key: str) -> bytes:
    """A secret's bytes; refused if the file is readable by its group or by everyone
    (as ssh refuses a private key: a leaked secret cannot be taken back)."""
    try:
        with open(path, "rb") as fp:
            mode = os.fstat(fp.fileno()).st_mode
            data = fp.read()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{key}: {path} is accessible by other users (mode "
                          f"{stat.S_IMODE(mode):04o}); run chmod 600 {path}")
    # Editors add a final newline; a secret never ends in one on purpose.
    return data.rstrip(b"\r\n")


# --- the config ------------------------------------------------------------------


def _peers(t: _Table) -> dict[int, PeerAddress]:
    table = t.table("peers", required=True)
    assert table is not None
    peers: dict[int, PeerAddress] = {}
    for name in list(table.data):
        try:
            pid = int(name)
        except ValueError:
            raise ConfigError(f"{table.key(name)}: peer ids must be positive integers "
                              f"([peers.1], [peers.2], ...), got {name!r}") from None
        if pid <= 0:
            raise ConfigError(f"{table.key(name)}: peer ids must be positive (0 means 'nobody')")
        if pid in peers:
            raise ConfigError(f"{table.key(name)}: peer {pid} is listed twice")
        p = table.table(name)
        assert p is not None
        raft = parse_host_port(p.get("raft", str, required=True), p.key("raft"))
        client = parse_host_port(p.get("client", str, required=True), p.key("client"))
        p.finish()
        peers[pid] = PeerAddress(raft, client)
    table.finish()
    if not peers:
        raise ConfigError(f"{t.key('peers')}: no peers listed (list every voter, this node included)")
    return peers


def _secret(t: _Table, base_dir: str) -> bytes:
    secret = t.get("secret", str)
    secret_file = t.get("secret_file", str)
    if (secret is None) == (secret_file is None):
        raise ConfigError(f"{t.source}: set exactly one of 'secret' and 'secret_file' "
                          f"(the cluster secret, at least {MIN_SECRET_SIZE} bytes)")
    if secret_file is not None:
        return _read_secret_file(_resolve(secret_file, base_dir), t.key("secret_file"))
    return secret.encode()


def _password(t: _Table, base_dir: str) -> str | None:
    password = t.get("client_password", str)
    password_file = t.get("client_password_file", str)
    if password is not None and password_file is not None:
        raise ConfigError(f"{t.source}: set at most one of 'client_password' and "
                          f"'client_password_file'")
    if password_file is not None:
        data = _read_secret_file(_resolve(password_file, base_dir), t.key("client_password_file"))
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"{t.key('client_password_file')}: not UTF-8 text") from None
    return password


def _tls(t: _Table, base_dir: str) -> TLSConfig | None:
    table = t.table("tls")
    if table is None:
        return None
    paths = {}
    for name in ("cert", "key", "ca"):
        path = _resolve(table.get(name, str, required=True), base_dir)
        if not os.path.isfile(path):
            raise ConfigError(f"{table.key(name)}: no such file: {path}")
        paths[name] = path
    table.finish()
    return TLSConfig(**paths)


def config_from_dict(data: dict[str, Any], source: str = "<config>",
                     base_dir: str | None = None) -> NodeConfig:
    """Build and validate a NodeConfig from parsed TOML (``source`` names it in errors;
    relative paths are resolved against ``base_dir``, default the current directory)."""
    base_dir = base_dir if base_dir is not None else os.getcwd()
    t = _Table(data, "", source)
    node_id = t.get("id", int, required=True)
    peers = _peers(t)
    data_dir = _resolve(t.get("data_dir", str, required=True), base_dir)
    kw: dict[str, Any] = {
        "durability": t.get("durability", str, "fsync"),
        "secret": _secret(t, base_dir),
        "client_password": _password(t, base_dir),
        "tls": _tls(t, base_dir),
        "metrics_port": t.get("metrics_port", int),
        "metrics_host": t.get("metrics_host", str, "127.0.0.1"),
        "log_level": t.get("log_level", str, "info").lower(),
    }
    trace = t.get("trace_file", str)
    kw["trace_file"] = _resolve(trace, base_dir) if trace is not None else None
    timing = t.table("timing")
    if timing is not None:
        kw["tick_ms"] = float(timing.get("tick_ms", (int, float), DEFAULT_TICK_MS))
        kw["election_ticks"] = timing.get("election_ticks", int, DEFAULT_ELECTION_TICKS)
        kw["heartbeat_ticks"] = timing.get("heartbeat_ticks", int, DEFAULT_HEARTBEAT_TICKS)
        kw["pre_vote"] = timing.get("pre_vote", bool, True)
        kw["check_quorum"] = timing.get("check_quorum", bool, True)
        kw["propose_timeout"] = float(timing.get("propose_timeout", (int, float),
                                                 DEFAULT_PROPOSE_TIMEOUT))
        timing.finish()
    limits = t.table("limits")
    if limits is not None:
        kw["max_msg_bytes"] = limits.get("max_msg_bytes", int, 1 << 20)
        kw["max_inflight"] = limits.get("max_inflight", int, 256)
        kw["max_clients"] = limits.get("max_clients", int, DEFAULT_MAX_CLIENTS)
        kw["auth_timeout"] = float(limits.get("auth_timeout", (int, float),
                                              DEFAULT_AUTH_TIMEOUT))
        kw["preauth_query_buffer"] = limits.get("preauth_query_buffer", int,
                                                DEFAULT_PREAUTH_QUERY_BUFFER)
        kw["max_entry_bytes"] = limits.get("max_entry_bytes", int, DEFAULT_MAX_ENTRY_BYTES)
        kw["max_multi_commands"] = limits.get("max_multi_commands", int, DEFAULT_MAX_MULTI_COMMANDS)
        limits.finish()
    snapshot = t.table("snapshot")
    if snapshot is not None:
        kw["snapshot_threshold_bytes"] = snapshot.get("threshold_bytes", int,
                                                      DEFAULT_SNAPSHOT_THRESHOLD_BYTES)
        kw["snapshot_trailing_entries"] = snapshot.get("trailing_entries", int,
                                                       DEFAULT_SNAPSHOT_TRAILING_ENTRIES)
        kw["max_log_bytes"] = snapshot.get("max_log_bytes", int, DEFAULT_MAX_LOG_BYTES)
        snapshot.finish()
    debug = t.table("debug")
    if debug is not None:
        kw["debug_stale_reads"] = debug.get("stale_reads", bool, False)
        kw["debug_power_loss"] = debug.get("power_loss", bool, False)
        kw["debug_failpoints"] = debug.get("failpoints", bool, False)
        debug.finish()
        import logging
        for key, what in (("stale_reads", "reads are NOT linearizable"),
                          ("power_loss", "every data-directory change is journaled"),
                          ("failpoints", "storage failpoints can be armed")):
            if kw[f"debug_{key}"]:
                logging.getLogger("raft.config").warning(
                    "%s: [debug] %s is on: %s (test only)", source, key, what)
    t.finish()
    return NodeConfig(node_id=node_id, peers=peers, data_dir=data_dir, source=source, **kw)


def validate(c: NodeConfig) -> None:
    """Cross-field checks; raises ConfigError naming the key."""
    src = c.source

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{src}: key '{key}': {problem}")

    if c.node_id <= 0:
        raise bad("id", f"must be a positive integer (0 means 'nobody'), got {c.node_id}")
    _check_bounds(c, bad)
    if c.node_id not in c.peers:
        raise bad("id", f"node {c.node_id} is not in [peers] (which lists {sorted(c.peers)}); "
                        f"list every voter, this node included")
    if c.durability not in DURABILITY_MODES:
        raise bad("durability", f"must be one of {', '.join(map(repr, DURABILITY_MODES))}, "
                                f"got {c.durability!r}")
    if len(c.secret) < MIN_SECRET_SIZE:
        raise bad("secret", f"the cluster secret must be at least {MIN_SECRET_SIZE} bytes, "
                            f"got {len(c.secret)}")
    if c.heartbeat_ticks < 1:
        raise bad("timing.heartbeat_ticks", f"must be >= 1, got {c.heartbeat_ticks}")
    if c.election_ticks <= c.heartbeat_ticks:
        # §5.6: broadcastTime << electionTimeout, or followers time out between heartbeats.
        raise bad("timing.election_ticks", f"must be greater than heartbeat_ticks "
                                           f"({c.heartbeat_ticks}), got {c.election_ticks}")
    if c.metrics_port is not None and not 0 <= c.metrics_port <= 65535:
        raise bad("metrics_port", f"must be in 0-65535, got {c.metrics_port}")
    if c.log_level not in LOG_LEVELS:
        raise bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {c.log_level!r}")
    seen: dict[tuple[str, int], str] = {}
    for pid in sorted(c.peers):
        p = c.peers[pid]
        for kind, addr in (("raft", p.raft), ("client", p.client)):
            key = f"peers.{pid}.{kind}"
            if addr in seen:
                raise bad(key, f"{format_host_port(addr)} is also used by {seen[addr]}")
            seen[addr] = key


_BOUND_FIELDS = {
    "timing.tick_ms": "tick_ms", "timing.propose_timeout": "propose_timeout",
    "timing.election_ticks": "election_ticks", "timing.heartbeat_ticks": "heartbeat_ticks",
    "limits.max_msg_bytes": "max_msg_bytes", "limits.max_inflight": "max_inflight",
    "limits.max_clients": "max_clients", "limits.auth_timeout": "auth_timeout",
    "limits.preauth_query_buffer": "preauth_query_buffer",
    "snapshot.threshold_bytes": "snapshot_threshold_bytes",
    "snapshot.trailing_entries": "snapshot_trailing_entries",
    "snapshot.max_log_bytes": "max_log_bytes",
    "limits.max_entry_bytes": "max_entry_bytes",
    "limits.max_multi_commands": "max_multi_commands",
}


def _check_bounds(c: NodeConfig, bad: Any) -> None:
    """Every number within BOUNDS. The comparisons are written so that NaN fails them
    (every comparison with NaN is false) and so does +/-inf (outside any bound)."""
    for key, name in _BOUND_FIELDS.items():
        value = getattr(c, name)
        lo, hi = BOUNDS[key]
        low_ok = value > lo if key in _OPEN_LOW else value >= lo
        if not (low_ok and value <= hi):
            low = f"> {lo:g}" if key in _OPEN_LOW else f">= {lo:g}"
            raise bad(key, f"must be {low} and <= {hi:g}, got {value}")
    if c.node_id >= 1 << 63 or any(pid >= 1 << 63 for pid in c.peers):
        raise bad("id", "node ids must be below 2**63")


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node's TOML config file; raises ConfigError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fp:
            data = tomllib.load(fp)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(data, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def render_config(c: NodeConfig, secret_file: str | None = None,
                  password_file: str | None = None) -> str:
    """TOML text for ``c`` (what ``raft cluster`` writes). The secret is referenced by
    ``secret_file`` when given, else written inline (hex-safe secrets only); the client
    password likewise by ``password_file``."""
    lines = [f"id = {c.node_id}", f"data_dir = {_q(c.data_dir)}", f"durability = {_q(c.durability)}"]
    if secret_file is not None:
        lines.append(f"secret_file = {_q(secret_file)}")
    else:
        lines.append(f"secret = {_q(c.secret.decode())}")
    if password_file is not None:
        lines.append(f"client_password_file = {_q(password_file)}")
    elif c.client_password is not None:
        lines.append(f"client_password = {_q(c.client_password)}")
    if c.metrics_port is not None:
        lines.append(f"metrics_port = {c.metrics_port}")
        lines.append(f"metrics_host = {_q(c.metrics_host)}")
    if c.trace_file is not None:
        lines.append(f"trace_file = {_q(c.trace_file)}")
    lines.append(f"log_level = {_q(c.log_level)}")
    lines += ["", "[timing]", f"tick_ms = {c.tick_ms}", f"election_ticks = {c.election_ticks}",
              f"heartbeat_ticks = {c.heartbeat_ticks}", f"pre_vote = {str(c.pre_vote).lower()}",
              f"check_quorum = {str(c.check_quorum).lower()}",
              f"propose_timeout = {c.propose_timeout}"]
    lines += ["", "[limits]", f"max_msg_bytes = {c.max_msg_bytes}", f"max_inflight = {c.max_inflight}",
              f"max_clients = {c.max_clients}", f"auth_timeout = {c.auth_timeout}",
              f"preauth_query_buffer = {c.preauth_query_buffer}",
              f"max_entry_bytes = {c.max_entry_bytes}", f"max_multi_commands = {c.max_multi_commands}"]
    lines += ["", "[snapshot]", f"threshold_bytes = {c.snapshot_threshold_bytes}",
              f"trailing_entries = {c.snapshot_trailing_entries}",
              f"max_log_bytes = {c.max_log_bytes}"]
    debug = [f"{key} = true   # TEST ONLY" for key in ("stale_reads", "power_loss", "failpoints")
             if getattr(c, f"debug_{key}")]
    if debug:
        lines += ["", "[debug]"] + debug
    if c.tls is not None:
        lines += ["", "[tls]", f"cert = {_q(c.tls.cert)}", f"key = {_q(c.tls.key)}",
                  f"ca = {_q(c.tls.ca)}"]
    for pid in sorted(c.peers):
        p = c.peers[pid]
        lines += ["", f"[peers.{pid}]", f"raft = {_q(format_host_port(p.raft))}",
                  f"client = {_q(format_host_port(p.client))}"]
    return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    """A TOML basic string."""
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{out}"'
