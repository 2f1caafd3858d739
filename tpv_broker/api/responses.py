"""The answers the API sends, as pydantic models: the source of the response
schemas in ``/openapi.json``. The handlers build their JSON directly (the
rank path is hot); tests check every real answer against these schemas, so
a handler that changes its answer fails them until the model follows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from tpv_broker.core.result import DegradedReason, Group


def _no_default(schema: dict[str, Any]) -> None:
    # A key that is left out of the answer, not sent as null.
    schema.pop("default", None)


def _absent(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=_no_default)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermExplanation(_Answer):
    term: str = Field(description="score term: queue_wait, run_time, fit_now, data_locality, tpv_score")
    raw: dict[str, Any] = Field(description="the figures the term was computed from")
    score: float = Field(ge=0, le=1, description="the term's score, 1 best")
    weight: float = Field(ge=0, description="its weight from scoring.terms")
    contribution: float = Field(description="weight x score / sum of weights, in points of the 0-100 total")
    level: str | None = Field(description="the fallback level its figure came from (tool, tool_unversioned, "
                                          "tool_short, destination, default), null if not a per-tool figure")


class HealthPinExplanation(_Answer):
    state: Literal["drained", "healthy"]
    reason: str
    by: str
    at: float = Field(description="when it was pinned (epoch s)")


class HealthExplanation(_Answer):
    state: Literal["healthy", "degraded", "excluded", "probation", "drained"]
    since: float = Field(description="when it entered this state (epoch s)")
    counted_from: float | SkipJsonSchema[None] = _absent("errors and placements before this are not held against "
                                                         "it (its last probation began, or a pin ended)")
    errors: float = Field(description="jobs that failed there in the window: those the error reports count, or "
                                      "those that came back to be placed again (returned) if more")
    returned: float = Field(0.0, description="jobs placed there in the window that came back to be placed again "
                                             "(Galaxy resubmitted them)")
    placements: float = Field(description="jobs the broker placed there in the window")
    share: float | SkipJsonSchema[None] = _absent("errors / placements (at most 1)")
    network_share: float | SkipJsonSchema[None] = _absent("the other endpoints' error share over the window")
    reason: str
    score_factor: float = Field(description="its score is multiplied by this (degraded: below 1)")
    probe_share: float | SkipJsonSchema[None] = _absent("on probation: the share of jobs let through as probes")
    pin: HealthPinExplanation | SkipJsonSchema[None] = _absent("an admin's pin (tpv-broker health pin)")


class CapExplanation(_Answer):
    cap: Literal["max_jobs", "max_queued", "max_running", "max_queued_per_running"] = Field(
        description="its tightest cap (destinations.<id>.caps, or the tenant's own)")
    limit: float
    usage: float = Field(description="how much of that cap is used, in-flight charges counted (1: at the cap)")
    jobs: float = Field(description="queued + running + in flight")
    queued: float = Field(description="queued, with the in-flight charges that do not fit now")
    running: float = Field(description="running, with the in-flight charges that fit now")
    score_factor: float = Field(description="its score is multiplied by this (below 1 from soft_from of the cap)")


class ExplainedPlacement(_Answer):
    position: int = Field(ge=1, description="1 = best")
    id: str
    group: Group = Field(
        description="scored: ranked by score; at_cap: scored, but at or over a cap, after the scored ones; "
                    "no_metrics/stale: after those; offline and excluded "
                    "(failing its jobs, drained, or on probation and this job not a probe): last; "
                    "tpv_order: degraded answer in TPV's order")
    reason: str = Field(description="why it is at this place, in words")
    score: float | SkipJsonSchema[None] = _absent("the total, 0-100 (scored candidates only)")
    terms: list[TermExplanation] | SkipJsonSchema[None] = _absent("per-term breakdown (scored candidates only)")
    health: HealthExplanation | SkipJsonSchema[None] = _absent("its destination health, when judged (error counts "
                                                               "read, or pinned by an admin)")
    cap: CapExplanation | SkipJsonSchema[None] = _absent("its tightest cap and how near it is (destinations with caps)")


class LaggingSource(_Answer):
    state: Literal["partial", "stale", "missing"] = Field(
        description="partial: some of its presets failed; stale: not read in the last cycle, its last good "
                    "figures used; missing: nothing recent to use, its figures are not in the snapshot")
    age_s: float | None = Field(description="seconds since it last answered; null if it never did")
    problem: str = Field(description="what went wrong, in words")


class ReadySource(_Answer):
    state: Literal["ok", "partial", "stale", "missing"]
    age_s: float | None = Field(description="seconds since it last answered; null if it never did")


class RankResponse(_Answer):
    destinations: list[str] = Field(description="every candidate exactly once, best first; nothing added")
    snapshot_age_s: float | None = Field(description="age of the snapshot ranked on; null without a snapshot")
    degraded: bool = Field(description="true: no usable snapshot or no Redis, the order is TPV's own "
                                       "(tag score, then input order)")
    degraded_code: DegradedReason | SkipJsonSchema[None] = _absent(
        "why the answer is degraded, as a code (only when it is): no_snapshot, stale_snapshot, redis_unavailable")
    degraded_reason: str | SkipJsonSchema[None] = _absent("why the answer is degraded, in words (only when it is)")
    explain: list[ExplainedPlacement] | SkipJsonSchema[None] = _absent("with ?explain=1: per candidate its "
                                                                       "place, group, score and reason")
    sources: dict[str, LaggingSource] | SkipJsonSchema[None] = _absent(
        "with ?explain=1, and only when some are: the metric sources (InfluxDBs) whose figures are not the "
        "last cycle's, by name (the shared ones and the asking Galaxy's own)")


class ProcessDataResponse(_Answer):
    sorted_destinations: list[str] = Field(description="every candidate exactly once, best first")


class HealthResponse(_Answer):
    status: Literal["ok"]


class ReadyResponse(_Answer):
    ready: bool
    reason: str | SkipJsonSchema[None] = _absent("why not ready (only when not)")
    snapshot_age_s: float | SkipJsonSchema[None] = _absent("age of the snapshot in Redis, if there is one")
    max_snapshot_age_s: float | SkipJsonSchema[None] = _absent("api.max_snapshot_age_s")
    destinations: int | SkipJsonSchema[None] = _absent("destinations in the snapshot")
    sources: dict[str, ReadySource] | SkipJsonSchema[None] = _absent(
        "each metric source's state in the cycle that built the snapshot (the shared ones, and the asking "
        "Galaxy's own)")


class Problem(_Answer):
    field: str = Field(description="the offending field, as a path: job.cores, destinations[2].id, body, url")
    problem: str


class ErrorResponse(_Answer):
    error: str = Field(description="short class of error: invalid request, Request Entity Too Large, ...")
    message: str = Field(description="every problem in one line, field first")
    errors: list[Problem] | SkipJsonSchema[None] = _absent("one entry per problem (absent on a 500)")


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    RankResponse, ProcessDataResponse, HealthResponse, ReadyResponse, ErrorResponse,
)
