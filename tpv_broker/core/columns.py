"""A snapshot's figures as columns: one float array per figure, one row per
destination, NaN where the figure is not reported.

Built once per snapshot (the store keeps them while the snapshot is live),
so a rank request gathers its candidates' rows and scores them all at once
(``terms.Batch``) instead of walking one model per candidate: the cost of a
request then hardly grows with its number of candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Mapping, Sequence

import numpy as np

from tpv_broker.core.batch import NO_SHAPES, ShapeRows, with_fallbacks
from tpv_broker.core.models import DestinationFigures, SlotShape, ToolFigures

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
    """Its figures are never modified once built (requests share them; only
    the tool times it keeps grow). Every column has one row more than there
    are destinations: ``absent``, the row of an id the snapshot does not
    hold (no figures: NO_METRICS)."""

    row: dict[str, int]
    figures: tuple[DestinationFigures, ...]
    # One row per figure (FIGURES' order), one column per destination.
    matrix: np.ndarray
    group: np.ndarray
    # Reports free slot shapes (maybe none), and every row's shapes.
    shaped: np.ndarray
    shapes: SlotShapeColumns
    # tool_times' answers, kept as long as these columns are: the few tools
    # a Galaxy runs most ask again and again.
    _tool_times: dict[tuple[object, ...], ToolTimes] = field(default_factory=dict, init=False, repr=False)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return dict(zip(FIGURES, self.matrix))

    @property
    def absent(self) -> int:
        return len(self.figures)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.row.get, ids, repeat(len(self.figures))), dtype=np.intp, count=len(ids))

    def tool_times(self, levels: Sequence[ToolColumns | None], default_queue_s: float,
                   default_run_s: float) -> ToolTimes:
        """A tool's median queue and run time on every row, each from its most
        specific level that knows it (``levels``: the tool id's forms, most
        specific first; None where the snapshot has no figures for a form),
        else the destination's own, else the default: ``terms.with_fallback``
        for all destinations at once, once per tool and snapshot instead of
        once per request."""
        key = (*levels, default_queue_s, default_run_s)
        times = self._tool_times.get(key)
        if times is None:
            known = [tc for tc in levels if tc is not None]
            queue, run = self.matrix[_MEDIAN_QUEUE], self.matrix[_MEDIAN_RUN]
            times = ToolTimes(
                median_queue_s=with_fallbacks([tc.median_queue_s for tc in known], queue, default_queue_s),
                median_run_s=with_fallbacks([tc.median_run_s for tc in known], run, default_run_s),
                destination_run_s=np.where(np.isnan(run), default_run_s, run),
            )
            if len(self._tool_times) >= _TOOL_TIMES_KEPT:
                self._tool_times.clear()
            self._tool_times[key] = times
        return times

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
            shapes=SlotShapeColumns.build([f.slot_shapes or () for f in figs]),
        )


@dataclass(frozen=True, eq=False)
class SlotShapeColumns:
    """Every row's free slot shapes, flattened: row r's are entries
    ``start[r]`` to ``start[r + 1]`` (the absent row has none)."""

    start: np.ndarray
    # count, cpus, mem_gb, gpus (NaN: not reported), one column per shape.
    matrix: np.ndarray

    @classmethod
    def build(cls, per_row: Sequence[Sequence[SlotShape]]) -> SlotShapeColumns:
        lengths = [len(shapes) for shapes in per_row] + [0]
        flat = [s for shapes in per_row for s in shapes]
        matrix = np.array([[NAN if v is None else v for v in (s.count, s.cpus, s.mem_gb, s.gpus)] for s in flat],
                          dtype=np.float64).reshape(len(flat), 4).T
        return cls(start=np.concatenate(([0], np.cumsum(lengths))).astype(np.intp), matrix=matrix)

    def of_rows(self, rows: np.ndarray) -> ShapeRows:
        """The shapes of these rows, each owned by its row's position in ``rows``."""
        if not self.matrix.shape[1]:
            return NO_SHAPES
        first = self.start[rows]
        lengths = self.start[rows + 1] - first
        owner = np.repeat(np.arange(len(rows)), lengths)
        # Each shape's index: its row's first, plus its place among the row's.
        index = np.repeat(first - (np.cumsum(lengths) - lengths), lengths) + np.arange(len(owner))
        count, cpus, mem_gb, gpus = self.matrix[:, index]
        return ShapeRows(owner, count, cpus, mem_gb, gpus)


_MEDIAN_QUEUE, _MEDIAN_RUN = FIGURES.index("median_queue_s"), FIGURES.index("median_run_s")
# Tools whose times one DestinationColumns keeps (each 3 x 8 bytes a row:
# 12 KB at 500 destinations). A snapshot lives one collector cycle, so this
# bounds only a Galaxy asking for thousands of tools within seconds.
_TOOL_TIMES_KEPT = 2000


@dataclass(frozen=True, eq=False)
class ToolTimes:
    """One tool's times on the rows of a ``DestinationColumns``, fallbacks
    applied (``DestinationColumns.tool_times``). Never modified."""

    median_queue_s: np.ndarray
    median_run_s: np.ndarray
    # The destination's own median run time, else the default: what drains
    # its queue (queue_wait), whatever tool is asking.
    destination_run_s: np.ndarray


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
