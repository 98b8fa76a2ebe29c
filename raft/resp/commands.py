"""Commands the RESP server answers itself, without the state machine: PING, ECHO,
MULTI/EXEC, AUTH, HELLO, CLIENT, COMMAND, INFO, RAFT.SEQ... Each registers with
``@_local(name, arity)``; the connection checks the arity before calling it."""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from raft import kv
from raft.api import NotLeaderError
from raft.kv import OK, ErrorReply, Status, arity_ok, as_text
from raft.resp.protocol import _one_line

if TYPE_CHECKING:
    from raft.resp.connection import RespConnection

log = logging.getLogger("raft.resp")

REDIS_COMPAT_VERSION = "7.0.0"  # what INFO/HELLO report, so clients enable 7.0 features


# --------------------------------------------------------------------------- local commands
# Commands the server answers itself (connection state, introspection). Each entry is
# (arity, coroutine function); arity is checked before the call.

if TYPE_CHECKING:
    _Handler = Callable[[RespConnection, list[bytes]], Awaitable[None]]
_LOCAL_COMMANDS: dict[bytes, tuple[int, _Handler]] = {}


def _not_leader_reply(e: NotLeaderError) -> ErrorReply:
    """-MOVED to the leader's client address, or -CLUSTERDOWN if none is known."""
    if e.leader_addr:
        return ErrorReply(f"MOVED 0 {e.leader_addr}")
    return ErrorReply("CLUSTERDOWN no leader known; retry later")


def _local(name: str, arity: int) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        _LOCAL_COMMANDS[name.encode()] = (arity, fn)
        return fn

    return register


@_local("ping", -1)
async def _ping(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 2:
        c.reply(kv.arity_error("ping"))
    else:
        c.reply(argv[1] if len(argv) == 2 else Status("PONG"))


@_local("echo", 2)
async def _echo(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(argv[1])


@_local("quit", -1)
async def _quit(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(OK)
    c._finish("")


_QUEUED = Status("QUEUED")
# Commands that act immediately even between MULTI and EXEC.
_NOT_QUEUED = frozenset((b"multi", b"exec", b"discard", b"quit", b"watch", b"unwatch"))


@_local("multi", 1)
async def _multi(c: RespConnection, argv: list[bytes]) -> None:
    if c.multi is not None:
        c.reply(ErrorReply("ERR MULTI calls can not be nested"))
    else:
        c.multi, c.multi_failed, c.multi_bytes = [], False, 0
        c.reply(OK)


@_local("exec", 1)
async def _exec(c: RespConnection, argv: list[bytes]) -> None:
    """The queued commands go into the log as one RAFT.EXEC entry: atomic, and applied
    (reads included) in order with nothing in between."""
    queued, failed = c.multi, c.multi_failed
    c.multi, c.multi_failed = None, False
    if queued is None:
        c.reply(ErrorReply("ERR EXEC without MULTI"))
    elif failed:
        c.reply(ErrorReply("EXECABORT Transaction discarded because of previous errors."))
    elif not queued:
        c.reply([])
    else:
        c._propose([b"RAFT.EXEC", *(kv.encode_argv(q) for q in queued)], 0, 0)


@_local("discard", 1)
async def _discard(c: RespConnection, argv: list[bytes]) -> None:
    if c.multi is None:
        c.reply(ErrorReply("ERR DISCARD without MULTI"))
    else:
        c.multi, c.multi_failed = None, False
        c.reply(OK)


@_local("watch", -2)
async def _watch(c: RespConnection, argv: list[bytes]) -> None:
    # Optimistic locking would need the version of each key at EXEC time in the log.
    c.reply(ErrorReply("ERR WATCH is not supported; MULTI/EXEC alone is atomic"))


@_local("unwatch", 1)
async def _unwatch(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(OK)


@_local("select", 2)
async def _select(c: RespConnection, argv: list[bytes]) -> None:
    n = kv.parse_int(argv[1])
    if n is None:
        c.reply(kv.E_NOT_INT)
    else:  # one replicated keyspace
        c.reply(OK if n == 0 else ErrorReply("ERR DB index is out of range"))


@_local("readonly", 1)
async def _readonly(c: RespConnection, argv: list[bytes]) -> None:
    c.readonly = True
    c.reply(OK)


@_local("readwrite", 1)
async def _readwrite(c: RespConnection, argv: list[bytes]) -> None:
    c.readonly = False
    c.reply(OK)


def _check_password(c: RespConnection, username: bytes, password: bytes) -> ErrorReply | None:
    expected = c.cfg.password
    if expected is None:   # callers check first; explicit so that -O cannot turn it into a crash
        return ErrorReply("ERR AUTH <password> called without any password configured for "
                          "the default user.")
    ok = username == b"default" and hmac.compare_digest(password, expected.encode())
    if not ok:
        return ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
    c.authenticated = True
    return None


@_local("auth", -2)
async def _auth(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 3:
        c.reply(kv.E_SYNTAX)
    elif c.cfg.password is None:
        c.reply(ErrorReply(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        ))
    else:
        user = argv[1] if len(argv) == 3 else b"default"
        c.reply(_check_password(c, user, argv[-1]) or OK)


@_local("hello", -1)
async def _hello(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 1:
        proto = kv.parse_int(argv[1])
        if proto is None:
            c.reply(ErrorReply("ERR Protocol version is not an integer or out of range"))
            return
        if proto not in (2, 3):
            c.reply(ErrorReply("NOPROTO unsupported protocol version"))
            return
    else:
        proto = c.proto
    i, name = 2, None
    while i < len(argv):
        opt, more = argv[i].lower(), len(argv) - i - 1
        if opt == b"auth" and more >= 2:
            if c.cfg.password is None:
                err = None  # Redis accepts any credentials when none are configured
            else:
                err = _check_password(c, argv[i + 1], argv[i + 2])
            if err is not None:
                c.reply(err)
                return
            i += 3
        elif opt == b"setname" and more >= 1:
            name = argv[i + 1]
            i += 2
        else:
            c.reply(ErrorReply(f"ERR Syntax error in HELLO option '{as_text(argv[i])}'"))
            return
    if not c.authenticated:
        c.reply(ErrorReply(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise "
            "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
            "client and select the RESP protocol version at the same time"
        ))
        return
    if name is not None:
        if not _valid_client_name(name):
            c.reply(_BAD_NAME)
            return
        c.name = name or None
    await c.replies_drained()  # replies still queued were asked for in the old protocol
    c.proto = proto  # this reply already uses the new protocol, as in Redis
    role = "master" if _status(c).get("role") == "leader" else "replica"
    c.reply({b"server": b"redis", b"version": REDIS_COMPAT_VERSION.encode(), b"proto": proto,
             b"id": c.client_id, b"mode": b"standalone", b"role": role.encode(),
             b"modules": []})


_BAD_NAME = ErrorReply(
    "ERR Client names cannot contain spaces, newlines or special characters."
)


def _valid_client_name(name: bytes) -> bool:
    return all(33 <= b <= 126 for b in name)


@_local("client", -2)
async def _client(c: RespConnection, argv: list[bytes]) -> None:
    sub = argv[1].lower()
    arity = {b"id": 2, b"getname": 2, b"setname": 3, b"setinfo": 4, b"info": 2,
             b"list": -2, b"help": 2}.get(sub)
    if arity is None:
        c.reply(ErrorReply(_one_line(
            f"ERR unknown subcommand '{as_text(argv[1])[:128]}'. Try CLIENT HELP.")))
    elif not arity_ok(arity, len(argv)):
        c.reply(kv.arity_error(f"client|{sub.decode('latin-1')}"))
    elif sub == b"id":
        c.reply(c.client_id)
    elif sub == b"getname":
        c.reply(c.name)
    elif sub == b"setname":
        if not _valid_client_name(argv[2]):
            c.reply(_BAD_NAME)
        else:
            c.name = argv[2] or None
            c.reply(OK)
    elif sub == b"setinfo":  # redis-py sends LIB-NAME/LIB-VER on connect
        if argv[2].lower() in (b"lib-name", b"lib-ver"):
            c.reply(OK)
        else:
            c.reply(ErrorReply(_one_line(f"ERR Unrecognized option '{as_text(argv[2])}'")))
    elif sub == b"info":
        c.reply(_client_line(c).encode())
    elif sub == b"list":
        c.reply("".join(_client_line(x) for x in sorted(
            c.srv.connections, key=lambda x: x.client_id)).encode())
    else:
        c.reply([b"CLIENT ID", b"CLIENT GETNAME", b"CLIENT SETNAME <name>",
                 b"CLIENT SETINFO LIB-NAME|LIB-VER <value>", b"CLIENT INFO", b"CLIENT LIST"])


def _client_line(c: RespConnection) -> str:
    name = (c.name or b"").decode("latin-1")
    cmd = c.last_command.decode("latin-1")
    return f"id={c.client_id} addr={c.addr} name={name} db=0 cmd={cmd}\n"


@_local("command", -1)
async def _command(c: RespConnection, argv: list[bytes]) -> None:
    """Enough of COMMAND for redis-cli and client libraries to start cleanly."""
    sub = argv[1].lower() if len(argv) > 1 else b""
    if sub == b"":
        c.reply([_command_info(n) for n in _all_command_names()])
    elif sub == b"count":
        c.reply(len(_all_command_names()))
    elif sub == b"list":
        c.reply([n.encode() for n in _all_command_names()])
    elif sub == b"info":
        names = [n.lower().decode("latin-1") for n in argv[2:]] or _all_command_names()
        c.reply([_command_info(n) for n in names])
    elif sub == b"docs":
        c.reply([])  # no docs: redis-cli falls back to its built-in hints
    else:
        c.reply(ErrorReply(_one_line(
            f"ERR unknown subcommand '{as_text(argv[1])[:128]}'. Try COMMAND HELP.")))


def _all_command_names() -> list[str]:
    local = [n.decode() for n in _LOCAL_COMMANDS]
    return sorted(set(local) | set(kv.command_names()))


def _command_info(name: str) -> list | None:
    """Redis's COMMAND INFO shape: name, arity, flags, first key, last key, key step."""
    spec = kv.command_spec(name.encode())
    if spec is not None:
        flags = [Status("write")] if spec.write else [Status("readonly")]
        first, last, step = kv.key_positions(name)
        return [name.encode(), spec.arity, flags, first, last, step]
    local = _LOCAL_COMMANDS.get(name.encode())
    if local is not None:
        return [name.encode(), local[0], [Status("fast")], 0, 0, 0]
    return None


def _status(c: RespConnection) -> dict:
    try:
        return dict(c.api.status())
    except Exception:
        log.exception("status() failed")
        return {}


@_local("info", -1)
async def _info(c: RespConnection, argv: list[bytes]) -> None:
    wanted = {a.lower().decode("latin-1") for a in argv[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(_INFO_SECTIONS)
    text = "\r\n".join(_INFO_SECTIONS[s](c) for s in _INFO_SECTIONS if s in wanted)
    c.reply(text.encode())


def _info_server(c: RespConnection) -> str:
    return _section("Server", {
        "redis_version": REDIS_COMPAT_VERSION,
        "redis_mode": "standalone",
        "server": "raft",
        "process_id": os.getpid(),
        "tcp_port": c.srv.port,
        "uptime_in_seconds": int(time.monotonic() - c.srv.started),
    })


def _info_clients(c: RespConnection) -> str:
    return _section("Clients", {"connected_clients": len(c.srv.connections),
                                "maxclients": c.srv.max_clients,
                                "rejected_connections": c.srv.refused})


def _info_replication(c: RespConnection) -> str:
    status = _status(c)
    return _section("Replication", {
        "role": "master" if status.get("role") == "leader" else "slave",
        "raft_leader": status.get("leader", ""),
    })


def _info_raft(c: RespConnection) -> str:
    fields: dict[str, object] = {f"raft_{k}": v for k, v in _status(c).items()}
    sm = c.api.state_machine
    fields["raft_sm_last_applied"] = sm.last_applied
    fields["raft_sm_clock_ms"] = sm.clock_ms
    fields["raft_sm_sessions"] = sm.session_count()
    return _section("Raft", fields)


def _info_keyspace(c: RespConnection) -> str:
    sm = c.api.state_machine
    if not sm.dbsize():
        return _section("Keyspace", {})
    return _section("Keyspace", {
        "db0": f"keys={sm.dbsize()},expires={sm.expires_count()},avg_ttl=0"})


def _section(title: str, fields: dict[str, object]) -> str:
    lines = [f"# {title}"]
    lines += [f"{k}:{_one_line(str(v))}" for k, v in fields.items()]
    return "\r\n".join(lines) + "\r\n"


_INFO_SECTIONS: dict[str, Callable[[RespConnection], str]] = {
    "server": _info_server,
    "clients": _info_clients,
    "replication": _info_replication,
    "raft": _info_raft,
    "keyspace": _info_keyspace,
}


@_local("raft.seq", -4)
async def _raft_seq(c: RespConnection, argv: list[bytes]) -> None:
    """RAFT.SEQ <session> <seq> <command> [args...]: run a write exactly once."""
    client_id, seq = kv.parse_int(argv[1]), kv.parse_int(argv[2])
    if client_id is None or seq is None:
        c.reply(kv.E_NOT_INT)
        return
    if client_id < 1 or seq < 1:
        c.reply(ErrorReply("ERR RAFT.SEQ session id and seq must be >= 1"))
        return
    inner = argv[3:]
    if inner[0].lower() in _LOCAL_COMMANDS or inner[0].lower() == b"raft.session":
        c.reply(ErrorReply(_one_line(
            f"ERR RAFT.SEQ cannot wrap '{as_text(inner[0])}': only data commands")))
        return
    # Reads need no session: they run as plain reads (and consume no seq).
    await c._state_machine_command(inner, client_id, seq)


# --------------------------------------------------------------------------- membership
# RAFT.MEMBERS / ADDNODE / PROMOTE / REMOVENODE / TRANSFER (docs/operations.md,
# "Membership"). Answered by the leader once the change is committed and applied
# there; a follower redirects (-MOVED), a busy leader says -TRYAGAIN.

async def _membership_reply(c: RespConnection, call: Callable[[], Awaitable[object]]) -> None:
    from raft.api import NotLeaderError, TryAgainError
    from raft.membership import MembershipError

    if not hasattr(c.api, "change_membership"):
        c.reply(ErrorReply("ERR this node does not support membership changes"))
        return
    try:
        await call()
    except NotLeaderError as e:
        c.reply(_not_leader_reply(e))
    except TryAgainError as e:
        c.reply(ErrorReply(_one_line(f"TRYAGAIN {e}")))
    except MembershipError as e:
        c.reply(ErrorReply(_one_line(f"ERR {e}")))
    except TimeoutError:
        c.reply(ErrorReply("TRYAGAIN the change timed out; it may or may not have been applied"))
    else:
        c.reply(OK)


def _node_id_arg(c: RespConnection, arg: bytes) -> int | None:
    nid = kv.parse_int(arg)
    if nid is None or not 0 < nid < 1 << 63:
        c.reply(ErrorReply("ERR node id must be an integer in [1, 2^63)"))
        return None
    return nid


@_local("raft.members", 1)
async def _raft_members(c: RespConnection, argv: list[bytes]) -> None:
    """One entry per member: id, role, raft and client addresses, whether it leads,
    and (on the leader) its match index and lag in entries."""
    if not hasattr(c.api, "members"):
        c.reply(ErrorReply("ERR this node does not support membership changes"))
        return
    rows = []
    for m in c.api.members():
        row: list[object] = [b"id", m["id"], b"role", m["role"].encode(), b"raft", m["raft"].encode(),
                             b"client", m["client"].encode(), b"leader", int(m["leader"])]
        if "match" in m:
            row += [b"match", m["match"], b"lag", m["lag"]]
        rows.append(row)
    c.reply(rows)


@_local("raft.addnode", -4)
async def _raft_addnode(c: RespConnection, argv: list[bytes]) -> None:
    """RAFT.ADDNODE <id> <raft host:port> <client host:port> [VOTER|LEARNER]"""
    from raft.config import ConfigError, PeerAddress, parse_host_port

    if len(argv) > 5:
        c.reply(kv.arity_error("raft.addnode"))
        return
    nid = _node_id_arg(c, argv[1])
    if nid is None:
        return
    kind = argv[4].lower() if len(argv) == 5 else b"voter"
    if kind not in (b"voter", b"learner"):
        c.reply(ErrorReply("ERR the role must be VOTER or LEARNER"))
        return
    try:
        addr = PeerAddress(parse_host_port(as_text(argv[2]), "raft address"),
                           parse_host_port(as_text(argv[3]), "client address"))
    except ConfigError as e:
        c.reply(ErrorReply(_one_line(f"ERR {e}")))
        return
    op = "add" if kind == b"voter" else "learner"
    await _membership_reply(c, lambda: c.api.change_membership(op, nid, addr))


@_local("raft.promote", 2)
async def _raft_promote(c: RespConnection, argv: list[bytes]) -> None:
    nid = _node_id_arg(c, argv[1])
    if nid is not None:
        await _membership_reply(c, lambda: c.api.change_membership("promote", nid))


@_local("raft.removenode", 2)
async def _raft_removenode(c: RespConnection, argv: list[bytes]) -> None:
    nid = _node_id_arg(c, argv[1])
    if nid is not None:
        await _membership_reply(c, lambda: c.api.change_membership("remove", nid))


@_local("raft.transfer", 2)
async def _raft_transfer(c: RespConnection, argv: list[bytes]) -> None:
    nid = _node_id_arg(c, argv[1])
    if nid is not None:
        await _membership_reply(c, lambda: c.api.transfer_leadership(nid))
