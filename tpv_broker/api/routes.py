"""The endpoints. Each handler: parse and validate, read Redis once, call the
pure rank core, answer JSON."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError

from ..shared.errors import StoreError
from ..shared.explain import explain
from ..shared.ranking import RankResult
from .app import get_state
from .schemas import ProcessDataRequest, RankRequest, describe_errors

log = logging.getLogger("tpv_broker.api")
bp = Blueprint("rank", __name__)


class BadRequest(Exception):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> tuple[Response, int]:
    message = "; ".join(f"{p['field']}: {p['problem']}" for p in exc.problems)
    return jsonify({"error": "invalid request", "message": message, "errors": exc.problems}), 400


def _parse(model: type[BaseModel]) -> Any:
    if not request.is_json:
        raise BadRequest([{"field": "body", "problem": "Content-Type must be application/json"}])
    # Fast path: pydantic parses and validates the JSON bytes in one go,
    # about twice as fast as json.loads + model_validate. Anything it
    # rejects takes the path below, which names every problem exactly as
    # before (bad JSON, not an object, nesting, each field).
    try:
        return model.model_validate_json(request.get_data(cache=True))
    except ValidationError:
        pass
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest([{"field": "body", "problem": "JSON nested too deeply"}]) from None
    if body is None:
        raise BadRequest([{"field": "body", "problem": "not valid JSON"}])
    if not isinstance(body, dict):
        raise BadRequest([{"field": "body", "problem": f"must be a JSON object, got {type(body).__name__}"}])
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise BadRequest(describe_errors(e)) from None


def _rank(req: RankRequest) -> tuple[RankResult, Callable[[], None]]:
    """The result, and the in-flight charge to make once it is answered."""
    state = get_state(current_app)
    limit = state.config.api.max_candidates
    if len(req.destinations) > limit:
        raise BadRequest([{"field": "destinations", "problem": f"at most {limit} candidates, got {len(req.destinations)}"}])
    ranker = state.ranker
    datasets = ranker.datasets([(d.object_store_id, d.size) for d in req.datasets], req.store_locations())
    job = req.job.facts()
    result = ranker.rank([d.candidate() for d in req.destinations], job, datasets, charge=False)
    return result, lambda: ranker.charge_first(result, job)


def _then(response: Response, after: Callable[[], None]) -> Response:
    """Send ``response``, then run ``after``: the body goes out as the first
    chunk (with its Content-Length, so the client has its whole answer),
    and the server runs ``after`` before it finishes the response. The
    in-flight charge is a Redis round trip Galaxy need not wait for."""
    body = response.get_data()

    def chunks() -> Iterator[bytes]:
        yield body
        after()

    response.response = chunks()
    response.headers["Content-Length"] = str(len(body))
    return response


def _answer(result: RankResult, with_explanation: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "destinations": result.ids,
        "snapshot_age_s": None if result.snapshot_age_s is None else round(result.snapshot_age_s, 3),
        "degraded": result.degraded,
    }
    if result.degraded_reason:
        body["degraded_reason"] = result.degraded_reason
    if with_explanation:
        body["explain"] = explain(result)
    return body


@bp.post("/api/rank")
def rank_endpoint() -> Response:
    req: RankRequest = _parse(RankRequest)
    explain = request.args.get("explain", "0").lower() in ("1", "true", "yes")
    result, charge = _rank(req)
    return _then(jsonify(_answer(result, explain)), charge)


@bp.post("/process_data")
def process_data() -> Response:
    """The prototype's endpoint, so existing TPV configs keep working. Unlike
    the prototype it never drops a candidate."""
    legacy: ProcessDataRequest = _parse(ProcessDataRequest)
    result, charge = _rank(legacy.to_rank_request())
    return _then(jsonify({"sorted_destinations": result.ids}), charge)


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    state = get_state(current_app)
    try:
        meta = state.store.read_meta()
    except StoreError as e:
        log.warning("not ready: %s", e)
        return jsonify({"ready": False, "reason": "Redis unavailable"}), 503
    if meta is None:
        return jsonify({"ready": False, "reason": "no snapshot in Redis yet"}), 503
    age = meta.age_s(state.clock())
    limit = state.config.api.max_snapshot_age_s
    body: dict[str, Any] = {"ready": age <= limit, "snapshot_age_s": round(age, 3), "max_snapshot_age_s": limit,
                            "destinations": meta.destinations}
    if meta.stale_since is not None:
        # Still served while younger than the limit; the collector says why it is not replaced.
        body["stale"] = {"since_s": round(max(0.0, state.clock() - meta.stale_since), 3),
                         "failed_cycles": meta.failed_cycles, "reason": meta.stale_reason}
    if meta.problems:
        body["problems"] = meta.problems
    if age > limit:
        body["reason"] = f"snapshot is {age:.0f} s old (limit {limit:.0f} s)"
        return jsonify(body), 503
    return jsonify(body), 200
