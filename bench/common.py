"""What the benchmarks share: throw-away Redis and InfluxDB, loading
synthetic metrics, machine facts, server processes, result files."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

import yaml

from tpv_broker.devtools.servers import InfluxServer, RedisServer, free_port

from .data import Dataset, lines
from .loadgen import Client

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The libraries on the request path, recorded with every result, so that a
# figure that moved between two runs can be told from an upgrade (a fresh
# venv takes the newest releases): redis-py 8.2, for one, packs each
# argument of a command in Python (bench/README.md).
LIBRARIES = ("redis", "hiredis", "Flask", "Werkzeug", "gunicorn", "pydantic", "numpy")


def library_versions() -> dict[str, str]:
    """Each of ``LIBRARIES``' installed version ("-": not installed)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def machine() -> dict[str, Any]:
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024**2, 1)
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    influx_v = subprocess.run(["influxd", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "os": platform.platform(),
        "redis": next((w.split("=")[1] for w in redis_v if w.startswith("v=")), "?"),
        "influxdb": influx_v,
        "libraries": library_versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_dataset(influx: InfluxServer, db: str, ds: Dataset, now: int, batch: int = 10000) -> dict[str, Any]:
    """Write the synthetic metrics; timed apart from anything measured."""
    influx.create_database(db)
    all_lines = list(lines(ds, now))
    t = time.perf_counter()
    for i in range(0, len(all_lines), batch):
        influx.write_lines(db, all_lines[i : i + batch])
    return {"points": len(all_lines), "series_run_time": ds.series, "load_s": round(time.perf_counter() - t, 2)}


def bench_config(redis: RedisServer, influx: InfluxServer, db: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "influxdb": {"url": influx.url, "database": db, "timeout_s": 120},
        "redis": {"url": redis.url, "key_prefix": "tpv_broker"},
        # The snapshot is published once before the runs and the bench runs
        # for minutes: without these, ours would answer degraded (and faster).
        "api": {"max_snapshot_age_s": 86400},
        "scoring": {"max_metrics_age_s": 86400},
    }
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: pathlib.Path, cfg: dict[str, Any]) -> pathlib.Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPV_BROKER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ServerProcess:
    """A gunicorn server started by us; stopped by its own process group."""

    def __init__(self, name: str, argv: list[str], port: int, probe: bytes, log: pathlib.Path) -> None:
        self.name, self.argv, self.port, self.probe, self.log = name, argv, port, probe, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up; see {self.log}")
            try:
                c = Client("127.0.0.1", self.port, timeout_s=5)
                status, _ = c.request(self.probe)
                c.close()
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout_s:g} s; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def python() -> str:
    return sys.executable


def port() -> int:
    return free_port()


def write_results(part: str, data: dict[str, Any], out_dir: pathlib.Path) -> pathlib.Path:
    """Merge ``data`` under ``part`` into ``latest.json`` in ``out_dir``,
    with the machine and date it was measured on (the other parts keep
    theirs: they may be from another day or machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "latest.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current[part] = {**data, "machine": machine()}
    current.pop("machine", None)  # written by older versions, for all parts at once
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path
