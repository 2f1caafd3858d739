"""Runs every policy on the same arrival sequence at several loads and
seeds and summarises each run: mean and p95 queue wait and turnaround,
utilisation per site, and the load the arrivals really offered (one tool
carries most of the work and comes in bursts, so a 4 h window offers from
0.8x to 1.7x the nominal load, depending on the seed)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis

from tpv_broker.api.rank_service import RankService
from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.ranking_settings import DestinationSettings, InflightSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.config.terms import DEFAULT_TERMS
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .engine import RunResult, World, new_world, run
from .policies import Broker, Oracle, Policy, Prototype, TpvDefault, WeightedRandom
from .workload import OBJECT_STORES, SITES, Job, arrivals, capacity_core_seconds_per_s

# Two oracles see the true state at every arrival: "oracle" sends a job
# where it would finish first (it trades queue wait for a faster site),
# "oracle_start" where it would start first (the reference for queue wait).
POLICIES = ("tpv_default", "weighted_random", "prototype", "broker", "broker_inflight", "oracle", "oracle_start")

# The broker's expected wait and run time as one expected finish time
# (terms.FinishTime) instead of two terms on their own log scales.
FINISH_TERMS: dict[str, dict[str, float]] = {
    "finish_time": {"weight": 5.0, "scale_s": 60.0, "cap_s": 604800.0},
    **{k: v for k, v in DEFAULT_TERMS.items() if k not in ("queue_wait", "run_time")},
}
# Variants for the experiments on what limits the broker (--policies); not
# in the default comparison.
VARIANTS = ("broker_inflight_work", "broker_finish", "broker_inflight_finish", "broker_inflight_finish_work",
            "broker_inflight_ties", "broker_notags", "broker_inflight_notags")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


@dataclass
class Summary:
    policy: str
    load: float
    seed: int
    offered_load: float
    jobs: int
    mean_wait_s: float
    p95_wait_s: float
    mean_turnaround_s: float
    p95_turnaround_s: float
    utilisation: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, result: RunResult, load: float, seed: int, offered_load: float) -> Summary:
        waits = [r.wait_s for r in result.records]
        turns = [r.turnaround_s for r in result.records]
        return cls(
            policy=result.policy,
            load=load,
            seed=seed,
            offered_load=offered_load,
            jobs=len(result.records),
            mean_wait_s=statistics.fmean(waits) if waits else 0.0,
            p95_wait_s=_p95(waits),
            mean_turnaround_s=statistics.fmean(turns) if turns else 0.0,
            p95_turnaround_s=_p95(turns),
            # Busy core-seconds over the whole run, per core-second of it.
            utilisation={
                site: round(busy / (result.cores[site] * result.horizon_s), 3) if result.horizon_s else 0.0
                for site, busy in result.busy_core_s.items()
            },
        )


def offered(jobs: list[Job], duration_s: float) -> float:
    """Core-seconds the jobs bring per second of the window, over capacity."""
    return sum(j.tool.cores * j.run_s for j in jobs) / duration_s / capacity_core_seconds_per_s()


def broker_config(reflect_lag_s: float, terms: dict[str, dict[str, Any]] | None = None,
                  charge_by: str = "slot", staging: dict[str, Any] | None = None) -> BrokerConfig:
    """``staging``: a ``scoring.staging`` section (carbon.py), else none."""
    scoring: dict[str, Any] = {"terms": terms} if terms is not None else {}
    if staging is not None:
        scoring["staging"] = staging
    return BrokerConfig(
        api=ApiSettings(max_snapshot_age_s=10**9),
        scoring=scoring,
        inflight=InflightSettings(reflect_lag_s=reflect_lag_s, max_age_s=600, charge_by=charge_by),
        destinations={s.id: DestinationSettings(latitude=s.latitude, longitude=s.longitude) for s in SITES},
        object_stores={k: {"latitude": v[0], "longitude": v[1]} for k, v in OBJECT_STORES.items()},
    )


def make_policy(name: str, world: World, store: SnapshotStore, seed: int) -> Policy:
    """A policy of POLICIES or VARIANTS, on its own world and store."""
    fixed: dict[str, Callable[[], Policy]] = {
        "tpv_default": TpvDefault,
        "weighted_random": lambda: WeightedRandom(seed),
        "prototype": Prototype,
        "oracle": Oracle,
        "oracle_start": lambda: Oracle(by_start=True),
    }
    if name in fixed:
        return fixed[name]()
    if not name.startswith("broker"):
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES + VARIANTS)})")
    terms: dict[str, dict[str, Any]] | None = None
    if "finish" in name:
        terms = FINISH_TERMS
    elif "notags" in name:
        terms = {**DEFAULT_TERMS, "tpv_score": {"weight": 0.0, "scale": 1.0}}
    # A placed job shows in the very next sample here, so a charge ends
    # as soon as a snapshot's figures are newer than it.
    config = broker_config(0.0, terms, "work" if name.endswith("_work") else "slot")
    ranker = RankService(config, store, clock=lambda: world.now)
    return Broker(ranker, charge="inflight" in name, near_tie=0.02 if name.endswith("_ties") else 0.0, seed=seed)


def simulate(
    loads: list[float],
    duration_s: float,
    seed: int,
    refresh_s: float = 60.0,
    lag_s: float = 30.0,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str], None] = lambda _: None,
    seeds: int = 1,
    burst_size: tuple[int, int] = (10, 40),
) -> list[Summary]:
    """Every policy on the same arrivals, per load and per seed
    (``seed``, ``seed + 1``, ... ``seeds`` of them)."""
    out = []
    for load in loads:
        for s in range(seed, seed + seeds):
            jobs = arrivals(load, duration_s, s, burst_size=burst_size)
            offered_load = offered(jobs, duration_s)
            for name in policies:
                world = new_world()
                store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("sim"))
                policy = make_policy(name, world, store, s)
                result = run(jobs, policy.choose, name, store, world, refresh_s, lag_s,
                             store.inflight(broker_config(0.0).inflight))
                out.append(Summary.of(result, load, s, offered_load))
                progress(f"load {load:.0%} seed {s} {name}: {len(jobs)} jobs (offered {offered_load:.2f}), "
                         f"mean wait {out[-1].mean_wait_s:.0f} s")
    return out


def as_rows(summaries: list[Summary]) -> list[dict[str, Any]]:
    return [
        {
            "load": s.load,
            "seed": s.seed,
            "offered_load": round(s.offered_load, 3),
            "policy": s.policy,
            "jobs": s.jobs,
            "mean_wait_s": round(s.mean_wait_s, 1),
            "p95_wait_s": round(s.p95_wait_s, 1),
            "mean_turnaround_s": round(s.mean_turnaround_s, 1),
            "p95_turnaround_s": round(s.p95_turnaround_s, 1),
            "utilisation": s.utilisation,
        }
        for s in summaries
    ]
