"""What the status page shows, as plain data: a pure function of what Redis
held (or the error reading it), the clock and the config. The page template
only formats it.

Scores come from the real rank core (``core/ranking.rank``), for a probe
job: 1 core, no memory, a tool with no history, no inputs, no TPV tags. That
is the job-independent part of the order (as ``tpv-broker inspect`` shows
it), with the in-flight charges the API itself would count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tpv_broker.api.rank_service import scoring_model
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.inflight import counted_loads
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, RankView, SnapshotMeta
from tpv_broker.core.ranking import rank
from tpv_broker.core.result import Group
from tpv_broker.core.scoring import ScoringModel

PROBE_JOB = JobFacts(tool_id="", cores=1, mem=0)
PROBE_DESCRIPTION = "a 1-core job of a tool with no history, no inputs and no TPV tags"

SnapshotKind = Literal["fresh", "late", "stale", "none", "redis_down"]
# A collector that missed this many cycles is worth a look before ranking degrades.
LATE_AFTER_CYCLES = 3

STATE_LABELS = {
    Group.SCORED: "scored",
    Group.NO_METRICS: "no metrics",
    Group.STALE: "stale metrics",
    Group.OFFLINE: "offline",
    Group.EXCLUDED: "excluded",
    Group.TPV_ORDER: "TPV order",
}


@dataclass(frozen=True)
class SnapshotState:
    kind: SnapshotKind
    headline: str
    detail: str
    age_s: float | None = None
    meta: SnapshotMeta | None = None
    newest_point_age_s: float | None = None


@dataclass(frozen=True)
class DestinationRow:
    position: int
    id: str
    state: Group
    reason: str
    status: str  # as reported: online, offline, unknown
    score: float | None  # 0-100, scored rows only
    queued: float | None
    running: float | None
    in_flight: int
    cores_free: float | None
    cores_total: float | None
    mem_free_gb: float | None
    mem_total_gb: float | None
    gpus_free: float | None
    gpus_total: float | None
    metrics_age_s: float | None  # newest live point (queue, free capacity)
    sources: dict[str, float] = field(default_factory=dict)  # preset -> age of its newest point, s
    in_config: bool = False
    # Destination health, when judged: its state (healthy, degraded, ...).
    health: str | None = None

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)


@dataclass(frozen=True)
class SourceRow:
    """One metric source (an InfluxDB) as the cycle that built the snapshot left it."""

    name: str
    state: str  # ok, partial, stale, missing
    age_s: float | None  # since it last answered
    problem: str
    tenant: str | None

    @property
    def lagging(self) -> bool:
        return self.state != "ok"


@dataclass(frozen=True)
class StatusView:
    snapshot: SnapshotState
    rows: list[DestinationRow]
    probe: str
    max_snapshot_age_s: float
    max_metrics_age_s: float
    inflight_enabled: bool
    # Destinations the metrics report that config does not list (only when config lists some).
    unmatched: list[str] = field(default_factory=list)
    sources: list[SourceRow] = field(default_factory=list)

    def count(self, state: Group | str) -> int:
        return sum(1 for r in self.rows if r.state == state)


def _snapshot_state(meta: SnapshotMeta | None, redis_error: str | None, now: float,
                    config: BrokerConfig) -> SnapshotState:
    if redis_error is not None:
        return SnapshotState("redis_down", "Redis unreachable",
                             f"{redis_error}. Rank answers are degraded: TPV's own order.")
    if meta is None:
        return SnapshotState("none", "No snapshot in Redis",
                             "The collector has not published one (is it running? same redis.url and "
                             "redis.key_prefix?). Rank answers are degraded: TPV's own order.")
    age = meta.age_s(now)
    newest = None if meta.newest_point_at is None else max(0.0, now - meta.newest_point_at)
    limit = config.api.max_snapshot_age_s
    if age > limit:
        return SnapshotState("stale", f"Snapshot stale: {age:.0f} s old",
                             f"Older than api.max_snapshot_age_s ({limit:g} s): the collector is not publishing. "
                             "Rank answers are degraded: TPV's own order.", age, meta, newest)
    late_after = LATE_AFTER_CYCLES * config.collector.interval_s
    if age > late_after:
        return SnapshotState("late", f"Snapshot {age:.0f} s old",
                             f"No new snapshot for over {LATE_AFTER_CYCLES} collector cycles "
                             f"({late_after:g} s); rank answers degrade after {limit:g} s.", age, meta, newest)
    return SnapshotState("fresh", f"Snapshot {age:.1f} s old",
                         f"Rank answers use it (they degrade after {limit:g} s).", age, meta, newest)


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)


def build_status(view: RankView | None, redis_error: str | None, now: float, config: BrokerConfig,
                 model: ScoringModel | None = None) -> StatusView:
    """``view``: the snapshot's meta, every destination and the in-flight
    charges (``SnapshotStore.read_overview``); ``redis_error`` if that read failed.
    ``model``: the API's own, built once at start-up (else built from ``config``)."""
    meta = None if view is None else view.meta
    state = _snapshot_state(meta, redis_error, now, config)
    rows: list[DestinationRow] = []
    unmatched: list[str] = []
    if view is not None and meta is not None:
        dests = view.destinations
        # Age limit off: a stale snapshot still shows what the scores were.
        result = rank([Candidate(d) for d in sorted(dests)], PROBE_JOB, [], view, now,
                      model or scoring_model(config.scoring), float("inf"), config.destination_locations(),
                      config.inflight.max_age_s)
        charges = counted_loads(view.charges, now, config.inflight.max_age_s)
        for position, p in enumerate(result.placements, start=1):
            d: DestinationFigures = dests[p.id]
            rows.append(DestinationRow(
                position=position, id=p.id, state=p.group, reason=p.reason, status=d.status,
                score=None if p.total is None else round(p.total * 100, 1),
                queued=d.queued, running=d.running, in_flight=charges[p.id].count if p.id in charges else 0,
                cores_free=d.cpus_free, cores_total=d.cpus_total, mem_free_gb=d.mem_free_gb,
                mem_total_gb=d.mem_total_gb, gpus_free=d.gpus_free, gpus_total=d.gpus_total,
                metrics_age_s=_age(now, d.live_at),
                sources={k: max(0.0, now - v) for k, v in sorted(d.sources.items())},
                in_config=d.in_config, health=None if d.health is None else d.health.state,
            ))
        if config.destinations:
            unmatched = sorted(d for d, f in dests.items() if not f.in_config)
    sources = [] if meta is None else [SourceRow(name, s.state, s.age_s(now), s.problem, s.tenant)
                                       for name, s in sorted(meta.sources.items())]
    return StatusView(state, rows, PROBE_DESCRIPTION, config.api.max_snapshot_age_s,
                      config.scoring.max_metrics_age_s, config.inflight.enabled, unmatched, sources)
