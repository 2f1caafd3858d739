"""Several collector daemons (real ``tpv-broker collect`` processes) on one
real Redis and InfluxDB: exactly one publishes; when it is killed with
SIGKILL (no release) a standby publishes within two intervals; a leader
paused with SIGSTOP in the middle of a cycle, that wakes after losing the
lease, does not publish over the new one."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import CLI, wait_for
from .processes import clean_env as _env

INTERVAL_S = 1.5
# Process noise on a shared 2-core machine.
SLACK_S = 1.0
KEYS = KeySchema("tpv_broker")


class Collectors:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, **env: str) -> subprocess.Popen:
        with open(self.tmp_path / f"{name}.log", "w") as err:
            proc = subprocess.Popen([*CLI, "collect"],
                                    env={**self.env, "TPV_BROKER_COLLECTOR_INSTANCE_ID": name, **env},
                                    stdout=subprocess.DEVNULL, stderr=err)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def collectors(influx_server, influx_db, redis_url, redis_client, tmp_path) -> Iterator[Collectors]:
    load_prototype_data(influx_server, influx_db)
    env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_INFLUXDB_URL=influx_server.url,
               TPV_BROKER_INFLUXDB_DATABASE=influx_db, TPV_BROKER_COLLECTOR_INTERVAL_S=str(INTERVAL_S))
    c = Collectors(tmp_path, env)
    try:
        yield c
    finally:
        c.stop_all()
    for name in c.procs:
        assert "Traceback" not in c.log(name), c.log(name)


class InfluxGate:
    """A proxy in front of InfluxDB that, once closed, holds every query
    until it is opened again: a collector whose cycle is held there has
    checked that it leads and not yet published."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.passing = threading.Event()
        self.passing.set()
        self.holding = threading.Event()  # a query is held
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB

            def do_POST(self) -> None:
                gate.forward(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.passing.clear()

    def open(self) -> None:
        self.passing.set()

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if not self.passing.is_set():
            self.holding.set()
            self.passing.wait(60)
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(self.upstream + h.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, ctype, payload = resp.status, resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as e:
            status, ctype, payload = e.code, e.headers.get("Content-Type", ""), e.read()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def stop(self) -> None:
        self.open()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def influx_gate(influx_server) -> Iterator[InfluxGate]:
    gate = InfluxGate(influx_server.url)
    try:
        yield gate
    finally:
        gate.stop()  # open first: a collector held there could not stop


def _publishers(store: SnapshotStore, seconds: float) -> list[tuple[float, str]]:
    """Every distinct snapshot seen while watching for ``seconds``: (created_at, collector)."""
    seen: dict[float, str] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        meta = store.read_meta()
        if meta is not None:
            seen[meta.created_at] = meta.collector
        time.sleep(0.02)
    return sorted(seen.items())


def _holder(client: redis.Redis) -> str:
    raw = client.get(KEYS.collector_lease)
    return "" if raw is None else raw.decode()


def test_one_publishes_and_a_standby_takes_over_when_it_is_killed(collectors: Collectors,
                                                                   redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    collectors.start("collector-a")
    wait_for(lambda: (store.read_meta() or None) is not None, "collector-a's first snapshot")
    collectors.start("collector-b")
    wait_for(lambda: "standing by" in collectors.log("collector-b"), "collector-b to stand by")

    seen = _publishers(store, 5 * INTERVAL_S)
    assert len(seen) >= 3, seen
    assert {c for _, c in seen} == {"collector-a"}, seen
    assert _holder(redis_client).startswith("collector-a/")
    assert "cycle published" not in collectors.log("collector-b")
    assert "collector lease held by collector-a/" in collectors.log("collector-b")

    killed_at = time.time()
    collectors.procs["collector-a"].kill()  # SIGKILL: no release, the lease must expire
    collectors.procs["collector-a"].wait()
    wait_for(lambda: (store.read_meta().collector == "collector-b"), "collector-b to take over")
    took_over_s = store.read_meta().created_at - killed_at
    assert took_over_s <= 2 * INTERVAL_S + SLACK_S, f"took over {took_over_s:.2f} s after the kill"
    assert _holder(redis_client).startswith("collector-b/")
    later = _publishers(store, 3 * INTERVAL_S)
    assert len(later) >= 2 and {c for _, c in later} == {"collector-b"}, later


def test_a_leader_that_wakes_after_losing_the_lease_does_not_publish(collectors: Collectors, influx_gate: InfluxGate,
                                                                      redis_client: redis.Redis) -> None:
    """Paused between a cycle's "do I lead?" and its publish (a GC pause, a
    frozen VM), the old leader wakes and publishes without asking again:
    only the lease fence, checked inside the publish's transaction, stops
    it. (Paused between cycles, it would ask first and stand by, fence or no
    fence: its clock knows how long the lease lasts.)"""
    store = SnapshotStore(redis_client, KEYS)
    # A timeout that the pause cannot exhaust: the held cycle must get its answer, or it never tries to publish.
    old = collectors.start("collector-old", TPV_BROKER_INFLUXDB_URL=influx_gate.url,
                           TPV_BROKER_INFLUXDB_TIMEOUT_S="120")
    wait_for(lambda: (store.read_meta() or None) is not None, "collector-old's first snapshot")
    collectors.start("collector-new")
    wait_for(lambda: "standing by" in collectors.log("collector-new"), "collector-new to stand by")

    influx_gate.close()
    wait_for(influx_gate.holding.is_set, "collector-old's next cycle to reach InfluxDB")
    old.send_signal(signal.SIGSTOP)
    wait_for(lambda: store.read_meta().collector == "collector-new", "collector-new to take over")
    published_before = collectors.log("collector-old").count("cycle published")
    influx_gate.open()  # the answer waits in the paused process's socket
    old.send_signal(signal.SIGCONT)

    def held_cycle_ended() -> bool:
        log = collectors.log("collector-old")
        return ("no longer holds the lease" in log or log.count("cycle published") > published_before
                or store.read_meta().collector == "collector-old")

    wait_for(held_cycle_ended, "collector-old's held cycle to end")
    seen = _publishers(store, 3 * INTERVAL_S)
    log = collectors.log("collector-old")
    assert log.count("cycle published") == published_before, f"the woken leader published: {log}"
    assert "no longer holds the lease (holder now: collector-new/" in log, log
    assert old.poll() is None, "the old leader died"
    assert len(seen) >= 2 and {c for _, c in seen} == {"collector-new"}, seen
    assert _holder(redis_client).startswith("collector-new/")
    assert "collector lease held by collector-new/" in log, log
