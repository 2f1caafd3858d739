"""How long the collector waits after failed cycles before it asks InfluxDB
again: the interval, doubled after each failure in a row, up to a cap, so a
dead or struggling InfluxDB is not asked every few seconds, and one that is
back is noticed within the cap."""

from __future__ import annotations


def retry_delay(failures_in_a_row: int, interval_s: float, max_s: float) -> float:
    """interval x 2^(failures - 1), at most ``max_s``; never below the
    interval (a cap below it just keeps the normal schedule).

    1 failure: 1 x the interval (the normal schedule: a blip costs nothing
    extra), 2: 2x, 3: 4x, 4: 8x, ... until the cap."""
    if failures_in_a_row <= 0:
        return 0.0
    cap = max(max_s, interval_s)
    # Past 2^40 intervals any cap has long been reached.
    return min(interval_s * 2.0 ** min(failures_in_a_row - 1, 40), cap)
