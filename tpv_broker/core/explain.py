"""A rank result as plain JSON-ready data: per candidate its place, group,
total, each term's raw input, score, weight, contribution and fallback
level, and the reason for its place. Used by the API and the CLI."""

from __future__ import annotations

from typing import Any

from tpv_broker.core.result import RankResult


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def explain(result: RankResult) -> list[dict[str, Any]]:
    out = []
    for position, p in enumerate(result.placements, start=1):
        entry: dict[str, Any] = {"position": position, "id": p.id, "group": p.group.value, "reason": p.reason}
        if p.health is not None:
            # The error reports feed the status page's chart, not an answer.
            entry["health"] = p.health.model_dump(exclude_none=True, exclude={"reports"})
        if p.cap is not None:
            entry["cap"] = p.cap
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


def answer(result: RankResult, with_explanation: bool) -> dict[str, Any]:
    """The body of a rank answer, as the API sends it (and ``tpv-broker rank --json`` prints it)."""
    body: dict[str, Any] = {
        "destinations": result.ids,
        "snapshot_age_s": None if result.snapshot_age_s is None else round(result.snapshot_age_s, 3),
        "degraded": result.degraded,
    }
    if result.degraded_code is not None:
        body["degraded_code"] = result.degraded_code.value
    if result.degraded_reason:
        body["degraded_reason"] = result.degraded_reason
    if with_explanation:
        body["explain"] = explain(result)
        if result.lagging_sources:
            body["sources"] = result.lagging_sources
    return body
