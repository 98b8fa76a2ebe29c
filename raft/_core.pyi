"""Type stubs for the compiled Raft core (raft/_core.pyx)."""
from typing import Any

MSG_APP: int
MSG_APP_RESP: int
MSG_VOTE: int
MSG_VOTE_RESP: int
MSG_SNAP: int
MSG_SNAP_RESP: int
MSG_PREVOTE: int
MSG_PREVOTE_RESP: int
ENTRY_NORMAL: int
ENTRY_NOOP: int
ENTRY_MEM_OVERHEAD: int
FOLLOWER: int
CANDIDATE: int
LEADER: int
PROGRESS_PROBE: int
PROGRESS_REPLICATE: int
PROGRESS_SNAPSHOT: int
ROLE_NAMES: tuple[str, str, str]
MSG_NAMES: dict[int, str]

class RaftError(Exception): ...
class LocalProtocolError(RaftError): ...
class RemoteProtocolError(RaftError): ...
class InvariantViolation(RaftError): ...

class NotLeader(LocalProtocolError):
    leader: int
    def __init__(self, leader: int) -> None: ...

class Entry:
    index: int
    term: int
    type: int
    data: bytes
    def __init__(self, index: int, term: int, type: int = ..., data: bytes = ...) -> None: ...

class HardState:
    term: int
    vote: int
    commit: int
    def __init__(self, term: int = 0, vote: int = 0, commit: int = 0) -> None: ...

class Snapshot:
    """The application's state with every entry up to (index, term) applied."""
    index: int
    term: int
    data: bytes
    def __init__(self, index: int, term: int, data: bytes) -> None: ...

class Message:
    type: int
    src: int
    dst: int
    term: int
    log_term: int
    index: int
    commit: int
    reject_hint: int
    msg_id: int
    context: int
    reject: bool
    entries: list[Entry]
    data: bytes | None          # MSG_SNAP: one chunk of the snapshot
    def __init__(self, type: int, src: int = 0, dst: int = 0, term: int = 0,
                 log_term: int = 0, index: int = 0, commit: int = 0,
                 entries: list[Entry] | None = None, reject: bool = False,
                 reject_hint: int = 0, msg_id: int = 0, context: int = 0,
                 data: bytes | None = None) -> None: ...
    def copy(self) -> Message: ...

class RaftLog:
    offset: int
    snapshot_term: int
    committed: int
    applied: int
    stable: int
    unstable_from: int
    mem_bytes: int
    def __init__(self, entries: list[Entry] | None = None, snapshot_index: int = 0,
                 snapshot_term: int = 0) -> None: ...
    @property
    def first_index(self) -> int: ...
    @property
    def last_index(self) -> int: ...
    @property
    def last_term(self) -> int: ...
    def term(self, index: int) -> int: ...
    def entries(self, lo: int, hi: int) -> list[Entry]: ...
    def matches(self, index: int, term: int) -> bool: ...
    def conflict_hint(self, index: int, term: int) -> int: ...
    def is_up_to_date(self, last_index: int, last_term: int) -> bool: ...
    def compact(self, index: int) -> None: ...
    def __len__(self) -> int: ...

class Progress:
    match: int
    next: int
    state: int
    inflight: int
    snap_index: int

class Ready:
    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    messages_after_persist: list[Message]
    committed_entries: list[Entry]
    read_states: list[tuple[int, int]]
    snapshot: Snapshot | None
    @property
    def must_sync(self) -> bool: ...
    @property
    def must_fsync(self) -> bool: ...

class RawNode:
    id: int
    voters: tuple[int, ...]
    term: int
    vote: int
    leader: int
    role: int
    log: RaftLog
    pre_vote: bool
    check_quorum: bool
    def __init__(self, id: int, voters: list[int] | tuple[int, ...], *, seed: int = 0,
                 election_tick: int = 10, heartbeat_tick: int = 1, max_msg_bytes: int = ...,
                 max_inflight: int = 256, max_inflight_bytes: int = 0, hard_state: HardState | None = None,
                 entries: list[Entry] | None = None, snapshot: Snapshot | None = None,
                 applied: int = 0, msg_id_start: int = 0,
                 unsafe_commit_any_term: bool = False, pre_vote: bool = False,
                 check_quorum: bool = False, trace: list | None = None) -> None: ...
    def tick(self) -> None: ...
    def campaign(self) -> None: ...
    def step(self, m: Message) -> None: ...
    def read_index(self, ctx: int) -> None: ...
    def propose(self, data: bytes) -> int: ...
    def compact(self, index: int, data: bytes) -> None: ...
    @property
    def snapshot(self) -> Snapshot | None: ...
    def propose_batch(self, datas: list[bytes]) -> int: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def advance(self, rd: Ready) -> None: ...
    def take_messages(self) -> list[Message]: ...
    def take_read_states(self) -> list[tuple[int, int]]: ...
    def take_committed(self) -> list[Entry]: ...
    @property
    def hard_state(self) -> HardState: ...
    @property
    def commit(self) -> int: ...
    @property
    def applied(self) -> int: ...
    @property
    def last_index(self) -> int: ...
    @property
    def role_name(self) -> str: ...
    def progress_of(self, peer: int) -> Progress | None: ...
    def status(self) -> dict[str, Any]: ...
