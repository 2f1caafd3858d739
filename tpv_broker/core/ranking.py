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

import math
from itertools import repeat
from typing import Callable, Mapping, Sequence

import numpy as np

from tpv_broker.core.batch import Batch
from tpv_broker.core.columns import FIGURES, FRESH as _FRESH, OFFLINE as _OFFLINE, DestinationColumns, ToolColumns
from tpv_broker.core.inflight import charged_figures, live_charges, with_charges
from tpv_broker.core.inputs import CandidateLike, DatasetInput, JobFacts, candidate_column
from tpv_broker.core.models import Charge, DestinationFigures, RankView, ToolFigures
from tpv_broker.core.scoring import CandidateScore, ScoringModel, TermBreakdown
from tpv_broker.core.terms import TermInput, candidate_location, with_fallback
from tpv_broker.core.tool_ids import stats_field, tool_id_forms

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


class RankResult:
    """The order, and each candidate's place in it. ``placements`` (each
    with its group, score, reason and, on demand, breakdown) are built on
    first use: an answer needs only ``ids``."""

    def __init__(self, placements: list[Placement] | Callable[[], list[Placement]], degraded: bool,
                 snapshot_age_s: float | None, degraded_reason: str | None = None,
                 first_run_s: float | None = None, ids: list[str] | None = None,
                 first_scored: bool | None = None) -> None:
        """``placements``: the list, or a function that builds it, with
        ``ids`` (their order) and ``first_scored`` (is the first one
        scored?) given, so neither needs it built."""
        self.degraded = degraded
        self.snapshot_age_s = snapshot_age_s
        self.degraded_reason = degraded_reason
        # The job's expected run time on the destination ranked first (its
        # tool's median there, with fallbacks), for an in-flight charge by work.
        self.first_run_s = first_run_s
        if callable(placements):
            assert ids is not None and first_scored is not None
            self._placements: list[Placement] | None = None
            self._build = placements
            self._ids, self._first_scored = ids, first_scored
        else:
            self._placements = placements

    @property
    def placements(self) -> list[Placement]:
        if self._placements is None:
            self._placements = self._build()
        return self._placements

    @property
    def ids(self) -> list[str]:
        # Built placements may have been reordered (the simulator's policies do).
        return self._ids if self._placements is None else [p.id for p in self._placements]

    @property
    def first_scored_id(self) -> str | None:
        """The id ranked first if it was ranked on live figures, else None."""
        if self._placements is None:
            return self._ids[0] if self._first_scored else None
        first = self._placements[0] if self._placements else None
        return first.id if first is not None and first.group == SCORED else None

    def _fields(self) -> tuple[object, ...]:
        return (self.placements, self.degraded, self.snapshot_age_s, self.degraded_reason, self.first_run_s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RankResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"RankResult(ids={self.ids!r}, degraded={self.degraded!r}, snapshot_age_s={self.snapshot_age_s!r}, "
                f"degraded_reason={self.degraded_reason!r}, first_run_s={self.first_run_s!r})")

    def replace(self, **changes: object) -> RankResult:
        """A copy with some of the constructor's arguments changed."""
        args: dict[str, object] = dict(placements=self.placements, degraded=self.degraded,
                                       snapshot_age_s=self.snapshot_age_s, degraded_reason=self.degraded_reason,
                                       first_run_s=self.first_run_s)
        return RankResult(**(args | changes))  # type: ignore[arg-type]


def _tpv_key(index: int, tpv_score: float | None) -> tuple[float, int]:
    return (-(tpv_score or 0.0), index)


def tpv_order(candidates: Sequence[CandidateLike], reason: str) -> list[Placement]:
    """TPV's default ranking: highest tag score first, input order on ties."""
    ids, scores = candidate_column(candidates, "id"), candidate_column(candidates, "tpv_score")
    order = sorted(range(len(ids)), key=lambda i: _tpv_key(i, scores[i]))
    return [Placement(ids[i], TPV_ORDER, reason) for i in order]


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


_NUMBER_TYPES = frozenset((float, int))
_DICT = frozenset((dict,))


def _coordinates(candidates: Sequence[CandidateLike], ids: list[str], positions: np.ndarray,
                 locations: Mapping[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's (latitude, longitude) as ``candidate_location`` says,
    NaN if unknown. This runs for every candidate: when every context is a
    JSON object with two plain numbers (what TPV sends), they are read and
    range-checked as arrays; anything else one candidate at a time."""
    every = len(positions) == len(candidates)
    chosen = positions.tolist()
    column = candidate_column(candidates, "context")
    chosen_contexts = column if every else [column[i] for i in chosen]
    # Exact types (a bool is an int; a dict subclass may read differently),
    # checked a whole column at a time: map() and set() loop in C.
    if set(map(type, chosen_contexts)) <= _DICT:
        lats = list(map(dict.get, chosen_contexts, repeat("latitude")))
        lons = list(map(dict.get, chosen_contexts, repeat("longitude")))
        if {*map(type, lats), *map(type, lons)} <= _NUMBER_TYPES:
            try:
                lat, lon = np.array(lats, dtype=np.float64), np.array(lons, dtype=np.float64)
            except OverflowError:  # an integer beyond any float: out of range anyway
                pass
            else:
                # NaN and infinities fail the bounds too.
                unknown = ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))
                lat[unknown] = lon[unknown] = math.nan
                if locations:
                    for k, i in enumerate(chosen):
                        where = locations.get(ids[i])
                        if where is not None:
                            lat[k], lon[k] = where
                return lat, lon
    nan = (math.nan, math.nan)
    where = [candidate_location(candidates[i], locations.get(ids[i]) if locations else None) or nan for i in chosen]
    return (np.array([w[0] for w in where], dtype=np.float64), np.array([w[1] for w in where], dtype=np.float64))


# From this many candidates on, scoring them all at once is cheaper than one
# at a time: about 120 us a request (numpy's fixed cost per call, times
# some eighty calls) plus 0.7 us a candidate, against 9 us a candidate one
# at a time (bench/profile_rank.py --core --candidates N, both ways).
BATCH_FROM = 15
_LIVE_AT = FIGURES.index("live_at")


def rank(
    candidates: Sequence[CandidateLike],
    job: JobFacts,
    datasets: Sequence[DatasetInput],
    view: RankView,
    now: float,
    model: ScoringModel,
    max_snapshot_age_s: float,
    locations: Mapping[str, tuple[float, float]],
    reflect_lag_s: float = 0.0,
    charge_by_work: bool = False,
    batch_from: int | None = None,
) -> RankResult:
    """``locations``: configured destination coordinates (id -> (lat, lon));
    a candidate's TPV context fills the gaps. In-flight charges in the view
    that a destination's figures cannot show yet (``reflect_lag_s``) are
    added to its figures before scoring (``charge_by_work``: see
    ``inflight.with_charges``).

    A few candidates are scored one at a time; from ``batch_from``
    (default ``BATCH_FROM``) on, all
    at once (``batch.py``), their figures rows of the snapshot's columns
    (``view.columns``, built here if the view has none). The two agree
    (tests/test_rank_batch.py)."""
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
    ids = candidate_column(candidates, "id")
    in_flight = live_charges(view.charges, view.destinations, reflect_lag_s, set(ids)) if view.charges else {}
    if len(candidates) >= (BATCH_FROM if batch_from is None else batch_from):
        return _score_all_at_once(candidates, ids, job, datasets, view, now, model, locations, levels, in_flight,
                                  charge_by_work, age)
    return _score_one_at_a_time(candidates, job, datasets, view, now, model, locations, levels, in_flight,
                                charge_by_work, age)


def _score_one_at_a_time(
    candidates: Sequence[CandidateLike], job: JobFacts, datasets: Sequence[DatasetInput], view: RankView, now: float,
    model: ScoringModel, locations: Mapping[str, tuple[float, float]], levels: list[tuple[str, str]],
    in_flight: Mapping[str, list[Charge]], charge_by_work: bool, age: float,
) -> RankResult:
    keyed: list[tuple[tuple[float, ...], Placement]] = []
    inputs: dict[str, TermInput] = {}
    for index, cand in enumerate(candidates):
        figures = view.destinations.get(cand.id)
        unscored = _unscored_group(figures, now, model.max_metrics_age_s)
        if unscored is not None:
            group, reason = unscored
            keyed.append(((_GROUP_RANK[group], *_tpv_key(index, cand.tpv_score)), Placement(cand.id, group, reason)))
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
        keyed.append(((0, -total, *_tpv_key(index, cand.tpv_score)),
                      Placement.scored(cand.id, total, _explainer(model, x, len(charges)))))
    keyed.sort(key=lambda kp: kp[0])
    placements = [p for _, p in keyed]
    first = inputs.get(placements[0].id) if placements and placements[0].group == SCORED else None
    run_s = (with_fallback(first, "median_run_s", first.figures.median_run_s, first.defaults.run_s)[0]
             if first is not None else None)
    return RankResult(placements, False, age, first_run_s=run_s)


def _score_all_at_once(
    candidates: Sequence[CandidateLike], ids: list[str], job: JobFacts, datasets: Sequence[DatasetInput],
    view: RankView, now: float, model: ScoringModel, locations: Mapping[str, tuple[float, float]],
    levels: list[tuple[str, str]], in_flight: Mapping[str, list[Charge]], charge_by_work: bool, age: float,
) -> RankResult:
    """``ids``: the candidates' ids, in their order."""
    n = len(candidates)
    cols = view.columns if view.columns is not None else DestinationColumns.build(view.destinations)
    rows = cols.rows(ids)
    # The groups, as _unscored_group tells them one candidate at a time;
    # only staleness depends on the request (its time).
    base = cols.group[rows]
    live_at = cols.matrix[_LIVE_AT][rows]
    scored = (base == _FRESH) & ~(now - live_at > model.max_metrics_age_s)
    positions = scored.nonzero()[0]
    srows = rows[positions]

    tool_columns = []
    for _, field in levels:
        per_dest = view.tool_stats.get(field)
        tool_columns.append((view.tool_columns.get(field) or ToolColumns.build(per_dest, cols)) if per_dest else None)
    times = cols.tool_times(tool_columns, model.defaults.queue_s, model.defaults.run_s)
    figure = dict(zip(FIGURES, cols.matrix[:, srows]))

    # In-flight charges change the charged destinations' figures (a few rows).
    charged: dict[int, list[Charge]] = {}
    if in_flight:
        at = dict(zip(map(ids.__getitem__, positions.tolist()), range(len(positions))))
        for dest_id, charges in in_flight.items():
            k = at.get(dest_id)
            if k is None:
                continue
            charged[k] = charges
            values = charged_figures(cols.figures[srows[k]], charges, charge_by_work)
            for name, value in zip(("cpus_free", "mem_free_gb", "queued"), values):
                figure[name][k] = math.nan if value is None else value

    inputs: dict[int, TermInput] = {}

    def term_input(k: int) -> TermInput:
        """The one-candidate input of the k-th scored candidate (explain, and
        what a batch cannot hold)."""
        x = inputs.get(k)
        if x is None:
            cand = candidates[positions[k]]
            figures = with_charges(cols.figures[srows[k]], charged.get(k, ()), charge_by_work)
            x = inputs[k] = TermInput(job=job, candidate=cand, figures=figures,
                                      tool_stats=tool_stats_for(view, levels, cand.id),
                                      location=candidate_location(cand, locations.get(cand.id)),
                                      datasets=datasets, defaults=model.defaults)
        return x

    located = any(ds.location is not None for ds in datasets)
    lat, lon = (_coordinates(candidates, ids, positions, locations) if located
                else (np.full(len(positions), math.nan),) * 2)
    # None (no tag score) becomes NaN.
    tpv = np.array(candidate_column(candidates, "tpv_score"), dtype=np.float64)
    batch = Batch(job=job, size=len(positions), cpus_free=figure["cpus_free"], mem_free_gb=figure["mem_free_gb"],
                  gpus_free=figure["gpus_free"], queued=figure["queued"], running=figure["running"],
                  median_queue_s=times.median_queue_s[srows], median_run_s=times.median_run_s[srows],
                  destination_run_s=times.destination_run_s[srows], tpv_score=tpv[positions],
                  latitude=lat, longitude=lon, datasets=datasets, input=term_input,
                  shaped=cols.shaped[srows], slot_shapes=cols.shapes.of_rows(srows))
    totals = model.totals(batch) if len(positions) else np.zeros(0)

    # TPV's order within a group and on equal scores: tag score, then input order.
    group_rank = np.where(scored, 0, np.where(base == _OFFLINE, _GROUP_RANK[OFFLINE], _GROUP_RANK[NO_METRICS]))
    by_total = np.zeros(n)
    by_total[positions] = -totals
    order = np.lexsort((np.arange(n), -np.where(np.isnan(tpv), 0.0, tpv), by_total, group_rank)).tolist()
    # Candidate index -> its index in the batch (-1: not scored).
    in_batch = np.full(n, -1)
    in_batch[positions] = np.arange(len(positions))
    first_k = int(in_batch[order[0]]) if n and in_batch[order[0]] >= 0 else None
    # The first's run time as with_fallback gives it (the same floats),
    # without building its one-candidate input.
    run_s = float(batch.median_run_s[first_k]) if first_k is not None else None

    def placements() -> list[Placement]:
        out = []
        batch_index = in_batch.tolist()
        for i in order:
            k = batch_index[i]
            if k >= 0:
                out.append(Placement.scored(ids[i], float(totals[k]),
                                            _explainer(model, term_input(k), len(charged.get(k, ())))))
                continue
            f = cols.figures[rows[i]] if rows[i] != cols.absent else None
            group, reason = _unscored_group(f, now, model.max_metrics_age_s) or (NO_METRICS, "")
            out.append(Placement(ids[i], group, reason))
        return out

    return RankResult(placements, False, age, first_run_s=run_s, ids=[ids[i] for i in order],
                      first_scored=first_k is not None)
