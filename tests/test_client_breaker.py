"""The client's circuit breaker on a hand-driven clock."""

from __future__ import annotations

import threading

import pytest

from tpv_broker_client import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_until_the_threshold_then_open_for_the_cooldown():
    clock = Clock()
    b = Breaker(3, 30, clock)
    assert [b.allow() and b.failure() for _ in range(3)] == [False, False, True]  # the third opens it
    assert b.is_open and not b.allow()
    clock.now += 29.9
    assert not b.allow()


def test_after_the_cooldown_one_probe_at_a_time():
    clock = Clock()
    b = Breaker(1, 10, clock)
    b.failure()
    clock.now += 10
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # others skip while it is out
    assert not b.failure()  # a failed probe re-opens (it was open: no "opened" news)
    assert not b.allow()
    clock.now += 10
    assert b.allow()
    assert b.success()  # closes: news
    assert b.allow() and b.allow()
    assert not b.success()  # already closed: no news


def test_a_success_resets_the_count():
    b = Breaker(2, 10, Clock())
    b.failure()
    b.success()
    assert not b.failure() and not b.is_open
    assert b.failure() and b.is_open


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1), (1, -1)])
def test_bad_settings_are_refused(failures, cooldown):
    with pytest.raises(ValueError):
        Breaker(failures, cooldown)


def test_only_one_probe_among_many_threads():
    clock = Clock()
    b = Breaker(1, 1, clock)
    b.failure()
    clock.now += 1
    allowed = []
    start = threading.Barrier(16)

    def job() -> None:
        start.wait()
        allowed.append(b.allow())

    threads = [threading.Thread(target=job) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1
