"""A live broker for the TPV tests: a real redis-server holding a snapshot
and ``tpv-broker serve`` on free loopback ports, which the tests can stop,
hang and start again.

Runs with the main venv's Python (``.venv/bin/python tests_tpv/broker_harness.py
WORKDIR``), so the snapshot is written by the service's own store code; the
TPV venv never imports the service. Prints one JSON line
``{"api": URL, "redis": URL}`` when the API is ready, then obeys one command
per line on stdin, answering ``ok`` or ``error: ...``:

  stop     SIGTERM the API (its port refuses connections)
  start    start it again on the same port, wait until /ready
  pause    SIGSTOP it (its port still accepts connections; nothing answers)
  resume   SIGCONT it

End of input stops everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tpv_broker.config.settings import load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import RedisServer, free_port
from tpv_broker.store.snapshots import SnapshotStore, store_from_config

# For a 4-core 16 GB job (bwa in examples/tpv/tpv_broker.yml): pulsar_it01
# has room and no queue, pulsar_uk a queue, pulsar_de nothing free and a
# long queue. The broker's order is it01, uk, de; TPV's tags put de first.
# it01's room is large enough that the jobs the tests send it (which the
# broker may count as in flight there) never fill it.
FIGURES = {
    "pulsar_de": {"queued": 40, "running": 60, "cpus_total": 64, "cpus_free": 0, "mem_total_gb": 512, "mem_free_gb": 0},
    "pulsar_uk": {"queued": 10, "running": 20, "cpus_total": 32, "cpus_free": 8, "mem_total_gb": 256,
                  "mem_free_gb": 32},
    "pulsar_it01": {"queued": 0, "running": 2, "cpus_total": 1024, "cpus_free": 1000, "mem_total_gb": 8192,
                    "mem_free_gb": 8000},
}
# Re-published this often, so the figures never age past the broker's
# freshness limits however long the tests take.
REPUBLISH_S = 10.0
READY_TIMEOUT_S = 30.0


def snapshot(now: float) -> Snapshot:
    destinations = {
        dest_id: DestinationFigures(id=dest_id, status="online", metrics_at=now, live_at=now,
                                    sources={"queue_by_destination": now}, in_config=True, **figures)
        for dest_id, figures in FIGURES.items()
    }
    meta = SnapshotMeta(created_at=now, newest_point_at=now, destinations=len(destinations), collector="tests_tpv")
    return Snapshot(meta=meta, destinations=destinations)


class Api:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "api.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            # Its own process group, so pause/resume reach gunicorn's worker too.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tpv_broker", "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tpv-broker serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if requests.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tpv-broker serve not ready within {READY_TIMEOUT_S:g} s; see {self.log}")
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("the API is not running")
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGCONT)  # a paused API cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def republish(store: SnapshotStore, stop: threading.Event) -> None:
    while not stop.wait(REPUBLISH_S):
        store.publish(snapshot(time.time()))


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    redis_server = RedisServer(workdir / "redis").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPV_BROKER_")}
    env["TPV_BROKER_REDIS_URL"] = redis_server.url
    config = load_config(environ=env)
    store = store_from_config(config.redis.url, config.redis.key_prefix, config.redis.socket_timeout_s)
    store.publish(snapshot(time.time()))
    stop_publishing = threading.Event()
    publisher = threading.Thread(target=republish, args=(store, stop_publishing), daemon=True)
    publisher.start()
    api = Api(env, workdir)
    try:
        api.start()
        print(json.dumps({"api": api.url, "redis": redis_server.url}), flush=True)
        commands = {
            "stop": api.stop,
            "start": api.start,
            "pause": lambda: api.signal(signal.SIGSTOP),
            "resume": lambda: api.signal(signal.SIGCONT),
        }
        for line in sys.stdin:
            command = line.strip()
            try:
                commands[command]()
                print("ok", flush=True)
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
                print(f"error: {command}: {exc}", flush=True)
    finally:
        stop_publishing.set()
        api.stop()
        redis_server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
