"""What a collector carries from one cycle to the next (``CollectorState``):
per metric source (``SourceMemory``) the run-time statistics, read far
less often than the live figures (``StatsCache``), the last good answer of
each live preset (``LastAnswers``) and when it last answered; and its last
publication."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import DestinationFigures, DestinationHealth, ToolFigures
from tpv_broker.errors import MetricSourceError
from tpv_broker.store.snapshots import encode_tool_stats

from .presets import PRESETS, RUNTIME_MEASUREMENT, CycleData
from .rows import ReadResult
from .run_times import DestinationRunTimes, ToolStats, destination_run_times, merge_newer
from .source import MetricSource
from .tool_levels import merge_figures, tool_levels

RUNTIME_PRESET = "destination_queue_run_time"


@dataclass
class RunTimeStats:
    """What the run-time statistics preset gave, kept apart from the live
    figures so that it can be reused by later cycles. Never changed once
    built: a refresh that finds news builds another."""

    read_at: float
    tool_stats: ToolStats
    per_destination: DestinationRunTimes
    rows_read: int
    # Built once from tool_stats (tool_levels), and their Redis payload.
    levels: dict[str, dict[str, ToolFigures]] | None = None
    payload: dict[str, str] | None = None

    def prepare(self) -> None:
        if self.levels is None:
            self.levels = tool_levels(self.tool_stats)
        if self.payload is None:
            self.payload = encode_tool_stats(self.levels)

    @classmethod
    def from_data(cls, data: CycleData, read_at: float) -> RunTimeStats:
        """From what the preset's answer gave (``data`` holds nothing else)."""
        return cls.from_tool_stats(data.tool_stats, read_at, data.rows_read)

    @classmethod
    def from_tool_stats(cls, tool_stats: ToolStats, read_at: float, rows_read: int) -> RunTimeStats:
        return cls(read_at, tool_stats, destination_run_times(tool_stats), rows_read)

    def merge_into(self, data: CycleData) -> None:
        for dest_id, (median_queue, median_run, at) in self.per_destination.items():
            d = data.destinations.get(dest_id)
            if d is None:
                d = data.destinations[dest_id] = DestinationFigures(id=dest_id)
            d.median_queue_s, d.median_run_s = median_queue, median_run
            if at is not None:
                d.sources[RUNTIME_MEASUREMENT] = max(at, d.sources.get(RUNTIME_MEASUREMENT, at))
        data.tool_stats = self.tool_stats

    @classmethod
    def combined(cls, parts: Sequence[RunTimeStats]) -> RunTimeStats:
        """Several Galaxies' statistics as one set: a (tool, destination)
        that more than one reports gets their counts added and medians
        weighted by them (``tool_levels.merge_figures``)."""
        grouped: dict[str, dict[str, list[ToolFigures]]] = {}
        for part in parts:
            for tool_id, per_destination in part.tool_stats.items():
                for dest_id, figures in per_destination.items():
                    grouped.setdefault(tool_id, {}).setdefault(dest_id, []).append(figures)
        tool_stats = {tool_id: {d: merge_figures(fs) for d, fs in per_destination.items()}
                      for tool_id, per_destination in grouped.items()}
        return cls.from_tool_stats(tool_stats, min(p.read_at for p in parts), sum(p.rows_read for p in parts))


# How long after its time a point may reach InfluxDB and still be read by
# the next refresh: telegraf writes gxadmin's day of statistics (100,000
# points at a large site) in batches of 1,000 over a minute or more, and a
# refresh may run in the middle. A point later than that is read by the next
# full read (collector.stats_full_read_s).
LATE_POINTS_S = 300.0


@dataclass(frozen=True)
class StatsRefresh:
    """What one refresh of the run-time statistics did."""

    # A read of the whole window (``stats_lookback_s``), or of what was
    # written since the last good read.
    full: bool
    # What went wrong (the last statistics stay), or None.
    problem: str | None = None
    rows: int = 0
    # Whether the statistics changed (new ones built, to be written to Redis).
    changed: bool = False

    @property
    def kind(self) -> str:
        return "full read" if self.full else "read since the last one"


class StatsCache:
    """The daemon's memory of the run-time statistics between cycles:
    gxadmin writes them once a day, so they are re-read every
    ``collector.stats_refresh_s``, not every cycle, and the cycles in
    between neither query them nor rewrite them in Redis.

    With ``background`` (the daemon), ``refresh`` runs as a job of its own
    and a cycle reads them itself only when there are none yet; otherwise a
    cycle re-reads them, whole, when they are due.

    A refresh reads the whole window only when it has no good read to
    start from (a new process, the first refresh) or the last full read is
    ``full_read_s`` old; otherwise it reads the points written since the
    last good read (and ``LATE_POINTS_S`` before it) and merges them into
    the kept set, which gives what a full read would: the newest point of
    each (tool, destination), none older than ``stats_lookback_s``. A
    failed refresh keeps the last statistics, and the next one reads from
    the last good read on. The periodic full read catches what a merge
    cannot see: points written long after their time, series deleted."""

    def __init__(self, refresh_s: float, background: bool = False, full_read_s: float = 3600.0) -> None:
        self.refresh_s = refresh_s
        self.background = background
        self.full_read_s = full_read_s
        # Replaced whole (never modified in place) by a refresh, so a cycle
        # running meanwhile keeps a consistent set.
        self.current: RunTimeStats | None = None
        # When the last good read of them, and the last good full read,
        # started (the collector's clock).
        self.read_at: float | None = None
        self.full_read_at: float | None = None

    def due(self, now: float) -> bool:
        return self.current is None or self.read_at is None or now - self.read_at >= self.refresh_s

    def reuse(self, now: float) -> RunTimeStats | None:
        """The statistics a cycle starting now should reuse, if any."""
        current = self.current
        if current is None or (not self.background and self.due(now)):
            return None
        return current

    def keep_full_read(self, stats: RunTimeStats) -> None:
        """Keep what a full read (by a cycle or a refresh) gave."""
        self.current = stats
        self.read_at = self.full_read_at = stats.read_at

    def refresh(self, config: BrokerConfig, source: MetricSource, clock: Callable[[], float],
                aliases: Mapping[str, str] | None = None, hidden: frozenset[str] = frozenset()) -> StatsRefresh:
        """Read the run-time statistics alone, or what changed in them, and
        keep them, with their fallback levels and Redis payload built here
        rather than in a cycle. On failure the last ones stay. ``aliases``
        and ``hidden``: the source's (``collector.source.Source``), else the
        config's aliases."""
        started = clock()
        preset = PRESETS[RUNTIME_PRESET]
        kept, since = self.current, self._read_since(started)
        full = since is None
        if since is not None:
            preset = preset.recent(since)
        try:
            (result,) = source.read([preset], config.collector)
        except MetricSourceError as e:
            return StatsRefresh(full, str(e))
        if result.error is not None:
            return StatsRefresh(full, f"{preset.name}: {result.error}")
        data = CycleData(aliases=dict(aliases) if aliases is not None else config.alias_map(), hidden=hidden)
        # The same guard as a cycle's: odd rows are this preset's problem.
        problem = preset.apply_checked(result.rows, data, config.collector)
        if problem is not None:
            return StatsRefresh(full, f"{preset.name}: {problem}")
        if full or kept is None:
            fresh = RunTimeStats.from_data(data, started)
            if kept is not None and fresh.tool_stats == kept.tool_stats:
                # The kept ones stay, and so does their hash in Redis.
                self.read_at = self.full_read_at = started
                return StatsRefresh(True, rows=len(result.rows))
            fresh.prepare()
            self.keep_full_read(fresh)
            return StatsRefresh(True, rows=len(result.rows), changed=True)
        merged = merge_newer(kept.tool_stats, data.tool_stats, started - config.collector.stats_lookback_s)
        if merged is not None:
            fresh = RunTimeStats.from_tool_stats(merged, started, data.rows_read)
            fresh.prepare()
            self.current = fresh
        self.read_at = started
        return StatsRefresh(False, rows=len(result.rows), changed=merged is not None)

    def _read_since(self, now: float) -> float | None:
        """How far back a refresh starting now reads (s), or None for the
        whole window."""
        if self.current is None or self.read_at is None or self.full_read_at is None:
            return None
        if now - self.full_read_at >= self.full_read_s:
            return None
        return max(0.0, now - self.read_at) + LATE_POINTS_S


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


@dataclass(frozen=True)
class Publication:
    """A snapshot this collector published (its id, as ``SnapshotStore.publish``
    returned it) and the run-time statistics it carried."""

    id: str
    stats: RunTimeStats | None


@dataclass
class SourceMemory:
    """What the collector carries for one metric source: its run-time
    statistics, its live presets' last good answers, and how its reads
    went (with several sources, one that fails is retried with backoff
    while the others are read every cycle)."""

    stats: StatsCache
    answers: LastAnswers = field(default_factory=LastAnswers)
    # When it last answered a cycle (the collector's clock).
    answered_at: float | None = None
    failures_in_a_row: int = 0
    retry_at: float | None = None
    # A cycle's request that held the run-time statistics failed as a whole
    # (a large site's 3-day window past influxdb.timeout_s): with a refresh
    # job (the daemon), the cycles read the live figures alone from then on.
    stats_left_to_refresh: bool = False


@dataclass
class CollectorState:
    """What a collector carries from one cycle to the next: per source its
    ``SourceMemory``, and its last publication. The daemon keeps one for
    its life; a cycle given none starts from nothing and reads everything."""

    new_stats: Callable[[], StatsCache]
    sources: dict[str, SourceMemory] = field(default_factory=dict)
    published: Publication | None = None
    # Each destination's last published health verdict; None until the
    # first cycle seeds it from the live snapshot (so a restart goes on).
    health: dict[str, DestinationHealth] | None = None
    # The last combination of several sources' statistics, and its parts:
    # while they are the same objects, so is it (and its hash in Redis stays).
    _combined: tuple[tuple[RunTimeStats, ...], RunTimeStats] | None = None

    @classmethod
    def new(cls, config: BrokerConfig, background_stats: bool = False) -> CollectorState:
        """``background_stats``: a job of the daemon's refreshes the run-time
        statistics (``StatsCache``), not the cycles."""
        collector = config.collector
        return cls(lambda: StatsCache(collector.stats_refresh_s, background_stats, collector.stats_full_read_s))

    def of(self, source: str) -> SourceMemory:
        memory = self.sources.get(source)
        if memory is None:
            memory = self.sources[source] = SourceMemory(self.new_stats())
        return memory

    def combined_stats(self, parts: Sequence[RunTimeStats]) -> RunTimeStats | None:
        """The sources' statistics as one set: the one source's own, or their
        combination, built again only when one of them changed."""
        if len(parts) <= 1:
            return parts[0] if parts else None
        last = self._combined
        if last is not None and len(last[0]) == len(parts) and all(a is b for a, b in zip(last[0], parts,
                                                                                            strict=True)):
            return last[1]
        combined = RunTimeStats.combined(parts)
        self._combined = (tuple(parts), combined)
        return combined

    def kept_stats(self) -> tuple[RunTimeStats, ...]:
        """The run-time statistics kept for later cycles: each source's,
        and their combination."""
        kept = [m.stats.current for m in self.sources.values() if m.stats.current is not None]
        if self._combined is not None:
            kept.append(self._combined[1])
        return tuple(kept)

    def published_with(self, stats: RunTimeStats | None) -> str | None:
        """The last publication's id if it carried ``stats``: while it is the
        live snapshot, their (large) hash in Redis can stay as it is."""
        last = self.published
        if last is None or stats is None or last.stats is not stats:
            return None
        return last.id
