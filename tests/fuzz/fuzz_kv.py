"""Fuzz the KV command codec: the compiled decoder raft._fastpath.decode against its
Python reference raft.kv.codec._decode_command_reference.

Input: the bytes of one log entry's data.
Properties:
* the reference raises nothing but ``CommandDecodeError``; the compiled decoder
  raises nothing at all (it returns None to refuse);
* every input the compiled decoder accepts, the reference accepts with the same
  result; one it refuses, the reference refuses too, except varints beyond 64 bits
  and non-canonical encodings (a varint longer than 10 bytes, e.g. zero-padded
  with 0x80 ... 0x00): the compiled decoder leaves those to the reference, which
  ``decode_command`` then runs, so every replica still decodes them the same way
  (corpus/kv/overlong-varint, found by this harness);
* an accepted command re-encodes to the same bytes when its encoding is canonical.
"""
from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from raft import _fastpath
    from raft.kv import codec as kv
    from _fuzzlib import main


@atheris.instrument_func
def _reference(data: bytes):
    try:
        return kv._decode_command_reference(data)
    except kv.CommandDecodeError:
        return None


def _beyond_64_bits(c: kv.Command) -> bool:
    return max(c.client_id, c.seq, c.time_ms) >= 1 << 64 or any(len(a) >= 1 << 64 for a in c.argv)


def _canonical(c: kv.Command) -> bytes:
    return _fastpath.encode(c.client_id, c.seq, list(c.argv), c.time_ms)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    fast = _fastpath.decode(data)
    ref = _reference(data)
    if fast is not None:
        if ref is None or kv.Command(*fast) != ref:
            raise RuntimeError(f"compiled decode {fast!r} != reference {ref!r} for {data!r}")
    elif ref is not None and not _beyond_64_bits(ref) and _canonical(ref) == data:
        raise RuntimeError(f"compiled decode refused what the reference took: {ref!r} for {data!r}")
    if ref is not None and not _beyond_64_bits(ref):
        back = _fastpath.decode(_canonical(ref))
        if back is None or kv.Command(*back) != ref:
            raise RuntimeError(f"re-encoding {ref!r} does not decode back: {back!r}")


if __name__ == "__main__":
    main("kv", test_one_input)
