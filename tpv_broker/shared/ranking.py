"""The rank core: a pure function of (candidates, job, datasets, snapshot
view, now, scoring model) to an ordered result with a breakdown and a reason
per candidate. No I/O, no clock.

Order:
1. destinations with fresh live metrics that are not reported offline, by
   their weighted score (``scoring.py``), best first;
2. destinations without live metrics, or whose metrics are older than
   ``scoring.max_metrics_age_s``, in TPV's order;
3. destinations reported offline, in TPV's order.

TPV's order is tag score (highest first), then input order; it also breaks
ties of equal score. Every candidate comes back exactly once; nothing is ever
added. Without a usable snapshot (none, or older than the limit) the whole
answer is TPV's order, marked degraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .inflight import live_charges, with_charges
from .inputs import Candidate, DatasetInput, JobFacts
from .models import DestinationFigures, RankView, ToolFigures
from .scoring import CandidateScore, ScoringModel, TermBreakdown
from .terms import TermInput, candidate_location, with_fallback
from .tool_ids import stats_field, tool_id_forms

SCORED, NO_METRICS, STALE, OFFLINE, TPV_ORDER = "scored", "no_metrics", "stale", "offline", "tpv_order"
_GROUP_RANK = {SCORED: 0, NO_METRICS: 1, STALE: 1, OFFLINE: 2, TPV_ORDER: 0}


class Placement:
    """One candidate's place: its group, total score and the reason. A
    scored candidate's per-term breakdown and reason are built on first use
    (explain, the CLI), not on every request: the answer needs the order only."""

    __slots__ = ("id", "group", "total", "_reason", "_terms", "_explain")

    def __init__(self, id: str, group: str, reason: str, total: float | None = None,
                 terms: tuple[TermBreakdown, ...] = ()) -> None:
        self.id, self.group, self.total = id, group, total
        self._reason, self._terms = reason, terms
        self._explain: Callable[[], tuple[CandidateScore, str]] | None = None

    @classmethod
    def scored(cls, id: str, total: float, explain: Callable[[], tuple[CandidateScore, str]]) -> Placement:
        """``explain`` returns the breakdown and the reason, when first asked."""
        p = cls(id, SCORED, "", total)
        p._explain = explain
        return p

    def _build(self) -> None:
        if self._explain is not None:
            score, self._reason = self._explain()
            self._terms, self._explain = score.terms, None

    @property
    def reason(self) -> str:
        self._build()
        return self._reason

    @property
    def terms(self) -> tuple[TermBreakdown, ...]:
        self._build()
        return self._terms

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Placement):
            return NotImplemented
        return (self.id, self.group, self.total, self.reason, self.terms) == (
            other.id, other.group, other.total, other.reason, other.terms)

    def __repr__(self) -> str:
        return f"Placement(id={self.id!r}, group={self.group!r}, total={self.total!r})"


@dataclass(frozen=True)
class RankResult:
    placements: list[Placement]
    degraded: bool
    snapshot_age_s: float | None
    degraded_reason: str | None = None
    # The job's expected run time on the destination ranked first (its
    # tool's median there, with fallbacks), for an in-flight charge by work.
    first_run_s: float | None = None

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.placements]


def _tpv_key(index: int, candidate: Candidate) -> tuple[float, int]:
    return (-(candidate.tpv_score or 0.0), index)


def tpv_order(candidates: Sequence[Candidate], reason: str) -> list[Placement]:
    """TPV's default ranking: highest tag score first, input order on ties."""
    order = sorted(range(len(candidates)), key=lambda i: _tpv_key(i, candidates[i]))
    return [Placement(candidates[i].id, TPV_ORDER, reason) for i in order]


def tool_stats_for(
    view: RankView, levels: Sequence[tuple[str, str]], dest_id: str
) -> list[tuple[str, ToolFigures]]:
    """This destination's figures for the tool, most specific level first.
    ``levels``: (level, hash field) pairs from ``tool_id_forms``."""
    out = []
    for level, field in levels:
        per_dest = view.tool_stats.get(field)
        if per_dest and dest_id in per_dest:
            out.append((level, per_dest[dest_id]))
    return out


def _unscored_group(figures: DestinationFigures | None, now: float, max_age: float) -> tuple[str, str] | None:
    # Config-only destinations are published with no measured figures.
    if figures is None or not figures.sources:
        return NO_METRICS, "no metrics for this destination"
    if figures.status == "offline":
        return OFFLINE, "reported offline"
    if figures.live_at is None:
        return NO_METRICS, "no live metrics (run-time statistics only)"
    age = now - figures.live_at
    if age > max_age:
        return STALE, f"metrics {age:.0f} s old (limit {max_age:.0f} s)"
    return None


def _explainer(model: ScoringModel, x: TermInput, charges: int) -> Callable[[], tuple[CandidateScore, str]]:
    def explain() -> tuple[CandidateScore, str]:
        score = model.score(x)
        reason = f"score {score.total * 100:.1f}: " + ", ".join(t.summary for t in score.terms if t.summary)
        if charges:
            reason += f" ({charges} placed here since its figures)"
        return score, reason

    return explain


def rank(
    candidates: Sequence[Candidate],
    job: JobFacts,
    datasets: Sequence[DatasetInput],
    view: RankView,
    now: float,
    model: ScoringModel,
    max_snapshot_age_s: float,
    locations: Mapping[str, tuple[float, float]],
    reflect_lag_s: float = 0.0,
    charge_by_work: bool = False,
) -> RankResult:
    """``locations``: configured destination coordinates (id -> (lat, lon));
    a candidate's TPV context fills the gaps. In-flight charges in the view
    that a destination's figures cannot show yet (``reflect_lag_s``) are
    added to its figures before scoring (``charge_by_work``: see
    ``inflight.with_charges``)."""
    meta = view.meta
    if meta is None:
        return RankResult(tpv_order(candidates, "TPV order: no snapshot"), True, None, "no snapshot in Redis yet")
    age = meta.age_s(now)
    if age > max_snapshot_age_s:
        why = f"snapshot is {age:.0f} s old (limit {max_snapshot_age_s:.0f} s)"
        if meta.stale_reason:
            why += f"; collector: {meta.stale_reason}"
        return RankResult(tpv_order(candidates, f"TPV order: {why}"), True, age, why)

    levels = [(level, stats_field(level, form)) for level, form in tool_id_forms(job.tool_id)]
    in_flight = live_charges(view.charges, view.destinations, reflect_lag_s) if view.charges else {}
    keyed: list[tuple[tuple[float, ...], Placement]] = []
    inputs: dict[str, TermInput] = {}
    for index, cand in enumerate(candidates):
        figures = view.destinations.get(cand.id)
        unscored = _unscored_group(figures, now, model.max_metrics_age_s)
        if unscored is not None:
            group, reason = unscored
            keyed.append(((_GROUP_RANK[group], *_tpv_key(index, cand)), Placement(cand.id, group, reason)))
            continue
        assert figures is not None
        charges = in_flight.get(cand.id, ())
        figures = with_charges(figures, charges, charge_by_work)
        x = TermInput(
            job=job,
            candidate=cand,
            figures=figures,
            tool_stats=tool_stats_for(view, levels, cand.id),
            location=candidate_location(cand, locations.get(cand.id)),
            datasets=datasets,
            defaults=model.defaults,
        )
        inputs[cand.id] = x
        total = model.total(x)
        keyed.append(((0, -total, *_tpv_key(index, cand)), Placement.scored(cand.id, total, _explainer(model, x, len(charges)))))
    keyed.sort(key=lambda kp: kp[0])
    placements = [p for _, p in keyed]
    first = inputs.get(placements[0].id) if placements and placements[0].group == SCORED else None
    run_s = (with_fallback(first, "median_run_s", first.figures.median_run_s, first.defaults.run_s)[0]
             if first is not None else None)
    return RankResult(placements, False, age, first_run_s=run_s)
