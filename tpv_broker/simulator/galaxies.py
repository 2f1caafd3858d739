"""Several Galaxy servers sending jobs to the same sites (issue 21): one
broker for all of them against one broker per Galaxy.

Three Galaxies submit 50, 30 and 20 % of the jobs; a workflow burst comes
from one Galaxy at a time. Policies, on the same arrivals:

* ``shared_broker``: one broker; its collector sees every Galaxy's jobs
  queued and running at each site, and every Galaxy's placements are
  charged where every ranking sees them (the job's Galaxy is its tenant);
* ``per_galaxy_broker``: a broker per Galaxy; each sees the sites' free
  capacity (the sites export it to everyone) but only its own Galaxy's
  queue there and its own charges;
* ``per_galaxy_no_charges``: the same, without in-flight charges.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import fakeredis

from tpv_broker.api.rank_service import RankService
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .compare import Summary, broker_config, offered
from .engine import View, World, new_world, run
from .policies import Broker
from .workload import Job, arrivals

GALAXY_POLICIES = ("shared_broker", "per_galaxy_broker", "per_galaxy_no_charges")
SHARES: tuple[tuple[str, float], ...] = (("galaxy_a", 0.5), ("galaxy_b", 0.3), ("galaxy_c", 0.2))


def assign_galaxies(jobs: Sequence[Job], seed: int, shares: Sequence[tuple[str, float]] = SHARES) -> list[Job]:
    """Each job's Galaxy, by ``shares``; the jobs of one workflow burst (one
    tool at one instant) all come from one Galaxy."""
    rng = random.Random(seed * 7919 + 1)
    names, weights = [n for n, _ in shares], [w for _, w in shares]
    out, last, galaxy = [], None, names[0]
    for job in jobs:
        key = (job.arrival, job.tool.id)
        if key != last:
            galaxy, last = rng.choices(names, weights)[0], key
        out.append(replace(job, galaxy=galaxy))
    return out


def _store(name: str) -> SnapshotStore:
    return SnapshotStore(fakeredis.FakeRedis(), KeySchema(name))


def _broker(world: World, store: SnapshotStore, charge: bool, seed: int) -> Broker:
    return Broker(RankService(broker_config(0.0), store, clock=lambda: world.now), charge=charge, seed=seed)


class PerGalaxy:
    """Each job ranked by its own Galaxy's broker."""

    def __init__(self, brokers: dict[str, Broker]) -> None:
        self.brokers = brokers

    def choose(self, job: Job, world: World) -> str:
        return self.brokers[job.galaxy].choose(job, world)


def run_policy(name: str, jobs: list[Job], seed: int, refresh_s: float, lag_s: float) -> Summary:
    world = new_world()
    charges_on = broker_config(0.0).inflight
    choose: Callable[[Job, World], str]
    if name == "shared_broker":
        store = _store("shared")
        choose = _broker(world, store, True, seed).choose
        result = run(jobs, choose, name, store, world, refresh_s, lag_s, store.inflight(charges_on))
    else:
        charge = name == "per_galaxy_broker"
        stores = {galaxy: _store(galaxy) for galaxy, _ in SHARES}
        views = [View(s, s.inflight(charges_on) if charge else None, galaxy) for galaxy, s in stores.items()]
        choose = PerGalaxy({g: _broker(world, s, charge, seed) for g, s in stores.items()}).choose
        # Every collector of a Galaxy sees only its own queue; nobody reads the all-Galaxies view here.
        result = run(jobs, choose, name, _store("unread"), world, refresh_s, lag_s, views=views)
    return Summary.of(result, 0.0, seed, 0.0)


def simulate_galaxies(loads: Sequence[float], duration_s: float, seed: int, seeds: int, refresh_s: float = 60.0,
                      lag_s: float = 30.0, progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Every policy on the same arrivals, per load and seed: one row each."""
    rows = []
    for load in loads:
        for s in range(seed, seed + seeds):
            jobs = assign_galaxies(arrivals(load, duration_s, s), s)
            offered_load = offered(jobs, duration_s)
            for name in GALAXY_POLICIES:
                summary = run_policy(name, jobs, s, refresh_s, lag_s)
                rows.append({"load": load, "seed": s, "offered_load": round(offered_load, 3), "policy": name,
                             "jobs": summary.jobs, "mean_wait_s": round(summary.mean_wait_s, 1),
                             "p95_wait_s": round(summary.p95_wait_s, 1),
                             "mean_turnaround_s": round(summary.mean_turnaround_s, 1)})
                progress(f"load {load:.0%} seed {s} {name}: mean wait {summary.mean_wait_s:.0f} s")
    return rows


def galaxy_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load: the per-Galaxy brokers' mean wait over the shared one's,
    per seed and over the seeds (median, min-max, and pooled over all
    jobs of all seeds)."""
    out = []
    for load in sorted({r["load"] for r in rows}):
        wait = {(r["seed"], r["policy"]): r for r in rows if r["load"] == load}
        seeds = sorted({s for s, _ in wait})
        entry: dict[str, Any] = {"load": load}
        # Mean wait over all jobs of all seeds.
        pooled = {p: sum(float(wait[s, p]["mean_wait_s"]) * wait[s, p]["jobs"] for s in seeds)
                  for p in GALAXY_POLICIES}
        for other in GALAXY_POLICIES[1:]:
            per_seed = {s: wait[s, other]["mean_wait_s"] / max(wait[s, "shared_broker"]["mean_wait_s"], 1e-9)
                        for s in seeds}
            entry[f"{other}_vs_shared"] = {
                "per_seed": {s: round(v, 2) for s, v in per_seed.items()},
                "median": round(statistics.median(per_seed.values()), 2),
                "min": round(min(per_seed.values()), 2), "max": round(max(per_seed.values()), 2),
                "pooled": round(pooled[other] / max(pooled["shared_broker"], 1e-9), 2),
            }
        out.append(entry)
    return out


def galaxy_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["load  seed  offered  " + "  ".join(f"{p:>22s}" for p in GALAXY_POLICIES) + "   (mean wait s)"]
    for r in sorted({(r["load"], r["seed"], r["offered_load"]) for r in rows}):
        waits = {x["policy"]: x["mean_wait_s"] for x in rows if (x["load"], x["seed"]) == r[:2]}
        lines.append(f"{r[0]:>4.0%}  {r[1]:>4d}  {r[2]:>7.2f}  " + "  ".join(f"{waits[p]:>22.1f}"
                                                                             for p in GALAXY_POLICIES))
    for entry in galaxy_ratios(rows):
        for other in GALAXY_POLICIES[1:]:
            v = entry[f"{other}_vs_shared"]
            lines.append(f"load {entry['load']:.0%}: {other} / shared_broker mean wait: median {v['median']} "
                         f"({v['min']}-{v['max']}), pooled {v['pooled']}; per seed {v['per_seed']}")
    return lines
