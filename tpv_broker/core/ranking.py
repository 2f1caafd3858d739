"""The rank core: a pure function of (candidates, job, datasets, snapshot
view with its in-flight charges, now, scoring model) to the ordered result
with a breakdown and a reason per candidate. No I/O, no clock.

Order:
1. destinations with fresh live metrics that are not reported offline, by
   their weighted score (``scoring.py``), best first;
2. destinations without live metrics, or whose metrics are older than
   ``scoring.max_metrics_age_s``, in TPV's order;
3. destinations reported offline, excluded for failing their jobs or
   drained (destination health, ``health.py``), in TPV's order. One on
   probation is scored for the jobs that are its probes (``probe_draw``
   under its probe share), excluded for the others; a degraded one's score
   is multiplied by its health's ``score_factor``.

TPV's order is tag score (highest first), then input order; it also breaks
ties of equal score. Every candidate comes back exactly once; nothing is ever
added. Without a usable snapshot (none, or older than the limit) the whole
answer is TPV's order, marked degraded.

All scored candidates are scored at once, from the snapshot's columns
(``columns.py``): one path whatever their number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tpv_broker.core.batch import Batch
from tpv_broker.core.charges import ChargeLoad
from tpv_broker.core.columns import FIGURES, GROUPS, DestinationColumns
from tpv_broker.core.inflight import LoadColumns, charged_columns, counted_loads
from tpv_broker.core.inputs import Candidate, Candidates, DatasetInput, JobFacts
from tpv_broker.core.models import DestinationFigures, DestinationHealth, RankView
from tpv_broker.core.policy import Cap, CapState, SitePolicy, StagingTable, cap_state
from tpv_broker.core.result import DegradedReason, Group, Placement, RankResult
from tpv_broker.core.scoring import Scores, ScoringModel
from tpv_broker.core.tool_ids import stats_field, tool_id_forms

_SCORED, _STALE, _EXCLUDED, _AT_CAP = (GROUPS.index(g) for g in (Group.SCORED, Group.STALE, Group.EXCLUDED,
                                                                 Group.AT_CAP))
NO_POLICY = SitePolicy()
# Each group code's place in the answer (Group.place).
_PLACE = np.array([g.place for g in GROUPS])
_CPUS, _MEM, _GPUS, _QUEUED, _RUNNING, _LIVE_AT, _RUN, _CPUS_TOTAL, _CARBON = (
    FIGURES.index(f) for f in ("cpus_free", "mem_free_gb", "gpus_free", "queued", "running", "live_at", "median_run_s",
                               "cpus_total", "carbon_intensity"))


def tpv_order(candidates: Sequence[Candidate] | Candidates, code: DegradedReason, why: str,
              reason: str, snapshot_age_s: float | None = None) -> RankResult:
    """A degraded answer: TPV's own ranking, highest tag score first, input
    order on ties. ``why`` is the answer's degraded reason, ``reason`` each
    placement's."""
    cands = Candidates.of(candidates)
    order = _order(np.zeros(len(cands), dtype=np.intp), np.zeros(len(cands)), cands.tpv_scores)
    ids = [cands.ids[i] for i in order]
    return RankResult(ids, snapshot_age_s, lambda: [Placement(i, Group.TPV_ORDER, reason) for i in ids],
                      code, why)


def _order(place: np.ndarray, minus_total: np.ndarray, tpv_scores: Sequence[float | None]) -> list[int]:
    """Candidate indexes, best first: by group, then score, then TPV's order
    (tag score, then input order)."""
    tpv = np.array(tpv_scores, dtype=np.float64)  # None becomes NaN
    by_tag = -np.where(np.isnan(tpv), 0.0, tpv)
    result: list[int] = np.lexsort((np.arange(len(place)), by_tag, minus_total, place)).tolist()
    return result


def rank(
    candidates: Sequence[Candidate] | Candidates,
    job: JobFacts,
    datasets: Sequence[DatasetInput],
    view: RankView,
    now: float,
    model: ScoringModel,
    max_snapshot_age_s: float,
    locations: Mapping[str, tuple[float, float]],
    charge_max_age_s: float = math.inf,
    charge_by_work: bool = False,
    probe_draw: float = 1.0,
    policy: SitePolicy = NO_POLICY,
) -> RankResult:
    """``locations``: configured destination coordinates (id -> (lat, lon));
    a candidate's TPV context fills the gaps. The in-flight charges in the
    view are added to their destinations' figures before scoring, but for
    those older than ``charge_max_age_s`` and the job's own
    (``inflight.counted_loads``; ``charge_by_work``: see
    ``inflight.charged_figures``). ``view.columns``: the snapshot's figures
    as columns, when the caller keeps them per snapshot; built here if not.
    ``probe_draw``: the job's draw in [0, 1) (``health.probe_draw``): it is
    a probe of a destination on probation if under its probe share (1.0:
    a probe of none). ``policy``: caps by destination and the staging
    table (``policy.py``)."""
    cands = Candidates.of(candidates)
    meta = view.meta
    if meta is None:
        return tpv_order(cands, DegradedReason.NO_SNAPSHOT, "no snapshot in Redis yet", "TPV order: no snapshot")
    age = meta.age_s(now)
    if age > max_snapshot_age_s:
        why = f"snapshot is {age:.0f} s old (limit {max_snapshot_age_s:.0f} s)"
        if meta.stale_reason:
            why += f"; collector: {meta.stale_reason}"
        return tpv_order(cands, DegradedReason.STALE_SNAPSHOT, why, f"TPV order: {why}", age)

    cols: DestinationColumns = view.columns if view.columns is not None else DestinationColumns.build(
        view.destinations)
    ids = cands.ids
    rows = cols.rows(cands.keys)
    group = cols.group[rows]
    group = np.where((group == _SCORED) & (now - cols.matrix[_LIVE_AT][rows] > model.max_metrics_age_s),
                     _STALE, group)
    # NaN (not on probation) compares false: only rows on probation change.
    group = np.where((group == _SCORED) & (cols.probe_share[rows] <= probe_draw), _EXCLUDED, group)
    positions = (group == _SCORED).nonzero()[0]
    in_flight = counted_loads(view.charges, now, charge_max_age_s)
    batch, charges = _batch(cands, positions, rows[positions], cols, job, datasets, view, model, locations,
                            in_flight, charge_by_work, policy.staging)
    caps = [policy.caps.get(cands.keys[i]) for i in positions.tolist()] if policy.caps else []
    capped = None
    if any(c is not None for c in caps):
        capped = _caps(caps, cols, rows[positions], batch, charges, charge_by_work)
        batch.score_factor = batch.score_factor * capped.factor
        group[positions[capped.over]] = _AT_CAP
    factor = batch.score_factor
    scores = model.evaluate(batch)

    minus_total = np.zeros(len(ids))
    minus_total[positions] = -scores.totals * factor
    order = _order(_PLACE[group], minus_total, cands.tpv_scores)
    # Candidate index -> its index in the batch (-1: not scored).
    in_batch = np.full(len(ids), -1)
    in_batch[positions] = np.arange(len(positions))
    if scores.tie_key is not None:
        order = _break_near_ties(order, in_batch, group, scores.tie_key)
    first_k = int(in_batch[order[0]]) if order else -1

    def placements() -> list[Placement]:
        out = []
        for i in order:
            k = int(in_batch[i])
            figures = cols.figures_at(rows[i])
            health = figures.health if figures is not None else None
            if k >= 0:
                cap = capped.explain(k, caps) if capped is not None else None
                words = capped.words(k, caps) if cap is not None and capped is not None else ""
                at_cap = bool(capped.over[k]) if capped is not None else False
                out.append(_scored(ids[i], scores, k, model, charges[k].count if k in charges else 0,
                                   float(factor[k]), health, cap, words, at_cap))
            else:
                g = GROUPS[group[i]]
                reason = _unscored_reason(g, figures, now, model.max_metrics_age_s)
                out.append(Placement(ids[i], g, reason, health=health))
        return out

    return RankResult([ids[i] for i in order], age, placements,
                      first_run_s=float(batch.median_run_s[first_k]) if first_k >= 0 else None,
                      first_scored=first_k >= 0)


def _break_near_ties(order: list[int], in_batch: np.ndarray, group: np.ndarray, key: np.ndarray) -> list[int]:
    """The scored candidates in the near-tie band (a key that is not NaN)
    ordered by their key among the places they hold; every other candidate
    keeps its place."""
    slots = [j for j, i in enumerate(order) if in_batch[i] >= 0 and group[i] == _SCORED
             and not np.isnan(key[in_batch[i]])]
    if len(slots) < 2:
        return order
    # By key; equal keys keep the order they had.
    band = sorted(slots, key=lambda j: (float(key[in_batch[order[j]]]), j))
    out = list(order)
    for j, b in zip(slots, band, strict=True):
        out[j] = order[b]
    return out


def _caps(caps: Sequence[Cap | None], cols: DestinationColumns, rows: np.ndarray, batch: Batch,
          charges: Mapping[int, ChargeLoad], charge_by_work: bool) -> CapState:
    """The scored candidates' use of their caps. Caps count jobs: when the
    queue is charged in typical jobs' work (``charge_by_work``), the queue
    the caps see is charged in jobs."""
    charged = np.array([charges[k].count if k in charges else 0.0 for k in range(batch.size)])
    queued = batch.queued
    if charge_by_work and charges:
        before = cols.matrix[:, rows]
        loads = LoadColumns.of([charges.get(k) for k in range(batch.size)])
        queued = charged_columns(before[_CPUS], before[_MEM], before[_QUEUED], before[_RUNNING], before[_CPUS_TOTAL],
                                 before[_RUN], loads, by_work=False)[2]
    return cap_state(caps, cols.matrix[_QUEUED][rows], queued, batch.running, charged)


def _batch(cands: Candidates, positions: np.ndarray, rows: np.ndarray, cols: DestinationColumns, job: JobFacts,
           datasets: Sequence[DatasetInput], view: RankView, model: ScoringModel,
           locations: Mapping[str, tuple[float, float]], in_flight: Mapping[str, ChargeLoad],
           charge_by_work: bool, staging: StagingTable | None) -> tuple[Batch, dict[int, ChargeLoad]]:
    """The scored candidates' figures (``rows`` of the columns), with the
    in-flight charges applied; and the charges of each (by batch index)."""
    levels = [(level, stats_field(level, form)) for level, form in tool_id_forms(job.tool_id)]
    times = cols.tool_times(levels, view.tool_stats, model.defaults.queue_s, model.defaults.run_s)
    figures = cols.matrix[:, rows]  # a copy: the charges below change it
    chosen = positions.tolist()
    ids = [cands.ids[i] for i in chosen]
    # The snapshot's ids: the charges and config's coordinates are keyed by them.
    keys = [cands.keys[i] for i in chosen]
    loads = [in_flight.get(dest_id) for dest_id in keys] if in_flight else []
    charges = {k: load for k, load in enumerate(loads) if load is not None}
    if charges:
        figures[_CPUS], figures[_MEM], figures[_QUEUED] = charged_columns(
            figures[_CPUS], figures[_MEM], figures[_QUEUED], figures[_RUNNING], figures[_CPUS_TOTAL], figures[_RUN],
            LoadColumns.of(loads), charge_by_work)
    if datasets:
        lat, lon = _coordinates([cands.contexts[i] for i in chosen], [locations.get(d) for d in keys])
    else:  # data locality and staging are neutral: no need to know where the candidates are
        lat = lon = np.full(len(ids), math.nan)
    tpv = np.array([cands.tpv_scores[i] for i in chosen], dtype=np.float64)
    staging_s, staging_counted_s = (staging.seconds(datasets, keys, lat, lon) if staging is not None
                                    else (np.zeros(len(ids)), np.zeros(len(ids))))
    batch = Batch(
        job=job, ids=ids, cpus_free=figures[_CPUS], mem_free_gb=figures[_MEM], gpus_free=figures[_GPUS],
        queued=figures[_QUEUED], running=figures[_RUNNING],
        median_queue_s=times.median_queue_s[rows], queue_level=times.queue_level[rows],
        median_run_s=times.median_run_s[rows], run_level=times.run_level[rows],
        destination_run_s=times.destination_run_s[rows], level_names=times.level_names, tpv_score=tpv,
        latitude=lat, longitude=lon, datasets=datasets,
        staging_s=staging_s, staging_counted_s=staging_counted_s,
        carbon_intensity=figures[_CARBON], shaped=cols.shaped[rows], slot_shapes=cols.shapes.of_rows(rows),
        score_factor=cols.score_factor[rows],
    )
    return batch, charges


def _coordinates(contexts: list[Any], configured: list[tuple[float, float] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's latitude and longitude, NaN where unknown: config's
    coordinates win; else the TPV context's, when both are plain numbers in
    range."""
    lat, lon = _context_column(contexts, "latitude", 90), _context_column(contexts, "longitude", 180)
    unknown = np.isnan(lat) | np.isnan(lon)
    lat[unknown] = lon[unknown] = math.nan
    for k, where in enumerate(configured):
        if where is not None:
            lat[k], lon[k] = where
    return lat, lon


def _context_column(contexts: list[Any], key: str, limit: float) -> np.ndarray:
    values = [c.get(key) if isinstance(c, dict) else None for c in contexts]
    # Exact types: a bool is an int and means nothing here. An int is
    # checked before it becomes a float: a request may hold any JSON number,
    # and 10**400 has no float. NaN and infinities fail the bound below.
    out = np.array([v if type(v) is float or (type(v) is int and -limit <= v <= limit) else math.nan
                    for v in values], dtype=np.float64)
    out[~(np.abs(out) <= limit)] = math.nan
    return out


def _scored(dest_id: str, scores: Scores, k: int, model: ScoringModel, charges: int, factor: float,
            health: DestinationHealth | None, cap: dict[str, Any] | None, cap_words: str,
            at_cap: bool) -> Placement:
    terms = model.breakdown(scores, k)
    total = float(scores.totals[k]) * factor
    reason = f"score {total * 100:.1f}: " + ", ".join(t.summary for t in terms if t.summary)
    if charges:
        reason += f" ({charges} placed here since its figures)"
    if health is not None and health.state == "degraded":
        reason += f" (health x {health.score_factor:g}: {health.reason})"
    elif health is not None and health.state == "probation":
        reason += f" (this job is one of its probes: {health.reason})"
    group = Group.SCORED
    if at_cap:
        group = Group.AT_CAP
        reason = f"at its cap, after those under theirs: {cap_words}; {reason}"
    elif cap is not None and cap["score_factor"] < 1.0:
        reason += f" (near its cap, x {cap['score_factor']:g}: {cap_words})"
    return Placement(dest_id, group, reason, total, terms, health, cap)


def _unscored_reason(group: Group, figures: DestinationFigures | None, now: float, max_age: float) -> str:
    if group is Group.OFFLINE:
        return "reported offline"
    if group is Group.EXCLUDED:
        health = figures.health if figures is not None else None
        if health is not None and health.state == "probation":
            return f"on probation, and this job is not one of its probes: {health.reason}"
        return health.reason if health is not None else "excluded"
    if group is Group.STALE:
        assert figures is not None and figures.live_at is not None
        return f"metrics {now - figures.live_at:.0f} s old (limit {max_age:.0f} s)"
    if figures is None or not figures.sources:
        return "no metrics for this destination"
    return "no live metrics (run-time statistics only)"
