"""A circuit breaker, so a dead broker costs a job nothing.

Closed: every job asks the broker. After ``failures_to_open`` failures in a
row it opens: no job asks for ``cooldown_s``. Then one job probes (the
others keep skipping while it does); a success closes it, a failure opens it
for another cooldown. Galaxy may dispatch from several threads of one
process, hence the lock.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class Breaker:
    def __init__(self, failures_to_open: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures_to_open < 1:
            raise ValueError(f"failures_to_open must be at least 1, got {failures_to_open}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def allow(self) -> bool:
        """May this job ask the broker? While open, True for one probe once
        the cooldown is over."""
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> bool:
        """Record an answer; True if that closed the breaker."""
        with self._lock:
            was_open = self._open_until is not None
            self._failures = 0
            self._open_until = None
            self._probing = False
            return was_open

    def release(self) -> None:
        """Record neither: the job did not ask after all (a probe it was let
        through for may go to the next job)."""
        with self._lock:
            self._probing = False

    def failure(self) -> bool:
        """Record a failure; True if that opened the breaker (a failed probe
        only re-opens it: it was open already)."""
        with self._lock:
            self._failures += 1
            if self._open_until is not None:
                self._probing = False
                self._open_until = self._clock() + self.cooldown_s
                return False
            if self._failures >= self.failures_to_open:
                self._open_until = self._clock() + self.cooldown_s
                return True
            return False
