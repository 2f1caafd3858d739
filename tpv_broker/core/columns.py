"""A snapshot's figures as columns: one float array per figure, one entry
per destination, NaN where the figure is not reported.

Built once per snapshot (the API keeps them while the snapshot is live), so
a rank request gathers its candidates' rows and scores them all at once
(``batch.py``) instead of walking one model per candidate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from tpv_broker.core.models import DestinationFigures, SlotShape, ToolFigures
from tpv_broker.core.result import Group
from tpv_broker.core.tool_ids import DEFAULT, DESTINATION

NAN = float("nan")
# The figures the score terms read, in DestinationFigures' own names.
FIGURES = ("cpus_free", "mem_free_gb", "gpus_free", "queued", "running", "median_queue_s", "median_run_s", "live_at",
           "cpus_total", "carbon_intensity")
# A destination's group as a small int (its index here), in an array.
GROUPS = tuple(Group)


def snapshot_group(f: DestinationFigures | None) -> Group:
    """The group as far as the snapshot alone tells it: whether its live
    figures are too old (STALE) depends on the request's time."""
    # Config-only destinations are published with no measured figures.
    if f is None or not f.sources:
        return Group.NO_METRICS
    if f.status == "offline":
        return Group.OFFLINE
    if f.health is not None and f.health.state in ("excluded", "drained"):
        return Group.EXCLUDED
    return Group.NO_METRICS if f.live_at is None else Group.SCORED


@dataclass(frozen=True, eq=False)
class DestinationColumns:
    """One snapshot's columns: never modified once built (requests share
    them; only the tool times it keeps grow), and never used for another
    snapshot: what it keeps per tool is keyed by the ``tool_stats`` field
    names, which mean other figures in another snapshot (``RankService``
    builds new columns for each snapshot it sees). Every column has one
    entry more than there are destinations: ``absent``, the row of an id the
    snapshot does not hold."""

    row: dict[str, int]
    figures: tuple[DestinationFigures, ...]
    # One row per figure (FIGURES' order), one column per destination.
    matrix: np.ndarray
    # Each destination's snapshot_group, as its index in GROUPS.
    group: np.ndarray
    # Reports free slot shapes (maybe none), and every row's shapes.
    shaped: np.ndarray
    shapes: SlotShapeColumns
    # Destination health: what a score is multiplied by (degraded: less
    # than 1), and the share of jobs let through on probation (NaN: not on it).
    score_factor: np.ndarray
    probe_share: np.ndarray
    # tool_times' answers, kept as long as these columns are: the few tools
    # a Galaxy runs most ask again and again.
    _tool_times: dict[tuple[object, ...], ToolTimes] = field(default_factory=dict, init=False, repr=False)
    _tool_columns: dict[str, ToolColumns] = field(default_factory=dict, init=False, repr=False)

    @property
    def absent(self) -> int:
        return len(self.figures)

    def column(self, name: str) -> np.ndarray:
        values: np.ndarray = self.matrix[FIGURES.index(name)]
        return values

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.row.get, ids, repeat(self.absent)), dtype=np.intp, count=len(ids))

    def figures_at(self, row: int) -> DestinationFigures | None:
        return self.figures[row] if row != self.absent else None

    def tool_columns(self, stats_field: str, per_destination: Mapping[str, ToolFigures]) -> ToolColumns:
        """One ``tool_stats`` field on these rows. Kept per field: the
        columns live one snapshot, and a snapshot's field never changes."""
        tc = self._tool_columns.get(stats_field)
        if tc is None:
            if len(self._tool_columns) >= _TOOL_TIMES_KEPT:
                self._tool_columns.clear()
            tc = self._tool_columns[stats_field] = ToolColumns.build(per_destination, self)
        return tc

    def tool_times(self, levels: Sequence[tuple[str, str]], tool_stats: Mapping[str, Mapping[str, ToolFigures]],
                   default_queue_s: float, default_run_s: float) -> ToolTimes:
        """A tool's median queue and run time on every row, each from its
        most specific level that knows it (``levels``: (level, its
        ``tool_stats`` field), most specific first), else the destination's
        own, else the default; with the level each came from. Once per tool
        and snapshot, not once per request: a snapshot's fields never change."""
        known = [(level, name) for level, name in levels if tool_stats.get(name)]
        key = (*(name for _, name in known), default_queue_s, default_run_s)
        times = self._tool_times.get(key)
        if times is None:
            columns = [self.tool_columns(name, tool_stats[name]) for _, name in known]
            own_queue, own_run = self.column("median_queue_s"), self.column("median_run_s")
            queue, queue_level = _with_fallbacks([tc.median_queue_s for tc in columns], own_queue, default_queue_s)
            run, run_level = _with_fallbacks([tc.median_run_s for tc in columns], own_run, default_run_s)
            times = ToolTimes(level_names=(*(level for level, _ in known), DESTINATION, DEFAULT),
                              median_queue_s=queue, queue_level=queue_level, median_run_s=run, run_level=run_level,
                              destination_run_s=np.where(np.isnan(own_run), default_run_s, own_run))
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
            group=np.array([GROUPS.index(snapshot_group(f)) for f in (*figs, None)], dtype=np.int8),
            shaped=np.array([f.slot_shapes is not None for f in figs] + [False], dtype=bool),
            shapes=SlotShapeColumns.build([f.slot_shapes or () for f in figs]),
            score_factor=np.array([f.health.score_factor if f.health is not None else 1.0 for f in figs] + [1.0]),
            probe_share=np.array([f.health.probe_share if f.health is not None and f.health.probe_share is not None
                                  else NAN for f in figs] + [NAN]),
        )


def _with_fallbacks(levels: Sequence[np.ndarray], destination_value: np.ndarray,
                    default: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the most specific level that knows the figure, else the
    destination's, else the default; and which (an index: the levels, then
    destination, then default)."""
    known = ~np.isnan(destination_value)
    out = np.where(known, destination_value, default)
    level = np.where(known, len(levels), len(levels) + 1).astype(np.int8)
    for i in range(len(levels) - 1, -1, -1):
        has = ~np.isnan(levels[i])
        out = np.where(has, levels[i], out)
        level = np.where(has, i, level)
    return out, level


# Tools whose times, and tool_stats fields whose columns, one
# DestinationColumns keeps (times: 3 float and 2 int8 arrays a tool, about
# 13 KB at 500 destinations; a field's columns 8 KB). A snapshot lives one
# collector cycle, so this bounds only a Galaxy asking for thousands of
# tools within seconds.
_TOOL_TIMES_KEPT = 2000


@dataclass(frozen=True, eq=False)
class ToolTimes:
    """One tool's times on the rows of a ``DestinationColumns``, fallbacks
    applied, and the level each came from (an index into ``level_names``)."""

    level_names: tuple[str, ...]
    median_queue_s: np.ndarray
    queue_level: np.ndarray
    median_run_s: np.ndarray
    run_level: np.ndarray
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
        queue = np.full(on.absent + 1, NAN)
        run = np.full(on.absent + 1, NAN)
        for dest_id, f in per_destination.items():
            i = on.row.get(dest_id)
            if i is not None:
                if f.median_queue_s is not None:
                    queue[i] = f.median_queue_s
                if f.median_run_s is not None:
                    run[i] = f.median_run_s
        return cls(queue, run)


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
