"""Runs every policy on the same arrival sequence at several loads and
summarises: mean and p95 queue wait and turnaround, utilisation per site."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import fakeredis

from ..shared.config import ApiSettings, BrokerConfig, DestinationSettings, InflightSettings
from ..shared.keys import KeySchema
from ..shared.rank_service import RankService
from ..shared.store import SnapshotStore
from .engine import RunResult, new_world, run
from .policies import Broker, Oracle, Policy, Prototype, TpvDefault, WeightedRandom
from .workload import OBJECT_STORES, SITES, arrivals

POLICIES = ("tpv_default", "weighted_random", "prototype", "broker", "broker_inflight", "oracle")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


@dataclass
class Summary:
    policy: str
    load: float
    jobs: int
    mean_wait_s: float
    p95_wait_s: float
    mean_turnaround_s: float
    p95_turnaround_s: float
    utilisation: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, result: RunResult, load: float, window_s: float) -> Summary:
        waits = [r.wait_s for r in result.records]
        turns = [r.turnaround_s for r in result.records]
        return cls(
            policy=result.policy,
            load=load,
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


def broker_config(reflect_lag_s: float) -> BrokerConfig:
    return BrokerConfig(
        api=ApiSettings(max_snapshot_age_s=10**9),
        inflight=InflightSettings(reflect_lag_s=reflect_lag_s, max_age_s=600),
        destinations={s.id: DestinationSettings(latitude=s.latitude, longitude=s.longitude) for s in SITES},
        object_stores={k: {"latitude": v[0], "longitude": v[1]} for k, v in OBJECT_STORES.items()},
    )


def simulate(
    loads: list[float],
    duration_s: float,
    seed: int,
    refresh_s: float = 60.0,
    lag_s: float = 30.0,
    policies: tuple[str, ...] = POLICIES,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Summary]:
    out = []
    for load in loads:
        jobs = arrivals(load, duration_s, seed)
        for name in policies:
            world = new_world()
            store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("sim"))
            # A placed job shows in the very next sample here, so a charge ends
            # as soon as a snapshot's figures are newer than it.
            ranker = RankService(broker_config(reflect_lag_s=0.0), store, clock=lambda w=world: w.now)
            policy: Policy = {
                "tpv_default": lambda: TpvDefault(),
                "weighted_random": lambda: WeightedRandom(seed),
                "prototype": lambda: Prototype(),
                "broker": lambda: Broker(ranker, charge=False),
                "broker_inflight": lambda: Broker(ranker, charge=True),
                "oracle": lambda: Oracle(),
            }[name]()
            result = run(jobs, policy.choose, name, store, world, refresh_s, lag_s)
            out.append(Summary.of(result, load, duration_s))
            progress(f"load {load:.0%} {name}: {len(jobs)} jobs, mean wait {out[-1].mean_wait_s:.0f} s")
    return out


def as_rows(summaries: list[Summary]) -> list[dict[str, Any]]:
    return [
        {
            "load": s.load,
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
