"""The compiled command codec (raft/_fastpath.pyx) against its Python reference in
raft/kv/codec.py: the same bytes for every command, the same decoding for every input it
accepts, and a refusal (None: the reference then names the problem) for the rest."""
import random

import pytest
from hypothesis import example, given, settings, strategies as st

from raft import _fastpath as _kvcodec
from raft.kv import KVStateMachine
from raft.kv import codec as kv

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ARGV = st.lists(st.binary(max_size=300), min_size=1, max_size=8)


def _reference_encode(client_id, seq, argv, time_ms):
    saved, kv._kvcodec = kv._kvcodec, None
    try:
        return kv.encode_command(client_id, seq, argv, time_ms=time_ms)
    finally:
        kv._kvcodec = saved


@settings(max_examples=400, deadline=None)
@given(U64, U64, ARGV, U64)
def test_encode_is_byte_identical_to_the_reference(client_id, seq, argv, time_ms):
    fast = _kvcodec.encode(client_id, seq, argv, time_ms)
    assert fast == _reference_encode(client_id, seq, argv, time_ms)
    assert kv.decode_command(fast) == kv.Command(client_id, seq, time_ms, tuple(argv))


def _reference_decode(data):
    try:
        return kv._decode_command_reference(data)
    except kv.CommandDecodeError:
        return None


# Found by tests/fuzz/fuzz_kv.py: client_id as an 11-byte varint, zero-padded (0x80 0x00).
OVERLONG_VARINT = b"\x01\xd7\xee\xff\xd6\xd6\xf8\xfa\xf8\xfa\x80\x001{\x01\x00"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
@example(OVERLONG_VARINT)
def test_decode_agrees_with_the_reference_on_arbitrary_bytes(data):
    fast = _kvcodec.decode(data)
    ref = _reference_decode(data)
    if fast is not None:
        assert ref is not None and kv.Command(*fast) == ref
    elif ref is not None:
        # Refused by the compiled decoder but accepted by the reference: only varints
        # beyond 64 bits or longer than 10 bytes (a non-canonical encoding) may do that
        # (the reference decides them).
        assert max(ref.client_id, ref.seq, ref.time_ms) >= 1 << 64 or \
            any(len(a) >= 1 << 64 for a in ref.argv) or \
            _kvcodec.encode(ref.client_id, ref.seq, list(ref.argv), ref.time_ms) != data


def test_overlong_varint_is_left_to_the_reference():
    """The compiled decoder refuses a varint longer than 10 bytes; decode_command then
    runs the reference, so every replica still gets the same command."""
    assert _kvcodec.decode(OVERLONG_VARINT) is None
    want = kv.Command(8859121175148623703, 49, 123, (b"",))
    assert kv._decode_command_reference(OVERLONG_VARINT) == want
    assert kv.decode_command(OVERLONG_VARINT) == want


@pytest.mark.parametrize("seed", range(5))
def test_decode_of_corrupted_commands_matches_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        argv = [rng.randbytes(rng.randrange(20)) for _ in range(rng.randrange(1, 5))]
        data = bytearray(kv.encode_command(rng.randrange(1 << 40), rng.randrange(1 << 20),
                                           argv, time_ms=rng.randrange(1 << 42)))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        data = bytes(data)
        fast, ref = _kvcodec.decode(data), _reference_decode(data)
        assert (None if fast is None else kv.Command(*fast)) == ref, (seed, data)


def test_malformed_entry_error_names_the_problem():
    reply = KVStateMachine().apply(1, b"\x01\x00\x00\x00\x05")
    assert "malformed log entry at index 1" in str(reply)


# --- RESP request scanning ------------------------------------------------------------

from raft.resp import protocol as resp  # noqa: E402


class _NoFastPath:
    """Stands in for raft._fastpath in resp: the scanner never advances."""

    @staticmethod
    def scan_requests(buf, pos, max_args, max_bulk, out):
        return pos


def _parse_all(chunks, fast: bool, cfg=None):
    """Feed chunks to a RequestParser; the commands and the error it ends with."""
    saved = resp._fastpath
    if not fast:
        resp._fastpath = _NoFastPath
    try:
        p = resp.RequestParser(cfg or resp.ServerConfig())
        out = []
        for c in chunks:
            try:
                out.extend(p.feed(c))
            except resp.ProtocolError as e:
                out.extend(p.pending)
                return out, str(e)
        return out, None
    finally:
        resp._fastpath = saved


def _random_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(1, 30)):
        kind = rng.random()
        argv = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 6))]
        if kind < 0.75:
            parts.append(b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv))
        elif kind < 0.85:
            parts.append(b"PING hello\r\n")                   # inline
        else:
            bad = rng.choice([b"*-5\r\n", b"*0\r\n", b"*1\r\n$01\r\nx\r\n", b"*1\r\n:3\r\n",
                              b"*1\r\n$3\r\nabcd\r\n", b"*x\r\n", b"*2\r\n$1\r\na\r\n$-1\r\n",
                              b"*1\r\n$" + b"9" * 30 + b"\r\n", b"*99999999\r\n"])
            parts.append(bad)
    data = b"".join(parts)
    if rng.random() < 0.2:   # flip a byte
        k = rng.randrange(len(data))
        data = data[:k] + bytes([rng.randrange(256)]) + data[k + 1:]
    return data


@pytest.mark.parametrize("seed", range(8))
def test_scanner_and_python_parser_agree_on_random_streams(seed):
    rng = random.Random(seed)
    cfg = resp.ServerConfig(max_args=64, max_bulk_len=32)
    for _ in range(300):
        data = _random_stream(rng)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 6))))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        assert _parse_all(chunks, True, cfg) == _parse_all(chunks, False, cfg), (seed, data)


def test_scanner_takes_whole_pipelines_and_stops_at_an_incomplete_command():
    out: list = []
    cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    buf = bytearray(cmd * 3 + cmd[:10])
    pos = _kvcodec.scan_requests(buf, 0, 1024, 1 << 20, out)
    assert out == [[b"SET", b"k", b"v"]] * 3 and pos == 3 * len(cmd)
    assert _kvcodec.scan_requests(bytearray(b"PING\r\n"), 0, 1024, 1 << 20, out) == 0


# --- WAL records ---------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_crc32c_matches_the_reference(data, seed):
    from raft._fastpath import crc32c as compiled
    from raft.storage.segment import crc32c as reference
    assert compiled(data, seed) == reference(data, seed)
    assert compiled(data) == reference(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                          st.integers(0, 0xFFFF), st.binary(max_size=200)), max_size=20))
def test_wal_entry_records_are_the_bytes_of_the_python_reference(rows):
    from raft import Entry
    from raft.storage.segment import BatchBuilder
    entries = [Entry(index, term, etype, data) for index, term, etype, data in rows]
    fast, ref = BatchBuilder(), BatchBuilder()
    fast.truncate(7)   # records already in the buffer: offsets continue after them
    ref.truncate(7)
    fast.entries(entries)
    ref._entries_reference(entries)
    assert bytes(fast.finish()) == bytes(ref.finish())
    assert (fast.entry_offsets, fast.entry_ends, fast.n_records) == \
        (ref.entry_offsets, ref.entry_ends, ref.n_records)


def test_wal_entry_records_refuse_an_entry_type_beyond_16_bits_before_writing():
    from raft import Entry
    from raft._fastpath import wal_entry_records
    buf, offs, ends = bytearray(b"head"), [], []
    with pytest.raises(ValueError, match="beyond 16 bits"):
        wal_entry_records(buf, [Entry(1, 1, 0, b"ok"), Entry(2, 1, 70000, b"x")],
                          offs, ends, 1, 0)
    assert buf == b"head" and offs == [] and ends == []


# --- take_plain_run: the front end's run of SETs and GETs ----------------------------

def _reference_take(queue, max_count, time_ms, max_entry_bytes, with_gets):
    """What take_plain_run must do, in Python: the plain SETs (and, ``with_gets``,
    GETs) at the head of the queue (the spellings the C apply and read paths take
    too), each SET bounded as the general path bounds a write
    (raft.limits.command_size_bound)."""
    from raft.limits import command_size_bound
    datas, run = [], []
    while queue and len(run) < max_count:
        argv = queue[0]
        if not (type(argv) is list and all(type(a) is bytes for a in argv)):
            break
        if len(argv) == 3 and argv[0] in (b"SET", b"set") \
                and command_size_bound(argv) <= max_entry_bytes:
            datas.append(_reference_encode(0, 0, argv, time_ms))
        elif not (with_gets and len(argv) == 2 and argv[0] in (b"GET", b"get")):
            break
        run.append(argv)
        queue.popleft()
    return datas, run


def _random_command(rng):
    kind = rng.randrange(10)
    value = rng.randbytes(rng.choice((0, 1, 20, 100, 400)))
    if kind < 4:
        return [rng.choice((b"SET", b"set")), b"k%d" % rng.randrange(10, 100), value]
    if kind < 6:
        return [rng.choice((b"GET", b"get")), b"k%d" % rng.randrange(10, 100)]
    return rng.choice((
        [b"Set", b"k", value],                      # another spelling: the general path
        [b"SET", b"k", value, b"EX", b"10"],        # options: the general path
        [b"SET", b"k"],                             # wrong arity
        [b"SETX", b"k", b"v"], [b"INCR", b"n"], [b"MGET", b"k"],
        [b"Get", b"k"], [b"GET", b"k", b"x"], [b"GET"],
        (b"SET", b"k", b"v"), (b"GET", b"k"),       # not a list
        [b"SET", "k", b"v"], [b"GET", "k"],         # not bytes
        object(),                                   # a queued close (_Fatal)
    ))


@pytest.mark.parametrize("seed", range(30))
def test_take_plain_run_is_the_reference(seed):
    """Byte for byte the entries encode_command makes for the run's SETs, and the
    run's commands as they were, taken from the head of the queue only, stopping at
    the first command the general path must answer (a GET too, without with_gets),
    at max_count, and at a SET whose entry could exceed max_entry_bytes; the rest of
    the queue is left as it was."""
    import collections
    rng = random.Random(seed)
    try:
        for _ in range(50):
            commands = [_random_command(rng) for _ in range(rng.randrange(0, 20))]
            max_count = rng.randrange(0, 25)
            # At a SET's exact bound, one below, or far above.
            bound = 81 + 3 + 3 + rng.choice((0, 1, 20, 100, 400))
            max_entry_bytes = rng.choice((bound, bound - 1, 1 << 20))
            time_ms = rng.choice((0, 1, 1_700_000_000_000, (1 << 64) - 1))
            with_gets = rng.random() < 0.7
            fast_q, ref_q = collections.deque(commands), collections.deque(commands)
            fast = _kvcodec.take_plain_run(fast_q, max_count, time_ms, max_entry_bytes,
                                           with_gets)
            assert fast == _reference_take(ref_q, max_count, time_ms, max_entry_bytes,
                                           with_gets)
            assert all(a is b for a, b in zip(fast[1], commands))   # the argvs themselves
            assert list(fast_q) == list(ref_q)
    except AssertionError:
        print(f"seed {seed}")
        raise


@pytest.mark.parametrize("seed", range(8))
def test_apply_plain_sets_takes_exactly_the_plain_sets_decode_accepts(seed):
    """The in-place reader of apply_plain_sets (_plain_set_fields) against the rule
    it replaced: an entry is applied in C iff the codec decodes it, its client is 0
    and its argv is [SET|set, key, value]; then with the decoded key, value and time.
    Entries truncated, bit-flipped, extended, or with an oversized length varint."""
    from raft._core import Entry
    from raft.kv import OK
    rng = random.Random(seed)
    for _ in range(2500):
        argv = [rng.choice([b"SET", b"set", b"Set", b"GET", b"SETX"]),
                rng.randbytes(rng.randrange(0, 5)), rng.randbytes(rng.choice([0, 1, 3, 130, 2000]))]
        if rng.random() < 0.1:
            argv.append(b"x")
        data = bytearray(_kvcodec.encode(rng.choice([0, 0, 0, 1, 1 << 63]), rng.randrange(3),
                                         argv, rng.choice([0, 5, (1 << 64) - 1, 1 << 40])))
        m = rng.random()
        if m < 0.3:
            data = data[:rng.randrange(len(data) + 1)]
        elif m < 0.5:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif m < 0.6:
            data += rng.randbytes(rng.randrange(1, 3))
        elif m < 0.7:
            p = rng.randrange(1, len(data))
            data[p:p] = b"\xff" * rng.randrange(1, 12)
        if not data:
            continue
        data = bytes(data)
        fields = _kvcodec.decode(data)
        plain = fields is not None and fields[0] == 0 and len(fields[3]) == 3 \
            and fields[3][0] in (b"SET", b"set")
        store, replies = {}, []
        pos, applied, clock = _kvcodec.apply_plain_sets([Entry(1, 1, 0, data)], 0, store, {},
                                                        0, 3, OK, replies)
        assert (pos == 1) == plain, f"seed {seed}: {data!r}"
        if plain:
            assert store == {fields[3][1]: fields[3][2]} and replies == [OK], f"seed {seed}"
            assert (applied, clock) == (1, max(3, fields[2])), f"seed {seed}"


# --- encode_replies / encode_run_replies: a run's replies --------------------------------

def _random_reply(rng):
    from raft.kv import NULL_ARRAY, OK, ErrorReply, Status
    return rng.choice((
        lambda: rng.randbytes(rng.choice((0, 1, 9, 10, 99, 100, 1000, 70_000))),
        lambda: None, lambda: OK, lambda: Status("OK"), lambda: Status("QUEUED"),
        lambda: ErrorReply("WRONGTYPE Operation against a key holding the wrong kind of value"),
        lambda: rng.randrange(-5, 10 ** 12), lambda: NULL_ARRAY, lambda: [b"a", None, 3],
    ))()


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_encode_replies_is_encode_reply_of_each(seed, proto):
    """Byte for byte what raft.resp.protocol.encode_reply writes, value after value:
    bulk strings of every length class, nils (per protocol), +OK, and the fallback's
    text for everything else, appended after what the buffer held."""
    from raft.kv import OK
    from raft.resp.protocol import encode_reply
    rng = random.Random(seed)
    values = [_random_reply(rng) for _ in range(rng.randrange(0, 60))]
    want = bytearray(b"head")
    for v in values:
        encode_reply(v, want, proto)
    got = bytearray(b"head")
    _kvcodec.encode_replies(values, got, proto, OK, encode_reply)
    assert got == want, f"seed {seed}"


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_encode_run_replies_interleaves_ok_and_the_gets_values(seed, proto):
    from raft.kv import OK
    from raft.resp.protocol import encode_reply
    rng = random.Random(seed)
    run, values, want = [], [], bytearray()
    for _ in range(rng.randrange(0, 40)):
        if rng.random() < 0.5:
            run.append([b"SET", b"k", b"v"])
            encode_reply(OK, want, proto)
        else:
            run.append([b"GET", b"k"])
            values.append(_random_reply(rng))
            encode_reply(values[-1], want, proto)
    got = bytearray()
    _kvcodec.encode_run_replies(run, values, got, proto, OK, encode_reply)
    assert got == want, f"seed {seed}"
