"""tool_levels() (tpv_broker/collector/tool_levels.py): per-(tool,
destination) figures at every fallback level, precomputed per cycle."""

from __future__ import annotations

import pytest

from tpv_broker.collector.tool_levels import tool_levels
from tpv_broker.core.models import ToolFigures

FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp"
OLD, NEW = f"{FASTP}/0.23.2", f"{FASTP}/0.23.4+galaxy0"

OLD_D1 = ToolFigures(count=10, median_queue_s=60, median_run_s=100, perc_95_run_s=300, at=1000)
NEW_D1 = ToolFigures(count=30, median_queue_s=20, median_run_s=200, perc_95_run_s=500, at=2000)
NEW_D2 = ToolFigures(count=5, median_queue_s=7, median_run_s=70, perc_95_run_s=700, at=1500)
UPLOAD_D1 = ToolFigures(count=7, median_queue_s=1, median_run_s=2, at=900)


def test_two_versions_on_one_destination() -> None:
    levels = tool_levels({OLD: {"d1": OLD_D1}, NEW: {"d1": NEW_D1, "d2": NEW_D2}, "upload1": {"d1": UPLOAD_D1}})
    assert set(levels) == {
        f"tool:{OLD}", f"tool:{NEW}", "tool:upload1",
        f"tool_unversioned:{FASTP}", "tool_short:iuc/fastp/fastp",
    }
    # the exact level is kept as it is
    assert levels[f"tool:{OLD}"] == {"d1": OLD_D1}
    assert levels[f"tool:{NEW}"] == {"d1": NEW_D1, "d2": NEW_D2}
    # d1 ran both versions: counts add up, medians become count-weighted means
    #   count        = 10 + 30 = 40
    #   median_queue = (10 x 60 + 30 x 20) / 40 = (600 + 600) / 40 = 30
    #   median_run   = (10 x 100 + 30 x 200) / 40 = 7000 / 40 = 175
    #   perc_95_run  = (10 x 300 + 30 x 500) / 40 = 18000 / 40 = 450
    #   at           = newest of 1000 and 2000 = 2000
    merged = ToolFigures(count=40, median_queue_s=30, median_run_s=175, perc_95_run_s=450, at=2000)
    # d2 ran only the new version: its figures as they are
    expected = {"d1": merged, "d2": NEW_D2}
    assert levels[f"tool_unversioned:{FASTP}"] == expected
    assert levels["tool_short:iuc/fastp/fastp"] == expected


def test_built_in_tools_only_at_level_tool() -> None:
    levels = tool_levels({"upload1": {"d1": UPLOAD_D1}, "Cut1": {"d2": UPLOAD_D1}})
    assert levels == {"tool:upload1": {"d1": UPLOAD_D1}, "tool:Cut1": {"d2": UPLOAD_D1}}


def test_an_unversioned_id_is_exact_and_short_only() -> None:
    # gxadmin reported the id without a version: no separate tool_unversioned entry
    levels = tool_levels({FASTP: {"d1": OLD_D1}})
    assert levels == {f"tool:{FASTP}": {"d1": OLD_D1}, "tool_short:iuc/fastp/fastp": {"d1": OLD_D1}}


def test_the_short_id_merges_toolsheds() -> None:
    # the same owner/repo/tool from two toolsheds: separate unversioned ids, one short id
    # count 10 + 30 = 40; median_queue (10 x 60 + 30 x 20) / 40 = 30
    test_fastp = "testtoolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp"
    levels = tool_levels({OLD: {"d1": OLD_D1}, f"{test_fastp}/0.1": {"d1": NEW_D1}})
    assert levels[f"tool_unversioned:{FASTP}"] == {"d1": OLD_D1}
    assert levels[f"tool_unversioned:{test_fastp}"] == {"d1": NEW_D1}
    short = levels["tool_short:iuc/fastp/fastp"]["d1"]
    assert (short.count, short.median_queue_s) == (40, 30)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # a median missing in one version: the mean of the known ones, weighted by their counts only
        # median_queue: only b knows it -> 20; median_run: (10 x 100 + 30 x 200) / 40 = 175; count 40
        (ToolFigures(count=10, median_run_s=100), ToolFigures(count=30, median_queue_s=20, median_run_s=200),
         ToolFigures(count=40, median_queue_s=20, median_run_s=175)),
        # a version with count 0 does not weigh: median_queue 20 (b only); count 0 + 30 = 30
        (ToolFigures(count=0, median_queue_s=9999), ToolFigures(count=30, median_queue_s=20),
         ToolFigures(count=30, median_queue_s=20)),
        # no counts at all: no median can be weighted -> unknown
        (ToolFigures(count=0, median_queue_s=5), ToolFigures(count=0, median_queue_s=7),
         ToolFigures(count=0)),
        # `at` unknown in one: the other's
        (ToolFigures(count=1, at=None), ToolFigures(count=1, at=50), ToolFigures(count=2, at=50)),
    ],
)
def test_merging(a: ToolFigures, b: ToolFigures, expected: ToolFigures) -> None:
    levels = tool_levels({f"{FASTP}/1": {"d": a}, f"{FASTP}/2": {"d": b}})
    assert levels[f"tool_unversioned:{FASTP}"]["d"] == expected
    assert levels["tool_short:iuc/fastp/fastp"]["d"] == expected


def test_empty() -> None:
    assert tool_levels({}) == {}
