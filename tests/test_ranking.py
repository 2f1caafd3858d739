"""The pure rank core (tpv_broker/core/ranking.py): groups, reasons, TPV's
order when degraded, deterministic ties, and properties over arbitrary
candidates and figures. Figures are in TPV's units (cores, GB, gpus)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.api.rank_service import scoring_model
from tpv_broker.config.ranking_settings import ScoringSettings
from tpv_broker.config.terms import DEFAULT_TERMS
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import Candidate, DatasetInput, JobFacts
from tpv_broker.core.models import (
    DestinationFigures,
    RankView,
    SnapshotMeta,
    ToolFigures,
)
from tpv_broker.core.ranking import rank, tpv_order
from tpv_broker.core.result import DegradedReason, Group, RankResult
from tpv_broker.core.scoring import ScoringModel
from tpv_broker.core.tool_ids import stats_field

NO_METRICS, OFFLINE, SCORED, STALE, TPV_ORDER = (
    Group.NO_METRICS, Group.OFFLINE, Group.SCORED, Group.STALE, Group.TPV_ORDER)

NOW = 1_700_000_000.0
MAX_SNAPSHOT_AGE = 300.0
MAX_METRICS_AGE = 900.0  # ScoringSettings' default
JOB = JobFacts(tool_id="toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4", cores=4, mem=8)
MODEL = scoring_model(ScoringSettings())
LIVE = "queue_by_destination"


def fig(dest_id: str, age: float = 10.0, **kw: Any) -> DestinationFigures:
    """Figures as the collector publishes them: live figures ``age`` s old."""
    kw.setdefault("status", "online")
    kw.setdefault("sources", {LIVE: NOW - age})
    kw.setdefault("live_at", NOW - age)
    return DestinationFigures(id=dest_id, **kw)


def view(*figures: DestinationFigures, age: float = 10.0,
         tool_stats: dict[str, dict[str, ToolFigures]] | None = None) -> RankView:
    return RankView(meta=SnapshotMeta(created_at=NOW - age, destinations=len(figures)),
                    destinations={f.id: f for f in figures}, tool_stats=tool_stats or {})


def cands(*ids: str, scores: Sequence[float | None] = ()) -> list[Candidate]:
    scores = list(scores) or [None] * len(ids)
    return [Candidate(i, s) for i, s in zip(ids, scores, strict=True)]


def run(candidates: Sequence[Candidate], v: RankView, job: JobFacts = JOB, model: ScoringModel = MODEL,
        datasets: Sequence[DatasetInput] = (), locations: Mapping[str, tuple[float, float]] | None = None,
        ) -> RankResult:
    return rank(candidates, job, datasets, v, NOW, model, MAX_SNAPSHOT_AGE, locations or {})


# -- groups and reasons ------------------------------------------------------------------
def test_groups_scored_then_no_metrics_and_stale_then_offline() -> None:
    v = view(
        fig("slow", queued=40, running=2, median_run_s=3600, cpus_free=64, mem_free_gb=64),
        fig("quick", queued=0, running=2, median_run_s=600, cpus_free=64, mem_free_gb=64),
        fig("old", age=1000, queued=0, cpus_free=64, mem_free_gb=64),
        fig("off", status="offline", queued=0, cpus_free=64, mem_free_gb=64),
        # only daily run-time statistics, nothing live
        fig("stats_only", sources={"destination-queue-run-time": NOW - 100}, live_at=None, median_run_s=60),
        # only in config: published with no measured figures at all
        DestinationFigures(id="config_only", in_config=True, cpus_total=64),
    )
    candidates = cands("off", "unknown", "old", "config_only", "stats_only", "slow", "quick")
    result = run(candidates, v)
    assert not result.degraded and result.degraded_reason is None
    assert result.snapshot_age_s == pytest.approx(10.0)
    # scored by score; then the no-metrics and stale ones together in input order; offline last
    assert result.ids == ["quick", "slow", "unknown", "old", "config_only", "stats_only", "off"]
    by_id = {p.id: p for p in result.placements}
    assert {i: (p.group, p.reason) for i, p in by_id.items() if p.group != SCORED} == {
        "unknown": (NO_METRICS, "no metrics for this destination"),
        "old": (STALE, "metrics 1000 s old (limit 900 s)"),
        "config_only": (NO_METRICS, "no metrics for this destination"),
        "stats_only": (NO_METRICS, "no live metrics (run-time statistics only)"),
        "off": (OFFLINE, "reported offline"),
    }
    for i in ("quick", "slow"):
        assert by_id[i].group == SCORED
        assert by_id[i].total is not None and 0 < by_id[i].total <= 1
        assert by_id[i].reason.startswith(f"score {by_id[i].total * 100:.1f}: ")
        assert [t.term for t in by_id[i].terms] == ["queue_wait", "run_time", "fit_now", "data_locality", "tpv_score"]
    assert by_id["quick"].total > by_id["slow"].total  # type: ignore[operator]
    # unscored placements carry no total and no breakdown
    assert all(p.total is None and p.terms == () for p in result.placements if p.group != SCORED)


def test_offline_goes_last_even_when_its_figures_are_the_best() -> None:
    v = view(fig("off", status="offline", queued=0, cpus_free=64, mem_free_gb=64),
             fig("bad", queued=99, running=1, cpus_free=0, mem_free_gb=0))
    assert run(cands("off", "bad"), v).ids == ["bad", "off"]


def test_offline_before_stale_is_still_offline() -> None:
    # reported offline with old metrics: the offline reason wins
    v = view(fig("off", age=5000, status="offline"))
    (p,) = run(cands("off"), v).placements
    assert (p.group, p.reason) == (OFFLINE, "reported offline")


def test_status_unknown_is_scored_not_offline() -> None:
    v = view(fig("u", status="unknown", queued=3), fig("o", status="offline", queued=0))
    assert [(p.id, p.group) for p in run(cands("o", "u"), v).placements] == [("u", SCORED), ("o", OFFLINE)]


@pytest.mark.parametrize(
    ("age", "group"),
    [
        (MAX_METRICS_AGE, SCORED),  # exactly at the limit: still fresh
        (MAX_METRICS_AGE + 1, STALE),
        (0.0, SCORED),
        (-60.0, SCORED),  # from the future (clock skew): fresh
    ],
)
def test_metrics_age_limit(age: float, group: str) -> None:
    assert run(cands("d"), view(fig("d", age=age, queued=1))).placements[0].group == group


def test_metrics_age_limit_comes_from_config() -> None:
    model = scoring_model(ScoringSettings(max_metrics_age_s=60))
    (p,) = run(cands("d"), view(fig("d", age=61, queued=1)), model=model).placements
    assert (p.group, p.reason) == (STALE, "metrics 61 s old (limit 60 s)")


def test_unscored_groups_keep_tpv_order() -> None:
    # no metrics and stale share one group: tag score first (stale 'b' at 2 beats 'a' at 1),
    # then input order ('c' and 'd' both None = 0); offline ones likewise among themselves
    v = view(fig("b", age=2000), fig("o1", status="offline"), fig("o2", status="offline"), fig("s", queued=1))
    candidates = cands("a", "o1", "c", "b", "o2", "d", "s", scores=[1, 0, None, 2, 3, None, -5])
    assert run(candidates, v).ids == ["s", "b", "a", "c", "d", "o2", "o1"]


# -- degraded: TPV's order ----------------------------------------------------------------
DEGRADED_CANDIDATES = cands("a", "b", "c", "d", "e", scores=[1, 5, None, 5, -2])
# tag score desc, input order on ties: b(5), d(5), a(1), c(None = 0), e(-2)
DEGRADED_ORDER = ["b", "d", "a", "c", "e"]
# what the metrics would say: e is by far the best
METRICS = [fig("e", queued=0, cpus_free=64, mem_free_gb=64)] + [
    fig(i, queued=50, running=1, cpus_free=0, mem_free_gb=0) for i in "abcd"
]


def test_no_snapshot_is_tpv_order_degraded() -> None:
    result = run(DEGRADED_CANDIDATES, RankView(meta=None, destinations={f.id: f for f in METRICS}))
    assert result.ids == DEGRADED_ORDER
    assert (result.degraded, result.degraded_reason, result.snapshot_age_s) == (True, "no snapshot in Redis yet", None)
    assert all((p.group, p.reason, p.total) == (TPV_ORDER, "TPV order: no snapshot", None) for p in result.placements)


def test_stale_snapshot_is_tpv_order_degraded() -> None:
    result = run(DEGRADED_CANDIDATES, view(*METRICS, age=MAX_SNAPSHOT_AGE + 1))
    assert result.ids == DEGRADED_ORDER
    assert result.degraded and result.snapshot_age_s == pytest.approx(301)
    assert result.degraded_reason == "snapshot is 301 s old (limit 300 s)"
    assert all(p.reason == "TPV order: snapshot is 301 s old (limit 300 s)" for p in result.placements)


@pytest.mark.parametrize("age", [MAX_SNAPSHOT_AGE, 0.0, -50.0])
def test_snapshot_within_the_limit_is_used(age: float) -> None:
    result = run(DEGRADED_CANDIDATES, view(*METRICS, age=age))
    assert not result.degraded
    assert result.ids[0] == "e"
    assert result.snapshot_age_s == pytest.approx(max(0.0, age))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([None, None, None], ["a", "b", "c"]),
        ([1, 3, 2], ["b", "c", "a"]),
        ([5, 1, 5], ["a", "c", "b"]),  # ties keep input order
        ([-1, None, 2], ["c", "b", "a"]),  # None counts as 0
        ([0, None, 0.0], ["a", "b", "c"]),
    ],
)
def test_tpv_order(scores: list[float | None], expected: list[str]) -> None:
    result = tpv_order(cands("a", "b", "c", scores=scores), DegradedReason.NO_SNAPSHOT, "why", "TPV order: why")
    assert result.ids == [p.id for p in result.placements] == expected


# -- ties ----------------------------------------------------------------------------------------
QUEUE_ONLY = scoring_model(ScoringSettings(terms={"queue_wait": {"weight": 1, "scale_s": 60, "cap_s": 604800}}))


def test_equal_scores_break_by_tpv_score_then_input_order() -> None:
    # with queue_wait alone, identical figures give identical totals; tpv_score does not score here
    v = view(*(fig(i, queued=2, running=1, median_run_s=600) for i in "abcd"))
    result = run(cands("a", "b", "c", "d", scores=[None, 1, 3, 1]), v, model=QUEUE_ONLY)
    assert len({p.total for p in result.placements}) == 1
    assert result.ids == ["c", "b", "d", "a"]
    # and with no tag scores at all: input order, whatever it is
    for order in (["a", "b", "c", "d"], ["d", "b", "a", "c"]):
        assert run(cands(*order), v, model=QUEUE_ONLY).ids == order


def test_the_same_request_always_gives_the_same_answer() -> None:
    v = view(*(fig(i, queued=n, running=1) for i, n in zip("abcdef", [3, 1, 3, 0, 1, 3], strict=True)))
    candidates = cands(*"abcdef")
    first = run(candidates, v)
    assert all(run(candidates, v) == first for _ in range(5))


# -- nothing is ever dropped -----------------------------------------------------------------------
def test_a_job_that_fits_nowhere_still_gets_every_destination() -> None:
    # 1000 cores and 4 TB: nobody fits; each scores 0.5 x its free fraction, all are ranked
    # a: min(64/1000, 256/4000) = 0.064; b: min(16/1000, 64/4000) = 0.016; c: 0 free
    v = view(fig("b", queued=0, cpus_free=16, mem_free_gb=64), fig("a", queued=0, cpus_free=64, mem_free_gb=256),
             fig("c", queued=0, cpus_free=0, mem_free_gb=0))
    result = run(cands("c", "b", "a"), v, job=JobFacts("t", cores=1000, mem=4000))
    assert result.ids == ["a", "b", "c"]
    assert all(p.group == SCORED for p in result.placements)
    fit = {p.id: next(t for t in p.terms if t.term == "fit_now") for p in result.placements}
    assert {i: f.score for i, f in fit.items()} == pytest.approx({"a": 0.032, "b": 0.008, "c": 0.0})
    assert all(f.raw["fits"] is False for f in fit.values())


def test_fit_beats_a_shorter_queue_with_the_default_weights() -> None:
    # The 4-core 8 GB job; default queue 300 s; both run 600 s (1 - ln 11 / 9.21841 = 0.73988).
    # a: nothing queued, but 2 free cores hold no 4-core job: slots min(floor(2/4) = 0, 64/8 = 8) = 0,
    #    ahead = 0 + 1 - 0 = 1, wait = 300 + 1 x 600/3 = 500 -> 1 - ln 9.3333 / 9.21841 = 0.75770;
    #    does not fit: 0.5 x 2/4 = 0.25
    # b: 9 queued; slots min(floor(8/4) = 2, 8) = 2, ahead = 9 + 1 - 2 = 8,
    #    wait = 300 + 8 x 600/3 = 1900 -> 1 - ln 32.6667 / 9.21841 = 0.62180; fits: 1
    # total x 10 (locality neutral 1, no tag score 0.5):
    #    a = 3 x 0.75770 + 2 x 0.73988 + 3 x 0.25 + 1 + 0.5 = 6.00286
    #    b = 3 x 0.62180 + 2 x 0.73988 + 3 x 1    + 1 + 0.5 = 7.84516
    v = view(fig("a", queued=0, running=3, median_run_s=600, cpus_free=2, mem_free_gb=64),
             fig("b", queued=9, running=3, median_run_s=600, cpus_free=8, mem_free_gb=64))
    result = run(cands("a", "b"), v)
    assert result.ids == ["b", "a"]
    assert [p.total for p in result.placements] == pytest.approx([0.784516, 0.600286], abs=1e-5)


def test_empty_and_extra() -> None:
    assert run([], view(*METRICS)).ids == []
    assert run([], RankView()).ids == []
    # destinations in the snapshot that are not candidates are never added
    assert run(cands("zz", "a"), view(*METRICS)).ids == ["a", "zz"]


# -- tool stats lookup -----------------------------------------------------------------------------
def test_levels_reach_the_breakdown() -> None:
    # d has figures for the unversioned id; e only its destination medians; f nothing
    stats = {stats_field("tool_unversioned", "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp"):
             {"d": ToolFigures(count=5, median_queue_s=30, median_run_s=300)}}
    v = view(fig("d", queued=0), fig("e", queued=0, median_queue_s=60, median_run_s=600), fig("f", queued=0),
             tool_stats=stats)
    levels = {p.id: {t.term: t.level for t in p.terms} for p in run(cands("d", "e", "f"), v).placements}
    assert {i: (lv["queue_wait"], lv["run_time"]) for i, lv in levels.items()} == {
        "d": ("tool_unversioned", "tool_unversioned"),
        "e": ("destination", "destination"),
        "f": ("default", "default"),
    }


def test_config_coordinates_beat_the_request_context() -> None:
    # the data is in Paris. 'near' says (context) it is in Paris, but config puts it in Sydney;
    # 'far' says Sydney in its context, config puts it in London. Config wins: far first.
    data = [DatasetInput("paris", 1e12, (48.8566, 2.3522))]
    v = view(fig("near", queued=0), fig("far", queued=0))
    candidates = [Candidate("near", None, {"latitude": 48.8566, "longitude": 2.3522}),
                  Candidate("far", None, {"latitude": -33.8688, "longitude": 151.2093})]
    locations = {"near": (-33.8688, 151.2093), "far": (51.5074, -0.1278)}
    assert run(candidates, v, datasets=data, locations=locations).ids == ["far", "near"]
    assert run(candidates, v, datasets=data).ids == ["near", "far"]


def test_a_context_coordinate_that_is_no_number_is_unknown() -> None:
    # true/false in a TPV context (a YAML slip) is no latitude of 1: the place is unknown, not (1, 1).
    data = [DatasetInput("os", 1e9, (0.0, 0.0))]
    roomy = dict(queued=0, running=1, cpus_free=64, mem_free_gb=64, median_run_s=600)
    candidates = [Candidate("x", context={"latitude": True, "longitude": True}), Candidate("y")]
    result = run(candidates, view(fig("x", **roomy), fig("y", **roomy)), datasets=data)
    locality = {p.id: next(t for t in p.terms if t.term == "data_locality") for p in result.placements}
    assert {d: (t.score, t.raw) for d, t in locality.items()} == {
        d: (0.5, {"note": "destination location unknown"}) for d in ("x", "y")}


def test_a_very_negative_tag_score_still_ranks() -> None:
    # e^1000 would overflow: the API accepts tag scores down to -1e12
    v = view(fig("a", queued=0), fig("b", queued=0))
    assert run(cands("a", "b", scores=[-1000, 0]), v).ids == ["b", "a"]


# -- properties ------------------------------------------------------------------------------------
def _maybe(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


_count = st.integers(0, 200).map(float)
_coord = st.tuples(st.floats(-90, 90), st.floats(-180, 180))
_jobs = st.builds(JobFacts, tool_id=st.sampled_from(["upload1", JOB.tool_id]), cores=st.integers(1, 64).map(float),
                  mem=st.integers(0, 256).map(float), gpus=st.integers(0, 2).map(float))
_datasets = st.lists(st.builds(DatasetInput, object_store_id=st.just("s"), size=st.floats(0, 1e13),
                               location=_maybe(_coord)), max_size=3)
_UPLOAD = stats_field("tool", "upload1")


@st.composite
def _models(draw: st.DrawFn) -> ScoringModel:
    """The default model, or any weights: the properties hold for every weighting,
    and a term weighted alone makes a change in it decide the order; fit_now's
    unknown_score varies over its whole range."""
    if draw(st.booleans()):
        return MODEL
    weights = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 5.0]), min_size=5, max_size=5)
                   .filter(lambda ws: sum(ws) > 0))
    terms = {name: {**params, "weight": w} for (name, params), w in zip(DEFAULT_TERMS.items(), weights, strict=True)}
    terms["fit_now"]["unknown_score"] = draw(st.sampled_from([0.0, 0.3, 0.5, 0.75, 1.0]))
    return scoring_model(ScoringSettings(terms=terms))


@st.composite
def _figures(draw: st.DrawFn, dest_id: str, kinds: Sequence[str]) -> DestinationFigures:
    kind = draw(st.sampled_from(kinds))
    if kind == "config_only":
        return DestinationFigures(id=dest_id, in_config=True)
    age = draw(st.floats(0, 800)) if kind == "fresh" else draw(st.floats(901, 1e5))
    sources = {"destination-queue-run-time": NOW - age} if kind == "stats_only" else {LIVE: NOW - age}
    return DestinationFigures(
        id=dest_id,
        status=draw(st.sampled_from(["online", "unknown"] if kind == "fresh" and len(kinds) == 1
                                    else ["online", "online", "offline", "unknown"])),
        queued=draw(_maybe(_count)),
        running=draw(_maybe(_count)),
        cpus_free=draw(_maybe(st.integers(-4, 128).map(float))),
        mem_free_gb=draw(_maybe(st.floats(0, 512))),
        gpus_free=draw(_maybe(st.integers(0, 4).map(float))),
        median_queue_s=draw(_maybe(st.floats(0, 1e5))),
        median_run_s=draw(_maybe(st.floats(0, 1e5))),
        sources=sources,
        live_at=None if kind == "stats_only" else NOW - age,
    )


@st.composite
def _scenarios(draw: st.DrawFn, all_scored: bool = False) -> dict[str, Any]:
    """Candidates, a snapshot and a request. With ``all_scored`` every candidate has
    fresh figures in a usable snapshot (so a change in its figures can matter);
    otherwise anything goes: unknown ids, offline, stale, config-only, no or old snapshot."""
    pool = [f"d{i}" for i in range(10)]
    ids = draw(st.lists(st.sampled_from(pool), min_size=2 if all_scored else 0, max_size=10, unique=True))
    candidates = [Candidate(i, draw(_maybe(st.integers(-5, 5).map(float))),
                            draw(_maybe(st.fixed_dictionaries({"latitude": st.floats(-90, 90),
                                                               "longitude": st.floats(-180, 180)}))))
                  for i in ids]
    if all_scored:
        known = ids
        kinds: Sequence[str] = ["fresh"]
        age: float | None = draw(st.sampled_from([0.0, 100.0]))
    else:
        # some candidates are unknown to the snapshot; the snapshot knows some non-candidates
        known = draw(st.lists(st.sampled_from([*pool, "x1", "x2"]), unique=True))
        kinds = ["fresh", "fresh", "fresh", "stale", "stats_only", "config_only"]
        age = draw(st.sampled_from([None, 0.0, 100.0, MAX_SNAPSHOT_AGE + 1]))
    destinations = {i: draw(_figures(i, kinds)) for i in known}
    with_stats = draw(st.lists(st.sampled_from(known), unique=True)) if known else []
    tool_stats = {_UPLOAD: {i: ToolFigures(count=1, median_queue_s=draw(st.floats(0, 1e4)),
                                           median_run_s=draw(st.floats(0, 1e4))) for i in with_stats}}
    return {
        "candidates": candidates,
        "view": RankView(meta=None if age is None else SnapshotMeta(created_at=NOW - age),
                         destinations=destinations, tool_stats=tool_stats),
        "job": draw(_jobs),
        "datasets": draw(_datasets),
        "locations": draw(st.dictionaries(st.sampled_from(ids), _coord) if ids else st.just({})),
        "model": draw(_models()),
    }


_any_scenario = st.one_of(_scenarios(), _scenarios(all_scored=True))


def _rank(s: dict[str, Any], v: RankView | None = None, locations: Mapping[str, tuple[float, float]] | None = None,
          ) -> list[str]:
    return run(s["candidates"], v or s["view"], job=s["job"], datasets=s["datasets"], model=s["model"],
               locations=s["locations"] if locations is None else locations).ids


@settings(max_examples=300, deadline=None)
@given(_any_scenario)
def test_property_output_is_a_permutation_of_the_candidates(s: dict[str, Any]) -> None:
    ids = _rank(s)
    assert sorted(ids) == sorted(c.id for c in s["candidates"])
    assert len(ids) == len(s["candidates"])


def _with(v: RankView, dest_id: str, **changes: Any) -> RankView:
    d = v.destinations[dest_id]
    return v.model_copy(update={"destinations": {**v.destinations, dest_id: d.model_copy(update=changes)}})


def _target(s: dict[str, Any], data: st.DataObject, attr: str) -> str | None:
    with_figure = [c.id for c in s["candidates"]
                   if c.id in s["view"].destinations and getattr(s["view"].destinations[c.id], attr) is not None]
    return data.draw(st.sampled_from(with_figure)) if with_figure else None


@settings(max_examples=400, deadline=None)
@given(_any_scenario, st.data())
def test_property_fewer_queued_never_moves_down(s: dict[str, Any], data: st.DataObject) -> None:
    target = _target(s, data, "queued")
    if target is None:
        return
    lower = data.draw(st.floats(0, s["view"].destinations[target].queued))
    before = _rank(s).index(target)
    assert _rank(s, _with(s["view"], target, queued=lower)).index(target) <= before


@settings(max_examples=400, deadline=None)
@given(_any_scenario, st.data(), st.sampled_from(["cpus_free", "mem_free_gb"]))
def test_property_more_free_capacity_never_moves_down(s: dict[str, Any], data: st.DataObject, attr: str) -> None:
    target = _target(s, data, attr)
    if target is None:
        return
    free = getattr(s["view"].destinations[target], attr)
    higher = data.draw(st.floats(free, free + 1000))
    before = _rank(s).index(target)
    assert _rank(s, _with(s["view"], target, **{attr: higher})).index(target) <= before


def _mean_km(location: tuple[float, float], datasets: Sequence[DatasetInput]) -> float:
    located = [d for d in datasets if d.location is not None]
    total = sum(d.size for d in located)
    distances = [great_circle_km(*location, *d.location) for d in located]  # type: ignore[misc]
    if total > 0:
        return sum(d.size * km for d, km in zip(located, distances, strict=True)) / total
    return sum(distances) / len(distances)


@settings(max_examples=400, deadline=None)
@given(_any_scenario, st.data(), _coord, _coord)
def test_property_nearer_data_never_moves_down(s: dict[str, Any], data: st.DataObject,
                                               a: tuple[float, float], b: tuple[float, float]) -> None:
    if not s["candidates"] or not any(d.location is not None for d in s["datasets"]):
        return
    target = data.draw(st.sampled_from([c.id for c in s["candidates"]]))
    # of two places, the one nearer the data (size-weighted mean great-circle distance)
    near, far = sorted([a, b], key=lambda loc: _mean_km(loc, s["datasets"]))
    at_far = _rank(s, locations={**s["locations"], target: far}).index(target)
    at_near = _rank(s, locations={**s["locations"], target: near}).index(target)
    assert at_near <= at_far
