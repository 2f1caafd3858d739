"""Merging a read of the newest run-time points into the kept ones, and
each destination's summary of them: pure, table-driven."""

from __future__ import annotations

import pytest

from tpv_broker.collector.presets import PRESETS, CycleData
from tpv_broker.collector.rows import Row
from tpv_broker.collector.run_times import ToolStats, destination_run_times, merge_newer
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.core.models import ToolFigures


def fig(count: float, at: float, queue: float | None = 10.0, run: float | None = 100.0) -> ToolFigures:
    return ToolFigures(count=count, at=at, median_queue_s=queue, median_run_s=run)


KEPT: ToolStats = {
    "bwa": {"d1": fig(4, 1000), "d2": fig(2, 500)},
    "cut": {"d1": fig(1, 900)},
}

MERGE_CASES = [
    # (what the read since the last one gave, expiry cut-off, the kept set after it; None: unchanged)
    ("nothing new", {}, 0.0, None),
    ("the same points read again (the overlap)", {"bwa": {"d1": fig(4, 1000)}}, 0.0, None),
    ("a newer point replaces the kept one", {"bwa": {"d2": fig(7, 2000)}}, 0.0,
     {"bwa": {"d1": fig(4, 1000), "d2": fig(7, 2000)}, "cut": {"d1": fig(1, 900)}}),
    ("an older point does not", {"bwa": {"d1": fig(9, 999)}}, 0.0, None),
    ("the same time written again replaces its figures", {"cut": {"d1": fig(3, 900)}}, 0.0,
     {"bwa": {"d1": fig(4, 1000), "d2": fig(2, 500)}, "cut": {"d1": fig(3, 900)}}),
    ("a new tool and a new destination are added", {"new": {"d3": fig(1, 2000)}, "cut": {"d9": fig(1, 2000)}}, 0.0,
     {"bwa": {"d1": fig(4, 1000), "d2": fig(2, 500)}, "cut": {"d1": fig(1, 900), "d9": fig(1, 2000)},
      "new": {"d3": fig(1, 2000)}}),
    # cut-off 900: points at or before it leave, as the window of a full read (time > now - lookback) drops them
    ("points at or before the cut-off leave, a tool with none left too", {}, 900.0,
     {"bwa": {"d1": fig(4, 1000)}}),
    ("a new point at or before the cut-off is not taken", {"old": {"d1": fig(1, 900)}}, 900.0,
     {"bwa": {"d1": fig(4, 1000)}}),
]


@pytest.mark.parametrize(("newer", "cut_off", "expected"), [c[1:] for c in MERGE_CASES],
                         ids=[c[0] for c in MERGE_CASES])
def test_merging_the_newest_points(newer: ToolStats, cut_off: float, expected: ToolStats | None) -> None:
    before = {tool: dict(per_dest) for tool, per_dest in KEPT.items()}
    assert merge_newer(KEPT, newer, cut_off) == expected
    assert before == KEPT  # the kept set is never changed in place: a cycle may be using it


def test_a_destinations_run_times_are_its_tools_weighted_by_their_jobs() -> None:
    stats: ToolStats = {
        "bwa": {"d1": fig(4, 1000, queue=10, run=100)},
        "cut": {"d1": fig(1, 1500, queue=60, run=None), "d2": fig(0, 700)},
    }
    # d1: queue (4 x 10 + 1 x 60) / 5 = 20; run 4 x 100 / 4 = 100 (cut has none); newest point 1500.
    # d2: no jobs, so no medians; its newest point still counts.
    assert destination_run_times(stats) == {"d1": (20.0, 100.0, 1500.0), "d2": (None, None, 700.0)}


def test_a_destinations_run_times_do_not_depend_on_the_order_the_tools_came_in() -> None:
    # Jobs x median: 1e16, 1, 1. Summed left to right, 1e16 + 1 + 1 loses
    # both ones; the other way round it keeps them. A merged refresh holds
    # its tools in another order than a full read: the figures must agree.
    tools = {"big": fig(1e6, 1, queue=1e10), "one": fig(1, 1, queue=1.0), "two": fig(1, 1, queue=1.0)}
    forward = {name: {"d1": f} for name, f in tools.items()}
    backward = {name: {"d1": f} for name, f in reversed(tools.items())}
    assert destination_run_times(forward) == destination_run_times(backward)


@pytest.mark.parametrize("order", [1, -1], ids=["newer last", "newer first"])
def test_two_ids_aliased_to_one_destination_give_the_newer_points_figures(order: int) -> None:
    # Whatever order InfluxDB returned the series in: a merged refresh holds
    # them in another order than a full read.
    rows = [Row(at=1000.0, tags={"destination_id": "old_name", "tool_id": "bwa"}, values={"count": 5.0}),
            Row(at=2000.0, tags={"destination_id": "new_name", "tool_id": "bwa"}, values={"count": 9.0})][::order]
    data = CycleData(aliases={"old_name": "d1", "new_name": "d1"})
    PRESETS["destination_queue_run_time"].apply_rows(rows, data, CollectorSettings())
    assert data.tool_stats == {"bwa": {"d1": ToolFigures(count=9.0, at=2000.0)}}
