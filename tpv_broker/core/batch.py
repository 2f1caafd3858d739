"""The score terms' input: the job, and each figure of the scored
candidates as an array with one entry per candidate (NaN: not reported,
except for the times, whose fallbacks are applied). Every term scores all
candidates at once from it (``terms.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from tpv_broker.core.columns import ShapeRows
from tpv_broker.core.inputs import DatasetInput, JobFacts

T = TypeVar("T")


@dataclass(eq=False)
class Batch:
    job: JobFacts
    ids: Sequence[str]
    # Free capacity and queue, with the in-flight charges applied.
    cpus_free: np.ndarray
    mem_free_gb: np.ndarray
    gpus_free: np.ndarray
    queued: np.ndarray
    running: np.ndarray
    # The tool's median queue and run times, and the destination's own run
    # time, fallbacks applied (columns.ToolTimes): never NaN. The levels
    # are indexes into level_names.
    median_queue_s: np.ndarray
    queue_level: np.ndarray
    median_run_s: np.ndarray
    run_level: np.ndarray
    destination_run_s: np.ndarray
    level_names: tuple[str, ...]
    tpv_score: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    datasets: Sequence[DatasetInput]
    # Time to stage the inputs here (s; NaN: a store's throughput here is
    # unknown), the same as a turnaround counts it (``StagingTable.seconds``),
    # and the grid's carbon intensity (gCO2e/kWh; NaN: not reported).
    staging_s: np.ndarray
    staging_counted_s: np.ndarray
    carbon_intensity: np.ndarray
    # Positions whose destination reports free slot shapes (maybe none),
    # and those shapes (no in-flight charge changes them).
    shaped: np.ndarray
    slot_shapes: ShapeRows
    # What health and caps multiply each score by (1: nothing): a term that
    # compares candidates (carbon's near ties) leaves the scaled-down out.
    score_factor: np.ndarray
    _derived: dict[Callable[[Batch], Any], Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.ids)

    def derived(self, compute: Callable[[Batch], T]) -> T:
        """``compute(self)``, once per batch: terms share figures derived
        from the batch (finish_time adds run times to queue_wait's waits).
        The arrays are shared: never modify one in place."""
        if compute not in self._derived:
            self._derived[compute] = compute(self)
        value: T = self._derived[compute]
        return value


def or_zero(values: np.ndarray) -> np.ndarray:
    """Unreported (NaN) becomes 0."""
    return np.where(np.isnan(values), 0.0, values)


def cost_scores(cost: np.ndarray, scale: float, cap: float) -> np.ndarray:
    """``1 - ln(1 + cost/scale) / ln(1 + cap/scale)``, clipped to [0, 1]:
    1 at zero cost, 0 at ``cap`` and beyond, and every doubling of the cost
    loses the same in between. ``scale`` is the resolution: costs well below
    it count as about zero."""
    out: np.ndarray = np.maximum(1.0 - np.log1p(np.maximum(cost, 0.0) / scale) / math.log1p(cap / scale), 0.0)
    return out


