"""Score terms: each a small pure unit behind one interface, shaped like the
Kubernetes scheduler's score plugins.

A term looks at one candidate (plain data in ``TermInput``) and returns a
score in [0, 1], 1 best, with the raw figures it used. Terms do not know
their weight: the combiner (``scoring.py``) owns weights and checks ranges.

Costs (seconds, km) become scores on a log scale (``cost_score``): 1 at zero
cost, 0 at ``cap`` and beyond, and every doubling of the cost loses the same
amount in between. Ratios are what matter when comparing sites (a 2 h queue
against a 4 h one is as real a difference as 2 min against 4 min), and a
log scale keeps them apart where a hyperbola would squash every long queue
to about zero. The score is per candidate: a destination's score never
depends on the other candidates, and a better figure always scores better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tpv_broker.core.batch import Batch, Distances, ShapeRows, cost_scores, or_zero
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import CandidateLike, DatasetInput, JobFacts
from tpv_broker.core.models import DestinationFigures, SlotShape, ToolFigures
from tpv_broker.core.tool_ids import DEFAULT, DESTINATION


@dataclass(frozen=True)
class Defaults:
    queue_s: float
    run_s: float


# Not frozen: one is built per candidate per request, and a frozen
# dataclass's __init__ costs twice as much. Terms never modify it.
@dataclass(slots=True)
class TermInput:
    job: JobFacts
    candidate: CandidateLike
    figures: DestinationFigures
    # This destination's figures for the job's tool, most specific level first.
    tool_stats: Sequence[tuple[str, ToolFigures]]
    location: tuple[float, float] | None
    datasets: Sequence[DatasetInput]
    defaults: Defaults


@dataclass(frozen=True)
class TermScore:
    score: float
    raw: dict[str, Any]
    # Which fallback level the figure came from (tool, ..., default), if any.
    level: str | None = None
    # A few words for the explanation, e.g. "waits ~25 min".
    summary: str = ""


class TermParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(ge=0, allow_inf_nan=False)


class SecondsParams(TermParams):
    """Parameters of a cost in seconds (see ``cost_score``)."""

    scale_s: float = Field(gt=0)
    cap_s: float = Field(gt=0)


class Term(Protocol):
    """``score`` returns the score with its explanation. A term may also
    define ``value(x) -> float``, the same score without the explanation,
    and ``values(batch) -> array``, ``value`` for many candidates at once
    (``batch.py``), for the rank path; the combiner falls back to
    ``value``, then to ``score(x).score``, one candidate at a time."""

    name: ClassVar[str]
    Params: ClassVar[type[TermParams]]

    def score(self, x: TermInput) -> TermScore: ...


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cost_score(cost: float, scale: float, cap: float) -> float:
    """``1 - ln(1 + cost/scale) / ln(1 + cap/scale)``, clipped to [0, 1].
    ``scale`` is the resolution: costs well below it count as about zero."""
    cost = max(0.0, cost)
    return max(0.0, 1.0 - math.log1p(cost / scale) / math.log1p(cap / scale))


def with_fallback(x: TermInput, attr: str, destination_value: float | None, default: float) -> tuple[float, str]:
    """Exact tool id, id without version, short id, the destination's
    all-tools figure, the configured default: the first that is known."""
    for level, figures in x.tool_stats:
        value = getattr(figures, attr)
        if value is not None:
            return value, level
    if destination_value is not None:
        return destination_value, DESTINATION
    return default, DEFAULT


class QueueWait:
    """Expected wait before the job starts: the tool's median queue time on
    this destination, plus the time to drain the part of today's queue that
    the free capacity cannot start at once: (queued + 1 - free slots) x
    typical run time / jobs running (Little's law). Free slots count jobs of
    this job's size; unknown capacity counts as none."""

    name: ClassVar[str] = "queue_wait"
    Params = SecondsParams

    def __init__(self, params: SecondsParams) -> None:
        self.scale_s, self.cap_s = params.scale_s, params.cap_s

    @staticmethod
    def _wait(x: TermInput) -> tuple[float, str, float, float, float, float]:
        """(expected wait, level, median queue, typical run, free slots, drain)"""
        d = x.figures
        median_queue, level = with_fallback(x, "median_queue_s", d.median_queue_s, x.defaults.queue_s)
        run = d.median_run_s if d.median_run_s is not None else x.defaults.run_s
        queued = d.queued or 0.0
        free_slots = free_slots_for(x.job, d)
        # The jobs queued ahead take the free slots first; only the rest of
        # the queue has to drain through the running jobs.
        ahead = max(0.0, queued + 1 - free_slots)
        drain = ahead * run / max(d.running or 0.0, 1.0) if ahead > 0 else 0.0
        return median_queue + drain, level, median_queue, run, free_slots, drain

    def value(self, x: TermInput) -> float:
        return cost_score(self._wait(x)[0], self.scale_s, self.cap_s)

    def values(self, b: Batch) -> np.ndarray:
        return cost_scores(b.derived(expected_waits), self.scale_s, self.cap_s)

    def score(self, x: TermInput) -> TermScore:
        d = x.figures
        wait, level, median_queue, run, free_slots, drain = self._wait(x)
        raw = {"expected_wait_s": round(wait, 1), "median_queue_s": median_queue, "queued": d.queued,
               "running": d.running, "free_slots": free_slots, "typical_run_s": run, "drain_s": round(drain, 1)}
        return TermScore(cost_score(wait, self.scale_s, self.cap_s), raw, level, f"waits ~{_duration(wait)} ({level})")


class RunTime:
    """The tool's median run time on this destination: a faster site wins."""

    name: ClassVar[str] = "run_time"
    Params = SecondsParams

    def __init__(self, params: SecondsParams) -> None:
        self.scale_s, self.cap_s = params.scale_s, params.cap_s

    def value(self, x: TermInput) -> float:
        run, _ = with_fallback(x, "median_run_s", x.figures.median_run_s, x.defaults.run_s)
        return cost_score(run, self.scale_s, self.cap_s)

    def values(self, b: Batch) -> np.ndarray:
        return cost_scores(b.median_run_s, self.scale_s, self.cap_s)

    def score(self, x: TermInput) -> TermScore:
        run, level = with_fallback(x, "median_run_s", x.figures.median_run_s, x.defaults.run_s)
        return TermScore(cost_score(run, self.scale_s, self.cap_s), {"median_run_s": run}, level, f"runs ~{_duration(run)} ({level})")


# A tiny job size (the API accepts any cores > 0) must not overflow floor().
_MAX_SLOTS = 1e9


def free_slots_for(job: JobFacts, d: DestinationFigures) -> float:
    """How many jobs of this size the free cores, memory and GPUs hold now.
    An unreported resource sets no limit here (fit_now is the term that
    treats it as unknown); nothing reported at all means no free slot."""
    slots: float | None = None
    for need, free in ((job.cores, d.cpus_free), (job.mem, d.mem_free_gb), (job.gpus, d.gpus_free)):
        if free is not None and need > 0:
            n = math.floor(min(_MAX_SLOTS, max(0.0, free) / need))
            slots = n if slots is None else min(slots, n)
    return 0.0 if slots is None else float(slots)


def free_slots_of(b: Batch) -> np.ndarray:
    """``free_slots_for`` for each candidate of a batch."""
    slots = np.full(b.size, np.nan)
    for need, free in ((b.job.cores, b.cpus_free), (b.job.mem, b.mem_free_gb), (b.job.gpus, b.gpus_free)):
        if need > 0:
            # NaN (unreported) stays NaN through these, and fmin skips it.
            slots = np.fmin(slots, np.floor(np.minimum(_MAX_SLOTS, np.maximum(0.0, free) / need)))
    return or_zero(slots)


def expected_waits(b: Batch) -> np.ndarray:
    """``QueueWait._wait``'s expected wait for each candidate of a batch."""
    queued = or_zero(b.queued)
    ahead = np.maximum(0.0, queued + 1 - free_slots_of(b))
    drain = np.where(ahead > 0, ahead * b.destination_run_s / np.maximum(or_zero(b.running), 1.0), 0.0)
    return b.median_queue_s + drain


def shape_fit(job: JobFacts, shapes: Sequence[SlotShape]) -> tuple[bool | None, float, SlotShape | None]:
    """Free slot shapes: the job fits now only if one free slot holds all of
    it (16 free cores in four 4-core slots do not run an 8-core job).
    (fits?, the best shape's smallest free/needed fraction, that shape).
    Fits is None when the best shape holds every reported resource but one
    the job needs is unreported (a GPU job, shapes without GPUs)."""
    best, best_shape, best_unknown = 0.0, None, False
    for shape in shapes:
        if shape.count <= 0:
            continue
        fractions, unknown = [], False
        for need, have in ((job.cores, shape.cpus), (job.mem, shape.mem_gb), (job.gpus, shape.gpus)):
            if need <= 0:
                continue
            if have is None:
                unknown = True
            else:
                fractions.append(min(1.0, max(0.0, have) / need))
        fraction = min(fractions) if fractions else 1.0
        # A shape known to hold the job beats one that might.
        if (fraction, not unknown) > (best, not best_unknown) or best_shape is None:
            best, best_shape, best_unknown = fraction, shape, unknown
    if best_shape is None:
        return False, 0.0, None
    if best < 1.0:
        return False, best, best_shape
    return (None if best_unknown else True), best, best_shape


def fit_fraction(job: JobFacts, d: DestinationFigures) -> tuple[bool | None, float | None, dict[str, Any]]:
    """(fits now?, the smallest free/needed fraction over known resources,
    raw figures). Fits is None when a resource the job needs is unreported:
    a GPU job on a site that reports no GPUs is not known to fit. With free
    slot shapes, the fraction is the best single slot's."""
    if d.slot_shapes is not None:
        fits, best, shape = shape_fit(job, d.slot_shapes)
        raw: dict[str, Any] = {"cores_needed": job.cores, "mem_gb_needed": job.mem, "free_slot_shapes": len(d.slot_shapes),
                               "best_shape": shape.model_dump(exclude_none=True) if shape is not None else None,
                               "fits": fits}
        if job.gpus > 0:
            raw["gpus_needed"] = job.gpus
        return fits, best, raw
    checks = [("cores", job.cores, d.cpus_free), ("mem_gb", job.mem, d.mem_free_gb)]
    if job.gpus > 0:
        checks.append(("gpus", job.gpus, d.gpus_free))
    raw = {}
    for what, need, free in checks:
        raw[f"{what}_needed"], raw[f"{what}_free"] = need, free
    fits, worst = _fits(checks)
    raw["fits"] = fits
    return fits, worst, raw


def _fits(checks: Sequence[tuple[str, float, float | None]]) -> tuple[bool | None, float | None]:
    fractions = []
    unknown = False
    for _, need, free in checks:
        if need <= 0:
            continue
        if free is None:
            unknown = True
        else:
            fractions.append(min(1.0, max(0.0, free) / need))
    worst = min(fractions) if fractions else None
    if worst is not None and worst < 1.0:
        fits: bool | None = False
    elif unknown or worst is None:
        fits = None
    else:
        fits = True
    return fits, worst


class FitNow:
    """Does the job fit the destination's free capacity right now (into one
    free slot, when the source reports free slot shapes)? 1 if it
    does; ``unknown_score`` if a needed resource is not reported; otherwise
    min(unknown_score, 0.5) x the fraction of the need that is free, so a
    site that cannot fit ranks lower but is never dropped."""

    name: ClassVar[str] = "fit_now"

    class Params(TermParams):
        unknown_score: float = Field(ge=0, le=1)

    def __init__(self, params: Params) -> None:
        self.unknown_score = params.unknown_score

    def value(self, x: TermInput) -> float:
        job, d = x.job, x.figures
        if d.slot_shapes is not None:
            return self._value_of(*shape_fit(job, d.slot_shapes)[:2])
        checks = [("cores", job.cores, d.cpus_free), ("mem_gb", job.mem, d.mem_free_gb)]
        if job.gpus > 0:
            checks.append(("gpus", job.gpus, d.gpus_free))
        return self._value_of(*_fits(checks))

    def _value_of(self, fits: bool | None, worst: float | None) -> float:
        if fits is None:
            return self.unknown_score
        if fits:
            return 1.0
        assert worst is not None
        return min(self.unknown_score, 0.5) * worst

    def values(self, b: Batch) -> np.ndarray:
        job = b.job
        checks = [(job.cores, b.cpus_free), (job.mem, b.mem_free_gb)]
        if job.gpus > 0:
            checks.append((job.gpus, b.gpus_free))
        worst = np.full(b.size, np.nan)
        unknown = np.zeros(b.size, dtype=bool)
        for need, free in checks:
            if need <= 0:
                continue
            unknown |= np.isnan(free)
            worst = np.fmin(worst, np.minimum(1.0, np.maximum(0.0, free) / need))
        out = np.where(worst < 1.0, min(self.unknown_score, 0.5) * worst,
                       np.where(unknown | np.isnan(worst), self.unknown_score, 1.0))
        if b.shaped.any():
            out = np.where(b.shaped, self._shaped_values(job, b.slot_shapes, b.size), out)
        return out

    def _shaped_values(self, job: JobFacts, s: ShapeRows, size: int) -> np.ndarray:
        """``value`` from ``shape_fit`` for each candidate, all their shapes
        at once. It depends only on the best (fraction, known) among a
        candidate's shapes, so which of equal shapes shape_fit picks does
        not matter."""
        valid = ~(s.count <= 0)
        owner = s.owner[valid]
        fraction = np.full(owner.size, np.nan)
        unknown = np.zeros(owner.size, dtype=bool)
        for need, have in ((job.cores, s.cpus), (job.mem, s.mem_gb), (job.gpus, s.gpus)):
            if need <= 0:
                continue
            have = have[valid]
            unknown |= np.isnan(have)
            # NaN (not reported) stays NaN through these, and fmin skips it.
            fraction = np.fmin(fraction, np.minimum(1.0, np.maximum(0.0, have) / need))
        fraction = np.where(np.isnan(fraction), 1.0, fraction)  # nothing known to compare: 1
        best = np.full(size, -np.inf)
        np.maximum.at(best, owner, fraction)
        known = np.zeros(size, dtype=bool)
        np.logical_or.at(known, owner, ~unknown & (fraction == best[owner]))
        # No usable shape: shape_fit's (False, 0.0).
        best = np.where(best == -np.inf, 0.0, best)
        return np.where(best < 1.0, min(self.unknown_score, 0.5) * best, np.where(known, 1.0, self.unknown_score))

    def score(self, x: TermInput) -> TermScore:
        fits, worst, raw = fit_fraction(x.job, x.figures)
        if fits is None:
            return TermScore(self.unknown_score, raw, summary="free capacity unknown")
        if fits:
            return TermScore(1.0, raw, summary="fits now")
        assert worst is not None
        # Below "unknown" (and at most 0.5): a known shortfall is worse news
        # than no news, and more free capacity never scores lower.
        score = min(self.unknown_score, 0.5) * worst
        return TermScore(score, raw, summary=f"does not fit now ({worst:.0%} of the need is free)")


class DataLocality:
    """Size-weighted mean great-circle distance from the destination to the
    object stores holding the job's inputs. No inputs with a known location:
    neutral (1 for every candidate)."""

    name: ClassVar[str] = "data_locality"

    class Params(TermParams):
        scale_km: float = Field(gt=0)
        cap_km: float = Field(gt=0)
        unknown_score: float = Field(ge=0, le=1)

    def __init__(self, params: Params) -> None:
        self.scale_km, self.cap_km = params.scale_km, params.cap_km
        self.unknown_score = params.unknown_score

    @staticmethod
    def _km(x: TermInput) -> tuple[float | None, float, int]:
        """(size-weighted mean km or None, bytes, located inputs)"""
        # One plain loop (this runs for every candidate of every request):
        # the same sums, in the same order, as sum() over the located inputs.
        here = x.location
        located, total, weighted, plain = 0, 0.0, 0.0, 0.0
        for ds in x.datasets:
            there = ds.location
            if there is None:
                continue
            located += 1
            if here is not None:
                dist = great_circle_km(here[0], here[1], there[0], there[1])
                total += ds.size
                weighted += ds.size * dist
                plain += dist
        if not located or here is None:
            return None, 0.0, located
        return (weighted / total if total > 0 else plain / located), total, located

    def value(self, x: TermInput) -> float:
        km, _, located = self._km(x)
        if not located:
            return 1.0
        if km is None:
            return self.unknown_score
        return cost_score(km, self.scale_km, self.cap_km)

    def values(self, b: Batch) -> np.ndarray:
        located = [ds for ds in b.datasets if ds.location is not None]
        if not located:
            return np.ones(b.size)
        total, weighted, plain = 0.0, np.zeros(b.size), np.zeros(b.size)
        distances = Distances(b.latitude, b.longitude)
        for ds in located:
            assert ds.location is not None
            dist = distances.to(ds.location[0], ds.location[1])
            total += ds.size
            weighted = weighted + ds.size * dist
            plain = plain + dist
        km = weighted / total if total > 0 else plain / len(located)
        # No location: NaN distances, replaced here.
        return np.where(np.isnan(b.latitude), self.unknown_score, cost_scores(km, self.scale_km, self.cap_km))

    def score(self, x: TermInput) -> TermScore:
        km, total, located = self._km(x)
        if not located:
            return TermScore(1.0, {"datasets": len(x.datasets), "note": "no input with a known location: neutral"})
        if km is None:
            return TermScore(self.unknown_score, {"note": "destination location unknown"},
                             summary="location unknown")
        return TermScore(cost_score(km, self.scale_km, self.cap_km), {"mean_km": round(km, 1), "bytes": total},
                         summary=f"data ~{km:.0f} km away")


class TpvScore:
    """TPV's own tag score (prefer/accept tags), so the broker never throws
    the admin's preferences away: a logistic curve, 0.5 at a score of 0."""

    name: ClassVar[str] = "tpv_score"

    class Params(TermParams):
        scale: float = Field(gt=0)

    def __init__(self, params: Params) -> None:
        self.scale = params.scale

    def value(self, x: TermInput) -> float:
        s = x.candidate.tpv_score
        if s is None:
            return 0.5
        z = s / self.scale
        # The stable form of 1/(1+e^-z): e^-z overflows for very negative z.
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def values(self, b: Batch) -> np.ndarray:
        z = b.tpv_score / self.scale
        # exp(-|z|) is value()'s exp(-z) for z >= 0 and its exp(z) below 0.
        e = np.exp(-np.abs(z))
        return np.where(np.isnan(z), 0.5, np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))

    def score(self, x: TermInput) -> TermScore:
        s = x.candidate.tpv_score
        if s is None:
            return TermScore(0.5, {"tpv_score": None})
        logistic = self.value(x)
        return TermScore(logistic, {"tpv_score": s}, summary=f"TPV tag score {s:g}")


class FinishTime:
    """Expected time until the job is done here, in seconds: ``queue_wait``'s
    expected wait plus the tool's median run time on this destination, on
    one log scale. Unlike the two terms apart, a second counts the same
    whether it is spent waiting or running: a site 10 % faster is not worth
    a 20-minute queue for a 90 s job, and is for a 5 h one (30 min saved)."""

    name: ClassVar[str] = "finish_time"
    Params = SecondsParams

    def __init__(self, params: SecondsParams) -> None:
        self.scale_s, self.cap_s = params.scale_s, params.cap_s

    @staticmethod
    def _finish(x: TermInput) -> tuple[float, float, float, str]:
        """(expected finish, expected wait, run time, run time level)"""
        wait = QueueWait._wait(x)[0]
        run, level = with_fallback(x, "median_run_s", x.figures.median_run_s, x.defaults.run_s)
        return wait + run, wait, run, level

    def value(self, x: TermInput) -> float:
        return cost_score(self._finish(x)[0], self.scale_s, self.cap_s)

    def values(self, b: Batch) -> np.ndarray:
        return cost_scores(b.derived(expected_waits) + b.median_run_s, self.scale_s, self.cap_s)

    def score(self, x: TermInput) -> TermScore:
        finish, wait, run, level = self._finish(x)
        raw = {"expected_finish_s": round(finish, 1), "expected_wait_s": round(wait, 1), "run_s": run}
        return TermScore(cost_score(finish, self.scale_s, self.cap_s), raw, level,
                         f"done in ~{_duration(finish)} ({level} run time)")


REGISTRY: dict[str, Any] = {t.name: t for t in (QueueWait, RunTime, FitNow, DataLocality, TpvScore, FinishTime)}

# Why these weights: turnaround is what users feel, and its two measured
# parts (waiting, running) come first; "fits now" is the freshest signal
# and as strong as the wait; data locality matters for large inputs only;
# TPV's tags break near-ties the admin's way. Scales: a minute (or 100 km)
# is the resolution, a week (or half the globe) scores 0.
DEFAULT_TERMS: dict[str, dict[str, float]] = {
    "queue_wait": {"weight": 3.0, "scale_s": 60.0, "cap_s": 604800.0},
    "run_time": {"weight": 2.0, "scale_s": 60.0, "cap_s": 604800.0},
    "fit_now": {"weight": 3.0, "unknown_score": 0.5},
    "data_locality": {"weight": 1.0, "scale_km": 100.0, "cap_km": 20000.0, "unknown_score": 0.5},
    "tpv_score": {"weight": 1.0, "scale": 1.0},
}


def check_terms(terms: dict[str, dict[str, Any]]) -> list[str]:
    """Problems with a ``scoring.terms`` mapping, each naming the term and key."""
    problems = []
    for name, params in terms.items():
        term = REGISTRY.get(name)
        if term is None:
            problems.append(f"{name}: unknown term (known: {', '.join(sorted(REGISTRY))})")
            continue
        if not isinstance(params, dict):
            problems.append(f"{name}: must be a mapping with weight and parameters")
            continue
        try:
            term.Params.model_validate(params)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"{name}.{loc}: {err['msg']}")
    if not problems and not any(float(p["weight"]) > 0 for p in terms.values()):
        problems.append("no term has a positive weight: at least one needs one")
    return problems


def build_terms(terms: dict[str, dict[str, Any]]) -> list[tuple[Term, float]]:
    """(term instance, weight) for each configured term, in config order."""
    out = []
    for name, params in terms.items():
        cls = REGISTRY[name]
        parsed = cls.Params.model_validate(params)
        out.append((cls(parsed), parsed.weight))
    return out


def candidate_location(candidate: CandidateLike, configured: tuple[float, float] | None) -> tuple[float, float] | None:
    """Config's coordinates win; else the TPV context's latitude/longitude."""
    if configured is not None:
        return configured
    ctx = candidate.context
    if isinstance(ctx, dict):
        lat, lon = ctx.get("latitude"), ctx.get("longitude")
        if _is_coord(lat, 90) and _is_coord(lon, 180):
            return (float(lat), float(lon))
    return None


def _is_coord(value: Any, limit: float) -> bool:
    # The bound only: math.isfinite(10**400) raises OverflowError (a request
    # context may hold any JSON number); NaN and infinities fail the bound
    # too. The exact types first: this runs for every candidate.
    t = type(value)
    if t is not float and t is not int and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return False
    return -limit <= value <= limit
