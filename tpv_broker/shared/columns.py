"""A snapshot's figures as columns: one float array per figure, one row per
destination, NaN where the figure is not reported.

Built once per snapshot (the store keeps them while the snapshot is live),
so a rank request gathers its candidates' rows and scores them all at once
(``terms.Batch``) instead of walking one model per candidate: the cost of a
request then hardly grows with its number of candidates."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Mapping, Sequence

import numpy as np

from .models import DestinationFigures, ToolFigures

NAN = float("nan")
# The figures the score terms read, in DestinationFigures' own names.
FIGURES = ("cpus_free", "mem_free_gb", "gpus_free", "queued", "running", "median_queue_s", "median_run_s", "live_at")


# A destination's group as far as the snapshot alone tells it (whether its
# live figures are too old depends on the request's time).
FRESH, NO_METRICS, OFFLINE = 0, 1, 2


def _group(f: DestinationFigures) -> int:
    # As ranking._unscored_group: config-only destinations have no sources.
    if not f.sources or (f.status != "offline" and f.live_at is None):
        return NO_METRICS
    return OFFLINE if f.status == "offline" else FRESH


@dataclass(frozen=True, eq=False)
class DestinationColumns:
    """Never modified once built (requests share it). Every column has one
    row more than there are destinations: ``absent``, the row of an id the
    snapshot does not hold (no figures: NO_METRICS)."""

    row: dict[str, int]
    figures: tuple[DestinationFigures, ...]
    # One row per figure (FIGURES' order), one column per destination.
    matrix: np.ndarray
    group: np.ndarray
    # Reports free slot shapes: fit_now reads those, one destination at a time.
    shaped: np.ndarray

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return dict(zip(FIGURES, self.matrix))

    @property
    def absent(self) -> int:
        return len(self.figures)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.row.get, ids, repeat(len(self.figures))), dtype=np.intp, count=len(ids))

    @classmethod
    def build(cls, destinations: Mapping[str, DestinationFigures]) -> DestinationColumns:
        ids = list(destinations)
        figs = tuple(destinations[i] for i in ids)
        return cls(
            row={d: i for i, d in enumerate(ids)},
            figures=figs,
            matrix=np.array([[NAN if v is None else v for v in [getattr(f, name) for f in figs] + [None]]
                             for name in FIGURES], dtype=np.float64).reshape(len(FIGURES), len(figs) + 1),
            group=np.array([_group(f) for f in figs] + [NO_METRICS], dtype=np.int8),
            shaped=np.array([f.slot_shapes is not None for f in figs] + [False], dtype=bool),
        )


@dataclass(frozen=True, eq=False)
class ToolColumns:
    """One ``tool_stats`` field (one tool id form) on the rows of a
    ``DestinationColumns``: its median queue and run time per destination."""

    median_queue_s: np.ndarray
    median_run_s: np.ndarray

    @classmethod
    def build(cls, per_destination: Mapping[str, ToolFigures], on: DestinationColumns) -> ToolColumns:
        queue = np.full(len(on.figures) + 1, NAN)
        run = np.full(len(on.figures) + 1, NAN)
        for dest_id, f in per_destination.items():
            i = on.row.get(dest_id)
            if i is not None:
                if f.median_queue_s is not None:
                    queue[i] = f.median_queue_s
                if f.median_run_s is not None:
                    run[i] = f.median_run_s
        return cls(queue, run)
