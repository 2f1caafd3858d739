"""The rank core scores all candidates at once (``batch.py``, each term's
``values``); the one-candidate path (each term's ``value``/``score``) is
what explanations show. Over arbitrary snapshots, requests and in-flight
charges the two agree: every candidate in the same group, with the same
total (to a few units in the last place: numpy's log1p/exp/asin may round
differently from libm's), in the order those totals give, and the same
expected run time for the first. The reference below is the rank core as it
was, one candidate at a time."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.core.batch import Distances, with_fallbacks
from tpv_broker.core.columns import DestinationColumns, ToolColumns
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inflight import live_charges, with_charges
from tpv_broker.core.inputs import Candidate, CandidateRows, DatasetInput, JobFacts
from tpv_broker.core.models import Charge, DestinationFigures, RankView, SlotShape, SnapshotMeta, ToolFigures
from tpv_broker.core.ranking import (
    _GROUP_RANK,
    SCORED,
    _tpv_key,
    _unscored_group,
    rank,
    tool_stats_for,
)
from tpv_broker.core.scoring import ScoringModel
from tpv_broker.core.terms import DEFAULT_TERMS, Defaults, TermInput, build_terms, candidate_location, with_fallback
from tpv_broker.core.tool_ids import stats_field, tool_id_forms

NOW = 1_700_000_000.0
TOOL_ID = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4"
FIELDS = [stats_field(level, form) for level, form in tool_id_forms(TOOL_ID)]
OTHER_TOOL_ID = "toolshed.g2.bx.psu.edu/repos/iuc/bwa/bwa/0.7.17"
ALL_TERMS = DEFAULT_TERMS | {"finish_time": {"weight": 2.0, "scale_s": 60.0, "cap_s": 604800.0}}
DEFAULTS = Defaults(queue_s=300, run_s=3600)
# Relative: a few units in the last place of a total in [0, 1].
TOLERANCE = 1e-12


def model_of(terms: dict[str, dict[str, float]]) -> ScoringModel:
    return ScoringModel(build_terms(terms), DEFAULTS, 900)


def reference_rank(candidates: Sequence[Candidate], job: JobFacts, datasets: Sequence[DatasetInput],
                   view: RankView, model: ScoringModel, locations: dict[str, tuple[float, float]],
                   by_work: bool) -> list[tuple[str, str, float | None, float | None]]:
    """(id, group, total, expected run time) in order, one candidate at a time."""
    levels = [(level, stats_field(level, form)) for level, form in tool_id_forms(job.tool_id)]
    in_flight = live_charges(view.charges, view.destinations, 30.0) if view.charges else {}
    keyed = []
    for index, cand in enumerate(candidates):
        figures = view.destinations.get(cand.id)
        unscored = _unscored_group(figures, NOW, model.max_metrics_age_s)
        if unscored is not None:
            keyed.append(((_GROUP_RANK[unscored[0]], *_tpv_key(index, cand.tpv_score)),
                          (cand.id, unscored[0], None, None)))
            continue
        assert figures is not None
        x = TermInput(job, cand, with_charges(figures, in_flight.get(cand.id, ()), by_work),
                      tool_stats_for(view, levels, cand.id), candidate_location(cand, locations.get(cand.id)),
                      datasets, model.defaults)
        total = model.total(x)
        run = with_fallback(x, "median_run_s", x.figures.median_run_s, x.defaults.run_s)[0]
        keyed.append(((0, -total, *_tpv_key(index, cand.tpv_score)), (cand.id, SCORED, total, run)))
    keyed.sort(key=lambda kp: kp[0])
    return [p for _, p in keyed]


maybe = lambda s: st.none() | s  # noqa: E731
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


@st.composite
def scenario(draw: Any) -> dict[str, Any]:
    ids = [f"d{i}" for i in range(draw(st.integers(0, 12)))]
    dests = {d: draw(destination(d)) for d in ids}
    tool_stats = {}
    for field in FIELDS:
        known = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
        tool_stats[field] = {d: ToolFigures(count=draw(amount), median_queue_s=draw(maybe(amount)),
                                            median_run_s=draw(maybe(amount))) for d in known}
    pool = ids + ["unknown1", "unknown2"]
    asked = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
    candidates = [Candidate(d, draw(maybe(st.floats(-50, 50) | st.sampled_from([0.0, 1.0, 2.0]))),
                            draw(st.none() | st.builds(lambda c: {"latitude": c[0], "longitude": c[1]}, coord)
                                 | st.just({"latitude": True, "longitude": 5}) | st.just({"latitude": 10**400})))
                  for d in asked]
    charges = [Charge(draw(st.sampled_from(pool)), draw(st.floats(0.5, 16)), draw(st.floats(0, 64)),
                      NOW - draw(st.floats(0, 600)), None, draw(maybe(st.floats(1, 1e4))))
               for _ in range(draw(st.integers(0, 6)))]
    return {
        "candidates": candidates,
        "job": JobFacts(TOOL_ID, cores=draw(st.floats(0.1, 64)), mem=draw(st.floats(0, 512)),
                        gpus=draw(st.sampled_from([0.0, 0.0, 1.0, 2.0]))),
        "datasets": draw(st.lists(st.builds(DatasetInput, object_store_id=st.just("s"),
                                            size=st.sampled_from([0.0, 1e9]) | st.floats(0, 1e12),
                                            location=maybe(coord)), max_size=3)),
        "view": RankView(meta=SnapshotMeta(created_at=NOW - 5), destinations=dests, tool_stats=tool_stats,
                         charges=charges),
        "locations": draw(st.dictionaries(st.sampled_from(pool), coord, max_size=3)),
        "by_work": draw(st.booleans()),
    }


def check_same(s: dict[str, Any], model: ScoringModel, view: RankView | None = None) -> None:
    expected = reference_rank(s["candidates"], s["job"], s["datasets"], s["view"], model, s["locations"],
                              s["by_work"])
    got = rank(s["candidates"], s["job"], s["datasets"], view or s["view"], NOW, model, 300, s["locations"],
               30.0, s["by_work"], batch_from=0)
    assert not got.degraded
    totals = {e[0]: e for e in expected}
    placed = [(p.id, p.group, p.total) for p in got.placements]
    assert sorted(p[0] for p in placed) == sorted(totals)
    for dest_id, group, total in placed:
        assert group == totals[dest_id][1]
        if total is None:
            assert totals[dest_id][2] is None
        else:
            assert total == pytest.approx(totals[dest_id][2], rel=TOLERANCE, abs=TOLERANCE)
    # The order: the reference's, up to totals within the tolerance of each other.
    assert got.ids == [p[0] for p in placed]
    for a, b in zip(expected, expected[1:]):
        if not (a[1] == b[1] == SCORED and math.isclose(a[2], b[2], rel_tol=TOLERANCE, abs_tol=TOLERANCE)):
            assert got.ids.index(a[0]) < got.ids.index(b[0]), (a, b)
    first = expected[0] if expected else None
    assert got.first_run_s == (first[3] if first is not None else None)
    assert got.first_scored_id == (first[0] if first is not None and first[1] == SCORED else None)


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_all_at_once_ranks_as_one_at_a_time(s: dict[str, Any]) -> None:
    check_same(s, model_of(ALL_TERMS))


@pytest.mark.parametrize("term", sorted(ALL_TERMS))
@settings(max_examples=120, deadline=None)
@given(s=scenario())
def test_each_term_alone_scores_as_one_at_a_time(term: str, s: dict[str, Any]) -> None:
    check_same(s, model_of({term: ALL_TERMS[term]}))


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_columns_kept_by_the_reader_rank_as_columns_built_per_request(s: dict[str, Any]) -> None:
    """The store keeps a snapshot's columns for all its destinations, and
    each asked tool field's columns: the same answer as built on the spot."""
    v: RankView = s["view"]
    cols = DestinationColumns.build(v.destinations)
    kept = v.model_copy(update={"columns": cols, "tool_columns": {
        f: ToolColumns.build(per_dest, cols) for f, per_dest in v.tool_stats.items()}})
    check_same(s, model_of(ALL_TERMS), kept)


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data())
def test_kept_columns_give_each_tool_its_own_times(s: dict[str, Any], data: Any) -> None:
    """A worker's kept columns serve every request until the next snapshot,
    and keep each tool's times, fallbacks applied
    (``DestinationColumns.tool_times``): requests for two tools in turn,
    on the same columns, each rank as that tool alone."""
    v: RankView = s["view"]
    ids = list(v.destinations)
    other = {stats_field(level, form): {
        d: ToolFigures(count=1, median_queue_s=data.draw(maybe(amount)), median_run_s=data.draw(maybe(amount)))
        for d in (data.draw(st.lists(st.sampled_from(ids), unique=True)) if ids else [])}
        for level, form in tool_id_forms(OTHER_TOOL_ID)}
    both = v.model_copy(update={"tool_stats": v.tool_stats | other})
    cols = DestinationColumns.build(both.destinations)
    kept = both.model_copy(update={"columns": cols, "tool_columns": {
        f: ToolColumns.build(per_dest, cols) for f, per_dest in both.tool_stats.items()}})
    fastp = s | {"view": both}
    bwa = fastp | {"job": dataclasses.replace(s["job"], tool_id=OTHER_TOOL_ID)}
    for case in (fastp, bwa, fastp):
        check_same(case, model_of(ALL_TERMS), kept)


@settings(max_examples=200, deadline=None)
@given(scenario(), st.booleans(), st.data())
def test_request_rows_rank_as_candidate_objects(s: dict[str, Any], all_at_once: bool, data: Any) -> None:
    """The API hands the rank core its validated JSON objects as they are
    (``CandidateRows``, read a column at a time): the very same answer as
    the same candidates as objects, an absent key as its null."""
    rows = []
    for c in s["candidates"]:
        row: dict[str, Any] = {"id": c.id}
        for key, value in (("tpv_score", c.tpv_score), ("context", c.context)):
            if value is not None or data.draw(st.booleans()):
                row[key] = value
        rows.append(row)
    args = (s["job"], s["datasets"], s["view"], NOW, model_of(ALL_TERMS), 300, s["locations"], 30.0, s["by_work"])
    batch_from = 0 if all_at_once else 10**9
    want = rank(s["candidates"], *args, batch_from=batch_from)
    got = rank(CandidateRows(rows), *args, batch_from=batch_from)
    assert got.ids == want.ids
    assert (got.first_run_s, got.first_scored_id) == (want.first_run_s, want.first_scored_id)
    assert [(p.id, p.group, p.total, p.reason) for p in got.placements] == \
        [(p.id, p.group, p.total, p.reason) for p in want.placements]


def test_the_answer_needs_no_placement_built() -> None:
    """ids and the first placement are known without building the
    placements (a request that is not explained never builds them)."""
    v = RankView(meta=SnapshotMeta(created_at=NOW), destinations={
        d: DestinationFigures(id=d, queued=q, running=1.0, cpus_free=8.0, mem_free_gb=64.0, live_at=NOW,
                              sources={"queue_by_destination": NOW}) for d, q in (("a", 50.0), ("b", 0.0))})
    got = rank([Candidate("a"), Candidate("b"), Candidate("c")], JobFacts("t"), [], v, NOW, model_of(ALL_TERMS),
               300, {}, batch_from=0)
    assert got._placements is None
    assert got.ids == ["b", "a", "c"] and got.first_scored_id == "b"
    assert got._placements is None
    assert [p.group for p in got.placements] == [SCORED, SCORED, "no_metrics"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(maybe(amount), maybe(amount), maybe(amount)), min_size=1, max_size=8), amount)
def test_fallbacks_pick_the_most_specific_known_figure(rows: list[tuple[Any, ...]], default: float) -> None:
    nan = math.nan
    tool, short, dest = ([nan if r[k] is None else r[k] for r in rows] for k in range(3))
    got = with_fallbacks([np.array(tool), np.array(short)], np.array(dest), default)
    for i, r in enumerate(rows):
        assert got[i] == next((v for v in r if v is not None), default)


@settings(max_examples=300, deadline=None)
@given(st.lists(coord, min_size=1, max_size=8), st.lists(coord, min_size=1, max_size=4))
def test_distances_as_one_at_a_time(here: list[tuple[float, float]], points: list[tuple[float, float]]) -> None:
    """From the same candidates to several points, each point again after
    the others (inputs in one object store share their distances)."""
    distances = Distances(np.array([h[0] for h in here]), np.array([h[1] for h in here]))
    for there in [*points, *points]:
        got = distances.to(*there)
        for i, h in enumerate(here):
            assert got[i] == pytest.approx(great_circle_km(h[0], h[1], *there), rel=1e-9, abs=1e-6)
