"""The benchmark scripts (bench/) run end to end in their tiny modes: a few
requests on a dozen destinations, a few cycles on a few tools. They start
their own redis-server, influxd and gunicorn servers on free loopback ports.
Nothing here looks at how fast anything was."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_rank_bench_tiny(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.rank", "--tiny", "--out", str(tmp_path))
    assert "| candidates | clients | service | p50 ms |" in proc.stdout
    data = json.loads((tmp_path / "latest.json").read_text())
    runs = data["rank"]["runs"]
    services = {r["service"] for r in runs}
    assert services == {"ours", "ours_noinflight", "limit", "prototype"}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in runs)
    assert {r["mode"] for r in runs} == {"sequential", "paced", "concurrent"}
    assert data["rank"]["gunicorn"]["worker_class"]
    # 200 against 5 candidates, in rounds that alternate them (tiny: 2 and 5)
    # and the floor (our request model alone) in those rounds only
    assert "validate_only" not in services
    for s in ("ours", "limit", "validate_only"):
        rounds = data["rank"]["scaling"][s]["round_p50_ms"]
        assert sorted(rounds) == ["2", "5"] and all(len(v) == 1 and v[0] > 0 for v in rounds.values())
    assert data["rank"]["machine"]["date_utc"]
    md = (tmp_path / "latest.md").read_text()
    assert "## Rank path" in md
    assert "validate_only (our request model, nothing else)" in md and "Each extra candidate" in md


def test_collector_bench_tiny(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.collector", "--tiny", "--out", str(tmp_path))
    assert "| destinations x tools |" in proc.stdout
    sizes = json.loads((tmp_path / "latest.json").read_text())["collector"]["sizes"]
    assert [s["destinations"] for s in sizes] == [5, 12]
    statements = {"steady": 2, "after_refresh": 2, "refresh_job": 1, "cold": 3, "uncached": 3}
    for s in sizes:
        for kind, n in statements.items():
            assert s[kind]["influx_requests"] == 1
            assert s[kind]["influx_statements"] == n
    assert "## Collector cycle" in (tmp_path / "latest.md").read_text()


def test_rank_profile_runs(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.profile_rank", "--candidates", "3", "--requests", "5", "--destinations", "6", "--tools", "10",
                "--charges", "50")
    assert "ms per request" in proc.stdout
    assert "50 in-flight charges in Redis" in proc.stdout


def test_rank_core_profile_with_slot_shapes_runs(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.profile_rank", "--core", "--candidates", "3", "--requests", "5", "--destinations", "6",
                "--tools", "10", "--slot-shapes", "2")
    assert "rank core, one at a time" in proc.stdout and "rank core, all at once" in proc.stdout
