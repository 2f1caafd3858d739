"""Generated hostile requests against the app, backed by a REAL redis-server
holding a published snapshot, with auth on: over 10,000 requests (malformed
JSON and bytes, wrong types, missing and unknown fields, huge numbers,
NaN/Infinity, deep nesting, unicode, ids with key-injection characters, bad
content types, wrong methods and paths, odd headers).

Every answer is below 500; every 4xx is JSON naming a field and a problem;
ids are accepted or refused exactly as an independent statement of the id
rules says, naming the field and index. Afterwards every key of the
snapshot is byte-for-byte as published (Redis DUMP), and the only other keys
are the in-flight charges of requests that were accepted.

Reproducible: hypothesis runs derandomized (a fixed seed per test) with no
example database."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpv_broker.api import create_app
from tpv_broker.config.settings import load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.ids import DEFAULT_TENANT
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

NOW = 1_700_000_000.0
PREFIX = "fuzz"
TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy1"
FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

# Everything sent and answered, for the checks at the end.
SENT = {"requests": 0, "accepted_job_ids": set(), "accepted_candidates": set()}


# -- the app on a real Redis with a snapshot -------------------------------------------------------------
def _snapshot() -> Snapshot:
    dests = {
        d: DestinationFigures(id=d, status="online", queued=q, running=r, cpus_free=c, mem_free_gb=m,
                              metrics_at=NOW - 20, live_at=NOW - 20, sources={"queue_by_destination": NOW - 20})
        for d, q, r, c, m in [("pulsar_de", 3, 2, 8, 16), ("pulsar_uk", 10, 3, 19, 37), ("pulsar_it01", 0, 6, 14, 27)]
    }
    stats = {"tool:" + FASTP: {"pulsar_de": ToolFigures(count=12, median_queue_s=38, median_run_s=280)},
             "tool_short:iuc/fastp/fastp": {"pulsar_uk": ToolFigures(count=4, median_run_s=300)},
             "tool:Show beginning1": {"pulsar_it01": ToolFigures(count=3, median_run_s=5)}}
    return Snapshot(meta=SnapshotMeta(created_at=NOW - 5, newest_point_at=NOW - 20, destinations=len(dests),
                                      tools=len(stats), collector="fuzz"), destinations=dests, tool_stats=stats)


def _dump(client: redis.Redis) -> dict[bytes, bytes]:
    return {k: client.dump(k) for k in sorted(client.scan_iter(match=b"*", count=1000))}


@pytest.fixture(scope="module")
def fuzz_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    SnapshotStore(client, KeySchema(PREFIX)).publish(_snapshot())
    try:
        yield client
    finally:
        client.flushall()
        client.close()


@pytest.fixture(scope="module")
def published(fuzz_redis: redis.Redis) -> dict[bytes, bytes]:
    before = _dump(fuzz_redis)
    assert set(before) == {k.encode() for k in KeySchema(PREFIX).live_keys()}
    return before


@pytest.fixture(scope="module")
def api(fuzz_redis: redis.Redis, published: dict[bytes, bytes]) -> FlaskClient:
    config = load_config(environ={"TPV_BROKER_API_AUTH_TOKENS": TOKEN, "TPV_BROKER_API_MAX_CANDIDATES": "50",
                                  "TPV_BROKER_API_MAX_REQUEST_BYTES": "65536"})
    store = SnapshotStore(fuzz_redis, KeySchema(PREFIX))
    return create_app(config, store=store, clock=lambda: NOW).test_client()


# -- what every answer must be ---------------------------------------------------------------------------
def send(api: FlaskClient, method: str, path: str, body: bytes | None = None,
         content_type: str | None = "application/json", headers: dict[str, str] | None = None,
         body_obj: Any = None) -> Any:
    headers = AUTH if headers is None else headers
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["data"] = body
    if content_type is not None:
        kwargs["content_type"] = content_type
    resp = api.open(path, method=method, **kwargs)
    raw = resp.get_data()  # reads the body: the in-flight charge (after the answer) happens here
    SENT["requests"] += 1
    assert resp.status_code < 500, (method, path, body[:300] if body else body, raw[:500])
    assert not 300 <= resp.status_code < 400, (method, path, resp.status_code)  # no redirects to follow
    if method == "HEAD" or (method == "OPTIONS" and resp.status_code == 200):
        return resp  # no body by definition
    if resp.status_code < 300 and not resp.is_json:
        # The status page, /docs (and its assets) and /metrics answer HTML,
        # scripts or Prometheus text when they succeed; every error is JSON.
        page = path.split("?", 1)[0]
        assert page in ("/", "/docs", "/metrics") or page.startswith(("/docs/", "/static/")), (method, path)
        return resp
    payload = json.loads(raw)
    assert isinstance(payload, dict), raw[:300]
    if resp.status_code >= 400:
        assert payload["message"]
        assert payload["errors"], payload
        for e in payload["errors"]:
            assert isinstance(e["field"], str) and e["field"].strip(), payload
            assert isinstance(e["problem"], str) and e["problem"].strip(), payload
    elif method == "POST" and path.split("?", 1)[0] in ("/api/rank", "/process_data"):
        # Every accepted rank request may charge, the legacy one and one
        # sent as raw bytes too: what it sent is what the charges may hold.
        sent = body_obj if isinstance(body_obj, dict) else json.loads(body or b"null")
        legacy = path.startswith("/process_data")
        ids = [d["id"] for d in sent["destinations"]]
        got = payload["sorted_destinations"] if legacy else payload["destinations"]
        assert sorted(got) == sorted(ids)  # never adds, never drops
        SENT["accepted_candidates"].update(ids)
        if not legacy:
            assert payload["degraded"] is False, payload
            if sent["job"].get("id") is not None:
                SENT["accepted_job_ids"].add(str(sent["job"]["id"]))
    return resp


def post_json(api: FlaskClient, body: Any, path: str = "/api/rank", headers: dict[str, str] | None = None) -> Any:
    return send(api, "POST", path, json.dumps(body).encode(), headers=headers, body_obj=body)


# -- generated values ------------------------------------------------------------------------------------
INJECTION = ["*", "?", "[", "]", "{", "}", " ", "  ", "\n", "\r\n", "\t", "\x00", '"', "'", "\\", "é", "\u2028",
             "\ud7ff", "$", "#", "%", ",", ";", "|", "<", ">", "`", "\x7f", "..", ":", "/", "~", "+", "@"]
REAL_TOOL_IDS = [FASTP, "toolshed.g2.bx.psu.edu/repos/iuc/snpeff/snpEff/4.3+T.galaxy1", "upload1", "Cut1",
                 "__SET_METADATA__", "CONVERTER_bam_to_bai", "Show beginning1", "Convert characters1",
                 "Extract genomic DNA 1", "toolshed.example.org:9009/repos/me/t/t/1.0~beta", "interactive_tool_jupyter"]
REAL_DEST_IDS = ["pulsar_de", "pulsar_uk", "pulsar_it01", "pulsar_sk01_tpv", "condor_us", "slurm-gpu",
                 "tpv.pulsar.it01"]
id_text = st.one_of(
    st.lists(st.sampled_from(list(string.ascii_letters[:6] + string.digits[:3] + "_.-:@+/~") + INJECTION),
             max_size=12).map("".join),
    st.sampled_from(REAL_TOOL_IDS + REAL_DEST_IDS + ["a" * 255, "a" * 256, "a" * 512, "a " * 256, "1" * 128,
                                                     "1" * 129, "pulsar_de*", "tpv_broker:snapshot", "x\nDEL y"]),
    st.text(max_size=12),
)

# Independent statements of the id rules (ids.py), to judge each answer by.
_ASCII_ALNUM = set(string.ascii_letters + string.digits)
_DEST_CHARS = _ASCII_ALNUM | set("_.:@+-/")
_TOOL_CHARS = _ASCII_ALNUM | set("_.:@+-/~")
_JOB_CHARS = _ASCII_ALNUM | set("_.-")


def dest_ok(s: str) -> bool:
    return 1 <= len(s) <= 255 and s[0] in _ASCII_ALNUM and set(s) <= _DEST_CHARS


def tool_ok(s: str) -> bool:
    words = s.split(" ")  # single spaces between other characters only
    return (1 <= len(s) <= 512 and (s[0] in _ASCII_ALNUM or s[0] == "_") and all(words)
            and set(s.replace(" ", "")) <= _TOOL_CHARS)


def job_ok(s: str) -> bool:
    return 1 <= len(s) <= 128 and set(s) <= _JOB_CHARS


# Any JSON-ish value, including what strict JSON forbids (NaN, Infinity) and huge ints.
scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats()
           | st.sampled_from([10**400, -(10**400), 1e308, -1e-320, 0.0, -0.0, 2**63, 2**64 + 1])
           | st.text(max_size=20) | st.sampled_from(INJECTION))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
VALID: dict[str, Any] = {
    "job": {"id": 7, "tool_id": FASTP, "cores": 4, "mem": 8, "gpus": 0},
    "destinations": [{"id": "pulsar_de", "tpv_score": 1, "context": {"latitude": 50.1, "longitude": 8.7}},
                     {"id": "pulsar_uk"}, {"id": "pulsar_xx"}],
    "datasets": [{"object_store_id": "s3", "size": 1000}],
    "object_stores": {"s3": {"latitude": 51.0, "longitude": 0.0}},
}
LEGACY: dict[str, Any] = {
    "job_info": {"tool_id": FASTP, "cores": 4, "mem": 8, "gpus": 0},
    "destinations": [{"id": "pulsar_de", "latitude": 50.1, "longitude": 8.7}, {"id": "pulsar_uk"}],
    "objectstores": {"s3": {"latitude": 51.0, "longitude": 0.0}},
    "datasets": {"0": {"object_store_id": "s3", "size": 1000}},
}


def _paths(body: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(body, dict):
        for k, v in body.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(body, list):
        for i, v in enumerate(body):
            out += _paths(v, (*prefix, i))
    return out


def _node(body: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        body = body[part]
    return body


RANK_PATHS = _paths(VALID)
LEGACY_PATHS = _paths(LEGACY)
# Where an unknown field can be added: every object, the top level included.
RANK_OBJECTS = [p for p in [(), *RANK_PATHS] if isinstance(_node(VALID, p), dict)]
LEGACY_OBJECTS = [p for p in [(), *LEGACY_PATHS] if isinstance(_node(LEGACY, p), dict)]


def _replace(body: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target = body
    for part in path[:-1]:
        target = target[part]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def _text(body: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare words a sloppy client would send.
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


# -- 1. one field of a valid request replaced, deleted, or an extra one added --------------------------------------
# Each generated value goes into both endpoints' requests (two requests per example).
@settings(FUZZ, max_examples=1500)
@given(data=st.data(), value=json_values, action=st.sampled_from(["replace", "delete", "extra"]),
       key=st.text(min_size=1, max_size=8))
def test_a_field_replaced_deleted_or_added(api: FlaskClient, data: st.DataObject, value: Any, action: str,
                                           key: str) -> None:
    for base, paths, objects, url in ((VALID, RANK_PATHS, RANK_OBJECTS, "/api/rank"),
                                      (LEGACY, LEGACY_PATHS, LEGACY_OBJECTS, "/process_data")):
        if action == "extra":
            parent = data.draw(st.sampled_from(objects))
            path = (*parent, key + "_x" if key in _node(base, parent) else key)
        else:
            path = data.draw(st.sampled_from(paths))
        body = _replace(base, path, value, delete=action == "delete")
        send(api, "POST", url, _text(body), body_obj=body if url == "/api/rank" else None)


# -- 2. ids: accepted or refused exactly by the rules, naming field and index ----------------------------------------
@settings(FUZZ, max_examples=1500)
@given(tool_id=id_text, job_id=st.one_of(id_text, st.integers(-(10**20), 10**20), st.none()),
       dest_ids=st.lists(id_text, max_size=5, unique=True))
def test_ids_are_checked_before_redis(api: FlaskClient, tool_id: str, job_id: Any, dest_ids: list[str]) -> None:
    job: dict[str, Any] = {"tool_id": tool_id, "cores": 2}
    if job_id is not None:
        job["id"] = job_id
    body = {"job": job, "destinations": [{"id": d} for d in dest_ids]}
    bad_dests = {f"destinations[{i}].id" for i, d in enumerate(dest_ids) if not dest_ok(d)}
    bad_tool = not tool_ok(tool_id)
    bad_job = isinstance(job_id, str) and not job_ok(job_id)
    expected = bad_dests | ({"job.tool_id"} if bad_tool else set()) | ({"job.id"} if bad_job else set())
    legacy = {"job_info": {"tool_id": tool_id}, "destinations": [{"id": d} for d in dest_ids]}
    legacy_expected = bad_dests | ({"job_info.tool_id"} if bad_tool else set())
    for url, sent, fields in (("/api/rank", body, expected), ("/process_data", legacy, legacy_expected)):
        resp = send(api, "POST", url, json.dumps(sent).encode(), body_obj=sent if url == "/api/rank" else None)
        payload = resp.get_json()
        if fields:
            assert resp.status_code == 400, (sent, payload)
            assert {e["field"] for e in payload["errors"]} == fields, (sent, payload)
        else:
            assert resp.status_code == 200, (sent, payload)


# -- 3. whole bodies: any JSON, bad JSON, bytes ----------------------------------------------------------------
@settings(FUZZ, max_examples=600)
@given(body=json_values)
def test_any_json_body(api: FlaskClient, body: Any) -> None:
    for url in ("/api/rank", "/process_data"):
        send(api, "POST", url, _text(body))


def _broken(draw: Any) -> bytes:
    good = json.dumps(VALID)
    how = draw(st.sampled_from(["truncate", "splice", "nest", "bytes", "literal", "encoding"]))
    if how == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))].encode()
    if how == "splice":
        at = draw(st.integers(0, len(good)))
        splice = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 500, "}", "]", ",",
                                       '"', "\\", "\x00", "/*c*/", "'x'", "undefined", "\ufeff", '"\ud800"']))
        return (good[:at] + splice + good[at:]).encode("utf-8", "surrogatepass")
    if how == "nest":
        n = draw(st.integers(1, 20_000))
        where = draw(st.sampled_from(["top", "context", "cores"]))
        inner = "[" * n + "]" * n
        if where == "top":
            return inner.encode()
        if where == "context":
            return good.replace('{"latitude": 50.1, "longitude": 8.7}', '{"x": ' + inner + "}").encode()
        return good.replace('"cores": 4', '"cores": ' + inner).encode()
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "literal":
        return draw(st.sampled_from([b"", b"null", b"true", b"0", b'"x"', b"[]", b"{}", b"NaN", b"\xef\xbb\xbf{}",
                                     b'{"job": {}, "job": 1}', b"{" * 70_000]))
    return good.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1"])))


@settings(FUZZ, max_examples=700)
@given(data=st.data())
def test_malformed_bodies(api: FlaskClient, data: st.DataObject) -> None:
    raw = _broken(data.draw)
    for url in ("/api/rank", "/process_data"):
        send(api, "POST", url, raw)


# -- 4. HTTP around the body: methods, paths, content types, headers, query strings ---------------------------------
AUTH_HEADERS = [AUTH, {}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="},
                {"Authorization": "Bearer " + TOKEN[:-1]}, {"Authorization": "Bearer " + TOKEN + "x"},
                {"Authorization": TOKEN}, {"Authorization": "Bearer " + "A" * 8000},
                {"Authorization": "Bearer tök"}, {"Authorization": "Bearer a b c"},
                {"Authorization": "bearer " + TOKEN}]
ODD_HEADERS = [{}, {"X-Forwarded-For": "1.2.3.4, <script>"}, {"Content-Encoding": "gzip"}, {"Accept": "text/xml"},
               {"Expect": "100-continue"}, {"X-Request-Id": "x" * 4000}, {"Host": "evil.example"},
               {"Content-Language": "\xe9"}, {"Cookie": "session=" + "z" * 100}]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "application/vnd.tpv+json", "text/plain", "text/json", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "", "application/jsonx", "*/*", None]
PATHS = ["/api/rank", "/process_data", "/health", "/ready", "/api/rank/", "/API/RANK", "/api//rank",
         "/api/rank?explain=1", "/api/rank?explain=%00", "/api/rank?explain=" + "1" * 3000, "/api/rank?x=1&x=2",
         "/api/rank;x", "/%2e%2e/api/rank", "/nope", "/static/x", "/openapi.json", "/metrics", "/"]


@settings(FUZZ, max_examples=1600)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]),
       path=st.one_of(st.sampled_from(PATHS), st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n#"),
                                                      max_size=20).map(lambda p: "/" + p)),
       content_type=st.sampled_from(CONTENT_TYPES), auth=st.sampled_from(AUTH_HEADERS),
       odd=st.sampled_from(ODD_HEADERS), body=st.sampled_from([VALID, LEGACY, None, "garbage"]))
def test_methods_paths_content_types_and_headers(api: FlaskClient, method: str, path: str, content_type: str | None,
                                                 auth: dict[str, str], odd: dict[str, str], body: Any) -> None:
    raw = None if body is None else (b"garbage" if body == "garbage" else json.dumps(body).encode())
    send(api, method, path, raw, content_type=content_type, headers={**auth, **odd},
         body_obj=body if body is VALID else None)


# -- 5. limits ----------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(n=st.integers(0, 120), pad=st.integers(0, 70_000))
def test_many_candidates_and_big_bodies(api: FlaskClient, n: int, pad: int) -> None:
    body = {"job": {"tool_id": "Show beginning1"}, "destinations": [{"id": f"pulsar_{i:03d}"} for i in range(n)]}
    raw = json.dumps(body).encode() + b" " * pad
    resp = send(api, "POST", "/api/rank", raw, body_obj=body)
    if len(raw) > 65536:
        assert resp.status_code == 413
    elif n > 50:
        assert resp.status_code == 400
        assert resp.get_json()["errors"] == [{"field": "destinations", "problem": f"at most 50 candidates, got {n}"}]
    else:
        assert resp.status_code == 200


# -- and afterwards -------------------------------------------------------------------------------------------
def test_after_all_of_it_the_snapshot_is_byte_for_byte_unchanged(fuzz_redis: redis.Redis,
                                                                  published: dict[bytes, bytes]) -> None:
    """Runs last in this module (pytest keeps file order)."""
    assert SENT["requests"] >= 10_000, SENT["requests"]
    print(f"fuzz: {SENT['requests']} requests, {len(SENT['accepted_job_ids'])} accepted job ids")
    after = _dump(fuzz_redis)
    for key, dumped in published.items():
        assert after.get(key) == dumped, key
    keys = KeySchema(PREFIX)
    # Nothing else but the in-flight charges of accepted requests, and their placement counts.
    extra = set(after) - set(published)
    job_keys = {keys.inflight_job(DEFAULT_TENANT, j).encode() for j in SENT["accepted_job_ids"]}
    charges = {keys.inflight.encode(), keys.inflight_load.encode(), keys.health_placements.encode()}
    assert extra <= charges | job_keys, sorted(extra - job_keys)[:10]
    # The sums hold accepted candidates only, as the members and the counts do.
    assert {d.decode() for d in fuzz_redis.hkeys(keys.inflight_load)} <= SENT["accepted_candidates"]
    # "<bucket>:<tenant>:<destination>"
    counted = {f.decode().split(":", 2)[2] for f in fuzz_redis.hkeys(keys.health_placements)}
    assert counted <= SENT["accepted_candidates"]
    assert SENT["accepted_job_ids"], "no request was accepted: the fuzz proves nothing about charges"
    members = [json.loads(m) for m in fuzz_redis.zrange(keys.inflight, 0, -1)]
    assert members
    for m in members:
        assert m["d"] in SENT["accepted_candidates"]
        assert m.get("j") is None or m["j"] in SENT["accepted_job_ids"]
