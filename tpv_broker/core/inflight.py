"""In-flight charges, the pure part: placements the API has made that the
metrics cannot show yet, and how they change a destination's figures.

Without them every job ranked on one cached snapshot goes to the same "best"
destination until the next refresh (the herd effect of stale load
information). With them, each placement is "assumed" in the figures until a
snapshot has had time to reflect it, as the Kubernetes scheduler assumes a
pod and HTCondor's negotiator debits a match during a cycle.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterable, Mapping, Sequence
from operator import attrgetter

from tpv_broker.core.models import Charge, DestinationFigures

__all__ = ["Charge", "charged_figures", "live_charges", "oldest_countable", "queued_weight"]


def live_charges(
    charges: Iterable[Charge],
    figures: Mapping[str, DestinationFigures],
    reflect_lag_s: float,
    only: Container[str] | None = None,
) -> dict[str, list[Charge]]:
    """Charges per destination that its figures cannot reflect yet: its
    newest live point is not more than ``reflect_lag_s`` younger than the
    charge (a dispatched job takes that long to show up in the metrics).
    ``only``: the destinations asked about (a request's candidates), when
    not all of them."""
    out: dict[str, list[Charge]] = {}
    for c in charges:
        dest = c.destination
        if only is not None and dest not in only:
            continue
        d = figures.get(dest)
        seen_at = d.live_at if d is not None else None
        # Strictly later: a point taken the instant of the charge may not show it.
        if seen_at is not None and seen_at > c.charged_at + reflect_lag_s:
            continue
        per_dest = out.get(dest)
        if per_dest is None:
            out[dest] = [c]
        else:
            per_dest.append(c)
    for per_dest in out.values():
        # (Redis gives them in this order already: then sorting is one pass.)
        per_dest.sort(key=_CHARGED_AT)
    return out


_CHARGED_AT = attrgetter("charged_at")


def oldest_countable(live_points: Sequence[float], now: float, max_metrics_age_s: float,
                     reflect_lag_s: float) -> float | None:
    """The oldest charge a ranking at ``now`` can still count, given the
    snapshot's live points (``live_at``, sorted): only a destination whose
    point is at most ``max_metrics_age_s`` old is scored, and it counts a
    charge until its point is more than ``reflect_lag_s`` younger
    (``live_charges``). So a busy Galaxy's charges are read back only for
    the minutes the figures cannot show yet, not for all of
    ``inflight.max_age_s``. None: no destination would be scored."""
    i = bisect_left(live_points, now - max_metrics_age_s)
    return live_points[i] - reflect_lag_s if i < len(live_points) else None


def queued_weight(d: DestinationFigures, c: Charge) -> float:
    """How many of this destination's typical jobs a charged job weighs in
    its queue: its core-seconds over a typical running job's (busy cores /
    jobs running x median run time). 1 (one slot) when a figure is missing."""
    if c.run_s is None or not d.running or d.median_run_s is None or d.cpus_total is None or d.cpus_free is None:
        return 1.0
    typical = (d.cpus_total - d.cpus_free) / d.running * d.median_run_s
    return c.cores * c.run_s / typical if typical > 0 else 1.0


def charged_figures(d: DestinationFigures, charges: Sequence[Charge],
                    by_work: bool = False) -> tuple[float | None, float | None, float]:
    """(free cores, free memory, queued) as they will be once the charged
    jobs show: each takes free cores and memory if it fits them, else it
    joins the queue, as one job or (``by_work``) as ``queued_weight``
    typical jobs: the queue's drain time is what the wait estimate reads,
    and a queued 2 h, 16-core assembly delays the jobs behind it far more
    than a 40 s QC job."""
    cpus, mem, queued = d.cpus_free, d.mem_free_gb, d.queued or 0.0
    for c in charges:
        fits = (cpus is None or c.cores <= cpus) and (mem is None or c.mem <= mem)
        if fits and (cpus is not None or mem is not None):
            cpus = None if cpus is None else cpus - c.cores
            mem = None if mem is None else mem - c.mem
        else:
            queued += queued_weight(d, c) if by_work else 1.0
    return cpus, mem, queued
