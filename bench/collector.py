"""Collector cost at 13, 100 and 500 destinations x 2,000 tools, on a
real influxd and a real redis-server: wall time, InfluxDB HTTP requests and
InfluxQL statements, Redis commands and round trips, peak memory.

What the daemon runs:
* ``steady``: the cycle, every ``collector.interval_s`` (15 s): the live
  figures only; the run-time statistics from the last refresh are reused
  and the tool statistics hash in Redis is left untouched;
* the refresh job, every ``collector.stats_refresh_s`` (300 s), a job of
  its own beside the cycles, which reads what was written since the last
  good refresh (and ``state.LATE_POINTS_S`` before it) and merges it:
  ``refresh_unchanged`` when nothing was (most of them: gxadmin writes
  once a day); ``refresh_day`` when gxadmin's day has just arrived (a new
  point for every (tool, destination) pair: merged, fallback levels and
  Redis payload rebuilt); ``refresh_reread``, the next one, which reads
  that day again (it is within the overlap) and finds nothing new;
* ``refresh_full``: the refresh job reading the whole window, as the first
  one of a process and every ``collector.stats_full_read_s`` (1 h) do;
* ``after_refresh``: the first cycle after a day's refresh, which writes the
  new tool statistics to Redis;
* ``cold``: the first cycle of a new collector process: everything read and
  written by the cycle itself (imports and first connections included);
and, for comparison, ``uncached``: a cycle that reads and writes
everything, which is what every cycle did before the statistics were kept
between cycles (and what ``tpv-broker collect --once`` still does).

The synthetic metrics (``bench/data.py``: density and time layout) are
written before anything is measured; loading time is reported apart. Each
size is measured in a fresh subprocess, so its peak RSS is its own.

    python -m bench.collector           # the full run (a few minutes)
    python -m bench.collector --tiny    # seconds: checks that everything runs
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import resource
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from typing import Any

import redis as redis_lib
import requests
from redis.connection import AbstractConnection

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.state import CollectorState
from tpv_broker.config.settings import SINGLE_SOURCE, BrokerConfig
from tpv_broker.devtools.servers import InfluxServer, RedisServer
from tpv_broker.store.snapshots import store_from_config

from . import common
from .data import Dataset, make_dataset, run_time_lines
from .report import collector_table, render_markdown

KINDS = ("steady", "after_refresh", "refresh_unchanged", "refresh_day", "refresh_reread", "refresh_full", "cold",
         "uncached")
REFRESHES = ("refresh_unchanged", "refresh_day", "refresh_reread", "refresh_full")
FULL = {"sizes": [13, 100, 500], "tools": 2000, "steady": 5, "refresh": 3}
TINY = {"sizes": [5, 12], "tools": 30, "steady": 2, "refresh": 1}


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.statements = 0
        self.seconds = 0.0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.requests += 1
        q = (kwargs.get("data") or {}).get("q", "") if isinstance(kwargs.get("data"), dict) else ""
        self.statements += len([s for s in q.split(";\n") if s.strip()])
        t = time.perf_counter()
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


class RedisCounter:
    """Server-side command counts (INFO commandstats) and client-side round
    trips (socket writes of packed commands)."""

    def __init__(self, url: str) -> None:
        self.admin = redis_lib.Redis.from_url(url)
        self.writes = 0
        original = AbstractConnection.send_packed_command
        counter = self

        def counting(conn: AbstractConnection, command: object, check_health: bool = True) -> None:
            counter.writes += 1
            original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]

    def reset(self) -> None:
        self.admin.config_resetstat()
        self.writes = 0

    def commands(self) -> int:
        stats = self.admin.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def _write_day(cfg: dict[str, Any], ds: Dataset, ts: int, seed: int) -> None:
    """gxadmin's next day: a new point for every (tool, destination) pair,
    written as telegraf does (batches of lines), not timed."""
    day = list(run_time_lines(ds, ts, random.Random(seed)))
    url, db = cfg["influxdb"]["url"], cfg["influxdb"]["database"]
    for i in range(0, len(day), 10000):
        resp = requests.post(f"{url}/write", params={"db": db, "precision": "s"},
                             data="\n".join(day[i : i + 10000]).encode(), timeout=120)
        if resp.status_code != 204:
            raise RuntimeError(f"writing a day of statistics: HTTP {resp.status_code} {resp.text[:200]}")


def _measure(cfg: dict[str, Any], steady: int, refresh: int, ds: Dataset) -> dict[str, Any]:
    """Runs in the subprocess: cold, steady and refresh runs, in the order
    a daemon meets them."""
    config = BrokerConfig.model_validate(cfg)
    session = CountingSession()
    source = InfluxQLClient(config.influxdb, session=session)
    counter = RedisCounter(config.redis.url)
    store = store_from_config(config.redis.url, config.redis.key_prefix, 60)
    # As the daemon has it: refreshes run as a job of their own.
    state = CollectorState.new(config, background_stats=True)

    def cycle(kind: str) -> dict[str, Any]:
        session.requests = session.statements = 0
        session.seconds = 0.0
        counter.reset()
        t = time.perf_counter()
        rows, dests, tools, changed = 0, 0, 0, None
        if kind in REFRESHES:
            # A full read is what a new process's first refresh does.
            owner = CollectorState.new(config, background_stats=True) if kind == "refresh_full" else state
            stats = owner.of(SINGLE_SOURCE).stats
            done = stats.refresh(config, source, time.time)
            if done.problem is not None or stats.current is None or done.full != (kind == "refresh_full"):
                raise RuntimeError(f"{kind}: {done}")
            rows, tools, changed = done.rows, len(stats.current.tool_stats), done.changed
        else:
            report = collect_once(config, source, store, time.time, None if kind == "uncached" else state)
            if not report.published or report.errors:
                raise RuntimeError(f"{kind} cycle: {report.summary()}")
            rows, dests, tools = report.rows_read, report.destinations, report.tools
        wall = time.perf_counter() - t
        round_trips = counter.writes  # before INFO below adds one
        return {"wall_s": wall, "influx_s": session.seconds, "influx_requests": session.requests,
                "influx_statements": session.statements, "redis_commands": counter.commands(),
                "redis_round_trips": round_trips, "rows": rows, "destinations": dests, "tools": tools,
                "changed": changed}

    def peak_rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    runs: dict[str, list[dict[str, Any]]] = {"cold": [cycle("cold")]}
    rss = {"cold": peak_rss()}
    runs["steady"] = [cycle("steady") for _ in range(steady)]
    rss["steady"] = peak_rss()
    runs["refresh_unchanged"] = [cycle("refresh_unchanged") for _ in range(steady)]
    rss["refresh_unchanged"] = peak_rss()
    # Each round writes the same day again with other figures (the same
    # time overwrites them), so every round's refresh finds all of it changed.
    day_at = int(time.time())
    for kind in ("refresh_day", "after_refresh", "refresh_reread"):
        runs[kind] = []
    for i in range(refresh):
        _write_day(cfg, ds, day_at, seed=100 + i)
        for kind in ("refresh_day", "after_refresh", "refresh_reread"):
            runs[kind].append(cycle(kind))
    rss["refresh_day"] = rss["after_refresh"] = rss["refresh_reread"] = peak_rss()
    runs["refresh_full"] = [cycle("refresh_full") for _ in range(refresh)]
    rss["refresh_full"] = peak_rss()
    runs["uncached"] = [cycle("uncached") for _ in range(refresh)]
    rss["uncached"] = peak_rss()
    # Python allocations at their peak, per kind (tracemalloc slows things
    # down, so these runs are not timed; the day's kinds would need another
    # day written).
    alloc: dict[str, float | None] = {"refresh_day": None, "after_refresh": None, "refresh_reread": None}
    for kind in ("steady", "refresh_unchanged", "refresh_full", "uncached"):
        tracemalloc.start()
        tracemalloc.reset_peak()
        cycle(kind)
        alloc[kind] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    alloc["cold"] = alloc["uncached"]
    out = {}
    for kind, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        peak = alloc[kind]
        out[kind] = {
            "cycles": len(rs),
            "wall_s_median": round(statistics.median(walls), 3),
            "wall_s_min": round(min(walls), 3),
            "wall_s_max": round(max(walls), 3),
            "influx_s_median": round(statistics.median(r["influx_s"] for r in rs), 3),
            "influx_requests": rs[-1]["influx_requests"],
            "influx_statements": rs[-1]["influx_statements"],
            "redis_commands": rs[-1]["redis_commands"],
            "redis_round_trips": rs[-1]["redis_round_trips"],
            "rows_read": rs[-1]["rows"],
            "destinations": rs[-1]["destinations"],
            "tools": rs[-1]["tools"],
            "changed": [r["changed"] for r in rs] if kind in REFRESHES else None,
            # Peak RSS of the collector process so far (monotonic: a steady
            # cycle's own peak is at most this).
            "peak_rss_mb": round(rss[kind], 1),
            "peak_alloc_mb": None if peak is None else round(peak, 1),
        }
    return out


def run(params: dict[str, Any]) -> dict[str, Any]:
    sizes = []
    with tempfile.TemporaryDirectory(prefix="tpv-bench-collector-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        redis, influx = RedisServer(tmp / "redis").start(), InfluxServer(tmp / "influx").start()
        try:
            for n in params["sizes"]:
                ds = make_dataset(n, params["tools"])
                db = f"bench_{n}"
                loaded = common.load_dataset(influx, db, ds, int(time.time()))
                redis_lib.Redis.from_url(redis.url).flushall()
                cfg = common.bench_config(redis, influx, db)
                proc = subprocess.run(
                    [common.python(), "-m", "bench.collector", "--measure", json.dumps(cfg),
                     "--steady", str(params["steady"]), "--refresh", str(params["refresh"]),
                     "--dataset", f"{n}x{params['tools']}"],
                    cwd=common.ROOT, env=common._child_env(), capture_output=True, text=True, timeout=1200,
                    check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"measuring {n} destinations failed:\n{proc.stderr[-3000:]}")
                measured = json.loads(proc.stdout.strip().splitlines()[-1])
                row = {"destinations": n, "tools": params["tools"], "series_run_time": loaded["series_run_time"],
                       "points": loaded["points"], "load_s": loaded["load_s"], **measured}
                sizes.append(row)
                print(f"  {n:4d} x {params['tools']}: load {loaded['load_s']:.1f} s ({loaded['series_run_time']} "
                      f"run-time series); " + ", ".join(f"{k} {measured[k]['wall_s_median']:.3f} s" for k in KINDS),
                      flush=True)
        finally:
            influx.stop()
            redis.stop()
    return {
        "params": params,
        "note": ("Density: each tool ran on 2-18 % of the destinations (uniform, mean 10 %), three daily "
                 "destination-queue-run-time runs in the 3-day lookback; 15 one-minute queue/cluster batches. "
                 "A day's refresh: a new point for every pair, written just before it (not timed). "
                 "InfluxDB 1.6, inmem index, data freshly written (not compacted). "
                 "Load time is not part of any cycle."),
        "sizes": sizes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a few destinations and tools: checks it runs")
    ap.add_argument("--out", type=pathlib.Path, default=common.RESULTS, help="where latest.json/.md go")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--steady", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--refresh", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="5x30", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        n, tools = (int(x) for x in args.dataset.split("x"))
        print(json.dumps(_measure(json.loads(args.measure), args.steady, args.refresh, make_dataset(n, tools))))
        return
    result = run(TINY if args.tiny else FULL) | {"tiny": args.tiny}
    path = common.write_results("collector", result, args.out)
    (args.out / "latest.md").write_text(render_markdown(json.loads(path.read_text())))
    print()
    print(collector_table(result))
    print(f"\nwritten: {path} and {args.out / 'latest.md'}")


if __name__ == "__main__":
    main()
