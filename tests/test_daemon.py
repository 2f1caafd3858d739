"""The scheduler around collect_once: one cycle at a time, even when a cycle
takes longer than the interval, and a clean stop."""

from __future__ import annotations

import threading
import time

from tpv_broker.collector.daemon import run_daemon


class SlowCycle:
    """Stands in for CycleRunner: what is under test is the scheduling."""

    stats_refresh_s = None
    leader = None

    def __init__(self, duration_s: float, stop_after: int, stop: threading.Event, interval_s: float) -> None:
        self.duration_s, self.stop_after, self.stop, self.interval_s = duration_s, stop_after, stop, interval_s
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.duration_s)
        with self.lock:
            self.running -= 1
            if self.calls >= self.stop_after:
                self.stop.set()

    def refresh_stats(self) -> None:
        raise AssertionError("no refresh job was asked for")


def test_cycles_never_overlap_when_slower_than_the_interval() -> None:
    stop = threading.Event()
    cycle = SlowCycle(duration_s=0.3, stop_after=4, stop=stop, interval_s=0.05)
    daemon = threading.Thread(target=run_daemon, args=(cycle, stop))
    daemon.start()
    daemon.join(timeout=60)
    assert not daemon.is_alive(), "the daemon did not stop when asked"
    assert cycle.calls >= 4
    assert cycle.most_at_once == 1
