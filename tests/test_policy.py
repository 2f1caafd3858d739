"""Site policy (issue 23, docs/policy.md), fast and pure, table driven with
the arithmetic in the comments: the staging table (seconds per input),
the staging_time and carbon terms, finish_time's turnaround with staging,
caps (what each kind counts, the tightest one, the bend near it), caps in
the ranking, per-tenant caps, and the config errors.

Most log scales here give round numbers: ``scale`` 60 s and ``cap``
60 x (2^10 - 1) = 61380 s (or 1 g and 1023 g), so ``ln(1 + cap/scale) =
ln 1024 = 10 ln 2`` and a cost of scale x (2^k - 1) scores ``1 - k/10``.

Points with a known distance: along the equator one degree of longitude
is 2 pi x 6371.0088 km / 360 = 111.19508 km, so ``east(km)`` is ``km``
from ORIGIN (checked against ``geo.great_circle_km`` below)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tpv_broker.api.rank_service import scoring_model, site_policy
from tpv_broker.collector.presets import live_sources, presets_for
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.ranking_settings import ScoringSettings
from tpv_broker.config.settings import load_config
from tpv_broker.config.terms import DEFAULT_TERMS, with_defaults
from tpv_broker.core.charges import ChargeLoad, ChargeState
from tpv_broker.core.geo import EARTH_RADIUS_KM, great_circle_km
from tpv_broker.core.inputs import Candidate, DatasetInput, JobFacts
from tpv_broker.core.models import DestinationFigures, RankView, SnapshotMeta
from tpv_broker.core.policy import Cap, SitePolicy, StagingTable, _bend, cap_state
from tpv_broker.core.ranking import NO_POLICY, rank
from tpv_broker.core.result import Group, RankResult
from tpv_broker.core.scoring import Defaults, ScoringModel
from tpv_broker.core.terms import Carbon, FinishTime, StagingTime, Term
from tpv_broker.errors import ConfigError

from .termkit import RecordingModel

NOW = 1_700_000_000.0
NAN = math.nan
SCALE, CAP = 60.0, 61380.0  # ln(1 + CAP/SCALE) = ln 1024
KM_PER_DEGREE = 2 * math.pi * EARTH_RADIUS_KM / 360  # 111.19508 km on the equator
ORIGIN = (0.0, 0.0)
FR_TOKEN, EU_TOKEN = "fr-token-0123456789abcdef", "eu-token-0123456789abcdef"


def east(km: float) -> tuple[float, float]:
    """A point ``km`` east of ORIGIN along the equator."""
    return (0.0, km / KM_PER_DEGREE)


def fig(dest_id: str, age: float = 10.0, **kw: Any) -> DestinationFigures:
    """Live figures ``age`` s old, online."""
    kw.setdefault("status", "online")
    kw.setdefault("sources", {"queue_by_destination": NOW - age})
    kw.setdefault("live_at", NOW - age)
    return DestinationFigures(id=dest_id, **kw)


# Plenty of room: a job of up to 64 cores and 256 GB fits at once (no drain in the wait).
ROOMY = {"queued": 0, "running": 1, "cpus_free": 64, "cpus_total": 128, "mem_free_gb": 256, "mem_total_gb": 512}


def view(*figures: DestinationFigures, charges: Mapping[str, ChargeLoad] | None = None) -> RankView:
    return RankView(meta=SnapshotMeta(created_at=NOW - 5, destinations=len(figures)),
                    destinations={f.id: f for f in figures}, charges=ChargeState(loads=dict(charges or {})))


def model_of(*terms: Term) -> RecordingModel:
    """A model of these terms, each weight 1; defaults queue 0 s, run 3600 s."""
    return RecordingModel([(t, 1.0) for t in terms], Defaults(queue_s=0.0, run_s=3600.0), max_metrics_age_s=900.0)


FOUR_CORES = JobFacts("t", cores=4, mem=8)


def ranked(v: RankView, model: ScoringModel, *, job: JobFacts = FOUR_CORES,
           datasets: Sequence[DatasetInput] = (), locations: Mapping[str, tuple[float, float]] | None = None,
           policy: SitePolicy = NO_POLICY, candidates: Sequence[Candidate] | None = None) -> RankResult:
    cands = candidates if candidates is not None else [Candidate(d) for d in v.destinations]
    return rank(cands, job, datasets, v, NOW, model, 300.0, locations or {}, policy=policy)


def term_rows(result: RankResult, name: str) -> dict[str, tuple[float, dict[str, Any], str]]:
    """Each scored destination's (score, raw, summary) of term ``name``."""
    return {p.id: next((t.score, t.raw, t.summary) for t in p.terms if t.term == name)
            for p in result.placements if p.terms}


def test_the_test_points_are_the_distances_they_say() -> None:
    for km in (0.0, 500.0, 1000.0, 3000.0):
        assert great_circle_km(*ORIGIN, *east(km)) == pytest.approx(km, abs=1e-6)


# -- StagingTable.seconds -------------------------------------------------------------------------
EU_80 = {"os_eu": {"near": 80.0}}


@pytest.mark.parametrize(
    ("table", "default_mb_s", "halving_km", "datasets", "destinations", "expected"),
    [
        # a configured pair: 4e9 B = 4000 MB over 80 MB/s = 50 s (the store's location unknown: not needed)
        (EU_80, 100, 1000, [DatasetInput("os_eu", 4e9)], {"near": ORIGIN}, [50.0]),
        # the pair wins over distance: 3000 km would give 25 MB/s (160 s); the table says 80: 50 s
        (EU_80, 100, 1000, [DatasetInput("os_eu", 4e9, east(3000))], {"near": ORIGIN}, [50.0]),
        # derived, 0 km: 100 / (1 + 0) = 100 MB/s; 1e9 B = 1000 MB -> 10 s
        ({}, 100, 1000, [DatasetInput("os_x", 1e9, ORIGIN)], {"near": ORIGIN}, [10.0]),
        # derived, 1000 km: 100 / (1 + 1000/1000) = 50 MB/s -> 1000 MB / 50 = 20 s
        ({}, 100, 1000, [DatasetInput("os_x", 1e9, east(1000))], {"near": ORIGIN}, [20.0]),
        # derived, 3000 km: 100 / (1 + 3) = 25 MB/s -> 40 s
        ({}, 100, 1000, [DatasetInput("os_x", 1e9, east(3000))], {"near": ORIGIN}, [40.0]),
        # halving_km 500: 1000 km -> 100 / (1 + 2) = 33.3 MB/s -> 1000 / 33.3 = 30 s
        ({}, 100, 500, [DatasetInput("os_x", 1e9, east(1000))], {"near": ORIGIN}, [30.0]),
        # default_mb_s 400: 3000 km -> 400 / 4 = 100 MB/s -> 10 s
        ({}, 400, 1000, [DatasetInput("os_x", 1e9, east(3000))], {"near": ORIGIN}, [10.0]),
        # the store is in the table but not this pair: derived, 1000 km -> 50 MB/s -> 20 s
        ({"os_eu": {"other": 80.0}}, 100, 1000, [DatasetInput("os_eu", 1e9, east(1000))], {"near": ORIGIN},
         [20.0]),
        # the store's location unknown and no pair: unknown (NaN)
        ({}, 100, 1000, [DatasetInput("os_x", 1e9)], {"near": ORIGIN}, [NAN]),
        # the destination's location unknown: unknown
        ({}, 100, 1000, [DatasetInput("os_x", 1e9, ORIGIN)], {"near": (NAN, NAN)}, [NAN]),
        # a zero-size input takes no time, even from a store nobody knows the way to
        ({}, 100, 1000, [DatasetInput("os_x", 0.0)], {"near": ORIGIN}, [0.0]),
        # no inputs: 0 s everywhere
        ({}, 100, 1000, [], {"near": ORIGIN, "far": (NAN, NAN)}, [0.0, 0.0]),
        # several stores, summed: os_eu by the table 4000 MB / 80 = 50 s; os_us 1000 km away
        # 1000 MB / 50 = 20 s; os_x here 2000 MB / 100 = 20 s: 90 s
        (EU_80, 100, 1000, [DatasetInput("os_eu", 4e9), DatasetInput("os_us", 1e9, east(1000)),
                            DatasetInput("os_x", 2e9, ORIGIN)], {"near": ORIGIN}, [90.0]),
        # one store of unknown throughput makes the whole time unknown: 50 s + NaN
        (EU_80, 100, 1000, [DatasetInput("os_eu", 4e9), DatasetInput("os_x", 1e9)], {"near": ORIGIN}, [NAN]),
        # every destination at once: near by the table (os_eu 200 MB/s: 2000 / 200 = 10 s), far 3000 km
        # from the store (25 MB/s: 2000 / 25 = 80 s), nowhere unknown
        ({"os_eu": {"near": 200.0}}, 100, 1000, [DatasetInput("os_eu", 2e9, ORIGIN)],
         {"near": ORIGIN, "far": east(3000), "nowhere": (NAN, NAN)}, [10.0, 80.0, NAN]),
    ],
)
def test_staging_seconds(table: Mapping[str, Mapping[str, float]], default_mb_s: float, halving_km: float,
                         datasets: list[DatasetInput], destinations: dict[str, tuple[float, float]],
                         expected: list[float]) -> None:
    staging = StagingTable(table, default_mb_s, halving_km)
    lat = np.array([p[0] for p in destinations.values()])
    lon = np.array([p[1] for p in destinations.values()])
    got, counted = staging.seconds(datasets, list(destinations), lat, lon)
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)
    # as a turnaround counts them: the known ones as they are, none unknown
    known = ~np.isnan(np.array(expected))
    np.testing.assert_allclose(counted[known], np.array(expected)[known], rtol=1e-9)
    assert np.isfinite(counted).all()


# -- staging_time ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("datasets", "table", "staging_s", "unknown_score", "score"),
    [
        # no inputs: 0 s -> 1 - ln(1) / ln 1024 = 1 (neutral)
        ([], {}, 0.0, 0.5, 1.0),
        # 6e9 B from here (0 km, 100 MB/s): 60 s -> 1 - ln(1 + 60/60) / ln 1024 = 1 - 1/10
        ([DatasetInput("os_x", 6e9, ORIGIN)], {}, 60.0, 0.5, 0.9),
        # 21e9 B from 1000 km (50 MB/s): 420 s -> 1 + 420/60 = 8 = 2^3 -> 0.7
        ([DatasetInput("os_x", 21e9, east(1000))], {}, 420.0, 0.5, 0.7),
        # by the table, 10 MB/s: 18.6e9 B = 18600 MB / 10 = 1860 s -> 1 + 31 = 2^5 -> 0.5
        ([DatasetInput("os_t", 18.6e9)], {"os_t": {"d": 10.0}}, 1860.0, 0.5, 0.5),
        # two stores: 6e9 B here (60 s) + 21e9 B at 1000 km (420 s) = 480 s -> 1 - ln 9 / ln 1024 = 0.68301
        ([DatasetInput("os_x", 6e9, ORIGIN), DatasetInput("os_y", 21e9, east(1000))], {}, 480.0, 0.5, 0.68301),
        # 6.138e12 B at 100 MB/s: 61380 s, the cap -> 0
        ([DatasetInput("os_x", 6.138e12, ORIGIN)], {}, 61380.0, 0.5, 0.0),
        # where the store is nobody knows: unknown_score
        ([DatasetInput("os_x", 1e9)], {}, None, 0.5, 0.5),
        ([DatasetInput("os_x", 1e9)], {}, None, 0.2, 0.2),
    ],
)
def test_staging_time_scores(datasets: list[DatasetInput], table: dict[str, dict[str, float]],
                             staging_s: float | None, unknown_score: float, score: float) -> None:
    v = view(fig("d", **ROOMY))
    result = ranked(v, model_of(StagingTime(SCALE, CAP, unknown_score)), datasets=datasets,
                    locations={"d": ORIGIN}, policy=SitePolicy(staging=StagingTable(table)))
    got, raw, summary = term_rows(result, "staging_time")["d"]
    assert got == pytest.approx(score, abs=1e-5)
    assert raw["bytes"] == sum(ds.size for ds in datasets)
    if staging_s is None:
        assert raw["staging_s"] is None and summary == "staging time unknown"
    else:
        assert raw["staging_s"] == pytest.approx(staging_s)
        # the log scale, spelt out: 1 - ln(1 + s/scale) / ln(1 + cap/scale)
        assert got == pytest.approx(max(0.0, 1 - math.log1p(staging_s / SCALE) / math.log1p(CAP / SCALE)))


def test_staging_time_ranks_the_quicker_transfer_first() -> None:
    # 4e9 B in os_eu: near by the table at 400 MB/s (10 s), far 3000 km away (25 MB/s: 160 s)
    v = view(fig("far", **ROOMY), fig("near", **ROOMY))
    result = ranked(v, model_of(StagingTime(SCALE, CAP, 0.5)), datasets=[DatasetInput("os_eu", 4e9, ORIGIN)],
                    locations={"near": east(3000), "far": east(3000)},
                    policy=SitePolicy(staging=StagingTable({"os_eu": {"near": 400.0}})))
    assert result.ids == ["near", "far"]
    staging = {d: raw["staging_s"] for d, (_, raw, _) in term_rows(result, "staging_time").items()}
    assert staging == {"near": 10.0, "far": 160.0}


# -- finish_time with staging ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("datasets", "staging_s", "finish", "score"),
    [
        # wait 60 (median queue, free slots: no drain) + run 120 = 180 -> 1 - log2(4)/10 = 0.8
        ([], 0.0, 180.0, 0.8),
        # + staging 2.4e9 B at 10 MB/s (table) = 240 s: 420 -> 1 - log2(8)/10 = 0.7
        ([DatasetInput("os_t", 2.4e9)], 240.0, 420.0, 0.7),
        # staging unknown (a store nobody knows the way from), and no candidate's known: none, 180 -> 0.8
        ([DatasetInput("os_x", 2.4e9)], None, 180.0, 0.8),
    ],
)
def test_finish_time_includes_staging(datasets: list[DatasetInput], staging_s: float | None, finish: float,
                                      score: float) -> None:
    v = view(fig("d", median_queue_s=60, median_run_s=120, **ROOMY))
    result = ranked(v, model_of(FinishTime(SCALE, CAP)), datasets=datasets, locations={"d": ORIGIN},
                    policy=SitePolicy(staging=StagingTable({"os_t": {"d": 10.0}})))
    got, raw, _ = term_rows(result, "finish_time")["d"]
    assert raw["staging_s"] == staging_s
    # unknown with no other candidate known: none counted
    assert raw["staging_counted_s"] == (staging_s or 0.0)
    assert raw["expected_finish_s"] == pytest.approx(finish)
    assert raw["expected_wait_s"] == pytest.approx(60.0)
    assert got == pytest.approx(score, abs=1e-9)


def test_an_unknown_staging_time_counts_as_the_slowest_known() -> None:
    # 2.4e9 B from os_t: 240 s to "near" (10 MB/s by the table); "nowhere" has no coordinates, so its
    # time is unknown. Counted as none, its shorter queue (100 s against 60 + 240 s staging) would win it
    # every data-heavy job; counted as the slowest known candidate's, the shorter turnaround wins.
    v = view(fig("near", median_queue_s=60, median_run_s=120, **ROOMY),
             fig("nowhere", median_queue_s=100, median_run_s=120, **ROOMY))
    result = ranked(v, model_of(FinishTime(SCALE, CAP)), datasets=[DatasetInput("os_t", 2.4e9, ORIGIN)],
                    locations={"near": ORIGIN}, policy=SitePolicy(staging=StagingTable({"os_t": {"near": 10.0}})))
    assert result.ids == ["near", "nowhere"]
    rows = {d: raw for d, (_, raw, _) in term_rows(result, "finish_time").items()}
    assert (rows["nowhere"]["staging_s"], rows["nowhere"]["staging_counted_s"]) == (None, 240.0)
    assert rows["nowhere"]["expected_finish_s"] == pytest.approx(460.0)
    assert (rows["near"]["staging_s"], rows["near"]["staging_counted_s"]) == (240.0, 240.0)


def test_an_input_from_a_store_of_unknown_throughput_never_makes_a_destination_faster() -> None:
    # 1 GB from os_t: near 10 s, far 10,000 s (0.1 MB/s). Adding 1 MB from os_u, whose throughput to
    # far nobody knows, must not turn far's known 10,000 s into the slowest candidate's total: the
    # unknown part counts as the slowest known from that store (near's 0.01 s), store by store.
    table = StagingTable({"os_t": {"near": 100.0, "far": 0.1}, "os_u": {"near": 100.0}})
    v = view(fig("near", median_queue_s=300, median_run_s=120, **ROOMY),
             fig("far", median_queue_s=0, median_run_s=120, **ROOMY))
    for datasets in ([DatasetInput("os_t", 1e9)], [DatasetInput("os_t", 1e9), DatasetInput("os_u", 1e6)]):
        result = ranked(v, model_of(FinishTime(SCALE, CAP)), datasets=datasets, locations={"near": ORIGIN},
                        policy=SitePolicy(staging=table))
        assert result.ids == ["near", "far"]
        counted = {d: raw["staging_counted_s"] for d, (_, raw, _) in term_rows(result, "finish_time").items()}
        # (the 1 MB adds 0.01 s to each: rounded away)
        assert counted == {"near": 10.0, "far": 10000.0}


# -- carbon ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cores", "run_s", "watts", "intensity", "scale_g", "cap_g", "unknown", "kwh", "grams", "score"),
    [
        # the issue's example: 4 cores x 3600 s x 12 W / 3.6e6 = 0.048 kWh x 300 g/kWh = 14.4 g;
        # default scale 1 g, cap 10 kg: 1 - ln(15.4) / ln(10001) = 1 - 2.73437 / 9.21044 = 0.70312
        (4, 3600, 12.0, 300.0, 1.0, 10000.0, 0.5, 0.048, 14.4, 0.70312),
        # 4 x 3600 x 12.5 / 3.6e6 = 0.05 kWh x 300 = 15 g; cap 1023 g: 1 - log2(16)/10 = 0.6
        (4, 3600, 12.5, 300.0, 1.0, 1023.0, 0.5, 0.05, 15.0, 0.6),
        # 1 x 1800 x 10 / 3.6e6 = 0.005 kWh x 200 = 1 g: 1 - log2(2)/10 = 0.9
        (1, 1800, 10.0, 200.0, 1.0, 1023.0, 0.5, 0.005, 1.0, 0.9),
        # 16 x 36000 x 15 / 3.6e6 = 2.4 kWh x 500 = 1200 g, past the 1023 g cap: 0
        (16, 36000, 15.0, 500.0, 1.0, 1023.0, 0.5, 2.4, 1200.0, 0.0),
        # a clean grid (0 g/kWh): 0 g -> 1
        (8, 7200, 12.0, 0.0, 1.0, 1023.0, 0.5, 0.192, 0.0, 1.0),
        # no intensity reported: the energy is known (4 x 3600 x 12 / 3.6e6 = 0.048), grams not: unknown_score
        (4, 3600, 12.0, None, 1.0, 1023.0, 0.5, 0.048, None, 0.5),
        (4, 3600, 12.0, None, 1.0, 1023.0, 0.25, 0.048, None, 0.25),
    ],
)
def test_carbon_grams(cores: float, run_s: float, watts: float, intensity: float | None, scale_g: float,
                      cap_g: float, unknown: float, kwh: float, grams: float | None, score: float) -> None:
    v = view(fig("d", median_run_s=run_s, carbon_intensity=intensity, **ROOMY))
    result = ranked(v, model_of(Carbon(watts, scale_g, cap_g, unknown, 0.0)), job=JobFacts("t", cores=cores, mem=1))
    got, raw, summary = term_rows(result, "carbon")["d"]
    assert raw["energy_kwh"] == pytest.approx(kwh)
    assert raw["carbon_intensity_g_per_kwh"] == intensity
    assert "near_tie" not in raw  # near_ties_share 0: carbon weighs in everywhere
    assert got == pytest.approx(score, abs=1e-5)
    if grams is None:
        assert raw["grams_co2e"] is None and summary == "carbon intensity unknown"
    else:
        assert raw["grams_co2e"] == pytest.approx(grams)
        assert summary == f"~{grams:.0f} g CO2e"


def test_carbon_defaults_come_from_config() -> None:
    # off by default, and its defaults filled in when only a weight is given
    assert "carbon" not in ScoringSettings().terms
    assert with_defaults({"carbon": {"weight": 2}})["carbon"] == {
        "weight": 2.0, "watts_per_core": 12.0, "scale_g": 1.0, "cap_g": 10000.0, "unknown_score": 0.5,
        "near_ties_share": 0.0}
    assert with_defaults({"staging_time": {"weight": 1, "scale_s": 60, "cap_s": 86400}})["staging_time"] == {
        "weight": 1.0, "scale_s": 60.0, "cap_s": 86400.0, "unknown_score": 0.5}


# Near ties: 1-core jobs of 3600 s everywhere at 10 W: 1 x 3600 x 10 / 3.6e6 = 0.01 kWh. Every input
# (2e9 B of os_eu) comes at 1e9 MB/s (0.002 s) but to "e" at 10 MB/s: 200 s. Turnaround = staging +
# wait (the median queue: free slots, no drain) + 3600 s run.
NEAR_TIES = [
    # id, median queue, intensity, turnaround
    ("a", 0, 700.0),  # 3600.002: the best; 7 g -> 1 - log2(8)/10 = 0.7
    ("b", 100, 300.0),  # 3700.002 <= 3600.002 x 1.05 = 3780.0021; 3 g -> 0.8
    ("c", 170, 100.0),  # 3770.002, in; 1 g -> 0.9
    ("d", 190, 0.0),  # 3790.002 > 3780.0021: out -> 0, though 0 g would score 1
    ("e", 0, 0.0),  # 200 + 0 + 3600 = 3800: out by its staging alone -> 0
]


def _near_ties(share: float) -> RankResult:
    v = view(*(fig(d, median_queue_s=q, median_run_s=3600, carbon_intensity=i, **ROOMY) for d, q, i in NEAR_TIES))
    table = {"os_eu": {d: (10.0 if d == "e" else 1e9) for d, _, _ in NEAR_TIES}}
    return ranked(v, model_of(Carbon(10.0, 1.0, 1023.0, 0.5, share)), job=JobFacts("t", cores=1, mem=0),
                  datasets=[DatasetInput("os_eu", 2e9)], policy=SitePolicy(staging=StagingTable(table)))


def test_carbon_only_breaks_near_ties() -> None:
    # Alike for all, so it pulls no job into the band; the band is ordered by grams among its places.
    rows = term_rows(_near_ties(0.05), "carbon")
    assert {d: round(s, 6) for d, (s, _, _) in rows.items()} == dict.fromkeys("abcde", 1.0)
    assert {d: raw["near_tie"] for d, (_, raw, _) in rows.items()} == {
        "a": True, "b": True, "c": True, "d": False, "e": False}
    # the grams are shown out of the band too: 0.01 kWh x intensity
    assert {d: raw["grams_co2e"] for d, (_, raw, _) in rows.items()} == {
        "a": 7.0, "b": 3.0, "c": 1.0, "d": 0.0, "e": 0.0}
    assert _near_ties(0.05).ids == ["c", "b", "a", "d", "e"]


def test_near_ties_mode_moves_nobody_out_of_the_band() -> None:
    """Two sites alike in carbon: a (TPV tag 3, runs 1,100 s) is ahead of b
    (tag 1, 1,000 s) on the default terms. Carbon in near-ties mode must not
    pull the job to b because b is in the band of best turnaround."""
    a = fig("a", queued=0, running=0, cpus_free=64, mem_free_gb=64, median_run_s=1100, carbon_intensity=300)
    b = fig("b", queued=0, running=0, cpus_free=64, mem_free_gb=64, median_run_s=1000, carbon_intensity=300)
    cands = [Candidate("a", tpv_score=3), Candidate("b", tpv_score=1)]
    plain = ranked(view(a, b), MODEL, job=JOB, candidates=cands)
    carbon = scoring_model(ScoringSettings(terms={**DEFAULT_TERMS, "carbon": {"weight": 2, "near_ties_share": 0.05}}))
    assert plain.ids == ranked(view(a, b), carbon, job=JOB, candidates=cands).ids == ["a", "b"]
    # Within the band the cleaner goes first, whatever its score; others keep their places.
    c = b.model_copy(update={"id": "c", "carbon_intensity": 30})
    d = fig("d", queued=50, running=1, cpus_free=0, mem_free_gb=64, median_run_s=1000, carbon_intensity=10)
    with_band = ranked(view(a, b, c, d), carbon, job=JOB,
                       candidates=[*cands, Candidate("c", tpv_score=0), Candidate("d", tpv_score=9)])
    without = ranked(view(a, b, c, d), MODEL, job=JOB,
                     candidates=[*cands, Candidate("c", tpv_score=0), Candidate("d", tpv_score=9)])
    band = {"b", "c"}  # turnaround within 5 % of the best (a's 1,100 s run is 10 % longer; d queues)
    assert [i for i in with_band.ids if i not in band] == [i for i in without.ids if i not in band]
    slots = sorted(without.ids.index(i) for i in band)
    assert [with_band.ids[j] for j in slots] == ["c", "b"]


def test_near_ties_mode_leaves_a_destination_at_its_cap_after_the_free_ones() -> None:
    # At its cap with at_cap_factor 1 its score keeps its factor; it is still no near tie of a free one.
    carbon = scoring_model(ScoringSettings(terms={**DEFAULT_TERMS, "carbon": {"weight": 1, "near_ties_share": 0.05}}))
    free = fig("free", median_run_s=600, carbon_intensity=400, **ROOMY)
    capped = fig("capped", median_run_s=600, carbon_intensity=50, **{**ROOMY, "running": 10})
    policy = SitePolicy(caps={"capped": Cap(max_jobs=10, at_cap_factor=1.0)})
    result = ranked(view(free, capped), carbon, job=JOB, policy=policy)
    assert [(p.id, p.group.value) for p in result.placements] == [("free", "scored"), ("capped", "at_cap")]


def test_near_ties_mode_puts_an_unknown_carbon_intensity_last_in_the_band() -> None:
    carbon = scoring_model(ScoringSettings(terms={**DEFAULT_TERMS, "carbon": {"weight": 1, "near_ties_share": 0.05}}))
    known = fig("known", median_run_s=600, carbon_intensity=100, **ROOMY)
    unknown = fig("unknown", median_run_s=600, **ROOMY)
    for order in ((known, unknown), (unknown, known)):
        assert ranked(view(*order), carbon, job=JOB).ids == ["known", "unknown"]


def test_a_float_residue_in_the_free_memory_is_no_job_that_does_not_fit() -> None:
    # 16.4 - 12.8 GB free, a 3.6 GB job charged there: what is left is -2e-15, not a missing job's worth.
    d = fig("d", queued=0, running=0, cpus_free=64, mem_free_gb=16.4 - 12.8)
    v = view(d, fig("e", **ROOMY), charges={"d": ChargeLoad(count=1, cores=1, mem=3.6)})
    result = ranked(v, MODEL, job=JobFacts("t", cores=1, mem=0), policy=SitePolicy(caps={"d": Cap(max_running=1)}))
    assert [(p.id, p.group.value) for p in result.placements] == [("e", "scored"), ("d", "at_cap")]
    assert result.placements[1].cap is not None and result.placements[1].cap["usage"] == 1.0


def test_near_ties_mode_leaves_a_degraded_or_capped_destination_where_its_factor_puts_it() -> None:
    """Health and caps scale a score down; the band of near ties must not
    lift such a destination back up: a degraded one (a black hole is the
    fastest there is) with the lowest carbon went first whatever its
    factor, as did one near its cap."""
    from tpv_broker.core.models import DestinationHealth

    carbon = scoring_model(ScoringSettings(terms={**DEFAULT_TERMS, "carbon": {"weight": 1, "near_ties_share": 0.05}}))
    good = fig("good", queued=0, running=1, cpus_free=64, mem_free_gb=64, median_run_s=600, carbon_intensity=400)
    sick = fig("sick", queued=0, running=1, cpus_free=64, mem_free_gb=64, median_run_s=600, carbon_intensity=50,
               health=DestinationHealth(state="degraded", since=NOW - 100, score_factor=0.5, reason="failing"))
    result = ranked(view(good, sick), carbon, job=JOB)
    assert result.ids == ["good", "sick"]
    # The explanation is the same computation: the degraded one is no near tie.
    assert {d: raw["near_tie"] for d, (_, raw, _) in term_rows(result, "carbon").items()} == {
        "good": True, "sick": False}
    capped = sick.model_copy(update={"id": "capped", "health": None, "running": 9})
    policy = SitePolicy(caps={"capped": Cap(max_jobs=10, soft_from=0.5, at_cap_factor=0.0)})
    assert ranked(view(good, capped), carbon, job=JOB, policy=policy).ids == ["good", "capped"]


def test_a_staging_time_term_weighted_0_changes_no_order() -> None:
    # Listed with weight 0, it turned staging on for finish_time, which then reordered by data distance.
    def policy_and_model(terms: dict[str, Any]) -> tuple[SitePolicy, ScoringModel]:
        config = load_config(environ={}).model_copy(update={"scoring": ScoringSettings(terms=terms)})
        return site_policy(config), scoring_model(config.scoring)

    finish = {"finish_time": {"weight": 1.0, "scale_s": 60, "cap_s": 86400}}
    datasets = [DatasetInput("os", 50e9, ORIGIN)]
    near = fig("near", **{**ROOMY, "median_run_s": 900.0})
    far = fig("far", **{**ROOMY, "median_run_s": 800.0})
    locations = {"near": ORIGIN, "far": east(3000)}
    orders = []
    for terms in (finish, {**finish, "staging_time": {"weight": 0.0, "scale_s": 60, "cap_s": 86400}}):
        policy, model = policy_and_model(terms)
        orders.append(ranked(view(near, far), model, datasets=datasets, locations=locations, policy=policy).ids)
    assert orders == [["far", "near"], ["far", "near"]]
    policy, _ = policy_and_model({**finish, "staging_time": {"weight": 1.0, "scale_s": 60, "cap_s": 86400}})
    assert policy.staging is not None


def test_carbon_without_near_ties_weighs_in_everywhere() -> None:
    rows = term_rows(_near_ties(0.0), "carbon")
    assert {d: round(s, 6) for d, (s, _, _) in rows.items()} == {"a": 0.7, "b": 0.8, "c": 0.9, "d": 1.0, "e": 1.0}
    assert all("near_tie" not in raw for _, raw, _ in rows.values())


# -- caps: what each counts ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cap", "before", "after", "running", "charged", "which", "usage", "jobs", "queued", "runs"),
    [
        # max_jobs counts queued + running + every charge: 3 + 4 + 2 = 9 of 10
        (Cap(max_jobs=10), 3, 3, 4, 2, "max_jobs", 0.9, 9, 3, 6),
        # ... whether the charges fit or not (here neither does: the queue grew by 2): still 9
        (Cap(max_jobs=10), 3, 5, 4, 2, "max_jobs", 0.9, 9, 5, 4),
        # max_running counts the charges that fit: queue unchanged, 4 + 2 = 6 of 8
        (Cap(max_running=8), 3, 3, 4, 2, "max_running", 0.75, 9, 3, 6),
        # ... and not those that queue: 4 + (2 - (5 - 3)) = 4 of 8
        (Cap(max_running=8), 3, 5, 4, 2, "max_running", 0.5, 9, 5, 4),
        # ... half a charge fits: 4 + (1 - 0.5) = 4.5 of 8
        (Cap(max_running=8), 3, 3.5, 4, 1, "max_running", 0.5625, 8, 3.5, 4.5),
        # max_queued counts the queue after the charges: 5 of 4
        (Cap(max_queued=4), 3, 5, 4, 2, "max_queued", 1.25, 9, 5, 4),
        # ... the charges fit: 3 of 4
        (Cap(max_queued=4), 3, 3, 4, 2, "max_queued", 0.75, 9, 3, 6),
        # max_queued_per_running: 5 queued / 4 running = 1.25 of 2
        (Cap(max_queued_per_running=2), 3, 5, 4, 2, "max_queued_per_running", 0.625, 9, 5, 4),
        # ... the charges run: 3 / 6 = 0.5 of 2
        (Cap(max_queued_per_running=2), 3, 3, 4, 2, "max_queued_per_running", 0.25, 9, 3, 6),
        # ... nothing running: queued over at least 1, 3 / 1 = 3 of 2
        (Cap(max_queued_per_running=2), 3, 3, 0, 0, "max_queued_per_running", 1.5, 3, 3, 0),
        # nothing reported counts 0: 0 of 5
        (Cap(max_jobs=5), NAN, NAN, NAN, 0, "max_jobs", 0.0, 0, 0, 0),
        # ... but the charges count: 2 queued (nothing known to take from) -> 0 + 0 + 2 = 2 of 4
        (Cap(max_jobs=4), NAN, 2, NAN, 2, "max_jobs", 0.5, 2, 2, 0),
        # the tightest wins: jobs 9/100, queued 3/4, running 6/6 -> max_running at 1.0
        (Cap(max_jobs=100, max_queued=4, max_running=6), 3, 3, 4, 2, "max_running", 1.0, 9, 3, 6),
        # ... here the queue: jobs 9/100 = 0.09, running 4/8 = 0.5, queued 5/4 = 1.25
        (Cap(max_jobs=100, max_queued=4, max_running=8), 3, 5, 4, 2, "max_queued", 1.25, 9, 5, 4),
    ],
)
def test_cap_state(cap: Cap, before: float, after: float, running: float, charged: float, which: str,
                   usage: float, jobs: float, queued: float, runs: float) -> None:
    state = cap_state([cap], np.array([before]), np.array([after]), np.array([running]), np.array([charged]))
    assert state.which == [which]
    assert state.usage[0] == pytest.approx(usage)
    assert (state.jobs[0], state.queued[0], state.running[0]) == pytest.approx((jobs, queued, runs))
    assert bool(state.over[0]) is (usage >= 1.0)
    assert state.factor[0] == pytest.approx(_bend(usage, cap))
    assert state.explain(0, [cap]) == {
        "cap": which, "limit": getattr(cap, which), "usage": pytest.approx(usage), "jobs": pytest.approx(jobs),
        "queued": pytest.approx(queued), "running": pytest.approx(runs),
        "score_factor": pytest.approx(_bend(usage, cap))}


def test_no_cap_is_no_use_no_factor() -> None:
    caps = [None, Cap(max_jobs=10)]
    state = cap_state(caps, np.array([50.0, 5.0]), np.array([50.0, 5.0]), np.array([50.0, 5.0]), np.zeros(2))
    assert math.isnan(state.usage[0]) and state.which == [None, "max_jobs"]
    assert state.factor.tolist() == [1.0, 0.5]  # 10 of 10: at the cap
    assert state.over.tolist() == [False, True]
    assert state.explain(0, caps) is None and state.words(0, caps) == ""
    assert state.words(1, caps) == "max_jobs 10: at 100% (5 queued, 5 running, in-flight charges counted)"


@pytest.mark.parametrize(
    ("usage", "soft_from", "at_cap", "factor"),
    [
        (0.5, 0.8, 0.5, 1.0),  # below soft_from: untouched
        (0.8, 0.8, 0.5, 1.0),  # at soft_from: still 1
        (0.9, 0.8, 0.5, 0.75),  # halfway from 0.8 to 1: 1 - 0.5 x (1 - 0.5)
        (0.95, 0.8, 0.5, 0.625),  # three quarters: 1 - 0.75 x 0.5
        (1.0, 0.8, 0.5, 0.5),  # at the cap: at_cap_factor
        (3.0, 0.8, 0.5, 0.5),  # past it: no lower
        (0.75, 0.5, 0.2, 0.6),  # (0.75 - 0.5) / 0.5 = half of the way down to 0.2: 1 - 0.5 x 0.8
        (0.99, 0.8, 1.0, 1.0),  # at_cap_factor 1: no bend at all
        (0.9, 0.8, 0.0, 0.5),  # at_cap_factor 0: half of the way to 0
    ],
)
def test_bend_is_linear_from_soft_from_to_the_cap(usage: float, soft_from: float, at_cap: float,
                                                   factor: float) -> None:
    assert _bend(usage, Cap(max_jobs=1, soft_from=soft_from, at_cap_factor=at_cap)) == pytest.approx(factor)


def test_the_bend_does_not_jump() -> None:
    cap = Cap(max_jobs=1)
    usages = np.linspace(0.0, 1.2, 1201)
    factors = np.array([_bend(float(u), cap) for u in usages])
    assert (np.diff(factors) <= 0).all()  # never rises with use
    assert np.abs(np.diff(factors)).max() <= 0.5 / 200 + 1e-12  # slope (1 - 0.5) / 0.2 over steps of 0.001


# -- caps in the ranking ---------------------------------------------------------------------------
MODEL = scoring_model(ScoringSettings())
JOB = JobFacts("bwa", cores=4, mem=8)


def _capped_view(running: float = 10, charges: Mapping[str, ChargeLoad] | None = None,
                 cpus_free: float = 64) -> RankView:
    return view(
        DestinationFigures(id="nom"),  # no metrics
        fig("stale", age=10_000, **ROOMY),
        fig("off", **{**ROOMY, "status": "offline"}),
        # the best figures: nothing queued, room for everything
        fig("capped", queued=0, running=running, cpus_free=cpus_free, cpus_total=128, mem_free_gb=256),
        fig("capped2", queued=0, running=20, cpus_free=48, cpus_total=128, mem_free_gb=256),
        fig("ok", queued=5, running=10, cpus_free=8, cpus_total=128, mem_free_gb=64),
        fig("under", queued=8, running=10, cpus_free=8, cpus_total=128, mem_free_gb=64),
        charges=charges)


# no_metrics first in TPV's order (tag score 100), the rest after
CANDIDATES = [Candidate("nom", 100.0), Candidate("stale", 50.0), Candidate("off", 80.0), Candidate("capped"),
              Candidate("capped2"), Candidate("ok"), Candidate("under")]
CAPS = SitePolicy({"capped": Cap(max_jobs=10), "capped2": Cap(max_running=20), "under": Cap(max_jobs=100)})


def test_at_cap_after_every_scored_one_and_before_no_metrics() -> None:
    free = ranked(_capped_view(), MODEL, job=JOB, candidates=CANDIDATES)
    assert free.ids[:2] == ["capped", "capped2"]  # the best two, without caps
    result = ranked(_capped_view(), MODEL, job=JOB, candidates=CANDIDATES, policy=CAPS)
    # capped: 0 + 10 + 0 = 10 jobs of 10; capped2: 20 running of 20; under: 18 of 100
    assert sorted(result.ids[:2]) == ["ok", "under"]
    assert result.ids[2:] == ["capped", "capped2", "nom", "stale", "off"]
    groups = {p.id: p.group for p in result.placements}
    assert groups == {"ok": Group.SCORED, "under": Group.SCORED, "capped": Group.AT_CAP, "capped2": Group.AT_CAP,
                      "nom": Group.NO_METRICS, "stale": Group.STALE, "off": Group.OFFLINE}
    by_id = {p.id: p for p in result.placements}
    assert by_id["capped"].reason.startswith(
        "at its cap, after those under theirs: max_jobs 10: at 100% (0 queued, 10 running, in-flight charges "
        "counted); score ")
    assert by_id["capped2"].cap == {"cap": "max_running", "limit": 20, "usage": 1.0, "jobs": 20.0, "queued": 0.0,
                                    "running": 20.0, "score_factor": 0.5}
    assert by_id["under"].cap is not None and by_id["under"].cap["score_factor"] == 1.0
    assert by_id["ok"].cap is None and "cap" not in by_id["ok"].reason
    # the at-cap ones keep their score, at_cap_factor times: in score order among themselves
    assert by_id["capped"].total == pytest.approx(0.5 * free.placements[0].total)
    # never dropped: still charged first when every scored one is at its cap
    alone = ranked(_capped_view(), MODEL, job=JOB, candidates=[Candidate("nom", 100.0), Candidate("capped")],
                   policy=CAPS)
    assert alone.ids == ["capped", "nom"] and alone.first_scored_id == "capped"


def test_near_its_cap_the_score_is_multiplied() -> None:
    # 9 running, nothing queued: 9 of 10 -> 1 - (0.9 - 0.8) / 0.2 x (1 - 0.5) = 0.75
    free = {p.id: p for p in ranked(_capped_view(running=9), MODEL, job=JOB, candidates=CANDIDATES).placements}
    capped = {p.id: p for p in ranked(_capped_view(running=9), MODEL, job=JOB, candidates=CANDIDATES,
                                      policy=CAPS).placements}
    assert capped["capped"].group is Group.SCORED
    assert capped["capped"].total == pytest.approx(0.75 * free["capped"].total)
    assert capped["capped"].reason.endswith(
        " (near its cap, x 0.75: max_jobs 10: at 90% (0 queued, 9 running, in-flight charges counted))")
    # under its soft_from (18 of 100), untouched
    assert capped["under"].total == pytest.approx(free["under"].total)


def test_in_flight_charges_count_towards_the_caps() -> None:
    # 8 running of 10: 0.8, at soft_from, factor 1: first
    assert ranked(_capped_view(running=8), MODEL, job=JOB, candidates=CANDIDATES, policy=CAPS).ids[0] == "capped"
    # + 2 charged 4-core jobs that fit the 64 free cores: 8 + 2 = 10 running of 10: at the cap
    loads = {"capped": ChargeLoad(count=2, cores=8, mem=16)}
    result = ranked(_capped_view(running=8, charges=loads), MODEL, job=JOB, candidates=CANDIDATES, policy=CAPS)
    capped = next(p for p in result.placements if p.id == "capped")
    assert capped.group is Group.AT_CAP and result.ids.index("capped") == 2
    assert capped.cap is not None
    assert (capped.cap["jobs"], capped.cap["queued"], capped.cap["running"]) == (10.0, 0.0, 10.0)
    # no free core: both charges queue -> max_queued 2: 2 of 2; running stays 8
    policy = SitePolicy({"capped": Cap(max_queued=2)})
    result = ranked(_capped_view(running=8, charges=loads, cpus_free=0), MODEL, job=JOB, candidates=CANDIDATES,
                    policy=policy)
    capped = next(p for p in result.placements if p.id == "capped")
    assert capped.cap == {"cap": "max_queued", "limit": 2, "usage": 1.0, "jobs": 10.0, "queued": 2.0, "running": 8.0,
                          "score_factor": 0.5}
    assert capped.group is Group.AT_CAP


# at_cap_factor 0 (config allows it) scores an at-cap destination 0: its own place keeps it before the
# no_metrics ones all the same.
def test_at_cap_with_factor_zero_still_goes_before_no_metrics() -> None:
    policy = SitePolicy({"capped": Cap(max_jobs=10, at_cap_factor=0.0)})
    result = ranked(_capped_view(), MODEL, job=JOB, candidates=CANDIDATES, policy=policy)
    assert result.ids.index("capped") < result.ids.index("nom")


# The label follows the exact use, as the order does (not the use rounded for explain).
def test_a_destination_just_under_its_cap_is_not_said_to_be_at_it() -> None:
    # 10 jobs of 10.0004: usage 0.99996, under the cap (ranked with the scored ones)
    result = ranked(_capped_view(), MODEL, job=JOB, candidates=[Candidate("capped")],
                    policy=SitePolicy({"capped": Cap(max_jobs=10.0004)}))
    assert result.placements[0].group is Group.SCORED


# Caps count jobs, also where the wait counts a charged queue in typical jobs\' work.
def test_caps_count_jobs_also_when_charging_by_work() -> None:
    # 8 running, no free core; one charged 16-core job of 2 h: by work it weighs 16 x 7200 / (128 / 8 x 600)
    # = 12 typical jobs in the wait, but it is 1 queued job: 1 of max_queued 5
    d = fig("d", queued=0, running=8, cpus_total=128, cpus_free=0, mem_free_gb=64, median_run_s=600)
    v = view(d, charges={"d": ChargeLoad(count=1, cores=16, mem=8, core_s=16 * 7200, timed=1)})
    result = rank([Candidate("d")], JobFacts("t", cores=1, mem=1), [], v, NOW, MODEL, 300.0, {}, math.inf, True,
                  policy=SitePolicy({"d": Cap(max_queued=5)}))
    assert result.placements[0].cap is not None and result.placements[0].cap["queued"] == 1.0


# -- config: per-tenant caps, the staging table, errors --------------------------------------------
POLICY_YAML = f"""
destinations:
  d1:
    caps: {{max_jobs: 100}}
  d2:
    caps: {{max_running: 64, max_queued_per_running: 2, soft_from: 0.75, at_cap_factor: 0.3}}
  d3: {{}}
api:
  tenants:
    usegalaxy-fr:
      auth_tokens: [{FR_TOKEN}]
      caps:
        d1: {{max_jobs: 20}}
        d3: {{max_queued: 5}}
    usegalaxy-eu:
      auth_tokens: [{EU_TOKEN}]
scoring:
  staging:
    throughput_mb_s:
      object_store_eu: {{d1: 400, d2: 80}}
    default_mb_s: 50
    halving_km: 2000
"""


def test_a_tenants_caps_replace_the_destinations_for_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(POLICY_YAML)
    config = load_config(path, environ={})
    shared = {"d1": Cap(max_jobs=100),
              "d2": Cap(max_running=64, max_queued_per_running=2, soft_from=0.75, at_cap_factor=0.3)}
    assert site_policy(config).caps == shared
    assert site_policy(config, "usegalaxy-eu").caps == shared  # no caps of its own
    # fr's own: d1's replaced, d3 capped for fr alone, d2's kept
    assert site_policy(config, "usegalaxy-fr").caps == {**shared, "d1": Cap(max_jobs=20), "d3": Cap(max_queued=5)}
    assert site_policy(config).staging == StagingTable({"object_store_eu": {"d1": 400.0, "d2": 80.0}}, 50.0, 2000.0)


FR_TENANT = f"api:\n  tenants:\n    usegalaxy-fr:\n      auth_tokens: [{FR_TOKEN}]\n"


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("destinations:\n  d1:\n    caps: {soft_from: 0.5}\n",
         "destinations.d1.caps: give at least one of max_jobs, max_queued, max_running, max_queued_per_running"),
        ("destinations:\n  d1:\n    caps: {max_jobs: -1}\n",
         "destinations.d1.caps.max_jobs: Input should be greater than 0"),
        ("destinations:\n  d1:\n    caps: {max_queued: 0}\n",
         "destinations.d1.caps.max_queued: Input should be greater than 0"),
        ("destinations:\n  d1:\n    caps: {max_jobs: 10, at_cap_factor: 1.5}\n",
         "destinations.d1.caps.at_cap_factor: Input should be less than or equal to 1"),
        ("destinations:\n  d1:\n    caps: {max_jobs: 10, at_cap_factor: -0.1}\n",
         "destinations.d1.caps.at_cap_factor: Input should be greater than or equal to 0"),
        ("destinations:\n  d1:\n    caps: {max_jobs: 10, soft_from: 1}\n",
         "destinations.d1.caps.soft_from: Input should be less than 1"),
        ("destinations:\n  d1:\n    caps: {max_job: 10}\n", "destinations.d1.caps.max_job: Extra inputs are not"),
        (f"{FR_TENANT}      caps: {{d1: {{max_running: 0}}}}\n",
         "api.tenants.usegalaxy-fr.caps.d1.max_running: Input should be greater than 0"),
        (f"{FR_TENANT}      caps: {{d1: {{}}}}\n",
         "api.tenants.usegalaxy-fr.caps.d1: give at least one of max_jobs"),
        ("scoring:\n  staging:\n    throughput_mb_s: {os_eu: {d1: 0}}\n",
         "scoring.staging.throughput_mb_s.os_eu.d1: must be more than 0 MB/s, got 0.0"),
        ("scoring:\n  staging:\n    throughput_mb_s: {os_eu: {d1: -5}}\n",
         "scoring.staging.throughput_mb_s.os_eu.d1: must be more than 0 MB/s, got -5.0"),
        ("scoring:\n  staging:\n    default_mb_s: 0\n", "scoring.staging.default_mb_s: Input should be greater than 0"),
        ("scoring:\n  staging:\n    halving_km: -1\n", "scoring.staging.halving_km: Input should be greater than 0"),
        ("scoring:\n  terms:\n    carbon: {weight: 1, watts_per_core: 0}\n",
         "scoring.terms.carbon.watts_per_core: Input should be greater than 0"),
        ("scoring:\n  terms:\n    carbon: {weight: 1, near_ties_share: -0.1}\n",
         "scoring.terms.carbon.near_ties_share: Input should be greater than or equal to 0"),
        ("scoring:\n  terms:\n    staging_time: {weight: 1, scale_s: 60, cap_s: 600, unknown_score: 2}\n",
         "scoring.terms.staging_time.unknown_score: Input should be less than or equal to 1"),
    ],
)
def test_bad_policy_config_names_the_key(tmp_path: Path, yaml: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"invalid configuration in {path}: "), message
    assert problem in message, message


def test_a_carbon_preset_alone_is_no_live_source() -> None:
    presets = presets_for(CollectorSettings(presets=["queue_by_destination", "pulsar_carbon_intensity"]))
    assert live_sources(presets) == {"queue_by_destination"}
    assert live_sources(presets_for(CollectorSettings(presets=["pulsar_carbon_intensity"]))) == frozenset()


def test_scores_stay_in_range_with_every_new_term() -> None:
    """Every term together, unknowns included: totals in [0, 1], every candidate once."""
    terms = with_defaults({"finish_time": {"weight": 2, "scale_s": 60, "cap_s": 86400},
                           "staging_time": {"weight": 1, "scale_s": 60, "cap_s": 86400},
                           "carbon": {"weight": 1, "near_ties_share": 0.05}, "fit_now": {"weight": 1,
                                                                                       "unknown_score": 0.3}})
    model = ScoringModel.from_settings(terms, 60.0, 3600.0, 900.0)
    assert isinstance(model, ScoringModel)
    v = view(*(fig(d, median_run_s=600, carbon_intensity=i, **ROOMY) for d, i in (("a", 100.0), ("b", None))))
    result = ranked(v, model, datasets=[DatasetInput("os_x", 1e9), DatasetInput("os_y", 0.0, ORIGIN)],
                    locations={"a": ORIGIN})
    assert sorted(result.ids) == ["a", "b"]
    assert all(p.total is not None and 0.0 <= p.total <= 1.0 for p in result.placements)


def test_staging_counts_only_where_a_config_asks_for_it() -> None:
    """A config from before staging (finish_time, no staging_time term, no
    scoring.staging) ranks as it did: its turnaround counts no staging."""
    from tpv_broker.api.rank_service import site_policy
    from tpv_broker.config.settings import BrokerConfig

    finish_only = {"finish_time": {"weight": 1, "scale_s": 60, "cap_s": 604800}}
    assert site_policy(BrokerConfig.model_validate({"scoring": {"terms": finish_only}})).staging is None
    with_term = {**finish_only, "staging_time": {"weight": 1, "scale_s": 60, "cap_s": 86400}}
    assert site_policy(BrokerConfig.model_validate({"scoring": {"terms": with_term}})).staging is not None
    table = {"terms": finish_only, "staging": {"default_mb_s": 50}}
    staging = site_policy(BrokerConfig.model_validate({"scoring": table})).staging
    assert staging is not None and staging.default_mb_s == 50


def test_many_inputs_from_one_store_cost_one_throughput() -> None:
    # 1,000 inputs of 1 MB in one store at 10 MB/s: 100 s, as one 1,000 MB input.
    table = StagingTable({"s": {"d": 10.0}})
    many, _ = table.seconds([DatasetInput("s", 1e6)] * 1000, ["d"], np.array([0.0]), np.array([0.0]))
    one, _ = table.seconds([DatasetInput("s", 1e9)], ["d"], np.array([0.0]), np.array([0.0]))
    assert many.tolist() == one.tolist() == [100.0]


def test_a_galaxys_caps_may_name_the_endpoint_as_its_tpv_config_does() -> None:
    """fr calls pulsar_it01 pulsar-it (its alias): its cap there applies to
    the snapshot's pulsar_it01, not to an id nobody ranks."""
    from tpv_broker.config.settings import BrokerConfig

    config = BrokerConfig.model_validate({"api": {"tenants": {"usegalaxy-fr": {
        "auth_tokens": [FR_TOKEN], "aliases": {"pulsar-it": "pulsar_it01"},
        "caps": {"pulsar-it": {"max_jobs": 20}}}}}})
    assert config.caps_for("usegalaxy-fr").keys() == {"pulsar_it01"}
    assert config.caps_for("default") == {}
