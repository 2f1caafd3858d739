"""What a collector carries from one cycle to the next (``CollectorState``):
the run-time statistics, read far less often than the live figures
(``StatsCache``), the last good answer of each live preset
(``LastAnswers``) and its last publication."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import DestinationFigures, ToolFigures
from tpv_broker.errors import MetricSourceError
from tpv_broker.store.snapshots import encode_tool_stats

from .presets import PRESETS, RUNTIME_MEASUREMENT, CycleData
from .rows import ReadResult
from .source import MetricSource
from .tool_levels import tool_levels

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
        problem = preset.apply_checked(result.rows, data, config.collector)
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


@dataclass(frozen=True)
class Publication:
    """A snapshot this collector published (its id, as ``SnapshotStore.publish``
    returned it) and the run-time statistics it carried."""

    id: str
    stats: RunTimeStats | None


@dataclass
class CollectorState:
    """What a collector carries from one cycle to the next: the run-time
    statistics (``StatsCache``), the last good answer of each live preset
    (``LastAnswers``) and its last publication. The daemon keeps one for its
    life; a cycle given none starts from nothing and reads everything."""

    stats: StatsCache
    answers: LastAnswers = field(default_factory=LastAnswers)
    published: Publication | None = None

    @classmethod
    def new(cls, config: BrokerConfig, background_stats: bool = False) -> CollectorState:
        """``background_stats``: a job of the daemon's refreshes the run-time
        statistics (``StatsCache``), not the cycles."""
        return cls(StatsCache(config.collector.stats_refresh_s, background_stats))

    def published_with(self, stats: RunTimeStats | None) -> str | None:
        """The last publication's id if it carried ``stats``: while it is the
        live snapshot, their (large) hash in Redis can stay as it is."""
        last = self.published
        if last is None or stats is None or last.stats is not stats:
            return None
        return last.id
