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

``multi``: the same data at the largest size read from several InfluxDBs
(config ``sources``, issue 21), each a real influxd of its own: ``network``
with the endpoints' capacity (``htcondor_cluster_usage``), and two
Galaxies, ``galaxy_a`` and ``galaxy_b``, each with its share of every
endpoint's queue (the two add up to the single source's figures) and half
of the (tool, destination) run-time series. Against one influxd holding all
of it, in rounds that alternate the two: InfluxDB requests per source per
cycle (one each), the cycle's wall time (the daemon's cycle and an
uncached one), and whether both publish the same snapshot.

The synthetic metrics (``bench/data.py``: density and time layout) are
written before anything is measured; loading time is reported apart. Each
size is measured in a fresh subprocess, so its peak RSS is its own.

    python -m bench.collector           # the full run (a few minutes)
    python -m bench.collector --tiny    # seconds: checks that everything runs
    python -m bench.collector --multi-only --out DIR   # the multi-source phase alone
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
import zlib
from typing import Any

import redis as redis_lib
import requests
from redis.connection import AbstractConnection

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.heap import HeapSettler
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.source import sources_for
from tpv_broker.collector.state import CollectorState
from tpv_broker.config.settings import SINGLE_SOURCE, BrokerConfig
from tpv_broker.devtools.servers import InfluxServer, RedisServer
from tpv_broker.store.snapshots import store_from_config

from . import common
from .data import Dataset, lines, make_dataset, run_time_lines
from .report import collector_table, multi_table, render_markdown

KINDS = ("steady", "after_refresh", "refresh_unchanged", "refresh_day", "refresh_reread", "refresh_full", "cold",
         "uncached")
REFRESHES = ("refresh_unchanged", "refresh_day", "refresh_reread", "refresh_full")
# multi: the multi-source phase, at the largest size; rounds alternate the
# single and the multi-source collector, ``cycles`` of the daemon's cycle
# each, then ``uncached_rounds`` of one uncached cycle each.
# steady: also the number of unchanged refreshes. 20 cycles, 5 minutes of a
# daemon's life: 5 could miss the garbage collector's full collections.
FULL = {"sizes": [13, 100, 500], "tools": 2000, "steady": 20, "refresh": 3,
        "multi": {"rounds": 7, "cycles": 3, "uncached_rounds": 3}}
TINY = {"sizes": [5, 12], "tools": 30, "steady": 2, "refresh": 1,
        "multi": {"rounds": 2, "cycles": 2, "uncached_rounds": 1}}
# The multi-source phase's sources and the presets each is read for.
MULTI_SOURCES = {
    "network": ["htcondor_cluster_usage"],
    "galaxy_a": ["queue_by_destination", "destination_queue_run_time"],
    "galaxy_b": ["queue_by_destination", "destination_queue_run_time"],
}


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


def _measure(cfg: dict[str, Any], steady: int, refresh: int, ds: Dataset, settle: bool = True) -> dict[str, Any]:
    """Runs in the subprocess: cold, steady and refresh runs, in the order
    a daemon meets them."""
    config = BrokerConfig.model_validate(cfg)
    session = CountingSession()
    source = InfluxQLClient(config.influxdb, session=session)
    counter = RedisCounter(config.redis.url)
    store = store_from_config(config.redis.url, config.redis.key_prefix, 60)
    # As the daemon has it: refreshes run as a job of their own, and the
    # heap is settled when the kept statistics change (timed with the
    # cycle or refresh that changed them, as the daemon's job pays for it).
    state = CollectorState.new(config, background_stats=True)
    heap = HeapSettler() if settle else None

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
            if heap is not None:
                heap.after(owner)
        else:
            report = collect_once(config, source, store, time.time, None if kind == "uncached" else state)
            if not report.published or report.errors:
                raise RuntimeError(f"{kind} cycle: {report.summary()}")
            rows, dests, tools = report.rows_read, report.destinations, report.tools
            if kind != "uncached" and heap is not None:
                heap.after(state)
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


def _split_lines(all_lines: list[str]) -> dict[str, list[str]]:
    """The single source's lines as the multi-source phase's sources hold
    them: capacity in ``network``; each endpoint's queued and running jobs
    split between the two Galaxies (a share of 0 is not written, as gxadmin
    prints nothing for it), so that their sum is the single figure; each
    (tool, destination) run-time series, all its days, in one of the two."""
    out: dict[str, list[str]] = {name: [] for name in MULTI_SOURCES}
    for line in all_lines:
        if line.startswith("htcondor_cluster_usage,"):
            out["network"].append(line)
        elif line.startswith("queue_by_destination,"):
            head, count, ts = line.split(" ")
            n = int(float(count.removeprefix("count=")))
            for name, share in (("galaxy_a", n // 2), ("galaxy_b", n - n // 2)):
                if share:
                    out[name].append(f"{head} count={share} {ts}")
        elif line.startswith("destination-queue-run-time,"):
            series = line.split(" ", 1)[0]
            out[("galaxy_a", "galaxy_b")[zlib.crc32(series.encode()) % 2]].append(line)
        else:
            raise ValueError(f"a line of no known measurement: {line[:80]}")
    return out


def _load_lines(influx: InfluxServer, db: str, data: list[str], batch: int = 10000) -> float:
    influx.create_database(db)
    t = time.perf_counter()
    for i in range(0, len(data), batch):
        influx.write_lines(db, data[i : i + batch])
    return time.perf_counter() - t


class TimedReader:
    """A source's reader, timing its reads: the request, the answer's body
    and its rows (``CountingSession.seconds`` stops at the answer's headers,
    the body being streamed)."""

    def __init__(self, reader: InfluxQLClient) -> None:
        self.reader = reader
        self.seconds = 0.0

    @property
    def where(self) -> str:
        return self.reader.where

    def read(self, presets: Any, s: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.reader.read(presets, s)
        finally:
            self.seconds += time.perf_counter() - t

    def database_problem(self) -> str | None:
        return self.reader.database_problem()


def _measure_multi(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: the first cycle of a single-source and of a
    multi-source collector, their snapshots compared, then rounds of
    daemon cycles and of uncached cycles alternating the two."""
    configs = {"single": BrokerConfig.model_validate(spec["single"]),
               "multi": BrokerConfig.model_validate(spec["multi"])}
    sessions: dict[str, dict[str, CountingSession]] = {
        which: {name: CountingSession() for name in config.metric_sources()} for which, config in configs.items()}
    timers = {which: {name: TimedReader(InfluxQLClient(settings, session=sessions[which][name]))
                      for name, settings in config.metric_sources().items()} for which, config in configs.items()}
    sources = {which: sources_for(config, timers[which]) for which, config in configs.items()}
    stores = {which: store_from_config(config.redis.url, config.redis.key_prefix, 60)
              for which, config in configs.items()}
    states = {which: CollectorState.new(config, background_stats=True) for which, config in configs.items()}
    heaps = {which: HeapSettler() for which in configs if spec.get("settle", True)}
    counter = RedisCounter(configs["single"].redis.url)

    def cycle(which: str, uncached: bool = False) -> dict[str, Any]:
        for session in sessions[which].values():
            session.requests = session.statements = 0
        for timer in timers[which].values():
            timer.seconds = 0.0
        counter.reset()
        t = time.perf_counter()
        report = collect_once(configs[which], sources[which], stores[which], time.time,
                              None if uncached else states[which])
        if not uncached and which in heaps:
            heaps[which].after(states[which])
        wall = time.perf_counter() - t
        if not report.published or report.errors:
            raise RuntimeError(f"{which} cycle: {report.summary()}")
        return {"wall_s": wall, "destinations": report.destinations, "tools": report.tools,
                "rows_read": report.rows_read, "redis_commands": counter.commands(),
                "influx_requests": {n: s.requests for n, s in sessions[which].items()},
                "influx_statements": {n: s.statements for n, s in sessions[which].items()},
                "read_s": {n: round(r.seconds, 4) for n, r in timers[which].items()}}

    # The first cycle of each: everything read (the run-time statistics
    # too, kept for the daemon's cycles after it). Not compared: the first
    # of the two also pays for first imports and connections.
    first = {which: cycle(which) for which in configs}
    for c in first.values():
        c["wall_s"] = round(c["wall_s"], 3)
    snapshots = {which: stores[which].read_all() for which in configs}
    single, multi = snapshots["single"], snapshots["multi"]
    if single is None or multi is None:
        raise RuntimeError("a first cycle published no snapshot")
    differ = sorted(set(single.destinations) ^ set(multi.destinations)) + sorted(
        d for d in set(single.destinations) & set(multi.destinations)
        if single.destinations[d].model_dump() != multi.destinations[d].model_dump())
    snapshot = {"destinations": {"single": single.meta.destinations, "multi": multi.meta.destinations},
                "tools": {"single": single.meta.tools, "multi": multi.meta.tools},
                "destinations_differing": len(differ), "differing_examples": differ[:5],
                "tool_stats_equal": single.tool_stats == multi.tool_stats,
                "source_states": {n: s.state for n, s in (multi.meta.sources or {}).items()}}

    def rounds(n: int, cycles: int, uncached: bool) -> dict[str, Any]:
        runs: dict[str, list[list[dict[str, Any]]]] = {"single": [], "multi": []}
        for r in range(n):
            # Alternate which goes first: a drift of the machine's speed
            # within a round then favours neither.
            for which in ("single", "multi") if r % 2 == 0 else ("multi", "single"):
                runs[which].append([cycle(which, uncached) for _ in range(cycles)])
        medians = {which: [statistics.median(c["wall_s"] for c in rs) for rs in per_round]
                   for which, per_round in runs.items()}
        ratios = [m / s for m, s in zip(medians["multi"], medians["single"], strict=True)]
        out: dict[str, Any] = {"rounds": n, "cycles_per_round": cycles,
                               "ratio_median": round(statistics.median(ratios), 3),
                               "ratio_rounds": [round(x, 3) for x in ratios]}
        for which, per_round in runs.items():
            every = [c for rs in per_round for c in rs]
            last = every[-1]
            out[which] = {
                "wall_s_median": round(statistics.median(c["wall_s"] for c in every), 4),
                "round_medians_s": [round(x, 4) for x in medians[which]],
                # Every count seen, over all its cycles: [1] is one request each time.
                "influx_requests_seen": {n: sorted({c["influx_requests"][n] for c in every})
                                         for n in last["influx_requests"]},
                "influx_statements": last["influx_statements"],
                # Each source's read (request, body, rows), concurrent with the others'.
                "read_s_median": {n: round(statistics.median(c["read_s"][n] for c in every), 4)
                                  for n in last["read_s"]},
                "redis_commands": last["redis_commands"], "rows_read": last["rows_read"],
                "destinations": sorted({c["destinations"] for c in every}),
                "tools": sorted({c["tools"] for c in every}),
            }
        return out

    steady = rounds(spec["rounds"], spec["cycles"], uncached=False)
    uncached = rounds(spec["uncached_rounds"], 1, uncached=True)
    return {"first": first, "snapshot": snapshot, "steady": steady, "uncached": uncached}


def run_multi(params: dict[str, Any], tmp: pathlib.Path, redis: RedisServer) -> dict[str, Any]:
    """The multi-source phase at the largest size: four fresh influxds (one
    with everything, one per source), the measurement in a subprocess."""
    n, tools, multi = max(params["sizes"]), params["tools"], params["multi"]
    ds = make_dataset(n, tools)
    all_lines = list(lines(ds, int(time.time())))
    parts = {"single": all_lines, **_split_lines(all_lines)}
    servers: dict[str, InfluxServer] = {}
    try:
        load_s = {}
        for name, data in parts.items():
            servers[name] = InfluxServer(tmp / f"influx-{name}").start()
            load_s[name] = round(_load_lines(servers[name], "bench_multi", data), 2)
        redis_lib.Redis.from_url(redis.url).flushall()
        # Each publishes under its own keys, so its snapshot stays the live one
        # between its cycles (and its tool statistics hash is kept).
        single = common.bench_config(redis, servers["single"], "bench_multi")
        single["redis"]["key_prefix"] = "bench_single"
        several = common.bench_config(redis, servers["single"], "bench_multi")
        several["redis"]["key_prefix"] = "bench_multi"
        del several["influxdb"]
        several["sources"] = {name: {"url": servers[name].url, "database": "bench_multi", "timeout_s": 120,
                                     "presets": presets} for name, presets in MULTI_SOURCES.items()}
        spec = {"single": single, "multi": several, "settle": params.get("settle", True), **multi}
        proc = subprocess.run(
            [common.python(), "-m", "bench.collector", "--measure-multi", json.dumps(spec)],
            cwd=common.ROOT, env=common._child_env(), capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"measuring several sources failed:\n{proc.stderr[-3000:]}")
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for server in servers.values():
            server.stop()
    result = {"destinations": n, "tools": tools, "series_run_time": ds.series,
              "sources": {name: {"presets": presets, "points": len(parts[name])}
                          for name, presets in MULTI_SOURCES.items()},
              "points_single": len(all_lines), "load_s": load_s, **measured}
    st, un = result["steady"], result["uncached"]
    print(f"  several sources, {n} x {tools}: cycle {st['multi']['wall_s_median']:.3f} s against "
          f"{st['single']['wall_s_median']:.3f} s ({st['ratio_median']:.2f}x); uncached "
          f"{un['multi']['wall_s_median']:.3f} s against {un['single']['wall_s_median']:.3f} s "
          f"({un['ratio_median']:.2f}x); requests per source {st['multi']['influx_requests_seen']}", flush=True)
    return result


def run(params: dict[str, Any], multi_only: bool = False) -> dict[str, Any]:
    sizes = []
    with tempfile.TemporaryDirectory(prefix="tpv-bench-collector-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        redis, influx = RedisServer(tmp / "redis").start(), InfluxServer(tmp / "influx").start()
        try:
            for n in [] if multi_only else params["sizes"]:
                ds = make_dataset(n, params["tools"])
                db = f"bench_{n}"
                loaded = common.load_dataset(influx, db, ds, int(time.time()))
                redis_lib.Redis.from_url(redis.url).flushall()
                cfg = common.bench_config(redis, influx, db)
                proc = subprocess.run(
                    [common.python(), "-m", "bench.collector", "--measure", json.dumps(cfg),
                     "--steady", str(params["steady"]), "--refresh", str(params["refresh"]),
                     *([] if params.get("settle", True) else ["--no-settle"]),
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
            multi = run_multi(params, tmp, redis)
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
        "multi": multi,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a few destinations and tools: checks it runs")
    ap.add_argument("--out", type=pathlib.Path, default=common.RESULTS, help="where latest.json/.md go")
    ap.add_argument("--multi-only", action="store_true",
                    help="only the multi-source phase (needs --out: it would replace results/latest.json's "
                         "collector part)")
    ap.add_argument("--no-settle", action="store_true",
                    help="the daemon without settling its heap (collector/heap.py): what that buys")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--measure-multi", help=argparse.SUPPRESS)
    ap.add_argument("--steady", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--refresh", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="5x30", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_multi:
        print(json.dumps(_measure_multi(json.loads(args.measure_multi))))
        return
    if args.multi_only and args.out.resolve() == common.RESULTS.resolve():
        ap.error("--multi-only writes a collector part without the sizes: give --out DIR")
    if args.measure:
        n, tools = (int(x) for x in args.dataset.split("x"))
        print(json.dumps(_measure(json.loads(args.measure), args.steady, args.refresh, make_dataset(n, tools),
                                  settle=not args.no_settle)))
        return
    if args.no_settle and args.out.resolve() == common.RESULTS.resolve():
        ap.error("--no-settle measures a daemon that is not ours: give --out DIR")
    params = {**(TINY if args.tiny else FULL), "settle": not args.no_settle}
    result = run(params, args.multi_only) | {"tiny": args.tiny}
    path = common.write_results("collector", result, args.out)
    (args.out / "latest.md").write_text(render_markdown(json.loads(path.read_text())))
    print()
    if result["sizes"]:
        print(collector_table(result))
        print()
    print(multi_table(result["multi"]))
    print(f"\nwritten: {path} and {args.out / 'latest.md'}")


if __name__ == "__main__":
    main()
