"""One collection cycle: query InfluxDB once, build the snapshot, publish it.
The clock, the InfluxDB client and the store are passed in."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Callable

from ..shared.config import BrokerConfig
from ..shared.errors import MetricSourceError, StoreError
from ..shared.models import DestinationFigures, Snapshot, SnapshotMeta
from ..shared.store import SnapshotStore
from .influx import InfluxQLClient
from .presets import LIVE_SOURCES, PRESETS, CycleData
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
        return text


def build_snapshot(data: CycleData, config: BrokerConfig, now: float, cycle_s: float) -> Snapshot:
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
    queue_known = "queue_by_destination" in data.read_ok
    newest: float | None = None
    for d in data.destinations.values():
        if queue_known and d.queued is None:
            d.queued, d.running = 0.0, 0.0
        d.metrics_at = max(d.sources.values()) if d.sources else None
        live = [at for source, at in d.sources.items() if source in LIVE_SOURCES]
        d.live_at = max(live) if live else None
        if d.metrics_at is not None:
            newest = d.metrics_at if newest is None else max(newest, d.metrics_at)
    meta = SnapshotMeta(
        created_at=now,
        newest_point_at=newest,
        destinations=len(data.destinations),
        tools=len(data.tool_stats),
        cycle_s=cycle_s,
        collector=socket.gethostname(),
    )
    return Snapshot(meta=meta, destinations=data.destinations, tool_stats=tool_levels(data.tool_stats))


def collect_once(
    config: BrokerConfig,
    source: InfluxQLClient,
    store: SnapshotStore,
    clock: Callable[[], float],
) -> CycleReport:
    """Never raises for InfluxDB or Redis trouble: the report says what went
    wrong, and the last published snapshot stays in Redis untouched."""
    started = clock()
    presets = [PRESETS[name] for name in config.collector.presets]
    report = CycleReport(published=False, queries=len(presets))
    data = CycleData(aliases=config.alias_map())
    try:
        results = source.query([p.statement(config.collector) for p in presets])
    except MetricSourceError as e:
        report.errors.append(str(e))
        report.duration_s = clock() - started
        return report
    ok = 0
    for preset, result in zip(presets, results):
        if result.error is not None:
            # "database not found" and friends: name the preset, keep the others.
            report.errors.append(f"{preset.name}: {result.error}")
            continue
        try:
            preset.apply(result.series, data, config.collector)
            data.read_ok.add(preset.name)
            ok += 1
        except (TypeError, ValueError, KeyError) as e:
            report.errors.append(f"{preset.name}: unexpected data ({type(e).__name__}: {e})")
    if presets and ok == 0:
        problem = source.database_problem()
        if problem is not None:
            report.errors = [problem]
        report.errors.append("no preset could be read; keeping the last snapshot")
        report.duration_s = clock() - started
        return report
    now = clock()
    snapshot = build_snapshot(data, config, now, now - started)
    try:
        store.publish(snapshot)
    except StoreError as e:
        report.errors.append(str(e))
    else:
        report.published = True
    report.destinations = snapshot.meta.destinations
    report.tools = snapshot.meta.tools
    report.rows_read = data.rows_read
    if snapshot.meta.newest_point_at is not None:
        report.newest_point_age_s = max(0.0, now - snapshot.meta.newest_point_at)
    report.duration_s = clock() - started
    return report
