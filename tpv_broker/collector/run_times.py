"""The run-time statistics as one set of figures per (tool, destination):
each destination's summary of them, and how a read of the newest points
only updates a kept set so that it equals what a read of the whole window
gives. Pure: no InfluxDB, no Redis."""

from __future__ import annotations

import math

from tpv_broker.core.models import ToolFigures

# exact tool id -> destination -> figures of its newest point
ToolStats = dict[str, dict[str, ToolFigures]]
# destination -> (count-weighted median queue s, median run s, newest point)
DestinationRunTimes = dict[str, tuple[float | None, float | None, float | None]]


def destination_run_times(tool_stats: ToolStats) -> DestinationRunTimes:
    """Per destination: its tools' median queue and run times weighted by
    their job counts, and its newest point. The sums are exact (fsum), so
    the figures do not depend on the order the tools were read in: a
    merged set gives the same as a full read."""
    sums: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}
    newest: dict[str, float] = {}
    for per_destination in tool_stats.values():
        for dest_id, f in per_destination.items():
            jobs_q, queue, jobs_r, run = sums.setdefault(dest_id, ([], [], [], []))
            if f.count > 0 and f.median_queue_s is not None:
                jobs_q.append(f.count)
                queue.append(f.count * f.median_queue_s)
            if f.count > 0 and f.median_run_s is not None:
                jobs_r.append(f.count)
                run.append(f.count * f.median_run_s)
            if f.at is not None:
                newest[dest_id] = max(f.at, newest.get(dest_id, f.at))
    return {
        dest_id: (_weighted(jobs_q, queue), _weighted(jobs_r, run), newest.get(dest_id))
        for dest_id, (jobs_q, queue, jobs_r, run) in sums.items()
    }


def _weighted(jobs: list[float], sums: list[float]) -> float | None:
    n = math.fsum(jobs)
    return math.fsum(sums) / n if n else None


def supersedes(new: ToolFigures, kept: ToolFigures | None) -> bool:
    """Whether ``new`` replaces ``kept`` for one (tool, destination): the
    newer point wins; a point written again with the same time replaces
    the old one's fields in InfluxDB, so here too."""
    if kept is None or kept.at is None:
        return True
    if new.at is None:
        return False
    return new.at > kept.at or (new.at == kept.at and new != kept)


def merge_newer(kept: ToolStats, newer: ToolStats, expire_at_or_before: float) -> ToolStats | None:
    """``kept`` updated by ``newer`` (the figures of the points read since
    the last read): per (tool, destination) the figures of the newest
    point, without those whose newest point is at or before
    ``expire_at_or_before`` (a read of the whole window would no longer see
    them). None when that changes nothing, so that the kept set, and what
    was built from it, can stay as it is."""
    updates = [(tool_id, dest_id, f) for tool_id, per_destination in newer.items()
               for dest_id, f in per_destination.items()
               if f.at is not None and f.at > expire_at_or_before
               and supersedes(f, kept.get(tool_id, {}).get(dest_id))]
    expired = [(tool_id, dest_id) for tool_id, per_destination in kept.items()
               for dest_id, f in per_destination.items() if f.at is None or f.at <= expire_at_or_before]
    if not updates and not expired:
        return None
    merged = {tool_id: dict(per_destination) for tool_id, per_destination in kept.items()}
    for tool_id, dest_id in expired:
        del merged[tool_id][dest_id]
    for tool_id, dest_id, f in updates:
        merged.setdefault(tool_id, {})[dest_id] = f
    return {tool_id: per_destination for tool_id, per_destination in merged.items() if per_destination}
