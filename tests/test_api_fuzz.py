"""Generated hostile input: whatever the body, the API answers 200 or a 4xx
that names a field, never 500, and the stored snapshot stays as it was."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpv_broker.api import create_app
from tpv_broker.shared.config import load_config
from tpv_broker.shared.keys import KeySchema
from tpv_broker.shared.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.shared.store import SnapshotStore

NOW = 1_700_000_000.0
scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
VALID: dict[str, Any] = {
    "job": {"id": 7, "tool_id": "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0", "cores": 4, "mem": 8, "gpus": 0},
    "destinations": [{"id": "pulsar_de", "tpv_score": 1, "context": {"latitude": 50.1, "longitude": 8.7}},
                     {"id": "pulsar_uk"}],
    "datasets": [{"object_store_id": "s3", "size": 1000}],
    "object_stores": {"s3": {"latitude": 51.0, "longitude": 0.0}},
}
PATHS = [("job",), ("job", "tool_id"), ("job", "cores"), ("job", "mem"), ("job", "gpus"), ("job", "id"),
         ("destinations",), ("destinations", 0), ("destinations", 0, "id"), ("destinations", 0, "tpv_score"),
         ("destinations", 0, "context"), ("datasets",), ("datasets", 0, "size"), ("object_stores",),
         ("object_stores", "s3", "latitude")]


def _mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


def _app_and_store():  # type: ignore[no-untyped-def]
    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("fuzz"))
    store.publish(Snapshot(
        meta=SnapshotMeta(created_at=NOW - 5, destinations=1),
        destinations={"pulsar_de": DestinationFigures(id="pulsar_de", status="online", queued=3, running=2,
                                                      cpus_free=8, mem_free_gb=16, live_at=NOW - 5,
                                                      sources={"queue_by_destination": NOW - 5})},
        tool_stats={"tool:x": {"pulsar_de": ToolFigures(count=2, median_run_s=10)}},
    ))
    return create_app(load_config(environ={}), store=store, clock=lambda: NOW).test_client(), store


CLIENT, STORE = _app_and_store()
BEFORE = {k: STORE.client.hgetall(k) for k in STORE.keys.live_keys()}


def _check(resp: Any) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    body = resp.get_json()
    assert isinstance(body, dict)
    if resp.status_code >= 400:
        assert body["errors"] and all(e["field"] and e["problem"] for e in body["errors"])
    else:
        assert body["degraded"] is False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values)
def test_one_field_replaced_by_anything(path: tuple[Any, ...], value: Any) -> None:
    _check(CLIENT.post("/api/rank", json=_mutate(VALID, path, value)))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_body(body: Any) -> None:
    _check(CLIENT.post("/api/rank", data=json.dumps(body), content_type="application/json"))
    _check(CLIENT.post("/process_data", data=json.dumps(body), content_type="application/json"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes(raw: bytes) -> None:
    _check(CLIENT.post("/api/rank", data=raw, content_type="application/json"))


def test_the_snapshot_is_untouched_by_all_of_it() -> None:
    # Runs after the generated requests in this module (pytest keeps file order).
    assert {k: STORE.client.hgetall(k) for k in STORE.keys.live_keys()} == BEFORE
