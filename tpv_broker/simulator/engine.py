"""The event loop: arrivals, staging, starts and finishes at the sites, and
metrics sampled every refresh interval and published after the exporter lag,
through the real snapshot store. With ``faults`` (failures.py), attempts
fail and a failed job is submitted again, ranked anew."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
    # Of its last attempt.
    destination: str
    start: float = math.nan
    end: float = math.nan
    # Where its attempts failed, in order (failure scenarios).
    failed_at: list[str] = field(default_factory=list)
    # Its last attempt failed: it ended in error.
    failed: bool = False

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
    # Object store -> site -> MB/s: staging from this table (carbon.py)
    # instead of the distance rule above.
    throughput_mb_s: Mapping[str, Mapping[str, float]] | None = None

    def staging_s(self, job: Job, dest_id: str) -> float:
        if self.throughput_mb_s is not None:
            return job.input_bytes / 1e6 / self.throughput_mb_s[job.input_store][dest_id]
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


@dataclass(frozen=True)
class Fate:
    """How an attempt fails: ``fast_s`` after it was placed, without ever
    running (a broken endpoint), or else after running ``run_share`` of its
    run time (a tool's error)."""

    fast_s: float | None = None
    run_share: float = 1.0


class Faults(Protocol):
    """What fails, and what happens then (failures.py)."""

    # Attempts a job gets: 2 = submitted again once after a failure.
    attempts: int
    resubmit_delay_s: float

    def fate(self, job: Job, dest_id: str, now: float, attempt: int) -> Fate | None:
        """How this attempt (1, 2, ...) fails there, placed now; None: it does not."""

    def failed(self, job: Job, dest_id: str, now: float, final: bool) -> None:
        """An attempt failed (``final``: the job ended in error)."""


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
    faults: Faults | None = None,
    on_publish: Callable[[Snapshot], None] | None = None,
) -> RunResult:
    """Place every job with ``choose``; publish a snapshot every ``refresh_s``
    showing the state ``lag_s`` earlier (ending the in-flight ``charges``
    it shows, as the collector does). Runs until every job has finished.
    ``views``: more stores to publish to, each with what one Galaxy's own
    collector sees (the multi-Galaxy scenario). ``faults``: which attempts
    fail (a failed job arrives again, up to ``faults.attempts``);
    ``on_publish``: called with each snapshot of ``store`` before it is
    published (destination health puts its verdicts in)."""
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
    # Jobs whose current attempt fails when its run ends; jobs to arrive again.
    failing: set[str] = set()
    retrying: set[str] = set()

    def attempt_failed(record: JobRecord, dest_id: str, t: float) -> bool:
        """True if the job ended in error; else it arrives again."""
        assert faults is not None
        record.failed_at.append(dest_id)
        final = len(record.failed_at) >= faults.attempts
        faults.failed(record.job, dest_id, t, final)
        if final:
            record.end, record.failed = t, True
        else:
            retrying.add(record.job.id)
            at(t + faults.resubmit_delay_s, "arrive", record.job)
        return final

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
            record = records.get(job.id)
            if record is not None and job.id not in retrying:
                raise AssertionError(f"{job.id} placed twice")
            retrying.discard(job.id)
            dest_id = choose(job, world)
            if record is None:
                record = records[job.id] = JobRecord(job, dest_id)
            record.destination = dest_id
            fate = faults.fate(job, dest_id, t, len(record.failed_at) + 1) if faults is not None else None
            if fate is not None and fate.fast_s is not None:
                world.sites[dest_id].place(job)
                at(t + fate.fast_s, "fail", (dest_id, job))
                continue
            if fate is not None:
                # This attempt runs a share of the job, then fails.
                failing.add(job.id)
                job = replace(job, run_s=job.run_s * fate.run_share)
            world.sites[dest_id].place(job)
            at(t + world.staging_s(job, dest_id), "enqueue", (dest_id, job))
        elif kind == "enqueue":
            dest_id, job = payload
            started(dest_id, world.sites[dest_id].enqueue(job, t))
        elif kind == "fail":
            dest_id, job = payload
            world.sites[dest_id].staging.remove(job)
            pending -= attempt_failed(records[job.id], dest_id, t)
        elif kind == "finish":
            dest_id, job_id = payload
            _, runs = world.sites[dest_id].finish(job_id, t)
            if job_id in failing:
                failing.discard(job_id)
                pending -= attempt_failed(records[job_id], dest_id, t)
            else:
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
                if view.galaxy is None and on_publish is not None:
                    on_publish(snap)
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
