"""The combiner (tpv_broker/core/scoring.py) and the scoring section of the
config: weights from config, range checks, the per-term breakdown, and
start-up errors that name ``scoring.terms.<term>.<param>``."""

from __future__ import annotations

import math
import pathlib
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from tpv_broker.api.rank_service import scoring_model
from tpv_broker.config.settings import load_config
from tpv_broker.config.terms import DEFAULT_TERMS, check_terms
from tpv_broker.core.batch import Batch
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, RankView, SnapshotMeta
from tpv_broker.core.ranking import rank
from tpv_broker.core.result import Group, Placement
from tpv_broker.core.scoring import Defaults, ScoringModel, TermRangeError
from tpv_broker.core.terms import TermDetail, TermValues
from tpv_broker.errors import ConfigError

NOW = 1_700_000_000.0
DEFAULTS = Defaults(queue_s=300, run_s=3600)
JOB = JobFacts("t")


class Fixed:
    """A fake term that always answers the same score."""

    name: ClassVar[str] = "fixed"

    def __init__(self, value: float, name: str = "fixed") -> None:
        self.value = value
        self.name = name  # type: ignore[misc]

    def evaluate(self, b: Batch) -> TermValues:
        return TermValues(np.full(b.size, self.value))

    def explain(self, b: Batch, v: TermValues, k: int) -> TermDetail:
        return TermDetail({"value": float(v.scores[k])}, level="tool", summary=f"fixed {self.value}")


def rank_one(model: ScoringModel, figures: DestinationFigures | None = None, candidate: Candidate | None = None,
             job: JobFacts = JOB, location: tuple[float, float] | None = None) -> Placement:
    """One candidate with fresh live figures (none reported unless given), ranked with ``model``."""
    c = candidate or Candidate("d")
    d = (figures or DestinationFigures(id=c.id)).model_copy(update={"live_at": NOW, "sources": {"test": NOW}})
    view = RankView(meta=SnapshotMeta(created_at=NOW), destinations={c.id: d})
    (p,) = rank([c], job, [], view, NOW, model, 300, {c.id: location} if location else {}).placements
    assert p.group is Group.SCORED
    return p


def write_config(tmp_path: pathlib.Path, scoring: dict[str, Any]) -> pathlib.Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"scoring": scoring}))
    return path


def load_error(tmp_path: pathlib.Path, terms: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, {"terms": terms}), environ={})
    return str(exc.value)


# -- the combiner ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.5, -0.01, math.nan, math.inf])
def test_a_term_out_of_range_raises_naming_the_term(bad: float) -> None:
    model = ScoringModel([(Fixed(0.5, "good"), 1.0), (Fixed(bad, "broken"), 1.0)], DEFAULTS, 900)
    with pytest.raises(TermRangeError) as exc:
        rank_one(model, candidate=Candidate("pulsar_de"))
    message = str(exc.value)
    assert "term broken" in message and "pulsar_de" in message and "outside [0, 1]" in message
    assert "good" not in message


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_the_range_is_inclusive(edge: float) -> None:
    assert rank_one(ScoringModel([(Fixed(edge), 1.0)], DEFAULTS, 900)).total == edge


def test_total_is_the_weighted_mean_and_contributions_add_up() -> None:
    # total = (1 x 0.5 + 3 x 1.0 + 0 x 0.2) / (1 + 3 + 0) = 3.5 / 4 = 0.875
    # contributions: 1 x 0.5 / 4 = 0.125, 3 x 1.0 / 4 = 0.75, 0 x 0.2 / 4 = 0
    model = ScoringModel([(Fixed(0.5, "a"), 1.0), (Fixed(1.0, "b"), 3.0), (Fixed(0.2, "c"), 0.0)], DEFAULTS, 900)
    result = rank_one(model)
    assert result.total == pytest.approx(0.875)
    assert [(t.term, t.weight, t.score, t.contribution) for t in result.terms] == [
        ("a", 1.0, 0.5, pytest.approx(0.125)),
        ("b", 3.0, 1.0, pytest.approx(0.75)),
        ("c", 0.0, 0.2, 0.0),
    ]
    # the breakdown keeps what each term said
    first = result.terms[0]
    assert (first.level, first.raw, first.summary) == ("tool", {"value": 0.5}, "fixed 0.5")


def test_contributions_add_up_with_the_default_terms() -> None:
    model = scoring_model(load_config(environ={}).scoring)
    result = rank_one(
        model,
        DestinationFigures(id="d", queued=3, running=2, median_queue_s=100, median_run_s=900, cpus_free=2,
                           mem_free_gb=64),
        Candidate("d", 2.0),
        JobFacts("t", cores=4, mem=8),
        (0.0, 0.0),
    )
    assert result.total is not None
    assert [t.term for t in result.terms] == list(DEFAULT_TERMS)
    assert sum(t.contribution for t in result.terms) == pytest.approx(result.total)
    # weights 3 + 2 + 3 + 1 + 1 = 10
    assert all(t.contribution == pytest.approx(t.weight * t.score / 10) for t in result.terms)
    assert 0.0 <= result.total <= 1.0


def test_no_positive_weight_is_refused_by_the_combiner() -> None:
    with pytest.raises(ValueError, match="positive weight"):
        ScoringModel([(Fixed(1.0), 0.0)], DEFAULTS, 900)
    with pytest.raises(ValueError, match="positive weight"):
        ScoringModel([], DEFAULTS, 900)


# -- weights from config change the order ----------------------------------------------------
# Scale 60 s and cap 61380 s: ln(1 + cap/scale) = ln 1024, so a cost of
# 60 x (2^k - 1) scores 1 - k/10 (see test_terms.py). The job: 1 core, no memory.
#   fast:        runs 60 s (0.9); no free capacity reported: 0 free slots, so
#                ahead = 62 queued + 1 (the job) - 0 = 63;
#                waits 0 + 63 x 60 s / 1 running = 3780 s (0.4)
#   short_queue: runs 3780 s (0.4); nothing queued and 4 free cores = 4 one-core
#                slots (memory not asked): ahead = max(0, 0 + 1 - 4) = 0, no drain;
#                waits its median 60 s (0.9)
FIGURES = {
    "fast": DestinationFigures(id="fast", status="online", queued=62, running=1, median_queue_s=0,
                               median_run_s=60, live_at=NOW - 5, sources={"queue_by_destination": NOW - 5}),
    "short_queue": DestinationFigures(id="short_queue", status="online", queued=0, running=4, cpus_free=4,
                                      median_queue_s=60, median_run_s=3780, live_at=NOW - 5,
                                      sources={"queue_by_destination": NOW - 5}),
}


@pytest.mark.parametrize(
    ("queue_weight", "run_weight", "expected"),
    [
        # fast = (1 x 0.4 + 3 x 0.9) / 4 = 0.775; short_queue = (1 x 0.9 + 3 x 0.4) / 4 = 0.525
        (1, 3, ["fast", "short_queue"]),
        # fast = (3 x 0.4 + 1 x 0.9) / 4 = 0.525; short_queue = (3 x 0.9 + 1 x 0.4) / 4 = 0.775
        (3, 1, ["short_queue", "fast"]),
    ],
)
def test_weights_from_config_change_the_order(tmp_path: pathlib.Path, queue_weight: float, run_weight: float,
                                              expected: list[str]) -> None:
    terms = {
        "queue_wait": {"weight": queue_weight, "scale_s": 60, "cap_s": 61380},
        "run_time": {"weight": run_weight, "scale_s": 60, "cap_s": 61380},
    }
    config = load_config(write_config(tmp_path, {"terms": terms}), environ={})
    view = RankView(meta=SnapshotMeta(created_at=NOW - 5), destinations=FIGURES)
    for order in (["fast", "short_queue"], ["short_queue", "fast"]):
        candidates = [Candidate(i) for i in order]
        result = rank(candidates, JobFacts("t"), [], view, NOW, scoring_model(config.scoring), 300, {})
        assert result.ids == expected
        assert [p.total for p in result.placements] == pytest.approx([0.775, 0.525])


# -- the scoring section of the config -------------------------------------------------------------
def test_defaults_without_a_file() -> None:
    config = load_config(environ={})
    assert config.scoring.terms == DEFAULT_TERMS
    model = scoring_model(config.scoring)
    assert [(t.name, w) for t, w in model.terms] == [(n, p["weight"]) for n, p in DEFAULT_TERMS.items()]
    assert model.total_weight == 10.0
    assert (model.defaults.queue_s, model.defaults.run_s, model.max_metrics_age_s) == (300.0, 3600.0, 900.0)


def test_listing_terms_replaces_the_defaults(tmp_path: pathlib.Path) -> None:
    path = write_config(tmp_path, {"default_queue_s": 60, "default_run_s": 600, "max_metrics_age_s": 120,
                                   "terms": {"fit_now": {"weight": 2, "unknown_score": 0.1},
                                             "tpv_score": {"weight": 1, "scale": 3}}})
    model = scoring_model(load_config(path, environ={}).scoring)
    # only the two listed terms, in the file's order; the others are off
    assert [(t.name, w) for t, w in model.terms] == [("fit_now", 2.0), ("tpv_score", 1.0)]
    assert model.total_weight == 3.0
    assert (model.defaults.queue_s, model.defaults.run_s, model.max_metrics_age_s) == (60.0, 600.0, 120.0)
    # the parameters reach the terms: unknown capacity scores the configured 0.1
    fit = rank_one(model).terms[0]
    assert (fit.term, fit.score) == ("fit_now", 0.1)


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        # a missing parameter names the term and the parameter
        ({"queue_wait": {"weight": 1, "scale_s": 60}}, "scoring.terms.queue_wait.cap_s: Field required"),
        ({"data_locality": {"weight": 1, "scale_km": 100, "cap_km": 20000}},
         "scoring.terms.data_locality.unknown_score: Field required"),
        ({"tpv_score": {"scale": 1}}, "scoring.terms.tpv_score.weight: Field required"),
        # a negative weight
        ({"run_time": {"weight": -2, "scale_s": 60, "cap_s": 100}},
         "scoring.terms.run_time.weight: Input should be greater than or equal to 0"),
        # an unknown term lists the known ones
        ({"queue_time": {"weight": 1}},
         "scoring.terms.queue_time: unknown term "
         "(known: carbon, data_locality, finish_time, fit_now, queue_wait, run_time, staging_time, tpv_score)"),
        # a misspelt parameter
        ({"tpv_score": {"weight": 1, "scale": 1, "scael": 2}},
         "scoring.terms.tpv_score.scael: Extra inputs are not permitted"),
        # out-of-range and invalid parameters
        ({"fit_now": {"weight": 1, "unknown_score": 1.5}},
         "scoring.terms.fit_now.unknown_score: Input should be less than or equal to 1"),
        ({"queue_wait": {"weight": 1, "scale_s": 0, "cap_s": 100}},
         "scoring.terms.queue_wait.scale_s: Input should be greater than 0"),
        ({"queue_wait": {"weight": math.inf, "scale_s": 60, "cap_s": 100}}, "scoring.terms.queue_wait.weight"),
        # every weight 0: nothing could rank
        ({"fit_now": {"weight": 0, "unknown_score": 0.5}, "tpv_score": {"weight": 0, "scale": 1}},
         "scoring.terms: no term has a positive weight: at least one needs one"),
        # no term at all: the same message
        ({}, "scoring.terms: no term has a positive weight: at least one needs one"),
        # not a mapping
        ({"tpv_score": 3}, "scoring.terms.tpv_score"),
    ],
)
def test_bad_terms_fail_start_up_naming_them(tmp_path: pathlib.Path, terms: dict[str, Any], expected: str) -> None:
    message = load_error(tmp_path, terms)
    assert message.startswith(f"invalid configuration in {tmp_path / 'config.yaml'}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("terms", "problems"),
    [
        # nothing to weigh: no term, or every weight 0
        ({}, ["no term has a positive weight: at least one needs one"]),
        ({"tpv_score": {"weight": 0, "scale": 1}}, ["no term has a positive weight: at least one needs one"]),
        # one positive weight is enough
        ({"tpv_score": {"weight": 0, "scale": 1}, "fit_now": {"weight": 0.5, "unknown_score": 0.5}}, []),
        # a term's own problem is reported instead (its weight may not even be readable)
        ({"tpv_score": {"weight": 0}}, ["tpv_score.scale: Field required"]),
    ],
)
def test_check_terms_wants_a_positive_weight(terms: dict[str, Any], problems: list[str]) -> None:
    assert check_terms(terms) == problems


def test_every_problem_is_reported_at_once(tmp_path: pathlib.Path) -> None:
    message = load_error(tmp_path, {
        "queue_wait": {"weight": 1, "scale_s": 60},
        "run_time": {"weight": -1, "scale_s": 60, "cap_s": 100},
        "nope": {"weight": 1},
    })
    for part in ("scoring.terms.queue_wait.cap_s", "scoring.terms.run_time.weight", "scoring.terms.nope: unknown term"):
        assert part in message


def test_an_empty_term_list_fails_start_up_naming_it(tmp_path: pathlib.Path) -> None:
    message = load_error(tmp_path, {})
    assert "scoring.terms: no term has a positive weight: at least one needs one" in message
    # not a problem of a term's own: only the one message
    assert message.count("scoring.terms") == 1
