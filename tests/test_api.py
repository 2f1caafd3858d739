"""The rank API through the app factory, on a fakeredis-backed SnapshotStore
filled by SnapshotStore.publish, with a fixed clock."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

NOW = 1_700_000_000.0
EXAMPLE_REQUEST = pathlib.Path(__file__).parent / "data" / "prototype" / "example_request1.json"
KEYS = KeySchema("t")


def config(**api: Any) -> BrokerConfig:
    cfg = load_config(environ={})
    return cfg.model_copy(update={"api": cfg.api.model_copy(update=api)}) if api else cfg


def figures(dest_id: str, **kw: Any) -> DestinationFigures:
    kw.setdefault("status", "online")
    return DestinationFigures(id=dest_id, metrics_at=NOW - 20, live_at=NOW - 20,
                              sources={"queue_by_destination": NOW - 20}, **kw)


# The documented order for a 4-core 8 GB job over these candidates, with the
# default model (no run-time figures: default queue 300 s and run 3600 s for all,
# so run_time, data_locality and tpv_score are equal; queue score
# 1 - ln(1 + wait/60) / ln(1 + 604800/60), ln 10081 = 9.21841).
# free slots = min(floor(cores free / 4), floor(GB free / 8)); ahead = max(0, queued + 1 - slots);
# wait = 300 + ahead x 3600 / running:
#   pulsar_fr  slots min(3, 3) = 3, ahead max(0, 0 + 1 - 3) = 0: wait 300 -> 1 - ln 6/.. = 0.80564;
#              fits (14 >= 4 cores, 27.3 >= 8 GB)                        -> 1st
#   pulsar_de  slots min(6, 5) = 5, ahead 5 + 1 - 5 = 1: 300 + 3600/5 = 1020 -> 1 - ln 18/.. = 0.68646;
#              fits                                                      -> 2nd
#   pulsar_uk  slots min(4, 4) = 4, ahead 10 + 1 - 4 = 7: 300 + 7 x 3600/3 = 8700 -> 1 - ln 146/.. = 0.45939;
#              fits                                                      -> 3rd
#   pulsar_be  slots min(0, 0) = 0, ahead 6: 300 + 6 x 3600/5 = 4620 -> 1 - ln 78/.. = 0.52739; 2 free
#              cores < 4, 1.9 GB < 8: does not fit, 0.5 x min(2/4, 1.9/8) = 0.11875: behind uk by
#              3 x (1 - 0.11875) - 3 x (0.52739 - 0.45939) = 2.64 - 0.20 = 2.44 of 10 -> 4th
#   pulsar_xx  not in the snapshot                           -> after every scored one
#   condor_us  offline (even with 0 queued)                  -> last
DESTS = [
    figures("pulsar_de", queued=5, running=5, cpus_free=24, mem_free_gb=46.9),
    figures("pulsar_uk", queued=10, running=3, cpus_free=19, mem_free_gb=37.1),
    figures("pulsar_fr", queued=0, running=6, cpus_free=14, mem_free_gb=27.3),
    figures("pulsar_be", queued=5, running=5, cpus_free=2, mem_free_gb=1.9),
    figures("condor_us", status="offline", queued=0, cpus_free=16, mem_free_gb=31.25),
]
CANDIDATES = ["pulsar_xx", "condor_us", "pulsar_be", "pulsar_uk", "pulsar_de", "pulsar_fr"]
EXPECTED = ["pulsar_fr", "pulsar_de", "pulsar_uk", "pulsar_be", "pulsar_xx", "condor_us"]
GOOD = {"job": {"tool_id": "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0", "cores": 4, "mem": 8},
        "destinations": [{"id": d} for d in CANDIDATES]}


def snapshot(age_s: float = 10.0, dests: list[DestinationFigures] = DESTS) -> Snapshot:
    meta = SnapshotMeta(created_at=NOW - age_s, newest_point_at=NOW - 20, destinations=len(dests), collector="c")
    return Snapshot(meta=meta, destinations={d.id: d for d in dests})


def make_app(store: SnapshotStore, **api: Any) -> Flask:
    return create_app(config(**api), store=store, clock=lambda: NOW)


@pytest.fixture
def redis_fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def store(redis_fake: fakeredis.FakeRedis) -> SnapshotStore:
    return SnapshotStore(redis_fake, KEYS)


@pytest.fixture
def client(store: SnapshotStore) -> FlaskClient:
    store.publish(snapshot())
    return make_app(store).test_client()


@pytest.fixture
def empty_client(store: SnapshotStore) -> FlaskClient:
    return make_app(store).test_client()


def _down_fake_store() -> SnapshotStore:
    server = fakeredis.FakeServer()
    server.connected = False
    return SnapshotStore(fakeredis.FakeRedis(server=server), KEYS)


def _closed_port_store() -> SnapshotStore:
    return SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)


DOWN_STORES = [pytest.param(_down_fake_store, id="fakeredis-disconnected"),
               pytest.param(_closed_port_store, id="closed-port")]


# -- good requests ------------------------------------------------------------------
def test_rank_answers_documented_order(client: FlaskClient) -> None:
    resp = client.post("/api/rank", json=GOOD)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["destinations"] == EXPECTED
    assert sorted(body["destinations"]) == sorted(CANDIDATES)  # every candidate exactly once
    assert body["degraded"] is False
    assert body["snapshot_age_s"] == 10.0
    assert "explain" not in body and "degraded_reason" not in body


def test_rank_accepts_optional_fields(client: FlaskClient) -> None:
    req = {
        "job": {"id": 1234, "tool_id": "cat1", "cores": 4, "mem": 8.0, "gpus": 0},
        "destinations": [{"id": d, "tpv_score": 3, "context": {"latitude": 1}} for d in CANDIDATES],
        "datasets": [{"object_store_id": "object_store_germany", "size": 1e9}],
    }
    resp = client.post("/api/rank", json=req)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["destinations"] == EXPECTED


@pytest.mark.parametrize("flag", ["1", "true", "yes", "TRUE"])
def test_explain_gives_reasons(client: FlaskClient, flag: str) -> None:
    body = client.post(f"/api/rank?explain={flag}", json=GOOD).get_json()
    explain = {e["id"]: e for e in body["explain"]}
    assert [e["id"] for e in body["explain"]] == EXPECTED
    fit = {e["id"]: next(t for t in e["terms"] if t["term"] == "fit_now") for e in body["explain"] if "terms" in e}
    assert fit["pulsar_fr"]["raw"]["fits"] is True and "fits now" in explain["pulsar_fr"]["reason"]
    assert fit["pulsar_be"]["raw"]["fits"] is False and "does not fit now" in explain["pulsar_be"]["reason"]
    assert explain["condor_us"] == {"position": 6, "id": "condor_us", "group": "offline", "reason": "reported offline"}
    assert explain["pulsar_xx"]["group"] == "no_metrics"
    assert explain["pulsar_xx"]["reason"] == "no metrics for this destination"


@pytest.mark.parametrize("flag", ["0", "no", "false"])
def test_explain_off(client: FlaskClient, flag: str) -> None:
    assert "explain" not in client.post(f"/api/rank?explain={flag}", json=GOOD).get_json()


@pytest.mark.parametrize(("field", "problem"), [("id", "job.id: Input should be a valid string (got inf)"),
                                                ("cores", "job.cores: Input should be a finite number (got inf)")])
def test_a_number_of_thousands_of_digits_is_named_by_its_field(client: FlaskClient, field: str,
                                                                problem: str) -> None:
    # Valid JSON that Python will not read as an int (over 4,300 digits): answered "body: not valid JSON".
    body = '{"job": {"tool_id": "bwa", "' + field + '": ' + "9" * 5000 + '}, "destinations": [{"id": "pulsar_de"}]}'
    resp = client.post("/api/rank", data=body, content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["message"] == problem, resp.get_json()


@pytest.mark.parametrize("flag", ["on", "2", "maybe", ""])
def test_an_explain_flag_the_api_does_not_know_is_a_400_naming_it(client: FlaskClient, flag: str) -> None:
    # Answered 200 without the explanation asked for.
    resp = client.post(f"/api/rank?explain={flag}", json=GOOD)
    assert resp.status_code == 400
    assert resp.get_json()["errors"] == [{"field": "explain", "problem": "must be one of 1, true, yes, 0, false, "
                                                                         f"no, got {flag!r}"}]


def test_empty_candidate_list(client: FlaskClient) -> None:
    resp = client.post("/api/rank", json={"job": {"tool_id": "t"}, "destinations": []})
    assert resp.status_code == 200 and resp.get_json()["destinations"] == []


def test_process_data_with_prototype_example(store: SnapshotStore) -> None:
    request = json.loads(EXAMPLE_REQUEST.read_text())
    # job: 4 cores, 16 GB, 1 gpu; free gpus unknown everywhere, so only cores/mem decide
    store.publish(snapshot(dests=[
        figures("pulsar_fr", queued=0, cpus_free=14, mem_free_gb=27.3),
        figures("pulsar_de", queued=5, cpus_free=24, mem_free_gb=46.9),
        figures("pulsar_uk", queued=10, cpus_free=19, mem_free_gb=37.1),
        figures("condor_us", status="offline", queued=0),
    ]))
    resp = make_app(store).test_client().post("/process_data", json=request)
    assert resp.status_code == 200
    body = resp.get_json()
    assert list(body) == ["sorted_destinations"]
    # fr (0 queued) < de (5) < uk (10), then pulsar_us01 without metrics, then offline condor_us
    assert body["sorted_destinations"] == ["pulsar_fr", "pulsar_de", "pulsar_uk", "pulsar_us01", "condor_us"]


def test_process_data_never_drops_a_candidate_without_snapshot(empty_client: FlaskClient) -> None:
    request = json.loads(EXAMPLE_REQUEST.read_text())
    body = empty_client.post("/process_data", json=request).get_json()
    assert body["sorted_destinations"] == ["pulsar_us01", "pulsar_uk", "pulsar_de", "pulsar_fr", "condor_us"]


# -- health and readiness ------------------------------------------------------------
def test_health(empty_client: FlaskClient) -> None:
    resp = empty_client.get("/health")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("age", "status", "ready"),
    [(0.0, 200, True), (300.0, 200, True), (300.5, 503, False), (3600.0, 503, False)],  # limit 300 s
)
def test_ready_by_snapshot_age(store: SnapshotStore, age: float, status: int, ready: bool) -> None:
    store.publish(snapshot(age_s=age))
    resp = make_app(store).test_client().get("/ready")
    body = resp.get_json()
    assert resp.status_code == status
    assert body["ready"] is ready
    assert body["snapshot_age_s"] == age and body["destinations"] == len(DESTS)
    assert ("reason" in body) is (not ready)


def test_ready_without_snapshot(empty_client: FlaskClient) -> None:
    resp = empty_client.get("/ready")
    assert resp.status_code == 503
    assert resp.get_json() == {"ready": False, "reason": "no snapshot in Redis yet"}


@pytest.mark.parametrize("make_store", DOWN_STORES)
def test_ready_when_redis_down(make_store) -> None:
    resp = make_app(make_store()).test_client().get("/ready")
    assert resp.status_code == 503
    assert resp.get_json() == {"ready": False, "reason": "Redis unavailable"}


# -- degraded answers -----------------------------------------------------------------------
SCORED = {
    "job": {"tool_id": "t", "cores": 4, "mem": 8},
    # TPV order: tag score desc, input order on ties -> pulsar_uk(5), condor_us(5), pulsar_fr(2), pulsar_de(None=0)
    "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk", "tpv_score": 5}, {"id": "condor_us", "tpv_score": 5},
                     {"id": "pulsar_fr", "tpv_score": 2}],
}
TPV_ORDER = ["pulsar_uk", "condor_us", "pulsar_fr", "pulsar_de"]


def _assert_degraded(resp: Any, code: str, reason_part: str, age: float | None) -> None:
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["degraded"] is True
    assert body["degraded_code"] == code
    assert body["destinations"] == TPV_ORDER
    assert reason_part in body["degraded_reason"]
    assert body["snapshot_age_s"] == age


def test_fresh_snapshot_is_not_tpv_order(client: FlaskClient) -> None:
    body = client.post("/api/rank", json=SCORED).get_json()
    assert body["degraded"] is False
    # Not TPV's [uk, condor_us, fr, de]. With the waits above (fr 300 s, de 1020 s,
    # uk 8700 s), all three fitting and equal run times, total x 10 differs by
    # 3 x queue + tpv (logistic: 5 -> 0.99331, 2 -> 0.88080, none -> 0.5):
    #   fr  3 x 0.80564 + 0.88080 = 3.29772
    #   de  3 x 0.68646 + 0.5     = 2.55938
    #   uk  3 x 0.45939 + 0.99331 = 2.37148
    # uk's tag score 5 no longer outweighs its longer drain: de's 5 free slots
    # start all 5 of its queued jobs (ahead = 5 + 1 - 5 = 1, the job itself),
    # uk's 4 only 4 of its 10 (ahead = 10 + 1 - 4 = 7).
    # Offline condor_us goes last whatever its tags.
    assert body["destinations"] == ["pulsar_fr", "pulsar_de", "pulsar_uk", "condor_us"]


def test_degraded_without_snapshot(empty_client: FlaskClient) -> None:
    _assert_degraded(empty_client.post("/api/rank", json=SCORED), "no_snapshot", "no snapshot", None)


def test_degraded_with_stale_snapshot(store: SnapshotStore) -> None:
    store.publish(snapshot(age_s=301))  # 301 s > 300 s limit
    resp = make_app(store).test_client().post("/api/rank?explain=1", json=SCORED)
    _assert_degraded(resp, "stale_snapshot", "301 s old (limit 300 s)", 301.0)
    assert all(e["reason"].startswith("TPV order") for e in resp.get_json()["explain"])


def test_stale_limit_comes_from_config(store: SnapshotStore) -> None:
    store.publish(snapshot(age_s=301))
    body = make_app(store, max_snapshot_age_s=600).test_client().post("/api/rank", json=SCORED).get_json()
    assert body["degraded"] is False


@pytest.mark.parametrize("make_store", DOWN_STORES)
def test_degraded_when_redis_down(make_store) -> None:
    app = make_app(make_store())
    _assert_degraded(app.test_client().post("/api/rank", json=SCORED), "redis_unavailable", "Redis unavailable", None)
    body = app.test_client().post("/process_data", json={"job_info": {"tool_id": "t"},
                                                         "destinations": [{"id": "a"}, {"id": "b"}]}).get_json()
    assert body == {"sorted_destinations": ["a", "b"]}


# -- bad requests ------------------------------------------------------------------------------
def _job(**kw: Any) -> dict[str, Any]:
    return {"job": {"tool_id": "t", **kw}, "destinations": [{"id": "a"}]}


def _dests(*ids: Any) -> dict[str, Any]:
    return {"job": {"tool_id": "t"}, "destinations": [{"id": i} for i in ids]}


J = "application/json"
BAD_REQUESTS = [
    # (id, path, raw body or JSON-able object, content type, field named in errors[])
    ("malformed-json", "/api/rank", '{"job": ', J, "body"),
    ("empty-body", "/api/rank", "", J, "body"),
    ("json-null", "/api/rank", "null", J, "body"),
    ("non-object-list", "/api/rank", [1, 2], J, "body"),
    ("non-object-string", "/api/rank", "just a string", J, "body"),
    ("wrong-content-type", "/api/rank", json.dumps(GOOD), "text/plain", "body"),
    ("form-content-type", "/api/rank", "job=1", "application/x-www-form-urlencoded", "body"),
    ("missing-job", "/api/rank", {"destinations": [{"id": "a"}]}, J, "job"),
    ("missing-destinations", "/api/rank", {"job": {"tool_id": "t"}}, J, "destinations"),
    ("job-not-object", "/api/rank", {"job": "t", "destinations": []}, J, "job"),
    ("missing-tool-id", "/api/rank", {"job": {"cores": 1}, "destinations": [{"id": "a"}]}, J, "job.tool_id"),
    # Single spaces are allowed (stock tools: "Show beginning1"); these are not.
    ("tool-id-double-space", "/api/rank", {"job": {"tool_id": "a  b"}, "destinations": []}, J, "job.tool_id"),
    ("tool-id-leading-space", "/api/rank", {"job": {"tool_id": " ab"}, "destinations": []}, J, "job.tool_id"),
    ("tool-id-tab", "/api/rank", {"job": {"tool_id": "a\tb"}, "destinations": []}, J, "job.tool_id"),
    ("cores-zero", "/api/rank", _job(cores=0), J, "job.cores"),
    ("cores-negative", "/api/rank", _job(cores=-4), J, "job.cores"),
    ("cores-string", "/api/rank", _job(cores="4"), J, "job.cores"),
    ("cores-true", "/api/rank", _job(cores=True), J, "job.cores"),
    ("cores-null", "/api/rank", _job(cores=None), J, "job.cores"),
    ("cores-nan", "/api/rank", '{"job": {"tool_id": "t", "cores": NaN}, "destinations": [{"id": "a"}]}', J,
     "job.cores"),
    ("cores-infinity", "/api/rank", '{"job": {"tool_id": "t", "cores": Infinity}, "destinations": []}', J, "job.cores"),
    ("cores-absurd", "/api/rank", _job(cores=1e7), J, "job.cores"),
    ("mem-absurd", "/api/rank", _job(mem=1e9), J, "job.mem"),
    ("mem-negative", "/api/rank", _job(mem=-1), J, "job.mem"),
    ("gpus-negative", "/api/rank", _job(gpus=-1), J, "job.gpus"),
    ("gpus-string", "/api/rank", _job(gpus="1"), J, "job.gpus"),
    ("job-id-bad", "/api/rank", _job(id="a b"), J, "job.id"),
    ("job-id-bool", "/api/rank", _job(id=True), J, "job.id"),
    ("unknown-field-in-job", "/api/rank", _job(core=4), J, "job.core"),
    ("unknown-top-level-field", "/api/rank", {**_dests("a"), "jobs": {}}, J, "jobs"),
    ("duplicate-ids", "/api/rank", _dests("a", "b", "a"), J, "destinations[2].id"),
    ("duplicate-ids-adjacent", "/api/rank", _dests("x", "x"), J, "destinations[1].id"),
    ("dest-id-space", "/api/rank", _dests("ok", "pulsar de"), J, "destinations[1].id"),
    ("dest-id-newline", "/api/rank", _dests("pulsar_de\n"), J, "destinations[0].id"),
    ("dest-id-empty", "/api/rank", _dests(""), J, "destinations[0].id"),
    ("dest-id-too-long", "/api/rank", _dests("a" * 256), J, "destinations[0].id"),
    ("dest-id-number", "/api/rank", _dests(7), J, "destinations[0].id"),
    ("dest-missing-id", "/api/rank", {"job": {"tool_id": "t"}, "destinations": [{}]}, J, "destinations[0].id"),
    ("dest-unknown-field", "/api/rank", {"job": {"tool_id": "t"}, "destinations": [{"id": "a", "score": 1}]}, J,
     "destinations[0].score"),
    ("tpv-score-string", "/api/rank", {"job": {"tool_id": "t"}, "destinations": [{"id": "a", "tpv_score": "1"}]}, J,
     "destinations[0].tpv_score"),
    ("destinations-not-list", "/api/rank", {"job": {"tool_id": "t"}, "destinations": {"id": "a"}}, J, "destinations"),
    ("destinations-string", "/api/rank", {"job": {"tool_id": "t"}, "destinations": "a,b"}, J, "destinations"),
    ("datasets-size-negative", "/api/rank",
     {**_dests("a"), "datasets": [{"object_store_id": "os", "size": -1}]}, J, "datasets[0].size"),
    ("datasets-missing-store", "/api/rank", {**_dests("a"), "datasets": [{"size": 1}]}, J,
     "datasets[0].object_store_id"),
    ("too-many-candidates", "/api/rank", _dests("a", "b", "c", "d"), J, "destinations"),  # max_candidates = 3
    # the prototype endpoint
    ("legacy-missing-job-info", "/process_data", {"destinations": [{"id": "a"}]}, J, "job_info"),
    ("legacy-missing-tool-id", "/process_data", {"job_info": {}, "destinations": []}, J, "job_info.tool_id"),
    ("legacy-cores-zero", "/process_data", {"job_info": {"tool_id": "t", "cores": 0}, "destinations": []}, J,
     "job_info.cores"),
    ("legacy-duplicate-ids", "/process_data",
     {"job_info": {"tool_id": "t"}, "destinations": [{"id": "a"}, {"id": "a"}]}, J, "destinations[1].id"),
    ("legacy-latitude", "/process_data",
     {"job_info": {"tool_id": "t"}, "destinations": [{"id": "a", "latitude": 91}]}, J, "destinations[0].latitude"),
    ("legacy-too-many", "/process_data", {"job_info": {"tool_id": "t"}, "destinations": [{"id": i} for i in "abcd"]},
     J, "destinations"),
    ("legacy-non-object", "/process_data", [], J, "body"),
]


def _post(client: FlaskClient, path: str, body: Any, content_type: str) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


def _dump(redis_fake: fakeredis.FakeRedis) -> dict[bytes, dict[bytes, bytes]]:
    return {k: redis_fake.hgetall(k) for k in sorted(redis_fake.keys("*"))}


@pytest.fixture
def strict_client(store: SnapshotStore) -> FlaskClient:
    store.publish(snapshot())
    return make_app(store, max_candidates=3).test_client()


@pytest.mark.parametrize(("path", "body", "content_type", "field"),
                         [pytest.param(p, b, c, f, id=i) for i, p, b, c, f in BAD_REQUESTS])
def test_bad_request_is_400_naming_the_field(strict_client: FlaskClient, path: str, body: Any,
                                             content_type: str, field: str) -> None:
    resp = _post(strict_client, path, body, content_type)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.is_json
    payload = resp.get_json()
    assert payload["error"] == "invalid request"
    assert field in [e["field"] for e in payload["errors"]], payload
    assert all(e["problem"] for e in payload["errors"])
    assert field in payload["message"]


def test_bad_requests_leave_the_snapshot_unchanged(store: SnapshotStore, redis_fake: fakeredis.FakeRedis) -> None:
    store.publish(snapshot())
    client = make_app(store, max_candidates=3).test_client()
    before = _dump(redis_fake)
    assert set(before) == {k.encode() for k in KEYS.live_keys()} - {KEYS.tool_stats.encode()}
    statuses = {_post(client, p, b, c).status_code for _, p, b, c, _ in BAD_REQUESTS}
    assert statuses == {400}
    assert _dump(redis_fake) == before


def test_problem_mentions_the_bad_value(strict_client: FlaskClient) -> None:
    payload = strict_client.post("/api/rank", json=_job(cores=-4)).get_json()
    assert payload["errors"] == [{"field": "job.cores", "problem": "Input should be greater than 0 (got -4)"}]


def test_duplicate_id_problem_names_both_indices(strict_client: FlaskClient) -> None:
    payload = strict_client.post("/api/rank", json=_dests("a", "b", "a")).get_json()
    assert payload["errors"] == [
        {"field": "destinations[2].id", "problem": "duplicate destination id 'a' (also at destinations[0])"}
    ]


def test_candidates_at_the_limit_are_accepted(strict_client: FlaskClient) -> None:
    assert strict_client.post("/api/rank", json=_dests("a", "b", "c")).status_code == 200  # 3 == max 3


@pytest.mark.parametrize("depth", [100_000])
def test_deeply_nested_json_is_400_not_500(empty_client: FlaskClient, depth: int) -> None:
    # 2 * 100000 bytes = 200 kB < 1 MiB limit
    resp = empty_client.post("/api/rank", data="[" * depth + "]" * depth, content_type=J)
    assert resp.status_code == 400


# -- 413 / 404 / 405 --------------------------------------------------------------------------------
def test_body_over_limit_is_413_json(store: SnapshotStore) -> None:
    client = make_app(store, max_request_bytes=1024).test_client()
    big = {"job": {"tool_id": "t"}, "destinations": [{"id": f"pulsar_{i:04d}"} for i in range(100)]}
    data = json.dumps(big)
    assert len(data) > 1024
    resp = client.post("/api/rank", data=data, content_type=J)
    assert resp.status_code == 413
    payload = resp.get_json()
    assert payload["errors"] == [{"field": "body", "problem": "request body larger than 1024 bytes"}]


def test_body_just_under_limit_is_served(store: SnapshotStore) -> None:
    client = make_app(store, max_request_bytes=1024).test_client()
    data = json.dumps(_dests("a"))
    data += " " * (1024 - len(data))  # exactly 1024 bytes
    assert client.post("/api/rank", data=data, content_type=J).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/nope", 404, "url"),
        ("POST", "/api/ranking", 404, "url"),
        ("GET", "/api/rank", 405, "url"),
        ("GET", "/process_data", 405, "url"),
        ("POST", "/health", 405, "url"),
        ("DELETE", "/ready", 405, "url"),
    ],
)
def test_404_405_are_json(client: FlaskClient, method: str, path: str, status: int, field: str) -> None:
    resp = client.open(path, method=method)
    assert resp.status_code == status
    assert resp.is_json
    payload = resp.get_json()
    assert [e["field"] for e in payload["errors"]] == [field]
    assert "<html" not in resp.get_data(as_text=True).lower()
