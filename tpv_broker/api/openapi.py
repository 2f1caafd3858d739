"""``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (Swagger UI).

The request schemas are generated from the pydantic models the handlers
validate with (``schemas.py``), the answer schemas from ``responses.py``, the
examples come from ``examples.py``: the spec cannot say something the API
does not do without a test failing. Swagger UI's files are served from the
``flask-swagger-ui`` package: no CDN, which Galaxy servers often cannot
reach."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, make_response, render_template, send_from_directory
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from tpv_broker.config.settings import BrokerConfig

from . import auth
from . import examples as ex
from .responses import RESPONSE_MODELS
from .schemas import ProcessDataRequest, RankRequest
from .state import get_state

bp = Blueprint("openapi", __name__, template_folder="web/templates", static_folder="web/static",
               static_url_path="/docs/static")

REF = "#/components/schemas/{model}"
# Swagger UI builds its DOM with inline styles; everything else is ours.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The files of Swagger UI's dist/ that /docs loads; nothing else is served from it.
SWAGGER_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})

# Descriptions of the request fields, which schemas.py leaves to the docs.
# Every entry must name a real field: build_spec fails otherwise.
FIELD_DOCS: dict[str, dict[str, str]] = {
    "RankRequest": {
        "job": "the job being mapped",
        "destinations": "TPV's candidates, each id once (the API checks; JSON Schema cannot say it); "
                        "every one comes back exactly once",
        "datasets": "the job's inputs, for data locality",
        "object_stores": "coordinates of object stores config does not know (config wins)",
    },
    "JobIn": {
        "id": "Galaxy's job id (string or integer): a job ranked again moves its in-flight charge",
        "tool_id": "full toolshed id with version, or a built-in tool id",
        "cores": "cores the job asks for",
        "mem": "memory in GB, as TPV counts it (1 GB = 1024 MiB)",
        "gpus": "GPUs the job asks for",
    },
    "DestinationIn": {
        "id": "the TPV destination id",
        "context": "the destination's TPV context (latitude/longitude locate it)",
        "tpv_score": "TPV's tag score, d.score(entity); also breaks ties",
    },
    "DatasetIn": {"object_store_id": "where the input lives", "size": "its size in bytes"},
    "ProcessDataRequest": {
        "job_info": "the job (tool_id, cores, mem GB, gpus)",
        "destinations": "candidates with optional latitude/longitude, each id once; other keys are ignored",
        "objectstores": "object store id -> coordinates",
        "datasets": "any key -> {object_store_id, size in bytes}",
    },
}


def _app_version() -> str:
    try:
        return version("tpv-broker")
    except PackageNotFoundError:  # a source tree that was never installed
        from .. import __version__

        return __version__


def _component_schemas(config: BrokerConfig) -> dict[str, Any]:
    documented: tuple[type[BaseModel], ...] = (RankRequest, ProcessDataRequest, *RESPONSE_MODELS)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in documented]
    _, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    for model, fields in FIELD_DOCS.items():
        props = schemas[model]["properties"]
        for name, text in fields.items():
            if name not in props:
                raise KeyError(f"FIELD_DOCS names {model}.{name}, which the model does not have")
            props[name]["description"] = text
    # JobIn.id takes integers too (converted before the pattern check),
    # which a str field's schema cannot say.
    job_id = schemas["JobIn"]["properties"]["id"]
    job_id["anyOf"].insert(1, {"type": "integer"})
    for model in ("RankRequest", "ProcessDataRequest"):
        schemas[model]["properties"]["destinations"]["maxItems"] = config.api.max_candidates
    return schemas


def _json(schema_name: str, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": {"$ref": REF.format(model=schema_name)}}
    if examples:
        body["examples"] = examples
    return {"application/json": body}


def _answer(description: str, schema_name: str, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": _json(schema_name, examples)}


def _post(summary: str, description: str, request_schema: str, requests: dict[str, Any],
          answer_schema: str, answers_200: dict[str, Any], answers_400: dict[str, Any],
          config: BrokerConfig, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["rank"],
        "summary": summary,
        "description": description,
        "requestBody": {"required": True, "content": _json(request_schema, requests)},
        # Optional: no token is required unless the API is configured to ask for one.
        "security": [{}, {"bearerAuth": []}],
        "responses": {
            "200": _answer("Every candidate, best first. Also 200 when degraded, so Galaxy keeps dispatching.",
                           answer_schema, answers_200),
            "400": _answer("Bad input: each problem names its field. Never a 500 for user input.",
                           "ErrorResponse", answers_400),
            "401": {"description": "Missing, malformed or wrong bearer token (only when the API is configured to "
                                   "require one: api.auth_tokens / api.auth_tokens_file).",
                    "headers": {"WWW-Authenticate": {"description": 'Bearer realm="tpv-broker", with error="..." '
                                                     "when a token was sent", "schema": {"type": "string"}}},
                    "content": _json("ErrorResponse", {"missing": {"summary": "No Authorization header",
                                                                 "value": auth.refusal(auth.MISSING)}})},
            "413": _answer(f"Body over api.max_request_bytes ({config.api.max_request_bytes} bytes).",
                           "ErrorResponse", {"too_large": ex.answer_413(config.api.max_request_bytes)}),
            "429": {"description": "The token's tenant is over its rate limit (api.tenants.<name>.rate_per_s); "
                                   "nothing was ranked or charged.",
                    "headers": {"Retry-After": {"description": "whole seconds until the tenant may ask again",
                                                "schema": {"type": "integer"}}},
                    "content": _json("ErrorResponse", {"over_limit": {"summary": "Over the rate limit", "value": {
                        "error": "Too Many Requests",
                        "message": "tenant: usegalaxy-eu is over its rate limit (50 requests/s, burst 200): "
                                   "retry in 0.020 s",
                        "errors": [{"field": "tenant", "problem": "usegalaxy-eu is over its rate limit "
                                    "(50 requests/s, burst 200): retry in 0.020 s"}]}}})},
            "500": {"$ref": "#/components/responses/InternalError"},
        },
    }
    if parameters:
        op["parameters"] = parameters
    return op


def _html(summary: str, description: str) -> dict[str, Any]:
    return {"get": {"tags": ["pages"], "summary": summary, "description": description,
                    "responses": {"200": {"description": "an HTML page",
                                          "content": {"text/html": {"schema": {"type": "string"}}}}}}}


def build_spec(config: BrokerConfig) -> dict[str, Any]:
    """The OpenAPI document for an API running with ``config`` (limits in
    the descriptions and the 413 example come from it)."""
    api = config.api
    explain = {"name": "explain", "in": "query", "required": False,
               "description": "1, true or yes: add per candidate its place, group, score, reason and "
                              "per-term breakdown",
               "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TPV Broker",
            "version": _app_version(),
            "summary": "Metrics-informed ranking of Galaxy job destinations for TPV",
            "description": (
                "Orders TPV's candidate destinations from a Redis snapshot of the sites' metrics, which a "
                "collector refreshes from InfluxDB. InfluxDB is never on the request path.\n\n"
                f"A snapshot older than api.max_snapshot_age_s ({api.max_snapshot_age_s:g} s), no snapshot or "
                "no Redis: the answer is TPV's own order with `degraded: true`, still status 200. "
                "Unknown paths answer 404 and wrong methods 405, as JSON in the same error shape."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "rank", "description": "Order TPV's candidates"},
            {"name": "health", "description": "For load balancers and monitoring"},
            {"name": "pages", "description": "Pages for people"},
        ],
        "paths": {
            "/api/rank": {"post": _post(
                "Rank candidate destinations for a job",
                "What TPV's rank clause (the tpv-broker-client) calls, once per job. Every candidate comes "
                f"back exactly once, best first; nothing is added. At most {api.max_candidates} candidates.",
                "RankRequest", ex.RANK_REQUESTS, "RankResponse", ex.RANK_ANSWERS_200, ex.RANK_ANSWERS_400,
                config, [explain])},
            "/process_data": {"post": _post(
                "Rank candidates, the prototype's request and answer shape",
                "Kept so existing TPV configs written for the prototype keep working. Unlike the prototype it "
                "never drops a candidate. Unknown keys are ignored here (only here).",
                "ProcessDataRequest", ex.PROCESS_DATA_REQUESTS, "ProcessDataResponse",
                ex.PROCESS_DATA_ANSWERS_200, ex.PROCESS_DATA_ANSWERS_400, config)},
            "/health": {"get": {
                "tags": ["health"], "summary": "Liveness: the process answers",
                "responses": {"200": _answer("Alive", "HealthResponse", ex.HEALTH_ANSWERS)}}},
            "/ready": {"get": {
                "tags": ["health"], "summary": "Readiness: Redis answers and the snapshot is fresh",
                "responses": {
                    "200": _answer("Ready", "ReadyResponse", ex.READY_ANSWERS_200),
                    "503": _answer("Not ready: rank answers would be degraded (TPV's order)", "ReadyResponse",
                                   ex.READY_ANSWERS_503)}}},
            "/metrics": {"get": {
                "tags": ["health"], "summary": "Prometheus metrics",
                "description": "Requests and latency by endpoint and outcome, degraded answers by reason, and the "
                               "snapshot's age, size and in-flight charges read from Redis at scrape time.",
                "responses": {"200": {"description": "Prometheus text exposition format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/": _html("Status page",
                       "Each destination's state, free capacity, queue and score (for a 1-core job of a tool "
                       "with no history), the last collector cycle and the snapshot age. Renders without Redis "
                       "or a snapshot too, saying so."),
            "/docs": _html("This documentation (Swagger UI)", "Served from the API itself, no CDN."),
            "/openapi.json": {"get": {
                "tags": ["pages"], "summary": "This OpenAPI document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": _component_schemas(config),
            "responses": {"InternalError": _answer("A bug: logged with its traceback, never sent",
                                                   "ErrorResponse", {"internal": ex.ANSWER_500})},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "Only when the API is configured with a token; otherwise not needed."}},
        },
    }


def swagger_ui_dir() -> Path:
    return Path(str(files("flask_swagger_ui") / "dist"))


@bp.get("/openapi.json")
def spec() -> Response:
    # Built once per app: the config does not change while it runs.
    built = current_app.extensions.get("tpv_broker_openapi")
    if built is None:
        built = current_app.extensions["tpv_broker_openapi"] = build_spec(get_state(current_app).config)
    return jsonify(built)


# /docs/ too (people type it, status pages of other tools link it): the
# page's links are absolute, so it works from either.
@bp.get("/docs", strict_slashes=False)
def docs() -> Response:
    resp = make_response(render_template("docs.html"))
    resp.headers["Content-Security-Policy"] = DOCS_CSP
    return resp


@bp.get("/docs/swagger-ui/<path:filename>")
def swagger_asset(filename: str) -> Response:
    if filename not in SWAGGER_ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_dir(), filename, max_age=3600)
