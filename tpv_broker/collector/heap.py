"""Keeping CPython's cyclic garbage collector off what the daemon holds.

A collector at 500 destinations x 2,000 tools keeps about 100,000 run-time
statistics from one refresh to the next (a pydantic model each, with the
set of its fields: 230,000 objects the collector tracks). A cycle allocates
tens of thousands of short-lived objects (the rows of InfluxDB's answer),
and CPython's full collections, which walk every tracked object, ran every
few cycles: they doubled the steady cycle there (median of 20 cycles in
bench.collector: 0.44 s, against 0.20 s with the heap settled).

So each time the kept statistics are replaced, the daemon collects what is
garbage and then freezes whatever is alive (``gc.freeze``): later
collections skip it. Frozen objects are still freed when their last
reference goes, as the statistics a refresh replaces are; only a reference
cycle that became garbage while frozen stays, until the next settling,
which unfreezes everything and collects before it freezes again. (So
does garbage a settling could not collect because another thread was
collecting at that moment: CPython then returns at once.)
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

from .state import CollectorState, RunTimeStats

log = logging.getLogger("tpv_broker.collector")


def settle() -> None:
    """Collect the garbage of every object, frozen ones included, then
    freeze what is alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class HeapSettler:
    """Settles the heap (``settle``) after the daemon's statistics change,
    and only then: a collection of the whole heap takes a tenth of a second
    or more at a large site, and they change once a day (gxadmin's run)."""

    def __init__(self) -> None:
        # Weak: statistics the collector let go of must not stay for this.
        self._kept: tuple[weakref.ref[RunTimeStats], ...] = ()
        # The cycle and the statistics refresh run in threads of their own.
        self._lock = threading.Lock()

    def after(self, state: CollectorState) -> bool:
        """Settle if ``state``'s kept statistics are not those of the last
        call; whether it did."""
        with self._lock:
            kept = state.kept_stats()
            if len(kept) == len(self._kept) and all(s is r() for s, r in zip(kept, self._kept, strict=True)):
                return False
            self._kept = tuple(weakref.ref(s) for s in kept)
            started = time.monotonic()
            settle()
            log.debug("heap settled after the run-time statistics changed: %d objects frozen in %.2f s",
                      gc.get_freeze_count(), time.monotonic() - started)
            return True
