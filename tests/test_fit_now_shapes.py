"""fit_now with free slot shapes (pulsar-util's newer htcondor_cluster_usage):
a job fits now only if one free slot holds all of it. Table driven, the
arithmetic in the comments; unknown_score 0.5 unless said, so a shortfall
scores min(0.5, 0.5) x the best slot's smallest free/needed fraction."""

from __future__ import annotations

from typing import Any

import pytest

from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, SlotShape
from tpv_broker.core.scoring import Defaults
from tpv_broker.core.terms import FitNow

from .termkit import TermInput, TermScore, evaluated
from .termkit import score as term_score

Shape = tuple[float, float | None, float | None] | tuple[float, float | None, float | None, float | None]


def shapes(*specs: Shape) -> list[SlotShape]:
    """(count, cpus, mem_gb[, gpus]) each"""
    return [SlotShape(count=s[0], cpus=s[1], mem_gb=s[2], gpus=s[3] if len(s) > 3 else None) for s in specs]


def x(job: JobFacts, figures: dict[str, Any]) -> TermInput:
    return TermInput(job=job, candidate=Candidate("d", None), figures=DestinationFigures(id="d", **figures),
                     tool_stats=(), location=None, datasets=(), defaults=Defaults(300, 3600))


def score(job: JobFacts, figures: dict[str, Any], unknown_score: float = 0.5) -> TermScore:
    return term_score(FitNow(unknown_score=unknown_score), x(job, figures))


EIGHT_AND_TWOS = shapes((3, 8, 15.625), (10, 2, 3.90625))  # 3 x 8c/16000 MiB, 10 x 2c/4000 MiB

CASES = [
    # 8 cores, 16 GB: the 8-core slot has 15.625 GB: 15.625/16 = 0.9765625 -> 0.5 x 0.9765625
    pytest.param((8, 16, 0), EIGHT_AND_TWOS, False, 0.48828125, id="8c-16g-short-of-memory"),
    # 8 cores, 15 GB: the 8-core slot holds it
    pytest.param((8, 15, 0), EIGHT_AND_TWOS, True, 1.0, id="8c-15g-fits"),
    # 2 cores, 2 GB: any slot holds it
    pytest.param((2, 2, 0), EIGHT_AND_TWOS, True, 1.0, id="small-fits"),
    # 16 cores: free cores total 3x8 + 10x2 = 44, but the largest slot has 8: 8/16 = 0.5 -> 0.25
    pytest.param((16, 4, 0), EIGHT_AND_TWOS, False, 0.25, id="16c-no-single-slot"),
    # no free slot at all: fraction 0 -> 0
    pytest.param((1, 1, 0), [], False, 0.0, id="no-free-slot"),
    # slots of count 0 are not free: same as none
    pytest.param((1, 1, 0), shapes((0, 64, 256)), False, 0.0, id="count-zero"),
    # a GPU job, shapes without GPU figures: the best slot holds cores and memory, GPUs unknown -> unknown_score
    pytest.param((2, 2, 1), EIGHT_AND_TWOS, None, 0.5, id="gpu-unknown"),
    # a GPU job, one slot with 1 GPU: fits
    pytest.param((2, 2, 1), shapes((1, 4, 8, 1), (5, 8, 16, 0)), True, 1.0, id="gpu-slot"),
    # a 2-GPU job: best slot min(4/2 -> 1, 8/2 -> 1, 1/2) = 0.5 -> 0.25
    pytest.param((2, 2, 2), shapes((1, 4, 8, 1)), False, 0.25, id="gpu-short"),
    # a slot known to hold the job beats one that might: fits
    pytest.param((2, 2, 1), shapes((1, 8, 16, None), (1, 2, 2, 1)), True, 1.0, id="known-beats-unknown"),
]


@pytest.mark.parametrize(("need", "free_shapes", "fits", "expected"), CASES)
def test_fit_now_with_slot_shapes(need: tuple[float, float, float], free_shapes: list[SlotShape],
                                  fits: bool | None, expected: float) -> None:
    cores, mem, gpus = need
    job = JobFacts("t", cores=cores, mem=mem, gpus=gpus)
    # the free totals (44 cores) would say "fits" for the 16-core job: the shapes decide
    figures = {"slot_shapes": free_shapes, "cpus_free": 44, "mem_free_gb": 85.9375}
    r = score(job, figures)
    assert r.score == pytest.approx(expected)
    assert r.raw["fits"] is fits


def test_without_shapes_the_totals_decide() -> None:
    # slot_shapes None (not reported): 44 free cores hold a 16-core job, 85.9 GB its 4 GB
    r = score(JobFacts("t", cores=16, mem=4), {"cpus_free": 44, "mem_free_gb": 85.9375})
    assert (r.score, r.raw["fits"]) == (1.0, True)
    assert "free_slot_shapes" not in r.raw


def test_best_shape_is_explained() -> None:
    job = JobFacts("t", cores=8, mem=16)
    r = score(job, {"slot_shapes": EIGHT_AND_TWOS})
    # in this order: explain shows them as they come
    assert list(r.raw.items()) == [("cores_needed", 8), ("mem_gb_needed", 16), ("free_slot_shapes", 2),
                                   ("best_shape", {"count": 3, "cpus": 8, "mem_gb": 15.625}), ("fits", False)]
    # the best slot's fraction: 15.625 / 16 = 0.9765625, shown rounded down
    assert r.summary == "does not fit now (97% of the need is free)"
    _, values = evaluated(FitNow(unknown_score=0.5), x(job, {"slot_shapes": EIGHT_AND_TWOS}))
    assert values.parts["worst"].tolist() == [0.9765625]


def test_a_gpu_job_names_its_gpus_after_the_shapes() -> None:
    r = score(JobFacts("t", cores=2, mem=2, gpus=1), {"slot_shapes": shapes((1, 4, 8, 1))})
    assert list(r.raw) == ["cores_needed", "mem_gb_needed", "free_slot_shapes", "best_shape", "fits", "gpus_needed"]
    assert r.raw["best_shape"] == {"count": 1, "cpus": 4, "mem_gb": 8, "gpus": 1}


@pytest.mark.parametrize("unknown_score", [0.0, 0.3, 0.9])
def test_more_or_larger_slots_never_score_lower(unknown_score: float) -> None:
    job = JobFacts("t", cores=8, mem=16)
    fewer = score(job, {"slot_shapes": shapes((1, 4, 8))}, unknown_score).score
    more = score(job, {"slot_shapes": shapes((1, 4, 8), (1, 6, 12))}, unknown_score).score
    larger = score(job, {"slot_shapes": shapes((1, 8, 16))}, unknown_score).score
    assert fewer <= more <= larger == 1.0


def test_shapes_of_count_zero_are_no_slot() -> None:
    # counted among the shapes reported, but none is free: no best shape, nothing of the need free
    r = score(JobFacts("t", cores=1, mem=1), {"slot_shapes": shapes((0, 8, 8))})
    assert (r.score, r.raw["fits"], r.raw["best_shape"], r.raw["free_slot_shapes"]) == (0.0, False, None, 1)
    assert r.summary == "does not fit now (0% of the need is free)"


def test_of_equal_slots_one_known_to_hold_the_job_is_shown_else_the_first() -> None:
    job = JobFacts("t", cores=2, mem=2, gpus=1)
    known_second = score(job, {"slot_shapes": shapes((1, 8, 16, None), (2, 2, 2, 1))})
    assert known_second.raw["best_shape"] == {"count": 2, "cpus": 2, "mem_gb": 2, "gpus": 1}
    both_unknown = score(job, {"slot_shapes": shapes((1, 8, 16, None), (2, 2, 2, None))})
    assert both_unknown.raw["best_shape"] == {"count": 1, "cpus": 8, "mem_gb": 16}
    assert both_unknown.raw["fits"] is None
