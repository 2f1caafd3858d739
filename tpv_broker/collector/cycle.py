"""One collection cycle, ``collect_once``, as named steps: read InfluxDB
once, apply each preset's answer (a failed one with its last good answer),
merge the run-time statistics, build the snapshot, publish it, report. The
clock, the InfluxDB client, the store and what the collector carries from
one cycle to the next (``state.CollectorState``) are passed in."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.errors import MetricSourceError, StoreError
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.leader_lock import LeaderLease
from tpv_broker.store.snapshots import SnapshotStore

from .presets import CycleData, Preset, live_sources, presets_for
from .rows import ReadResult
from .source import MetricSource
from .state import RUNTIME_PRESET, CollectorState, LastAnswers, Publication, RunTimeStats, StatsCache
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


@dataclass
class _Gathered:
    """What this cycle's presets gave, before the run-time statistics are merged."""

    data: CycleData
    # Presets whose own answer this cycle was usable (not a kept one).
    presets_read: int = 0
    # The run-time statistics, when read this cycle: gathered apart, so that they can be kept.
    fresh_stats: RunTimeStats | None = None


def collect_once(
    config: BrokerConfig,
    source: MetricSource,
    store: SnapshotStore,
    clock: Callable[[], float],
    state: CollectorState | None = None,
    lease: LeaderLease | None = None,
) -> CycleReport:
    """One cycle: read the presets, apply each (a failed one with its last
    good answer), merge the run-time statistics, build the snapshot, publish
    it, report. Never raises for InfluxDB or Redis trouble: the report says
    what went wrong, and the last published snapshot stays in Redis untouched.

    ``state``: what the collector carries between cycles (``CollectorState``);
    without one, everything is read and nothing is remembered.
    ``lease``: publish only while holding it (its fence is checked inside the
    swap, ``leader_lock``), with its instance id as the snapshot's
    ``collector`` (without one: the host name)."""
    state = state if state is not None else CollectorState.new(config)
    started = clock()
    cached = state.stats.reuse(started)
    presets = _presets_to_read(config, cached)
    report = CycleReport(published=False, queries=len(presets))
    results = _read(source, presets, config, report)
    if results is None:
        return _finished(report, clock, started)
    gathered = _apply_with_fallback(presets, results, config, state.answers, started, report)
    if presets and not gathered.presets_read:
        _nothing_read(source, report)
        return _finished(report, clock, started)
    stats = _merge_statistics(gathered, cached, state.stats, config)
    now = clock()
    snapshot = _build(gathered.data, config, now, now - started, stats, lease, report)
    _publish(store, snapshot, state, stats, lease, report, store.inflight(config.inflight))
    _describe(report, snapshot, gathered.data, now)
    return _finished(report, clock, started)


def _presets_to_read(config: BrokerConfig, cached: RunTimeStats | None) -> list[Preset]:
    presets = presets_for(config.collector)
    if cached is None:
        return presets
    return [p for p in presets if p.name != RUNTIME_PRESET]


def _read(source: MetricSource, presets: list[Preset], config: BrokerConfig,
          report: CycleReport) -> list[ReadResult] | None:
    """Every preset's answer, in one request; None (the report says why)
    when InfluxDB cannot be read at all."""
    if not presets:
        return []
    try:
        return source.read(presets, config.collector)
    except MetricSourceError as e:
        report.errors.append(str(e))
        report.source_failed = True
        return None


def _apply_with_fallback(presets: list[Preset], results: list[ReadResult], config: BrokerConfig,
                         answers: LastAnswers, started: float, report: CycleReport) -> _Gathered:
    """Each preset's answer applied on its own, so one that fails halfway
    leaves nothing half-done in the others' figures. A live preset whose
    answer is unusable ("database not found", a statement error, a partial
    or garbled answer) gets its last good one, if recent; either way it is
    named, and the others are kept."""
    gathered = _Gathered(CycleData(aliases=config.alias_map()))
    failed: list[tuple[str, str]] = []
    for preset, result in zip(presets, results, strict=True):
        part = CycleData(aliases=gathered.data.aliases)
        problem = (result.error if result.error is not None
                   else preset.apply_checked(result.rows, part, config.collector))
        if problem is None:
            gathered.presets_read += 1
            report.errors.extend(f"{preset.name}: {w}" for w in result.warnings)
            _take(preset, part, gathered, started)
            if preset.name != RUNTIME_PRESET:
                answers.keep(preset.name, result, started)
            continue
        if preset.name != RUNTIME_PRESET:
            kept_age = _apply_last_good(preset, answers, config, started, gathered.data)
            if kept_age is not None:
                report.kept[preset.name] = kept_age
        failed.append((preset.name, problem))
    if presets and not gathered.presets_read:
        # Kept figures alone never make a new snapshot: it would look fresh.
        report.kept.clear()
    for name, problem in failed:
        if name in report.kept:
            problem += " (its last good figures kept)"
        elif gathered.presets_read and name != RUNTIME_PRESET:
            problem += " (its figures are missing from this snapshot)"
        report.errors.append(f"{name}: {problem}")
    return gathered


def _take(preset: Preset, part: CycleData, gathered: _Gathered, started: float) -> None:
    """Add one preset's good answer to the cycle's figures."""
    if preset.name == RUNTIME_PRESET:
        gathered.fresh_stats = RunTimeStats.from_data(part, started)
        gathered.data.rows_read += part.rows_read
    else:
        _merge(part, gathered.data)
    gathered.data.read_ok.add(preset.name)


def _apply_last_good(preset: Preset, answers: LastAnswers, config: BrokerConfig, started: float,
                     data: CycleData) -> float | None:
    """Apply the preset's last good answer, if there is a recent one; how
    old it is (s), or None."""
    earlier = answers.recall(preset.name, started, config.collector.lookback_s)
    if earlier is None:
        return None
    read_at, previous = earlier
    part = CycleData(aliases=data.aliases)
    if preset.apply_checked(previous.rows, part, config.collector) is not None:
        return None
    part.read_ok.add(preset.name)
    _merge(part, data)
    return started - read_at


def _nothing_read(source: MetricSource, report: CycleReport) -> None:
    report.source_failed = True
    problem = source.database_problem()
    if problem is not None:
        report.errors = [problem]
    report.errors.append("no preset could be read; keeping the last snapshot")


def _merge_statistics(gathered: _Gathered, cached: RunTimeStats | None, cache: StatsCache,
                      config: BrokerConfig) -> RunTimeStats | None:
    """Merge the run-time statistics into the cycle's figures and return
    them: the ones kept from an earlier read, else those read now (kept from
    now on), else, when this read of them failed, the last ones (better than
    none)."""
    data, fresh = gathered.data, gathered.fresh_stats
    if cached is None and fresh is None and RUNTIME_PRESET in config.collector.presets:
        cached = cache.current
    if cached is not None:
        cached.merge_into(data)
        data.read_ok.add(RUNTIME_PRESET)
        return cached
    if fresh is not None:
        fresh.merge_into(data)
        cache.keep_full_read(fresh)
    return fresh


def _build(data: CycleData, config: BrokerConfig, now: float, cycle_s: float, stats: RunTimeStats | None,
           lease: LeaderLease | None, report: CycleReport) -> Snapshot:
    if stats is not None:
        stats.prepare()
    snapshot = build_snapshot(data, config, now, cycle_s, stats.levels if stats is not None else None,
                              lease.instance_id if lease is not None else None)
    snapshot.meta.problems = "; ".join(report.errors)
    return snapshot


def _publish(store: SnapshotStore, snapshot: Snapshot, state: CollectorState, stats: RunTimeStats | None,
             lease: LeaderLease | None, report: CycleReport, charges: InflightStore | None) -> None:
    try:
        published_id = store.publish(
            snapshot,
            reuse_tool_stats=state.published_with(stats),
            tool_stats_payload=stats.payload if stats is not None else None,
            fence=lease.fence if lease is not None else None,
            charges=charges,
        )
    except StoreError as e:
        report.errors.append(str(e))
        return
    report.published = True
    state.published = Publication(published_id, stats)


def _describe(report: CycleReport, snapshot: Snapshot, data: CycleData, now: float) -> None:
    report.destinations = snapshot.meta.destinations
    report.tools = snapshot.meta.tools
    report.rows_read = data.rows_read
    if snapshot.meta.newest_point_at is not None:
        report.newest_point_age_s = max(0.0, now - snapshot.meta.newest_point_at)


def _finished(report: CycleReport, clock: Callable[[], float], started: float) -> CycleReport:
    report.duration_s = clock() - started
    return report
