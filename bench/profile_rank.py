"""Profile the rank endpoint in-process (the app as ``create_app`` builds
it, through Flask's test client, on a real redis-server holding a snapshot
the real collector built): where does a request's time go?

    python -m bench.profile_rank --candidates 200 --requests 500

Uses pyinstrument when installed (``pip install pyinstrument``), else
cProfile. Not a benchmark: no gunicorn, no network, profiler overhead.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
from typing import Any

from tpv_broker.api import create_app
from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.devtools.servers import InfluxServer, RedisServer
from tpv_broker.store.snapshots import store_from_config

from . import common
from .data import make_dataset, rank_bodies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--destinations", type=int, default=250)
    ap.add_argument("--tools", type=int, default=500)
    ap.add_argument("--core", action="store_true", help="time the pure rank core alone (no HTTP, no Redis)")
    ap.add_argument("--no-inflight", action="store_true", help="with inflight.enabled false")
    ap.add_argument("--charges", type=int, default=0,
                    help="in-flight charges in Redis first, as a busy Galaxy leaves them: distinct jobs, made "
                         "within the last 50 s (so the fresh figures cannot show them yet), on random destinations")
    ap.add_argument("--slot-shapes", type=int, default=0,
                    help="with --core: every destination reports this many free slot shapes (HTCondor "
                         "partitionable slots, random sizes); the synthetic metrics have none")
    args = ap.parse_args()
    if args.slot_shapes and not args.core:
        ap.error("--slot-shapes needs --core")
    with tempfile.TemporaryDirectory(prefix="tpv-bench-prof-") as tmp_s:
        tmp = pathlib.Path(tmp_s)
        redis, influx = RedisServer(tmp / "redis").start(), InfluxServer(tmp / "influx").start()
        try:
            ds = make_dataset(args.destinations, args.tools)
            common.load_dataset(influx, "galaxy", ds, int(time.time()))
            extra = {"inflight": {"enabled": False}} if args.no_inflight else {}
            config = BrokerConfig.model_validate(common.bench_config(redis, influx, "galaxy", **extra))
            store = store_from_config(config.redis.url, config.redis.key_prefix, 30)
            collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
            if args.charges:
                _charge(config, store, [s.id for s in ds.sites], args.charges)
            client = create_app(config).test_client()
            bodies = [json.dumps(b).encode() for b in rank_bodies(ds, args.candidates, 32)]
            if args.core:
                _time_core(config, store, rank_bodies(ds, args.candidates, 32), args.requests, args.slot_shapes)
                return

            def loop() -> float:
                t = time.perf_counter()
                for i in range(args.requests):
                    r = client.post("/api/rank", data=bodies[i % len(bodies)], content_type="application/json")
                    # Reading the body runs the in-flight charge too (it follows the body).
                    body = r.get_data()
                    assert r.status_code == 200, body
                return (time.perf_counter() - t) / args.requests

            print(f"unprofiled: {loop() * 1000:.3f} ms per request (test client, in-process)")
            try:
                from pyinstrument import Profiler
            except ImportError:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.runcall(loop)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
            else:
                p = Profiler(interval=0.0002)
                p.start()
                loop()
                p.stop()
                print(p.output_text(unicode=False, color=False, show_all=False))
        finally:
            influx.stop()
            redis.stop()


def _charge(config: BrokerConfig, store: Any, destinations: list[str], n: int) -> None:
    import random

    from tpv_broker.core.charges import Charge

    inflight = store.inflight(config.inflight)
    rng, now = random.Random(5), time.time()
    # Made within inflight.reflect_lag_s of the fresh figures: all of them count.
    for k in range(n):
        inflight.charge(Charge(rng.choice(destinations), 1, 4, now - 50 * k / n, f"busy{k}"))
    print(f"{store.client.zcard(store.keys.inflight)} in-flight charges in Redis")


def _with_slot_shapes(destinations: dict[str, Any], k: int) -> dict[str, Any]:
    """The view's update: every destination reporting ``k`` random free slot
    shapes, and their columns."""
    import random

    from tpv_broker.core.columns import DestinationColumns
    from tpv_broker.core.models import SlotShape

    rng = random.Random(7)
    dests = {d: f.model_copy(update={"slot_shapes": [
        SlotShape(count=rng.randint(0, 4), cpus=rng.choice([1, 4, 8, 16]), mem_gb=rng.choice([4, 16, 64, 256]))
        for _ in range(k)]}) for d, f in destinations.items()}
    return {"destinations": dests, "columns": DestinationColumns.build(dests)}


def _time_core(config: BrokerConfig, store: Any, bodies: list[dict[str, Any]], n: int, slot_shapes: int = 0) -> None:
    from tpv_broker.api.rank_service import RankService
    from tpv_broker.api.schemas import RankRequest
    from tpv_broker.core.columns import DestinationColumns
    from tpv_broker.core.ranking import rank
    from tpv_broker.core.tool_ids import stats_field, tool_id_forms

    svc = RankService(config, store, time.time)
    columns = DestinationColumns.build(store.read_for_rank(()).destinations)
    # The snapshot does not change during the loop: shapes added once.
    shaped = _with_slot_shapes(store.read_for_rank(()).destinations, slot_shapes) if slot_shapes else None
    cases = []
    for b in bodies:
        req = RankRequest.model_validate(b)
        cands = req.candidates()
        job = req.job.facts()
        fields = [stats_field(level, form) for level, form in tool_id_forms(job.tool_id)]
        view = store.read_for_rank(fields)
        if shaped is not None:
            view = view.model_copy(update=shaped)
        # As the API does: the snapshot's columns, built once, kept across requests.
        view.columns = columns if shaped is None else shaped["columns"]
        cases.append((cands, job, svc.datasets([(d.object_store_id, d.size) for d in req.datasets],
                                                req.store_locations()), view))
    now = time.time()
    t = time.perf_counter()
    for i in range(n):
        cands, job, datasets, view = cases[i % len(cases)]
        rank(cands, job, datasets, view, now, svc.model, svc.max_snapshot_age_s, svc.locations)
    per = (time.perf_counter() - t) / n
    print(f"rank core: {per * 1e6:.0f} us per request, {per * 1e6 / len(cases[0][0]):.2f} us per candidate")

if __name__ == "__main__":
    main()
