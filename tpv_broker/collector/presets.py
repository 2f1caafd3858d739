"""Metric presets: for each measurement Galaxy sites already collect, the
one InfluxQL statement that reads it for *all* destinations (GROUP BY tags,
never a query per destination) and how its rows become snapshot figures.

Schemas: ../shared/reference/metric-schemas.md. gxadmin writes every number
as a float; pulsar-util reports HTCondor memory in MiB.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from ..shared.config import CollectorSettings
from ..shared.models import MIB_PER_GB, DestinationFigures, ToolFigures
from .influx import Series, quote_ident


def strip_quotes(value: str) -> str:
    """pulsar-util writes ``destination_id="galaxy_sk01"`` into tag values and
    usegalaxy.eu ``classad='machine'``: the quotes are not part of the id."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ms(seconds: float) -> str:
    """An InfluxQL duration literal; milliseconds keep sub-second settings."""
    return f"{max(1, round(seconds * 1000))}ms"


MAX_CLOCK_SKEW_S = 300.0


def _window(lookback_s: float) -> str:
    # The upper bound matters: a point stamped in the future (a Galaxy host
    # with a skewed clock, a wrong write precision) would otherwise win
    # last() and hide every real update until its time came.
    return f"time > now() - {_ms(lookback_s)} AND time <= now() + {_ms(MAX_CLOCK_SKEW_S)}"


@dataclass
class CycleData:
    """What one cycle has gathered so far, keyed by canonical destination id."""

    aliases: dict[str, str]
    destinations: dict[str, DestinationFigures] = field(default_factory=dict)
    tool_stats: dict[str, dict[str, ToolFigures]] = field(default_factory=dict)
    rows_read: int = 0
    # Presets whose statement succeeded this cycle (even with no rows).
    read_ok: set[str] = field(default_factory=set)

    def canonical(self, raw_id: str) -> str:
        clean = strip_quotes(raw_id)
        return self.aliases.get(clean, clean)

    def destination(self, raw_id: str, source: str, at: float | None) -> DestinationFigures:
        dest_id = self.canonical(raw_id)
        d = self.destinations.get(dest_id)
        if d is None:
            d = self.destinations[dest_id] = DestinationFigures(id=dest_id)
        if at is not None:
            d.sources[source] = max(at, d.sources.get(source, at))
        return d


@dataclass(frozen=True)
class Preset:
    name: str
    statement: Callable[[CollectorSettings], str]
    apply: Callable[[list[Series], CycleData, CollectorSettings], None]


# -- gxadmin queue --by destination ---------------------------------------
QUEUE_MEASUREMENT = "queue_by_destination"


def _queue_statement(s: CollectorSettings) -> str:
    return (
        f'SELECT last("count") AS "count" FROM {quote_ident(QUEUE_MEASUREMENT)} '
        f"WHERE {_window(s.lookback_s)} GROUP BY \"destination_id\", \"state\""
    )


def _queue_apply(series: list[Series], data: CycleData, s: CollectorSettings) -> None:
    points = []
    for ser in series:
        dest, state = ser.tags.get("destination_id"), ser.tags.get("state")
        if not dest or state not in ("queued", "running"):
            continue
        for row in ser.rows():
            at, count = _num(row.get("time")), _num(row.get("count"))
            if at is not None and count is not None:
                points.append((dest, state, at, count))
    data.rows_read += len(points)
    if not points:
        return
    newest = max(p[2] for p in points)
    # Several metric ids can alias one destination: their counts add up.
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"queued": 0.0, "running": 0.0})
    for dest, state, at, count in points:
        counts = totals[data.destination(dest, QUEUE_MEASUREMENT, at).id]
        # gxadmin prints only non-empty groups: a series absent from the
        # newest batch means no job in that state any more.
        if at >= newest - s.batch_window_s:
            counts[state] += count
    for dest_id, counts in totals.items():
        d = data.destinations[dest_id]
        d.queued, d.running = counts["queued"], counts["running"]


# -- gxadmin destination-queue-run-time --seconds ------------------------------
RUNTIME_MEASUREMENT = "destination-queue-run-time"
_RUNTIME_FIELDS = {
    "count": "count",
    "median_queue": "median_queue_s",
    "median_run": "median_run_s",
    "perc_95_run": "perc_95_run_s",
}


def _runtime_statement(s: CollectorSettings) -> str:
    fields = ", ".join(quote_ident(f) for f in _RUNTIME_FIELDS)
    return (
        f"SELECT {fields} FROM {quote_ident(RUNTIME_MEASUREMENT)} "
        f"WHERE {_window(s.stats_lookback_s)} "
        f'GROUP BY "destination_id", "tool_id" ORDER BY time DESC LIMIT 1'
    )


def _runtime_apply(series: list[Series], data: CycleData, s: CollectorSettings) -> None:
    weighted: dict[str, list[float]] = {}  # dest -> [count, sum count*queue, count_q, sum count*run, count_r]
    for ser in series:
        raw_dest, tool_id = ser.tags.get("destination_id"), ser.tags.get("tool_id")
        if not raw_dest or not tool_id:
            continue
        for row in ser.rows()[:1]:
            data.rows_read += 1
            at = _num(row.get("time"))
            values = {ours: _num(row.get(theirs)) for theirs, ours in _RUNTIME_FIELDS.items()}
            count = values.pop("count") or 0.0
            figures = ToolFigures(count=count, at=at, **values)
            d = data.destination(raw_dest, RUNTIME_MEASUREMENT, at)
            data.tool_stats.setdefault(tool_id, {})[d.id] = figures
            acc = weighted.setdefault(d.id, [0.0, 0.0, 0.0, 0.0])
            if count > 0 and figures.median_queue_s is not None:
                acc[0] += count
                acc[1] += count * figures.median_queue_s
            if count > 0 and figures.median_run_s is not None:
                acc[2] += count
                acc[3] += count * figures.median_run_s
    for dest_id, (nq, sq, nr, sr) in weighted.items():
        d = data.destinations[dest_id]
        d.median_queue_s = sq / nq if nq else None
        d.median_run_s = sr / nr if nr else None


# -- pulsar-util htcondor_cluster_usage (one line per site) -------------------
CONDOR_MEASUREMENT = "htcondor_cluster_usage"


def _condor_statement(s: CollectorSettings) -> str:
    # destination_id is a string *field* in this format, so it cannot be
    # grouped by; the rows of the lookback window are few (sites x minutes).
    return f"SELECT * FROM {quote_ident(CONDOR_MEASUREMENT)} WHERE {_window(s.lookback_s)}"


def _condor_apply(series: list[Series], data: CycleData, s: CollectorSettings) -> None:
    newest: dict[str, tuple[float, dict[str, Any]]] = {}
    for ser in series:
        for row in ser.rows():
            data.rows_read += 1
            # A tag and a field of the same name come back as x and x_1.
            raw = row.get("destination_id") or row.get("destination_id_1")
            at = _num(row.get("time"))
            if not isinstance(raw, str) or at is None:
                continue
            dest_id = data.canonical(raw)
            if dest_id not in newest or at >= newest[dest_id][0]:
                newest[dest_id] = (at, row)
    for dest_id, (at, row) in newest.items():
        d = data.destination(dest_id, CONDOR_MEASUREMENT, at)
        _condor_status(d, row)
        if _num(row.get("total_detected_cpus")) is None:
            # The newer one-line-per-free-slot-shape format has no totals;
            # until it has a preset of its own, only its status is used.
            continue
        d.cpus_total = _num(row.get("total_detected_cpus"))
        d.cpus_free = _num(row.get("unclaimed_cpus"))
        total_mem, free_mem = _num(row.get("total_memory")), _num(row.get("unclaimed_memory"))
        d.mem_total_gb = total_mem / MIB_PER_GB if total_mem is not None else None
        d.mem_free_gb = free_mem / MIB_PER_GB if free_mem is not None else None
        d.gpus_total = _num(row.get("total_gpu_slots"))
        d.gpus_free = _num(row.get("unclaimed_gpus"))


def _condor_status(d: DestinationFigures, row: dict[str, Any]) -> None:
    status = row.get("destination_status")
    if isinstance(status, str) and strip_quotes(status) in ("online", "offline"):
        d.status = strip_quotes(status)  # type: ignore[assignment]


# Sources of live figures (queue, free capacity), as opposed to the daily
# run-time statistics: destination freshness is judged on these.
LIVE_SOURCES = frozenset({QUEUE_MEASUREMENT, CONDOR_MEASUREMENT})

PRESETS: dict[str, Preset] = {
    "queue_by_destination": Preset("queue_by_destination", _queue_statement, _queue_apply),
    "destination_queue_run_time": Preset("destination_queue_run_time", _runtime_statement, _runtime_apply),
    "htcondor_cluster_usage": Preset("htcondor_cluster_usage", _condor_statement, _condor_apply),
}
