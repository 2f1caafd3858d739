"""``GET /metrics`` of the API through the app factory, on a real Redis
(one process: the app's own registry; the multi-worker path is in
test_metrics_processes.py)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tpv_broker.api import create_app
from tpv_broker.api.metrics import MULTIPROC_ENV, outcome_of
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.core.result import DegradedReason
from tpv_broker.devtools.servers import RedisServer, free_port
from tpv_broker.logging_setup import EventFormatter
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

NOW = 1_700_000_000.0
KEYS = KeySchema("m")
RANK = {"job": {"id": 7, "tool_id": "bwa", "cores": 1, "mem": 1},
        "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk"}]}


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def requests_total(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "tpv_broker_api_requests_total")


def snapshot(created_at: float, destinations: int = 2) -> Snapshot:
    ids = ["pulsar_de", "pulsar_uk", "pulsar_fr", "pulsar_be"][:destinations]
    dests = {d: DestinationFigures(id=d, status="online", cpus_free=8, mem_free_gb=32, queued=0, running=1,
                                   metrics_at=NOW - 20, live_at=NOW - 20, sources={"queue_by_destination": NOW - 20})
             for d in ids}
    meta = SnapshotMeta(created_at=created_at, newest_point_at=NOW - 20, destinations=len(dests), collector="c")
    return Snapshot(meta=meta, destinations=dests)


def config(**api: Any) -> BrokerConfig:
    cfg = load_config(environ={})
    return cfg.model_copy(update={"api": cfg.api.model_copy(update=api)}) if api else cfg


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KEYS)


@pytest.fixture
def client(store: SnapshotStore) -> FlaskClient:
    return create_app(config(), store=store, clock=lambda: NOW).test_client()


def test_requests_counted_by_endpoint_and_outcome(store: SnapshotStore, client: FlaskClient) -> None:
    store.publish(snapshot(NOW - 10))
    for _ in range(3):
        assert client.post("/api/rank", json=RANK).json["degraded"] is False
    bad_cores = {"job": {"tool_id": "bwa", "cores": -1}, "destinations": []}
    assert client.post("/api/rank", json=bad_cores).status_code == 400
    assert client.post("/api/rank", data=b"{", content_type="application/json").status_code == 400
    legacy = {"job_info": {"tool_id": "bwa"}, "destinations": [{"id": "pulsar_de"}]}
    legacy_status = client.post("/process_data", json=legacy).status_code
    assert client.get("/health").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/api/rank").status_code == 405
    scrape(client)  # scrapes themselves are not counted
    s = scrape(client)
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="ok", tenant="default") == 3
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="bad_request", tenant="default") == 2
    assert value(s, "tpv_broker_api_requests_total", endpoint="/process_data",
                 outcome=outcome_of(legacy_status, False), tenant="default") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="/health", outcome="ok", tenant="default") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="other", outcome="not_found", tenant="default") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="other", outcome="method_not_allowed",
                 tenant="default") == 1
    assert requests_total(s) == 9
    # The histogram counts the same requests, with the same labels.
    assert value(s, "tpv_broker_api_request_duration_seconds_count", endpoint="/api/rank", outcome="ok") == 3
    assert value(s, "tpv_broker_api_request_duration_seconds_bucket", endpoint="/api/rank", outcome="ok",
                 le="+Inf") == 3
    assert value(s, "tpv_broker_api_request_duration_seconds_sum", endpoint="/api/rank", outcome="ok") > 0
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="no_snapshot") == 0
    assert value(s, "tpv_broker_api_workers") == 1


def test_degraded_answers_counted_when_they_are_503s(store: SnapshotStore) -> None:
    # api.degraded_status: 503: the request's outcome says unavailable, and
    # the degraded answer is counted all the same (the alert rules divide
    # these by the rank requests).
    client = create_app(config(degraded_status=503), store=store, clock=lambda: NOW).test_client()
    resp = client.post("/api/rank", json=RANK)
    assert resp.status_code == 503 and resp.json["degraded"] is True
    s = scrape(client)
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="no_snapshot") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="unavailable",
                 tenant="default") == 1


def test_unmatched_paths_share_one_series(client: FlaskClient) -> None:
    for i in range(20):
        client.get(f"/random/{i}")
    s = scrape(client)
    series = [k for k in s if k[0] == "tpv_broker_api_requests_total" and ("endpoint", "other") in k[1]]
    assert series == [("tpv_broker_api_requests_total",
                       (("endpoint", "other"), ("outcome", "not_found"), ("tenant", "default")))]
    assert s[series[0]] == 20


def test_degraded_answers_counted_by_reason(store: SnapshotStore, client: FlaskClient) -> None:
    assert client.post("/api/rank", json=RANK).json["degraded_reason"] == "no snapshot in Redis yet"
    store.publish(snapshot(NOW - 1000))  # older than api.max_snapshot_age_s (300)
    assert client.post("/api/rank", json=RANK).json["degraded_reason"].startswith("snapshot is 1000 s old")
    assert client.post("/process_data", json={"job_info": {"tool_id": "bwa"},
                                              "destinations": [{"id": "pulsar_de"}]}).status_code == 200
    s = scrape(client)
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="no_snapshot") == 1
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="stale_snapshot") == 2
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="redis_unavailable") == 0
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="degraded", tenant="default") == 2
    assert value(s, "tpv_broker_api_requests_total", endpoint="/process_data", outcome="degraded",
                 tenant="default") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="ok", tenant="default") == 0


def test_snapshot_figures_are_read_from_redis_when_scraped(store: SnapshotStore, client: FlaskClient) -> None:
    s = scrape(client)
    assert value(s, "tpv_broker_api_redis_up") == 1
    assert value(s, "tpv_broker_snapshot_present") == 0
    assert value(s, "tpv_broker_snapshot_age_seconds") is None
    store.publish(snapshot(NOW - 12.5, destinations=4))
    # No rank request in between: the scrape itself reads the snapshot.
    s = scrape(client)
    assert value(s, "tpv_broker_snapshot_present") == 1
    assert value(s, "tpv_broker_snapshot_age_seconds") == 12.5
    assert value(s, "tpv_broker_snapshot_newest_point_age_seconds") == 20
    assert value(s, "tpv_broker_snapshot_destinations") == 4
    assert value(s, "tpv_broker_api_max_snapshot_age_seconds") == 300
    assert value(s, "tpv_broker_inflight_charges") == 0
    assert client.post("/api/rank", json=RANK).json["degraded"] is False
    # The answer charged the job to the destination it put first.
    assert value(scrape(client), "tpv_broker_inflight_charges") == 1


def test_no_inflight_gauge_when_accounting_is_off(store: SnapshotStore) -> None:
    cfg = load_config(environ={"TPV_BROKER_INFLIGHT_ENABLED": "false"})
    s = scrape(create_app(cfg, store=store, clock=lambda: NOW).test_client())
    assert value(s, "tpv_broker_api_redis_up") == 1
    assert value(s, "tpv_broker_inflight_charges") is None


def test_scrape_answers_when_redis_is_unreachable() -> None:
    store = SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)
    client = create_app(config(), store=store, clock=lambda: NOW).test_client()
    resp = client.post("/api/rank", json=RANK)
    assert resp.status_code == 200 and resp.json["degraded_reason"] == "Redis unavailable"
    s = scrape(client)
    assert value(s, "tpv_broker_api_redis_up") == 0
    assert value(s, "tpv_broker_snapshot_age_seconds") is None
    assert value(s, "tpv_broker_snapshot_present") is None
    assert value(s, "tpv_broker_api_degraded_answers_total", reason="redis_unavailable") == 1
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="degraded", tenant="default") == 1


def test_scrape_answers_when_redis_hangs(tmp_path) -> None:
    with RedisServer(tmp_path) as server:
        timeout_s = 0.3
        store = SnapshotStore(connect_redis(server.url, timeout_s), KEYS)
        client = create_app(config(), store=store, clock=lambda: NOW).test_client()
        store.publish(snapshot(NOW - 5))
        assert value(scrape(client), "tpv_broker_snapshot_age_seconds") == 5
        server.pause()
        try:
            started = time.monotonic()
            s = scrape(client)
            # A bound (the configured timeout plus generous slack), not a speed claim.
            assert time.monotonic() - started < timeout_s + 5
        finally:
            server.resume()
    assert value(s, "tpv_broker_api_redis_up") == 0
    assert value(s, "tpv_broker_snapshot_age_seconds") is None


def test_multiprocess_directory_without_multiprocess_values_fails_loudly(monkeypatch, store, tmp_path) -> None:
    # prometheus_client was imported (by this test session) without the
    # variable: an app that would count per worker must not start.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR"):
        create_app(config(), store=store, clock=lambda: NOW)


@pytest.mark.parametrize("status, degraded, outcome", [
    (200, False, "ok"), (200, True, "degraded"), (400, False, "bad_request"), (401, False, "unauthorized"),
    (404, False, "not_found"), (405, False, "method_not_allowed"), (413, False, "too_large"),
    (418, False, "client_error"), (500, False, "error"), (503, False, "unavailable"),
])
def test_outcome_of(status: int, degraded: bool, outcome: str) -> None:
    assert outcome_of(status, degraded) == outcome


def test_the_degraded_metric_labels_are_the_answer_codes() -> None:
    # The label is the code the answer carries (degraded_code), never
    # derived from the reason's words; these names are on dashboards.
    assert [c.value for c in DegradedReason] == ["no_snapshot", "stale_snapshot", "redis_unavailable"]


def test_redis_trouble_is_logged_as_named_events(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tpv_broker")
    store = SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)
    client = create_app(config(), store=store, clock=lambda: NOW).test_client()
    assert client.post("/api/rank", json=RANK).json["degraded"] is True
    assert client.get("/ready").status_code == 503
    lines = [json.loads(EventFormatter("json").format(r)) for r in caplog.records]
    assert [(x["event"], x.get("reason")) for x in lines] == [("rank_degraded", "redis_unavailable"),
                                                             ("not_ready", "redis_unavailable")]
    assert lines[0]["msg"].startswith("answering in TPV order: Redis at redis://127.0.0.1:")
