"""Fuzz the RESP request parser (raft/resp/protocol.py RequestParser, with the compiled
scanner raft._fastpath.scan_requests in front of it).

Input: byte 0 picks the limits and the client's state, byte 1 seeds where the
stream is cut into reads; the rest is the byte stream a client sends, or (bit 6 of
byte 0) a description of one: commands separated by 0xFF, their arguments by 0xFE,
framed as well-formed multibulk requests. The compiled scanner is not instrumented
for coverage, so without this form the mutator rarely keeps a "$<len>" header in step
with its argument and never reaches the scanner's paths for longer arguments.
Properties:
* ``feed`` raises nothing but ``ProtocolError``;
* the commands produced, and the error the stream ends with, are the same with the
  fast path disabled (pure Python parser + hiredis), for the same reads.
Before AUTH (preauth) the parser holds after an AUTH/HELLO command; the harness
resumes it as the server would, authenticated or not (bit 5 of byte 0).
"""
from __future__ import annotations

import random

import atheris

with atheris.instrument_imports():
    from raft.resp import protocol as resp
    from _fuzzlib import main


class _NoFastPath:
    """Stands in for raft._fastpath in resp: the scanner never advances."""

    @staticmethod
    def scan_requests(buf, pos, max_args, max_bulk, out):
        return pos


_LIMITS = (
    resp.ServerConfig(),
    resp.ServerConfig(max_args=8, max_bulk_len=16, max_inline_len=32, max_request_len=96),
    resp.ServerConfig(max_args=2, max_bulk_len=4, max_inline_len=8, max_request_len=24,
                      preauth_query_buffer=12),
    resp.ServerConfig(max_args=64, max_bulk_len=300, preauth_query_buffer=40),
)


@atheris.instrument_func
def _parse_all(chunks: list[bytes], fast: bool, cfg: resp.ServerConfig, preauth: bool,
               auth_ok: bool) -> tuple[list, str | None]:
    saved = resp._fastpath
    if not fast:
        resp._fastpath = _NoFastPath
    try:
        p = resp.RequestParser(cfg, preauth=preauth)
        out: list = []
        for c in chunks:
            try:
                out.extend(p.feed(c))
                while p.held:  # the server ran the AUTH/HELLO; go on with the rest
                    out.append(b"<resume>")
                    out.extend(p.resume(auth_ok))
            except resp.ProtocolError as e:
                out.extend(p.pending)
                return out, str(e)
        return out, None
    finally:
        resp._fastpath = saved


def _frame(desc: bytes) -> bytes:
    """0xFF-separated commands of 0xFE-separated arguments -> RESP multibulk requests."""
    out = []
    for cmd in desc.split(b"\xff"):
        args = cmd.split(b"\xfe")
        out.append(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return b"".join(out)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    ctl, rng, stream = data[0], random.Random(data[1]), data[2:]
    cfg, preauth, auth_ok = _LIMITS[ctl & 3], bool(ctl & 0x10), bool(ctl & 0x20)
    if ctl & 0x40:
        stream = _frame(stream)
    if not stream:
        return
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 6))))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    fast = _parse_all(chunks, True, cfg, preauth, auth_ok)
    slow = _parse_all(chunks, False, cfg, preauth, auth_ok)
    if fast != slow:
        raise RuntimeError(f"fast path differs: {fast!r} != {slow!r} for {chunks!r}")


if __name__ == "__main__":
    main("resp", test_one_input)
