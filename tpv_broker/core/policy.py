"""Site policy the rank core applies beside the score terms, pure: caps per
destination (jobs, queued, running, queued per running), and the time to
stage a job's inputs from their object stores (seconds, from a throughput
table or, where a pair is missing, from distance).

Caps: usegalaxy.org routes by per-destination thresholds and ranks a
destination lower as it nears a fixed limit; PanDA skips a queue whose
queued jobs exceed twice its running ones; DIRAC has per-site running
limits. Here a destination at or over a cap (its in-flight charges
counted) goes after those under theirs, and from ``soft_from`` of a cap on
its score is lowered smoothly, so the order does not jump at the line."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import DatasetInput
from tpv_broker.wording import percent_below


@dataclass(frozen=True)
class Cap:
    """One destination's caps (None: no such cap) and how its score bends near them."""

    max_jobs: float | None = None
    max_queued: float | None = None
    max_running: float | None = None
    max_queued_per_running: float | None = None
    # From this share of a cap on, the score is multiplied by a factor
    # falling linearly from 1 to at_cap_factor at the cap.
    soft_from: float = 0.8
    at_cap_factor: float = 0.5


@dataclass(frozen=True, eq=False)
class CapState:
    """Every candidate's use of its tightest cap (NaN: no cap), which cap
    that is, the factor on its score, and the counts it was judged on."""

    usage: np.ndarray
    which: list[str | None]
    factor: np.ndarray
    jobs: np.ndarray
    queued: np.ndarray
    running: np.ndarray

    @property
    def over(self) -> np.ndarray:
        over: np.ndarray = self.usage >= 1.0  # NaN compares false: no cap
        return over

    def explain(self, k: int, caps: Sequence[Cap | None]) -> dict[str, Any] | None:
        cap, which = caps[k], self.which[k]
        if cap is None or which is None:
            return None
        return {"cap": which, "limit": getattr(cap, which), "usage": round(float(self.usage[k]), 4),
                "jobs": round(float(self.jobs[k]), 2), "queued": round(float(self.queued[k]), 2),
                "running": round(float(self.running[k]), 2), "score_factor": round(float(self.factor[k]), 4)}

    def words(self, k: int, caps: Sequence[Cap | None]) -> str:
        detail = self.explain(k, caps)
        if detail is None:
            return ""
        return (f"{detail['cap']} {detail['limit']:g}: at {percent_below(detail['usage'])} "
                f"({detail['queued']:g} queued, {detail['running']:g} running, in-flight charges counted)")


_CAP_NAMES = ("max_jobs", "max_queued", "max_running", "max_queued_per_running")


def cap_state(caps: Sequence[Cap | None], queued_before: np.ndarray, queued: np.ndarray, running: np.ndarray,
              charged: np.ndarray) -> CapState:
    """Each candidate's use of its caps, in-flight charges counted: every
    charged job counts towards its jobs; one that fits the free capacity
    runs, one that does not is queued (``queued``: after the charges)."""
    size = len(caps)
    before = np.nan_to_num(queued_before)
    after = np.nan_to_num(queued)
    runs = np.nan_to_num(running) + np.maximum(0.0, charged - (after - before))
    jobs = before + np.nan_to_num(running) + charged
    usage = np.full(size, np.nan)
    which: list[str | None] = [None] * size
    factor = np.ones(size)
    for k, cap in enumerate(caps):
        if cap is None:
            continue
        used = {"max_jobs": jobs[k], "max_queued": after[k], "max_running": runs[k],
                "max_queued_per_running": after[k] / max(runs[k], 1.0)}
        for name in _CAP_NAMES:
            limit = getattr(cap, name)
            if limit is not None:
                share = used[name] / limit
                if math.isnan(usage[k]) or share > usage[k]:
                    usage[k], which[k] = share, name
        if which[k] is not None:
            factor[k] = _bend(float(usage[k]), cap)
    return CapState(usage, which, factor, jobs, after, runs)


def _bend(usage: float, cap: Cap) -> float:
    """1 below soft_from, at_cap_factor at (and past) the cap, linear between."""
    if usage <= cap.soft_from:
        return 1.0
    if usage >= 1.0:
        return cap.at_cap_factor
    return 1.0 - (usage - cap.soft_from) / (1.0 - cap.soft_from) * (1.0 - cap.at_cap_factor)


@dataclass(frozen=True)
class StagingTable:
    """Throughput (MB/s) from an object store to a destination: measured or
    configured pairs first; else ``default_mb_s`` halved every
    ``halving_km`` of great-circle distance (1,000 km: 50 MB/s, 3,000 km:
    25 MB/s at the default 100 MB/s), for stores and destinations whose
    location is known; else unknown."""

    throughput_mb_s: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    default_mb_s: float = 100.0
    halving_km: float = 1000.0

    def seconds(self, datasets: Sequence[DatasetInput], destinations: Sequence[str], latitude: np.ndarray,
                longitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each destination's time to stage every input (NaN: a store's
        throughput to it unknown), and the same as a turnaround counts it:
        a store's unknown throughput as the slowest known among
        ``destinations`` from that store (none known: none), so a missing
        location is never an advantage. No inputs: 0."""
        total, counted = np.zeros(len(destinations)), np.zeros(len(destinations))
        # Thousands of inputs come from a few stores: one throughput each.
        size: dict[tuple[str, tuple[float, float] | None], float] = {}
        for ds in datasets:
            if ds.size > 0:
                size[(ds.object_store_id, ds.location)] = size.get((ds.object_store_id, ds.location), 0.0) + ds.size
        for (store, location), nbytes in size.items():
            mb_s = self._mb_s(DatasetInput(store, nbytes, location), destinations, latitude, longitude)
            here = nbytes / 1e6 / mb_s
            known = here[~np.isnan(here)]
            total = total + here
            counted = counted + np.where(np.isnan(here), known.max() if known.size else 0.0, here)
        return total, counted

    def _mb_s(self, ds: DatasetInput, destinations: Sequence[str], latitude: np.ndarray,
              longitude: np.ndarray) -> np.ndarray:
        if ds.location is not None:
            km = great_circle_km(latitude, longitude, *ds.location)
            derived = self.default_mb_s / (1.0 + km / self.halving_km)
        else:
            derived = np.full(len(destinations), np.nan)
        table = self.throughput_mb_s.get(ds.object_store_id, {})
        if not table:
            return derived
        known = np.array([table.get(d, math.nan) for d in destinations], dtype=np.float64)
        out: np.ndarray = np.where(np.isnan(known), derived, known)
        return out


@dataclass(frozen=True)
class SitePolicy:
    """Caps by destination (the snapshot's ids) and the staging table
    (None: staging is not configured, and counts as no time, so configs
    from before it rank as they did)."""

    caps: Mapping[str, Cap] = field(default_factory=dict)
    staging: StagingTable | None = None
