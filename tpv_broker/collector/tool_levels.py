"""Per-(tool, destination) figures at every fallback level, precomputed once
per cycle so a rank request looks up at most three hash fields."""

from __future__ import annotations

import math
from collections import defaultdict

from tpv_broker.core.models import ToolFigures
from tpv_broker.core.tool_ids import stats_field, tool_id_forms


def merge_figures(figures: list[ToolFigures]) -> ToolFigures:
    """Several tool versions on one destination (or several Galaxies'
    figures of one tool there): counts add up, and medians
    become their count-weighted mean (an approximation: the true median of
    the union is not recoverable from per-version medians). Exact sums
    (fsum): the result does not depend on the order the versions were read
    in, so a merged refresh builds the same levels as a full read."""
    if len(figures) == 1:
        return figures[0]
    count = math.fsum(f.count for f in figures)

    def weighted(attr: str) -> float | None:
        known = [(f.count, getattr(f, attr)) for f in figures if getattr(f, attr) is not None and f.count > 0]
        n = math.fsum(c for c, _ in known)
        return math.fsum(c * v for c, v in known) / n if n else None

    ats = [f.at for f in figures if f.at is not None]
    return ToolFigures(
        count=count,
        median_queue_s=weighted("median_queue_s"),
        median_run_s=weighted("median_run_s"),
        perc_95_run_s=weighted("perc_95_run_s"),
        at=max(ats) if ats else None,
    )


def tool_levels(exact: dict[str, dict[str, ToolFigures]]) -> dict[str, dict[str, ToolFigures]]:
    """exact tool id -> dest -> figures  =>  "level:form" -> dest -> figures."""
    grouped: dict[str, dict[str, list[ToolFigures]]] = defaultdict(lambda: defaultdict(list))
    for tool_id, per_dest in exact.items():
        for level, form in tool_id_forms(tool_id):
            for dest_id, figures in per_dest.items():
                grouped[stats_field(level, form)][dest_id].append(figures)
    return {field: {d: merge_figures(fs) for d, fs in per_dest.items()} for field, per_dest in grouped.items()}
