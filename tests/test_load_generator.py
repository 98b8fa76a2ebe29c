"""raft/cli/load.py, the RESP load generator of `raft bench`: requests are drawn from
the seed (the same seed, the same requests), the budget (max_requests) is exact, and
the reply counting fast path (a chunk of +OK replies) counts as the parser does."""
import asyncio

import pytest

from raft.cli.load import BenchConfig, LoadResult, _LoadProtocol, _Shared, new_histogram


def shared(**cfg) -> _Shared:
    res = LoadResult(hist=new_histogram(), write_hist=new_histogram(), read_hist=new_histogram())
    return _Shared(BenchConfig(**cfg), deadline=float("inf"), result=res)


def test_the_same_seed_draws_the_same_requests_and_the_plan_cycles():
    a, b = shared(seed=7, read_ratio=0.3), shared(seed=7, read_ratio=0.3)
    c = shared(seed=8, read_ratio=0.3)
    first = a.take(1000)
    assert first == b.take(1000)
    assert first != c.take(1000)
    kinds, data = first
    assert set(kinds) == {0, 1} and len(kinds) == 1000
    assert data.count(b"*3\r\n$3\r\nSET") == kinds.count(0)
    assert data.count(b"*2\r\n$3\r\nGET") == kinds.count(1)
    whole = a._kinds
    a._plan_pos = len(whole) - 3             # across the end of the plan: it wraps
    wrapped = a.take(5)
    a._plan_pos = 0
    assert wrapped[0] == whole[-3:] + whole[:2]
    assert wrapped[1] == a._blob[a._starts[len(whole) - 3]:] + a._blob[:a._starts[2]]


def test_take_never_goes_past_max_requests():
    sh = shared(max_requests=10)
    got = 0
    while True:
        kinds, data = sh.take(4)
        if not kinds:
            break
        got += len(kinds)
        sh.result.sent += len(kinds)
    assert got == 10


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)


VALUE = b"$3\r\nvvv\r\n"     # the bench's value reply with value_size=3


@pytest.mark.parametrize("chunks", [
    [b"+OK\r\n" * 8],                                   # the fast path
    [b"+OK\r\n+O", b"K\r\n" + b"+OK\r\n" * 6],           # split: the parser
    [b"+OK\r\n" * 3, b"$1\r\nv\r\n", b"+OK\r\n" * 4],    # another value: the parser
    [b"+OK\r\n" * 2, b"-ERR boom\r\n", b"+OK\r\n" * 5],  # an error reply
    [VALUE * 2 + b"+OK\r\n" + b"$-1\r\n" + VALUE, b"+OK\r\n" * 3],   # values, nulls
    [VALUE + b"$-1\r", b"\n+OK\r\n" + VALUE * 5],        # split in a null: the parser
    [b"+OK\r\n" * 3 + b"-MOVED 1 127.0.0.1:1\r\n", b"+OK\r\n" * 4],   # a redirect
])
@pytest.mark.parametrize("windows", [1, 3])
def test_replies_are_counted_the_same_whichever_path_reads_them(chunks, windows):
    """Whatever the path (the tiling check or the parser), every reply answers the
    next request in flight, across the windows they were sent in, in order: the
    counts of reads and writes follow the requests' kinds, errors are not counted."""
    async def main() -> tuple[LoadResult, bytes]:
        sh = shared(clients=1, pipeline=8, max_requests=8, read_ratio=0.5, value_size=3)
        proto = _LoadProtocol(sh)
        proto.transport = FakeTransport()   # type: ignore[assignment]
        sent = b""
        for i in range(windows):             # windows of 3, 3, 2 requests, or one of 8
            sh.cfg.pipeline = 8 if windows == 1 else min(8, 3 * (i + 1))
            proto._fill()
        assert proto.outstanding == 8 and len(proto.inflight) == windows
        sent = b"".join(w[1] for w in proto.inflight)
        for c in chunks:
            proto.data_received(c)
        assert proto.outstanding == 0 and not proto.inflight
        return sh.result, sent

    res, kinds = asyncio.run(main())
    replies = b"".join(chunks)
    failed = [i for i, line in enumerate(_reply_lines(replies)) if line.startswith(b"-")]
    assert res.errors + res.redirects == len(failed)
    assert res.reads == sum(1 for i, k in enumerate(kinds) if k and i not in failed)
    assert res.writes == sum(1 for i, k in enumerate(kinds) if not k and i not in failed)
    assert len(res.write_us) == res.writes and len(res.read_us) == res.reads
    assert all(us >= 1 for us in res.write_us)


def _reply_lines(replies: bytes) -> list[bytes]:
    """The replies of ``replies`` (simple, error, bulk), whole, with the parser."""
    import hiredis
    reader, out = hiredis.Reader(), []
    reader.feed(replies)
    while (reply := reader.gets()) is not False:
        out.append(b"-" if isinstance(reply, Exception) else b"+")
    return out


def test_a_chunk_that_only_looks_like_replies_goes_to_the_parser():
    """The tiling check never miscounts: a chunk whose lengths would add up but that
    is not whole replies (a value of another length, a stray byte) is parsed."""
    sh = shared(value_size=3)
    proto = object.__new__(_LoadProtocol)
    proto.shared = sh
    assert proto._plain_replies(b"+OK\r\n" + VALUE + b"$-1\r\n") == 3
    assert proto._plain_replies(b"+OK\r\n$4\r\nvvvv\r\n") == -1
    assert proto._plain_replies(b"+OK\r\n+OK\r") == -1
    assert proto._plain_replies(b"$-1\r\n-ERR\r\n") == -1
