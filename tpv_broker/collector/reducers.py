"""The named ways a preset's rows combine into snapshot figures. A preset
(config/preset_spec.py) is data and picks one of these by name; they are
the only per-preset code.

- ``newest``: per destination, the newest row's figures.
- ``sum_newest_batch``: the newest point of each series; per destination
  the sum over the series in the newest batch (points within
  ``collector.batch_window_s`` of the newest, across all destinations or per
  destination). Series left out of the newest batch count as zero: the
  writer no longer printed them. Nodes in an unavailable state give no free
  capacity.
- ``slot_shapes``: per destination, the free slot shapes of the newest batch.
- ``tool_stats``: per (tool, destination), the newest row's run-time figures.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import DESTINATION_FIGURES, TEXT_FIGURES, PresetSpec
from tpv_broker.core.models import SlotShape, Status, ToolFigures

from .cycle_data import CycleData, num, strip_quotes
from .rows import Row
from .run_times import destination_run_times, supersedes

# figure -> DestinationFigures attribute (used figures have none: they only
# make free = total - used).
_ATTR = {
    "queued": "queued", "running": "running",
    "cpus_total": "cpus_total", "cpus_free": "cpus_free",
    "mem_total": "mem_total_gb", "mem_free": "mem_free_gb",
    "gpus_total": "gpus_total", "gpus_free": "gpus_free",
    "carbon_intensity": "carbon_intensity",
}
_RESOURCES = (("cpus_total", "cpus_used", "cpus_free"), ("mem_total", "mem_used", "mem_free"),
              ("gpus_total", "gpus_used", "gpus_free"))


# Not frozen, with slots: one is built per row, and there can be 100,000 rows.
@dataclass(slots=True)
class Entry:
    """One row that names a destination and a time, with its figures in
    snapshot units."""

    dest_id: str
    at: float
    figures: dict[str, Any]
    complete: bool  # has every field in the preset's ``require``
    row: Row


@dataclass(frozen=True)
class _Plan:
    """A preset's description turned into what the per-row loop needs."""

    keys: tuple[str, ...]
    id_name: str
    id_is_tag: bool
    groups: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...]
    # (field, field as InfluxQL names it beside a tag of the same name, figure, factor, text?, where)
    fields: tuple[tuple[str, str, str, float, bool, tuple[tuple[str, frozenset[str]], ...]], ...]
    require: tuple[str, ...]


_PLANS: dict[int, tuple[PresetSpec, _Plan]] = {}


def _plan(spec: PresetSpec) -> _Plan:
    cached = _PLANS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    source = spec.destination
    plan = _Plan(
        keys=tuple(spec.tags_used()),
        id_name=source.name,
        id_is_tag=source.tag is not None,
        groups=tuple((dest, tuple(m.values), tuple(m.tags.items())) for dest, m in source.groups.items()),
        fields=tuple(
            (fm.field, f"{fm.field}_1", fm.figure, fm.factor(), fm.figure in TEXT_FIGURES,
             tuple((tag, frozenset(values)) for tag, values in fm.where.items()))
            for fm in spec.fields
        ),
        require=tuple(spec.require),
    )
    # The spec is kept with its plan, so a recycled id() never finds another's.
    _PLANS[id(spec)] = (spec, plan)
    return plan


def _destinations(plan: _Plan, row: Row, data: CycleData) -> list[str]:
    raw = row.tag(plan.id_name) if plan.id_is_tag else row.tag_or_field(plan.id_name)
    if not isinstance(raw, str):
        return []
    if not plan.groups:
        dest = data.canonical(raw)
        return [dest] if dest and _shown(dest, data) else []
    hidden_before = data.rows_hidden
    value = strip_quotes(raw)
    out = []
    for dest_id, patterns, tags in plan.groups:
        if patterns and not any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns):
            continue
        if any(strip_quotes(str(row.tag(tag) or "")) != want for tag, want in tags):
            continue
        dest = data.canonical(dest_id)
        if _shown(dest, data):
            out.append(dest)
    data.rows_hidden = min(data.rows_hidden, hidden_before + 1)
    return out


def _shown(dest_id: str, data: CycleData) -> bool:
    if dest_id in data.hidden:
        data.rows_hidden += 1
        return False
    return True


# No count, capacity, time or intensity is negative or reaches a trillion
# (jobs, cores, GB, seconds): such a value is a writer's bug, and two of
# 1e308 overflowed the sums built from them, every cycle.
IMPLAUSIBLE = 1e12


def _figures(plan: _Plan, row: Row, data: CycleData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    values = row.values
    for name, alt, figure, factor, text, where in plan.fields:
        if where and any(strip_quotes(str(row.tag(tag) or "")) not in accepted for tag, accepted in where):
            continue
        raw = values.get(alt)
        if raw is None or raw == "":
            raw = values.get(name)
        if text:
            if isinstance(raw, str):
                out[figure] = strip_quotes(raw)
            continue
        value = raw if type(raw) is float else num(raw)
        if value is None:
            continue
        value *= factor
        # Written this way, NaN (text "NaN" reads as one) fails it too.
        if not 0.0 <= value < IMPLAUSIBLE:
            data.implausible += 1
            continue
        out[figure] = value
    return out


def entries(spec: PresetSpec, rows: Iterable[Row], data: CycleData) -> list[Entry]:
    """The rows that name a destination and a time; with read
    newest_per_group, only the newest row of each group (the InfluxQL
    statement already did that; the Flux query returns each series' newest
    point, and series of one group merge here)."""
    plan = _plan(spec)
    if spec.read == "newest_per_group":
        keys = plan.keys
        newest: dict[tuple[Any, ...], tuple[float, Row]] = {}
        for row in rows:
            at = num(row.at)
            if at is None:
                continue
            key = tuple([row.tag(t) for t in keys])
            kept = newest.get(key)
            if kept is None or at > kept[0]:
                newest[key] = (at, row)
        rows = [row for _, row in newest.values()]
    out = []
    for row in rows:
        at = num(row.at)
        if at is None:
            continue
        dests = _destinations(plan, row, data)
        if not dests:
            continue
        figures = _figures(plan, row, data)
        complete = all(row.field(name) is not None for name in plan.require) if plan.require else True
        for dest in dests:
            out.append(Entry(dest, at, figures, complete, row))
    return out


def _free(figures: Mapping[str, float], total: str, used: str, free: str) -> float | None:
    if free in figures:
        return figures[free]
    if total in figures and used in figures:
        return max(0.0, figures[total] - figures[used])
    return None


def _status(value: Any) -> Status | None:
    """A status a source reported, if it is one we know."""
    if value == "online":
        return "online"
    if value == "offline":
        return "offline"
    return None


def newest(spec: PresetSpec, found: list[Entry], data: CycleData, s: CollectorSettings) -> None:
    data.rows_read += len(found)
    chosen: dict[str, Entry] = {}
    for e in found:
        if e.dest_id not in chosen or e.at >= chosen[e.dest_id].at:
            chosen[e.dest_id] = e
    fed = {fm.figure for fm in spec.fields}
    for dest_id, e in chosen.items():
        d = data.destination(dest_id, spec.measurement, e.at)
        status = _status(e.figures.get("status"))
        if status is not None:
            d.status = status
        if not e.complete:
            continue
        for total, used, free in _RESOURCES:
            if free in fed or (total in fed and used in fed):
                setattr(d, _ATTR[free], _free(e.figures, total, used, free))
        for figure in fed & DESTINATION_FIGURES:
            if figure in _ATTR and not figure.endswith("_free"):
                setattr(d, _ATTR[figure], e.figures.get(figure))


def _in_batch(found: list[Entry], spec: PresetSpec, s: CollectorSettings) -> list[Entry]:
    if not found:
        return []
    if spec.batch == "global":
        top = max(e.at for e in found)
        return [e for e in found if e.at >= top - s.batch_window_s]
    tops: dict[str, float] = {}
    for e in found:
        tops[e.dest_id] = max(e.at, tops.get(e.dest_id, e.at))
    return [e for e in found if e.at >= tops[e.dest_id] - s.batch_window_s]


def _available(spec: PresetSpec, e: Entry) -> bool:
    state = e.figures.get("node_state")
    if not isinstance(state, str) or not spec.unavailable_states:
        return True
    unavailable = {u.lower() for u in spec.unavailable_states}
    parts = [p.strip().lower() for p in state.replace("|", "+").split("+")]
    return not any(p.endswith("*") or p.rstrip("*") in unavailable for p in parts)


def sum_newest_batch(spec: PresetSpec, found: list[Entry], data: CycleData, s: CollectorSettings) -> None:
    found = [e for e in found if e.figures]
    data.rows_read += len(found)
    fed = {fm.figure for fm in spec.fields}
    # What this preset reports, each starting at zero for every destination it saw.
    sums_of: list[str] = [f for f in ("queued", "running", "cpus_total", "mem_total", "gpus_total") if f in fed]
    sums_of += [free for total, used, free in _RESOURCES if free in fed or (total in fed and used in fed)]
    totals: dict[str, dict[str, float]] = {}
    for e in found:
        data.destination(e.dest_id, spec.measurement, e.at)
        totals.setdefault(e.dest_id, dict.fromkeys(sums_of, 0.0))
    any_available: dict[str, bool] = defaultdict(bool)
    newest_status: dict[str, tuple[float, Status]] = {}
    for e in _in_batch(found, spec, s):
        counts = totals[e.dest_id]
        available = _available(spec, e)
        any_available[e.dest_id] |= available
        for figure in sums_of:
            if figure.endswith("_free"):
                total, used = figure.replace("_free", "_total"), figure.replace("_free", "_used")
                value = _free(e.figures, total, used, figure) if available else 0.0
            else:
                value = e.figures.get(figure)
            counts[figure] += value or 0.0
        status = _status(e.figures.get("status"))
        if status is not None and (e.dest_id not in newest_status or e.at >= newest_status[e.dest_id][0]):
            newest_status[e.dest_id] = (e.at, status)
    for dest_id, counts in totals.items():
        d = data.destinations[dest_id]
        for figure, value in counts.items():
            setattr(d, _ATTR[figure], value)
        if "node_state" in fed:
            d.status = "online" if any_available[dest_id] else "offline"
        if dest_id in newest_status:
            d.status = newest_status[dest_id][1]


def slot_shapes(spec: PresetSpec, found: list[Entry], data: CycleData, s: CollectorSettings) -> None:
    found = [e for e in found if e.figures]
    data.rows_read += len(found)
    shapes: dict[str, list[SlotShape]] = {}
    newest_status: dict[str, tuple[float, Status]] = {}
    for e in found:
        data.destination(e.dest_id, spec.measurement, e.at)
        shapes.setdefault(e.dest_id, [])
    for e in _in_batch(found, spec, s):
        f = e.figures
        status = _status(f.get("status"))
        if status is not None and (e.dest_id not in newest_status or e.at >= newest_status[e.dest_id][0]):
            newest_status[e.dest_id] = (e.at, status)
        count = f.get("slot_count") or 0.0
        if count > 0 and ("slot_cpus" in f or "slot_mem" in f):
            shapes[e.dest_id].append(SlotShape(count=count, cpus=f.get("slot_cpus"), mem_gb=f.get("slot_mem"),
                                               gpus=f.get("slot_gpus")))
    for dest_id, found_shapes in shapes.items():
        d = data.destinations[dest_id]
        # Largest first, so the snapshot reads like a table.
        found_shapes.sort(key=lambda sh: (-(sh.cpus or 0), -(sh.mem_gb or 0), -(sh.gpus or 0), -sh.count))
        d.slot_shapes = found_shapes
        d.cpus_free = _shape_sum(found_shapes, "cpus")
        d.mem_free_gb = _shape_sum(found_shapes, "mem_gb")
        d.gpus_free = _shape_sum(found_shapes, "gpus")
        if dest_id in newest_status:
            d.status = newest_status[dest_id][1]


def _shape_sum(shapes: list[SlotShape], attr: str) -> float | None:
    values: list[tuple[float, float | None]] = [(sh.count, getattr(sh, attr)) for sh in shapes]
    if shapes and all(v is None for _, v in values):
        return None
    return sum(count * v for count, v in values if v is not None)


def tool_stats(spec: PresetSpec, found: list[Entry], data: CycleData, s: CollectorSettings) -> None:
    assert spec.tool_tag is not None
    touched: set[str] = set()
    for e in found:
        tool_id = e.row.tag(spec.tool_tag)
        if not isinstance(tool_id, str):
            continue
        data.rows_read += 1
        f = e.figures
        figures = ToolFigures(count=f.get("job_count") or 0.0, at=e.at, median_queue_s=f.get("median_queue"),
                              median_run_s=f.get("median_run"), perc_95_run_s=f.get("perc_95_run"))
        d = data.destination(e.dest_id, spec.measurement, e.at)
        per_destination = data.tool_stats.setdefault(tool_id, {})
        # Two ids aliased to one destination: the newer point wins, whatever
        # order the rows came in (a merged refresh must equal a full read).
        if supersedes(figures, per_destination.get(d.id)):
            per_destination[d.id] = figures
        touched.add(d.id)
    for dest_id, (median_queue, median_run, _) in destination_run_times(data.tool_stats).items():
        if dest_id in touched:
            d = data.destinations[dest_id]
            d.median_queue_s, d.median_run_s = median_queue, median_run


def error_counts(spec: PresetSpec, found: list[Entry], data: CycleData, s: CollectorSettings) -> None:
    """Every point of the window: each reports the errors of its own
    period (gxadmin: the hour before it). Kept as points, so health can
    count those after a given time; no destination figures."""
    errors = data.errors if data.errors is not None else {}
    data.errors = errors
    for e in found:
        count = e.figures.get("errors")
        # A count is a whole number of jobs, 0 or more: anything else (NaN,
        # -3) is garbage that must not take health, or the collector, down.
        if count is None or not math.isfinite(count) or count < 0:
            continue
        data.rows_read += 1
        errors.setdefault(e.dest_id, []).append((e.at, count))


Reducer = Callable[[PresetSpec, list[Entry], CycleData, CollectorSettings], None]

REDUCERS: dict[str, Reducer] = {
    "newest": newest,
    "sum_newest_batch": sum_newest_batch,
    "slot_shapes": slot_shapes,
    "tool_stats": tool_stats,
    "error_counts": error_counts,
}


def apply_rows(spec: PresetSpec, rows: Iterable[Row], data: CycleData, s: CollectorSettings) -> None:
    REDUCERS[spec.combine](spec, entries(spec, rows, data), data, s)

