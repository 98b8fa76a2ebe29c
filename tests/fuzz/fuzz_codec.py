"""Fuzz the peer wire codec (raft/net/codec.pyx) with arbitrary frames.

Input: byte 0 picks max_frame and where the stream is cut; the rest is the frame,
or (bit 7 of byte 0) a description of a batch of messages (atheris's
FuzzedDataProvider) that is encoded, then has one byte overwritten: a way to reach
valid and nearly valid frames of any shape without coverage of the compiled codec.
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
    from raft import (MSG_APP, MSG_APP_RESP, MSG_SNAP, MSG_SNAP_RESP, MSG_VOTE, MSG_VOTE_RESP,
                      Entry, Message)
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


_U64 = (1 << 64) - 1
_TYPES = (MSG_APP, MSG_APP_RESP, MSG_VOTE, MSG_VOTE_RESP, MSG_SNAP, MSG_SNAP_RESP)


@atheris.instrument_func
def _described_frame(desc: bytes) -> bytes | None:
    """Encode the batch that desc describes, then overwrite one byte (if asked)."""
    fdp = atheris.FuzzedDataProvider(desc)
    msgs = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        ents = [Entry(fdp.ConsumeIntInRange(0, _U64), fdp.ConsumeIntInRange(0, _U64),
                      fdp.ConsumeIntInRange(0, 3), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
                for _ in range(fdp.ConsumeIntInRange(0, 3))]
        mtype = _TYPES[fdp.ConsumeIntInRange(0, len(_TYPES) - 1)]
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)) if mtype == MSG_SNAP else None
        msgs.append(Message(mtype, *(fdp.ConsumeIntInRange(0, _U64) for _ in range(6)),
                            entries=ents, reject=fdp.ConsumeBool(),
                            reject_hint=fdp.ConsumeIntInRange(0, _U64),
                            msg_id=fdp.ConsumeIntInRange(0, _U64),
                            context=fdp.ConsumeIntInRange(0, _U64), data=data))
    try:
        frame = bytearray(codec.encode(msgs))
    except (ValueError, OverflowError, TypeError):
        return None   # a batch the encoder refuses (unknown type, data where none goes)
    pos, val = fdp.ConsumeIntInRange(0, 2 * len(frame)), fdp.ConsumeInt(1) & 0xFF
    if pos < len(frame):
        frame[pos] = val
    return bytes(frame)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    ctl, frame = data[0], data[1:]
    if ctl & 0x80:
        frame = _described_frame(frame)
        if frame is None:
            return
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
