"""Rank latency and throughput, side by side, in one run on one machine:

* ``ours``: ``tpv-broker serve`` (gunicorn, as deployed) on a real
  redis-server holding a snapshot that the real collector built from
  synthetic metrics in a real influxd;
* ``ours_noinflight``: the same with ``inflight.enabled: false`` (no
  in-flight charge written per request): what that feature costs;
* ``prototype``: the prototype's design (7 InfluxQL ``last()`` queries per
  candidate per request) against the same influxd (``bench/apps.py``);
* ``floor``: the least a rank service can do, what ours is held against:
  bare Flask, one Redis MGET of one number per candidate (precomputed here
  from the same snapshot), a sort (``bench/apps.py``);
* ``floor_charged``: the floor that also writes once (an awaited
  ``HINCRBY``) after its answer, as ours writes its in-flight charge: a
  reference, not a target;
* ``limit``: a second reference: bare Flask, one Redis HMGET of the
  candidates' snapshot entries, each decoded from JSON, a sort
  (``bench/apps.py``).

All of them under the same gunicorn settings, sent the same request bytes by
a load generator in other processes (``bench/loadgen.py``), at each
candidate count: sequentially (one client, back to back), paced (one client
pausing between requests, as TPV asks once per job: ours against the floor
only), then with several concurrent clients. Each measurement is split into
rounds that alternate between the services, so that a burst of load from
something else on a shared machine hits them alike. Last, rounds that
alternate the fewest and the most candidates give what each extra candidate
costs ours, the floor and the limit; and a busy site: ours serving the same
snapshot with 0, 3,000 and 20,000 live in-flight charges (``_busy``).

    python -m bench.rank            # the full run (about ten minutes)
    python -m bench.rank --tiny     # seconds: checks that everything runs
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
from typing import Any

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.charges import Charge
from tpv_broker.devtools.servers import InfluxServer, RedisServer, influxql_inserts_to_lines
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, store_from_config

from . import common, loadgen
from .apps import floor_key, floor_order, write_floor_numbers
from .data import make_dataset, rank_bodies
from .report import FLOOR, FLOOR_CHARGED, rank_table, render_markdown

SERVICES = ("ours", "ours_noinflight", FLOOR, FLOOR_CHARGED, "limit", "prototype")
# The services measured paced: ours against the floor (the limit adds
# nothing there that the back-to-back runs do not show, and leaving it out
# keeps the run as long as it was before the floor came).
PACED = ("ours", "ours_noinflight", FLOOR)
# The services set against each other at the fewest and the most candidates.
SCALED = ("ours", FLOOR, "limit")

# Live in-flight charges preloaded for the busy-site mode (distinct job ids,
# all still counted: made within inflight.max_age_s, collector stopped).
BUSY_LEVELS = (0, 3000, 20000)

FULL = {
    "tenants": {"count": 10, "candidates": 50, "rounds": 7, "sequential": (500, 1.5)},
    "busy": {"levels": BUSY_LEVELS, "candidates": 50, "rounds": 7, "sequential": (500, 1.5),
             "concurrent": (100000, 1.5)},
    "destinations": 250, "tools": 2000, "candidates": [5, 50, 200], "clients": 4, "bodies": 32, "rounds": 7,
    # (max requests, max seconds) per round; warm-up requests per client first
    "sequential": {"ours": (500, 1.5), "ours_noinflight": (500, 1.5), FLOOR: (500, 1.5),
                   FLOOR_CHARGED: (500, 1.5), "limit": (500, 1.5), "prototype": (40, 2.5)},
    "paced": {"ours": (300, 1.5), "ours_noinflight": (300, 1.5), FLOOR: (300, 1.5)},
    "pace_s": 0.002,
    "concurrent": {"ours": (100000, 1.5), "ours_noinflight": (100000, 1.5), FLOOR: (100000, 1.5),
                   FLOOR_CHARGED: (100000, 1.5), "limit": (100000, 1.5), "prototype": (400, 2.5)},
    "warmup": 20,
    "calibration_requests": 30,
}
TINY = {
    "tenants": {"count": 3, "candidates": 5, "rounds": 1, "sequential": (5, 5.0)},
    "busy": {"levels": (0, 30), "candidates": 5, "rounds": 1, "sequential": (5, 5.0), "concurrent": (5, 5.0)},
    "destinations": 12, "tools": 40, "candidates": [2, 5], "clients": 2, "bodies": 4, "rounds": 1,
    "sequential": {s: (5, 5.0) for s in SERVICES},
    "paced": {s: (5, 5.0) for s in PACED},
    "pace_s": 0.002,
    "concurrent": {s: (5, 5.0) for s in SERVICES},
    "warmup": 1,
    "calibration_requests": 3,
}


def _check(name: str, port: int, raw: bytes, body: dict[str, Any], floor_numbers: dict[str, float]) -> None:
    """Each service answers 200; ours ranks every candidate, not degraded;
    the floor orders them by the numbers precomputed for it (so it did read
    them all)."""
    c = loadgen.Client("127.0.0.1", port)
    status, raw_answer = c.request(raw)
    c.close()
    if status != 200:
        raise RuntimeError(f"{name} answered HTTP {status}: {raw_answer[:300]!r}")
    answer = json.loads(raw_answer)
    ids = [d["id"] for d in body["destinations"]]
    if name.startswith("ours") and (answer.get("degraded") or len(answer["destinations"]) != len(ids)):
        raise RuntimeError(f"ours answered degraded or incomplete: {answer}")
    if name in (FLOOR, FLOOR_CHARGED):
        expected = floor_order(ids, [floor_numbers[i] for i in ids])
        if answer["destinations"] != expected:
            raise RuntimeError(f"the floor answered {answer['destinations']}, not {expected}")


def _check_floor_charged(store: SnapshotStore, key_prefix: str) -> None:
    """The charged floor did write its placements (one per answer)."""
    counts = store.client.hvals(floor_key(key_prefix, "placements"))
    if not sum(int(c) for c in counts):
        raise RuntimeError("floor_charged answered but recorded no placement")


# The original prototype's p50, as measured on this workplace's machines
# against InfluxDB 1.6 with its own test data (bench/README.md, "The prototype baseline").
REFERENCE_P50_MS = {"5": 24.0, "13": 85.0, "50": 235.0}
PROTOTYPE_DATA = common.ROOT / "tests" / "data" / "prototype"


def _calibrate(influx: InfluxServer, workers: int, tmp: pathlib.Path, requests: int) -> dict[str, Any]:
    """The baseline on the prototype's own data (13 destinations), to set
    beside the original's measured figures: is the reimplementation as fast
    as the original was?"""
    db = "prototype_data"
    influx.create_database(db)
    text = (PROTOTYPE_DATA / "test_data.influxql").read_text()
    influx.write_lines(db, influxql_inserts_to_lines(text, start_ts=int(time.time()) - 200))
    example = json.loads((PROTOTYPE_DATA / "example_request1.json").read_text())
    ids = sorted({ln.split("destination_id=")[1].split(",")[0].split(" ")[0].strip('"')
                  for ln in text.splitlines() if "destination_id=" in ln})
    stores = example["objectstores"]
    bodies = {}
    for n in (5, 13):
        bodies[n] = [{"job": {"tool_id": "trinity", "cores": 4, "mem": 16},
                      "destinations": [{"id": d, "context": {"latitude": 50.0, "longitude": 8.0}} for d in ids[:n]],
                      "datasets": [{"object_store_id": k, "size": v["size"]} for k, v in
                                   ((d["object_store_id"], d) for d in example["datasets"].values())],
                      "object_stores": stores}]
    port = common.port()
    argv = [common.python(), "-m", "bench.apps", "prototype", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--influx-url", influx.url, "--database", db]
    raws = {n: loadgen.build_requests("127.0.0.1", "/api/rank", b) for n, b in bodies.items()}
    srv = common.ServerProcess("prototype (its own data)", argv, port, raws[5][0], tmp / "calibration.log").start()
    try:
        out = {}
        for n, raw in raws.items():
            part = loadgen.run(loadgen.RunSpec("127.0.0.1", port, raw, requests, 10.0, warmup=2), 1)
            if part["errors"]:
                raise RuntimeError(f"the prototype on its own data answered errors: {part['first_error']}")
            r = loadgen.summarize([part])
            out[str(n)] = r["p50_ms"]
        return {"p50_ms": out, "reference_p50_ms": REFERENCE_P50_MS, "destinations": len(ids)}
    finally:
        srv.stop()


def _write_floor_numbers(config: BrokerConfig, store: SnapshotStore, destinations: int) -> dict[str, float]:
    """The floor's numbers, from the snapshot just published (the one every
    other service reads)."""
    snapshot = store.read_all()
    if snapshot is None:
        raise RuntimeError("no snapshot in Redis to precompute the floor's numbers from")
    numbers = write_floor_numbers(store.client, config.redis.key_prefix, snapshot)
    if len(numbers) != destinations:
        raise RuntimeError(f"the floor has numbers for {len(numbers)} destinations, not {destinations}")
    return numbers


def run(params: dict[str, Any], workers: int, out_dir: pathlib.Path) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tpv-bench-rank-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        redis, influx = RedisServer(tmp / "redis").start(), InfluxServer(tmp / "influx").start()
        servers: list[common.ServerProcess] = []
        try:
            ds = make_dataset(params["destinations"], params["tools"])
            loaded = common.load_dataset(influx, "galaxy", ds, int(time.time()))
            cfg_dict = common.bench_config(redis, influx, "galaxy")
            cfg_path = common.write_config(tmp / "config.yaml", cfg_dict)
            noinflight_path = common.write_config(tmp / "config-noinflight.yaml",
                                                  cfg_dict | {"inflight": {"enabled": False}})
            config = BrokerConfig.model_validate(cfg_dict)
            store = store_from_config(config.redis.url, config.redis.key_prefix, 30)
            report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
            if not report.published or report.errors:
                raise RuntimeError(f"collector: {report.summary()}")
            floor_numbers = _write_floor_numbers(config, store, params["destinations"])

            ports = {s: common.port() for s in SERVICES}
            first = loadgen.build_requests("127.0.0.1", "/api/rank", rank_bodies(ds, 2, 1))[0]
            py = common.python()
            argv = {
                "ours": _ours_argv(cfg_path, ports["ours"], workers),
                "ours_noinflight": _ours_argv(noinflight_path, ports["ours_noinflight"], workers),
                "limit": [py, "-m", "bench.apps", "limit", "--bind", f"127.0.0.1:{ports['limit']}",
                          "--workers", str(workers), "--redis-url", redis.url, "--key-prefix",
                          config.redis.key_prefix],
                "prototype": [py, "-m", "bench.apps", "prototype", "--bind", f"127.0.0.1:{ports['prototype']}",
                              "--workers", str(workers), "--influx-url", influx.url, "--database", "galaxy"],
                **{f: [py, "-m", "bench.apps", f, "--bind", f"127.0.0.1:{ports[f]}", "--workers", str(workers),
                       "--redis-url", redis.url, "--key-prefix", config.redis.key_prefix]
                   for f in (FLOOR, FLOOR_CHARGED)},
            }
            for s in params.get("services", SERVICES):
                servers.append(common.ServerProcess(s, argv[s], ports[s], first, tmp / f"{s}.log").start())

            runs = []
            for n in params["candidates"]:
                bodies = rank_bodies(ds, n, params["bodies"])
                raws = loadgen.build_requests("127.0.0.1", "/api/rank", bodies)
                for mode, clients in (("sequential", 1), ("paced", 1), ("concurrent", params["clients"])):
                    services = [s for s in params.get("services", SERVICES) if s in params[mode]]
                    for s in services:
                        # Every body, not one: a degraded answer (200) would pass for a fast one.
                        for raw, body in zip(raws, bodies, strict=True):
                            _check(s, ports[s], raw, body, floor_numbers)
                    rounds = _alternate({s: ports[s] for s in services}, {s: raws for s in services},
                                        params["rounds"], {s: params[mode][s] for s in services}, clients,
                                        {s: params["warmup"] if s != "prototype" else 1 for s in services},
                                        params["pace_s"] if mode == "paced" else 0.0)
                    for s in services:
                        r = _summary(rounds[s], f"{s} at {n} candidates", service=s, candidates=n, mode=mode)
                        runs.append(r)
                        print(f"  {s:15s} n={n:<4d} {mode:10s} p50 {r['p50_ms']:9.3f} ms  p90 {r['p90_ms']:9.3f}"
                              f"  p99 {r['p99_ms']:9.3f}  {r['throughput_rps']:8.1f} req/s  ({r['requests']} req)",
                              flush=True)
            if FLOOR_CHARGED in params.get("services", SERVICES):
                _check_floor_charged(store, config.redis.key_prefix)
            scaled = [s for s in SCALED if s in params.get("services", SERVICES)]
            scaling = _scaling(params, ports, ds, scaled)
            busy = _busy(params, cfg_dict, config, store, ds, ports[FLOOR], tmp, workers, servers) if (
                FLOOR in params.get("services", SERVICES)) else {}
            tenants = _tenants(params, cfg_dict, store, ds, tmp, workers, servers)
            calibration = _calibrate(influx, workers, tmp, params["calibration_requests"])
            print(f"  calibration: prototype on its own data, p50 {calibration['p50_ms']} ms "
                  f"(original, reference README: {REFERENCE_P50_MS})", flush=True)
            result = {
                "calibration": calibration,
                "params": {k: v for k, v in params.items() if k not in ("sequential", "paced", "concurrent")}
                | {"workers": workers, "limits": {m: params[m] for m in ("sequential", "paced", "concurrent")}},
                "dataset": loaded | {"destinations": params["destinations"], "tools": params["tools"]},
                "snapshot": report.summary(),
                "gunicorn": _gunicorn_settings(workers),
                "runs": runs,
                "scaling": scaling,
                "busy": busy,
                "tenants": tenants,
                "run_s": round(time.monotonic() - started),
            }
            return result
        finally:
            for srv in servers:
                srv.stop()
            influx.stop()
            redis.stop()


def _scaling(params: dict[str, Any], ports: dict[str, int], ds: Any, services: list[str]) -> dict[str, Any]:
    """p50 at the most candidates against the fewest, per service, in rounds
    that alternate the two counts (one client, back to back): the main runs
    measure each count minutes apart, and a machine whose speed drifts in
    between would move that ratio more than the code does."""
    lo, hi = min(params["candidates"]), max(params["candidates"])
    if lo == hi or not services:
        return {}
    raws = {n: loadgen.build_requests("127.0.0.1", "/api/rank", rank_bodies(ds, n, params["bodies"])) for n in (lo, hi)}
    out: dict[str, Any] = {}
    for s in services:
        out[s] = {"candidates": [lo, hi], "round_p50_ms": {str(lo): [], str(hi): []}}
    for _ in range(params["rounds"]):
        for s in services:
            max_req, max_s = params["sequential"][s]
            for n in (lo, hi):
                spec = loadgen.RunSpec("127.0.0.1", ports[s], raws[n], max_req, max_s, warmup=params["warmup"])
                r = loadgen.summarize([loadgen.run(spec, 1)])
                if r["errors"]:
                    raise RuntimeError(f"{s} at {n} candidates: {r['errors']} errors, e.g. {r['first_error']}")
                out[s]["round_p50_ms"][str(n)].append(r["p50_ms"])
    for s in services:
        r = out[s]["round_p50_ms"]
        print(f"  {s:15s} p50 at {hi} / at {lo} candidates, per round: "
              + " ".join(f"{a / b:.2f}" for a, b in zip(r[str(hi)], r[str(lo)], strict=True)), flush=True)
    return out


def _ours_argv(config_path: pathlib.Path, port: int, workers: int) -> list[str]:
    """``tpv-broker serve``, as deployed, with this config."""
    return [common.python(), "-m", "tpv_broker", "--config", str(config_path), "--log-level", "WARNING", "serve",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]


def _start_ours(name: str, config_path: pathlib.Path, workers: int, probe: bytes, tmp: pathlib.Path,
                servers: list[common.ServerProcess]) -> int:
    """Start ours with this config (stopped with ``servers``); its port."""
    port = common.port()
    servers.append(common.ServerProcess(name, _ours_argv(config_path, port, workers), port, probe,
                                        tmp / f"{name}.log").start())
    return port


def _alternate(ports: dict[str, int], raws: dict[str, list[bytes]], rounds: int,
               limits: dict[str, tuple[int, float]], clients: int, warmup: dict[str, int],
               pace_s: float = 0.0) -> dict[str, list[dict[str, Any]]]:
    """Each service's runs, in ``rounds`` that take the services in turn,
    so that a burst of load from something else hits them alike."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in ports}
    for _ in range(rounds):
        for s, port in ports.items():
            max_req, max_s = limits[s]
            spec = loadgen.RunSpec("127.0.0.1", port, raws[s], max_req, max_s, warmup=warmup[s], pace_s=pace_s)
            out[s].append(loadgen.run(spec, clients))
    return out


def _summary(rounds: list[dict[str, Any]], what: str, **labels: Any) -> dict[str, Any]:
    """The rounds together, with each round's own p50 and throughput (for
    ratios of rounds run side by side: report.rank_ratios); fails on errors."""
    r = loadgen.summarize(rounds)
    per_round = [loadgen.summarize([one]) for one in rounds]
    r.update(labels, round_p50_ms=[x["p50_ms"] for x in per_round], round_rps=[x["throughput_rps"] for x in per_round])
    if r["errors"]:
        raise RuntimeError(f"{what}: {r['errors']} errors, e.g. {r['first_error']}")
    return r


def _busy(params: dict[str, Any], cfg_dict: dict[str, Any], config: BrokerConfig, store: SnapshotStore, ds: Any,
          floor_port: int, tmp: pathlib.Path, workers: int, servers: list[common.ServerProcess]) -> dict[str, Any]:
    """A busy site: ours serving the same snapshot with 0, 3,000 and
    20,000 live in-flight charges (one key prefix and one server each), and
    the floor, in rounds that alternate between them; one client back to
    back (p50), then several at once (throughput)."""
    b = params["busy"]
    snapshot = store.read_all()
    assert snapshot is not None
    ports: dict[str, int] = {}
    for level in b["levels"]:
        name = f"ours_{level}"
        prefix = f"busy{level}"
        level_store = SnapshotStore(store.client, KeySchema(prefix))
        level_store.publish(snapshot)
        _preload_charges(level_store, config, [site.id for site in ds.sites], level)
        path = common.write_config(tmp / f"config-{name}.yaml",
                                   cfg_dict | {"redis": cfg_dict["redis"] | {"key_prefix": prefix}})
        first = loadgen.build_requests("127.0.0.1", "/api/rank", rank_bodies(ds, 2, 1))[0]
        ports[name] = _start_ours(name, path, workers, first, tmp, servers)
    ports[FLOOR] = floor_port
    raws = loadgen.build_requests("127.0.0.1", "/api/rank", rank_bodies(ds, b["candidates"], params["bodies"]))
    out: dict[str, Any] = {"candidates": b["candidates"], "levels": list(b["levels"]), "runs": []}
    for mode, clients in (("sequential", 1), ("concurrent", params["clients"])):
        rounds = _alternate(ports, {s: raws for s in ports}, b["rounds"], {s: b[mode] for s in ports}, clients,
                            {s: params["warmup"] for s in ports})
        for s in ports:
            r = _summary(rounds[s], f"busy {s}", service=s, mode=mode)
            out["runs"].append(r)
            print(f"  busy {s:12s} {mode:10s} p50 {r['p50_ms']:9.3f} ms  {r['throughput_rps']:8.1f} req/s", flush=True)
    # Still counting, not only still held: ZCOUNT over inflight.max_age_s.
    out["live_after"] = {}
    for level in b["levels"]:
        inflight = SnapshotStore(store.client, KeySchema(f"busy{level}")).inflight(config.inflight)
        out["live_after"][f"ours_{level}"] = inflight.live_count(time.time()) if inflight is not None else 0
    return out


def _tenants(params: dict[str, Any], cfg_dict: dict[str, Any], store: SnapshotStore, ds: Any,
             tmp: pathlib.Path, workers: int, servers: list[common.ServerProcess]) -> dict[str, Any]:
    """A broker several Galaxies share against one that serves one, on the
    same snapshot, in rounds that alternate between them (one client back
    to back). ``shared``: ``count`` tenants, each with its token, a rate
    limit it stays under (one script call per request), its own name for
    every destination (aliases) and one private endpoint; the requests are
    the middle tenant's, in its names. ``single``: the same token as the
    broker's own, nothing else."""
    t = params["tenants"]
    snapshot = store.read_all()
    assert snapshot is not None
    sites = [site.id for site in ds.sites]
    names = [f"galaxy{k}" for k in range(t["count"])]
    asker = names[len(names) // 2]
    token = "bench-token-0123456789abcdef-"
    tenants = {name: {"auth_tokens": [token + name], "rate_per_s": 100_000, "burst": 100_000,
                      "aliases": {f"{name}.{s}": s for s in sites}, "private": [sites[k]]}
               for k, name in enumerate(names)}
    configs = {
        "single": cfg_dict | {"redis": cfg_dict["redis"] | {"key_prefix": "tenants_single"},
                              "api": cfg_dict["api"] | {"auth_tokens": [token + asker]}},
        "shared": cfg_dict | {"redis": cfg_dict["redis"] | {"key_prefix": "tenants_shared"},
                              "api": cfg_dict["api"] | {"tenants": tenants}},
    }
    own_names = {s: f"{asker}.{s}" for s in sites}
    hidden = {sites[k] for k, name in enumerate(names) if name != asker}
    plain = [b for b in rank_bodies(ds, t["candidates"] + len(hidden), params["bodies"])]
    bodies: dict[str, list[dict[str, Any]]] = {"single": [], "shared": []}
    for body in plain:
        # The same candidates for both (none private to another tenant), in each broker's names.
        dests = [d for d in body["destinations"] if d["id"] not in hidden][:t["candidates"]]
        bodies["single"].append(body | {"destinations": dests})
        bodies["shared"].append(body | {"destinations": [d | {"id": own_names[d["id"]]} for d in dests]})
    ports: dict[str, int] = {}
    raws: dict[str, list[bytes]] = {}
    for name, cfg in configs.items():
        SnapshotStore(store.client, KeySchema(cfg["redis"]["key_prefix"])).publish(snapshot)
        path = common.write_config(tmp / f"config-tenants-{name}.yaml", cfg)
        raws[name] = loadgen.build_requests("127.0.0.1", "/api/rank", bodies[name], token + asker)
        ports[name] = _start_ours(f"tenants_{name}", path, workers, raws[name][0], tmp, servers)
    rounds = _alternate(ports, raws, t["rounds"], {name: t["sequential"] for name in ports}, 1,
                        {name: params["warmup"] for name in ports})
    out: dict[str, Any] = {"count": t["count"], "candidates": t["candidates"], "runs": []}
    for name in ports:
        r = _summary(rounds[name], f"tenants {name}", service=f"tenants_{name}", mode="sequential")
        out["runs"].append(r)
        print(f"  tenants {name:8s} p50 {r['p50_ms']:9.3f} ms", flush=True)
    return out


def _preload_charges(store: SnapshotStore, config: BrokerConfig, destinations: list[str], n: int) -> None:
    """``n`` live charges of distinct jobs, made over the last five minutes
    (so all of them still count), through the charge script itself."""
    import random

    inflight = store.inflight(config.inflight)
    assert inflight is not None
    rng, now = random.Random(5), time.time()
    for k in range(n):
        inflight.charge(Charge(rng.choice(destinations), rng.choice((1, 2, 4, 8)), 4, now - 300 * k / max(n, 1),
                               f"busy{k}", rng.choice((None, 60.0, 600.0))))


def _gunicorn_settings(workers: int) -> dict[str, Any]:
    from tpv_broker.api.server import gunicorn_options

    opts = gunicorn_options("127.0.0.1:0", workers)
    return {k: opts[k] for k in ("workers", "worker_class") if k in opts} | (
        {"threads": opts["threads"]} if "threads" in opts else {}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a few requests on a dozen destinations: checks it runs")
    ap.add_argument("--workers", type=int, default=BrokerConfig().api.workers,
                    help="gunicorn workers for every service (default: api.workers)")
    ap.add_argument("--candidates", type=int, nargs="+", help="candidate counts (default: 5 50 200)")
    ap.add_argument("--services", nargs="+", choices=SERVICES, help="a subset, for experiments")
    ap.add_argument("--out", type=pathlib.Path, default=common.RESULTS, help="where latest.json/.md go")
    args = ap.parse_args()
    params = dict(TINY if args.tiny else FULL)
    if args.candidates:
        params["candidates"] = args.candidates
    if args.services:
        params["services"] = args.services
    result = run(params, args.workers, args.out)
    path = common.write_results("rank", result | {"tiny": args.tiny}, args.out)
    md = render_markdown(json.loads(path.read_text()))
    (args.out / "latest.md").write_text(md)
    print()
    print(rank_table(result))
    print(f"\nwritten: {path} and {args.out / 'latest.md'}; the run took {result['run_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
