"""The finish_time term: expected wait plus run time, in seconds, on one
log scale. Table-driven, the arithmetic in the comments."""

from __future__ import annotations

from typing import Any

import pytest

from tpv_broker.config.terms import check_terms
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, ToolFigures
from tpv_broker.core.scoring import Defaults
from tpv_broker.core.terms import REGISTRY, FinishTime, QueueWait, RunTime
from tpv_broker.core.tool_ids import DEFAULT, DESTINATION, TOOL

from .termkit import TermInput
from .termkit import score as term_score

# ln(1 + CAP/SCALE) = ln 1024, so score = 1 - log2(1 + finish/60) / 10
SCALE, CAP = 60.0, 61380.0
DEFAULTS = Defaults(queue_s=180.0, run_s=1860.0)
JOB = JobFacts("t", cores=4, mem=8)


def x(figures: dict[str, Any], tool_stats: tuple[tuple[str, ToolFigures], ...] = ()) -> TermInput:
    return TermInput(job=JOB, candidate=Candidate("d", None), figures=DestinationFigures(id="d", **figures),
                     tool_stats=tool_stats, location=None, datasets=(), defaults=DEFAULTS)


def finish_time() -> FinishTime:
    return FinishTime(scale_s=SCALE, cap_s=CAP)


CASES = [
    pytest.param(
        # 24 free cores / 4 = 6 slots, queue 0: nothing ahead, wait = median queue 60;
        # run = the destination's median 120 (no tool figure); finish 180 -> 1 - log2(4)/10 = 0.8
        {"queued": 0, "running": 2, "median_run_s": 120, "median_queue_s": 60, "cpus_free": 24, "mem_free_gb": 64},
        (), 180.0, 60.0, 0.8, DESTINATION, id="free-slots",
    ),
    pytest.param(
        # no free cores: ahead = 5 + 1 - 0 = 6; drain = 6 x 210 / 2 running = 630; wait = tool's
        # median queue 60 + 630 = 690; run = the tool's 1170 here; finish 1860 -> 1 - log2(32)/10 = 0.5
        {"queued": 5, "running": 2, "median_run_s": 210, "cpus_free": 0, "mem_free_gb": 64},
        ((TOOL, ToolFigures(count=9, median_queue_s=60, median_run_s=1170)),), 1860.0, 690.0, 0.5, TOOL,
        id="queue-drains-tool-runs",
    ),
    pytest.param(
        # nothing known: wait = default queue 180 + (0 + 1 - 0 slots) x default run 1860 / max(running, 1)
        # = 2040; run = default 1860; finish 3900 -> 1 - log2(66)/10 = 0.39556
        {}, (), 3900.0, 2040.0, 0.39556, DEFAULT, id="defaults",
    ),
]


@pytest.mark.parametrize(("figures", "tool_stats", "finish", "wait", "score", "level"), CASES)
def test_finish_time(figures: dict[str, Any], tool_stats: tuple[tuple[str, ToolFigures], ...], finish: float,
                     wait: float, score: float, level: str) -> None:
    r = term_score(finish_time(), x(figures, tool_stats))
    assert r.score == pytest.approx(score, abs=1e-5)
    assert r.raw["expected_finish_s"] == pytest.approx(finish)
    assert r.raw["expected_wait_s"] == pytest.approx(wait)
    assert r.level == level and f"({level} run time)" in r.summary
    # the same wait as queue_wait's, the same run time as run_time's
    assert r.raw["expected_wait_s"] == term_score(QueueWait(SCALE, CAP), x(figures, tool_stats)).raw["expected_wait_s"]
    assert r.raw["run_s"] == term_score(RunTime(SCALE, CAP), x(figures, tool_stats)).raw["median_run_s"]


def _site(queued: float, run_s: float) -> TermInput:
    # 1 running job, no free cores: the queue drains at median run 600 s per job
    return x({"queued": queued, "running": 1, "median_run_s": 600, "median_queue_s": 0, "cpus_free": 0},
             ((TOOL, ToolFigures(count=9, median_run_s=run_s)),))


@pytest.mark.parametrize(("run_here", "run_there", "here_wins"), [
    # here: queue 1 -> ahead 2 -> wait 1200, +90 s run = 1290; there: queue 3 -> wait 2400 (20 min more),
    # runs 10 % faster, 81 s: 2481. A 90 s job waits less here.
    (90.0, 81.0, True),
    # a 5 h job: here 1200 + 18000 = 19200; there 2400 + 16200 = 18600: 10 % faster saves 30 min > 20 min
    (18000.0, 16200.0, False),
])
def test_a_second_waiting_counts_as_a_second_running(run_here: float, run_there: float, here_wins: bool) -> None:
    term = finish_time()
    here, there = term_score(term, _site(1, run_here)).score, term_score(term, _site(3, run_there)).score
    assert (here > there) is here_wins


def test_finish_time_is_registered_and_validated() -> None:
    assert REGISTRY["finish_time"] is FinishTime
    assert check_terms({"finish_time": {"weight": 1, "scale_s": 60, "cap_s": 604800}}) == []
    assert check_terms({"finish_time": {"weight": 1, "scale_s": 0, "cap_s": 604800}}) == [
        "finish_time.scale_s: Input should be greater than 0"]
