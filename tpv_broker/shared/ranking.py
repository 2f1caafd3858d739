"""The rank core: a pure function of (candidates, job, snapshot view, now)
to an ordered result with a reason per candidate. No I/O, no clock.

Until the scoring model lands, the order is this documented rule:

1. destinations with metrics that are not reported offline, ordered by
   whether the job fits their free capacity right now (fits first), then by
   fewest queued jobs, then by most free cores;
2. destinations reported offline;
3. destinations without metrics, in input order.

Ties keep input order. Every candidate comes back exactly once; nothing is
ever added. Without a usable snapshot (none, or older than the limit) the
answer is TPV's own order (tag score, then input order) marked degraded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .models import DestinationFigures, RankView


@dataclass(frozen=True)
class Candidate:
    id: str
    tpv_score: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobFacts:
    tool_id: str
    cores: float = 1.0
    mem: float = 0.0  # GB, as TPV
    gpus: float = 0.0
    id: str | None = None


@dataclass(frozen=True)
class Placement:
    id: str
    reason: str
    fits_now: bool | None = None


@dataclass(frozen=True)
class RankResult:
    placements: list[Placement]
    degraded: bool
    snapshot_age_s: float | None
    degraded_reason: str | None = None

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.placements]


def tpv_order(candidates: Sequence[Candidate], reason: str) -> list[Placement]:
    """TPV's default ranking: highest tag score first, input order on ties."""
    order = sorted(range(len(candidates)), key=lambda i: -(candidates[i].tpv_score or 0.0))
    return [Placement(candidates[i].id, reason) for i in order]


def fits_now(job: JobFacts, d: DestinationFigures) -> bool | None:
    """Does the job fit the destination's free capacity now? ``None`` when
    the metrics do not say (treated like a fit: unknown is not a refusal)."""
    checks: list[bool] = []
    if d.cpus_free is not None:
        checks.append(job.cores <= d.cpus_free)
    if d.mem_free_gb is not None:
        checks.append(job.mem <= d.mem_free_gb)
    if job.gpus > 0 and d.gpus_free is not None:
        checks.append(job.gpus <= d.gpus_free)
    if not checks:
        return None
    return all(checks)


def order_key(d: DestinationFigures) -> tuple[float, float]:
    """The job-independent part of the order: fewest queued, most free cores."""
    queued = d.queued if d.queued is not None else math.inf
    free = d.cpus_free if d.cpus_free is not None else 0.0
    return (queued, -free)


def rank(
    candidates: Sequence[Candidate],
    job: JobFacts,
    view: RankView,
    now: float,
    max_snapshot_age_s: float,
) -> RankResult:
    meta = view.meta
    if meta is None:
        return RankResult(tpv_order(candidates, "TPV order: no snapshot"), True, None, "no snapshot in Redis yet")
    age = meta.age_s(now)
    if age > max_snapshot_age_s:
        why = f"snapshot is {age:.0f} s old (limit {max_snapshot_age_s:.0f} s)"
        return RankResult(tpv_order(candidates, f"TPV order: {why}"), True, age, why)

    keyed: list[tuple[tuple[Any, ...], Placement]] = []
    for index, cand in enumerate(candidates):
        figures = view.destinations.get(cand.id)
        # Destinations only in config are published with no measured figures.
        if figures is None or not figures.sources:
            keyed.append(((2, index), Placement(cand.id, "no metrics for this destination")))
            continue
        if figures.status == "offline":
            keyed.append(((1, index), Placement(cand.id, "reported offline")))
            continue
        fit = fits_now(job, figures)
        queued, neg_free = order_key(figures)
        reason = (
            f"{'fits now' if fit else 'does not fit now' if fit is False else 'free capacity unknown'}, "
            f"{'unknown' if math.isinf(queued) else f'{queued:g}'} queued, {-neg_free:g} cores free"
        )
        keyed.append(((0, fit is False, queued, neg_free, index), Placement(cand.id, reason, fit)))
    keyed.sort(key=lambda kp: kp[0])
    return RankResult([p for _, p in keyed], False, age)
