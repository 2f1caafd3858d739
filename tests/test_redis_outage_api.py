"""Redis hung (SIGSTOP) or stopped and restarted empty on the same port,
while the real API (``tpv-broker serve``: gunicorn, several workers) is
under load from several client threads: every request gets an answer (TPV's
order, degraded, with ``api.degraded_status``; or the normal answer), none
errors or outlasts the API's own Redis timeouts, no body carries a
traceback, and the same API processes answer normally again once Redis is
back, without a restart."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import RedisServer, free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import CLI, wait_for, wait_until_serving
from .processes import clean_env as _env
from .test_processes import _stop

WORKERS = 3
CLIENTS = 6
TIMEOUT_S = 0.3  # redis.socket_timeout_s and redis.connect_timeout_s
# What one request may spend on a dead or hung Redis, as documented: two
# attempts, each a connect and a command.
PER_REQUEST_S = 2 * (TIMEOUT_S + TIMEOUT_S)
# Process noise on a shared 2-core machine.
SLACK_S = 2.0
# Under load a request can also wait behind the other clients' requests
# (gunicorn's gthread workers queue connections): at worst all of them on one worker.
UNDER_LOAD_S = CLIENTS * PER_REQUEST_S + SLACK_S

REQUEST = {
    "job": {"tool_id": "t", "cores": 4, "mem": 8},
    "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk", "tpv_score": 5}, {"id": "condor_us", "tpv_score": 5},
                     {"id": "pulsar_fr", "tpv_score": 2}],
}
TPV_ORDER = ["pulsar_uk", "condor_us", "pulsar_fr", "pulsar_de"]
# As in test_api.test_fresh_snapshot_is_not_tpv_order (same figures, fresh).
RANKED = ["pulsar_fr", "pulsar_de", "pulsar_uk", "condor_us"]


def publish_snapshot(url: str) -> None:
    now = time.time()

    def figures(dest_id: str, **kw: object) -> DestinationFigures:
        kw.setdefault("status", "online")
        return DestinationFigures(id=dest_id, metrics_at=now - 20, live_at=now - 20,
                                  sources={"queue_by_destination": now - 20}, **kw)  # type: ignore[arg-type]

    dests = [
        figures("pulsar_de", queued=5, running=5, cpus_free=24, mem_free_gb=46.9),
        figures("pulsar_uk", queued=10, running=3, cpus_free=19, mem_free_gb=37.1),
        figures("pulsar_fr", queued=0, running=6, cpus_free=14, mem_free_gb=27.3),
        figures("condor_us", status="offline", queued=0, cpus_free=16, mem_free_gb=31.25),
    ]
    meta = SnapshotMeta(created_at=now, newest_point_at=now - 20, destinations=len(dests), collector="test")
    with redis.Redis.from_url(url) as client:
        SnapshotStore(client, KeySchema("tpv_broker")).publish(
            Snapshot(meta=meta, destinations={d.id: d for d in dests}))


@dataclass
class Answer:
    started: float
    elapsed: float
    status: int | None = None
    body: str = ""
    error: str | None = None


class Load:
    """CLIENTS threads posting REQUEST back to back, each on its own session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    r = session.post(self.url, json=REQUEST, timeout=UNDER_LOAD_S)
                    answer = Answer(started, time.monotonic() - started, r.status_code, r.text)
                except requests.RequestException as e:
                    answer = Answer(started, time.monotonic() - started, error=repr(e))
                with self.lock:
                    self.answers.append(answer)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=UNDER_LOAD_S + 5)

    def since(self, t: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.started >= t]

    def normal_since(self, t: float) -> int:
        return sum(1 for a in self.since(t) if a.status == 200 and '"degraded":false' in a.body)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    # Not the session server: these tests stop, pause and restart it.
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(own_redis: RedisServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    degraded_status = getattr(request, "param", 200)
    port = free_port()
    env = _env(TPV_BROKER_REDIS_URL=own_redis.url, TPV_BROKER_REDIS_SOCKET_TIMEOUT_S=str(TIMEOUT_S),
               TPV_BROKER_REDIS_CONNECT_TIMEOUT_S=str(TIMEOUT_S),
               TPV_BROKER_API_DEGRADED_STATUS=str(degraded_status),
               # Charges would move the answer under load; what is under test is Redis.
               TPV_BROKER_INFLIGHT_ENABLED="false")
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        yield base
        # No API restart: the same master ran throughout, no worker was replaced.
        assert proc.poll() is None, "the API died"
    finally:
        log = _stop(proc, tmp_path)
    assert "Traceback" not in log
    assert log.count("Booting worker") == WORKERS, log
    assert "WORKER TIMEOUT" not in log


def _check(answers: list[Answer], degraded_status: int, bound_s: float) -> dict[str, int]:
    """Every answer is the normal one or a degraded one in TPV's order;
    returns how many of each kind (by degraded reason)."""
    kinds: dict[str, int] = {}
    for a in answers:
        assert a.error is None, f"a request failed: {a.error}"
        assert a.elapsed <= bound_s, f"a request took {a.elapsed:.2f} s (bound {bound_s:.1f} s)"
        assert "Traceback" not in a.body and "File \"" not in a.body, a.body
        body = json.loads(a.body)
        if body["degraded"]:
            assert a.status == degraded_status, (a.status, a.body)
            assert body["destinations"] == TPV_ORDER
            kind = body["degraded_reason"]
        else:
            assert a.status == 200, (a.status, a.body)
            assert body["destinations"] == RANKED
            kind = "normal"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@pytest.mark.parametrize("api", [200, 503], indirect=True, ids=["degraded-200", "degraded-503"])
def test_api_under_load_survives_hung_and_restarted_redis(api: str, own_redis: RedisServer,
                                                          request: pytest.FixtureRequest) -> None:
    degraded_status = request.node.callspec.params["api"]
    publish_snapshot(own_redis.url)
    with Load(f"{api}/api/rank") as load:
        t0 = time.monotonic()
        wait_for(lambda: load.normal_since(t0) >= 20, "normal answers under load")

        # Hung: the port accepts, nothing answers.
        hung_at = time.monotonic()
        own_redis.pause()
        wait_for(lambda: len(load.since(hung_at + PER_REQUEST_S)) >= 2 * CLIENTS, "answers while Redis hangs")
        own_redis.resume()
        resumed_at = time.monotonic()
        wait_for(lambda: load.normal_since(resumed_at) >= 20, "normal answers after SIGCONT")

        # Stopped (connection refused), then restarted empty on the same port.
        stopped_at = time.monotonic()
        own_redis.stop()
        wait_for(lambda: len(load.since(stopped_at + PER_REQUEST_S)) >= 2 * CLIENTS, "answers while Redis is down")
        own_redis.start()
        restarted_at = time.monotonic()
        wait_for(lambda: len(load.since(restarted_at)) >= CLIENTS, "answers from the empty Redis")
        publish_snapshot(own_redis.url)  # what the collector does next (see test_collector_redis_restart)
        published_at = time.monotonic()
        wait_for(lambda: load.normal_since(published_at) >= 20, "normal answers after the restart")

    hung = _check([a for a in load.answers if hung_at <= a.started < resumed_at], degraded_status, UNDER_LOAD_S)
    down = _check([a for a in load.answers if stopped_at <= a.started < restarted_at], degraded_status, UNDER_LOAD_S)
    everything = _check(load.answers, degraded_status, UNDER_LOAD_S)
    # The faults did hit the rank path...
    assert hung.get("Redis unavailable", 0) >= CLIENTS, hung
    assert down.get("Redis unavailable", 0) >= CLIENTS, down
    # ... and nothing but the faults: the empty Redis meant "no snapshot".
    assert set(everything) <= {"normal", "Redis unavailable", "no snapshot in Redis yet"}, everything


def test_hung_redis_costs_one_request_at_most_its_timeouts(api: str, own_redis: RedisServer) -> None:
    publish_snapshot(own_redis.url)
    assert requests.post(f"{api}/api/rank", json=REQUEST, timeout=5).json()["destinations"] == RANKED
    own_redis.pause()
    try:
        # One request at a time: nothing queues, so each takes what the API spends on Redis.
        for _ in range(2 * WORKERS):
            started = time.monotonic()
            r = requests.post(f"{api}/api/rank", json=REQUEST, timeout=PER_REQUEST_S + SLACK_S + 5)
            elapsed = time.monotonic() - started
            assert r.status_code == 200 and r.json()["degraded_code"] == "redis_unavailable"
            assert elapsed <= PER_REQUEST_S + SLACK_S, f"{elapsed:.2f} s with Redis hung"
        ready = requests.get(f"{api}/ready", timeout=PER_REQUEST_S + SLACK_S)
        assert ready.status_code == 503 and ready.json()["reason"] == "Redis unavailable"
    finally:
        own_redis.resume()
    wait_for(lambda: requests.get(f"{api}/ready", timeout=5).status_code == 200, "/ready once Redis answers again")
