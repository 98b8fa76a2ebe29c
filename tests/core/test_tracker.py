"""Unit tests of the tracker room (raft/core/tracker.pxi): Progress, its in-flight
ring, and the majority functions every quorum decision goes through."""
import random

import pytest

from raft._core import (PROGRESS_PROBE, PROGRESS_REPLICATE, PROGRESS_SNAPSHOT, LocalProtocolError,
                        Progress, majority_index, majority_won)


def test_new_progress_probes_at_next():
    pr = Progress(5, 4)
    assert (pr.match, pr.next, pr.state, pr.inflight) == (0, 5, PROGRESS_PROBE, 0)
    assert not pr.paused()


def test_ack_raises_match_only_forward():
    pr = Progress(1, 4)
    assert pr.acked(7)
    assert pr.match == 7
    assert not pr.acked(3)            # a stale ack never lowers match
    assert pr.match == 7


def test_replicate_ring_fills_pauses_and_frees_in_order():
    pr = Progress(1, 3)
    pr.to_replicate()
    assert pr.state == PROGRESS_REPLICATE and pr.next == 1
    for last in (10, 20, 30):
        assert not pr.paused()
        pr.sent(last, 100)
    assert pr.paused() and pr.inflight == 3 and pr.inflight_bytes == 300
    with pytest.raises(LocalProtocolError):
        pr.sent(40, 1)
    pr.acked(20)                      # frees the two messages ending at or below 20
    assert (pr.inflight, pr.inflight_bytes, pr.match) == (1, 100, 20)
    assert not pr.paused()
    pr.acked(30)
    assert pr.inflight == 0 and pr.inflight_bytes == 0


def test_ring_wraps_around_many_times():
    pr = Progress(1, 4)
    pr.to_replicate()
    last = 0
    for _ in range(50):               # start index cycles through every slot
        for _ in range(3):
            last += 1
            pr.sent(last, last)
        pr.acked(last - 1)
        assert pr.inflight == 1 and pr.inflight_bytes == last
        pr.acked(last)
        assert pr.inflight == 0 and pr.inflight_bytes == 0


def test_byte_bound_pauses_but_one_message_always_goes():
    pr = Progress(1, 16, 1000)
    pr.to_replicate()
    assert not pr.paused()
    pr.sent(1, 5000)                  # larger than the bound: it still went alone
    assert pr.paused()
    pr.acked(1)
    assert not pr.paused()


def test_probe_pauses_after_one_send_and_state_changes_clear_the_ring():
    pr = Progress(1, 8)
    pr.to_replicate()
    pr.sent(3, 10)
    pr.acked(2)
    pr.to_probe()                     # resume from match + 1; in-flight forgotten
    assert (pr.state, pr.next, pr.inflight, pr.inflight_bytes) == (PROGRESS_PROBE, 3, 0, 0)
    pr.to_snapshot(9)
    assert pr.state == PROGRESS_SNAPSHOT and pr.snap_index == 9
    assert pr.paused()                # no AppendEntries while a snapshot is sent


def test_ring_matches_a_model_under_random_use():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pr = Progress(1, 5, 0)
    pr.to_replicate()
    model, last = [], 0               # [(last, size)] in send order
    for _ in range(2000):
        if len(model) < 5 and rng.random() < 0.6:
            last += rng.randint(1, 3)
            size = rng.randint(0, 50)
            pr.sent(last, size)
            model.append((last, size))
        else:
            upto = rng.randint(0, last)
            pr.acked(upto)
            model = [(lst, s) for lst, s in model if lst > upto]
        assert pr.inflight == len(model), f"seed {seed}"
        assert pr.inflight_bytes == sum(s for _, s in model), f"seed {seed}"
        assert pr.paused() == (len(model) >= 5), f"seed {seed}"


@pytest.mark.parametrize("n_voters,needed", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_majority_won(n_voters, needed):
    voters = tuple(range(1, n_voters + 1))
    assert majority_won(needed, voters)
    assert not majority_won(needed - 1, voters)


def test_majority_index_is_what_a_majority_holds():
    assert majority_index([5, 9, 7], (1, 2, 3)) == 7
    assert majority_index([1, 9, 9, 2, 3], (1, 2, 3, 4, 5)) == 3
    assert majority_index([4, 8, 6, 2], (1, 2, 3, 4)) == 4       # 3 of 4 hold >= 4
    assert majority_index([3], (1,)) == 3
