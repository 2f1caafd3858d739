"""Score terms: each a small pure unit behind one interface, shaped like the
Kubernetes scheduler's score plugins.

A term scores every candidate of a batch at once (``evaluate``: one score
in [0, 1] per candidate, 1 best, with the arrays it computed them from) and
explains one candidate from those same arrays (``explain``: the raw figures,
the fallback level, a few words). Terms do not know their weight: the
combiner (``scoring.py``) owns weights and checks ranges. Their parameters
are validated by config (``config/terms.py``) and passed in as numbers.

Costs (seconds, km) become scores on a log scale (``batch.cost_scores``):
ratios are what matter when comparing sites (a 2 h queue against a 4 h one
is as real a difference as 2 min against 4 min), and a log scale keeps them
apart where a hyperbola would squash every long queue to about zero. A
destination's score never depends on the other candidates, and a better
figure always scores better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from tpv_broker.core.batch import Batch, cost_scores, or_zero
from tpv_broker.core.geo import great_circle_km
from tpv_broker.wording import percent_below


@dataclass(frozen=True, eq=False)
class TermValues:
    """What a term computed for every candidate of a batch: the scores, and
    the arrays they came from (what ``explain`` reads)."""

    scores: np.ndarray
    parts: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TermDetail:
    """One candidate's figures for one term, as explain shows them."""

    raw: dict[str, Any]
    # Which fallback level the figure came from (tool, ..., default), if any.
    level: str | None = None
    # A few words for the reason, e.g. "waits ~25 min".
    summary: str = ""


class Term(Protocol):
    name: ClassVar[str]

    def evaluate(self, b: Batch) -> TermValues:
        """Every candidate's score, in [0, 1]."""
        ...

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        """Candidate ``k``'s figures, from ``v`` (this term's ``evaluate(b)``)."""
        ...


def _figure(values: np.ndarray, k: int) -> float | None:
    """One entry as a float, None where not reported (NaN)."""
    v = float(values[k])
    return None if v != v else v


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# A tiny job size (the API accepts any cores > 0) must not overflow floor().
_MAX_SLOTS = 1e9


def free_slots(b: Batch) -> np.ndarray:
    """How many jobs of this size the free cores, memory and GPUs hold now.
    An unreported resource sets no limit here (fit_now is the term that
    treats it as unknown); nothing reported at all means no free slot."""
    slots = np.full(b.size, np.nan)
    for need, free in ((b.job.cores, b.cpus_free), (b.job.mem, b.mem_free_gb), (b.job.gpus, b.gpus_free)):
        if need > 0:
            # NaN (unreported) stays NaN through these, and fmin skips it.
            slots = np.fmin(slots, np.floor(np.minimum(_MAX_SLOTS, np.maximum(0.0, free) / need)))
    return or_zero(slots)


@dataclass(frozen=True, eq=False)
class Waits:
    """``queue_wait``'s expected waits, and what they are made of."""

    wait: np.ndarray
    free_slots: np.ndarray
    drain: np.ndarray


def expected_waits(b: Batch) -> Waits:
    """The tool's median queue time, plus the time to drain the part of the
    queue that the free slots cannot start at once: (queued + 1 - free
    slots) x the destination's typical run time / jobs running (Little's
    law). The jobs queued ahead take the free slots first."""
    slots = free_slots(b)
    ahead = np.maximum(0.0, or_zero(b.queued) + 1 - slots)
    drain = np.where(ahead > 0, ahead * b.destination_run_s / np.maximum(or_zero(b.running), 1.0), 0.0)
    return Waits(b.median_queue_s + drain, slots, drain)


class QueueWait:
    """Expected wait before the job starts (``expected_waits``). Free slots
    count jobs of this job's size; unknown capacity counts as none."""

    name: ClassVar[str] = "queue_wait"

    def __init__(self, scale_s: float, cap_s: float) -> None:
        self.scale_s, self.cap_s = scale_s, cap_s

    def evaluate(self, b: Batch) -> TermValues:
        return TermValues(cost_scores(b.derived(expected_waits).wait, self.scale_s, self.cap_s))

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        w = b.derived(expected_waits)
        wait, level = float(w.wait[k]), b.level_names[b.queue_level[k]]
        raw = {"expected_wait_s": round(wait, 1), "median_queue_s": float(b.median_queue_s[k]),
               "queued": _figure(b.queued, k), "running": _figure(b.running, k),
               "free_slots": float(w.free_slots[k]), "typical_run_s": float(b.destination_run_s[k]),
               "drain_s": round(float(w.drain[k]), 1)}
        return TermDetail(raw, level, f"waits ~{_duration(wait)} ({level})")


class RunTime:
    """The tool's median run time on this destination: a faster site wins."""

    name: ClassVar[str] = "run_time"

    def __init__(self, scale_s: float, cap_s: float) -> None:
        self.scale_s, self.cap_s = scale_s, cap_s

    def evaluate(self, b: Batch) -> TermValues:
        return TermValues(cost_scores(b.median_run_s, self.scale_s, self.cap_s))

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        run, level = float(b.median_run_s[k]), b.level_names[b.run_level[k]]
        return TermDetail({"median_run_s": run}, level, f"runs ~{_duration(run)} ({level})")


# fits, as a float per candidate: yes, no, or not known (a needed resource
# is unreported).
_FITS, _DOES_NOT_FIT, _MIGHT_FIT = 1.0, 0.0, np.nan


class FitNow:
    """Does the job fit the destination's free capacity right now (into one
    free slot, when the source reports free slot shapes: 16 free cores in
    four 4-core slots do not run an 8-core job)? 1 if it does;
    ``unknown_score`` if a needed resource is not reported; otherwise
    min(unknown_score, 0.5) x the fraction of the need that is free, so a
    site that cannot fit ranks lower but is never dropped: a known
    shortfall is worse news than no news, and more free capacity never
    scores lower."""

    name: ClassVar[str] = "fit_now"

    def __init__(self, unknown_score: float) -> None:
        self.unknown_score = unknown_score

    def evaluate(self, b: Batch) -> TermValues:
        job = b.job
        needs = [(job.cores, b.cpus_free), (job.mem, b.mem_free_gb)]
        if job.gpus > 0:
            needs.append((job.gpus, b.gpus_free))
        # The smallest free/needed fraction over the known resources.
        worst = np.full(b.size, np.nan)
        unknown = np.zeros(b.size, dtype=bool)
        for need, free in needs:
            if need > 0:
                unknown |= np.isnan(free)
                worst = np.fmin(worst, np.minimum(1.0, np.maximum(0.0, free) / need))
        fits = np.where(worst < 1.0, _DOES_NOT_FIT, np.where(unknown | np.isnan(worst), _MIGHT_FIT, _FITS))
        parts = {"fits": fits, "worst": worst}
        if b.shaped.any():
            parts = self._best_shapes(b, parts)
        fits, worst = parts["fits"], parts["worst"]
        scores = np.where(fits == _FITS, 1.0, np.where(np.isnan(fits), self.unknown_score,
                                                       min(self.unknown_score, 0.5) * or_zero(worst)))
        return TermValues(scores, parts)

    @staticmethod
    def _best_shapes(b: Batch, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """For candidates that report free slot shapes: the best shape (the
        largest fraction of the need it holds; of equal ones, one known to
        hold the job, then the first) decides, whatever the free totals say."""
        job, s = b.job, b.slot_shapes
        usable = (s.count > 0).nonzero()[0]
        owner = s.owner[usable]
        fraction = np.full(usable.size, np.nan)
        unknown = np.zeros(usable.size, dtype=bool)
        for need, have in ((job.cores, s.cpus), (job.mem, s.mem_gb), (job.gpus, s.gpus)):
            if need > 0:
                unknown |= np.isnan(have[usable])
                fraction = np.fmin(fraction, np.minimum(1.0, np.maximum(0.0, have[usable]) / need))
        fraction = np.where(np.isnan(fraction), 1.0, fraction)  # nothing needed that it reports
        best = np.full(b.size, -np.inf)
        np.maximum.at(best, owner, fraction)
        is_best = fraction == best[owner]
        known = np.zeros(b.size, dtype=bool)
        np.logical_or.at(known, owner, is_best & ~unknown)
        chosen = is_best & (~unknown | ~known[owner])
        # Shapes come grouped by owner, in order: the first chosen one per owner.
        owners, first = np.unique(owner[chosen], return_index=True)
        best_shape = np.full(b.size, -1)
        best_shape[owners] = usable[chosen][first]
        # No usable shape: does not fit, nothing of the need free.
        best = np.where(best == -np.inf, 0.0, best)
        fits = np.where(best < 1.0, _DOES_NOT_FIT, np.where(known, _FITS, _MIGHT_FIT))
        shaped = b.shaped
        return {"fits": np.where(shaped, fits, parts["fits"]), "worst": np.where(shaped, best, parts["worst"]),
                "best_shape": best_shape, "shapes": np.bincount(s.owner, minlength=b.size)}

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        job, fits_code, worst = b.job, _figure(v.parts["fits"], k), _figure(v.parts["worst"], k)
        fits = None if fits_code is None else fits_code == _FITS
        raw: dict[str, Any]
        if b.shaped[k]:
            i = int(v.parts["best_shape"][k])
            s = b.slot_shapes
            shape = None if i < 0 else {name: value for name, value in (
                ("count", float(s.count[i])), ("cpus", _figure(s.cpus, i)), ("mem_gb", _figure(s.mem_gb, i)),
                ("gpus", _figure(s.gpus, i))) if value is not None}
            raw = {"cores_needed": job.cores, "mem_gb_needed": job.mem,
                   "free_slot_shapes": int(v.parts["shapes"][k]), "best_shape": shape, "fits": fits}
            if job.gpus > 0:
                raw["gpus_needed"] = job.gpus
        else:
            raw = {"cores_needed": job.cores, "cores_free": _figure(b.cpus_free, k),
                   "mem_gb_needed": job.mem, "mem_gb_free": _figure(b.mem_free_gb, k)}
            if job.gpus > 0:
                raw |= {"gpus_needed": job.gpus, "gpus_free": _figure(b.gpus_free, k)}
            raw["fits"] = fits
        if fits is None:
            return TermDetail(raw, summary="free capacity unknown")
        if fits:
            return TermDetail(raw, summary="fits now")
        return TermDetail(raw, summary=f"does not fit now ({percent_below(worst or 0.0)} of the need is free)")


class DataLocality:
    """Size-weighted mean great-circle distance from the destination to the
    object stores holding the job's inputs. No inputs with a known location:
    neutral (1 for every candidate)."""

    name: ClassVar[str] = "data_locality"

    def __init__(self, scale_km: float, cap_km: float, unknown_score: float) -> None:
        self.scale_km, self.cap_km = scale_km, cap_km
        self.unknown_score = unknown_score

    def evaluate(self, b: Batch) -> TermValues:
        located = [ds for ds in b.datasets if ds.location is not None]
        if not located:
            return TermValues(np.ones(b.size))
        total, weighted, plain = 0.0, np.zeros(b.size), np.zeros(b.size)
        km_to: dict[tuple[float, float], np.ndarray] = {}  # inputs often share an object store
        for ds in located:
            assert ds.location is not None
            dist = km_to.get(ds.location)
            if dist is None:
                dist = km_to[ds.location] = great_circle_km(b.latitude, b.longitude, *ds.location)
            total += ds.size
            weighted = weighted + ds.size * dist
            plain = plain + dist
        km = weighted / total if total > 0 else plain / len(located)
        # No location: NaN distances.
        scores = np.where(np.isnan(b.latitude), self.unknown_score, cost_scores(km, self.scale_km, self.cap_km))
        return TermValues(scores, {"km": km, "bytes": np.full(b.size, total)})

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        if "km" not in v.parts:
            return TermDetail({"datasets": len(b.datasets), "note": "no input with a known location: neutral"})
        km = _figure(v.parts["km"], k)
        if km is None:
            return TermDetail({"note": "destination location unknown"}, summary="location unknown")
        return TermDetail({"mean_km": round(km, 1), "bytes": float(v.parts["bytes"][k])},
                          summary=f"data ~{km:.0f} km away")


class TpvScore:
    """TPV's own tag score (prefer/accept tags), so the broker never throws
    the admin's preferences away: a logistic curve, 0.5 at a score of 0 (or
    none)."""

    name: ClassVar[str] = "tpv_score"

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def evaluate(self, b: Batch) -> TermValues:
        z = b.tpv_score / self.scale
        # The stable form of 1/(1+e^-z): e^-|z| never overflows.
        e = np.exp(-np.abs(z))
        return TermValues(np.where(np.isnan(z), 0.5, np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))))

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        s = _figure(b.tpv_score, k)
        return TermDetail({"tpv_score": s}, summary="" if s is None else f"TPV tag score {s:g}")


def turnaround(b: Batch) -> np.ndarray:
    """Expected seconds until the job is done here: staging its inputs (an
    unknown throughput counted as the slowest known: ``StagingTable.seconds``;
    counted as none, a destination nobody located would win every
    data-heavy job from one next to the data), waiting, running."""
    out: np.ndarray = b.staging_counted_s + b.derived(expected_waits).wait + b.median_run_s
    return out


class FinishTime:
    """Expected time until the job is done here, in seconds (``turnaround``:
    staging, ``queue_wait``'s expected wait and the tool's median run time
    on this destination), on one log scale. Unlike the terms apart, a second
    counts the same whether it is spent staging, waiting or running: a site
    10 % faster is not worth a 20-minute queue for a 90 s job, and is for a
    5 h one (30 min saved)."""

    name: ClassVar[str] = "finish_time"

    def __init__(self, scale_s: float, cap_s: float) -> None:
        self.scale_s, self.cap_s = scale_s, cap_s

    def evaluate(self, b: Batch) -> TermValues:
        finish = b.derived(turnaround)
        return TermValues(cost_scores(finish, self.scale_s, self.cap_s), {"finish": finish})

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        finish, wait = float(v.parts["finish"][k]), float(b.derived(expected_waits).wait[k])
        level = b.level_names[b.run_level[k]]
        raw = {"expected_finish_s": round(finish, 1), "expected_wait_s": round(wait, 1),
               "run_s": float(b.median_run_s[k]), "staging_s": _rounded(_figure(b.staging_s, k)),
               "staging_counted_s": round(float(b.staging_counted_s[k]), 1)}
        return TermDetail(raw, level, f"done in ~{_duration(finish)} ({level} run time)")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class StagingTime:
    """Seconds to move the job's inputs here: each input's bytes over the
    throughput between its object store and this destination
    (``policy.StagingTable``: configured pairs, else derived from distance).
    What a user waits for, where ``data_locality`` only says how far. No
    input: 0 s everywhere (neutral); a throughput unknown: ``unknown_score``."""

    name: ClassVar[str] = "staging_time"

    def __init__(self, scale_s: float, cap_s: float, unknown_score: float) -> None:
        self.scale_s, self.cap_s = scale_s, cap_s
        self.unknown_score = unknown_score

    def evaluate(self, b: Batch) -> TermValues:
        staging = b.staging_s
        return TermValues(np.where(np.isnan(staging), self.unknown_score,
                                   cost_scores(or_zero(staging), self.scale_s, self.cap_s)))

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        seconds = _figure(b.staging_s, k)
        size = sum(ds.size for ds in b.datasets)
        if seconds is None:
            return TermDetail({"bytes": size, "staging_s": None}, summary="staging time unknown")
        return TermDetail({"bytes": size, "staging_s": round(seconds, 1)},
                          summary=f"stages in ~{_duration(seconds)}" if seconds > 0 else "")


class Carbon:
    """Grams of CO2e the job would cause here: cores x expected run time x
    ``watts_per_core`` (the energy) x the grid's carbon intensity there
    (``pulsar_carbon_intensity``). Off unless configured. At
    ``near_ties_share`` 0 it weighs in everywhere, by its weight. Above 0
    it only breaks near-ties: it scores every candidate alike (so it moves
    nobody by score) and gives, as ``tie_key``, the grams of the candidates
    whose expected turnaround is within that share of the best one; the
    ranker orders those among the places they hold (``ScoringModel``), so
    nothing outside the band moves and no minute beyond the share is
    traded for grams."""

    name: ClassVar[str] = "carbon"

    def __init__(self, watts_per_core: float, scale_g: float, cap_g: float, unknown_score: float,
                 near_ties_share: float) -> None:
        self.watts_per_core = watts_per_core
        self.scale_g, self.cap_g = scale_g, cap_g
        self.unknown_score = unknown_score
        self.near_ties_share = near_ties_share

    def evaluate(self, b: Batch) -> TermValues:
        kwh = b.job.cores * b.median_run_s * self.watts_per_core / 3.6e6
        grams = kwh * b.carbon_intensity
        scores = np.where(np.isnan(grams), self.unknown_score, cost_scores(or_zero(grams), self.scale_g, self.cap_g))
        parts = {"grams": grams, "kwh": kwh}
        if self.near_ties_share > 0:
            finish = b.derived(turnaround)
            # Health or a cap scaled these down: a degraded destination (a
            # black hole is the fastest there is) with the lowest carbon went
            # first whatever its factor, and set the band for the others.
            full = b.score_factor >= 1.0
            best = finish[full].min() if full.any() else math.inf
            in_band = full & (finish <= best * (1.0 + self.near_ties_share))
            # Alike for all: a score here would pull every job into the band.
            scores = np.ones(b.size)
            parts["in_band"] = in_band.astype(np.float64)
            # Unknown grams go after the known ones of the band.
            parts["tie_key"] = np.where(in_band, np.where(np.isnan(grams), np.inf, grams), np.nan)
        return TermValues(scores, parts)

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        grams, intensity = _figure(v.parts["grams"], k), _figure(b.carbon_intensity, k)
        raw: dict[str, Any] = {"grams_co2e": _rounded(grams), "carbon_intensity_g_per_kwh": intensity,
                               "energy_kwh": round(float(v.parts["kwh"][k]), 4)}
        if "in_band" in v.parts:
            raw["near_tie"] = bool(v.parts["in_band"][k])
        if grams is None:
            return TermDetail(raw, summary="carbon intensity unknown")
        tie = " (a near tie: ordered by carbon)" if raw.get("near_tie") else ""
        return TermDetail(raw, summary=f"~{grams:.0f} g CO2e{tie}")


AnyTerm = QueueWait | RunTime | FitNow | DataLocality | TpvScore | FinishTime | StagingTime | Carbon
REGISTRY: dict[str, type[AnyTerm]] = {
    t.name: t for t in (QueueWait, RunTime, FitNow, DataLocality, TpvScore, FinishTime, StagingTime, Carbon)
}


def build_terms(terms: Mapping[str, Mapping[str, float]]) -> list[tuple[Term, float]]:
    """(term, weight) for each configured term, in config order. The
    parameters were validated by config (``config/terms.py``)."""
    out: list[tuple[Term, float]] = []
    for name, params in terms.items():
        cls = REGISTRY.get(name)
        if cls is None:
            raise ValueError(f"scoring.terms.{name}: unknown term (known: {', '.join(sorted(REGISTRY))})")
        out.append((cls(**{k: float(v) for k, v in params.items() if k != "weight"}), float(params["weight"])))
    return out
