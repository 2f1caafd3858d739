"""The deployed shapes: ``tpv-broker serve`` (gunicorn) and ``tpv-broker
collect`` (the APScheduler daemon) as real processes, stopped by SIGTERM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import CLI, stop, wait_for, wait_until_serving
from .processes import clean_env as _env


def _stop(proc: subprocess.Popen, tmp: Path) -> str:
    stop(proc)
    return (tmp / "err.log").read_text()


def test_collect_daemon_publishes_and_stops_on_sigterm(influx_server, influx_db, redis_url, redis_client, tmp_path):
    load_prototype_data(influx_server, influx_db)
    env = _env(
        TPV_BROKER_REDIS_URL=redis_url,
        TPV_BROKER_INFLUXDB_URL=influx_server.url,
        TPV_BROKER_INFLUXDB_DATABASE=influx_db,
        TPV_BROKER_COLLECTOR_INTERVAL_S="0.5",
    )
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "collect"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    store = SnapshotStore(redis_client, KeySchema("tpv_broker"))
    try:
        wait_for(lambda: store.read_meta() is not None, "the daemon's first snapshot")
        first = store.read_meta().created_at
        wait_for(lambda: store.read_meta().created_at > first, "a second cycle")
    finally:
        log = _stop(proc, tmp_path)
    assert proc.returncode == 0, log
    assert "collector stopped" in log
    assert "Traceback" not in log
    assert store.read_meta().destinations == 13


def test_serve_answers_rank_requests_and_stops_on_sigterm(influx_server, influx_db, redis_url, redis_client, tmp_path):
    load_prototype_data(influx_server, influx_db)
    env = _env(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_INFLUXDB_URL=influx_server.url,
               TPV_BROKER_INFLUXDB_DATABASE=influx_db)
    subprocess.run([*CLI, "collect", "--once"], env=env, check=True, capture_output=True)
    port = free_port()
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        assert requests.get(f"{base}/ready", timeout=2).json()["ready"] is True
        r = requests.post(
            f"{base}/api/rank",
            json={"job": {"tool_id": "bwa", "cores": 30, "mem": 8},
                  "destinations": [{"id": "pulsar_be01"}, {"id": "unknown_site"}, {"id": "condor_tpv"}]},
            timeout=2,
        )
        # condor_tpv has 32 free cores (fits 30), pulsar_be01 only 2: fit first;
        # unknown_site has no metrics: last.
        assert r.status_code == 200
        assert r.json()["destinations"] == ["condor_tpv", "pulsar_be01", "unknown_site"]
        bad = requests.post(f"{base}/api/rank", data=b"{not json", headers={"Content-Type": "application/json"},
                            timeout=2)
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "body"
    finally:
        log = _stop(proc, tmp_path)
    assert proc.returncode == 0, log
    assert "Traceback" not in log
