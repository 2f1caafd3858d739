"""In-flight accounting through the API, on a real redis-server: the first
destination is charged, a job ranked again moves its charge, charges steer
the next rankings away from a filling site, and end once a snapshot shows
them; several gunicorn workers charging at once stay correct."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

import redis
import requests

from tpv_broker.api import create_app
from tpv_broker.config.settings import ApiSettings, BrokerConfig, InflightSettings, RedisSettings
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import CLI, clean_env, stop, wait_until_serving

NOW = 1_700_000_000.0
PREFIX = "ifapi"


def _snapshot(live_at: float) -> Snapshot:
    # Two sites alike but for a shorter history of queueing at "a":
    # a 4-core job fits 2 at a time on either (8 free cores).
    def d(i: str, median_queue: float) -> DestinationFigures:
        return DestinationFigures(id=i, status="online", queued=0, running=4, cpus_total=16, cpus_free=8,
                                  mem_total_gb=64, mem_free_gb=32, median_queue_s=median_queue, median_run_s=600,
                                  live_at=live_at, metrics_at=live_at, sources={"queue_by_destination": live_at})
    return Snapshot(meta=SnapshotMeta(created_at=live_at, destinations=2),
                    destinations={"a": d("a", 30), "b": d("b", 60)})


def _app(client: redis.Redis, clock: list[float]):  # type: ignore[no-untyped-def]
    config = BrokerConfig(redis=RedisSettings(key_prefix=PREFIX), api=ApiSettings(max_snapshot_age_s=3600),
                          inflight=InflightSettings(reflect_lag_s=0, max_age_s=600))
    store = SnapshotStore(client, KeySchema(PREFIX))
    return create_app(config, store=store, clock=lambda: clock[0]).test_client(), store


def _rank(api, job_id=None):  # type: ignore[no-untyped-def]
    job = {"tool_id": "bwa", "cores": 4, "mem": 8}
    if job_id is not None:
        job["id"] = job_id
    body = api.post("/api/rank", json={"job": job, "destinations": [{"id": "a"}, {"id": "b"}]}).get_json()
    assert body["degraded"] is False
    return body["destinations"][0]


def test_charges_steer_and_end(redis_client):
    clock = [NOW]
    api, store = _app(redis_client, clock)
    store.publish(_snapshot(NOW))
    # a: 8 free cores take two 4-core jobs; the third would queue there, so b wins
    assert [_rank(api) for _ in range(3)] == ["a", "a", "b"]
    assert redis_client.zcard(f"{PREFIX}:inflight") == 3
    # a snapshot newer than the charges shows the jobs (here: as running), charges end
    clock[0] = NOW + 60
    store.publish(_snapshot(NOW + 30))
    assert _rank(api) == "a"


def test_ranking_the_same_job_again_replaces_its_charge(redis_client):
    clock = [NOW]
    api, store = _app(redis_client, clock)
    store.publish(_snapshot(NOW))
    for _ in range(5):
        assert _rank(api, job_id=42) == "a"
    assert redis_client.zcard(f"{PREFIX}:inflight") == 1
    # ... so a second job still finds a's second slot
    assert _rank(api, job_id=43) == "a"
    assert _rank(api, job_id=44) == "b"


def test_explain_says_what_was_placed_since_the_figures(redis_client):
    clock = [NOW]
    api, store = _app(redis_client, clock)
    store.publish(_snapshot(NOW))
    _rank(api)
    body = api.post("/api/rank?explain=1", json={"job": {"tool_id": "bwa", "cores": 4, "mem": 8},
                                                "destinations": [{"id": "a"}, {"id": "b"}]}).get_json()
    a = next(e for e in body["explain"] if e["id"] == "a")
    assert "1 placed here since its figures" in a["reason"]


def test_several_gunicorn_workers_charge_correctly(redis_url, redis_client, tmp_path):
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    store.publish(_snapshot(time.time()))
    port = free_port()
    env = clean_env()
    env.update(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_REDIS_KEY_PREFIX=PREFIX)
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "3"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"

    def post(job_id: int | None) -> int:
        job = {"tool_id": "bwa", "cores": 1, "mem": 1, **({"id": job_id} if job_id is not None else {})}
        return requests.post(f"{base}/api/rank", json={"job": job, "destinations": [{"id": "a"}, {"id": "b"}]},
                             timeout=5).status_code

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        # 60 distinct jobs, 40 anonymous ones, and one job ranked 40 times, all at once
        calls = list(range(60)) + [None] * 40 + [1000] * 40
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, calls)) == {200}
    finally:
        stop(proc)
    members = redis_client.zrange(f"{PREFIX}:inflight", 0, -1)
    # one charge per job id (60 + job 1000), one per anonymous call
    assert len(members) == 60 + 1 + 40
