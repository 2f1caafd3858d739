"""The benchmark scripts (bench/) run end to end in their tiny modes: a few
requests on a dozen destinations, a few cycles on a few tools. They start
their own redis-server, influxd and gunicorn servers on free loopback ports.
Nothing here looks at how fast anything was."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest
import redis

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
    rank = data["rank"]
    runs = rank["runs"]
    assert {r["service"] for r in runs} == {"ours", "ours_noinflight", "floor", "floor_charged", "limit", "prototype"}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in runs)
    modes = {mode: {r["service"] for r in runs if r["mode"] == mode} for mode in ("sequential", "paced", "concurrent")}
    every = {"ours", "ours_noinflight", "floor", "floor_charged", "limit", "prototype"}
    assert modes == {"sequential": every, "paced": {"ours", "ours_noinflight", "floor"}, "concurrent": every}
    assert rank["gunicorn"]["worker_class"]
    assert rank["run_s"] > 0
    # The fewest against the most candidates (tiny: 2 and 5), in rounds that
    # alternate them: ours, the floor and the limit.
    assert sorted(rank["scaling"]) == ["floor", "limit", "ours"]
    for paired in rank["scaling"].values():
        rounds = paired["round_p50_ms"]
        assert sorted(rounds) == ["2", "5"] and all(len(v) == 1 and v[0] > 0 for v in rounds.values())
    assert rank["machine"]["date_utc"]
    # The request path's libraries, as installed: a result moves with them.
    assert rank["machine"]["libraries"]["redis"] == redis.__version__
    # The busy site: ours with 0 and (tiny) 30 live charges preloaded, beside the floor, both modes.
    busy = rank["busy"]
    assert {(r["service"], r["mode"]) for r in busy["runs"]} == {
        (s, m) for s in ("ours_0", "ours_30", "floor") for m in ("sequential", "concurrent")}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in busy["runs"])
    # The bodies' job ids move their own charges: the preloaded ones stay.
    assert busy["live_after"]["ours_30"] >= 30
    # A broker 3 Galaxies share against one serving one, both answering every request.
    tenants = rank["tenants"]
    assert {r["service"] for r in tenants["runs"]} == {"tenants_single", "tenants_shared"}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in tenants["runs"])

    md = (tmp_path / "latest.md").read_text()
    assert "## Rank path" in md and "Each extra candidate" in md
    assert f"Libraries: redis {redis.__version__}, hiredis " in md
    rows = _rank_targets(md)
    assert [r[0] for r in rows] == [
        "p50 at 5 candidates: ours at most 2x the floor's",
        "p50 at 5 candidates: ours at least 200x below the prototype's",
        "throughput at 5 candidates, 2 clients: ours at least 60 % of the floor's",
        "each extra candidate (2 -> 5): ours at most 2x the floor's",
        "busy site, p50 at 5 candidates: 30 live charges at most 1.2x none",
        "busy site, p50 at 5 candidates with 30 live charges: at most 2x the floor's",
        "busy site, 2-client throughput at 5 candidates with 30 live charges: at least 60% of the floor's",
        "busy site, p50 at 5 candidates with 30 live charges: at least 200x below the prototype's (its p50 from the "
        "main runs)",
        "3 tenants (aliases, a private endpoint each, rate limits), p50 at 5 candidates: at most 1.2x one tenant's",
    ]
    # Each with its figures and how far the rounds moved (tiny: one round).
    # The first three are judged in any run that measured the floor; the
    # last may be lost in the noise of a few requests (n/a: in a tiny run
    # the cost per extra candidate can even come out negative), but shows
    # the floor's figure ("floor -" followed by no number: not measured).
    for target, measured, spread, verdict in rows:
        assert not re.search(r"floor -(?![\d.])", measured), (target, measured)
        if target.startswith("each extra") and verdict == "n/a":
            continue
        if "prototype's (its p50 from the main runs)" in target:
            assert spread == "medians of different runs" and verdict in ("met", "NOT met"), (target, verdict)
            continue
        assert "(1 round)" in spread and verdict in ("met", "NOT met"), (target, spread, verdict)
    assert "validate_only" not in md


def _rank_targets(md: str) -> list[list[str]]:
    """The rows of the rank part's target table: target, measured, spread, verdict."""
    lines = md.split("## Rank path", 1)[1].split("\n## ", 1)[0].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| target |")) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_collector_bench_tiny(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.collector", "--tiny", "--out", str(tmp_path))
    assert "| destinations x tools |" in proc.stdout
    collector = json.loads((tmp_path / "latest.json").read_text())["collector"]
    sizes = collector["sizes"]
    assert [s["destinations"] for s in sizes] == [5, 12]
    statements = {"steady": 2, "after_refresh": 2, "refresh_unchanged": 1, "refresh_day": 1, "refresh_reread": 1,
                  "refresh_full": 1, "cold": 3, "uncached": 3}
    for s in sizes:
        for kind, n in statements.items():
            assert s[kind]["influx_requests"] == 1
            assert s[kind]["influx_statements"] == n
    md = (tmp_path / "latest.md").read_text()
    assert "## Collector cycle" in md
    # The largest size again, from three InfluxDBs (issue 21): one request
    # each per cycle, the single source's snapshot, rounds against it.
    multi = collector["multi"]
    assert multi["destinations"] == 12
    one_each = {"network": [1], "galaxy_a": [1], "galaxy_b": [1]}
    for kind in ("steady", "uncached"):
        assert multi[kind]["multi"]["influx_requests_seen"] == one_each
        assert multi[kind]["single"]["influx_requests_seen"] == {"influxdb": [1]}
        assert len(multi[kind]["ratio_rounds"]) == multi[kind]["rounds"] and multi[kind]["ratio_median"] > 0
        assert multi[kind]["multi"]["destinations"] == multi[kind]["single"]["destinations"] == [12]
    assert multi["steady"]["multi"]["influx_statements"] == {"network": 1, "galaxy_a": 1, "galaxy_b": 1}
    assert multi["uncached"]["multi"]["influx_statements"] == {"network": 1, "galaxy_a": 2, "galaxy_b": 2}
    assert multi["first"]["multi"]["influx_requests"] == {"network": 1, "galaxy_a": 1, "galaxy_b": 1}
    snapshot = multi["snapshot"]
    assert snapshot["destinations"] == {"single": 12, "multi": 12}
    assert snapshot["destinations_differing"] == 0 and snapshot["tool_stats_equal"]
    assert snapshot["source_states"] == {"network": "ok", "galaxy_a": "ok", "galaxy_b": "ok"}
    part = md.split("### Several sources: 12 x 30", 1)[1]
    assert "| met |" in part and "NOT met" not in part


def test_rank_profile_runs(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.profile_rank", "--candidates", "3", "--requests", "5", "--destinations", "6", "--tools", "10",
                "--charges", "50")
    assert "ms per request" in proc.stdout
    assert "50 in-flight charges in Redis" in proc.stdout


def test_rank_core_profile_with_slot_shapes_runs(tmp_path: pathlib.Path) -> None:
    proc = _run("bench.profile_rank", "--core", "--candidates", "3", "--requests", "5", "--destinations", "6",
                "--tools", "10", "--slot-shapes", "2")
    assert "rank core: " in proc.stdout and "us per candidate" in proc.stdout
