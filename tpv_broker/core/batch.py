"""The score terms' input for many candidates at once: the job, and each
figure as an array with one entry per candidate (NaN: not reported, except
for the times, whose fallbacks are applied).

Each term's ``values(batch)`` is its ``value(x)`` over these arrays, the
same arithmetic in the same order (``tests/test_rank_batch.py`` holds them
to it). Free slot shapes, a list per destination, come flattened
(``ShapeRows``); ``batch.input(i)`` builds the one-candidate ``TermInput``
(for a term with no ``values``, an error message)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tpv_broker.core.geo import EARTH_RADIUS_KM
from tpv_broker.core.inputs import DatasetInput, JobFacts

if TYPE_CHECKING:
    from tpv_broker.core.terms import TermInput


@dataclass(frozen=True, eq=False)
class ShapeRows:
    """Free slot shapes of a batch's candidates, one entry per shape: whose
    it is (the candidate's position in the batch), and its count, cores,
    memory and GPUs (NaN: not reported)."""

    owner: np.ndarray
    count: np.ndarray
    cpus: np.ndarray
    mem_gb: np.ndarray
    gpus: np.ndarray


NO_SHAPES = ShapeRows(np.zeros(0, dtype=np.intp), *(np.zeros(0),) * 4)


@dataclass(eq=False)
class Batch:
    job: JobFacts
    size: int
    cpus_free: np.ndarray
    mem_free_gb: np.ndarray
    gpus_free: np.ndarray
    queued: np.ndarray
    running: np.ndarray
    # The tool's median queue and run times, and the destination's own run
    # time, fallbacks applied (columns.ToolTimes): never NaN.
    median_queue_s: np.ndarray
    median_run_s: np.ndarray
    destination_run_s: np.ndarray
    tpv_score: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    datasets: Sequence[DatasetInput]
    # Positions whose destination reports free slot shapes (maybe none),
    # and those shapes (no in-flight charge changes them).
    shaped: np.ndarray
    slot_shapes: ShapeRows
    input: Callable[[int], TermInput]
    _derived: dict[Callable[[Batch], np.ndarray], np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def derived(self, compute: Callable[[Batch], np.ndarray]) -> np.ndarray:
        """``compute(self)``, once per batch: terms share figures derived
        from the batch (finish_time adds run times to queue_wait's waits),
        and at a few candidates numpy's cost per call, not per candidate, is
        what counts. The arrays are shared: never modify one in place."""
        value = self._derived.get(compute)
        if value is None:
            value = self._derived[compute] = compute(self)
        return value


def or_zero(values: np.ndarray) -> np.ndarray:
    """``value or 0.0`` for each: unreported (NaN) becomes 0."""
    return np.where(np.isnan(values), 0.0, values)


def cost_scores(cost: np.ndarray, scale: float, cap: float) -> np.ndarray:
    """``terms.cost_score`` on an array."""
    out = 1.0 - np.log1p(np.maximum(cost, 0.0) / scale) / math.log1p(cap / scale)
    return np.maximum(out, 0.0)


def with_fallbacks(levels: Sequence[np.ndarray], destination_value: np.ndarray, default: float) -> np.ndarray:
    """``terms.with_fallback`` on arrays: per candidate, the most specific
    level that knows the figure, else the destination's, else the default."""
    out = np.where(np.isnan(destination_value), default, destination_value)
    for level in reversed(levels):
        out = np.where(np.isnan(level), out, level)
    return out


class Distances:
    """``geo.great_circle_km`` from each (lat, lon) to a point; NaN in, NaN
    out. What depends only on the candidates is worked out once, and each
    point's distances once: a job's inputs often share an object store."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray) -> None:
        self.lon = lon
        self.p1 = np.radians(lat)
        self.cos_p1 = np.cos(self.p1)
        self._km: dict[tuple[float, float], np.ndarray] = {}

    def to(self, lat2: float, lon2: float) -> np.ndarray:
        km = self._km.get((lat2, lon2))
        if km is None:
            p2 = math.radians(lat2)
            dp, dl = p2 - self.p1, np.radians(lon2 - self.lon)
            a = np.sin(dp / 2) ** 2 + self.cos_p1 * math.cos(p2) * np.sin(dl / 2) ** 2
            km = self._km[(lat2, lon2)] = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
        return km
