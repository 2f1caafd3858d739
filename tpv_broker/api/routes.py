"""The endpoints. Each handler: parse and validate, read Redis once, call the
pure rank core, answer JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge, TooManyRequests

from tpv_broker.core.explain import answer
from tpv_broker.core.models import SourceStatus
from tpv_broker.core.result import RankResult
from tpv_broker.errors import StoreError
from tpv_broker.logging_setup import event
from tpv_broker.store.rate_limit import retry_after

from .auth import request_tenant, viewer
from .metrics import note_rank_result
from .schemas import ProcessDataRequest, RankRequest, describe_errors, too_many_candidates
from .state import get_state

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


def _read_body() -> bytes:
    """The body, at most api.max_request_bytes of it, or a 413. Flask checks
    a declared Content-Length; a chunked body has none, and werkzeug's
    stream for it stops quietly at the limit (a body cut there that happens
    to be valid JSON was served) or refuses one exactly at it."""
    limit: int = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        # Chunked: the server's own stream ends where the body does.
        data: bytes = request.environ["wsgi.input"].read(limit + 1)
    else:
        data = request.stream.read(limit + 1)  # 413 here if the declared length is over
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _int_or_huge(text: str) -> int | float:
    # Python refuses to read ints of over 4,300 digits: a valid JSON number
    # would read as "not valid JSON" instead of naming its field.
    return int(text) if len(text) <= 4000 else float(text)


def _parse(model: type[BaseModel]) -> Any:
    if not request.is_json:
        raise BadRequest([{"field": "body", "problem": "Content-Type must be application/json"}])
    raw = _read_body()
    # Fast path: pydantic parses and validates the JSON bytes in one go,
    # about twice as fast as json.loads + model_validate. Anything it
    # rejects takes the path below, which names every problem exactly as
    # before (bad JSON, not an object, nesting, each field).
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        pass
    try:
        body = json.loads(raw, parse_int=_int_or_huge)
    except RecursionError:
        raise BadRequest([{"field": "body", "problem": "JSON nested too deeply"}]) from None
    except ValueError:  # not JSON, or not UTF-8/16/32
        body = None
    if body is None:
        raise BadRequest([{"field": "body", "problem": "not valid JSON"}])
    if not isinstance(body, dict):
        raise BadRequest([{"field": "body", "problem": f"must be a JSON object, got {type(body).__name__}"}])
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise BadRequest(describe_errors(e)) from None


def _rank(req: RankRequest) -> tuple[RankResult, Callable[[], object]]:
    """The result, and the in-flight charge to make once it is answered."""
    state = get_state(current_app)
    problem = too_many_candidates(len(req.destinations), state.config.api.max_candidates)
    if problem is not None:
        raise BadRequest([{"field": "destinations", "problem": problem}])
    ranker = state.ranker
    datasets = ranker.datasets([(d.object_store_id, d.size) for d in req.datasets], req.store_locations())
    job = req.job.facts()
    tenant = request_tenant()
    result = ranker.rank(req.candidates(), job, datasets, charge=False, tenant=tenant)
    note_rank_result(result)
    return result, lambda: ranker.charge_first(result, job, tenant=tenant)


def _then(response: Response, after: Callable[[], object]) -> Response:
    """Send ``response``, then run ``after``: the body goes out as the first
    chunk (with its Content-Length, so the client has its whole answer),
    and the server runs ``after`` before it finishes the response. The
    in-flight charge (one Redis round trip) need not delay the answer."""
    body = response.get_data()

    def chunks() -> Iterator[bytes]:
        yield body
        after()

    response.response = chunks()
    response.headers["Content-Length"] = str(len(body))
    return response


def _status(response: Response, result: RankResult) -> Response:
    """A degraded answer (TPV's order) is a 200 unless ``api.degraded_status``
    says 503; its body is the same either way."""
    if result.degraded:
        response.status_code = get_state(current_app).config.api.degraded_status
    return response


def _admit() -> None:
    """Refuse (429) a request over its tenant's rate limit, before any work."""
    state = get_state(current_app)
    tenant = request_tenant()
    wait = state.limiter.wait_s(tenant, state.clock())
    if wait is not None:
        limit = state.limiter.limits[tenant]
        raise TooManyRequests(f"{tenant} is over its rate limit ({limit.rate_per_s:g} requests/s, burst "
                              f"{limit.burst}): retry in {wait:.3f} s", retry_after=int(retry_after(wait)))


@bp.post("/api/rank")
def rank_endpoint() -> Response:
    _admit()
    explain = _explain_asked()
    req: RankRequest = _parse(RankRequest)
    result, charge = _rank(req)
    return _then(_status(jsonify(answer(result, explain)), result), charge)


_EXPLAIN = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _explain_asked() -> bool:
    # ?explain=on answered without the explanation asked for.
    value = request.args.get("explain")
    if value is None:
        return False
    asked = _EXPLAIN.get(value.lower())
    if asked is None:
        raise BadRequest([{"field": "explain", "problem": f"must be one of {', '.join(_EXPLAIN)}, got "
                                                         f"{value[:40]!r}"}])
    return asked


@bp.post("/process_data")
def process_data() -> Response:
    """The prototype's endpoint, so existing TPV configs keep working. Unlike
    the prototype it never drops a candidate."""
    _admit()
    legacy: ProcessDataRequest = _parse(ProcessDataRequest)
    result, charge = _rank(legacy.to_rank_request())
    return _then(_status(jsonify({"sorted_destinations": result.ids}), result), charge)


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


def _source_state(source: SourceStatus, now: float) -> dict[str, Any]:
    age = source.age_s(now)
    return {"state": source.state, "age_s": None if age is None else round(age, 1)}


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    state = get_state(current_app)
    try:
        meta = state.store.read_meta()
    except StoreError as e:
        log.warning("not ready: %s", e, extra=event("not_ready", reason="redis_unavailable"))
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
    sources = meta.sources_seen_by(viewer(state.config))
    if sources:
        now = state.clock()
        body["sources"] = {name: _source_state(s, now) for name, s in sources.items()}
    if age > limit:
        body["reason"] = f"snapshot is {age:.0f} s old (limit {limit:.0f} s)"
        return jsonify(body), 503
    return jsonify(body), 200
