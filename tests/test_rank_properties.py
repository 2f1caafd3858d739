"""Properties of the one rank path (``ranking.rank``), over arbitrary
snapshots, requests and in-flight charges: the breakdown is read from the
very computation that ordered the candidates, the order is the one the
totals give, and the shortcuts the API takes (candidates as JSON rows,
columns kept per snapshot, placements built only when asked for, parsed
values kept per bytes) change nothing but speed."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.config.terms import DEFAULT_TERMS
from tpv_broker.core.charges import Charge, ChargeLoad, ChargeState
from tpv_broker.core.columns import DestinationColumns
from tpv_broker.core.inputs import Candidate, Candidates, DatasetInput, JobFacts
from tpv_broker.core.models import (
    DestinationFigures,
    RankView,
    SlotShape,
    SnapshotMeta,
    ToolFigures,
)
from tpv_broker.core.ranking import rank, tpv_order
from tpv_broker.core.result import DegradedReason, Group, RankResult
from tpv_broker.core.scoring import Defaults, ScoringModel
from tpv_broker.core.terms import build_terms
from tpv_broker.core.tool_ids import stats_field, tool_id_forms
from tpv_broker.store.snapshots import _ParsedCache

from .helpers import charged
from .termkit import RecordingModel

NOW = 1_700_000_000.0
TOOL_ID = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4"
OTHER_TOOL_ID = "toolshed.g2.bx.psu.edu/repos/iuc/bwa/bwa/0.7.17"
FIELDS = [stats_field(level, form) for level, form in tool_id_forms(TOOL_ID)]
OTHER_FIELDS = [stats_field(level, form) for level, form in tool_id_forms(OTHER_TOOL_ID)]
ALL_TERMS = DEFAULT_TERMS | {"finish_time": {"weight": 2.0, "scale_s": 60.0, "cap_s": 604800.0}}
DEFAULTS = Defaults(queue_s=300, run_s=3600)
# Relative: a few units in the last place of a total in [0, 1].
TOLERANCE = 1e-12


def model_of(terms: dict[str, dict[str, float]], defaults: Defaults = DEFAULTS) -> RecordingModel:
    return RecordingModel(build_terms(terms), defaults, 900)


def maybe(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


amount = st.floats(min_value=0, max_value=1e5, allow_nan=False)
coord = st.tuples(st.floats(-90, 90), st.floats(-180, 180))
shape = st.builds(SlotShape, count=st.floats(0, 8), cpus=maybe(st.floats(0, 64)), mem_gb=maybe(st.floats(0, 512)),
                  gpus=maybe(st.floats(0, 4)))


@st.composite
def destination(draw: Any, dest_id: str) -> DestinationFigures:
    kind = draw(st.sampled_from(["live", "live", "live", "live", "stale", "offline", "stats_only", "config_only"]))
    if kind == "config_only":
        return DestinationFigures(id=dest_id, in_config=True)
    live_at = None if kind == "stats_only" else NOW - (draw(st.floats(1000, 5000)) if kind == "stale"
                                                        else draw(st.floats(0, 800)))
    return DestinationFigures(
        id=dest_id, status="offline" if kind == "offline" else draw(st.sampled_from(["online", "unknown"])),
        queued=draw(maybe(amount)), running=draw(maybe(amount)), cpus_total=draw(maybe(st.floats(0, 1e4))),
        cpus_free=draw(maybe(st.floats(-5, 1e4))), mem_free_gb=draw(maybe(st.floats(-5, 1e5))),
        gpus_free=draw(maybe(st.floats(0, 16))), median_queue_s=draw(maybe(amount)),
        median_run_s=draw(maybe(amount)),
        slot_shapes=draw(st.none() | st.none() | st.lists(shape, max_size=3)),
        live_at=live_at, sources={"queue_by_destination": live_at or NOW - 100},
    )


def tool_stats(draw: Any, ids: list[str], fields: list[str]) -> dict[str, dict[str, ToolFigures]]:
    out = {}
    for field in fields:
        known = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
        out[field] = {d: ToolFigures(count=draw(amount), median_queue_s=draw(maybe(amount)),
                                     median_run_s=draw(maybe(amount))) for d in known}
    return out


@st.composite
def scenario(draw: Any) -> dict[str, Any]:
    ids = [f"d{i}" for i in range(draw(st.integers(0, 12)))]
    dests = {d: draw(destination(d)) for d in ids}
    pool = [*ids, "unknown1", "unknown2"]
    asked = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
    candidates = [Candidate(d, draw(maybe(st.floats(-50, 50) | st.sampled_from([0.0, 1.0, 2.0]))),
                            draw(st.none() | st.builds(lambda c: {"latitude": c[0], "longitude": c[1]}, coord)
                                 | st.just({"latitude": True, "longitude": 5}) | st.just({"latitude": 10**400})))
                  for d in asked]
    # Halves, as jobs ask for them: sums with and without a charge are then
    # exact, and the properties below compare answers, not rounding.
    halves = st.integers(0, 128).map(lambda n: n / 2)
    charges = [Charge(draw(st.sampled_from(pool)), draw(halves.filter(bool)), draw(halves),
                      NOW - draw(st.floats(0, 600)), f"j{k}", draw(maybe(st.integers(1, 10_000).map(float))))
               for k in range(draw(st.integers(0, 6)))]
    own = draw(st.sampled_from([None, *charges]))
    return {
        "candidates": candidates,
        "job": JobFacts(TOOL_ID, cores=draw(st.floats(0.1, 64)), mem=draw(st.floats(0, 512)),
                        gpus=draw(st.sampled_from([0.0, 0.0, 1.0, 2.0]))),
        "datasets": draw(st.lists(st.builds(DatasetInput, object_store_id=st.just("s"),
                                            size=st.sampled_from([0.0, 1e9]) | st.floats(0, 1e12),
                                            location=maybe(coord)), max_size=3)),
        "view": RankView(meta=SnapshotMeta(created_at=NOW - 5), destinations=dests,
                         tool_stats=tool_stats(draw, ids, FIELDS), charges=as_redis_holds(charges, own)),
        "charges": charges,
        "own": own,
        "locations": draw(st.dictionaries(st.sampled_from(pool), coord, max_size=3)),
        "by_work": draw(st.booleans()),
    }


CHARGE_MAX_AGE_S = 300.0


def as_redis_holds(charges: list[Charge], own: Charge | None) -> ChargeState:
    """The charges as a rank read finds them in Redis before anything
    removed those past their age: all in the loads, those past their age
    also in ``expired``."""
    loads: dict[str, ChargeLoad] = {}
    for c in charges:
        loads[c.destination] = loads.get(c.destination, ChargeLoad()).plus(c)
    return ChargeState(loads, [c for c in charges if c.charged_at < NOW - CHARGE_MAX_AGE_S], own)


def rank_scenario(s: dict[str, Any], model: ScoringModel, candidates: Any = None,
                  view: RankView | None = None) -> RankResult:
    return rank(s["candidates"] if candidates is None else candidates, s["job"], s["datasets"],
                view or s["view"], NOW, model, 300, s["locations"], CHARGE_MAX_AGE_S, s["by_work"])


# -- the breakdown is the computation that ordered ------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(scenario())
def test_each_placement_is_explained_by_its_terms_own_arrays(s: dict[str, Any]) -> None:
    """A scored placement's breakdown: each term's score as ``evaluate``
    gave it over the batch, its figures as the term's own ``explain`` reads
    them from those arrays, contributions that add up to the total."""
    model = model_of(ALL_TERMS)
    result = rank_scenario(s, model)
    scored = [p for p in result.placements if p.group is Group.SCORED]
    if not scored:
        return
    assert model.last is not None
    batch, values = model.last.batch, model.last.values
    assert sorted(batch.ids) == sorted(p.id for p in scored)
    for p in scored:
        k = list(batch.ids).index(p.id)
        assert p.total is not None and 0.0 <= p.total <= 1.0
        assert p.total == float(model.last.totals[k])
        assert sum(t.contribution for t in p.terms) == pytest.approx(p.total, rel=TOLERANCE, abs=TOLERANCE)
        assert [t.term for t in p.terms] == [term.name for term, _ in model.terms]
        for (term, weight), v, line in zip(model.terms, values, p.terms, strict=True):
            # As the combiner runs terms: a tiny job size overflows free/need
            # to inf on purpose (then capped), which numpy would warn about.
            with np.errstate(over="ignore"):
                again = term.evaluate(batch)
            assert line.score == float(v.scores[k]) == float(again.scores[k])
            assert line.contribution == weight * line.score / model.total_weight
            detail = term.explain(batch, again, k)
            assert (line.raw, line.level, line.summary) == (detail.raw, detail.level, detail.summary)
        assert p.reason.startswith(f"score {p.total * 100:.1f}: " + ", ".join(t.summary for t in p.terms if t.summary))


@settings(max_examples=200, deadline=None)
@given(scenario())
def test_a_term_scores_the_same_alone_and_among_the_others(s: dict[str, Any]) -> None:
    """Terms share derived figures (finish_time reads queue_wait's waits):
    sharing changes no term's score or figures."""
    together = {p.id: p for p in rank_scenario(s, model_of(ALL_TERMS)).placements if p.group is Group.SCORED}
    for i, name in enumerate(ALL_TERMS):
        alone = rank_scenario(s, model_of({name: ALL_TERMS[name]})).placements
        for p in alone:
            if p.group is Group.SCORED:
                (line,) = p.terms
                both = together[p.id].terms[i]
                assert (line.score, line.raw, line.level, line.summary) == (
                    both.score, both.raw, both.level, both.summary)


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_the_order_is_the_one_the_groups_and_totals_give(s: dict[str, Any]) -> None:
    """Every candidate once; by group, then total (best first), then TPV's
    order (tag score, then input order); the first's run time is its
    run_time figure, and it is charged only if it was scored."""
    result = rank_scenario(s, model_of(ALL_TERMS))
    assert not result.degraded
    assert result.ids == [p.id for p in result.placements]
    assert sorted(result.ids) == sorted(c.id for c in s["candidates"])
    position = {c.id: i for i, c in enumerate(s["candidates"])}
    tag = {c.id: c.tpv_score or 0.0 for c in s["candidates"]}
    keys = [(p.group.place, -(p.total or 0.0), -tag[p.id], position[p.id]) for p in result.placements]
    assert keys == sorted(keys)
    first = result.placements[0] if result.placements else None
    if first is not None and first.group is Group.SCORED:
        run = next(t for t in first.terms if t.term == "run_time")
        assert (result.first_scored_id, result.first_run_s) == (first.id, run.raw["median_run_s"])
    else:
        assert (result.first_scored_id, result.first_run_s) == (None, None)


# -- in-flight charges ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(scenario())
def test_only_other_jobs_live_charges_count(s: dict[str, Any]) -> None:
    """The answer is the one Redis would give had it already removed the
    charges past their age and had the job never been charged: what
    Redis has not removed yet, and the job's own charge, never count."""
    counted = [c for c in s["charges"] if c.charged_at >= NOW - CHARGE_MAX_AGE_S and c is not s["own"]]
    clean = s["view"].model_copy(update={"charges": as_redis_holds(counted, None)})
    model = model_of(ALL_TERMS)
    assert rank_scenario(s, model) == rank_scenario(s, model, view=clean)


def test_a_charge_takes_free_capacity_then_queues() -> None:
    """Three 4-core charges on 10 free cores: 10/12 of each fits, the rest
    (half a job) queues; by work, what queues weighs its core-seconds in
    typical jobs (4 busy cores / 2 running x 600 s = 1,200 core-s)."""
    d = DestinationFigures(id="a", cpus_total=14, cpus_free=10, mem_free_gb=100, queued=1, running=2,
                           median_run_s=600)
    load = ChargeLoad()
    for _ in range(3):
        load = load.plus(Charge("a", 4, 8, NOW, run_s=600))
    assert charged(d, load) == pytest.approx((0, 80, 1.5))
    # 3 x 4 cores x 600 s = 7,200 core-s = 6 typical jobs, of which 2/12 queue.
    assert charged(d, load, by_work=True) == pytest.approx((0, 80, 2.0))
    # memory short instead: 12 GB free for 24 GB charged -> half fits
    assert charged(d.model_copy(update={"mem_free_gb": 12.0}), load) == pytest.approx((4, 0, 2.5))
    # nothing known about capacity: every charged job queues
    assert charged(DestinationFigures(id="a", queued=2), load) == (None, None, 5)


# -- the API's shortcuts change nothing but speed -----------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(scenario(), st.data())
def test_request_rows_rank_as_candidate_objects(s: dict[str, Any], data: Any) -> None:
    """The API hands the rank core its validated JSON objects as they are
    (``Candidates.from_rows``, read a column at a time): the very same
    answer as the same candidates as objects, an absent key as its null."""
    rows = []
    for c in s["candidates"]:
        row: dict[str, Any] = {"id": c.id}
        for key, value in (("tpv_score", c.tpv_score), ("context", c.context)):
            if value is not None or data.draw(st.booleans()):
                row[key] = value
        rows.append(row)
    model = model_of(ALL_TERMS)
    assert rank_scenario(s, model, Candidates.from_rows(rows)) == rank_scenario(s, model)


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_a_tenants_own_names_rank_as_the_snapshots(s: dict[str, Any]) -> None:
    """A Galaxy that names every destination its own way (aliases) gets
    the answer the snapshot's names get, in its names."""
    model = model_of(ALL_TERMS)
    theirs = Candidates.of(s["candidates"])
    own = Candidates([f"own.{i}" for i in theirs.ids], theirs.tpv_scores, theirs.contexts).as_seen_by(
        {f"own.{i}": i for i in theirs.ids}, ())
    want, got = rank_scenario(s, model), rank_scenario(s, model, own)
    assert got.ids == [f"own.{i}" for i in want.ids]
    assert [(p.group, p.total, p.reason) for p in got.placements] == [
        (p.group, p.total, p.reason) for p in want.placements]
    assert (got.first_run_s, got.first_scored) == (want.first_run_s, want.first_scored)


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data())
def test_kept_columns_rank_as_columns_built_per_request(s: dict[str, Any], data: Any) -> None:
    """A worker builds a snapshot's columns once (``RankView.columns``) and
    serves every request from them until the next snapshot, keeping each
    tool's times, fallbacks applied: requests for two tools in turn, and
    with other default times, each rank as on columns built for it alone."""
    v: RankView = s["view"]
    both = v.model_copy(update={"tool_stats": v.tool_stats | tool_stats(data.draw, list(v.destinations),
                                                                         OTHER_FIELDS)})
    kept = both.model_copy(update={"columns": DestinationColumns.build(both.destinations)})
    fastp = s | {"view": both}
    bwa = fastp | {"job": dataclasses.replace(s["job"], tool_id=OTHER_TOOL_ID)}
    other_defaults = model_of(ALL_TERMS, Defaults(queue_s=60, run_s=600))
    for case, model in ((fastp, model_of(ALL_TERMS)), (bwa, model_of(ALL_TERMS)), (fastp, other_defaults),
                        (fastp, model_of(ALL_TERMS))):
        assert rank_scenario(case, model, view=kept) == rank_scenario(case, model)


def test_the_answer_needs_no_placement_built() -> None:
    """ids, the first scored id and its run time are known without building
    the placements (a request that is not explained never builds them)."""
    v = RankView(meta=SnapshotMeta(created_at=NOW), destinations={
        d: DestinationFigures(id=d, queued=q, running=1.0, cpus_free=8.0, mem_free_gb=64.0, median_run_s=r,
                              live_at=NOW, sources={"queue_by_destination": NOW})
        for d, q, r in (("a", 50.0, 60.0), ("b", 0.0, 120.0))})
    got = rank([Candidate("a"), Candidate("b"), Candidate("c")], JobFacts("t"), [], v, NOW, model_of(ALL_TERMS),
               300, {})
    assert (got.ids, got.first_scored_id, got.first_run_s) == (["b", "a", "c"], "b", 120.0)
    assert "placements" not in vars(got)
    assert [p.group for p in got.placements] == [Group.SCORED, Group.SCORED, Group.NO_METRICS]
    degraded = tpv_order([Candidate("a", 1.0), Candidate("b", 2.0)], DegradedReason.NO_SNAPSHOT, "why", "TPV order")
    assert (degraded.ids, degraded.first_scored_id) == (["b", "a"], None)
    assert "placements" not in vars(degraded)


def test_parsed_values_are_reused_for_the_same_bytes_only() -> None:
    calls: list[bytes] = []

    def parse(raw: bytes) -> Any:
        calls.append(raw)
        return {"parsed": raw}

    cache = _ParsedCache(max_entries=2)
    a1 = cache.get(b'{"a":1}', parse)
    assert cache.get(b'{"a":1}', parse) is a1
    assert cache.get(b'{"a":2}', parse) == {"parsed": b'{"a":2}'}
    assert calls == [b'{"a":1}', b'{"a":2}']
    cache.get(b'{"a":3}', parse)  # full: cleared, never grows past its bound
    assert len(cache.entries) <= 2
