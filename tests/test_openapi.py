"""/openapi.json and /docs: the document is valid OpenAPI 3.1, its schemas
are the ones the API validates with, and every example in it is what the
real app (on a real HTTP server and a real redis-server) answers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from tpv_broker.api import create_app
from tpv_broker.api import examples as ex
from tpv_broker.api.openapi import FIELD_DOCS, SWAGGER_ASSETS, build_spec, swagger_ui_dir
from tpv_broker.api.schemas import ProcessDataRequest, RankRequest
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

from .web_helpers import PageReader, dump_dom, serving

NOW = 1_700_000_000.0
KEYS = KeySchema("oa")
# The example answers are computed without in-flight charges, which would
# make each answer depend on the requests before it.
EXAMPLE_ENV = {"TPV_BROKER_INFLIGHT_ENABLED": "false"}


def _config(**env: str) -> BrokerConfig:
    return load_config(environ={**EXAMPLE_ENV, **env})


def _app(store: SnapshotStore, config: BrokerConfig | None = None, now: float = NOW) -> Flask:
    return create_app(config or _config(), store=store, clock=lambda: now)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return build_spec(_config())


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KEYS)


@pytest.fixture
def api(store: SnapshotStore) -> Iterator[str]:
    """The app on a real HTTP server, on a real Redis holding the examples' snapshot."""
    store.publish(ex.example_snapshot(NOW))
    with serving(_app(store)) as url:
        yield url


def _schema(spec: dict[str, Any], media: dict[str, Any]) -> dict[str, Any]:
    # The components go along so every $ref resolves inside one document.
    return {**media["application/json"]["schema"], "components": spec["components"]}


def _check(spec: dict[str, Any], media: dict[str, Any], instance: Any) -> None:
    OAS31Validator(_schema(spec, media)).validate(instance)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield path, method, op


def _resolve(spec: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in answer:
        return spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer


# -- the document -----------------------------------------------------------------------------------
def test_served_document_is_valid_openapi_31(api: str) -> None:
    served = requests.get(f"{api}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "application/json"
    doc = served.json()
    validate_spec(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"
    assert doc == build_spec(_config())


def test_every_endpoint_of_the_app_is_documented(spec: dict[str, Any]) -> None:
    app = create_app(_config(), store=SnapshotStore(connect_redis("redis://127.0.0.1:1/0", 0.1), KEYS))
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule), m.lower())
              for r in app.url_map.iter_rules() if not r.endpoint.endswith("static")
              and r.endpoint != "openapi.swagger_asset"
              for m in r.methods - {"HEAD", "OPTIONS"}}
    documented = {(p, m) for p, m, _ in _operations(spec)}
    assert routes == documented


def test_request_schemas_are_the_validation_models(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for model in (RankRequest, ProcessDataRequest):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        served = json.loads(json.dumps(schemas[model.__name__]))
        for prop in served["properties"].values():
            # Added for the docs: descriptions, and api.max_candidates as maxItems.
            prop.pop("description", None)
            prop.pop("maxItems", None)
        assert served == generated


def test_field_docs_name_real_fields(spec: dict[str, Any]) -> None:
    for model, fields in FIELD_DOCS.items():
        props = spec["components"]["schemas"][model]["properties"]
        for name, text in fields.items():
            assert props[name]["description"] == text


def test_limits_in_the_document_come_from_config() -> None:
    doc = build_spec(_config(TPV_BROKER_API_MAX_REQUEST_BYTES="2048", TPV_BROKER_API_MAX_CANDIDATES="7"))
    rank = doc["paths"]["/api/rank"]["post"]
    assert "At most 7 candidates" in rank["description"]
    for model in ("RankRequest", "ProcessDataRequest"):
        assert doc["components"]["schemas"][model]["properties"]["destinations"]["maxItems"] == 7
    too_large = rank["responses"]["413"]["content"]["application/json"]["examples"]["too_large"]["value"]
    assert too_large["errors"] == [{"field": "body", "problem": "request body larger than 2048 bytes"}]


def test_rank_endpoints_accept_an_optional_bearer_token(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path in ("/api/rank", "/process_data"):
        assert spec["paths"][path]["post"]["security"] == [{}, {"bearerAuth": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


# -- every example against the schemas and the real app ----------------------------------------------
def test_every_answer_example_matches_its_schema(spec: dict[str, Any]) -> None:
    """(Request examples include rejected ones: see the test after next.)"""
    checked = 0
    for _, _, op in _operations(spec):
        for media in [_resolve(spec, a)["content"] for a in op["responses"].values() if "content" in _resolve(spec, a)]:
            for example in media.get("application/json", {}).get("examples", {}).values():
                _check(spec, media, example["value"])
                checked += 1
    assert checked >= 15


def _post_examples(spec: dict[str, Any]) -> list[Any]:
    cases = []
    for path, method, op in _operations(spec):
        if method != "post":
            continue
        for status, answer in op["responses"].items():
            for name, example in _resolve(spec, answer).get("content", {}).get("application/json", {}).get(
                    "examples", {}).items():
                if "x-request" in example:
                    cases.append(pytest.param(path, status, name, id=f"{path}-{status}-{name}"))
    return cases


SPEC_FOR_IDS = build_spec(_config())


@pytest.mark.parametrize(("path", "status", "name"), _post_examples(SPEC_FOR_IDS))
def test_documented_answer_is_the_real_answer(api: str, spec: dict[str, Any], path: str, status: str,
                                              name: str) -> None:
    op = spec["paths"][path]["post"]
    answer = op["responses"][status]
    example = answer["content"]["application/json"]["examples"][name]
    request = op["requestBody"]["content"]["application/json"]["examples"][example["x-request"]]
    query = f"?{example['x-query']}" if "x-query" in example else ""
    resp = requests.post(f"{api}{path}{query}", json=request["value"], timeout=10)
    assert resp.status_code == int(status), resp.text
    _check(spec, answer["content"], resp.json())
    assert resp.json() == example["value"]


def test_every_request_example_is_posted(spec: dict[str, Any]) -> None:
    """Each request example is answered by at least one documented answer,
    so the test above sends every one of them."""
    for path, _, op in _operations(spec):
        if "requestBody" not in op:
            continue
        requested = set(op["requestBody"]["content"]["application/json"]["examples"])
        answered = {e["x-request"] for a in op["responses"].values()
                    for e in _resolve(spec, a).get("content", {}).get("application/json", {}).get(
                        "examples", {}).values() if "x-request" in e}
        assert requested == answered, path


# Rules JSON Schema cannot state; the API checks them (and says so in the field's description).
SCHEMA_CANNOT_SAY = {("/api/rank", "invalid_duplicate_id")}


def test_request_examples_valid_by_schema_exactly_when_accepted(api: str, spec: dict[str, Any]) -> None:
    """The request schema and the API's validation agree on every example,
    but for the ones named in SCHEMA_CANNOT_SAY, which the API rejects."""
    for path, _, op in _operations(spec):
        if "requestBody" not in op:
            continue
        media = op["requestBody"]["content"]
        verdicts = set()
        for name, example in media["application/json"]["examples"].items():
            schema_ok = OAS31Validator(_schema(spec, media)).is_valid(example["value"])
            status = requests.post(f"{api}{path}", json=example["value"], timeout=10).status_code
            if (path, name) in SCHEMA_CANNOT_SAY:
                assert schema_ok and status == 400, (path, name, status)
                continue
            assert (status == 200) == schema_ok, (path, name, status)
            verdicts.add(schema_ok)
        assert verdicts == {True, False}, path  # both kinds are shown


def test_answers_with_in_flight_accounting_on_match_the_schema(store: SnapshotStore, spec: dict[str, Any]) -> None:
    """With charges on (the default), answers differ from the examples but keep their shape."""
    store.publish(ex.example_snapshot(NOW))
    op = spec["paths"]["/api/rank"]["post"]
    with serving(_app(store, load_config(environ={}))) as url:
        for _ in range(2):
            for example in op["requestBody"]["content"]["application/json"]["examples"].values():
                resp = requests.post(f"{url}/api/rank?explain=1", json=example["value"], timeout=10)
                _check(spec, op["responses"][str(resp.status_code)]["content"], resp.json())


def test_health_and_ready_examples(store: SnapshotStore, spec: dict[str, Any]) -> None:
    ready = spec["paths"]["/ready"]["get"]["responses"]
    health = spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]

    def answer(s: SnapshotStore, now: float = NOW) -> requests.Response:
        with serving(_app(s, now=now)) as url:
            return requests.get(f"{url}/ready", timeout=10)

    with serving(_app(store)) as url:
        assert requests.get(f"{url}/health", timeout=10).json() == health["examples"]["alive"]["value"]
    cases = {("503", "no_snapshot"): answer(store)}
    store.publish(ex.example_snapshot(NOW))
    cases[("200", "ready")] = answer(store)
    cases[("503", "stale")] = answer(store, now=NOW - ex.SNAPSHOT_AGE_S + 412)
    closed = SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)
    cases[("503", "redis_down")] = answer(closed)
    for status in ("200", "503"):
        assert {n for s, n in cases if s == status} == set(ready[status]["content"]["application/json"]["examples"])
    for (status, name), resp in cases.items():
        content = ready[status]["content"]
        assert resp.status_code == int(status), name
        _check(spec, content, resp.json())
        assert resp.json() == content["application/json"]["examples"][name]["value"], name


def test_413_and_500_examples(store: SnapshotStore, spec: dict[str, Any]) -> None:
    config = _config(TPV_BROKER_API_MAX_REQUEST_BYTES="1024")
    doc = build_spec(config)
    app = _app(store, config)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    big = {"job": {"tool_id": "t"}, "destinations": [{"id": f"pulsar_{i:04d}"} for i in range(100)]}
    with serving(app) as url:
        too_large = requests.post(f"{url}/api/rank", json=big, timeout=10)
        internal = requests.get(f"{url}/boom", timeout=10)
    answer_413 = doc["paths"]["/api/rank"]["post"]["responses"]["413"]["content"]
    assert too_large.status_code == 413
    _check(doc, answer_413, too_large.json())
    assert too_large.json() == answer_413["application/json"]["examples"]["too_large"]["value"]
    answer_500 = doc["components"]["responses"]["InternalError"]["content"]
    assert internal.status_code == 500
    _check(doc, answer_500, internal.json())
    assert internal.json() == answer_500["application/json"]["examples"]["internal"]["value"]


def test_a_changed_answer_fails_its_schema(spec: dict[str, Any]) -> None:
    """The answer schemas are strict enough to catch a handler that changes shape."""
    media = spec["paths"]["/api/rank"]["post"]["responses"]["200"]["content"]
    good = {"destinations": ["a"], "snapshot_age_s": 1.0, "degraded": False}
    _check(spec, media, good)
    validator = OAS31Validator(_schema(spec, media))
    for bad in ({**good, "extra": 1}, {**good, "degraded": "no"}, {"destinations": ["a"], "degraded": False},
                {**good, "degraded_reason": None}):
        assert not validator.is_valid(bad), bad


# -- /docs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_page_loads_only_local_assets(api: str, path: str) -> None:
    page = requests.get(f"{api}{path}", timeout=10, allow_redirects=False)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/") and not r.startswith("//") for r in refs), refs
    for ref in refs:
        asset = requests.get(f"{api}{ref}", timeout=10)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0


def test_swagger_assets_come_from_the_package(api: str) -> None:
    for name in SWAGGER_ASSETS:
        served = requests.get(f"{api}/docs/swagger-ui/{name}", timeout=10)
        assert served.status_code == 200
        assert served.content == (swagger_ui_dir() / name).read_bytes()
    for name in ("swagger-ui.js", "../__init__.py", "..%2F__init__.py", "index.template.html"):
        assert requests.get(f"{api}/docs/swagger-ui/{name}", timeout=10).status_code == 404, name


def test_docs_render_the_operations_in_chromium(api: str, spec: dict[str, Any], tmp_path: Path) -> None:
    dom = dump_dom(f"{api}/docs", tmp_path / "profile", virtual_time_ms=15_000)
    # Swagger UI draws each operation as <div class="opblock opblock-<method>"> holding
    # an element with data-path="<path>".
    shown, method = [], None
    for tag, a in PageReader(dom).tags:
        classes = a.get("class", "").split()
        if tag == "div" and "opblock" in classes:
            method = next(c.removeprefix("opblock-") for c in classes if c.startswith("opblock-"))
        elif "data-path" in a and method is not None:
            shown.append((method, a["data-path"]))
            method = None
    assert sorted(shown) == sorted((m, p) for p, m, _ in _operations(spec))
    assert "TPV Broker" in dom and "OAS 3.1" in dom
    assert "Rank candidate destinations for a job" in dom


def test_every_get_answers_a_documented_status_and_media_type(api: str, spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        if method != "get":
            continue
        resp = requests.get(f"{api}{path}", timeout=10)
        answer = _resolve(spec, op["responses"][str(resp.status_code)])
        media = resp.headers["Content-Type"].split(";")[0]
        assert media in answer["content"], (path, media)
        if media == "application/json":
            OAS31Validator(_schema(spec, answer["content"])).validate(resp.json())


def test_401_example(store: SnapshotStore) -> None:
    """With token auth on, a request without one gets the documented 401."""
    config = _config(TPV_BROKER_API_AUTH_TOKENS="an-api-token-0123456789")
    doc = build_spec(config)
    with serving(_app(store, config)) as url:
        refused = requests.post(f"{url}/api/rank", json={"job": {"tool_id": "t"}, "destinations": [{"id": "a"}]},
                                timeout=10)
    answer_401 = doc["paths"]["/api/rank"]["post"]["responses"]["401"]
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    _check(doc, answer_401["content"], refused.json())
    assert refused.json() == answer_401["content"]["application/json"]["examples"]["missing"]["value"]
