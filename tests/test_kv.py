"""The KV state machine: every command and its Redis error text, sessions, snapshots,
determinism, and the log command encoding.

Expected replies and error strings were checked against Redis 7.0 (test_resp.py repeats
the comparison against a live redis-server when one is installed)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft._core import ENTRY_NOOP, ENTRY_NORMAL, Entry
from raft.kv import (
    NULL_ARRAY,
    OK,
    CommandDecodeError,
    ErrorReply,
    KVStateMachine,
    SnapshotError,
    Status,
    check_command,
    decode_command,
    encode_command,
    is_write,
)

T0 = 1_700_000_000_000  # a log timestamp (ms)
E_NOT_INT = "ERR value is not an integer or out of range"
E_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
E_SYNTAX = "ERR syntax error"
E_BAD_ID = "ERR Invalid stream ID specified as stream command argument"


class Log:
    """Applies commands to a state machine as a Raft log would: increasing indexes,
    each command stamped with a leader timestamp."""

    def __init__(self, sm: KVStateMachine | None = None, t: int = T0) -> None:
        self.sm = sm or KVStateMachine()
        self.index = self.sm.last_applied
        self.t = t
        self.entries: list[bytes] = []

    def __call__(self, *args: str | bytes | int, cid: int = 0, seq: int = 0):
        argv = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        data = encode_command(cid, seq, argv, time_ms=self.t)
        self.entries.append(data)
        self.index += 1
        return self.sm.apply(self.index, data)

    def read(self, *args: str | bytes, now: int | None = None):
        argv = [a if isinstance(a, bytes) else a.encode() for a in args]
        return self.sm.read(argv, self.t if now is None else now)


@pytest.fixture
def db() -> Log:
    return Log()


# --------------------------------------------------------------------------- encoding


def test_encode_decode_round_trip():
    data = encode_command(7, 42, [b"SET", b"k", b"\x00\xff" * 100], time_ms=T0)
    cmd = decode_command(data)
    assert (cmd.client_id, cmd.seq, cmd.time_ms) == (7, 42, T0)
    assert cmd.argv == (b"SET", b"k", b"\x00\xff" * 100)
    # Deterministic and compact: equal inputs give equal bytes.
    assert data == encode_command(7, 42, [b"SET", b"k", b"\x00\xff" * 100], time_ms=T0)
    assert len(encode_command(0, 0, [b"GET", b"k"], time_ms=0)) == 11


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**64), st.integers(0, 2**64), st.integers(0, 2**50),
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
)
def test_encode_decode_property(cid, seq, t, argv):
    cmd = decode_command(encode_command(cid, seq, argv, time_ms=t))
    assert (cmd.client_id, cmd.seq, cmd.time_ms, list(cmd.argv)) == (cid, seq, t, argv)


@pytest.mark.parametrize("data, message", [
    (b"", "truncated"),
    (b"\x02\x00\x00\x00\x01\x01a", "version 2"),
    (b"\x01\x00\x00\x00\x01\x05ab", "runs past the end"),
    (b"\x01\x00\x00\x00\xff\xff\xff\xff\x0f", "exceeds the remaining input"),
    (b"\x01\x00\x00\x00\x01\x01ax", "trailing"),
    (b"\x01\x00\x00\x00\x00", "empty argv"),
    (b"\x01" + b"\xff" * 12, "varint too long"),
])
def test_decode_rejects_malformed(data, message):
    with pytest.raises(CommandDecodeError, match=message):
        decode_command(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_garbage_never_crashes(data):
    try:
        decode_command(data)
    except CommandDecodeError:
        pass


def test_malformed_entry_is_a_deterministic_error_reply():
    sm = KVStateMachine()
    reply = sm.apply(1, b"garbage")
    assert isinstance(reply, ErrorReply) and reply.startswith("ERR malformed log entry at index 1")
    assert sm.last_applied == 1


def test_apply_out_of_order_is_refused():
    sm = KVStateMachine()
    sm.apply(5, encode_command(0, 0, [b"SET", b"a", b"1"], time_ms=T0))  # gaps are fine
    with pytest.raises(ValueError, match="apply index 5 <= last applied 5"):
        sm.apply(5, encode_command(0, 0, [b"SET", b"a", b"1"], time_ms=T0))


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("argv, write", [
    ([b"SET", b"a", b"b"], True), ([b"set", b"a", b"b"], True), ([b"GET", b"a"], False),
    ([b"DEL", b"a"], True), ([b"EXISTS", b"a"], False), ([b"INCR", b"a"], True),
    ([b"MGET", b"a"], False), ([b"MSET", b"a", b"b"], True), ([b"DBSIZE"], False),
    ([b"XADD", b"s", b"*", b"f", b"v"], True), ([b"XRANGE", b"s", b"-", b"+"], False),
    ([b"XREAD", b"STREAMS", b"s", b"0"], False), ([b"XLEN", b"s"], False),
    ([b"RAFT.SESSION"], True), ([b"RAFT.SEQ", b"1", b"2", b"INCR", b"a"], True),
    ([b"RAFT.SEQ", b"1", b"2", b"GET", b"a"], False), ([b"NOSUCH"], False),
    ([b"TTL", b"a"], False), ([b"EXPIRE", b"a", b"1"], True), ([b"FLUSHDB"], True),
])
def test_is_write(argv, write):
    assert is_write(argv) is write


def test_check_command_unknown_and_arity():
    assert check_command([b"GET", b"a"]) is None
    assert check_command([b"GET"]) == "ERR wrong number of arguments for 'get' command"
    assert check_command([b"foo", b"a", b"b"]) == (
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
    assert check_command([b"foo"]) == "ERR unknown command 'foo', with args beginning with: "
    long = check_command([b"foo", b"x" * 300, b"y"])
    assert long.endswith("'" + "x" * 128 + "' ")  # Redis truncates the args at 128 chars


# --------------------------------------------------------------------------- strings


def test_set_get_del_exists(db):
    assert db("SET", "a", "1") == OK and isinstance(db("SET", "a", "1"), Status)
    assert db.read("GET", "a") == b"1"
    assert db.read("GET", "nokey") is None
    assert db("SET", "b", "2") == OK
    assert db.read("EXISTS", "a", "b", "a", "nokey") == 3
    assert db("DEL", "a", "a", "nokey") == 1
    assert db("UNLINK", "b") == 1
    assert db.read("EXISTS", "a") == 0
    assert db.read("DBSIZE") == 0


def test_set_nx_xx_get(db):
    assert db("SET", "k", "v", "NX") == OK
    assert db("SET", "k", "w", "NX") is None
    assert db("SET", "k2", "w", "XX") is None
    assert db.read("GET", "k2") is None
    assert db("SET", "k", "w", "XX") == OK
    assert db("SET", "k", "x", "GET") == b"w"
    assert db("SET", "new", "x", "GET") is None
    assert db("SET", "k", "y", "NX", "GET") == b"x"  # not set, old value returned
    assert db.read("GET", "k") == b"x"


@pytest.mark.parametrize("args, error", [
    (["NX", "XX"], E_SYNTAX),
    (["XX", "NX"], E_SYNTAX),
    (["EX", "1", "PX", "1"], E_SYNTAX),
    (["KEEPTTL", "EX", "1"], E_SYNTAX),
    (["EX", "1", "KEEPTTL"], E_SYNTAX),
    (["EX"], E_SYNTAX),
    (["PERSIST"], E_SYNTAX),
    (["FOO"], E_SYNTAX),
    (["EX", "x"], E_NOT_INT),
    (["EX", "0"], "ERR invalid expire time in 'set' command"),
    (["PX", "-1"], "ERR invalid expire time in 'set' command"),
    (["EX", "9223372036854775807"], "ERR invalid expire time in 'set' command"),
    (["PX", "9223372036854775807"], "ERR invalid expire time in 'set' command"),
])
def test_set_option_errors(db, args, error):
    assert db("SET", "k", "v", *args) == error
    assert db.read("EXISTS", "k") == 0


def test_set_expiry_uses_the_log_clock(db):
    db("SET", "ex", "v", "EX", "10")
    db("SET", "px", "v", "PX", "1500")
    db("SET", "exat", "v", "EXAT", str(T0 // 1000 + 5))
    db("SET", "pxat", "v", "PXAT", str(T0 + 700))
    assert db.read("TTL", "ex") == 10 and db.read("PTTL", "ex") == 10_000
    assert db.read("PTTL", "px") == 1500 and db.read("TTL", "px") == 2  # rounded like Redis
    assert db.read("TTL", "exat") == 5
    assert db.read("PTTL", "pxat") == 700
    # A read with a later clock hides what has expired by then, without mutating state.
    assert db.read("GET", "px", now=T0 + 1501) is None
    assert db.read("GET", "px", now=T0 + 1500) == b"v"  # Redis: expired once now > when
    assert db.read("DBSIZE") == 4
    # The next write carries a later leader clock: expired keys are reclaimed.
    db.t = T0 + 5_000
    db("SET", "other", "x")
    assert db.read("EXISTS", "px", "pxat", "exat", "ex") == 2  # exat: now == when, alive
    assert db.read("DBSIZE") == 3
    # The applier's clock never runs backwards, whatever the next leader's clock says.
    db.t = T0
    db("SET", "later", "x")
    assert db.sm.clock_ms == T0 + 5_000
    assert db.read("EXISTS", "px") == 0


def test_set_keepttl_and_overwrite_clears_ttl(db):
    db("SET", "k", "v", "EX", "100")
    db("SET", "k", "w", "KEEPTTL")
    assert db.read("TTL", "k") == 100
    db("SET", "k", "x")
    assert db.read("TTL", "k") == -1
    db("SET", "k", "v", "EXAT", "1")  # in the past: set and immediately gone
    assert db.read("EXISTS", "k") == 0


def test_expire_ttl_persist(db):
    assert db.read("TTL", "nokey") == -2 and db.read("PTTL", "nokey") == -2
    db("SET", "k", "v")
    assert db.read("TTL", "k") == -1
    assert db("EXPIRE", "nokey", "10") == 0
    assert db("EXPIRE", "k", "10", "XX") == 0
    assert db("EXPIRE", "k", "10", "GT") == 0  # no TTL counts as infinite
    assert db("EXPIRE", "k", "10", "LT") == 1
    assert db("EXPIRE", "k", "20", "NX") == 0
    assert db("EXPIRE", "k", "5", "GT") == 0
    assert db("EXPIRE", "k", "15", "GT") == 1
    assert db.read("TTL", "k") == 15
    assert db("PEXPIRE", "k", "2500") == 1
    assert db.read("PTTL", "k") == 2500
    assert db("PERSIST", "k") == 1 and db("PERSIST", "k") == 0
    assert db.read("TTL", "k") == -1
    assert db("EXPIRE", "k", "10", "NX", "XX") == (
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert db("EXPIRE", "k", "10", "GT", "LT") == (
        "ERR GT and LT options at the same time are not compatible")
    assert db("EXPIRE", "k", "10", "foo") == "ERR Unsupported option foo"
    assert db("EXPIRE", "k", "x") == E_NOT_INT
    assert db("EXPIRE", "k", "9223372036854775807") == (
        "ERR invalid expire time in 'expire' command")
    assert db("PEXPIRE", "k", "9223372036854775807") == (
        "ERR invalid expire time in 'pexpire' command")
    assert db("EXPIRE", "k", "-1") == 1  # in the past: deleted
    assert db.read("EXISTS", "k") == 0


def test_incr_family(db):
    assert db("INCR", "n") == 1
    assert db("INCRBY", "n", "10") == 11
    assert db("DECR", "n") == 10
    assert db("DECRBY", "n", "-5") == 15
    assert db.read("GET", "n") == b"15"
    db("SET", "t", "5", "EX", "100")
    db("INCR", "t")
    assert db.read("TTL", "t") == 100  # INCR keeps the TTL


@pytest.mark.parametrize("value", ["01", " 1", "-0", "1.5", "+1", "abc", "", "1 ",
                                   "9223372036854775808", "99999999999999999999"])
def test_incr_rejects_non_canonical_integers(db, value):
    db("SET", "n", value)
    assert db("INCR", "n") == E_NOT_INT
    assert db.read("GET", "n") == value.encode()


def test_incr_errors_and_overflow(db):
    assert db("INCRBY", "n", "1.5") == E_NOT_INT
    assert db("DECRBY", "n", "x") == E_NOT_INT
    db("SET", "n", "9223372036854775806")
    assert db("INCR", "n") == 9223372036854775807
    assert db("INCR", "n") == "ERR increment or decrement would overflow"
    db("SET", "n", "-9223372036854775807")
    assert db("DECR", "n") == -9223372036854775808
    assert db("DECR", "n") == "ERR increment or decrement would overflow"
    assert db("DECRBY", "n", "-9223372036854775808") == "ERR decrement would overflow"
    assert db("INCRBY", "n", "-9223372036854775808") == (
        "ERR increment or decrement would overflow")
    db("XADD", "s", "1", "f", "v")
    assert db("INCR", "s") == E_WRONGTYPE


def test_mset_mget(db):
    assert db("MSET", "a", "1", "b", "2") == OK
    assert db("MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    db("XADD", "s", "1", "f", "v")
    assert db.read("MGET", "a", "s", "nokey", "b") == [b"1", None, None, b"2"]
    db("SET", "e", "v", "EX", "10")
    db("MSET", "e", "w")
    assert db.read("TTL", "e") == -1


def test_type_dbsize_flushdb(db):
    db("SET", "a", "1")
    db("XADD", "s", "*", "f", "v")
    assert db.read("TYPE", "a") == Status("string")
    assert db.read("TYPE", "s") == "stream"
    assert db.read("TYPE", "nokey") == "none"
    assert db.read("DBSIZE") == 2
    assert db("FLUSHDB", "xx") == E_SYNTAX
    assert db("FLUSHDB", "a", "b") == E_SYNTAX
    assert db("FLUSHDB", "ASYNC") == OK
    assert db.read("DBSIZE") == 0
    db("SET", "a", "1")
    assert db("FLUSHALL") == OK and db.read("DBSIZE") == 0


def test_wrongtype(db):
    db("XADD", "s", "1", "f", "v")
    db("SET", "k", "v")
    assert db.read("GET", "s") == E_WRONGTYPE
    assert db("SET", "s", "v", "GET") == E_WRONGTYPE
    assert db("XADD", "k", "*", "f", "v") == E_WRONGTYPE
    assert db.read("XLEN", "k") == E_WRONGTYPE
    assert db.read("XRANGE", "k", "-", "+") == E_WRONGTYPE
    assert db.read("XREAD", "STREAMS", "k", "0") == E_WRONGTYPE
    assert db("SET", "s", "v") == OK  # plain SET replaces any type, like Redis


def test_read_refuses_writes_and_does_not_mutate(db):
    db("SET", "k", "v", "PX", "10")
    before = db.sm.snapshot()
    assert db.read("SET", "k", "w").startswith("ERR set is a write")
    assert db.read("GET", "k", now=T0 + 100) is None
    assert db.sm.snapshot() == before


def test_unknown_and_arity_in_apply(db):
    assert db("FOO", "bar") == "ERR unknown command 'FOO', with args beginning with: 'bar' "
    assert db("GET") == "ERR wrong number of arguments for 'get' command"
    assert db("XADD", "s", "*") == "ERR wrong number of arguments for 'xadd' command"


# --------------------------------------------------------------------------- streams


def test_xadd_auto_ids_come_from_the_log_clock(db):
    assert db("XADD", "s", "*", "f", "v") == b"%d-0" % T0
    assert db("XADD", "s", "*", "f", "v") == b"%d-1" % T0
    db.t = T0 + 5
    assert db("XADD", "s", "*", "f", "v") == b"%d-0" % (T0 + 5)
    db.t = T0 - 1000  # a new leader with a slow clock: ids stay monotonic
    assert db("XADD", "s", "*", "f", "v") == b"%d-1" % (T0 + 5)
    assert db.read("XLEN", "s") == 4


def test_xadd_explicit_ids(db):
    assert db("XADD", "s", "5", "a", "1") == b"5-0"
    assert db("XADD", "s", "5", "a", "1") == (
        "ERR The ID specified in XADD is equal or smaller than the target stream top item")
    assert db("XADD", "s", "5-*", "a", "1") == b"5-1"
    assert db("XADD", "s", "4-*", "a", "1").startswith("ERR The ID specified in XADD is equal")
    assert db("XADD", "s", "7-*", "a", "1") == b"7-0"
    assert db("XADD", "s", "+8", "a", "1") == b"8-0"  # strtoull accepts it, as in Redis
    assert db("XADD", "s2", "0-0", "a", "1") == "ERR The ID specified in XADD must be greater than 0-0"
    assert db("XADD", "s2", "0", "a", "1") == "ERR The ID specified in XADD must be greater than 0-0"
    assert db("XADD", "s2", "0-*", "a", "1") == b"0-1"
    for bad in ("-1", "5-", "5-1-1", "x", "-", "+", "1-x"):
        assert db("XADD", "s3", bad, "a", "1") == E_BAD_ID, bad
    assert db.read("EXISTS", "s3") == 0  # a failed XADD creates nothing
    m = "18446744073709551615"
    assert db("XADD", "big", f"{m}-{m}", "a", "1") == f"{m}-{m}".encode()
    assert db("XADD", "big", "*", "a", "1") == (
        "ERR The stream has exhausted the last possible ID, unable to add more items")


def test_xadd_options(db):
    assert db("XADD", "s", "NOMKSTREAM", "*", "a", "1") is None
    assert db.read("EXISTS", "s") == 0
    for i in range(1, 6):
        db("XADD", "s", str(i), "n", str(i))
    assert db("XADD", "s", "MAXLEN", "3", "6", "n", "6") == b"6-0"
    assert [e[0] for e in db.read("XRANGE", "s", "-", "+")] == [b"4-0", b"5-0", b"6-0"]
    db("XADD", "s", "MINID", "=", "5-1", "7", "n", "7")
    assert [e[0] for e in db.read("XRANGE", "s", "-", "+")] == [b"6-0", b"7-0"]
    db("XADD", "s", "MAXLEN", "~", "1", "LIMIT", "10", "8", "n", "8")
    assert db.read("XLEN", "s") == 1
    db("XADD", "s", "MAXLEN", "0", "9", "n", "9")
    assert db.read("XLEN", "s") == 0 and db.read("EXISTS", "s") == 1
    assert db("XADD", "s", "9", "n", "9").startswith("ERR The ID specified in XADD is equal")
    assert db("XADD", "s", "MAXLEN", "1", "LIMIT", "10", "*", "a", "1") == (
        "ERR syntax error, LIMIT cannot be used without the special ~ option")
    assert db("XADD", "s", "MAXLEN", "x", "*", "a", "1") == E_NOT_INT
    assert db("XADD", "s", "MAXLEN", "-1", "*", "a", "1") == "ERR The MAXLEN argument must be >= 0."
    assert db("XADD", "s", "MAXLEN", "1", "MINID", "1", "*", "a", "1") == (
        "ERR syntax error, MAXLEN and MINID options at the same time are not compatible")
    assert db("XADD", "s", "10", "a", "1", "b") == "ERR wrong number of arguments for 'xadd' command"


def test_xrange_xrevrange(db):
    for i in ("1-0", "1-1", "2-0", "3-5"):
        db("XADD", "s", i, "f", i)
    ids = lambda r: [e[0].decode() for e in r]  # noqa: E731
    entry = db.read("XRANGE", "s", "1-1", "1-1")
    assert entry == [[b"1-1", [b"f", b"1-1"]]]
    assert ids(db.read("XRANGE", "s", "-", "+")) == ["1-0", "1-1", "2-0", "3-5"]
    assert ids(db.read("XRANGE", "s", "1", "1")) == ["1-0", "1-1"]  # ms alone: whole ms
    assert ids(db.read("XRANGE", "s", "(1-0", "(3-5")) == ["1-1", "2-0"]
    assert ids(db.read("XRANGE", "s", "-", "+", "COUNT", "2")) == ["1-0", "1-1"]
    assert ids(db.read("XREVRANGE", "s", "+", "-", "COUNT", "3")) == ["3-5", "2-0", "1-1"]
    assert ids(db.read("XREVRANGE", "s", "(3-5", "-")) == ["2-0", "1-1", "1-0"]
    assert db.read("XRANGE", "s", "3", "1") == []
    assert db.read("XRANGE", "nokey", "-", "+") == []
    assert db.read("XRANGE", "s", "-", "+", "COUNT", "0") is NULL_ARRAY
    assert db.read("XRANGE", "s", "-", "+", "COUNT", "-1") is NULL_ARRAY
    assert db.read("XRANGE", "nokey", "-", "+", "COUNT", "0") == []
    assert db.read("XRANGE", "s", "-", "+", "FOO") == E_SYNTAX
    assert db.read("XRANGE", "s", "-", "+", "COUNT") == E_SYNTAX
    assert db.read("XRANGE", "s", "-", "+", "COUNT", "x") == E_NOT_INT
    assert db.read("XRANGE", "s", "x", "+") == E_BAD_ID
    assert db.read("XRANGE", "s", "(-", "+") == E_BAD_ID
    m = "18446744073709551615"
    assert db.read("XRANGE", "s", f"({m}-{m}", "+") == "ERR invalid start ID for the interval"
    assert db.read("XRANGE", "s", "-", "(0-0") == "ERR invalid end ID for the interval"
    assert db.read("XRANGE", "s") == "ERR wrong number of arguments for 'xrange' command"


def test_xread(db):
    db("XADD", "a", "1-0", "f", "1")
    db("XADD", "a", "2-0", "f", "2")
    db("XADD", "b", "5-0", "g", "5")
    assert db.read("XREAD", "STREAMS", "a", "b", "0", "0") == [
        [b"a", [[b"1-0", [b"f", b"1"]], [b"2-0", [b"f", b"2"]]]],
        [b"b", [[b"5-0", [b"g", b"5"]]]],
    ]
    assert db.read("XREAD", "COUNT", "1", "STREAMS", "a", "b", "1", "5") == [
        [b"a", [[b"2-0", [b"f", b"2"]]]]]
    assert db.read("XREAD", "STREAMS", "a", "$") is NULL_ARRAY
    assert db.read("XREAD", "STREAMS", "nokey", "0") is NULL_ARRAY
    assert db.read("XREAD", "BLOCK", "10", "STREAMS", "a", "2") is NULL_ARRAY
    assert db.read("XREAD", "COUNT", "0", "STREAMS", "a", "1")[0][1][0][0] == b"2-0"


@pytest.mark.parametrize("args, error", [
    (["STREAMS", "a", "b", "0"],
     "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."),
    (["FOO", "STREAMS", "a", "0"], E_SYNTAX),
    (["COUNT", "1", "BLOCK", "0"], E_SYNTAX),
    (["BLOCK", "x", "STREAMS", "a", "0"], "ERR timeout is not an integer or out of range"),
    (["BLOCK", "-1", "STREAMS", "a", "0"], "ERR timeout is negative"),
    (["COUNT", "x", "STREAMS", "a", "0"], E_NOT_INT),
    (["STREAMS", "a", "x"], E_BAD_ID),
    (["STREAMS", "a", "-"], E_BAD_ID),
    (["GROUP", "g", "c", "STREAMS", "a", "0"],
     "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."),
])
def test_xread_errors(db, args, error):
    db("XADD", "a", "1", "f", "v")
    assert db.read("XREAD", *args) == error


def test_xread_resolves_dollar_for_blocking(db):
    from raft.kv import parse_xread

    db("XADD", "a", "1", "f", "v")
    argv = [b"XREAD", b"BLOCK", b"0", b"STREAMS", b"a", b"nokey", b"$", b"$"]
    args = parse_xread(argv)
    assert args.block_ms == 0
    assert db.sm.xread(args, argv[-2:]) is NULL_ARRAY
    assert args.ids == [(1, 0), (0, 0)]  # '$' fixed at the time of the call
    db("XADD", "nokey", "3", "f", "v")
    assert db.sm.xread(args, None) == [[b"nokey", [[b"3-0", [b"f", b"v"]]]]]


def test_raft_exec_transaction(db):
    from raft.kv import encode_argv

    def exec_(*cmds: list[str]):
        return db("RAFT.EXEC", *[encode_argv([a.encode() for a in c]) for c in cmds])

    assert exec_(["SET", "a", "1"], ["INCR", "a"], ["GET", "a"], ["INCR", "nokey", "x"],
                 ["XADD", "a", "*", "f", "v"]) == [
        OK, 2, b"2", "ERR wrong number of arguments for 'incr' command", E_WRONGTYPE]
    assert exec_(["RAFT.SESSION"], ["RAFT.EXEC"]) == [
        "ERR Command not allowed inside a transaction"] * 2
    assert db("RAFT.EXEC", encode_argv([b"SET", b"b", b"1"]), b"\xff").startswith(
        "ERR malformed RAFT.EXEC")
    assert db.read("EXISTS", "b") == 0  # all or nothing
    assert db("RAFT.EXEC") == []


# --------------------------------------------------------------------------- sessions


def test_session_dedupes_retries(db):
    sid = db("RAFT.SESSION")
    assert sid == db.index  # the registration's log index
    assert db("INCR", "n", cid=sid, seq=1) == 1
    assert db("INCR", "n", cid=sid, seq=1) == 1  # a retry: saved reply, not re-applied
    assert db("INCR", "n", cid=sid, seq=2) == 2
    assert db("INCR", "n", cid=sid, seq=1) == 1
    assert db.read("GET", "n") == b"2"
    # Errors are outcomes too: replayed, not re-executed.
    assert db("XADD", "n", "*", "f", "v", cid=sid, seq=3) == E_WRONGTYPE
    db("DEL", "n")
    assert db("XADD", "n", "*", "f", "v", cid=sid, seq=3) == E_WRONGTYPE
    assert db.read("EXISTS", "n") == 0


def test_session_unknown_and_window():
    db = Log(KVStateMachine(session_window=4))
    assert db("INCR", "n", cid=999, seq=1).startswith("SESSIONEXPIRED unknown or expired session 999")
    sid = db("RAFT.SESSION")
    # Out-of-order seqs within the window are fine (pipelined writes, retried).
    assert db("INCR", "n", cid=sid, seq=3) == 1
    assert db("INCR", "n", cid=sid, seq=1) == 2
    assert db("INCR", "n", cid=sid, seq=2) == 3
    for seq in range(4, 10):
        db("INCR", "n", cid=sid, seq=seq)
    assert db.read("GET", "n") == b"9"
    assert db("INCR", "n", cid=sid, seq=9) == 9  # still remembered
    assert db("INCR", "n", cid=sid, seq=2).startswith(
        f"SESSIONEXPIRED the reply to seq 2 of session {sid} was discarded")
    assert db.read("GET", "n") == b"9"


def test_sessions_evicted_lru_by_count():
    db = Log(KVStateMachine(max_sessions=3))
    s1, s2, s3 = db("RAFT.SESSION"), db("RAFT.SESSION"), db("RAFT.SESSION")
    db("SET", "k", "v", cid=s1, seq=1)  # s1 is now the most recently used
    s4 = db("RAFT.SESSION")  # evicts s2, the least recently used
    assert db.sm.session_count() == 3
    assert db("SET", "k", "v", cid=s2, seq=1).startswith("SESSIONEXPIRED")
    for sid in (s1, s3, s4):
        assert db("SET", "k", "v", cid=sid, seq=5) == OK


# --------------------------------------------------------------------------- snapshots & determinism


def _populate(db: Log) -> int:
    sid = db("RAFT.SESSION")
    db("SET", "s", "v")
    db("SET", "ttl", "v", "EX", "100")
    db("INCRBY", "n", "-12345678901", cid=sid, seq=1)
    db("XADD", "st", "*", "f", "v", "g", "\x00\xff")
    db("XADD", "st", "MAXLEN", "1", "*", "f", "w")
    db("GET", "s", cid=sid, seq=2)  # a read through the log, with a session
    db("XADD", "s", "*", "f", "v", cid=sid, seq=3)  # an error reply, saved
    return sid


def test_snapshot_restore_round_trip():
    a = Log()
    sid = _populate(a)
    snap = a.sm.snapshot()
    b = KVStateMachine()
    b.restore(snap)
    assert b.snapshot() == snap
    assert b.last_applied == a.sm.last_applied and b.clock_ms == a.sm.clock_ms
    rb = Log(b, t=a.t)
    assert rb.read("TTL", "ttl") == 100
    assert rb.read("XRANGE", "st", "-", "+") == a.read("XRANGE", "st", "-", "+")
    assert rb.read("XLEN", "st") == 1
    # Sessions travel in the snapshot: a retry after restore is still deduplicated.
    assert rb("INCRBY", "n", "-12345678901", cid=sid, seq=1) == -12345678901
    assert rb("XADD", "s", "*", "f", "v", cid=sid, seq=3) == E_WRONGTYPE
    assert rb.read("GET", "n") == b"-12345678901"
    # ... and the stream's last id: a trimmed stream still refuses old ids.
    assert rb("XADD", "st", "1", "f", "v").startswith("ERR The ID specified in XADD is equal")


def test_restore_rejects_garbage_and_keeps_state():
    db = Log()
    db("SET", "k", "v")
    before = db.sm.snapshot()
    for bad in (b"", b"nope", before[:-1], before + b"x", before[:12]):
        with pytest.raises(SnapshotError):
            db.sm.restore(bad)
    assert db.sm.snapshot() == before


def test_restore_adopts_session_config():
    a = KVStateMachine(max_sessions=7, session_window=3)
    b = KVStateMachine()
    b.restore(a.snapshot())
    assert (b.max_sessions, b.session_window) == (7, 3)


_KEYS = ["a", "b", "c", "s1", "s2"]


def _random_command(rng: random.Random) -> list[str]:
    k = rng.choice(_KEYS)
    return rng.choice([
        lambda: ["SET", k, str(rng.randint(-5, 5))],
        lambda: ["SET", k, "v", rng.choice(["EX", "PX"]), str(rng.randint(1, 3000)),
                 *rng.choice([[], ["NX"], ["XX"], ["GET"]])],
        lambda: ["INCR", k],
        lambda: ["DECRBY", k, str(rng.randint(-10, 10))],
        lambda: ["DEL", k, rng.choice(_KEYS)],
        lambda: ["MSET", k, "1", rng.choice(_KEYS), "2"],
        lambda: ["EXPIRE", k, str(rng.randint(-1, 3))],
        lambda: ["PERSIST", k],
        lambda: ["XADD", k, *rng.choice([[], ["MAXLEN", "3"]]), "*", "f", str(rng.random())],
        lambda: ["XADD", k, f"{rng.randint(0, 5)}-*", "f", "v"],
        lambda: ["GET", k],
        lambda: ["RAFT.SESSION"],
        lambda: ["FLUSHDB"] if rng.random() < 0.05 else ["DBSIZE"],
    ])()


def _random_log(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    t, out, sessions = T0, [], [10**6]  # one session id that never exists
    for index in range(1, n + 1):
        t += rng.randint(-200, 600)  # leaders' clocks disagree; the applier's never regresses
        argv = _random_command(rng)
        cid, seq = 0, 0
        if argv == ["RAFT.SESSION"]:
            sessions.append(index)  # a session's id is its registration's index
        elif rng.random() < 0.5:
            cid, seq = rng.choice(sessions[-12:]), rng.randint(1, 300)  # retries, evictions
        out.append(encode_command(cid, seq, [a.encode() for a in argv], time_ms=max(t, 0)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_determinism_and_snapshot_mid_log(seed):
    entries = _random_log(seed, 600)
    a, b = KVStateMachine(max_sessions=8), KVStateMachine(max_sessions=8)
    replies_a = [a.apply(i, e) for i, e in enumerate(entries, 1)]
    replies_b = [b.apply(i, e) for i, e in enumerate(entries, 1)]
    assert replies_a == replies_b
    assert a.snapshot() == b.snapshot()
    # A replica that restored a snapshot half-way, then applied the rest, ends equal too.
    c, half = KVStateMachine(max_sessions=8), len(entries) // 2
    mid = KVStateMachine(max_sessions=8)
    for i, e in enumerate(entries[:half], 1):
        mid.apply(i, e)
    c.restore(mid.snapshot())
    replies_c = [c.apply(i, e) for i, e in enumerate(entries[half:], half + 1)]
    assert replies_c == replies_a[half:]
    assert c.snapshot() == a.snapshot()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "setex", "xadd", "del", "get", "expire"]),
                          st.integers(0, 3), st.integers(1, 50)), max_size=60))
def test_plain_set_fast_path_behaves_as_the_general_set(ops):
    """KVStateMachine.apply takes `SET key value` (spelled SET or set) on a short path,
    and read() `GET key`; spelled any other way they take the general path. Both logs must leave the same state
    (snapshot bytes) and give the same replies, whatever came before on the key: a TTL,
    a stream, an expired value."""
    fast, general = Log(), Log()
    for op, k, dt in ops:
        key = f"k{k}"
        for log, set_name in ((fast, "SET"), (general, "SeT")):
            log.t += dt
            if op == "set":
                got = log(set_name, key, f"v{dt}")
            elif op == "setex":
                got = log("SET", key, "w", "PX", dt)
            elif op == "xadd":
                got = log("XADD", key, "*", "f", "v")
            elif op == "del":
                got = log("DEL", key)
            elif op == "expire":
                got = log("PEXPIRE", key, dt)
            else:
                got = log.read("GET" if log is fast else "gEt", key)
            if log is fast:
                want = got
        assert got == want, (op, key)
    assert fast.sm.snapshot() == general.sm.snapshot()
    assert fast.sm.expires_count() == general.sm.expires_count()


def test_plain_set_drops_the_ttl_and_replaces_a_stream(db):
    db("SET", "k", "v", "PX", 1000)
    db("XADD", "s", "*", "f", "v")
    assert db("SET", "k", "w") == OK and db("SET", "s", "x") == OK
    db.t += 5000
    assert db.read("GET", "k") == b"w" and db.read("GET", "s") == b"x"
    assert db.sm.expires_count() == 0


def _random_entries(rng: random.Random, n: int, t0: int) -> list[Entry]:
    """Committed entries as a node applies them: mostly plain SETs (the compiled run),
    mixed with everything that must stop the run -- other commands, other spellings,
    options and TTLs, session commands, time going backwards, no-ops, empty entries,
    malformed data."""
    out, t = [], t0
    for index in range(1, n + 1):
        t += rng.randint(-3, 20)          # leaders' clocks differ: not monotonic
        key = f"k{rng.randrange(6)}".encode()
        r = rng.random()
        if r < 0.55:
            argv = [rng.choice([b"SET", b"set"]), key, b"v%d" % index]
        elif r < 0.60:
            argv = [b"SeT", key, b"w"]
        elif r < 0.66:
            argv = [b"SET", key, b"x", b"PX", str(rng.randint(1, 40)).encode()]
        elif r < 0.70:
            argv = [b"PEXPIRE", key, str(rng.randint(1, 40)).encode()]
        elif r < 0.75:
            argv = [b"XADD", key, b"*", b"f", b"v"]
        elif r < 0.80:
            argv = [b"DEL", key]
        elif r < 0.84:
            argv = [b"INCR", key]
        elif r < 0.87:
            argv = [b"SET", key]                    # wrong arity
        elif r < 0.90:
            out.append(Entry(index, 1, ENTRY_NOOP))
            continue
        elif r < 0.92:
            out.append(Entry(index, 1, ENTRY_NORMAL, b""))
            continue
        elif r < 0.94:
            out.append(Entry(index, 1, ENTRY_NORMAL, b"\x01\xff\xff"))   # malformed
            continue
        else:
            cid = rng.randint(1, 3)
            out.append(Entry(index, 1, ENTRY_NORMAL, encode_command(
                cid, rng.randint(1, 5), [b"SET", key, b"s"], time_ms=t)))
            continue
        out.append(Entry(index, 1, ENTRY_NORMAL, encode_command(0, 0, argv, time_ms=t)))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_apply_entries_is_apply_one_by_one(seed):
    """KVStateMachine.apply_entries (runs of plain SETs applied in C) against apply()
    of each entry: the same replies (None for an entry without a command), the same
    state (snapshot bytes, expiries), whatever the batches' boundaries."""
    rng = random.Random(seed)
    entries = _random_entries(rng, 400, T0)
    one, batched = KVStateMachine(), KVStateMachine()
    want = [one.apply(e.index, e.data) if e.type == ENTRY_NORMAL and e.data else None
            for e in entries]
    got: list = []
    commands, pos = 0, 0
    while pos < len(entries):
        size = rng.choice([1, 2, 7, 50, 400])
        commands += batched.apply_entries(entries[pos:pos + size], got)
        pos += size
    assert got == want, f"seed {seed}"
    assert commands == sum(1 for e in entries if e.type == ENTRY_NORMAL and e.data)
    assert batched.snapshot() == one.snapshot(), f"seed {seed}"
    assert (batched.last_applied, batched.clock_ms, batched.expires_count()) == \
        (one.last_applied, one.clock_ms, one.expires_count()), f"seed {seed}"


def test_apply_entries_refuses_an_index_already_applied():
    sm = KVStateMachine()
    e = Entry(1, 1, ENTRY_NORMAL, encode_command(0, 0, [b"SET", b"k", b"v"], time_ms=T0))
    assert sm.apply_entries([e], []) == 1
    with pytest.raises(ValueError, match="last applied"):
        sm.apply_entries([e], [])


def test_apply_entries_after_a_clock_beyond_64_bits():
    """The Python decoder takes a 10-byte varint time; the C run's clock is 64 bits:
    after such an entry, apply_entries goes on through apply() (a review found it
    raised OverflowError on every later batch instead)."""
    def uvarint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    def raw(time_ms: int, argv: list[bytes]) -> bytes:
        body = bytes([1]) + uvarint(0) + uvarint(0) + uvarint(time_ms) + uvarint(len(argv))
        return body + b"".join(uvarint(len(a)) + a for a in argv)

    entries = [Entry(1, 1, ENTRY_NORMAL, raw(2 ** 64 + 5, [b"SET", b"a", b"1"]))] + [
        Entry(i, 1, ENTRY_NORMAL, raw(1000 + i, [b"SET", b"k%d" % i, b"v"])) for i in range(2, 6)]
    one, batched = KVStateMachine(), KVStateMachine()
    want = [one.apply(e.index, e.data) for e in entries]
    got: list = []
    batched.apply_entries(entries[:1], got)
    batched.apply_entries(entries[1:], got)
    assert got == want
    assert batched.snapshot() == one.snapshot() and batched.clock_ms == 2 ** 64 + 5


def _state_for_reads(seed: int):
    """A state machine with values, TTLs and streams, for the read_gets tests."""
    from raft.kv.machine import KVStateMachine
    rng = random.Random(seed)
    sm = KVStateMachine()
    index, t0 = 0, 1_000_000
    for i in range(60):
        index += 1
        key = b"k%d" % rng.randrange(30)
        kind = rng.randrange(4)
        if kind == 0:
            argv = [b"SET", key, b"v%d" % i, b"PX", b"%d" % rng.randrange(1, 50)]
        elif kind == 1:
            argv = [b"XADD", b"s%d" % rng.randrange(3), b"*", b"f", b"v"]
        else:
            argv = [b"SET", key, b"v%d" % i]
        sm.apply(index, encode_command(0, 0, argv, time_ms=t0 + i))
    keys = [b"k%d" % n for n in range(30)] + [b"s0", b"s1", b"s2", b"missing"]
    return rng, sm, index, t0, keys


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("seed", range(10))
def test_read_gets_is_read_of_each_get(seed, compiled, monkeypatch):
    """read_gets (the front end's run of GETs, compiled) gives what read() gives for
    each GET at the same instant: values, missing keys, keys past or at their expiry,
    and WRONGTYPE for a stream."""
    import raft.kv.machine as machine
    if not compiled:
        monkeypatch.setattr(machine, "_get_strings", None)
    rng, sm, _, t0, keys = _state_for_reads(seed)
    for now in (t0, t0 + 30, t0 + 60, t0 + 200):
        argvs = [[rng.choice((b"GET", b"get")), k] for k in rng.sample(keys, len(keys))]
        expected = [sm.read(argv, now) for argv in argvs]
        assert sm.read_gets(argvs, now) == expected, f"seed {seed} now {now}"


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_read_gets_of_a_run_is_each_get_read_at_its_place(seed, compiled, monkeypatch):
    """A run of plain GETs and SETs (a pipeline's, RESP front end): read_gets on the
    state before the run gives, for each GET, what read() gives once the SETs before it
    are really applied -- over values, expired keys, streams (SET replaces any type)
    and keys the run sets more than once."""
    import raft.kv.machine as machine
    from raft.kv.machine import KVStateMachine
    if not compiled:
        monkeypatch.setattr(machine, "_get_strings", None)
    rng, sm, index, t0, keys = _state_for_reads(seed)
    for now in (t0 + 30, t0 + 200):
        run = []
        for i in range(rng.randrange(1, 40)):
            key = rng.choice(keys[:8] + keys[30:])    # a few keys: reads after writes
            if rng.random() < 0.5:
                run.append([rng.choice((b"SET", b"set")), key, b"r%d" % i])
            else:
                run.append([rng.choice((b"GET", b"get")), key])
        got = sm.read_gets(run, now)
        applied = KVStateMachine()
        applied.restore(sm.snapshot())
        expected, at = [], index
        for argv in run:
            if len(argv) == 3:
                at += 1
                assert applied.apply(at, encode_command(0, 0, argv, time_ms=now)) == OK
            else:
                expected.append(applied.read(argv, now))
        assert got == expected, f"seed {seed} now {now}"
