"""The rank path's shortcuts change nothing but speed: each term's
``value`` is exactly its ``score(...).score``, the model's ``total`` exactly
``score(...).total``, a scored placement's reason and breakdown are built on
first use and equal the eager ones, and parsed snapshot values are reused
only for identical bytes."""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.core.inputs import Candidate, DatasetInput, JobFacts
from tpv_broker.core.models import (
    DestinationFigures,
    RankView,
    SnapshotMeta,
    ToolFigures,
)
from tpv_broker.core.ranking import SCORED, rank
from tpv_broker.core.scoring import ScoringModel
from tpv_broker.store.snapshots import _ParsedCache
from tpv_broker.core.terms import (
    DEFAULT_TERMS,
    Defaults,
    TermInput,
    TermParams,
    TermScore,
    build_terms,
)
from tpv_broker.core.tool_ids import TOOL, TOOL_SHORT

MODEL = ScoringModel(build_terms(DEFAULT_TERMS), Defaults(queue_s=300, run_s=3600), 900)

maybe = lambda s: st.none() | s
amount = st.floats(min_value=0, max_value=1e5, allow_nan=False)
coord = st.tuples(st.floats(-90, 90), st.floats(-180, 180))
figures = st.builds(
    DestinationFigures,
    id=st.just("d"),
    queued=maybe(amount), running=maybe(amount), cpus_free=maybe(st.floats(-5, 1e4)),
    mem_free_gb=maybe(st.floats(-5, 1e5)), gpus_free=maybe(st.floats(0, 16)),
    median_queue_s=maybe(amount), median_run_s=maybe(amount),
)
tool_figures = st.builds(ToolFigures, count=amount, median_queue_s=maybe(amount), median_run_s=maybe(amount))
inputs = st.builds(
    TermInput,
    job=st.builds(JobFacts, tool_id=st.just("t"), cores=st.floats(0.1, 64), mem=st.floats(0, 512),
                  gpus=st.sampled_from([0.0, 0.0, 1.0, 2.0])),
    candidate=st.builds(Candidate, id=st.just("d"), tpv_score=maybe(st.floats(-50, 50))),
    figures=figures,
    tool_stats=st.lists(st.tuples(st.sampled_from([TOOL, TOOL_SHORT]), tool_figures), max_size=2),
    location=maybe(coord),
    datasets=st.lists(st.builds(DatasetInput, object_store_id=st.just("s"), size=st.floats(0, 1e12),
                                location=maybe(coord)), max_size=3),
    defaults=st.just(Defaults(queue_s=300, run_s=3600)),
)


@settings(max_examples=300, deadline=None)
@given(inputs)
def test_value_is_exactly_the_explained_score(x: TermInput) -> None:
    for term, _ in MODEL.terms:
        assert term.value(x) == term.score(x).score, term.name  # type: ignore[attr-defined]
    assert MODEL.total(x) == MODEL.score(x).total


class OnlyScore:
    """A term with no ``value``: the combiner falls back to ``score``."""

    name: ClassVar[str] = "only_score"
    Params = TermParams

    def score(self, x: TermInput) -> TermScore:
        return TermScore(0.25, {}, summary="a quarter")


def test_a_term_without_value_still_counts() -> None:
    model = ScoringModel([(OnlyScore(), 1.0)], Defaults(queue_s=1, run_s=1), 900)  # type: ignore[list-item]
    x = TermInput(JobFacts("t"), Candidate("d"), DestinationFigures(id="d"), (), None, (), Defaults(1, 1))
    assert model.total(x) == model.score(x).total == 0.25


def _view(n: int, now: float) -> RankView:
    dests = {f"d{i}": DestinationFigures(id=f"d{i}", queued=float(i), running=3.0, cpus_free=float(10 - i),
                                         mem_free_gb=64.0, sources={"queue_by_destination": now}, live_at=now)
             for i in range(n)}
    return RankView(meta=SnapshotMeta(created_at=now), destinations=dests)


def test_placements_explain_themselves_on_demand_as_before() -> None:
    now = 1_700_000_000.0
    cands = [Candidate(f"d{i}", tpv_score=float(i % 3), context={"latitude": 50.0, "longitude": 8.0})
             for i in range(8)]
    datasets = [DatasetInput("s", 1e9, (48.0, 7.0))]
    result = rank(cands, JobFacts("t", cores=2, mem=4), datasets, _view(8, now), now, MODEL, 300, {})
    for p in result.placements:
        assert p.group == SCORED
        assert p.total is not None
        expected = MODEL.score(TermInput(
            JobFacts("t", cores=2, mem=4), next(c for c in cands if c.id == p.id),
            _view(8, now).destinations[p.id], (), (50.0, 8.0), datasets, MODEL.defaults))
        assert p.terms == expected.terms
        assert p.reason == f"score {expected.total * 100:.1f}: " + ", ".join(
            t.summary for t in expected.terms if t.summary)
        assert p.total == expected.total


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
