"""Synthetic Galaxy metrics at a chosen size, in the schemas the collector
reads (gxadmin ``queue_by_destination`` and ``destination-queue-run-time``,
pulsar-util ``htcondor_cluster_usage`` in its old one-line-per-site format),
and the rank requests the benchmarks send.

Density: ``destination-queue-run-time`` has one series per (tool,
destination) pair that ran a job in the lookback. Not every tool runs
everywhere: each tool runs on a fraction of the destinations drawn
uniformly from [2 %, 18 %] (mean 10 %), at least one destination. At 500
destinations x 2,000 tools that is about 100,000 series, not 1,000,000.
Tool ids: 5 % built-in tools (``Cut1``-like), the rest toolshed ids of
tools with 1-4 versions each, so the fallback levels merge versions as
they do on a real server.

Time: 15 one-minute gxadmin/pulsar-util batches ending at ``now`` (the
collector's default lookback is 15 min), and three daily
``destination-queue-run-time`` runs (50, 26 and 2 h ago: the default
stats lookback of 3 days holds three).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

OBJECT_STORES: dict[str, tuple[float, float]] = {
    "object_store_germany": (48.0, 7.85),
    "object_store_usa": (37.77, -122.42),
    "object_store_asia": (35.69, 139.69),
    "object_store_australia": (-25.27, 133.78),
}


@dataclass(frozen=True)
class Site:
    id: str
    cores: int
    mem_gb: int
    free_cores: int
    free_mem_gb: float
    queued: int
    running: int
    latitude: float
    longitude: float
    offline: bool


@dataclass(frozen=True)
class Dataset:
    """A synthetic metrics set: sites, tool ids, and which tool ran where."""

    sites: list[Site]
    tools: list[str]
    placement: dict[str, list[str]]  # tool id -> destination ids it ran on

    @property
    def series(self) -> int:
        return sum(len(v) for v in self.placement.values())


def tool_ids(n: int, rng: random.Random) -> list[str]:
    out = [f"builtin_tool_{i}" for i in range(max(1, n // 20))]
    k = 0
    while len(out) < n:
        owner, repo = f"owner{k % 97}", f"repo{k}"
        for v in range(rng.randint(1, 4)):
            if len(out) < n:
                out.append(f"toolshed.g2.bx.psu.edu/repos/{owner}/{repo}/tool{k}/1.{v}.0+galaxy{v}")
        k += 1
    return out


def make_dataset(n_destinations: int, n_tools: int, seed: int = 7) -> Dataset:
    rng = random.Random(seed)
    sites = []
    for i in range(n_destinations):
        cores = rng.choice((16, 32, 64, 128, 256, 512, 1024))
        mem = cores * rng.choice((4, 8))
        busy = rng.uniform(0.2, 1.0)
        sites.append(Site(
            id=f"dest_{i:03d}", cores=cores, mem_gb=mem,
            free_cores=int(cores * (1 - busy)), free_mem_gb=round(mem * (1 - busy) * rng.uniform(0.5, 1.0), 1),
            queued=rng.randint(0, 200), running=max(1, int(cores * busy / 4)),
            latitude=round(rng.uniform(-45, 65), 3), longitude=round(rng.uniform(-125, 150), 3),
            offline=rng.random() < 0.03,
        ))
    tools = tool_ids(n_tools, rng)
    ids = [s.id for s in sites]
    placement = {}
    for t in tools:
        k = max(1, round(rng.uniform(0.02, 0.18) * n_destinations))
        placement[t] = rng.sample(ids, k)
    return Dataset(sites, tools, placement)


def _f(v: float) -> str:
    v = round(float(v), 2)
    return str(int(v)) if v.is_integer() else repr(v)


def lines(ds: Dataset, now: int, seed: int = 11) -> Iterator[str]:
    """Line protocol, timestamps in seconds."""
    rng = random.Random(seed)
    for minute in range(15):
        ts = now - (14 - minute) * 60
        for s in ds.sites:
            claimed = s.cores - s.free_cores
            # Each site's exporter runs on a host of its own, and Telegraf
            # tags its lines so: without it the sites' lines would share one
            # series and timestamp, and InfluxDB would keep the last site's.
            yield (
                f"htcondor_cluster_usage,classad=machine,host={s.id}-head "
                f"total_detected_cpus={s.cores},claimed_cpus={claimed},unclaimed_cpus={s.free_cores},"
                f"total_memory={s.mem_gb * 1024},claimed_memory={_f((s.mem_gb - s.free_mem_gb) * 1024)},"
                f"unclaimed_memory={_f(s.free_mem_gb * 1024)},total_slots={s.cores // 8},"
                f"claimed_busy_slots={claimed // 8},unclaimed_idle_slots={s.free_cores // 8},"
                f'querytime={ts},destination_id="{s.id}",'
                f'destination_status="{"offline" if s.offline else "online"}" {ts}'
            )
            if s.queued:
                yield f"queue_by_destination,destination_id={s.id},state=queued count={s.queued} {ts}"
            yield f"queue_by_destination,destination_id={s.id},state=running count={s.running} {ts}"
    for ago in (50 * 3600, 26 * 3600, 2 * 3600):
        yield from run_time_lines(ds, now - ago, rng)


def run_time_lines(ds: Dataset, ts: int, rng: random.Random) -> Iterator[str]:
    """One day's ``destination-queue-run-time`` run: a point for every
    (tool, destination) pair, all at ``ts``."""
    for tool, dests in ds.placement.items():
        tag = tool.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")
        for d in dests:
            q, r = rng.uniform(5, 3600), rng.uniform(30, 20000)
            yield (
                f"destination-queue-run-time,destination_id={d},tool_id={tag} "
                f"count={rng.randint(1, 500)},avg_queue={_f(q * 1.2)},min_queue=1,median_queue={_f(q)},"
                f"perc_95_queue={_f(q * 3)},perc_99_queue={_f(q * 4)},max_queue={_f(q * 5)},"
                f"avg_run={_f(r * 1.1)},min_run=10,median_run={_f(r)},perc_95_run={_f(r * 2.5)},"
                f"perc_99_run={_f(r * 3)},max_run={_f(r * 4)} {ts}"
            )


def rank_bodies(ds: Dataset, n_candidates: int, count: int, seed: int = 3) -> list[dict[str, Any]]:
    """``count`` distinct /api/rank bodies with ``n_candidates`` candidates
    each: random tools (a tenth of them a version with no history, so the
    fallback levels are exercised), random candidate sets with TPV scores
    and coordinates, two inputs in known object stores."""
    rng = random.Random(seed * 1000 + n_candidates)
    ids = [s.id for s in ds.sites]
    stores = list(OBJECT_STORES)
    bodies = []
    for i in range(count):
        tool = rng.choice(ds.tools)
        if i % 10 == 9 and "/repos/" in tool:
            tool = tool.rsplit("/", 1)[0] + "/9.9.9+galaxy0"
        cands = rng.sample(ids, min(n_candidates, len(ids)))
        by_id = {s.id: s for s in ds.sites}
        bodies.append({
            "job": {"id": 1000 + i, "tool_id": tool, "cores": rng.choice((1, 2, 4, 8)),
                    "mem": rng.choice((2, 8, 16, 32)), "gpus": 0},
            "destinations": [
                {"id": c, "tpv_score": rng.choice((0, 0, 1, 2)),
                 "context": {"latitude": by_id[c].latitude, "longitude": by_id[c].longitude}}
                for c in cands
            ],
            "datasets": [{"object_store_id": sid, "size": rng.choice((1e8, 2e9, 5e10))}
                         for sid in rng.sample(stores, 2)],
            "object_stores": {k: {"latitude": v[0], "longitude": v[1]} for k, v in OBJECT_STORES.items()},
        })
    return bodies
