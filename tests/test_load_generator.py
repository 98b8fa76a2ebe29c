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
    assert {is_read for is_read, _ in first} == {True, False}
    assert all(cmd.startswith(b"*3\r\n$3\r\nSET" if not r else b"*2\r\n$3\r\nGET")
               for r, cmd in first)
    plan = a._plan
    a._plan_pos = len(plan) - 3             # across the end of the plan: it wraps
    assert a.take(5) == plan[-3:] + plan[:2]


def test_take_never_goes_past_max_requests():
    sh = shared(max_requests=10)
    got = []
    while True:
        batch = sh.take(4)
        if not batch:
            break
        got += batch
        sh.result.sent += len(batch)
    assert len(got) == 10


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)


@pytest.mark.parametrize("chunks", [
    [b"+OK\r\n" * 8],                                   # the fast path
    [b"+OK\r\n+O", b"K\r\n" + b"+OK\r\n" * 6],           # split: the parser
    [b"+OK\r\n" * 3, b"$1\r\nv\r\n", b"+OK\r\n" * 4],    # a GET's value among them
    [b"+OK\r\n" * 2, b"-ERR boom\r\n", b"+OK\r\n" * 5],  # an error reply
])
def test_replies_are_counted_the_same_whichever_path_reads_them(chunks):
    async def main() -> LoadResult:
        sh = shared(clients=1, pipeline=8, max_requests=8, read_ratio=0.0)
        proto = _LoadProtocol(sh)
        proto.transport = FakeTransport()   # type: ignore[assignment]
        proto._fill()
        assert len(proto.inflight) == 8
        for c in chunks:
            proto.data_received(c)
        return sh.result

    res = asyncio.run(main())
    replies = b"".join(chunks)
    errors = replies.count(b"-ERR")
    assert res.writes + res.reads == 8 - errors
    assert res.errors == errors
    assert len(res.write_us) + len(res.read_us) == 8 - errors
    assert all(us >= 1 for us in res.write_us)
