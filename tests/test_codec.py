"""Wire codec (raft.net.codec): round trips, strict validation, fuzzing."""
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft import (
    ENTRY_NOOP,
    ENTRY_NORMAL,
    MSG_APP,
    MSG_APP_RESP,
    MSG_SNAP,
    MSG_SNAP_RESP,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
    Message,
)
from raft.net import codec
from raft.net.codec import FrameDecoder, FrameError, decode, encode

U64 = 2**64 - 1
ALL_TYPES = (MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP, MSG_SNAP_RESP)
NO_DATA_TYPES = (MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP_RESP)


def fields(m: Message) -> tuple:
    return (m.type, m.src, m.dst, m.term, m.log_term, m.index, m.commit, m.reject_hint,
            m.msg_id, m.context, m.reject, [(e.index, e.term, e.type, e.data) for e in m.entries],
            m.data)


def assert_same(got: list[Message], want: list[Message]) -> None:
    assert [fields(m) for m in got] == [fields(m) for m in want]
    for m in got:
        for e in m.entries:
            assert type(e.data) is bytes


def sample_batch() -> list[Message]:
    ents = [Entry(11, 3, ENTRY_NORMAL, b"a" * 100), Entry(12, 3, ENTRY_NOOP, b""),
            Entry(13, 4, ENTRY_NORMAL, bytes(range(256)))]
    return [
        Message(MSG_APP, 1, 2, term=4, log_term=3, index=10, commit=9, entries=ents, msg_id=7,
                context=3),
        Message(MSG_APP, 1, 3, term=4, log_term=3, index=10, commit=9),            # heartbeat
        Message(MSG_APP_RESP, 2, 1, term=4, index=13, msg_id=8),
        Message(MSG_APP_RESP, 2, 1, term=4, index=10, log_term=2, reject=True, reject_hint=5),
        Message(MSG_VOTE, 3, 1, term=5, index=13, log_term=4),
        Message(MSG_VOTE_RESP, 1, 3, term=5, reject=True),
        Message(MSG_VOTE_RESP, 2, 3, term=5, reject=False, msg_id=U64),
        # InstallSnapshot: the chunk [4096, 4096 + 300) of a 5000-byte snapshot at (13, 4)
        Message(MSG_SNAP, 1, 2, term=5, index=13, log_term=4, commit=4096, reject_hint=5000,
                data=bytes(range(256)) + b"s" * 44, msg_id=9),
        Message(MSG_SNAP, 1, 3, term=5, index=13, log_term=4, commit=0, reject_hint=0, data=b""),
        Message(MSG_SNAP_RESP, 2, 1, term=5, index=13, reject_hint=4396),
        Message(MSG_SNAP_RESP, 3, 1, term=5, index=13, reject_hint=0, reject=True),
    ]


# --- round trips --------------------------------------------------------------

@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_round_trip_each_type_with_entries(mtype):
    ents = [Entry(i, 7, ENTRY_NORMAL, bytes([i]) * i) for i in range(1, 6)]
    data = b"chunk" if mtype == MSG_SNAP else None
    m = Message(mtype, 1, 2, term=7, log_term=6, index=3, commit=2, entries=ents,
                reject=True, reject_hint=4, msg_id=99, data=data)
    assert_same(decode(encode([m])), [m])


@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20])
def test_round_trip_snapshot_chunks(size):
    """MSG_SNAP chunks keep their bytes exactly (up to a default max_msg_bytes chunk);
    every other type decodes with data None, as the core builds it."""
    chunk = bytes((i * 7) & 0xFF for i in range(size))
    m = Message(MSG_SNAP, 1, 2, term=3, index=1000, log_term=2, commit=size * 3,
                reject_hint=size * 4, data=chunk, msg_id=5)
    (got,) = decode(encode([m]))
    assert_same([got], [m])
    assert type(got.data) is bytes and got.data == chunk
    assert codec.encoded_size(m) == codec.MESSAGE_HEADER_SIZE + size
    for t in NO_DATA_TYPES:
        for data in (None, b""):
            (got,) = decode(encode([Message(t, 1, 2, term=1, data=data)]))
            assert got.data is None


def test_snapshot_chunks_in_a_stream_with_other_messages():
    chunks = [Message(MSG_SNAP, 1, 2, term=2, index=50, log_term=2, commit=k * 100,
                      reject_hint=350, data=bytes([k]) * min(100, 350 - k * 100)) for k in range(4)]
    batch = [hb for hb in sample_batch()[:2]] + chunks + [Message(MSG_APP, 1, 2, term=2, index=50)]
    stream = encode(batch[:3]) + encode(batch[3:])
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 5):
        for frame_msgs in dec.feed(stream[i:i + 5]):
            got.extend(frame_msgs)
    assert_same(got, batch)


def test_round_trip_batch_and_extremes():
    batch = sample_batch()
    batch.append(Message(MSG_APP, U64, U64, U64, U64, U64, U64, [Entry(U64, U64, 255, b"z")],
                         True, U64, U64))
    assert_same(decode(encode(batch)), batch)


def test_empty_batch_round_trips():
    assert decode(encode([])) == []


def test_frame_layout_is_as_documented():
    m = Message(MSG_VOTE, 1, 2, term=3, index=4, log_term=5, msg_id=6, context=7)
    f = encode([m])
    length, version, ftype, count = struct.unpack_from("<IBBI", f)
    assert (length, version, ftype, count) == (len(f) - 4, 3, codec.FRAME_MESSAGES, 1)
    assert codec.VERSION == 3
    body = f[10:]
    assert len(body) == codec.MESSAGE_HEADER_SIZE == 82
    assert struct.unpack("<BB9QII", body) == (MSG_VOTE, 0, 1, 2, 3, 5, 4, 0, 0, 6, 7, 0, 0)
    # An InstallSnapshot chunk: data_len, then the data right after the fixed header.
    m = Message(MSG_SNAP, 1, 2, term=3, index=4, log_term=2, commit=8, reject_hint=11,
                data=b"abc", msg_id=6)
    body = encode([m])[10:]
    assert struct.unpack_from("<BB9QII", body) == (MSG_SNAP, 0, 1, 2, 3, 2, 4, 8, 11, 6, 0, 0, 3)
    assert body[82:] == b"abc"


def test_encoded_size_matches_encode():
    batch = sample_batch()
    assert len(encode(batch)) == codec.MESSAGES_OVERHEAD + sum(codec.encoded_size(m) for m in batch)


def test_decoded_entries_are_real_entries():
    # Decode builds entries without running Entry.__cinit__ (speed); they must be
    # indistinguishable from constructed ones.
    e = Entry(5, 2, ENTRY_NOOP, b"payload")
    (m,) = decode(encode([Message(MSG_APP, 1, 2, entries=[e])]))
    got = m.entries[0]
    assert got == e and hash(got) == hash(e) and repr(got) == repr(e)
    assert type(got) is Entry
    assert codec.FAST_ENTRY  # the layout check passed on this build


def test_decode_accepts_buffers():
    f = encode(sample_batch())
    assert_same(decode(bytearray(f)), sample_batch())
    assert_same(decode(memoryview(f)), sample_batch())


# --- encode refuses what a peer would refuse ------------------------------------

def test_encode_rejects_bad_input():
    with pytest.raises(TypeError):
        encode([object()])
    with pytest.raises(ValueError, match="unknown message type"):
        encode([Message(99, 1, 2)])
    with pytest.raises(ValueError, match="entry type"):
        encode([Message(MSG_APP, 1, 2, entries=[Entry(1, 1, 300, b"")])])
    with pytest.raises(TypeError):
        encode([Message(MSG_APP, 1, 2, entries=["not an entry"])])
    with pytest.raises(ValueError, match="without data"):
        encode([Message(MSG_SNAP, 1, 2)])
    with pytest.raises(ValueError, match="only InstallSnapshot"):
        encode([Message(MSG_APP, 1, 2, data=b"x")])
    with pytest.raises(ValueError, match="only InstallSnapshot"):
        codec.encoded_size(Message(MSG_SNAP_RESP, 1, 2, data=b"x"))


def test_encode_refuses_oversized_frame():
    m = Message(MSG_APP, 1, 2, entries=[Entry(1, 1, 0, b"x" * 1000)])
    with pytest.raises(FrameError, match="max_frame"):
        encode([m], max_frame=500)
    assert decode(encode([m], max_frame=2000), max_frame=2000)


# --- strict decode ----------------------------------------------------------------

def frame(body: bytes, version: int = codec.VERSION, ftype: int = 1) -> bytes:
    return struct.pack("<IBB", len(body) + 2, version, ftype) + body


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (frame(b"", version=codec.VERSION + 1), "unknown wire version"),
    (frame(b"", ftype=0), "unknown frame type"),
    (frame(b"", ftype=99), "unknown frame type"),
    (frame(b"", ftype=codec.FRAME_HELLO), "expected MESSAGES"),
    (frame(b"\x01\x00"), "no message count"),
    (frame(struct.pack("<I", 1)), "exceeds the frame"),
    (frame(struct.pack("<I", 0xFFFFFFFF)), "exceeds the frame"),
    (frame(struct.pack("<I", 0) + b"x"), "trailing"),
    (struct.pack("<IBB", 1, codec.VERSION, 1), "shorter than"),
    (struct.pack("<IBB", 0xFFFFFFFF, codec.VERSION, 1), "exceeds max_frame"),
])
def test_decode_rejects(data, reason):
    with pytest.raises(FrameError, match=reason):
        decode(data)


def test_decode_rejects_unknown_message_type_and_flags():
    good = encode([Message(MSG_VOTE, 1, 2)])
    bad_type = bytearray(good)
    bad_type[10] = 42
    with pytest.raises(FrameError, match="unknown message type 42"):
        decode(bytes(bad_type))
    bad_flags = bytearray(good)
    bad_flags[11] = 0x80
    with pytest.raises(FrameError, match="flag"):
        decode(bytes(bad_flags))


def test_decode_rejects_lying_entry_count_and_data_length():
    good = encode([Message(MSG_APP, 1, 2, entries=[Entry(1, 1, 0, b"abc")])])
    n_entries_at = 10 + 74
    lying = bytearray(good)
    struct.pack_into("<I", lying, n_entries_at, 1_000_000)
    with pytest.raises(FrameError, match="entry count"):
        decode(bytes(lying))
    data_len_at = 10 + 82 + 17
    lying = bytearray(good)
    struct.pack_into("<I", lying, data_len_at, 0xFFFFFFFF)
    with pytest.raises(FrameError, match="data length"):
        decode(bytes(lying))


MSG_DATA_LEN_AT = 10 + 78   # the message's u32 data_len, in a one-message frame


@pytest.mark.parametrize("lie", [4, 5, 1000, 0xFFFFFFFF])
def test_decode_rejects_lying_snapshot_data_length(lie):
    """A data_len larger than the bytes present is refused before anything is copied."""
    good = encode([Message(MSG_SNAP, 1, 2, term=1, index=1, log_term=1, reject_hint=3,
                           data=b"abc")])
    lying = bytearray(good)
    struct.pack_into("<I", lying, MSG_DATA_LEN_AT, lie)
    with pytest.raises(FrameError, match="data length|entry count|trailing"):
        decode(bytes(lying))
    # Shorter than the truth: the rest is read as trailing garbage, also refused.
    short = bytearray(good)
    struct.pack_into("<I", short, MSG_DATA_LEN_AT, 2)
    with pytest.raises(FrameError, match="trailing"):
        decode(bytes(short))


def test_decode_rejects_truncated_snapshot_chunk():
    f = encode([Message(MSG_SNAP, 1, 2, term=1, index=1, log_term=1, reject_hint=10_000,
                        data=b"d" * 10_000)])
    body = f[6:]
    for cut in list(range(0, 100)) + list(range(100, len(body), 997)) + [len(body) - 1]:
        with pytest.raises(FrameError):
            decode(frame(body[:cut]))
        dec = FrameDecoder()
        assert dec.feed(f[:cut + 6]) == []   # as a stream: still waiting
    # The data_len says more than the frame's own length allows.
    lying = bytearray(f)
    struct.pack_into("<I", lying, MSG_DATA_LEN_AT, 10_001)
    with pytest.raises(FrameError, match="data length 10001 of message 0 exceeds the frame"):
        decode(bytes(lying))


def test_decode_rejects_data_on_other_types():
    """Only MSG_SNAP may carry data: a peer sending it on another type is refused
    (the core would refuse the message anyway)."""
    hb_ = Message(MSG_APP, 1, 2, term=1)
    f = bytearray(encode([hb_]))
    struct.pack_into("<I", f, MSG_DATA_LEN_AT, 2)
    f += b"xy"
    struct.pack_into("<I", f, 0, len(f) - 4)
    with pytest.raises(FrameError, match="carries data"):
        decode(bytes(f))


def test_decode_respects_configured_max_frame():
    f = encode([Message(MSG_APP, 1, 2, entries=[Entry(1, 1, 0, b"x" * 100)])])
    with pytest.raises(FrameError, match="exceeds max_frame"):
        decode(f, max_frame=100)
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=2**33)


def test_truncated_frame_at_every_offset():
    f = encode(sample_batch())
    for cut in range(len(f)):
        # As a whole frame: refused.
        with pytest.raises(FrameError):
            decode(f[:cut])
        # As a stream: nothing yet, and the rest completes it.
        dec = FrameDecoder()
        assert dec.feed(f[:cut]) == []
        (got,) = dec.feed(f[cut:])
        assert_same(got, sample_batch())
        assert dec.buffered == 0


def test_body_truncated_with_consistent_length_field():
    # The length field agrees with the bytes present, but the body stops early:
    # must be a FrameError at every cut, never an out-of-bounds read.
    body = encode(sample_batch())[6:]
    for cut in range(len(body)):
        with pytest.raises(FrameError):
            decode(frame(body[:cut]))


# --- the stream decoder --------------------------------------------------------------

def test_stream_decoder_many_frames_in_odd_chunks():
    frames = [encode(sample_batch()[i:i + 2]) for i in range(0, len(sample_batch()), 2)]
    stream = b"".join(frames)
    for chunk in (1, 3, 7, 64, len(stream)):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), chunk):
            got.extend(dec.feed(stream[i:i + chunk]))
        assert len(got) == len(frames)
        assert_same([m for batch in got for m in batch], sample_batch())


def test_stream_decoder_refuses_oversized_length_before_buffering():
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError, match="exceeds max_frame"):
        dec.feed(struct.pack("<IBB", 10_000, 1, 1))
    assert dec.buffered == 0


def test_stream_decoder_is_poisoned_after_error():
    dec = FrameDecoder()
    with pytest.raises(FrameError):
        dec.feed(b"\x02\x00\x00\x00\x07\x01")
    with pytest.raises(FrameError, match="failed earlier"):
        dec.feed(encode([]))


def test_parse_header_and_encode_frame():
    f = codec.encode_frame(codec.FRAME_HELLO, b"abc")
    assert codec.parse_header(f[:6]) == (codec.FRAME_HELLO, 3)
    with pytest.raises(FrameError):
        codec.parse_header(f[:5])
    with pytest.raises(ValueError):
        codec.encode_frame(77, b"")


# --- fuzzing: hostile input only ever raises FrameError ----------------------------------

entries_st = st.lists(st.builds(Entry, st.integers(0, U64), st.integers(0, U64),
                                st.integers(0, 255), st.binary(max_size=40)), max_size=4)
message_st = st.builds(Message, st.sampled_from(NO_DATA_TYPES), st.integers(0, U64),
                       st.integers(0, U64), st.integers(0, U64), st.integers(0, U64),
                       st.integers(0, U64), st.integers(0, U64), entries_st, st.booleans(),
                       st.integers(0, U64), st.integers(0, U64))
snap_st = st.builds(Message, st.just(MSG_SNAP), st.integers(0, U64), st.integers(0, U64),
                    st.integers(0, U64), st.integers(0, U64), st.integers(0, U64),
                    st.integers(0, U64), st.just([]), st.booleans(), st.integers(0, U64),
                    st.integers(0, U64), st.integers(0, U64), data=st.binary(max_size=80))
message_st = st.one_of(message_st, snap_st)
batch_st = st.lists(message_st, max_size=5)


def decode_both_ways(data: bytes) -> None:
    """Decode as a whole frame and as a stream; only FrameError may escape."""
    try:
        decode(data, max_frame=1 << 16)
    except FrameError:
        pass
    dec = FrameDecoder(max_frame=1 << 16)
    try:
        for i in range(0, len(data), 7):
            dec.feed(data[i:i + 7])
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(batch_st)
def test_fuzz_round_trip(batch):
    assert_same(decode(encode(batch)), batch)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    decode_both_ways(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_body_with_valid_header(body):
    # Past the header check: exercises the message/entry parser itself.
    decode_both_ways(frame(body))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_st, st.data())
def test_fuzz_mutated_frames(batch, data):
    f = bytearray(encode(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(f) - 1, 0)))
        if op == "flip" and f:
            f[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and f:
            f[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            f[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and f:
            del f[pos:pos + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del f[pos:]
    decode_both_ways(bytes(f))
