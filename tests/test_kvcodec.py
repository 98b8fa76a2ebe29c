"""The compiled command codec (raft/_kvcodec.pyx) against its Python reference in
raft/kv.py: the same bytes for every command, the same decoding for every input it
accepts, and a refusal (None: the reference then names the problem) for the rest."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from raft import _kvcodec, kv

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


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_decode_agrees_with_the_reference_on_arbitrary_bytes(data):
    fast = _kvcodec.decode(data)
    ref = _reference_decode(data)
    if fast is not None:
        assert ref is not None and kv.Command(*fast) == ref
    elif ref is not None:
        # Refused by the compiled decoder but accepted by the reference: only varints
        # beyond 64 bits may do that (the reference decides them).
        assert max(ref.client_id, ref.seq, ref.time_ms) >= 1 << 64 or \
            any(len(a) >= 1 << 64 for a in ref.argv)


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
    reply = kv.KVStateMachine().apply(1, b"\x01\x00\x00\x00\x05")
    assert "malformed log entry at index 1" in str(reply)
