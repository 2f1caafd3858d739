"""In-flight charges, the pure part: placements the API has made that the
metrics cannot show yet, and how they change a destination's figures.

Without them every job ranked on one cached snapshot goes to the same "best"
destination until the next refresh (the herd effect of stale load
information). With them, each placement is "assumed" in the figures until a
snapshot has had time to reflect it, as the Kubernetes scheduler assumes a
pod and HTCondor's negotiator debits a match during a cycle.

Redis keeps, per destination, the sums of its live charges (``ChargeLoad``),
so a rank request reads one small record per candidate however many jobs are
in flight. A charge ends when a published snapshot's figures for its
destination are ``inflight.reflect_lag_s`` newer than it (the collector
removes it as it publishes) or, in any case, ``inflight.max_age_s`` after
it was made. ``counted_loads`` takes out what Redis has not removed yet: the
charges past their age, and the ranked job's own charge, which must never
count in its own ranking (a job ranked again would otherwise see itself in
the queue and move).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpv_broker.core.charges import Charge, ChargeLoad, ChargeState

__all__ = ["Charge", "ChargeLoad", "ChargeState", "LoadColumns", "charged_columns", "counted_loads"]


def counted_loads(state: ChargeState, now: float, max_age_s: float) -> dict[str, ChargeLoad]:
    """The load each destination in ``state.loads`` carries in a ranking at
    ``now``: without charges older than ``max_age_s`` and without the
    ranked job's own charge. Destinations with none left are absent."""
    loads = dict(state.loads)
    for c in state.expired:
        if c.destination in loads:
            loads[c.destination] = loads[c.destination].without(c)
    own = state.own
    # (Past its age, it was taken out above if Redis still held it.)
    if own is not None and own.destination in loads and loads[own.destination].holds(own, now, max_age_s):
        loads[own.destination] = loads[own.destination].without(own)
    return {d: load for d, load in loads.items() if load.count > 0}


@dataclass(frozen=True, eq=False)
class LoadColumns:
    """The loads of a batch's candidates as columns (zeros where none)."""

    count: np.ndarray
    cores: np.ndarray
    mem: np.ndarray
    core_s: np.ndarray
    timed: np.ndarray

    @classmethod
    def of(cls, loads: Sequence[ChargeLoad | None]) -> LoadColumns:
        rows = [_NONE if load is None else (load.count, load.cores, load.mem, load.core_s, load.timed)
                for load in loads]
        count, cores, mem, core_s, timed = np.array(rows, dtype=np.float64).reshape(len(rows), 5).T
        return cls(count, cores, mem, core_s, timed)


_NONE = (0, 0.0, 0.0, 0.0, 0)


def charged_columns(cpus_free: np.ndarray, mem_free: np.ndarray, queued: np.ndarray, running: np.ndarray,
                    cpus_total: np.ndarray, median_run_s: np.ndarray, loads: LoadColumns,
                    by_work: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free cores, free memory and queued (NaN: not reported) as they will
    be once the charged jobs show; unchanged where nothing is charged.

    The charges take the free cores and memory as far as they reach; the
    share that does not fit joins the queue, counted in jobs, or
    (``by_work``) in typical jobs of the destination (its busy cores / jobs
    running x median run time, in core-seconds; a charge without a run
    time, or a destination without these figures, counts one a job): the
    queue's drain time is what the wait estimate reads, and a queued 2 h,
    16-core assembly delays the jobs behind it far more than a 40 s QC job.
    Sums do not say which charged job fits where, so the share is the same
    for every charge: with 10 free cores and three 4-core charges, 10/12
    of each fits, and half a job queues. Nothing known to take from (no
    free cores, no free memory reported): every charged job queues."""
    # Degenerate figures (a running count of 1e-300) may overflow: their
    # results are checked below, not trusted.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        placed = np.minimum(_share(cpus_free, loads.cores), _share(mem_free, loads.mem))
        placed = np.where(np.isnan(cpus_free) & np.isnan(mem_free), 0.0, placed)
        waiting = loads.count
        if by_work:
            typical = (cpus_total - cpus_free) / running * median_run_s
            known = (running > 0) & (typical > 0)  # NaN compares false: not reported
            waiting = np.where(known, loads.core_s / typical + loads.count - loads.timed, loads.count)
    charged = loads.count > 0
    return (np.where(charged, cpus_free - placed * loads.cores, cpus_free),
            np.where(charged, mem_free - placed * loads.mem, mem_free),
            np.where(charged, np.nan_to_num(queued) + (1.0 - placed) * waiting, queued))


# Sums that lost charges in floating point leave residues (0.1 + 0.2 - 0.2
# is not 0.1): a residue must not read as a job that does not fit.
_RESIDUE = 1e-9


def _share(free: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The share of ``wanted`` that ``free`` holds (1: not reported, or enough)."""
    room = np.maximum(free, 0.0)
    enough = np.isnan(free) | (wanted <= room + _RESIDUE)
    return np.where(enough, 1.0, room / np.where(enough, 1.0, wanted))
