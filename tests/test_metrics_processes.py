"""Metrics and structured logs of the deployed processes: the real
``tpv-broker serve`` (gunicorn, 2 workers) and the real ``tpv-broker
collect`` daemon against the fixtures' redis-server and influxd."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import CLI, wait_for
from .processes import clean_env as _env
from .processes import stop as _stop

RANK = {"job": {"tool_id": "bwa", "cores": 1, "mem": 1}, "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk"}]}
# A fresh connection per request, so whichever worker is free accepts it.
CLOSE = {"Connection": "close"}



def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = requests.get(url, timeout=5, headers=CLOSE)
    assert resp.status_code == 200
    return samples(resp.text)


def total(s: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in s.items() if n == name and want <= set(lab))


def json_lines(text: str) -> list[dict]:
    # Every line of the log must be one JSON object.
    return [json.loads(line) for line in text.splitlines()]




def _worker_pids(log_path: Path) -> list[int]:
    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", log_path.read_text())]


def _counts_of(metrics_dir: Path, pid: int, tmp: Path) -> dict:
    """What one worker's own files say (its files copied apart)."""
    alone = tmp / f"worker-{pid}"
    alone.mkdir()
    for f in metrics_dir.glob(f"*_{pid}.db"):
        shutil.copy(f, alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}


def test_serve_counts_add_up_across_two_workers(redis_url, redis_client, tmp_path) -> None:
    now = time.time()
    dests = {d: DestinationFigures(id=d, status="online", cpus_free=8, mem_free_gb=32, queued=0, running=1,
                                   metrics_at=now, live_at=now, sources={"queue_by_destination": now})
             for d in ("pulsar_de", "pulsar_uk")}
    SnapshotStore(redis_client, KeySchema("tpv_broker")).publish(
        Snapshot(meta=SnapshotMeta(created_at=now, newest_point_at=now, destinations=2), destinations=dests))
    parent = tmp_path / "prom"
    env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_API_METRICS_DIR=str(parent),
               TPV_BROKER_LOGGING_FORMAT="json")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "err.log"
    with open(log_path, "w") as err:
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)

    def up() -> bool:
        assert proc.poll() is None, "tpv-broker serve exited early: " + log_path.read_text()
        try:
            return requests.get(f"{base}/health", timeout=1, headers=CLOSE).status_code == 200
        except requests.ConnectionError:
            return False

    def rank(n: int, bad: int = 0) -> None:
        for _ in range(n):
            r = requests.post(f"{base}/api/rank", json=RANK, timeout=5, headers=CLOSE)
            assert r.status_code == 200 and r.json()["degraded"] is False
        for _ in range(bad):
            r = requests.post(f"{base}/api/rank", data=b"{", timeout=5,
                              headers={**CLOSE, "Content-Type": "application/json"})
            assert r.status_code == 400

    try:
        wait_for(up, "gunicorn to answer /health")
        wait_for(lambda: len(_worker_pids(log_path)) == 2, "two workers to boot")
        first, second = _worker_pids(log_path)
        (metrics_dir,) = parent.iterdir()  # one directory for this run
        # Each worker in turn is frozen, so the other one serves: the
        # requests are split between the two processes, for sure.
        os.kill(first, signal.SIGSTOP)
        try:
            rank(7)
        finally:
            os.kill(first, signal.SIGCONT)
        os.kill(second, signal.SIGSTOP)
        try:
            rank(5, bad=2)
        finally:
            os.kill(second, signal.SIGCONT)
        served_by_second = _counts_of(metrics_dir, second, tmp_path)
        served_by_first = _counts_of(metrics_dir, first, tmp_path)
        assert total(served_by_second, "tpv_broker_api_requests_total", endpoint="/api/rank") == 7
        assert total(served_by_first, "tpv_broker_api_requests_total", endpoint="/api/rank") == 7
        # 7 + 5 + 2 = 14 requests (the /health polls aside), whichever worker answers the scrape.
        for _ in range(6):
            s = scrape(f"{base}/metrics")
            assert total(s, "tpv_broker_api_requests_total", endpoint="/api/rank") == 14
            assert total(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="ok") == 12
            assert total(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="bad_request") == 2
            assert total(s, "tpv_broker_api_request_duration_seconds_count", endpoint="/api/rank") == 14
            assert total(s, "tpv_broker_api_workers") == 2
            assert total(s, "tpv_broker_snapshot_destinations") == 2
            assert total(s, "tpv_broker_api_redis_up") == 1
        # A worker dies and is replaced: its counts stay, it no longer counts as alive.
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(_worker_pids(log_path)) == 3, "gunicorn to replace the killed worker")
        replacement = _worker_pids(log_path)[2]
        # Its app (and so its "alive" gauge) exists once it has loaded.
        wait_for(lambda: (metrics_dir / f"gauge_livesum_{replacement}.db").exists(), "the new worker's app")
        for _ in range(4):
            s = scrape(f"{base}/metrics")
            assert total(s, "tpv_broker_api_requests_total", endpoint="/api/rank") == 14
            assert total(s, "tpv_broker_api_workers") == 2
        assert not list(metrics_dir.glob(f"gauge_livesum_{first}.db"))
    finally:
        _stop(proc)
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert list(parent.iterdir()) == []  # the run's directory is removed at exit
    records = json_lines(log)
    booted = [r for r in records if r["logger"] == "gunicorn.error" and r["msg"].startswith("Booting worker")]
    assert len(booted) == 3 and all(r["level"] == "info" and r["event"] == "log" for r in booted)
    assert "Traceback" not in log


def test_collector_serves_metrics_and_logs_json_events(influx_server, influx_db, redis_url, redis_client,
                                                       tmp_path) -> None:
    load_prototype_data(influx_server, influx_db)
    port = free_port()
    env = _env(
        TPV_BROKER_REDIS_URL=redis_url,
        TPV_BROKER_INFLUXDB_URL=influx_server.url,
        TPV_BROKER_INFLUXDB_DATABASE=influx_db,
        TPV_BROKER_INFLUXDB_USERNAME="reader",
        TPV_BROKER_INFLUXDB_PASSWORD="never-in-logs-7f3a",
        TPV_BROKER_COLLECTOR_INTERVAL_S="0.3",
        TPV_BROKER_COLLECTOR_METRICS_PORT=str(port),
        TPV_BROKER_LOGGING_FORMAT="json",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    log_path = tmp_path / "err.log"
    started = time.time()
    with open(log_path, "w") as err:
        proc = subprocess.Popen([*CLI, "collect"], env=env, stdout=subprocess.DEVNULL, stderr=err)

    def published_cycles() -> float:
        assert proc.poll() is None, "the collector exited early: " + log_path.read_text()
        try:
            return total(scrape(url), "tpv_broker_collector_cycles_total", outcome="published")
        except requests.ConnectionError:
            return 0

    try:
        wait_for(lambda: published_cycles() >= 2, "two published cycles on the metrics port")
        s = scrape(url)
        scraped_at = time.time()
    finally:
        _stop(proc)
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert total(s, "tpv_broker_collector_destinations") == 13
    assert total(s, "tpv_broker_collector_tools") > 0
    assert total(s, "tpv_broker_collector_rows_read_total") > 0
    assert total(s, "tpv_broker_collector_cycles_total", outcome="failed") == 0
    assert total(s, "tpv_broker_collector_cycle_duration_seconds_count", outcome="published") >= 2
    assert total(s, "tpv_broker_collector_cycle_duration_seconds_sum", outcome="published") > 0
    assert started <= total(s, "tpv_broker_collector_last_success_timestamp_seconds") <= scraped_at
    assert 0 <= total(s, "tpv_broker_collector_snapshot_age_seconds") <= scraped_at - started
    assert ("tpv_broker_collector_newest_point_age_seconds", ()) in s
    assert total(s, "tpv_broker_collector_consecutive_failures") == 0
    records = json_lines(log)
    events = [r["event"] for r in records]
    assert events[0] == "metrics_served" and records[0]["port"] == port
    assert "collector_started" in events and events[-1] == "collector_stopped"
    done = [r for r in records if r["event"] == "cycle_done"]
    assert len(done) >= 2
    assert all(r["outcome"] == "published" and r["destinations"] == 13 and r["rows"] > 0 and r["problems"] == 0
               and isinstance(r["duration_ms"], (int, float)) and r["logger"] == "tpv_broker.collector"
               for r in done)
    assert "never-in-logs-7f3a" not in log


def test_collector_failures_show_in_metrics_and_logs(redis_url, tmp_path) -> None:
    # InfluxDB at a port where nothing listens: every cycle fails.
    port = free_port()
    env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_INFLUXDB_URL=f"http://127.0.0.1:{free_port()}",
               TPV_BROKER_COLLECTOR_INTERVAL_S="0.3", TPV_BROKER_COLLECTOR_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    log_path = tmp_path / "err.log"
    with open(log_path, "w") as err:
        proc = subprocess.Popen([*CLI, "collect"], env=env, stdout=subprocess.DEVNULL, stderr=err)

    def failed_cycles() -> float:
        assert proc.poll() is None, "the collector exited early: " + log_path.read_text()
        try:
            return total(scrape(url), "tpv_broker_collector_cycles_total", outcome="failed")
        except requests.ConnectionError:
            return 0

    try:
        wait_for(lambda: failed_cycles() >= 2, "two failed cycles on the metrics port")
        s = scrape(url)
    finally:
        _stop(proc)
    assert total(s, "tpv_broker_collector_cycles_total", outcome="published") == 0
    assert total(s, "tpv_broker_collector_consecutive_failures") >= 2
    assert total(s, "tpv_broker_collector_last_success_timestamp_seconds") == 0
    assert ("tpv_broker_collector_snapshot_age_seconds", ()) not in s
    # The text format: one key=value line per event.
    failed = [line for line in log_path.read_text().splitlines() if " event=cycle_failed " in line]
    # The same failure again is not logged again (DEBUG): one line for the outage.
    assert len(failed) == 1
    assert all(re.search(r"^time=\S+ level=error logger=tpv_broker.collector event=cycle_failed "
                         r'msg="cycle NOT published: .*InfluxDB at http://127.0.0.1:\d+ .*" .*outcome=failed', line)
               for line in failed)


def test_collector_metrics_port_in_use_is_one_clear_error(redis_url, tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_COLLECTOR_METRICS_PORT=str(port))
        result = subprocess.run([*CLI, "collect"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"error: collector.metrics_port: cannot serve metrics on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_an_unusable_metrics_dir_is_one_clear_error(redis_url, tmp_path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_API_METRICS_DIR=str(not_a_dir))
    result = subprocess.run([*CLI, "serve", "--bind", f"127.0.0.1:{free_port()}"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: api.metrics_dir: cannot create the metrics directory in {not_a_dir}: ")
    assert "Traceback" not in result.stderr
