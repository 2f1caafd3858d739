"""One collection cycle, ``collect_once``, as named steps: read each
InfluxDB once, apply each preset's answer (a failed one with its last good
answer), combine the sources, merge the run-time statistics, build the
snapshot, publish it, report. The clock, the InfluxDB clients, the store
and what the collector carries from one cycle to the next
(``state.CollectorState``) are passed in."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import (
    DestinationFigures,
    DestinationHealth,
    Snapshot,
    SnapshotMeta,
    SourceState,
    SourceStatus,
    ToolFigures,
)
from tpv_broker.errors import MetricSourceError, MetricSourceTimeout, StoreError
from tpv_broker.logging_setup import event
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.leader_lock import LeaderLease
from tpv_broker.store.snapshots import SnapshotStore

from .backoff import retry_delay
from .health import Transition, judge_cycle, transitions
from .presets import CycleData, Preset, live_sources, presets_for
from .reducers import IMPLAUSIBLE
from .rows import ReadResult
from .source import MetricSource, Source, as_sources
from .state import RUNTIME_PRESET, CollectorState, LastAnswers, Publication, RunTimeStats, SourceMemory
from .tool_levels import tool_levels

log = logging.getLogger("tpv_broker.collector")

# What a cycle that does not publish leaves in Redis (a failed cycle's log
# line says it once, whether the report said it or not).
KEEPING_THE_LAST = "keeping the last snapshot"


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
    # Destinations whose health changed in this snapshot (if published).
    transitions: list[Transition] = field(default_factory=list)
    # Each source's state in this cycle, published or not.
    sources: dict[str, SourceStatus] = field(default_factory=dict)
    # The lines of ``errors`` that are one source's own problem (with
    # several sources, or a Galaxy's own), said in its entry of ``sources``.
    source_problems: list[str] = field(default_factory=list)

    def stale_reason(self) -> str:
        """What went wrong, for the live snapshot's stale mark, which every
        tenant reads: a source's own problem stays in its entry
        (``sources``), which a tenant sees only for its own and the shared
        sources."""
        return "; ".join(e for e in self.errors if e not in self.source_problems)

    @property
    def per_source(self) -> bool:
        """Whether the sources' states are kept apart (``sources``)."""
        return len(self.sources) > 1 or bool(self.source_problems)

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
    _add_errors(part, data)
    data.rows_read += part.rows_read
    data.read_ok |= part.read_ok


def _add_errors(part: CycleData, data: CycleData) -> None:
    """Error reports add up: each Galaxy reports its own jobs' errors."""
    if part.errors is None:
        return
    if data.errors is None:
        data.errors = {}
    for dest_id, points in part.errors.items():
        data.errors.setdefault(dest_id, []).extend(points)


def build_snapshot(data: CycleData, config: BrokerConfig, now: float, cycle_s: float,
                   levels: dict[str, dict[str, ToolFigures]] | None = None,
                   collector: str | None = None, presets: Sequence[Preset] | None = None) -> Snapshot:
    """Merge what the metrics said with what config says about destinations.
    ``presets``: those read (every source's); the config's single source's if not given."""
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
    configured = list(presets) if presets is not None else presets_for(config.collector)
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
    # Built from models validated when they were made: validating again
    # walked every kept statistic (100,000 at 500 destinations, 14 ms a cycle).
    return Snapshot.model_construct(meta=meta, destinations=data.destinations, tool_stats=levels)


@dataclass
class _SourceRead:
    """What one source gave this cycle, before the sources are combined."""

    source: Source
    data: CycleData
    # Presets whose own answer this cycle was usable (not a kept one).
    presets_read: int = 0
    queries: int = 0
    # The run-time statistics, read now or kept from an earlier read.
    stats: RunTimeStats | None = None
    # The run-time statistics, when read this cycle (kept from now on).
    fresh_stats: RunTimeStats | None = None
    errors: list[str] = field(default_factory=list)
    # Preset -> age (s) of the last good answer used in its place.
    kept: dict[str, float] = field(default_factory=dict)
    # Whether it answered at all (not down, hung, garbled, skipped).
    answered: bool = False
    # Why it could not be read as a whole, if it could not.
    failure: str | None = None

    def status(self, answered_at: float | None, now: float) -> SourceStatus:
        if not self.answered:
            # Kept statistics alone make a source of statistics stale, not
            # one whose live figures have gone missing.
            live = any(p.name != RUNTIME_PRESET for p in self.source.presets)
            state: SourceState = "stale" if self.kept or (self.stats is not None and not live) else "missing"
        else:
            state = "partial" if self.errors else "ok"
        return SourceStatus(state=state, answered_at=answered_at, problem="; ".join(self.errors),
                            tenant=self.source.tenant)


def collect_once(
    config: BrokerConfig,
    sources: MetricSource | Sequence[Source],
    store: SnapshotStore,
    clock: Callable[[], float],
    state: CollectorState | None = None,
    lease: LeaderLease | None = None,
) -> CycleReport:
    """One cycle: read every source (one request each, concurrently), apply
    each preset's answer (a failed one with its last good answer), combine
    the sources, merge the run-time statistics, build the snapshot, publish
    it, report. Never raises for InfluxDB or Redis trouble: the report says
    what went wrong, and the last published snapshot stays in Redis untouched.

    ``sources``: the config's (``source.sources_for``); a bare reader stands
    for a config's one source.
    ``state``: what the collector carries between cycles (``CollectorState``);
    without one, everything is read and nothing is remembered.
    ``lease``: publish only while holding it (its fence is checked inside the
    swap, ``leader_lock``), with its instance id as the snapshot's
    ``collector`` (without one: the host name)."""
    state = state if state is not None else CollectorState.new(config)
    every = as_sources(config, sources)
    started = clock()
    reads = _read_all(every, config, state, started)
    report = _report(reads)
    report.sources = {r.source.name: r.status(state.of(r.source.name).answered_at, started) for r in reads}
    if not any(r.answered for r in reads):
        # Kept figures alone never make a new snapshot: it would look fresh.
        report.kept.clear()
        report.source_failed = True
        report.errors.append(f"no preset could be read; {KEEPING_THE_LAST}" if len(reads) == 1
                             else f"no source could be read; {KEEPING_THE_LAST}")
        return _finished(report, clock, started)
    for r in reads:
        memory = state.of(r.source.name)
        if r.fresh_stats is not None:
            memory.stats.keep_full_read(r.fresh_stats)
    data = _combine([r.data for r in reads])
    stats = state.combined_stats([r.stats for r in reads if r.stats is not None])
    if stats is not None:
        stats.merge_into(data)
        data.read_ok.add(RUNTIME_PRESET)
    now = clock()
    presets = [p for r in reads for p in r.source.presets]
    snapshot = _build(data, config, presets, now, now - started, stats, lease, report)
    snapshot.meta.sources = report.sources
    verdicts = _health(snapshot, data, every, config, store, state, now, report)
    if verdicts is None:
        return _finished(report, clock, started)
    # Each source's problems are in its own entry, which a tenant sees only
    # for the shared sources and its own.
    snapshot.meta.problems = report.stale_reason()
    _publish(store, snapshot, state, stats, lease, report, store.inflight(config.inflight))
    if report.published:
        report.transitions = transitions(state.health or {}, verdicts)
        state.health = verdicts
    _describe(report, snapshot, data, now)
    return _finished(report, clock, started)


def _health(snapshot: Snapshot, data: CycleData, sources: list[Source], config: BrokerConfig, store: SnapshotStore,
            state: CollectorState, now: float, report: CycleReport) -> dict[str, DestinationHealth] | None:
    """Judge every destination's health and put it in the snapshot; None
    if the verdicts to go on from cannot be read (nothing to publish)."""
    if state.health is None:
        try:
            state.health = _published_health(store)
        except StoreError as e:
            # Judged from nothing, an excluded black hole would be let
            # straight back in once Redis answers again.
            report.errors.append(f"{e}; not publishing until the live health verdicts can be read")
            return None
    verdicts, problem = judge_cycle(data, sources, config, store, state.health, now)
    if problem is not None:
        report.errors.append(problem)
    for dest_id, verdict in verdicts.items():
        figures = snapshot.destinations.get(dest_id)
        if figures is not None:
            figures.health = verdict
    return verdicts


def _published_health(store: SnapshotStore) -> dict[str, DestinationHealth]:
    """The verdicts of the live snapshot, so a new collector goes on from
    them (an excluded destination stays excluded until its time is up).
    Raises StoreError if Redis cannot be read."""
    view = store.read_overview()
    return {d: f.health for d, f in view.destinations.items() if f.health is not None}


def _read_all(sources: list[Source], config: BrokerConfig, state: CollectorState,
              started: float) -> list[_SourceRead]:
    """Each source read and its presets applied, several at once: a slow
    source costs the cycle its own time-out, not the sum of them."""
    memories = [state.of(s.name) for s in sources]
    several = len(sources) > 1
    if not several:
        return [_read_source(sources[0], memories[0], config, started, several)]
    with ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="source") as pool:
        return list(pool.map(lambda s, m: _read_source(s, m, config, started, several), sources, memories))


def _read_source(source: Source, memory: SourceMemory, config: BrokerConfig, started: float,
                 several: bool) -> _SourceRead:
    """One source: read its presets in one request and apply each answer.
    With several sources, one that keeps failing is tried again with
    backoff (``backoff.retry_delay``), its last good figures used meanwhile."""
    cached = memory.stats.reuse(started)
    # Else a statistics read slower than the timeout failed every cycle's
    # request, and no live figure was ever published.
    skip_stats = cached is not None or (memory.stats.background and memory.stats_left_to_refresh)
    presets = [p for p in source.presets if not (skip_stats and p.name == RUNTIME_PRESET)]
    data = CycleData(aliases=dict(source.aliases), hidden=source.hidden)
    read = _SourceRead(source, data, stats=cached, queries=len(presets))
    results: list[ReadResult] | None = None
    timed_out = False
    # Nothing to read (the statistics kept, read by their own job): no backoff either.
    if presets and several and memory.retry_at is not None and started < memory.retry_at:
        read.queries = 0
        read.failure = (f"not read this cycle: failed {memory.failures_in_a_row} time(s) in a row, next try in "
                        f"{memory.retry_at - started:.0f} s")
    elif presets:
        try:
            results = source.reader.read(presets, config.collector)
        except MetricSourceError as e:
            read.failure = str(e)
            timed_out = isinstance(e, MetricSourceTimeout)
    if results is None:
        results = [ReadResult(error=read.failure) for _ in presets]
    _apply_with_fallback(presets, results, config, memory.answers, started, read)
    read.answered = not presets or (read.failure is None and read.presets_read > 0)
    if read.failure is None and not read.answered:
        # Every statement failed: the database itself, if that is why;
        # else each preset's own problem says it.
        read.failure = source.reader.database_problem()
        if read.failure is None and several:
            read.errors.append("no preset could be read" + _kept_note(read, several))
    if read.failure is not None:
        read.errors = [read.failure + _kept_note(read, several)]
        # Only a time-out: InfluxDB down at start must not cost the first
        # snapshots their statistics (the refresh job runs only later).
        if timed_out and memory.stats.background and any(p.name == RUNTIME_PRESET for p in presets):
            # Said once, apart from the cycle's problems (those are logged
            # when they change: this one would make the next cycle's new).
            memory.stats_left_to_refresh = True
            log.warning("the run-time statistics%s are left to the refresh job (every collector.stats_refresh_s) "
                        "from now on: they were in a failed request, and a read of them slower than "
                        "influxdb.timeout_s would fail every cycle's", f" of source {source.name}" if several else "",
                        extra=event("stats_left_to_refresh", source=source.name))
    if read.stats is None and read.fresh_stats is None and RUNTIME_PRESET in [p.name for p in source.presets]:
        # This read of them failed: the last ones are better than none.
        read.stats = memory.stats.current
    elif read.fresh_stats is not None:
        read.stats = read.fresh_stats
    _note_outcome(memory, read, config, started)
    return read


def _kept_note(read: _SourceRead, several: bool) -> str:
    if not several:
        return ""
    if read.kept:
        oldest = max(read.kept.values())
        return f" (its last good figures kept, read {oldest:.0f} s ago)"
    return " (its figures are missing from this snapshot)"


def _note_outcome(memory: SourceMemory, read: _SourceRead, config: BrokerConfig, started: float) -> None:
    if read.answered:
        memory.answered_at, memory.failures_in_a_row, memory.retry_at = started, 0, None
        return
    if read.queries:
        memory.failures_in_a_row += 1
        c = config.collector
        memory.retry_at = started + retry_delay(memory.failures_in_a_row, c.interval_s, c.backoff_max_s)


def _report(reads: list[_SourceRead]) -> CycleReport:
    """The cycle's report: each source's problems, named by source when
    there are several."""
    report = CycleReport(published=False, queries=sum(r.queries for r in reads))
    several = len(reads) > 1
    for r in reads:
        prefix = f"source {r.source.name}: " if several else ""
        own = [prefix + e for e in r.errors]
        report.errors.extend(own)
        # A Galaxy's own source may name what only its tenant may see.
        if several or r.source.tenant is not None:
            report.source_problems.extend(own)
        for preset, age in r.kept.items():
            report.kept[f"{r.source.name}/{preset}" if several else preset] = age
    return report


def _apply_with_fallback(presets: list[Preset], results: list[ReadResult], config: BrokerConfig,
                         answers: LastAnswers, started: float, read: _SourceRead) -> None:
    """Each preset's answer applied on its own, so one that fails halfway
    leaves nothing half-done in the others' figures. A live preset whose
    answer is unusable ("database not found", a statement error, a partial
    or garbled answer, the source down) gets its last good one, if recent;
    either way it is named, and the others are kept."""
    failed: list[tuple[str, str]] = []
    for preset, result in zip(presets, results, strict=True):
        part = CycleData(aliases=read.data.aliases, hidden=read.data.hidden)
        problem = (result.error if result.error is not None
                   else preset.apply_checked(result.rows, part, config.collector))
        if problem is None:
            read.presets_read += 1
            read.errors.extend(f"{preset.name}: {w}" for w in result.warnings)
            if part.implausible:
                read.errors.append(f"{preset.name}: {part.implausible} value(s) negative, not a number or "
                                   f"implausibly large (at least {IMPLAUSIBLE:g}), read as missing")
            _take(preset, part, read, started)
            if preset.name != RUNTIME_PRESET:
                answers.keep(preset.name, result, started)
            continue
        if preset.name != RUNTIME_PRESET:
            kept_age = _apply_last_good(preset, answers, config, started, read.data)
            if kept_age is not None:
                read.kept[preset.name] = kept_age
        failed.append((preset.name, problem))
    if read.failure is not None:
        return  # one line for the source says it
    for name, problem in failed:
        if name in read.kept:
            problem += " (its last good figures kept)"
        elif read.presets_read and name != RUNTIME_PRESET:
            problem += " (its figures are missing from this snapshot)"
        read.errors.append(f"{name}: {problem}")


def _take(preset: Preset, part: CycleData, read: _SourceRead, started: float) -> None:
    """Add one preset's good answer to the source's figures."""
    if preset.name == RUNTIME_PRESET:
        read.fresh_stats = RunTimeStats.from_data(part, started)
        read.data.rows_read += part.rows_read
    else:
        _merge(part, read.data)
    read.data.read_ok.add(preset.name)


def _apply_last_good(preset: Preset, answers: LastAnswers, config: BrokerConfig, started: float,
                     data: CycleData) -> float | None:
    """Apply the preset's last good answer, if there is a recent one; how
    old it is (s), or None."""
    earlier = answers.recall(preset.name, started, config.collector.lookback_s)
    if earlier is None:
        return None
    read_at, previous = earlier
    part = CycleData(aliases=data.aliases, hidden=data.hidden)
    if preset.apply_checked(previous.rows, part, config.collector) is not None:
        return None
    part.read_ok.add(preset.name)
    _merge(part, data)
    return started - read_at


# Figures every reporting Galaxy adds to: its own jobs at a shared endpoint.
_ADDITIVE = ("queued", "running")


def _combine(parts: list[CycleData]) -> CycleData:
    """The sources' live figures as one set: an endpoint's queue is the sum
    over the sources that report it; any other figure is the one of the
    source whose points there are newest."""
    if len(parts) == 1:
        return parts[0]
    out = CycleData(aliases={})
    # (endpoint, figure) -> the newest points of a source that set it. Per
    # figure, not per endpoint: a source without the figure (a Galaxy's
    # queue, newer than the capacity points) must not raise the bar for the
    # sources that have it, or the winner depended on the sources' order.
    newest: dict[tuple[str, str], float] = {}
    for part in parts:
        for dest_id, figures in part.destinations.items():
            target = out.destinations.get(dest_id)
            if target is None:
                target = out.destinations[dest_id] = DestinationFigures(id=dest_id)
            at = max(figures.sources.values(), default=-math.inf)
            for name in figures.model_fields_set - {"id", "sources"}:
                value = getattr(figures, name)
                current = getattr(target, name)
                if name in _ADDITIVE:
                    setattr(target, name, value if current is None else current if value is None
                            else current + value)
                elif at >= newest.get((dest_id, name), -math.inf):
                    setattr(target, name, value)
                    newest[dest_id, name] = at
            for source, point_at in figures.sources.items():
                target.sources[source] = max(point_at, target.sources.get(source, point_at))
        _add_errors(part, out)
        out.rows_read += part.rows_read
        out.read_ok |= part.read_ok
    return out


def _build(data: CycleData, config: BrokerConfig, presets: list[Preset], now: float, cycle_s: float,
           stats: RunTimeStats | None, lease: LeaderLease | None, report: CycleReport) -> Snapshot:
    if stats is not None:
        stats.prepare()
    snapshot = build_snapshot(data, config, now, cycle_s, stats.levels if stats is not None else None,
                              lease.instance_id if lease is not None else None, presets)
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
