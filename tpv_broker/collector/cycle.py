"""One collection cycle: query InfluxDB once, build the snapshot, publish it.
The clock, the InfluxDB client and the store are passed in."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Callable

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.errors import MetricSourceError, StoreError
from tpv_broker.store.leader_lock import Fence
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.store.snapshots import SnapshotStore, encode_tool_stats
from .presets import PRESETS, RUNTIME_MEASUREMENT, CycleData, Preset, live_sources, presets_for
from .rows import ReadResult, Row
from .source import MetricSource
from .tool_levels import tool_levels

log = logging.getLogger("tpv_broker.collector")


@dataclass
class CycleReport:
    published: bool
    destinations: int = 0
    tools: int = 0
    rows_read: int = 0
    queries: int = 0
    newest_point_age_s: float | None = None
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    # InfluxDB as a whole failed (down, hung, garbled, nothing readable), as
    # opposed to Redis: what the daemon backs off on.
    source_failed: bool = False
    # Presets whose statement failed but whose last good figures went into
    # this snapshot -> how old that answer is (s).
    kept: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        age = "n/a" if self.newest_point_age_s is None else f"{self.newest_point_age_s:.0f} s"
        state = "published" if self.published else "NOT published"
        text = (
            f"{state}: {self.destinations} destinations, {self.tools} tools, "
            f"newest point {age} old, {self.rows_read} rows in {self.queries} queries, "
            f"{self.duration_s * 1000:.0f} ms"
        )
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        if self.kept:
            text += "; kept: " + ", ".join(f"{name} (read {age:.0f} s ago)" for name, age in sorted(self.kept.items()))
        return text


RUNTIME_PRESET = "destination_queue_run_time"


@dataclass
class RunTimeStats:
    """What the run-time statistics preset gave, kept apart from the live
    figures so that it can be reused by later cycles."""

    read_at: float
    tool_stats: dict[str, dict[str, ToolFigures]]  # exact tool id -> destination -> figures
    # destination -> (count-weighted median queue s, median run s, newest point)
    per_destination: dict[str, tuple[float | None, float | None, float | None]]
    rows_read: int
    # Built once from tool_stats (tool_levels), and their Redis payload.
    levels: dict[str, dict[str, ToolFigures]] | None = None
    payload: dict[str, str] | None = None
    # The publication (store.publish) that wrote this payload, or a later
    # one that kept it.
    published_id: str | None = None

    def prepare(self) -> None:
        if self.levels is None:
            self.levels = tool_levels(self.tool_stats)
        if self.payload is None:
            self.payload = encode_tool_stats(self.levels)

    @classmethod
    def from_data(cls, data: CycleData, read_at: float) -> RunTimeStats:
        per_destination = {
            d.id: (d.median_queue_s, d.median_run_s, d.sources.get(RUNTIME_MEASUREMENT))
            for d in data.destinations.values()
        }
        return cls(read_at, data.tool_stats, per_destination, data.rows_read)

    def merge_into(self, data: CycleData) -> None:
        for dest_id, (median_queue, median_run, at) in self.per_destination.items():
            d = data.destinations.get(dest_id)
            if d is None:
                d = data.destinations[dest_id] = DestinationFigures(id=dest_id)
            d.median_queue_s, d.median_run_s = median_queue, median_run
            if at is not None:
                d.sources[RUNTIME_MEASUREMENT] = max(at, d.sources.get(RUNTIME_MEASUREMENT, at))
        data.tool_stats = self.tool_stats


class StatsCache:
    """The daemon's memory of the run-time statistics between cycles:
    gxadmin writes them once a day, so they are re-read every
    ``collector.stats_refresh_s``, not every cycle, and the cycles in
    between neither query them nor rewrite them in Redis.

    With ``background`` (the daemon), ``refresh`` runs as a job of its own
    and a cycle reads them itself only when there are none yet; otherwise a
    cycle re-reads them when they are due."""

    def __init__(self, refresh_s: float, background: bool = False) -> None:
        self.refresh_s = refresh_s
        self.background = background
        # Replaced whole (never modified in place) by a refresh, so a cycle
        # running meanwhile keeps a consistent set.
        self.current: RunTimeStats | None = None

    def due(self, now: float) -> bool:
        return self.current is None or now - self.current.read_at >= self.refresh_s

    def reuse(self, now: float) -> RunTimeStats | None:
        """The statistics a cycle starting now should reuse, if any."""
        current = self.current
        if current is None or (not self.background and self.due(now)):
            return None
        return current

    def refresh(self, config: BrokerConfig, source: MetricSource, clock: Callable[[], float]) -> str | None:
        """Read the run-time statistics alone and keep them, with their
        fallback levels and Redis payload built here rather than in a cycle.
        Returns what went wrong, or None; on failure the last ones stay."""
        preset = PRESETS[RUNTIME_PRESET]
        started = clock()
        try:
            (result,) = source.read([preset], config.collector)
        except MetricSourceError as e:
            return str(e)
        if result.error is not None:
            return f"{preset.name}: {result.error}"
        data = CycleData(aliases=config.alias_map())
        # The same guard as a cycle's: odd rows are this preset's problem.
        problem = _apply(preset, result.rows, data, config)
        if problem is not None:
            return f"{preset.name}: {problem}"
        fresh = RunTimeStats.from_data(data, started)
        fresh.prepare()
        self.current = fresh
        return None


class LastAnswers:
    """The last good answer of each live preset (queue, capacity), so that
    when its statement fails, is cut off or garbled, the snapshot keeps the
    figures it gave while the other presets update. Their points keep their
    own times, so freshness (``live_at``, ``sources``) stays honest; and an
    answer older than ``collector.lookback_s`` is never reused, since
    InfluxDB itself would not return points that old."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[float, ReadResult]] = {}

    def keep(self, preset: str, result: ReadResult, read_at: float) -> None:
        self.answers[preset] = (read_at, result)

    def recall(self, preset: str, now: float, max_age_s: float) -> tuple[float, ReadResult] | None:
        earlier = self.answers.get(preset)
        if earlier is None or now - earlier[0] > max_age_s:
            return None
        return earlier


def _apply(preset: Preset, rows: list[Row], part: CycleData, config: BrokerConfig) -> str | None:
    """What went wrong turning the preset's rows into figures, or None."""
    try:
        preset.apply_rows(rows, part, config.collector)
    # The rows come from outside: whatever they break is this preset's
    # problem, reported, never the cycle's end.
    except Exception as e:  # noqa: BLE001
        return f"unexpected data ({type(e).__name__}: {e})"
    if rows and not part.rows_read:
        # Rows, none of them usable (every count text, say): read as "no
        # rows", that would say "no jobs anywhere".
        return f"{len(rows)} row(s), none usable (values of the wrong type?)"
    return None


def _merge(part: CycleData, data: CycleData) -> None:
    """Add one preset's figures to the cycle's: each preset sets its own
    fields of a destination (queue counts, capacity, medians)."""
    for dest_id, figures in part.destinations.items():
        target = data.destinations.get(dest_id)
        if target is None:
            data.destinations[dest_id] = figures
            continue
        for name in figures.model_fields_set - {"id", "sources"}:
            setattr(target, name, getattr(figures, name))
        for source, at in figures.sources.items():
            target.sources[source] = max(at, target.sources.get(source, at))
    for tool_id, per_destination in part.tool_stats.items():
        data.tool_stats.setdefault(tool_id, {}).update(per_destination)
    data.rows_read += part.rows_read
    data.read_ok |= part.read_ok


def build_snapshot(data: CycleData, config: BrokerConfig, now: float, cycle_s: float,
                   levels: dict[str, dict[str, ToolFigures]] | None = None,
                   collector: str | None = None) -> Snapshot:
    """Merge what the metrics said with what config says about destinations."""
    for dest_id, settings in config.destinations.items():
        d = data.destinations.get(dest_id)
        if d is None:
            d = data.destinations[dest_id] = DestinationFigures(id=dest_id)
        d.in_config = True
        # Config capacity only fills gaps: measured figures win.
        if d.cpus_total is None and settings.cores is not None:
            d.cpus_total = settings.cores
        if d.mem_total_gb is None and settings.mem is not None:
            d.mem_total_gb = settings.mem
        if d.gpus_total is None and settings.gpus is not None:
            d.gpus_total = settings.gpus
    # gxadmin prints nothing for a destination without jobs: when the queue
    # query worked, a destination it did not mention has none.
    configured = presets_for(config.collector)
    queue_known = any(p.feeds_queue and p.name in data.read_ok for p in configured)
    live = live_sources(configured)
    newest: float | None = None
    for d in data.destinations.values():
        if queue_known and d.queued is None:
            d.queued, d.running = 0.0, 0.0
        d.metrics_at = max(d.sources.values()) if d.sources else None
        live_at = [at for source, at in d.sources.items() if source in live]
        d.live_at = max(live_at) if live_at else None
        if d.metrics_at is not None:
            newest = d.metrics_at if newest is None else max(newest, d.metrics_at)
    meta = SnapshotMeta(
        created_at=now,
        newest_point_at=newest,
        destinations=len(data.destinations),
        tools=len(data.tool_stats),
        cycle_s=cycle_s,
        collector=collector or socket.gethostname(),
    )
    if levels is None:
        levels = tool_levels(data.tool_stats)
    return Snapshot(meta=meta, destinations=data.destinations, tool_stats=levels)


def collect_once(
    config: BrokerConfig,
    source: MetricSource,
    store: SnapshotStore,
    clock: Callable[[], float],
    stats: StatsCache | None = None,
    fence: Fence | None = None,
    collector_id: str | None = None,
    answers: LastAnswers | None = None,
) -> CycleReport:
    """Never raises for InfluxDB or Redis trouble: the report says what went
    wrong, and the last published snapshot stays in Redis untouched.

    ``answers`` (the daemon's): a preset whose statement fails this cycle
    gets the figures of its last good answer (see ``LastAnswers``).

    ``stats`` (the daemon's): reuse the run-time statistics read earlier
    (see ``StatsCache``); without it, every cycle reads everything.
    ``fence``: publish only while holding the collector lease (``leader_lock``);
    ``collector_id``: the snapshot's ``collector`` (default: the host name)."""
    started = clock()
    presets = presets_for(config.collector)
    cached = stats.reuse(started) if stats is not None else None
    if cached is not None:
        presets = [p for p in presets if p.name != RUNTIME_PRESET]
    report = CycleReport(published=False, queries=len(presets))
    data = CycleData(aliases=config.alias_map())
    fresh: RunTimeStats | None = None
    try:
        results = source.read(presets, config.collector) if presets else []
    except MetricSourceError as e:
        report.errors.append(str(e))
        report.source_failed = True
        report.duration_s = clock() - started
        return report
    ok = 0
    failed: list[tuple[str, str]] = []
    for preset, result in zip(presets, results):
        # Each preset is applied on its own, so one that fails halfway
        # leaves nothing half-done in the others' figures.
        part = CycleData(aliases=data.aliases)
        problem = result.error if result.error is not None else _apply(preset, result.rows, part, config)
        if problem is None:
            ok += 1
            report.errors.extend(f"{preset.name}: {w}" for w in result.warnings)
            if preset.name == RUNTIME_PRESET:
                # The run-time statistics are gathered apart, so that they can be kept.
                fresh = RunTimeStats.from_data(part, started)
                data.rows_read += fresh.rows_read
                data.read_ok.add(preset.name)
            else:
                part.read_ok.add(preset.name)
                _merge(part, data)
                if answers is not None:
                    answers.keep(preset.name, result, started)
            continue
        # "database not found", a statement error, a partial or garbled
        # answer: name the preset, keep the others.
        earlier = answers.recall(preset.name, started, config.collector.lookback_s) \
            if answers is not None and preset.name != RUNTIME_PRESET else None
        if earlier is not None:
            read_at, previous = earlier
            part = CycleData(aliases=data.aliases)
            if _apply(preset, previous.rows, part, config) is None:
                part.read_ok.add(preset.name)
                _merge(part, data)
                report.kept[preset.name] = started - read_at
        failed.append((preset.name, problem))
    if fresh is None and cached is None and stats is not None and stats.current is not None \
            and RUNTIME_PRESET in config.collector.presets:
        # The refresh failed: the last figures are better than none.
        cached = stats.current
    if cached is not None:
        cached.merge_into(data)
        data.read_ok.add(RUNTIME_PRESET)
    elif fresh is not None:
        fresh.merge_into(data)
        if stats is not None:
            stats.current = fresh
    if presets and ok == 0:
        # Kept figures alone never make a new snapshot: it would look fresh.
        report.kept.clear()
    for name, problem in failed:
        if name in report.kept:
            problem += " (its last good figures kept)"
        elif ok and name != RUNTIME_PRESET:
            problem += " (its figures are missing from this snapshot)"
        report.errors.append(f"{name}: {problem}")
    if presets and ok == 0:
        report.source_failed = True
        problem = source.database_problem()
        if problem is not None:
            report.errors = [problem]
        report.errors.append("no preset could be read; keeping the last snapshot")
        report.duration_s = clock() - started
        return report
    now = clock()
    kept = cached or (fresh if stats is not None else None)
    if kept is not None:
        kept.prepare()
    snapshot = build_snapshot(data, config, now, now - started, kept.levels if kept is not None else None,
                              collector_id)
    snapshot.meta.problems = "; ".join(report.errors)
    try:
        published_id = store.publish(
            snapshot,
            reuse_tool_stats=cached.published_id if cached is not None else None,
            tool_stats_payload=kept.payload if kept is not None else None,
            fence=fence,
        )
    except StoreError as e:
        report.errors.append(str(e))
    else:
        report.published = True
        if kept is not None:
            kept.published_id = published_id
    report.destinations = snapshot.meta.destinations
    report.tools = snapshot.meta.tools
    report.rows_read = data.rows_read
    if snapshot.meta.newest_point_at is not None:
        report.newest_point_age_s = max(0.0, now - snapshot.meta.newest_point_at)
    report.duration_s = clock() - started
    return report
