"""Score terms (tpv_broker/core/terms.py), one pure unit at a time, table
driven, with the arithmetic in the comments.

Most tables use a log scale that gives round numbers: ``scale`` 60 and
``cap`` 60 x (2^10 - 1) = 61380, so ``ln(1 + cap/scale) = ln 1024 = 10 ln 2``
and a cost of 60 x (2^k - 1) scores exactly ``1 - k/10``:
    cost   0   60  180  420  900  1860  3780  7620  15300  30660  61380
    score 1.0  0.9 0.8  0.7  0.6  0.5   0.4   0.3   0.2    0.1    0.0
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.config.terms import DEFAULT_TERMS, TERM_PARAMS
from tpv_broker.core.batch import cost_scores
from tpv_broker.core.geo import great_circle_km
from tpv_broker.core.inputs import Candidate, DatasetInput, JobFacts
from tpv_broker.core.models import DestinationFigures, ToolFigures
from tpv_broker.core.ranking import _coordinates
from tpv_broker.core.scoring import Defaults
from tpv_broker.core.terms import (
    REGISTRY,
    DataLocality,
    FitNow,
    QueueWait,
    RunTime,
    TpvScore,
    build_terms,
    free_slots,
)
from tpv_broker.core.tool_ids import (
    DEFAULT,
    DESTINATION,
    TOOL,
    TOOL_SHORT,
    TOOL_UNVERSIONED,
    stats_field,
    tool_id_forms,
)

from .termkit import TermInput, evaluated
from .termkit import score as term_score

SCALE, CAP = 60.0, 61380.0  # ln(1 + CAP/SCALE) = ln 1024
DEFAULTS = Defaults(queue_s=180.0, run_s=1860.0)

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)
# One degree of longitude on the equator: 2 pi x 6371.0088 km / 360.
EQUATOR_DEGREE_KM = 111.19508


def x(
    figures: dict[str, Any] | None = None,
    *,
    job: JobFacts | None = None,
    tool_stats: Sequence[tuple[str, ToolFigures]] = (),
    location: tuple[float, float] | None = None,
    datasets: Sequence[DatasetInput] = (),
    tpv_score: float | None = None,
    context: Any = None,
    defaults: Defaults = DEFAULTS,
) -> TermInput:
    return TermInput(
        job=job or JobFacts("t", cores=4, mem=8),
        candidate=Candidate("d", tpv_score, context),
        figures=DestinationFigures(id="d", **(figures or {})),
        tool_stats=tuple(tool_stats),
        location=location,
        datasets=tuple(datasets),
        defaults=defaults,
    )


def queue_wait(scale_s: float = SCALE, cap_s: float = CAP) -> QueueWait:
    return QueueWait(scale_s=scale_s, cap_s=cap_s)


def run_time(scale_s: float = SCALE, cap_s: float = CAP) -> RunTime:
    return RunTime(scale_s=scale_s, cap_s=cap_s)


def fit_now(unknown_score: float = 0.3) -> FitNow:
    return FitNow(unknown_score=unknown_score)


def data_locality(unknown_score: float = 0.25) -> DataLocality:
    return DataLocality(scale_km=100, cap_km=20000, unknown_score=unknown_score)


def tpv(scale: float = 1.0) -> TpvScore:
    return TpvScore(scale=scale)


# -- cost_scores -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("cost", "scale", "cap", "expected"),
    [
        (0, SCALE, CAP, 1.0),  # ln(1 + 0) = 0
        (60, SCALE, CAP, 0.9),  # 1 - ln 2 / ln 1024 = 1 - 1/10
        (420, SCALE, CAP, 0.7),  # 1 + 420/60 = 8 = 2^3
        (1860, SCALE, CAP, 0.5),  # 1 + 31 = 32 = 2^5
        (61380, SCALE, CAP, 0.0),  # at the cap
        (10 * 61380, SCALE, CAP, 0.0),  # beyond the cap: clipped at 0, not negative
        (-30, SCALE, CAP, 1.0),  # a negative cost counts as 0
        (math.inf, SCALE, CAP, 0.0),
        # the defaults: 1 - ln(1 + 3600/60) / ln(1 + 604800/60) = 1 - ln 61 / ln 10081
        #             = 1 - 4.11087 / 9.21841 = 0.55406
        (3600, 60, 604800, 0.55406),
    ],
)
def test_cost_scores(cost: float, scale: float, cap: float, expected: float) -> None:
    (got,) = cost_scores(np.array([cost], dtype=np.float64), scale, cap)
    assert got == pytest.approx(expected, abs=1e-5)


def test_cost_scores_every_doubling_loses_the_same() -> None:
    # (1 + c/s) doubling: 60 -> 180 -> 420 -> 900 each lose 0.1
    scores = cost_scores(np.array([60.0, 180.0, 420.0, 900.0]), SCALE, CAP).tolist()
    assert [a - b for a, b in itertools.pairwise(scores)] == pytest.approx([0.1, 0.1, 0.1])


def test_cost_scores_each_entry_on_its_own() -> None:
    # a cost's score never depends on the other costs scored with it
    costs = [0.0, 60.0, -30.0, 1860.0, math.inf, 61380.0]
    together = cost_scores(np.array(costs), SCALE, CAP).tolist()
    assert together == [cost_scores(np.array([c]), SCALE, CAP)[0] for c in costs]


# -- queue_wait: every fallback level, then the free slots ------------------------------
# wait = median queue + drain, drain = ahead x typical run / max(running, 1),
# ahead = max(0, queued + 1 - free slots): the "+ 1" is the job itself, which
# needs a slot too. Free slots = jobs of this size the free cores and memory
# hold now: min(floor(cpus_free / cores), floor(mem_free_gb / mem)) over the
# figures that are known (and that the job asks for); none known -> 0 slots.
JOB_4C_8G = JobFacts("t", cores=4, mem=8)  # x()'s job
JOB_4C_0G = JobFacts("t", cores=4, mem=0)

QUEUE_CASES = [
    # (job, figures, tool stats, free slots, drain, wait, score, level)
    pytest.param(
        # no capacity figures: 0 slots; ahead = 9 + 1 - 0 = 10
        # wait = tool median_queue 60 + 10 x run 180 / running 5 = 60 + 360 = 420
        # score = 1 - ln(1 + 420/60) / ln 1024 = 1 - 3/10 = 0.7
        JOB_4C_8G, {"queued": 9, "running": 5, "median_run_s": 180, "median_queue_s": 9999},
        [(TOOL, ToolFigures(count=3, median_queue_s=60)),
         (TOOL_UNVERSIONED, ToolFigures(count=9, median_queue_s=1)),
         (TOOL_SHORT, ToolFigures(count=9, median_queue_s=2))],
        0.0, 360.0, 420.0, 0.7, TOOL, id="tool",
    ),
    pytest.param(
        # the exact id has no figure (not in the list); the id without version does: 180.
        # one free slot (4 cores / 4 = 1, 8 GB / 8 = 1) takes the job: ahead = max(0, 0 + 1 - 1) = 0
        # wait = 180 + 0 = 180; 1 + 180/60 = 4 = 2^2 -> 0.8
        JOB_4C_8G, {"queued": 0, "running": 5, "median_run_s": 600, "median_queue_s": 9999,
                    "cpus_free": 4, "mem_free_gb": 8},
        [(TOOL_UNVERSIONED, ToolFigures(count=9, median_queue_s=180)),
         (TOOL_SHORT, ToolFigures(count=9, median_queue_s=2))],
        1.0, 0.0, 180.0, 0.8, TOOL_UNVERSIONED, id="tool_unversioned",
    ),
    pytest.param(
        # exact and unversioned known but without a median queue time: short id, 900.
        # queued unknown counts as 0; 2 slots (8/4, 16/8): ahead = max(0, 0 + 1 - 2) = 0
        # wait = 900; 1 + 900/60 = 16 = 2^4 -> 0.6
        JOB_4C_8G, {"median_queue_s": 9999, "cpus_free": 8, "mem_free_gb": 16},
        [(TOOL, ToolFigures(count=1)), (TOOL_UNVERSIONED, ToolFigures(count=1)),
         (TOOL_SHORT, ToolFigures(count=9, median_queue_s=900))],
        2.0, 0.0, 900.0, 0.6, TOOL_SHORT, id="tool_short",
    ),
    pytest.param(
        # no tool figure: the destination's all-tools median 60; 0 slots; ahead = 5 + 1 = 6
        # wait = 60 + 6 x run 600 / running 2 = 60 + 1800 = 1860; 32 = 2^5 -> 0.5
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60},
        [],
        0.0, 1800.0, 1860.0, 0.5, DESTINATION, id="destination",
    ),
    pytest.param(
        # nothing else known: default queue 180 + (1 + 1 - 0) x default run 1860 / max(running None, 1)
        # = 180 + 3720 = 3900; 1 + 3900/60 = 66: 1 - ln 66 / ln 1024 = 1 - 4.18965 / 6.93147 = 0.39556
        JOB_4C_8G, {"queued": 1},
        [],
        0.0, 3720.0, 3900.0, 0.39556, DEFAULT, id="default",
    ),
    pytest.param(
        # nothing known at all: nothing queued, but no free slot known either, so the job
        # itself waits for one run: 180 + (0 + 1 - 0) x 1860 / 1 = 2040
        # 1 + 2040/60 = 35: 1 - ln 35 / ln 1024 = 1 - 3.55535 / 6.93147 = 0.48707
        JOB_4C_8G, {},
        [],
        0.0, 1860.0, 2040.0, 0.48707, DEFAULT, id="default-nothing-known",
    ),
    pytest.param(
        # running 0 drains like 1 running job: 0 + (2 + 1) x 140 / max(0, 1) = 420 -> 0.7
        JOB_4C_8G, {"queued": 2, "running": 0, "median_run_s": 140, "median_queue_s": 0},
        [],
        0.0, 420.0, 420.0, 0.7, DESTINATION, id="nothing-running",
    ),
    pytest.param(
        # far beyond the cap: 0 + (500 + 1) x 3600 / 1 = 1 803 600 s > 61380 -> 0
        JOB_4C_8G, {"queued": 500, "running": 1, "median_run_s": 3600, "median_queue_s": 0},
        [],
        0.0, 1_803_600.0, 1_803_600.0, 0.0, DESTINATION, id="beyond-cap",
    ),
    # -- free slots ---
    pytest.param(
        # 5 queued; 24 free cores / 4 = 6 slots, 64 GB / 8 = 8: min 6
        # ahead = max(0, 5 + 1 - 6) = 0: the free slots take the queue and the job, no drain
        # wait = median 60 -> 1 + 1 = 2 -> 0.9
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60,
                    "cpus_free": 24, "mem_free_gb": 64},
        [],
        6.0, 0.0, 60.0, 0.9, DESTINATION, id="slots-absorb-the-queue",
    ),
    pytest.param(
        # the same figures without any capacity figure: 0 slots, ahead = 5 + 1 - 0 = 6
        # wait = 60 + 6 x 600 / 2 = 1860 -> 0.5
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60},
        [],
        0.0, 1800.0, 1860.0, 0.5, DESTINATION, id="unknown-capacity-no-slots",
    ),
    pytest.param(
        # one job more than the slots: 6 slots, ahead = 6 + 1 - 6 = 1
        # wait = 60 + 1 x 720 / 2 = 60 + 360 = 420 -> 0.7
        JOB_4C_8G, {"queued": 6, "running": 2, "median_run_s": 720, "median_queue_s": 60,
                    "cpus_free": 24, "mem_free_gb": 64},
        [],
        6.0, 360.0, 420.0, 0.7, DESTINATION, id="one-more-than-the-slots",
    ),
    pytest.param(
        # memory limits the slots: 64 cores / 4 = 16, but 20 GB / 8 = 2.5 -> floor 2; min 2
        # ahead = 5 + 1 - 2 = 4; wait = 0 + 4 x 210 / 2 = 420 -> 0.7
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 210, "median_queue_s": 0,
                    "cpus_free": 64, "mem_free_gb": 20},
        [],
        2.0, 420.0, 420.0, 0.7, DESTINATION, id="memory-limits-the-slots",
    ),
    pytest.param(
        # a part of a slot is no slot: 7 cores / 4 = 1.75 -> 1 (64 GB / 8 = 8); ahead = 3 + 1 - 1 = 3
        # wait = 0 + 3 x 140 / 1 = 420 -> 0.7
        JOB_4C_8G, {"queued": 3, "running": 1, "median_run_s": 140, "median_queue_s": 0,
                    "cpus_free": 7, "mem_free_gb": 64},
        [],
        1.0, 420.0, 420.0, 0.7, DESTINATION, id="cores-floor",
    ),
    pytest.param(
        # only cores known: 24 / 4 = 6 slots (memory unknown does not limit); ahead = 0 -> 60 -> 0.9
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60, "cpus_free": 24},
        [],
        6.0, 0.0, 60.0, 0.9, DESTINATION, id="only-cores-known",
    ),
    pytest.param(
        # a job asking no memory ignores it: 0 GB free does not limit; 24 / 4 = 6 slots; ahead 0 -> 0.9
        JOB_4C_0G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60,
                    "cpus_free": 24, "mem_free_gb": 0},
        [],
        6.0, 0.0, 60.0, 0.9, DESTINATION, id="mem-0-job-ignores-memory",
    ),
    pytest.param(
        # ... while an 8 GB job on the same figures has 0 GB / 8 = 0 slots: ahead 6 -> 1860 -> 0.5
        JOB_4C_8G, {"queued": 5, "running": 2, "median_run_s": 600, "median_queue_s": 60,
                    "cpus_free": 24, "mem_free_gb": 0},
        [],
        0.0, 1800.0, 1860.0, 0.5, DESTINATION, id="no-memory-free-no-slots",
    ),
    pytest.param(
        # over-committed cores (negative free) count as 0: 0 slots; ahead = 1 + 1 = 2
        # wait = 0 + 2 x 210 / 1 = 420 -> 0.7
        JOB_4C_8G, {"queued": 1, "running": 1, "median_run_s": 210, "median_queue_s": 0,
                    "cpus_free": -8, "mem_free_gb": 64},
        [],
        0.0, 420.0, 420.0, 0.7, DESTINATION, id="overcommitted-no-slots",
    ),
]


@pytest.mark.parametrize(("job", "figures", "tool_stats", "slots", "drain", "wait", "score", "level"), QUEUE_CASES)
def test_queue_wait(job: JobFacts, figures: dict[str, Any], tool_stats: list[tuple[str, ToolFigures]],
                    slots: float, drain: float, wait: float, score: float, level: str) -> None:
    r = term_score(queue_wait(), x(figures, job=job, tool_stats=tool_stats))
    assert r.score == pytest.approx(score, abs=1e-5)
    assert (r.raw["free_slots"], r.raw["drain_s"]) == (slots, pytest.approx(drain))
    assert r.raw["expected_wait_s"] == pytest.approx(wait)
    # the term's raw figure is the batch's free_slots
    batch, _ = evaluated(queue_wait(), x(figures, job=job, tool_stats=tool_stats))
    assert free_slots(batch).tolist() == [slots]
    # the fallback level is recorded, in the result and in the summary
    assert r.level == level
    assert f"({level})" in r.summary


def test_queue_wait_raw_names_its_inputs() -> None:
    # 2 slots: 9 cores / 4 = 2.25 -> 2, 17 GB / 8 = 2.125 -> 2; ahead = 10 + 1 - 2 = 9
    # drain = 9 x 180 / 5 = 324; wait = 60 + 324 = 384
    r = term_score(queue_wait(), x({"queued": 10, "running": 5, "median_run_s": 180, "median_queue_s": 60,
                              "cpus_free": 9, "mem_free_gb": 17}))
    expected = {"expected_wait_s": 384.0, "median_queue_s": 60, "queued": 10, "running": 5,
                "free_slots": 2.0, "typical_run_s": 180, "drain_s": 324.0}
    # in this order: explain shows them as they come
    assert list(r.raw.items()) == list(expected.items())


@pytest.mark.parametrize(
    ("need", "free", "slots"),
    [
        # (job cores, mem GB, gpus), free figures, slots = min over the known figures the job asks for
        ((4, 8, 0), {"cpus_free": 24, "mem_free_gb": 64}, 6.0),  # min(24/4 = 6, 64/8 = 8)
        ((4, 8, 0), {"cpus_free": 64, "mem_free_gb": 20}, 2.0),  # min(16, floor 2.5 = 2)
        ((4, 8, 0), {}, 0.0),  # nothing known: 0, not "unlimited"
        ((4, 8, 0), {"gpus_free": 8}, 0.0),  # gpus are no capacity figure for slots
        ((4, 8, 0), {"cpus_free": 24}, 6.0),  # memory unknown: cores alone
        ((4, 8, 0), {"mem_free_gb": 20}, 2.0),  # cores unknown: memory alone
        ((4, 0, 0), {"cpus_free": 24, "mem_free_gb": 0}, 6.0),  # no memory asked: memory ignored
        ((4, 0, 0), {"mem_free_gb": 64}, 0.0),  # ... and then nothing usable is known
        ((4, 8, 0), {"cpus_free": 3.99, "mem_free_gb": 64}, 0.0),  # floor(0.9975) = 0
        ((4, 8, 0), {"cpus_free": -4, "mem_free_gb": -1}, 0.0),  # over-committed: 0
        ((0.5, 1, 0), {"cpus_free": 3, "mem_free_gb": 64}, 6.0),  # fractional cores: 3 / 0.5 = 6
        # a GPU job: free GPUs limit the slots too: min(8, 8, floor(0/1) = 0) = 0
        ((1, 1, 1), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 0}, 0.0),
    ],
)
def test_free_slots(need: tuple[float, float, float], free: dict[str, float], slots: float) -> None:
    cores, mem, gpus = need
    ti = x(free, job=JobFacts("t", cores=cores, mem=mem, gpus=gpus))
    assert term_score(queue_wait(), ti).raw["free_slots"] == slots
    batch, _ = evaluated(queue_wait(), ti)
    assert free_slots(batch).tolist() == [slots]


# -- run_time: the same chain ----------------------------------------------------------
RUN_CASES = [
    # 1 + 60/60 = 2 -> 1 - 1/10 = 0.9
    pytest.param({"median_run_s": 9999},
                 [(TOOL, ToolFigures(median_run_s=60)), (TOOL_UNVERSIONED, ToolFigures(median_run_s=1)),
                  (TOOL_SHORT, ToolFigures(median_run_s=2))], 60.0, 0.9, TOOL, id="tool"),
    # 1 + 180/60 = 4 -> 0.8
    pytest.param({"median_run_s": 9999},
                 [(TOOL, ToolFigures(median_queue_s=5)), (TOOL_UNVERSIONED, ToolFigures(median_run_s=180))],
                 180.0, 0.8, TOOL_UNVERSIONED, id="tool_unversioned"),
    # 1 + 420/60 = 8 -> 0.7
    pytest.param({"median_run_s": 9999}, [(TOOL_SHORT, ToolFigures(median_run_s=420))],
                 420.0, 0.7, TOOL_SHORT, id="tool_short"),
    # 1 + 900/60 = 16 -> 0.6
    pytest.param({"median_run_s": 900}, [(TOOL, ToolFigures(count=4))], 900.0, 0.6, DESTINATION,
                 id="destination"),
    # default run 1860: 32 -> 0.5
    pytest.param({}, [], 1860.0, 0.5, DEFAULT, id="default"),
]


@pytest.mark.parametrize(("figures", "tool_stats", "run", "score", "level"), RUN_CASES)
def test_run_time(figures: dict[str, Any], tool_stats: list[tuple[str, ToolFigures]], run: float,
                  score: float, level: str) -> None:
    r = term_score(run_time(), x(figures, tool_stats=tool_stats))
    assert r.raw == {"median_run_s": run}
    assert r.score == pytest.approx(score, abs=1e-9)
    assert r.level == level


def test_run_time_faster_destination_wins() -> None:
    fast = term_score(run_time(), x(tool_stats=[(TOOL, ToolFigures(median_run_s=600))]))
    slow = term_score(run_time(), x(tool_stats=[(TOOL, ToolFigures(median_run_s=6000))]))
    assert fast.score > slow.score


@pytest.mark.parametrize(
    ("tool_stats", "destination_value", "expected"),
    [
        ([(TOOL, ToolFigures(median_run_s=1)), (TOOL_SHORT, ToolFigures(median_run_s=3))], 4, (1, TOOL)),
        ([(TOOL, ToolFigures()), (TOOL_SHORT, ToolFigures(median_run_s=3))], 4, (3, TOOL_SHORT)),
        ([(TOOL, ToolFigures())], 4, (4, DESTINATION)),
        ([], None, (5, DEFAULT)),
        # 0 is a figure, not a missing one
        ([(TOOL, ToolFigures(median_run_s=0))], 4, (0, TOOL)),
        ([], 0, (0, DESTINATION)),
    ],
)
def test_the_most_specific_known_figure_wins(tool_stats: list[tuple[str, ToolFigures]],
                                             destination_value: float | None, expected: tuple[float, str]) -> None:
    # the exact tool id, the id without version, the short id, the destination's own figure, the default (5)
    r = term_score(run_time(), x({"median_run_s": destination_value}, tool_stats=tool_stats,
                                 defaults=Defaults(queue_s=180.0, run_s=5.0)))
    assert (r.raw["median_run_s"], r.level) == expected


# -- fit_now -----------------------------------------------------------------------------
# Every resource the job asks for (need > 0) is checked: cores, mem and, when
# asked, gpus. worst = the smallest free/needed fraction over the known ones.
#   a known one short (worst < 1)          -> fits False, min(unknown_score, 0.5) x worst
#   all asked known and enough             -> fits True, 1
#   one asked unknown, none known short    -> fits None, unknown_score
FIT_CASES = [
    # (job cores, mem GB, gpus), free figures, score (unknown_score 0.5: short = 0.5 x worst), fits
    # 4 <= 8 cores, 8 <= 16 GB -> 1
    pytest.param((4, 8, 0), {"cpus_free": 8, "mem_free_gb": 16}, 1.0, True, id="fits"),
    # boundaries fit: 4 <= 4, 8 <= 8
    pytest.param((4, 8, 0), {"cpus_free": 4, "mem_free_gb": 8}, 1.0, True, id="fits-exactly"),
    # cores 2/4 = 0.5 free -> 0.5 x 0.5 = 0.25
    pytest.param((4, 8, 0), {"cpus_free": 2, "mem_free_gb": 64}, 0.25, False, id="half-the-cores"),
    # mem 4/16 = 0.25 -> 0.5 x 0.25 = 0.125
    pytest.param((4, 16, 0), {"cpus_free": 64, "mem_free_gb": 4}, 0.125, False, id="quarter-the-mem"),
    # the worst resource counts: cores 3/4 = 0.75, mem 2/8 = 0.25 -> 0.125
    pytest.param((4, 8, 0), {"cpus_free": 3, "mem_free_gb": 2}, 0.125, False, id="worst-of-both"),
    # nothing free -> 0, still a score (ranked, never dropped)
    pytest.param((4, 8, 0), {"cpus_free": 0, "mem_free_gb": 64}, 0.0, False, id="nothing-free"),
    # a negative free figure (over-committed) counts as 0
    pytest.param((4, 8, 0), {"cpus_free": -3, "mem_free_gb": 64}, 0.0, False, id="overcommitted"),
    # nothing known -> unknown_score 0.5 (this table's parameter)
    pytest.param((4, 8, 0), {}, 0.5, None, id="unknown"),
    # only cores known: 4 <= 16 but the 8 GB asked are unreported -> not known to fit: 0.5
    pytest.param((4, 8, 0), {"cpus_free": 16}, 0.5, None, id="only-cores-known"),
    # only mem known and short: 2/8 = 0.25 -> a known shortfall decides: False, 0.125
    pytest.param((4, 8, 0), {"mem_free_gb": 2}, 0.125, False, id="only-mem-known-short"),
    # the job asks no mem: mem is not checked, not even when 0 GB are free ...
    pytest.param((4, 0, 0), {"cpus_free": 4, "mem_free_gb": 0}, 1.0, True, id="no-mem-asked"),
    # ... nor when free memory is unreported: cores alone decide
    pytest.param((4, 0, 0), {"cpus_free": 4}, 1.0, True, id="no-mem-asked-mem-unknown"),
    # gpus only when asked: 0 gpus asked, 0 free -> not checked -> fits
    pytest.param((1, 1, 0), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 0}, 1.0, True, id="gpus-not-asked"),
    # 2 gpus asked, 1 free: 1/2 -> 0.25
    pytest.param((1, 1, 2), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 1}, 0.25, False, id="half-the-gpus"),
    # 1 gpu asked, 0 free -> 0
    pytest.param((1, 1, 1), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 0}, 0.0, False, id="no-gpu-free"),
    # 2 gpus asked, 2 free -> fits
    pytest.param((1, 1, 2), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 2}, 1.0, True, id="gpus-fit"),
    # a GPU job on a site without GPU figures: cores and mem enough, gpus unknown ->
    # not known to fit: unknown_score 0.5
    pytest.param((1, 1, 2), {"cpus_free": 8, "mem_free_gb": 8}, 0.5, None, id="gpus-unknown"),
    # gpus unknown but cores known short: 2/4 = 0.5 -> False, 0.25 (the shortfall decides)
    pytest.param((4, 8, 1), {"cpus_free": 2, "mem_free_gb": 64}, 0.25, False, id="gpus-unknown-cores-short"),
    # no gpus asked and only gpus known: cores and mem unknown, nothing known -> 0.5
    pytest.param((1, 1, 0), {"gpus_free": 0}, 0.5, None, id="only-gpus-known-not-asked"),
    # mem is in GB on both sides, no MiB anywhere: 31.25 GB free (32000 MiB / 1024)
    # fits a 31 GB job ...
    pytest.param((1, 31, 0), {"cpus_free": 1, "mem_free_gb": 31.25}, 1.0, True, id="mem-gb-fits"),
    # ... but not a 32 GB one: 31.25/32 = 0.9765625 -> 0.48828125
    pytest.param((1, 32, 0), {"cpus_free": 1, "mem_free_gb": 31.25}, 0.48828125, False, id="mem-gb-short"),
]


@pytest.mark.parametrize(("need", "free", "score", "fits"), FIT_CASES)
def test_fit_now(need: tuple[float, float, float], free: dict[str, float], score: float, fits: bool | None) -> None:
    cores, mem, gpus = need
    job = JobFacts("t", cores=cores, mem=mem, gpus=gpus)
    r = term_score(fit_now(0.5), x(free, job=job))
    assert r.score == pytest.approx(score)
    assert r.raw["fits"] is fits
    assert r.level is None
    # gpus appear in the raw figures only when the job asks for them
    assert ("gpus_needed" in r.raw) is (gpus > 0)


@pytest.mark.parametrize(
    ("need", "free", "unknown_score", "score", "fits", "worst"),
    [
        # nothing known: unknown_score as configured, whatever it is
        ((4, 8, 0), {}, 0.8, 0.8, None, None),
        ((4, 8, 0), {}, 0.0, 0.0, None, None),
        # cores known and enough (worst 4/4 -> 1), mem unknown: unknown_score
        ((4, 8, 0), {"cpus_free": 16}, 0.8, 0.8, None, 1.0),
        ((4, 8, 0), {"cpus_free": 16}, 0.5, 0.5, None, 1.0),
        ((4, 8, 0), {"cpus_free": 16}, 0.2, 0.2, None, 1.0),
        # a GPU job on a site that reports cores and memory but no GPUs: unknown_score
        ((1, 4, 1), {"cpus_free": 8, "mem_free_gb": 8}, 0.8, 0.8, None, 1.0),
        ((1, 4, 1), {"cpus_free": 8, "mem_free_gb": 8}, 0.1, 0.1, None, 1.0),
        # a known shortfall is False whatever is unknown: min(unknown_score, 0.5) x 2/4
        ((4, 8, 1), {"cpus_free": 2, "mem_free_gb": 64}, 0.8, 0.25, False, 0.5),  # 0.5 x 0.5
        ((4, 8, 1), {"cpus_free": 2}, 0.1, 0.05, False, 0.5),  # 0.1 x 0.5
        # free beyond the need counts as 1 (min(1, 64/8)): worst is the cores' 6/4 -> 1
        ((4, 8, 0), {"cpus_free": 6, "mem_free_gb": 64}, 0.1, 1.0, True, 1.0),
    ],
)
def test_fit_now_partly_unknown(need: tuple[float, float, float], free: dict[str, float], unknown_score: float,
                                score: float, fits: bool | None, worst: float | None) -> None:
    cores, mem, gpus = need
    job = JobFacts("t", cores=cores, mem=mem, gpus=gpus)
    r = term_score(fit_now(unknown_score), x(free, job=job))
    assert r.score == pytest.approx(score)
    assert r.raw["fits"] is fits
    _, values = evaluated(fit_now(unknown_score), x(free, job=job))
    (got,) = values.parts["worst"].tolist()
    assert (None if math.isnan(got) else got) == worst


def test_fit_now_raw_and_summary() -> None:
    r = term_score(fit_now(), x({"cpus_free": 2, "mem_free_gb": 64}, job=JobFacts("t", cores=4, mem=8)))
    assert r.raw == {"cores_needed": 4, "cores_free": 2, "mem_gb_needed": 8, "mem_gb_free": 64, "fits": False}
    assert r.summary == "does not fit now (50% of the need is free)"
    # 7.99 GB free of 8 (8,180 MiB from HTCondor) does not fit: it read "100% of the need is free".
    almost = term_score(fit_now(), x({"cpus_free": 8, "mem_free_gb": 7.99}, job=JobFacts("t", cores=4, mem=8)))
    assert almost.summary == "does not fit now (99% of the need is free)"
    assert term_score(fit_now(), x({"cpus_free": 8}, job=JobFacts("t", cores=4))).summary == "fits now"
    assert term_score(fit_now(), x({})).summary == "free capacity unknown"
    # a GPU job without GPU figures: the raw figures say which one is missing
    r = term_score(fit_now(), x({"cpus_free": 8, "mem_free_gb": 8}, job=JobFacts("t", cores=1, mem=1, gpus=1)))
    expected = {"cores_needed": 1, "cores_free": 8, "mem_gb_needed": 1, "mem_gb_free": 8,
                "gpus_needed": 1, "gpus_free": None, "fits": None}
    assert list(r.raw.items()) == list(expected.items())
    assert r.summary == "free capacity unknown"


def test_fit_now_a_destination_that_cannot_fit_scores_lower_than_one_that_can() -> None:
    job = JobFacts("t", cores=4, mem=8)
    fits = term_score(fit_now(), x({"cpus_free": 4, "mem_free_gb": 8}, job=job)).score
    almost = term_score(fit_now(), x({"cpus_free": 3.99, "mem_free_gb": 8}, job=job)).score
    # at most 0.5 when it does not fit: a step, not a slope, at the boundary
    assert fits == 1.0 and almost < 0.5


@pytest.mark.parametrize("unknown_score", [
    # a known shortfall scores min(unknown_score, 0.5) x worst, never above unknown_score
    0.5, 0.8, 1.0, 0.3, 0.0,
])
def test_fit_now_more_free_cores_never_scores_lower_with_memory_unreported(unknown_score: float) -> None:
    job = JobFacts("t", cores=4, mem=8)
    short = term_score(fit_now(unknown_score), x({"cpus_free": 3}, job=job))  # 3/4: False, min(u, 0.5) x 0.75
    enough = term_score(fit_now(unknown_score), x({"cpus_free": 4}, job=job))  # mem unreported: None, u
    assert (short.raw["fits"], enough.raw["fits"]) == (False, None)
    assert enough.score >= short.score


# -- geo ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "km", "tolerance"),
    [
        (PARIS, LONDON, 343.5, 1.0),  # Paris - London, ~343.5 km
        (PARIS, PARIS, 0.0, 1e-9),
        ((0.0, 0.0), (0.0, 1.0), EQUATOR_DEGREE_KM, 1e-3),  # 2 pi R / 360
        ((0.0, 179.5), (0.0, -179.5), EQUATOR_DEGREE_KM, 1e-3),  # across the date line
        ((90.0, 0.0), (-90.0, 0.0), 20015.114, 0.01),  # pole to pole: pi x 6371.0088
        ((0.0, 0.0), (0.0, 180.0), 20015.114, 0.01),  # antipodes
    ],
)
def test_great_circle_km(a: tuple[float, float], b: tuple[float, float], km: float, tolerance: float) -> None:
    assert great_circle_km(*a, *b) == pytest.approx(km, abs=tolerance)
    assert great_circle_km(*b, *a) == pytest.approx(km, abs=tolerance)


# -- data_locality --------------------------------------------------------------------------
def ds(store: str, size: float, location: tuple[float, float] | None) -> DatasetInput:
    return DatasetInput(store, size, location)


LOCALITY_CASES = [
    # data where the destination is: 0 km -> 1
    pytest.param((0.0, 0.0), [ds("s", 10, (0.0, 0.0))], 0.0, 1.0, id="same-place"),
    # one degree along the equator: 111.195 km
    # score = 1 - ln(1 + 111.195/100) / ln(1 + 20000/100) = 1 - 0.74761 / 5.30330 = 0.85903
    pytest.param((0.0, 0.0), [ds("s", 10, (0.0, 1.0))], EQUATOR_DEGREE_KM, 0.85903, id="one-degree"),
    # size weighting: 3 bytes at 0 km and 1 byte at 4 degrees (444.78 km):
    # (3 x 0 + 1 x 444.78) / 4 = 111.195 km -> 0.85903
    pytest.param((0.0, 0.0), [ds("a", 3, (0.0, 0.0)), ds("b", 1, (0.0, 4.0))], EQUATOR_DEGREE_KM, 0.85903,
                 id="size-weighted"),
    # the same stores with the sizes swapped: (3 x 444.78 + 1 x 0) / 4 = 333.585 km
    # 1 - ln(4.33585) / 5.30330 = 1 - 1.46692 / 5.30330 = 0.72340
    pytest.param((0.0, 0.0), [ds("a", 1, (0.0, 0.0)), ds("b", 3, (0.0, 4.0))], 3 * EQUATOR_DEGREE_KM, 0.72340,
                 id="size-weighted-swapped"),
    # all sizes 0: plain mean, (0 + 111.195) / 2 = 55.598 km
    # 1 - ln(1.55598) / 5.30330 = 1 - 0.44211 / 5.30330 = 0.91664
    pytest.param((0.0, 0.0), [ds("a", 0, (0.0, 0.0)), ds("b", 0, (0.0, 1.0))], EQUATOR_DEGREE_KM / 2, 0.91664,
                 id="zero-sizes-plain-mean"),
    # a dataset without a known location is left out: only the 1-degree one counts
    pytest.param((0.0, 0.0), [ds("s", 10, (0.0, 1.0)), ds("unknown", 1e12, None)], EQUATOR_DEGREE_KM, 0.85903,
                 id="unlocated-input-ignored"),
    # Paris - London 343.56 km: 1 - ln(4.4356) / 5.30330 = 1 - 1.48966 / 5.30330 = 0.71911
    pytest.param(PARIS, [ds("london", 5, LONDON)], 343.56, 0.71911, id="paris-london"),
    # the cap (20000 km) is about half the globe; antipodes, 20015.1 km, are beyond it -> 0
    pytest.param((0.0, 0.0), [ds("s", 1, (0.0, 180.0))], 20015.114, 0.0, id="antipodes"),
]


@pytest.mark.parametrize(("location", "datasets", "km", "score"), LOCALITY_CASES)
def test_data_locality(location: tuple[float, float], datasets: list[DatasetInput], km: float, score: float) -> None:
    r = term_score(data_locality(), x(location=location, datasets=datasets))
    assert r.raw["mean_km"] == pytest.approx(km, abs=0.1)
    assert r.score == pytest.approx(score, abs=1e-4)
    assert r.level is None


@pytest.mark.parametrize(
    ("location", "datasets", "score"),
    [
        # no inputs: neutral, 1 for every candidate, whether its location is known or not
        ((0.0, 0.0), [], 1.0),
        (None, [], 1.0),
        # inputs, none with a known location: neutral too
        ((0.0, 0.0), [ds("s", 10, None)], 1.0),
        (None, [ds("s", 10, None)], 1.0),
        # located inputs but the destination's location is unknown: unknown_score 0.25
        (None, [ds("s", 10, (0.0, 1.0))], 0.25),
    ],
)
def test_data_locality_neutral_and_unknown(location: tuple[float, float] | None, datasets: list[DatasetInput],
                                           score: float) -> None:
    r = term_score(data_locality(unknown_score=0.25), x(location=location, datasets=datasets))
    assert r.score == score
    assert "note" in r.raw


def test_data_locality_nearer_scores_higher() -> None:
    data = [ds("paris", 100, PARIS)]
    london = term_score(data_locality(), x(location=LONDON, datasets=data)).score
    # Frankfurt is ~478 km from Paris, farther than London
    frankfurt = term_score(data_locality(), x(location=(50.1109, 8.6821), datasets=data)).score
    assert 1.0 > london > frankfurt > 0.0


@pytest.mark.parametrize(
    ("configured", "context", "expected"),
    [
        # config's coordinates beat the request's context
        (PARIS, {"latitude": 51.5074, "longitude": -0.1278}, PARIS),
        (PARIS, None, PARIS),
        # no config: the TPV context's latitude/longitude
        (None, {"latitude": 51.5074, "longitude": -0.1278}, LONDON),
        (None, {"latitude": 0, "longitude": 180}, (0.0, 180.0)),  # ints, at the limit
        # nothing usable -> unknown
        (None, None, None),
        (None, {}, None),
        (None, {"latitude": 51.5}, None),  # half a coordinate
        (None, {"latitude": "51.5", "longitude": "0"}, None),  # strings
        (None, {"latitude": True, "longitude": 0.0}, None),  # booleans are not numbers
        (None, {"latitude": 91.0, "longitude": 0.0}, None),  # out of range
        (None, {"latitude": 0.0, "longitude": -180.5}, None),
        (None, {"latitude": math.nan, "longitude": 0.0}, None),
        (None, {"latitude": 0.0, "longitude": math.inf}, None),
        (None, {"latitude": 10**400, "longitude": 0.0}, None),  # no float holds it: out of range, no error
        (None, ["latitude", "longitude"], None),  # not a mapping
    ],
)
def test_candidate_location(configured: tuple[float, float] | None, context: Any,
                            expected: tuple[float, float] | None) -> None:
    lat, lon = _coordinates([context], [configured])
    assert (None if math.isnan(lat[0]) else (lat[0], lon[0])) == expected
    # what data_locality makes of it: the distance from there, or "location unknown"
    data = [ds("s", 10, (0.0, 0.0))]
    r = term_score(data_locality(), x(location=configured, context=context, datasets=data))
    if expected is None:
        assert (r.raw, r.summary) == ({"note": "destination location unknown"}, "location unknown")
    else:
        assert r.raw["mean_km"] == pytest.approx(great_circle_km(*expected, 0.0, 0.0), abs=0.1)


# -- tpv_score -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tpv_score", "scale", "expected"),
    [
        (None, 1.0, 0.5),  # no tag score: neutral
        (0, 1.0, 0.5),  # 1 / (1 + e^0) = 0.5
        (1, 1.0, 0.731059),  # 1 / (1 + e^-1)
        (-1, 1.0, 0.268941),  # 1 / (1 + e^1)
        (2, 2.0, 0.731059),  # 1 / (1 + e^(-2/2))
        (5, 1.0, 0.993307),  # 1 / (1 + e^-5)
        (-0.5, 1.0, 0.377541),  # 1 / (1 + e^0.5)
        (100, 1.0, 1.0),  # saturates
    ],
)
def test_tpv_score(tpv_score: float | None, scale: float, expected: float) -> None:
    r = term_score(tpv(scale), x(tpv_score=tpv_score))
    assert r.score == pytest.approx(expected, abs=1e-6)
    assert r.raw == {"tpv_score": tpv_score}


@pytest.mark.parametrize("tpv_score", [-1000.0, -1e12])
def test_tpv_score_very_negative_scores_about_zero(tpv_score: float) -> None:
    # e^1000 overflows a float: the logistic must be computed in its stable form
    # (the API accepts tag scores down to -1e12)
    r = term_score(tpv(1.0), x(tpv_score=tpv_score))
    assert r.score == pytest.approx(0.0, abs=1e-9)


# -- every term in [0, 1] --------------------------------------------------------------------------
_num = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
_maybe_num = st.none() | _num
_coord = st.tuples(st.floats(-90, 90), st.floats(-180, 180))
_tool_figures = st.builds(ToolFigures, count=_num, median_queue_s=_maybe_num, median_run_s=_maybe_num)
_term_inputs = st.builds(
    TermInput,
    # down to the tiniest sizes the API accepts (cores > 0): free_slots caps, never overflows
    job=st.builds(JobFacts, tool_id=st.just("t"), cores=st.floats(5e-324, 1e4),
                  mem=st.just(0.0) | st.floats(5e-324, 1e5), gpus=st.floats(0, 16)),
    candidate=st.builds(Candidate, id=st.just("d"),
                        tpv_score=st.none() | st.floats(-1e12, 1e12)),  # the API's range
    figures=st.builds(
        DestinationFigures,
        id=st.just("d"),
        queued=_maybe_num,
        running=_maybe_num,
        cpus_free=st.none() | st.floats(-100, 1e5),
        mem_free_gb=st.none() | st.floats(-100, 1e6),
        gpus_free=st.none() | st.floats(-4, 64),
        median_queue_s=_maybe_num,
        median_run_s=_maybe_num,
    ),
    tool_stats=st.lists(st.tuples(st.sampled_from([TOOL, TOOL_UNVERSIONED, TOOL_SHORT]), _tool_figures), max_size=3),
    location=st.none() | _coord,
    datasets=st.lists(st.builds(DatasetInput, object_store_id=st.just("s"), size=st.floats(0, 1e15),
                                location=st.none() | _coord), max_size=4),
    defaults=st.builds(Defaults, queue_s=_num, run_s=st.floats(1, 1e6)),
)
ALL_TERMS = [term for term, _ in build_terms(
    DEFAULT_TERMS | {"finish_time": {"weight": 1.0, "scale_s": 60.0, "cap_s": 604800.0}})]


@settings(max_examples=500, deadline=None)
@given(_term_inputs)
def test_property_every_term_scores_within_zero_and_one(ti: TermInput) -> None:
    for term in ALL_TERMS:
        r = term_score(term, ti)
        assert 0.0 <= r.score <= 1.0, (term.name, r)


@pytest.mark.parametrize(("cores", "mem"), [(1e-320, 0.0), (4.0, 1e-320)])
def test_queue_wait_tiny_job_sizes_do_not_overflow(cores: float, mem: float) -> None:
    # 16 / 1e-320 = inf would overflow floor(); the slots are capped instead. The other resource
    # holds 16/4 = 4 or 16/... >= 4 jobs, so the queue is absorbed: ahead = max(0, 3 + 1 - 4) = 0
    # -> wait = median queue 60 -> 0.9
    r = term_score(queue_wait(), x({"queued": 3, "running": 1, "median_queue_s": 60, "cpus_free": 16.0,
                              "mem_free_gb": 16.0}, job=JobFacts("t", cores=cores, mem=mem)))
    assert r.score == pytest.approx(0.9)


@st.composite
def _sized_inputs(draw: st.DrawFn) -> TermInput:
    """Any term input, then job sizes and free capacity on the scale of real
    sites, half the time, so that "a few more cores free" often crosses a slot or the
    job's need."""
    ti: TermInput = draw(_term_inputs)
    if draw(st.booleans()):
        return ti
    job = JobFacts("t", cores=draw(st.integers(1, 16)), mem=draw(st.sampled_from([0, 1, 4, 8, 16])),
                   gpus=draw(st.sampled_from([0, 0, 1, 2])))
    figures = ti.figures.model_copy(update={
        "queued": draw(st.none() | st.integers(0, 20)), "running": draw(st.none() | st.integers(0, 20)),
        "cpus_free": draw(st.none() | st.integers(-4, 64)), "mem_free_gb": draw(st.none() | st.integers(0, 128)),
        "gpus_free": draw(st.none() | st.integers(0, 4))})
    return dataclasses.replace(ti, job=job, figures=figures)


@settings(max_examples=1000, deadline=None)
@given(_sized_inputs(), st.sampled_from(["cpus_free", "mem_free_gb"]),
       st.integers(0, 16) | st.floats(0, 1e5), st.integers(0, 20) | st.floats(0, 1e5),
       st.floats(0.0, 1.0))
def test_property_more_free_capacity_or_fewer_queued_never_lowers_wait_or_fit(
        ti: TermInput, attr: str, more: float, fewer: float, unknown_score: float) -> None:
    """More free cores or memory: at least as many free slots, so the wait can only drop,
    and every known fraction can only rise, so the fit can only rise. Fewer queued: fewer
    ahead. Whatever unknown_score is."""
    qw, fit = queue_wait(60, 604800), fit_now(unknown_score)
    d = ti.figures
    if getattr(d, attr) is not None:
        more_free = dataclasses.replace(ti, figures=d.model_copy(update={attr: getattr(d, attr) + more}))
        assert term_score(qw, more_free).raw["free_slots"] >= term_score(qw, ti).raw["free_slots"]
        assert term_score(qw, more_free).raw["expected_wait_s"] <= term_score(qw, ti).raw["expected_wait_s"]
        assert term_score(qw, more_free).score >= term_score(qw, ti).score
        assert term_score(fit, more_free).score >= term_score(fit, ti).score
    if d.queued is not None:
        fewer_queued = dataclasses.replace(ti, figures=d.model_copy(update={"queued": max(0.0, d.queued - fewer)}))
        assert term_score(qw, fewer_queued).score >= term_score(qw, ti).score


def test_registry_holds_the_terms() -> None:
    assert sorted(REGISTRY) == ["carbon", "data_locality", "finish_time", "fit_now", "queue_wait", "run_time",
                                "staging_time", "tpv_score"]
    assert list(DEFAULT_TERMS) == ["queue_wait", "run_time", "fit_now", "data_locality", "tpv_score"]
    # config knows each term's parameters, the core each term: the same names on both sides
    assert sorted(TERM_PARAMS) == sorted(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_term_takes_the_parameters_config_validates(name: str) -> None:
    # build_terms passes every validated parameter but the weight as a keyword
    takes = [p for p in inspect.signature(REGISTRY[name]).parameters]
    assert sorted(takes) == sorted(set(TERM_PARAMS[name].model_fields) - {"weight"})


# -- tool id fallback forms --------------------------------------------------------------------------
FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp"


@pytest.mark.parametrize(
    ("tool_id", "forms"),
    [
        # toolshed id with version: exact, without version, owner/repo/tool
        (f"{FASTP}/0.23.4+galaxy0",
         [(TOOL, f"{FASTP}/0.23.4+galaxy0"), (TOOL_UNVERSIONED, FASTP), (TOOL_SHORT, "iuc/fastp/fastp")]),
        # toolshed id without version: the id itself is already unversioned
        (FASTP, [(TOOL, FASTP), (TOOL_SHORT, "iuc/fastp/fastp")]),
        # repo and tool names differ
        ("toolshed.g2.bx.psu.edu/repos/devteam/column_maker/Add_a_column1/2.0",
         [(TOOL, "toolshed.g2.bx.psu.edu/repos/devteam/column_maker/Add_a_column1/2.0"),
          (TOOL_UNVERSIONED, "toolshed.g2.bx.psu.edu/repos/devteam/column_maker/Add_a_column1"),
          (TOOL_SHORT, "devteam/column_maker/Add_a_column1")]),
        # built-in tools: only the exact id
        ("upload1", [(TOOL, "upload1")]),
        ("Cut1", [(TOOL, "Cut1")]),
        ("__DATA_FETCH__", [(TOOL, "__DATA_FETCH__")]),
        # too short to be a toolshed id
        ("toolshed.g2.bx.psu.edu/repos/iuc/fastp", [(TOOL, "toolshed.g2.bx.psu.edu/repos/iuc/fastp")]),
    ],
)
def test_tool_id_forms(tool_id: str, forms: list[tuple[str, str]]) -> None:
    assert tool_id_forms(tool_id) == forms


def test_stats_field() -> None:
    assert stats_field(TOOL_SHORT, "iuc/fastp/fastp") == "tool_short:iuc/fastp/fastp"
