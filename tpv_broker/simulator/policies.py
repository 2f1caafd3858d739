"""The placement policies compared: each chooses one destination per job.
The broker policies call the real RankService on the real snapshot and
in-flight stores; the others are written from their descriptions."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Protocol

from tpv_broker.api.rank_service import RankService
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import Candidate, JobFacts

from .workload import OBJECT_STORES, Job

if TYPE_CHECKING:
    from .engine import World


class Policy(Protocol):
    name: str

    def choose(self, job: Job, world: World) -> str: ...


class TpvDefault:
    """TPV's own ranker: highest tag score first; the same site every time."""

    name = "tpv_default"

    def choose(self, job: Job, world: World) -> str:
        return max(world.sites.values(), key=lambda d: d.site.tpv_score).site.id


class WeightedRandom:
    """What usegalaxy.eu runs today: random, weighted by capacity."""

    name = "weighted_random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choose(self, job: Job, world: World) -> str:
        sites = list(world.sites.values())
        return self.rng.choices(sites, weights=[d.site.cores for d in sites])[0].site.id


class Prototype:
    """The first prototype, from its description: drop destinations that
    cannot fit the job now (distance-only order if none can), then order by
    distance to the inputs' object store, then by
    1/(median_queue x queued) + 1/(median_run x running) with its queued and
    running figures swapped, as its queries were."""

    name = "prototype"

    def choose(self, job: Job, world: World) -> str:
        snap = world.published
        store_at = OBJECT_STORES[job.input_store]
        stats = world.tool_stats.get(job.tool.id, {})

        def distance_km(dest_id: str) -> float:
            site = world.sites[dest_id].site
            return great_circle_km(site.latitude, site.longitude, *store_at)

        if snap is None:
            # Before the first snapshot it knows only the distances.
            return min(world.sites, key=distance_km)

        def key(dest_id: str) -> tuple[float, float]:
            d = snap.destinations[dest_id]
            km = distance_km(dest_id)
            f = stats.get(dest_id)
            mq, mr = (f.median_queue_s or 0.0, f.median_run_s or 0.0) if f else (0.0, 0.0)
            queued, running = d.running or 0.0, d.queued or 0.0  # the prototype's swap
            score = ((1 / (mq * queued) if mq * queued else math.inf)
                     + (1 / (mr * running) if mr * running else math.inf))
            return (km, -score)

        fitting = [
            i for i, d in snap.destinations.items()
            if (d.cpus_free or 0) >= job.tool.cores and (d.mem_free_gb or 0) >= job.tool.mem_gb
        ]
        if not fitting:
            return min(snap.destinations, key=distance_km)
        return min(fitting, key=key)


class Broker:
    """This broker: the real RankService, with or without in-flight charges.
    ``near_tie`` (an experiment, not the broker's behaviour): choose at
    random among the scored candidates within this much of the best total,
    and charge the one chosen."""

    def __init__(self, ranker: RankService, charge: bool, near_tie: float = 0.0, seed: int = 0) -> None:
        self.ranker = ranker
        self.charge = charge
        self.name = "broker_inflight" if charge else "broker"
        self.near_tie = near_tie
        self.rng = random.Random(seed)

    def choose(self, job: Job, world: World) -> str:
        candidates = [Candidate(d.site.id, d.site.tpv_score) for d in world.sites.values()]
        facts = JobFacts(tool_id=job.tool.id, cores=job.tool.cores, mem=job.tool.mem_gb, id=job.id)
        datasets = self.ranker.datasets([(job.input_store, job.input_bytes)], {})
        if not self.near_tie:
            return self.ranker.rank(candidates, facts, datasets, charge=self.charge, tenant=job.galaxy).ids[0]
        result = self.ranker.rank(candidates, facts, datasets, charge=False, tenant=job.galaxy)
        best = result.placements[0].total
        if best is None:
            return result.ids[0]
        close = [p for p in result.placements if p.total is not None and p.total >= best - self.near_tie]
        chosen = self.rng.choice(close)
        if self.charge:
            chosen_first = result.reorder([chosen, *(p for p in result.placements if p is not chosen)])
            # Its own expected run time is not known here: charge one slot.
            chosen_first.first_run_s = None
            self.ranker.charge_first(chosen_first, facts, world.now, tenant=job.galaxy)
        return chosen.id


class Oracle:
    """Sees the true state at every arrival: the destination where the job
    would finish first (earliest start given the real queue and the real
    remaining times of running jobs, plus staging and expected run time).
    ``by_start``: the one where it would start first instead (a reference
    for queue wait alone, which the finish-time oracle trades for speed)."""

    def __init__(self, by_start: bool = False) -> None:
        self.by_start = by_start
        self.name = "oracle_start" if by_start else "oracle"

    def choose(self, job: Job, world: World) -> str:
        def finish(dest_id: str) -> float:
            d = world.sites[dest_id]
            staging = world.staging_s(job, dest_id)
            start = d.expected_start(job, world.now + staging, world.expected_run)
            return start if self.by_start else start + world.expected_run[job.tool.id] * d.site.speed

        return min(world.sites, key=finish)
