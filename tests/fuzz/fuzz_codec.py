"""Fuzz the peer wire codec (raft/net/codec.pyx) with arbitrary frames.

Input: byte 0 picks max_frame and where the stream is cut; the rest is the frame.
Properties:
* ``decode`` and ``FrameDecoder.feed`` raise nothing but ``FrameError``;
* the incremental decoder, fed the bytes in pieces, gives the same batch as
  ``decode`` of the whole frame, or refuses it as well;
* a decoded batch re-encodes to a frame that decodes to the same messages.
The codec is compiled C without coverage instrumentation (no clang here to build it
with -fsanitize=fuzzer-no-link): the feedback is only this harness's own branches, so
the search is close to mutation of the seeds (tests/fuzz/corpus/codec/, well-formed
frames of every message type), not guided by the codec's branches.
"""
from __future__ import annotations

import random
import sys

import atheris

with atheris.instrument_imports():
    from raft.net import codec
    from _fuzzlib import main

_MAX_FRAMES = (codec.DEFAULT_MAX_FRAME, 64, 2, 1 << 12)


def fields(m) -> tuple:
    return (m.type, m.src, m.dst, m.term, m.log_term, m.index, m.commit, m.reject_hint,
            m.msg_id, m.context, m.reject, [(e.index, e.term, e.type, e.data) for e in m.entries],
            m.data)


@atheris.instrument_func
def _decode_whole(frame: bytes, max_frame: int):
    try:
        return [fields(m) for m in codec.decode(frame, max_frame)]
    except codec.FrameError:
        return None


@atheris.instrument_func
def _decode_pieces(frame: bytes, max_frame: int, rng: random.Random):
    dec = codec.FrameDecoder(max_frame)
    cuts = sorted(rng.sample(range(1, len(frame)), min(len(frame) - 1, rng.randrange(0, 5))))
    batches = []
    try:
        for a, b in zip([0] + cuts, cuts + [len(frame)]):
            batches.extend(dec.feed(frame[a:b]))
    except codec.FrameError:
        return None, dec.buffered
    return [[fields(m) for m in batch] for batch in batches], dec.buffered


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    ctl, frame = data[0], data[1:]
    max_frame = _MAX_FRAMES[ctl & 3]
    whole = _decode_whole(frame, max_frame)
    pieces, buffered = _decode_pieces(frame, max_frame, random.Random(ctl >> 2))
    if whole is not None:
        if pieces != [whole] or buffered:
            raise RuntimeError(f"FrameDecoder disagrees with decode: {pieces!r} vs {whole!r}")
        msgs = codec.decode(frame, max_frame)
        again = _decode_whole(codec.encode(msgs, codec.DEFAULT_MAX_FRAME), codec.DEFAULT_MAX_FRAME)
        if again != whole:
            raise RuntimeError(f"re-encoding changed the batch: {again!r} vs {whole!r}")
    elif pieces and buffered == 0 and len(pieces) == 1:
        # The stream held exactly one frame, and the incremental decoder took it.
        raise RuntimeError(f"FrameDecoder accepted a frame decode refused: {pieces!r}")


if __name__ == "__main__":
    main("codec", test_one_input)
