"""What the carbon term costs and gains (issue 23, item 4): the same
simulation, with each site's grid carbon intensity following a daily cycle
and staging times from a throughput table, the broker with in-flight
charges ranking with the carbon term off, in near-ties mode and weighted.

**Grids.** Each site gets its country's yearly mean intensity (gCO2e/kWh,
rounded; lifecycle figures of Ember's yearly electricity data as Our World
in Data shows them for 2023: Poland 662, Czechia 450, Germany 381,
Belgium 138, France 56, Norway 30; the others rounded from the same
series) and a stylised daily cycle: ``mean x (1 + amplitude x cos(2 pi
(local hour - peak hour) / 24))``, peaking in the evening (19:00 local,
20:00 on the solar-heavy southern grids, whose midday is cleanest) and
lowest twelve hours earlier. The amplitude is +-20 % on coal-, hydro- and
nuclear-baseload grids, +-25-40 % where gas and solar follow the daily
demand. Local time is UTC+1, UTC+0 in the UK and Portugal (no summer time).
A run's simulated time 0 is at ``day_start_h(seed)`` UTC: seeds 1-5 start
at 04:48, 09:36, 14:24, 19:12 and 00:00, so five 4 h windows cover most of
the day.

**Published** as each snapshot's ``carbon_intensity`` (what the
``pulsar_carbon_intensity`` preset fills), the intensity at the sample time
the snapshot shows (``on_publish``: the snapshot's newest point, up to the
exporter lag before it is published).

**Staging.** ``throughput_table``: MB/s from each object store to each site,
1,000 MB/s halved every 500 km of great-circle distance (the simulator's
own distance rule: 1 s per GB next door plus 2 s per GB per 1,000 km),
with a few given pairs (``GIVEN_MB_S``). The world stages with that table
and the broker is configured with it (``scoring.staging.throughput_mb_s``):
the carbon term's near-tie band, an expected turnaround, counts staging
seconds as the world does. The term set is the default one in every
variant (no ``staging_time`` term: ``data_locality`` already scores the
distance, and adding a term would change the baseline); only ``carbon``
differs.

**Emissions.** Each job's energy is its cores x its actual run time at its
site x 12 W per core (the term's ``watts_per_core``), times the site's
intensity integrated over the run (the mean of the cycle from start to
end, in closed form). Staging, idle cores and cooling are not counted.

**Controls.** ``_flat``: the broker is shown every grid at the same flat
intensity, the emissions are counted on the real grids (what a variant
does to placement when carbon tells no site apart); ``_anti``: the same
grids dealt out against speed, shown and counted (clean sites slow).

**Near-tie band diagnostics** (``BandWatch``): at every decision a shadow
ranker with the same figures and charges, whose ``finish_time`` and
``carbon`` terms have weight 0 (so they only explain), gives each scored
candidate's expected turnaround and grams; per share, how often two or more
candidates are in the band, how much their intensities differ, whether the
chosen one was in it and its cleanest, the share of the grams at stake in
tied decisions, and the grams that choosing the band's cleanest every time
would save (a static ceiling: it ignores what each choice does to later
ones). docs/simulation.md has the results."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis

from tpv_broker.api.rank_service import RankService
from tpv_broker.config.terms import DEFAULT_TERMS
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import Snapshot
from tpv_broker.core.result import Group, RankResult
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .compare import broker_config, offered
from .engine import JobRecord, World, new_world, run
from .report import spread
from .workload import OBJECT_STORES, SITES, Job, arrivals

HOUR = 3600.0
WATTS_PER_CORE = 12.0


@dataclass(frozen=True)
class Grid:
    """A site's grid: yearly mean intensity (gCO2e/kWh), the daily swing
    (+- this share of the mean), the local hour it peaks at, local time
    minus UTC in hours."""

    mean: float
    amplitude: float
    peak_h: float = 19.0
    utc_offset_h: float = 1.0


GRIDS: dict[str, Grid] = {
    "pulsar_de": Grid(380, 0.30),                     # coal, gas, much solar and wind
    "pulsar_uk": Grid(240, 0.25, utc_offset_h=0.0),   # gas-following
    "pulsar_fr": Grid(55, 0.40),                      # nuclear; evening gas peakers swing it in relative terms
    "pulsar_cz": Grid(450, 0.20),                     # coal baseload
    "pulsar_sk": Grid(120, 0.20),                     # nuclear, hydro
    "pulsar_it": Grid(330, 0.30, peak_h=20.0),        # gas, solar
    "pulsar_es": Grid(170, 0.40, peak_h=20.0),        # solar, wind, gas
    "pulsar_pt": Grid(150, 0.35, peak_h=20.0, utc_offset_h=0.0),  # hydro, wind, solar, gas
    "pulsar_no": Grid(30, 0.20),                      # hydro
    "pulsar_pl": Grid(660, 0.20),                     # coal
    "pulsar_be": Grid(140, 0.30),                     # nuclear, gas
    "condor_eu": Grid(270, 0.30),                     # Amsterdam: gas, wind, solar
}
# The control: the broker is shown every grid at the same flat intensity
# (emissions are still counted on GRIDS): what a variant does to the
# placements when carbon tells no site apart.
FLAT = {s.id: Grid(250, 0.0) for s in SITES}
# The stress test: the same twelve grids dealt out against speed (the
# fastest site gets the dirtiest grid, the slowest the cleanest), each
# site keeping its local time. In GRIDS clean sites tend to be fast
# (France, Norway) and dirty ones slow (Poland, Czechia): there, carbon
# and turnaround pull the same way; here they pull apart.
ANTI = {
    s.id: Grid(g.mean, g.amplitude, g.peak_h, GRIDS[s.id].utc_offset_h)
    for s, g in zip(sorted(SITES, key=lambda s: (s.speed, s.id)),
                    sorted(GRIDS.values(), key=lambda g: -g.mean), strict=True)
}

# Given (measured) throughputs, MB/s, over the distance rule: each store's
# site on the same campus network, and two endpoints behind thin uplinks.
GIVEN_MB_S: dict[str, dict[str, float]] = {
    "object_store_germany": {"pulsar_de": 2000.0, "pulsar_no": 150.0, "pulsar_pt": 150.0},
    "object_store_france": {"pulsar_fr": 2000.0, "pulsar_no": 150.0, "pulsar_pt": 150.0},
    "object_store_poland": {"pulsar_pl": 2000.0, "pulsar_no": 150.0, "pulsar_pt": 150.0},
}


def day_start_h(seed: int) -> float:
    """The UTC hour of day at simulated time 0 for ``seed``: 4.8 h apart."""
    return (seed * 4.8) % 24


@dataclass(frozen=True)
class CarbonModel:
    """The sites' grid intensities over simulated time (0 = ``start_h`` UTC)."""

    grids: Mapping[str, Grid] = field(default_factory=lambda: dict(GRIDS))
    start_h: float = 0.0

    def _phase(self, grid: Grid, t: float) -> float:
        return 2 * math.pi * (self.start_h + grid.utc_offset_h + t / HOUR - grid.peak_h) / 24

    def intensity(self, dest_id: str, t: float) -> float:
        """gCO2e/kWh at ``dest_id`` at simulated time ``t``."""
        g = self.grids[dest_id]
        return g.mean * (1 + g.amplitude * math.cos(self._phase(g, t)))

    def mean_intensity(self, dest_id: str, t0: float, t1: float) -> float:
        """The mean intensity over [t0, t1] (the cycle's integral over the span)."""
        g = self.grids[dest_id]
        p0, p1 = self._phase(g, t0), self._phase(g, t1)
        if p1 - p0 < 1e-9:
            return self.intensity(dest_id, t0)
        return g.mean * (1 + g.amplitude * (math.sin(p1) - math.sin(p0)) / (p1 - p0))

    def grams(self, dest_id: str, cores: float, t0: float, t1: float, watts_per_core: float = WATTS_PER_CORE) -> float:
        """gCO2e of ``cores`` busy at ``dest_id`` from t0 to t1."""
        return cores * watts_per_core * (t1 - t0) / 3.6e6 * self.mean_intensity(dest_id, t0, t1)

    def publish(self, snapshot: Snapshot) -> None:
        """Put each site's intensity at the time the snapshot's figures show
        into it (engine.run's ``on_publish``)."""
        at = snapshot.meta.newest_point_at or 0.0
        for dest_id, figures in snapshot.destinations.items():
            if dest_id in self.grids:
                figures.carbon_intensity = round(self.intensity(dest_id, at), 2)


def throughput_table(base_mb_s: float = 1000.0, halving_km: float = 500.0,
                     given: Mapping[str, Mapping[str, float]] = GIVEN_MB_S) -> dict[str, dict[str, float]]:
    """Object store -> site -> MB/s: ``given`` pairs, else ``base_mb_s``
    halved every ``halving_km`` (``policy.StagingTable``'s rule), rounded."""
    table: dict[str, dict[str, float]] = {}
    for store, (lat, lon) in OBJECT_STORES.items():
        row = table[store] = {}
        for s in SITES:
            km = float(great_circle_km(s.latitude, s.longitude, lat, lon))
            row[s.id] = float(given.get(store, {}).get(s.id, round(base_mb_s / (1 + km / halving_km))))
    return table


@dataclass(frozen=True)
class Variant:
    """The carbon term's setting: off (weight 0), near-ties mode
    (``near_ties_share`` > 0) or weighted; ``flat``: the control, where the
    broker is shown FLAT intensities (the emissions are counted on the real
    grids all the same); ``anti``: on the ANTI grids (shown and counted)."""

    name: str
    weight: float = 0.0
    near_ties_share: float = 0.0
    flat: bool = False
    anti: bool = False

    @property
    def mode(self) -> str:
        return "off" if self.weight == 0 else "near_ties" if self.near_ties_share > 0 else "weighted"


# Near-ties mode's weight when a name does not give one (the docs' example).
NEAR_TIES_WEIGHT = 2.0
_NAME = re.compile(r"^(?:(off)|near_ties_(?P<share>[0-9.]+)(?:_w(?P<tw>[0-9.]+))?|weighted_(?P<w>[0-9.]+))"
                   r"(?P<flat>_flat)?(?P<anti>_anti)?$")


def variant(name: str) -> Variant:
    """``off``, ``near_ties_<share>[_w<weight>]``, ``weighted_<weight>``, each
    with ``_flat`` for the flat-grid control and/or ``_anti`` for the ANTI grids."""
    m = _NAME.match(name)
    try:
        if m is None:
            raise ValueError
        flat, anti = m["flat"] is not None, m["anti"] is not None
        if m[1]:
            return Variant(name, flat=flat, anti=anti)
        if m["share"] is not None:
            share, weight = float(m["share"]), float(m["tw"] or NEAR_TIES_WEIGHT)
            if 0 < share <= 10 and weight > 0:
                return Variant(name, weight, share, flat, anti)
            raise ValueError
        weight = float(m["w"])
        if weight > 0:
            return Variant(name, weight, 0.0, flat, anti)
    except ValueError:
        pass
    raise ValueError(f"unknown carbon variant {name!r} (off, near_ties_<share>[_w<weight>], weighted_<weight>, "
                     "each with _flat for the flat-grid control and/or _anti for the grids dealt against speed)")


VARIANTS = ("off", "near_ties_0.02", "near_ties_0.05", "near_ties_0.1", "near_ties_0.2",
            "weighted_0.5", "weighted_1", "weighted_2", "weighted_4",
            # near-ties mode with more weight, and the flat-grid controls
            "near_ties_0.05_w4", "near_ties_0.05_w10",
            "near_ties_0.05_flat", "near_ties_0.1_flat", "near_ties_0.2_flat", "near_ties_0.05_w10_flat")
# The shares whose bands BandWatch measures at every decision.
BAND_SHARES = (0.02, 0.05, 0.1, 0.2)


def staging_settings(table: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    return {"throughput_mb_s": {k: dict(v) for k, v in table.items()}, "default_mb_s": 1000.0, "halving_km": 500.0}


def terms_of(v: Variant) -> dict[str, dict[str, Any]]:
    """The default terms, plus carbon unless off."""
    terms: dict[str, dict[str, Any]] = {k: dict(p) for k, p in DEFAULT_TERMS.items()}
    if v.weight > 0:
        terms["carbon"] = {"weight": v.weight, "watts_per_core": WATTS_PER_CORE, "near_ties_share": v.near_ties_share}
    return terms


@dataclass
class Band:
    """One share's near-tie bands over a run's decisions."""

    decisions: int = 0
    # Decisions with two or more candidates in the band.
    tied: int = 0
    members: int = 0
    # Of the tied ones: the band's highest over lowest intensity.
    spread: list[float] = field(default_factory=list)
    # The ranker's expected grams, summed over the decisions: of the chosen
    # candidate, of the band's cleanest, of the best expected turnaround.
    chosen_g: float = 0.0
    cleanest_g: float = 0.0
    best_g: float = 0.0
    # ... of the best expected turnaround, in the tied decisions only.
    tied_best_g: float = 0.0
    # The chosen candidate was in the band; was its cleanest (of all
    # decisions, and of the tied ones).
    chosen_in_band: int = 0
    chosen_cleanest: int = 0
    tied_chosen_cleanest: int = 0

    def as_dict(self) -> dict[str, Any]:
        n = max(self.decisions, 1)
        return {
            "decisions": self.decisions,
            "tied_share": round(self.tied / n, 4),
            "mean_members": round(self.members / n, 3),
            "intensity_spread_median": round(statistics.median(self.spread), 3) if self.spread else None,
            "intensity_spread_mean": round(statistics.fmean(self.spread), 3) if self.spread else None,
            "chosen_in_band_share": round(self.chosen_in_band / n, 4),
            "chosen_cleanest_share": round(self.chosen_cleanest / n, 4),
            "tied_chosen_cleanest_share": round(self.tied_chosen_cleanest / self.tied, 4) if self.tied else None,
            # The share of the grams at stake that is in tied decisions.
            "tied_grams_share": round(self.tied_best_g / self.best_g, 4) if self.best_g else None,
            # Choosing the band's cleanest every time, by the ranker's own
            # estimate: against the best expected turnaround (what carbon
            # can gain by breaking the band's ties), and against the choices
            # made (static: what each choice does to later ones is ignored).
            "tie_break_ceiling": round(1 - self.cleanest_g / self.best_g, 4) if self.best_g else None,
            "static_ceiling_vs_chosen": round(1 - self.cleanest_g / self.chosen_g, 4) if self.chosen_g else None,
        }


class BandWatch:
    """A shadow ranker on the same store (no charge), whose ``finish_time``
    and ``carbon`` terms have weight 0: each decision's expected turnaround
    and grams per scored candidate, and the bands of ``shares`` around the
    best turnaround."""

    def __init__(self, ranker: RankService, shares: Sequence[float] = BAND_SHARES) -> None:
        self.ranker = ranker
        self.bands = {s: Band() for s in shares}

    def note(self, result: RankResult, chosen: str, cores: float) -> None:
        figures: dict[str, tuple[float, float, float]] = {}
        for p in result.placements:
            if p.group is not Group.SCORED:
                continue
            raw = {t.term: t.raw for t in p.terms}
            intensity = raw["carbon"]["carbon_intensity_g_per_kwh"]
            if intensity is None:
                continue
            # The explain's grams are rounded to 0.1 g: a QC job's are less.
            finish = raw["finish_time"]
            grams = cores * finish["run_s"] * WATTS_PER_CORE / 3.6e6 * intensity
            figures[p.id] = (finish["expected_finish_s"], grams, intensity)
        if chosen not in figures:
            return
        first = min(figures, key=lambda d: figures[d][0])
        best = figures[first][0]
        for share, band in self.bands.items():
            members = {d: v for d, v in figures.items() if v[0] <= best * (1 + share)}
            band.decisions += 1
            band.members += len(members)
            cleanest = min(v[1] for v in members.values())
            is_cleanest = chosen in members and members[chosen][1] <= cleanest
            if len(members) > 1:
                band.tied += 1
                intensities = [i for _, _, i in members.values()]
                band.spread.append(max(intensities) / max(min(intensities), 1e-9))
                band.tied_chosen_cleanest += is_cleanest
                band.tied_best_g += figures[first][1]
            band.chosen_g += figures[chosen][1]
            band.cleanest_g += cleanest
            band.best_g += figures[first][1]
            band.chosen_in_band += chosen in members
            band.chosen_cleanest += is_cleanest


class CarbonBroker:
    """The broker with in-flight charges (``broker_inflight``) on this
    variant's terms; with ``watch``, the bands at each decision."""

    def __init__(self, ranker: RankService, name: str, watch: BandWatch | None = None) -> None:
        self.ranker = ranker
        self.name = name
        self.watch = watch

    def choose(self, job: Job, world: World) -> str:
        candidates = [Candidate(d.site.id, d.site.tpv_score) for d in world.sites.values()]
        facts = JobFacts(tool_id=job.tool.id, cores=job.tool.cores, mem=job.tool.mem_gb, id=job.id)
        datasets = self.ranker.datasets([(job.input_store, job.input_bytes)], {})
        # The shadow reads the same figures and charges, before this job's charge.
        shadow = (self.watch.ranker.rank(candidates, facts, datasets, charge=False, tenant=job.galaxy)
                  if self.watch is not None else None)
        chosen = self.ranker.rank(candidates, facts, datasets, charge=True, tenant=job.galaxy).ids[0]
        if self.watch is not None and shadow is not None:
            self.watch.note(shadow, chosen, job.tool.cores)
        return chosen


def run_variant(v: Variant, jobs: list[Job], seed: int, refresh_s: float = 60.0, lag_s: float = 30.0,
                watch: bool = True) -> tuple[list[JobRecord], CarbonModel, BandWatch | None]:
    """One run of the broker with charges on ``v``'s terms, on ``jobs``;
    the model the emissions are counted on (GRIDS, or ANTI)."""
    table = throughput_table()
    world = new_world()
    world.throughput_mb_s = table
    model = CarbonModel(ANTI if v.anti else GRIDS, day_start_h(seed))
    shown = CarbonModel(FLAT, model.start_h) if v.flat else model
    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("carbon"))
    staging = staging_settings(table)
    config = broker_config(0.0, terms_of(v), staging=staging)
    shadow = None
    if watch:
        shadow_terms = {**DEFAULT_TERMS,
                        "finish_time": {"weight": 0.0, "scale_s": 60.0, "cap_s": 604800.0},
                        "carbon": {"weight": 0.0, "watts_per_core": WATTS_PER_CORE}}
        shadow = BandWatch(RankService(broker_config(0.0, shadow_terms, staging=staging), store,
                                       clock=lambda: world.now))
    broker = CarbonBroker(RankService(config, store, clock=lambda: world.now), v.name, shadow)
    result = run(jobs, broker.choose, v.name, store, world, refresh_s, lag_s, store.inflight(config.inflight),
                 on_publish=shown.publish)
    return result.records, model, shadow


def carbon_row(v: Variant, records: list[JobRecord], model: CarbonModel, watch: BandWatch | None,
               seed: int) -> dict[str, Any]:
    """A run's figures: turnaround, queue wait, energy and emissions, where the work ran."""
    kwh = grams = 0.0
    work: dict[str, float] = {}
    for r in records:
        cores = r.job.tool.cores
        kwh += cores * WATTS_PER_CORE * (r.end - r.start) / 3.6e6
        grams += model.grams(r.destination, cores, r.start, r.end)
        work[r.destination] = work.get(r.destination, 0.0) + cores * (r.end - r.start)
    total_work = sum(work.values()) or 1.0
    turns = [r.turnaround_s for r in records]
    row: dict[str, Any] = {
        "variant": v.name, "mode": v.mode, "weight": v.weight, "near_ties_share": v.near_ties_share,
        "flat": v.flat, "anti": v.anti, "seed": seed, "day_start_h": round(model.start_h, 2), "jobs": len(records),
        "mean_turnaround_s": round(statistics.fmean(turns), 2) if turns else 0.0,
        "p95_turnaround_s": round(sorted(turns)[min(len(turns) - 1, int(0.95 * len(turns)))], 1) if turns else 0.0,
        "mean_wait_s": round(statistics.fmean(r.wait_s for r in records), 2) if records else 0.0,
        "kwh": round(kwh, 3), "kg_co2e": round(grams / 1000, 4),
        "g_per_kwh": round(grams / kwh, 2) if kwh else 0.0,
        "work_share": {d: round(work.get(d, 0.0) / total_work, 4) for d in sorted(model.grids)},
    }
    if watch is not None:
        row["bands"] = {f"{s:g}": b.as_dict() for s, b in watch.bands.items()}
    return row


def simulate_carbon(variants: Sequence[str], loads: Sequence[float], duration_s: float, seed: int, seeds: int,
                    refresh_s: float = 60.0, lag_s: float = 30.0, burst_size: tuple[int, int] = (10, 40),
                    watch: bool = True, progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Every variant on the same arrivals per load and seed: one row each."""
    parsed = [variant(n) for n in variants]
    rows = []
    for load in loads:
        for s in range(seed, seed + seeds):
            jobs = arrivals(load, duration_s, s, burst_size=burst_size)
            offered_load = round(offered(jobs, duration_s), 3)
            for v in parsed:
                records, model, bands = run_variant(v, jobs, s, refresh_s, lag_s, watch)
                row = {"load": load, "offered_load": offered_load, **carbon_row(v, records, model, bands, s)}
                rows.append(row)
                progress(f"load {load:.0%} seed {s} {v.name}: {row['jobs']} jobs, mean turnaround "
                         f"{row['mean_turnaround_s']:.0f} s, {row['kg_co2e']:.1f} kg CO2e")
    return rows


def carbon_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load and variant: spreads over the seeds, and per seed the ratios
    to ``off`` on the same arrivals (``off_anti`` for the ANTI grids):
    turnaround increase and emissions reduction, in %; at 50 % load, the
    near-ties target."""
    out = []
    for load in sorted({r["load"] for r in rows}):
        at = [r for r in rows if r["load"] == load]
        by = {(r["seed"], r["variant"]): r for r in at}
        for name in dict.fromkeys(r["variant"] for r in at):
            runs = [r for r in at if r["variant"] == name]
            entry: dict[str, Any] = {
                "load": load, "variant": name, "mode": runs[0]["mode"], "weight": runs[0]["weight"],
                "near_ties_share": runs[0]["near_ties_share"], "flat": runs[0]["flat"],
                "anti": runs[0].get("anti", False), "seeds": len(runs),
                **{k: spread([r[k] for r in runs]) for k in ("mean_turnaround_s", "mean_wait_s", "kg_co2e",
                                                             "g_per_kwh", "kwh")},
            }
            base = "off_anti" if entry["anti"] else "off"
            pairs = [(r, by[r["seed"], base]) for r in runs if (r["seed"], base) in by]
            if pairs and name != base:
                slower = {r["seed"]: 100 * (r["mean_turnaround_s"] / b["mean_turnaround_s"] - 1) for r, b in pairs}
                cleaner = {r["seed"]: 100 * (1 - r["kg_co2e"] / b["kg_co2e"]) for r, b in pairs}
                entry["vs"] = base
                entry["turnaround_increase_pct"] = {"per_seed": {k: round(x, 2) for k, x in slower.items()},
                                                    **spread(list(slower.values()))}
                entry["emissions_reduction_pct"] = {"per_seed": {k: round(x, 2) for k, x in cleaner.items()},
                                                    **spread(list(cleaner.values()))}
                entry["pooled"] = {
                    "turnaround_increase_pct": round(100 * (sum(r["mean_turnaround_s"] * r["jobs"] for r, _ in pairs)
                                                            / sum(b["mean_turnaround_s"] * b["jobs"] for _, b in pairs)
                                                            - 1), 2),
                    "emissions_reduction_pct": round(100 * (1 - sum(r["kg_co2e"] for r, _ in pairs)
                                                            / sum(b["kg_co2e"] for _, b in pairs)), 2)}
                if entry["mode"] == "near_ties" and not (entry["flat"] or entry["anti"]) and load == 0.5:
                    entry["target"] = {
                        "wanted": "emissions >= 15 % lower, mean turnaround <= 5 % longer (at 50 % load)",
                        "met_on_means": entry["emissions_reduction_pct"]["mean"] >= 15
                        and entry["turnaround_increase_pct"]["mean"] <= 5,
                        "seeds_meeting": sum(cleaner[k] >= 15 and slower[k] <= 5 for k in slower)}
            bands = [r["bands"] for r in runs if "bands" in r]
            if bands:
                entry["bands"] = {
                    share: {key: _mean([b[share][key] for b in bands])
                            for key in ("tied_share", "mean_members", "intensity_spread_median",
                                        "chosen_in_band_share", "chosen_cleanest_share",
                                        "tied_chosen_cleanest_share", "tied_grams_share", "tie_break_ceiling",
                                        "static_ceiling_vs_chosen")}
                    for share in bands[0]}
            out.append(entry)
    return out


def _mean(values: list[Any]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(statistics.fmean(known), 4) if known else None


def carbon_json(rows: list[dict[str, Any]], **run_info: Any) -> dict[str, Any]:
    """What ``simulate --carbon --json`` prints: how it was run, the grids,
    the throughput table, one row per run, the summary."""
    return {
        **run_info,
        "watts_per_core": WATTS_PER_CORE,
        "near_ties_weight": NEAR_TIES_WEIGHT,
        "grids": {d: {"mean_g_per_kwh": g.mean, "amplitude": g.amplitude, "peak_local_h": g.peak_h,
                      "utc_offset_h": g.utc_offset_h} for d, g in GRIDS.items()},
        "day_start_h": {s: day_start_h(s) for s in sorted({r["seed"] for r in rows})},
        "throughput_mb_s": throughput_table(),
        "results": rows,
        "summary": carbon_summary(rows),
    }


def _pm(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def _own_band(e: dict[str, Any]) -> dict[str, Any]:
    """The band diagnostics at the variant's own share (5 % for the others)."""
    bands: dict[str, dict[str, Any]] = e.get("bands", {})
    return bands.get(f"{e['near_ties_share']:g}") or bands.get("0.05", {})


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def carbon_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A table per load: mean ± sd over the seeds, the per-seed changes
    against off, and the near-tie band at the variant's share (5 % for
    the others): decisions with two or more in it, the chosen one in it,
    the tied ones going to their cleanest."""
    header = ("load", "variant", "seeds", "mean turnaround s", "mean wait s", "kg CO2e", "g/kWh", "turnaround +%",
              "emissions -%", "band", "tied", "chosen in band", "tie to cleanest", "target")
    lines = [header]
    for e in carbon_summary(rows):
        up, down = e.get("turnaround_increase_pct"), e.get("emissions_reduction_pct")
        band = _own_band(e)
        target = e.get("target")
        lines.append((f"{e['load']:.0%}", e["variant"], str(e["seeds"]), _pm(e["mean_turnaround_s"]),
                      _pm(e["mean_wait_s"]), _pm(e["kg_co2e"], 1), _pm(e["g_per_kwh"]), _pm(up, 1) if up else "-",
                      _pm(down, 1) if down else "-", f"{e['near_ties_share'] or 0.05:g}",
                      _share(band.get("tied_share")), _share(band.get("chosen_in_band_share")),
                      _share(band.get("tied_chosen_cleanest_share")),
                      "-" if target is None else f"{target['seeds_meeting']}/{e['seeds']} seeds"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines]


def _series(e: dict[str, Any]) -> str:
    if e["flat"]:
        return f"{e['mode'].replace('_', '-')}, flat grids (control)"
    if e.get("anti"):
        return f"{e['mode'].replace('_', '-')}, grids against speed"
    if e["mode"] == "near_ties" and e["weight"] != NEAR_TIES_WEIGHT:
        return "near-ties, more weight"
    return str(e["mode"]).replace("_", "-")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Left: the trade-off, one point per variant and load (mean ± sd over
    the seeds of the per-seed change against off); right: the grids' daily
    cycles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [e for e in carbon_summary(rows) if "turnaround_increase_pct" in e]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    colours = {"near-ties": "tab:blue", "weighted": "tab:red", "near-ties, more weight": "tab:purple"}
    markers = ["o", "s", "^", "D"]
    for i, load in enumerate(sorted({e["load"] for e in summary})):
        for series in dict.fromkeys(_series(e) for e in summary):
            pts = sorted((e for e in summary if e["load"] == load and _series(e) == series),
                         key=lambda e: (e["near_ties_share"], e["weight"]))
            if not pts:
                continue
            colour = colours.get(series, "grey")
            xs = [e["turnaround_increase_pct"]["mean"] for e in pts]
            ys = [e["emissions_reduction_pct"]["mean"] for e in pts]
            # A line through a mode's shares or weights; none through the extras.
            joined = series in ("near-ties", "weighted")
            ax.errorbar(xs, ys, xerr=[e["turnaround_increase_pct"]["sd"] for e in pts],
                        yerr=[e["emissions_reduction_pct"]["sd"] for e in pts], color=colour,
                        marker=markers[i % len(markers)], linestyle=("-" if i == 0 else "--") if joined else "",
                        capsize=3, alpha=0.85, markerfacecolor=colour if i == 0 else "white",
                        label=f"{series}, {load:.0%} load")
            for e, x, y in zip(pts, xs, ys, strict=True):
                tag = (f"{e['near_ties_share']:g}" + (f" w{e['weight']:g}" if e["weight"] != NEAR_TIES_WEIGHT else "")
                       if e["mode"] == "near_ties" else f"w{e['weight']:g}")
                ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    low, high = ax.get_xlim()
    top = ax.get_ylim()[1]
    ax.fill_between([low, 5], 15, top, color="green", alpha=0.08,
                    label="near-ties target at 50 % load: >= 15 % less CO2e, <= 5 % longer")
    ax.set_xlim(low, high)
    ax.set_ylim(top=top)
    ax.set_xlabel("mean turnaround change vs carbon off, % (mean ± sd of the per-seed changes)")
    ax.set_ylabel("emissions reduction vs carbon off, %")
    ax.set_title("the carbon term's trade-off (labels: near-tie share, weight)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    ax = axes[1]
    model = CarbonModel(GRIDS, 0.0)
    hours = [h / 4 for h in range(0, 97)]
    ordered = sorted(GRIDS, key=lambda d: -GRIDS[d].mean)
    for k, s in enumerate(ordered):
        ax.plot(hours, [model.intensity(s, h * HOUR) for h in hours], label=f"{s} ({GRIDS[s].mean:g})",
                color=plt.get_cmap("turbo")(0.95 - 0.85 * k / (len(ordered) - 1)))
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 4))
    ax.set_xlabel("hour of day, UTC")
    ax.set_ylabel("gCO2e/kWh")
    ax.set_title("the sites' grid intensity over a day (yearly mean)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
