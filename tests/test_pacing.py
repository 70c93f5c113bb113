"""Token bucket and backoff pacing (kubeprober.pacing), shared by the tunnel and the kube layer."""

from __future__ import annotations

import random

import pytest

from kubeprober.pacing import Backoff, BackoffSettings, TokenBucket


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.15  # one and a half tokens
    assert bucket.try_take() and not bucket.try_take()
    clock.now += 60  # never more than the burst
    assert sum(bucket.try_take() for _ in range(20)) == 5


async def test_take_waits_for_a_token() -> None:
    bucket = TokenBucket(50.0, 1)
    await bucket.take()
    import time

    start = time.monotonic()
    await bucket.take()
    await bucket.take()
    assert time.monotonic() - start >= 0.03  # two tokens at 50/s: about 40 ms


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_backoff_grows_caps_and_resets() -> None:
    backoff = Backoff(BackoffSettings(initial=1.0, maximum=8.0), rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_floor_zero_is_full_jitter() -> None:
    settings = BackoffSettings(initial=8.0, maximum=8.0, floor=0.0)
    delays = [Backoff(settings, rng=random.Random(seed)).next_delay() for seed in range(300)]
    assert min(delays) < 0.5 and max(delays) > 7.5


@pytest.mark.parametrize(("at_least", "lowest"), [(0, 0.5), (5, 5), (600, 30)])
def test_backoff_honours_a_server_delay_up_to_the_maximum(at_least: float, lowest: float) -> None:
    backoff = Backoff(BackoffSettings(initial=1.0, maximum=30.0), rng=random.Random(3))
    assert lowest <= backoff.next_delay(at_least=at_least) <= max(lowest, 1.0)


def test_backoff_survives_an_endless_outage() -> None:
    backoff = Backoff(BackoffSettings(initial=1.0, maximum=30.0))
    for _ in range(5000):  # factor ** failures would overflow a float long before this
        assert backoff.next_delay() <= 30.0
