"""The deployed shapes: ``tpv-broker serve`` (gunicorn) and ``tpv-broker
collect`` (the APScheduler daemon) as real processes, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
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


def _worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_serve_rotates_tokens_on_reload_and_survives_a_worker_ending(redis_url, tmp_path):
    """docs/security.md's rotation without downtime, on the real gunicorn:
    each HUP takes up the tokens file; a bad file is refused with the
    previous tokens kept; a worker that ends (a timeout, a reload) leaves
    the others' shared metrics directory in place. Each of these stopped
    the whole API before."""
    old, new = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
    tokens = tmp_path / "eu-tokens"
    tokens.write_text(old + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"api:\n  tenants:\n    usegalaxy-eu:\n      auth_tokens_file: {tokens}\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "err.log", "w") as err:
        # Where gunicorn 24+ would open its control socket: a second instance would take it over.
        runtime = tmp_path / "run"
        runtime.mkdir()
        proc = subprocess.Popen([*CLI, "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "2"], env=_env(TPV_BROKER_REDIS_URL=redis_url,
                                                             XDG_RUNTIME_DIR=str(runtime)),
                                stdout=subprocess.DEVNULL, stderr=err)

    def status(token: str) -> int:
        body = {"job": {"tool_id": "bwa"}, "destinations": [{"id": "a"}]}
        return requests.post(f"{base}/api/rank", json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=2).status_code

    def rotate(text: str) -> None:
        # As docs/security.md says: a new file moved over the old one, then HUP.
        staged = tmp_path / "eu-tokens.new"
        staged.write_text(text)
        staged.replace(tokens)
        proc.send_signal(signal.SIGHUP)

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        assert (status(old), status(new)) == (200, 401)
        rotate(f"{old}\n{new}\n")
        wait_for(lambda: status(new) == 200 and status(old) == 200 and status(new) == 200, "the new token")
        rotate(f"{old}\n{new}\nshort-token\n")  # a bad line: refused, the previous tokens stay
        wait_for(lambda: "tokens not reloaded, the previous ones are kept" in (tmp_path / "err.log").read_text(),
                 "the refused reload in the log")
        assert proc.poll() is None and (status(old), status(new)) == (200, 200)
        # kept, not dropped: auth stays on (a token file that breaks must never open the API)
        assert (status("wrong-token-0123456789abcdef"), status("")) == (401, 401)
        rotate(f"{new}\n")
        wait_for(lambda: status(old) == 401 and status(old) == 401, "the old token to go")
        assert status(new) == 200
        # A worker that ends by itself (as on a timeout) is replaced; the API keeps serving.
        wait_for(lambda: len(_worker_pids(proc.pid)) == 2, "the reloads' old workers to finish")
        # No control socket: gunicorn opens it before its loop handles signals, so the reloads above followed it.
        assert list(runtime.iterdir()) == []
        before = _worker_pids(proc.pid)
        os.kill(before[0], signal.SIGTERM)
        wait_for(lambda: len(set(_worker_pids(proc.pid)) - set(before)) == 1, "a new worker")
        assert proc.poll() is None
        assert all(status(new) == 200 for _ in range(6))
        assert requests.get(f"{base}/metrics", timeout=2).status_code == 200
    finally:
        log = _stop(proc, tmp_path)
    assert proc.returncode == 0, log
    assert "Traceback" not in log
