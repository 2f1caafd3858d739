"""A rank result as plain JSON-ready data: per candidate its place, group,
total, each term's raw input, score, weight, contribution and fallback
level, and the reason for its place. Used by the API and the CLI."""

from __future__ import annotations

from typing import Any

from .ranking import RankResult


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def explain(result: RankResult) -> list[dict[str, Any]]:
    out = []
    for position, p in enumerate(result.placements, start=1):
        entry: dict[str, Any] = {"position": position, "id": p.id, "group": p.group, "reason": p.reason}
        if p.total is not None:
            entry["score"] = round(p.total * 100, 2)
            entry["terms"] = [
                {
                    "term": t.term,
                    "raw": {k: _round(v) for k, v in t.raw.items()},
                    "score": round(t.score, 4),
                    "weight": t.weight,
                    "contribution": round(t.contribution * 100, 2),
                    "level": t.level,
                }
                for t in p.terms
            ]
        out.append(entry)
    return out
