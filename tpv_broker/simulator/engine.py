"""The event loop: arrivals, staging, starts and finishes at the sites, and
metrics sampled every refresh interval and published after the exporter lag,
through the real snapshot store."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.snapshots import SnapshotStore

from ..collector.tool_levels import tool_levels
from .cluster import DestinationSim
from .workload import OBJECT_STORES, SITES, TOOLS, Job, Site

# Staging: 1 GB takes 1 s next door and 3 s at 1,000 km.
_S_PER_GB_BASE, _S_PER_GB_PER_1000KM = 1.0, 2.0


@dataclass
class JobRecord:
    job: Job
    destination: str
    start: float = math.nan
    end: float = math.nan

    @property
    def wait_s(self) -> float:
        return self.start - self.job.arrival

    @property
    def turnaround_s(self) -> float:
        return self.end - self.job.arrival


@dataclass
class World:
    sites: dict[str, DestinationSim]
    now: float = 0.0
    # gxadmin's daily figures: expected medians per (tool, site), as if
    # yesterday had run the same mix.
    tool_stats: dict[str, dict[str, ToolFigures]] = field(default_factory=dict)
    expected_run: dict[str, float] = field(default_factory=dict)
    published: Snapshot | None = None

    def staging_s(self, job: Job, dest_id: str) -> float:
        site = self.sites[dest_id].site
        km = great_circle_km(site.latitude, site.longitude, *OBJECT_STORES[job.input_store])
        return job.input_bytes / 1e9 * (_S_PER_GB_BASE + _S_PER_GB_PER_1000KM * km / 1000)

    def sample(self, at: float, galaxy: str | None = None) -> dict[str, DestinationFigures]:
        """The sites' figures now; with ``galaxy``, as that Galaxy's own
        gxadmin sees them: the capacity the site exports, but only its own
        jobs queued and running."""
        out = {}
        for site_id, d in self.sites.items():
            def mine(jobs: Iterable[Job]) -> float:
                return float(sum(1 for j in jobs if galaxy is None or j.galaxy == galaxy))

            out[site_id] = DestinationFigures(
                id=site_id,
                status="online",
                # Galaxy counts a job queued from dispatch until it runs.
                queued=mine([j for j, _ in d.queue]) + mine(d.staging),
                running=mine(r.job for r in d.running.values()),
                cpus_total=float(d.site.cores),
                cpus_free=d.free_cores,
                mem_total_gb=float(d.site.mem_gb),
                mem_free_gb=d.free_mem,
                median_queue_s=60.0,
                median_run_s=_weighted_run(d.site),
                metrics_at=at,
                live_at=at,
                sources={"queue_by_destination": at, "htcondor_cluster_usage": at},
                in_config=True,
            )
        return out


def _weighted_run(site: Site) -> float:
    total = sum(t.weight for t in TOOLS)
    return sum(t.weight / total * t.median_run_s for t in TOOLS) * site.speed


def new_world(sites: tuple[Site, ...] = SITES) -> World:
    world = World(sites={s.id: DestinationSim(s) for s in sites})
    for tool in TOOLS:
        world.expected_run[tool.id] = tool.median_run_s
        world.tool_stats[tool.id] = {
            s.id: ToolFigures(count=50, median_queue_s=60.0, median_run_s=tool.median_run_s * s.speed) for s in sites
        }
    return world


@dataclass(frozen=True)
class View:
    """A store the simulated collector publishes to, and whose figures:
    every Galaxy's (None) or one Galaxy's own."""

    store: SnapshotStore
    charges: InflightStore | None = None
    galaxy: str | None = None


@dataclass
class RunResult:
    policy: str
    records: list[JobRecord]
    busy_core_s: dict[str, float]
    horizon_s: float
    cores: dict[str, int]


def run(
    jobs: list[Job],
    choose: Callable[[Job, World], str],
    policy: str,
    store: SnapshotStore,
    world: World,
    refresh_s: float = 60.0,
    lag_s: float = 30.0,
    charges: InflightStore | None = None,
    views: Sequence[View] = (),
) -> RunResult:
    """Place every job with ``choose``; publish a snapshot every ``refresh_s``
    showing the state ``lag_s`` earlier (ending the in-flight ``charges``
    it shows, as the collector does). Runs until every job has finished.
    ``views``: more stores to publish to, each with what one Galaxy's own
    collector sees (the multi-Galaxy scenario)."""
    views = [View(store, charges), *views]
    seq = itertools.count()
    events: list[tuple[float, int, str, Any]] = []

    def at(t: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(events, (t, next(seq), kind, payload))

    for arriving in jobs:
        at(arriving.arrival, "arrive", arriving)
    horizon = max((j.arrival for j in jobs), default=0.0)
    # The first snapshot shows the empty start; then one per refresh.
    at(0.0, "sample", 0.0)
    k = 1
    while k * refresh_s - lag_s <= horizon + refresh_s:
        at(k * refresh_s - lag_s, "sample", k * refresh_s)
        k += 1
    samples: dict[float, dict[str | None, dict[str, DestinationFigures]]] = {}
    records: dict[str, JobRecord] = {}
    pending = len(jobs)

    def started(dest_id: str, runs: list[Any]) -> None:
        for r in runs:
            records[r.job.id].start = r.start
            at(r.end, "finish", (dest_id, r.job.id))

    window_busy: dict[str, float] | None = None
    while events and pending:
        t, _, kind, payload = heapq.heappop(events)
        if window_busy is None and t > horizon:
            # Utilisation is measured while jobs arrive, not over the drain.
            for d in world.sites.values():
                d._account(horizon)
            window_busy = {i: d.busy_core_s for i, d in world.sites.items()}
        world.now = t
        if kind == "arrive":
            job: Job = payload
            dest_id = choose(job, world)
            if job.id in records:
                raise AssertionError(f"{job.id} placed twice")
            records[job.id] = JobRecord(job, dest_id)
            world.sites[dest_id].place(job)
            at(t + world.staging_s(job, dest_id), "enqueue", (dest_id, job))
        elif kind == "enqueue":
            dest_id, job = payload
            started(dest_id, world.sites[dest_id].enqueue(job, t))
        elif kind == "finish":
            dest_id, job_id = payload
            _, runs = world.sites[dest_id].finish(job_id, t)
            records[job_id].end = t
            pending -= 1
            started(dest_id, runs)
        elif kind == "sample":
            publish_at = payload
            samples[publish_at] = {v.galaxy: world.sample(t, v.galaxy) for v in views}
            at(publish_at, "publish", publish_at)
        elif kind == "publish":
            sampled = samples.pop(payload)
            for view in views:
                figures = sampled[view.galaxy]
                snap = Snapshot(
                    meta=SnapshotMeta(created_at=t, newest_point_at=t - lag_s if t else 0.0,
                                      destinations=len(figures), tools=len(world.tool_stats), collector="simulator"),
                    destinations=figures,
                    tool_stats=tool_levels(world.tool_stats),
                )
                view.store.publish(snap, charges=view.charges)
                if view.galaxy is None:
                    world.published = snap
    for d in world.sites.values():
        d._account(world.now)
    missing = [j.id for j in jobs if j.id not in records or math.isnan(records[j.id].end)]
    if missing:
        raise AssertionError(f"{len(missing)} jobs never finished, e.g. {missing[:3]}")
    return RunResult(
        policy=policy,
        records=[records[j.id] for j in jobs],
        busy_core_s=window_busy if window_busy is not None else {i: d.busy_core_s for i, d in world.sites.items()},
        horizon_s=horizon,
        cores={i: d.site.cores for i, d in world.sites.items()},
    )
