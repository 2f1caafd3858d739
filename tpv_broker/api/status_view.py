"""What the status page shows, as plain data: a pure function of what Redis
held (or the error reading it), the clock and the config. The page template
only formats it.

Scores come from the real rank core (``core/ranking.rank``), for a probe
job: 1 core, no memory, a tool with no history, no inputs, no TPV tags. That
is the job-independent part of the order (as ``tpv-broker inspect`` shows
it), with the in-flight charges the API itself would count."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tpv_broker.api.rank_service import scoring_model, site_policy
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.inflight import counted_loads
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, RankView, SnapshotMeta
from tpv_broker.core.ranking import rank
from tpv_broker.core.result import Group
from tpv_broker.core.scoring import ScoringModel
from tpv_broker.store.inflight import PLACEMENT_BUCKET_S

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
    Group.AT_CAP: "at cap",
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


# The "last hour" chart: the placements' 5-minute buckets (the current one
# last, still filling), in a box of CHART_WIDTH x CHART_HEIGHT px.
CHART_BUCKETS = 12
CHART_SPAN_S = CHART_BUCKETS * PLACEMENT_BUCKET_S
CHART_WIDTH = 96.0
CHART_HEIGHT = 24.0
BAR_GAP = 2.0
TICK_WIDTH = 2.0
LINE_HEIGHT = 1.5
# A bucket or error rate above zero is never drawn thinner than this.
MIN_MARK = 1.0
# gxadmin's errored-jobs report counts the hour before its time.
ERROR_REPORT_SPAN_S = 3600.0


def _hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.gmtime(epoch))


def _height(value: float, top: float) -> float:
    if value <= 0 or top <= 0:
        return 0.0
    return round(max(MIN_MARK, value / top * CHART_HEIGHT), 2)


@dataclass(frozen=True)
class ChartBar:
    """One 5-minute bucket of placements, drawn; the jobs that came back
    in it (returned: resubmitted after they failed) drawn red from the
    baseline, on the same scale."""

    start: float
    count: float
    x: float
    y: float
    width: float
    height: float
    title: str
    returned: float = 0.0
    returned_height: float = 0.0

    @property
    def returned_y(self) -> float:
        return round(CHART_HEIGHT - self.returned_height, 2)


@dataclass(frozen=True)
class ErrorMark:
    """One error report, drawn on the bars' axis: a line at its rate (errors
    per 5 minutes over the hour it covers) from the start of that hour (or
    of the chart) to the report's time, where a tick stands."""

    at: float
    errors: float
    x_from: float
    x: float
    y: float
    title: str

    line_height = LINE_HEIGHT
    tick_width = TICK_WIDTH

    @property
    def tick_x(self) -> float:
        return round(min(max(self.x - TICK_WIDTH / 2, 0.0), CHART_WIDTH - TICK_WIDTH), 2)

    @property
    def line_y(self) -> float:
        return round(min(self.y, CHART_HEIGHT - LINE_HEIGHT), 2)

    @property
    def line_width(self) -> float:
        return round(self.x - self.x_from, 2)

    @property
    def tick_height(self) -> float:
        return round(CHART_HEIGHT - self.y, 2)


@dataclass(frozen=True)
class PlacementChart:
    """A destination's last hour: the jobs the broker placed there per
    5-minute bucket (``counts``, oldest first, from ``start``) and the
    error reports of that hour ((report time, errors), each counting the
    hour before it). ``top``: the value at the top of the chart, the
    largest bucket or error rate, so both read on one axis: a red line at
    the height of the bars means about as many jobs failed as were placed."""

    start: float
    counts: tuple[float, ...]
    reports: tuple[tuple[float, float], ...]
    top: float
    # Drawn: a bar per bucket that holds placements or returns (an empty
    # one draws nothing: the chart's background shows), a mark per error
    # report.
    bars: tuple[ChartBar, ...] = ()
    errors: tuple[ErrorMark, ...] = ()
    # Per bucket as ``counts``, the jobs that came back.
    returned: tuple[float, ...] = (0.0,) * CHART_BUCKETS

    @classmethod
    def build(cls, buckets: Sequence[tuple[float, float]], reports: Sequence[tuple[float, float]],
              now: float, returns: Sequence[tuple[float, float]] = ()) -> PlacementChart | None:
        """From a destination's placement buckets (start, jobs), error
        reports (time, errors) and return buckets (start, jobs), whatever
        their age; None if the last hour has none of them."""
        start = (now // PLACEMENT_BUCKET_S - (CHART_BUCKETS - 1)) * PLACEMENT_BUCKET_S
        counts, returned = _per_bucket(buckets, start), _per_bucket(returns, start)
        kept = tuple(sorted((at, n) for at, n in reports if start <= at < start + CHART_SPAN_S and n > 0))
        if not kept and not any(counts) and not any(returned):
            return None
        rates = [n / (ERROR_REPORT_SPAN_S / PLACEMENT_BUCKET_S) for _, n in kept]
        top = max([*counts, *returned, *rates])
        return cls(start, counts, kept, top, _bars(start, counts, returned, top), _errors(start, kept, top),
                   returned)

    @property
    def placed(self) -> float:
        return sum(self.counts)

    @property
    def came_back(self) -> float:
        return sum(self.returned)

    @property
    def failed(self) -> float:
        return sum(n for _, n in self.reports)

    @property
    def label(self) -> str:
        back = f", {self.came_back:g} came back" if self.came_back else ""
        failed = f"{self.failed:g} failed" if self.reports else "no errors reported"
        return f"last hour: {self.placed:g} placed{back}, {failed}"

    @property
    def width(self) -> float:
        return CHART_WIDTH

    @property
    def height(self) -> float:
        return CHART_HEIGHT


def _x(start: float, at: float) -> float:
    return round(min(max(at - start, 0.0), CHART_SPAN_S) / CHART_SPAN_S * CHART_WIDTH, 2)


def _per_bucket(buckets: Sequence[tuple[float, float]], start: float) -> tuple[float, ...]:
    counts = [0.0] * CHART_BUCKETS
    for at, n in buckets:
        i = int((at - start) // PLACEMENT_BUCKET_S)
        if 0 <= i < CHART_BUCKETS and n > 0:
            counts[i] += n
    return tuple(counts)


def _bars(start: float, counts: Sequence[float], returned: Sequence[float], top: float) -> tuple[ChartBar, ...]:
    step = CHART_WIDTH / CHART_BUCKETS
    out = []
    for i, (n, back) in enumerate(zip(counts, returned, strict=True)):
        if n <= 0 and back <= 0:
            continue
        at = start + i * PLACEMENT_BUCKET_S
        h = _height(n, top)
        until = "now" if i == CHART_BUCKETS - 1 else _hhmm(at + PLACEMENT_BUCKET_S)
        title = f"{_hhmm(at)}–{until} UTC: {n:g} placed" + (f", {back:g} came back" if back > 0 else "")
        out.append(ChartBar(at, n, round(i * step + BAR_GAP / 2, 2), round(CHART_HEIGHT - h, 2),
                            round(step - BAR_GAP, 2), h, title, back, _height(back, top)))
    return tuple(out)


def _errors(start: float, reports: Sequence[tuple[float, float]], top: float) -> tuple[ErrorMark, ...]:
    per_bucket = ERROR_REPORT_SPAN_S / PLACEMENT_BUCKET_S
    out = []
    for at, n in reports:
        y = round(CHART_HEIGHT - _height(n / per_bucket, top), 2)
        out.append(ErrorMark(at, n, _x(start, at - ERROR_REPORT_SPAN_S), _x(start, at), y,
                             f"{n:g} failed in the hour to {_hhmm(at)} UTC ({n / per_bucket:.3g} per 5 min)"))
    return tuple(out)


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
    # The last hour's placements and error reports; None: neither, or the
    # placements could not be read.
    chart: PlacementChart | None = None

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
    # Why there are no charts, if reading the placements failed.
    charts_problem: str | None = None

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
                 model: ScoringModel | None = None,
                 placements: Mapping[str, Sequence[tuple[float, float]]] | None = None,
                 placements_error: str | None = None,
                 returns: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> StatusView:
    """``view``: the snapshot's meta, every destination and the in-flight
    charges (``SnapshotStore.read_overview``); ``redis_error`` if that read failed.
    ``model``: the API's own, built once at start-up (else built from ``config``).
    ``placements`` and ``returns``: per destination, the buckets (start,
    jobs) the charges counted (``HealthStore.read``), for the last hour's
    charts; None, or ``placements_error`` if that read failed: no charts."""
    meta = None if view is None else view.meta
    state = _snapshot_state(meta, redis_error, now, config)
    rows: list[DestinationRow] = []
    unmatched: list[str] = []
    if view is not None and meta is not None:
        dests = view.destinations
        # Age limit off: a stale snapshot still shows what the scores were.
        # The operators' caps, with the in-flight charges: who is at a cap.
        result = rank([Candidate(d) for d in sorted(dests)], PROBE_JOB, [], view, now,
                      model or scoring_model(config.scoring), float("inf"), config.destination_locations(),
                      config.inflight.max_age_s, policy=site_policy(config))
        charges = counted_loads(view.charges, now, config.inflight.max_age_s)
        for position, p in enumerate(result.placements, start=1):
            d: DestinationFigures = dests[p.id]
            chart = None
            if placements is not None and placements_error is None:
                chart = PlacementChart.build(placements.get(p.id, ()), d.health.reports if d.health else (), now,
                                             (returns or {}).get(p.id, ()))
            rows.append(DestinationRow(
                position=position, id=p.id, state=p.group, reason=p.reason, status=d.status,
                score=None if p.total is None else round(p.total * 100, 1),
                queued=d.queued, running=d.running, in_flight=charges[p.id].count if p.id in charges else 0,
                cores_free=d.cpus_free, cores_total=d.cpus_total, mem_free_gb=d.mem_free_gb,
                mem_total_gb=d.mem_total_gb, gpus_free=d.gpus_free, gpus_total=d.gpus_total,
                metrics_age_s=_age(now, d.live_at),
                sources={k: max(0.0, now - v) for k, v in sorted(d.sources.items())},
                in_config=d.in_config, health=None if d.health is None else d.health.state, chart=chart,
            ))
        if config.destinations:
            unmatched = sorted(d for d, f in dests.items() if not f.in_config)
    sources = [] if meta is None else [SourceRow(name, s.state, s.age_s(now), s.problem, s.tenant)
                                       for name, s in sorted(meta.sources.items())]
    return StatusView(state, rows, PROBE_DESCRIPTION, config.api.max_snapshot_age_s,
                      config.scoring.max_metrics_age_s, config.inflight.enabled, unmatched, sources,
                      placements_error)
