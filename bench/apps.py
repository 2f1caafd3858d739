"""The comparison services, served under exactly the gunicorn settings of
``tpv-broker serve`` (``tpv_broker.api.server.serve_app``: same worker
count, same worker class). All take the same ``POST /api/rank`` body as
ours, so the load generator sends identical bytes to each.

* ``prototype``: the first prototype's design (shared/reference/README.md),
  written from its description: per request, per candidate, seven
  sequential InfluxQL ``last()`` queries against InfluxDB (free CPUs, free
  memory and status from ``htcondor_cluster_usage``; queued and running
  from ``queue_by_destination``; median queue and run time of the tool from
  ``destination-queue-run-time``), no time bound; candidates that do not fit
  are dropped (all kept, by distance only, when none fits); order by the
  great-circle distance to the nearest object store holding an input, then
  by ``1/(median_queue*queued) + 1/(median_run*running)``. Unlike the
  prototype it quotes ids in the InfluxQL strings (the same cost) and does
  not swap queued and running. It keeps one HTTP session to InfluxDB per
  worker (keep-alive: kinder to it than a client per request).
* ``limit``: the least a Redis-backed ranker can do: bare Flask, parse the
  JSON, one Redis HMGET of the candidates' snapshot entries, a sort by free
  cores, the ids back as JSON. No validation, no scoring, no explanation.
* ``validate_only``: the least a service that checks its input can do:
  bare Flask, our own request model (``RankRequest``) over the body, the
  ids back in the order they came. No Redis, no ranking. It shows what
  reading and validating more candidates costs by itself.

Run: ``python -m bench.apps {prototype,limit,validate_only} --bind H:P --workers N ...``
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import redis
import requests
from flask import Flask, jsonify, request

from tpv_broker.api.schemas import RankRequest
from tpv_broker.api.server import serve_app
from tpv_broker.store.keys import KeySchema


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


def prototype_app(influx_url: str, database: str) -> Flask:
    app = Flask("prototype_baseline")
    session = requests.Session()

    def last(field: str, measurement: str, where: str) -> Any:
        q = f'SELECT last("{field}") FROM "{measurement}" WHERE {where}'
        r = session.get(f"{influx_url}/query", params={"db": database, "q": q}, timeout=30)
        series = r.json()["results"][0].get("series")
        return series[0]["values"][0][1] if series else None

    @app.post("/api/rank")
    def rank() -> Any:
        body = request.get_json()
        job = body["job"]
        tool = _quote(job["tool_id"])
        stores = body.get("object_stores", {})
        store_ids = {d["object_store_id"] for d in body.get("datasets", [])}
        rows = []
        for cand in body["destinations"]:
            d = _quote(cand["id"])
            cpus = last("unclaimed_cpus", "htcondor_cluster_usage", f'"destination_id" = {d}')
            mem = last("unclaimed_memory", "htcondor_cluster_usage", f'"destination_id" = {d}')
            status = last("destination_status", "htcondor_cluster_usage", f'"destination_id" = {d}')
            queued = last("count", "queue_by_destination", f'"destination_id" = {d} AND "state" = \'queued\'')
            running = last("count", "queue_by_destination", f'"destination_id" = {d} AND "state" = \'running\'')
            mq = last("median_queue", "destination-queue-run-time", f'"destination_id" = {d} AND "tool_id" = {tool}')
            mr = last("median_run", "destination-queue-run-time", f'"destination_id" = {d} AND "tool_id" = {tool}')
            ctx = cand.get("context") or {}
            dist = min((_km(ctx["latitude"], ctx["longitude"], stores[s]["latitude"], stores[s]["longitude"])
                        for s in store_ids if s in stores and "latitude" in ctx), default=0.0)
            score = 0.0
            for m, n in ((mq, queued), (mr, running)):
                score += 1 / (m * n) if m and n else 0.0
            fits = (cpus or 0) >= job.get("cores", 1) and (mem or 0) >= job.get("mem", 0) * 1024
            rows.append((cand["id"], fits, dist, score, status))
        kept = [r for r in rows if r[1]] or rows
        kept.sort(key=lambda r: (r[2], -r[3]))
        return jsonify({"destinations": [r[0] for r in kept]})

    return app


def limit_app(redis_url: str, key_prefix: str) -> Flask:
    app = Flask("limit")
    client = redis.Redis.from_url(redis_url)
    key = KeySchema(key_prefix).destinations

    @app.post("/api/rank")
    def rank() -> Any:
        body = request.get_json()
        ids = [d["id"] for d in body["destinations"]]
        raw = client.hmget(key, ids)
        free = {i: json.loads(v).get("cpus_free") or 0.0 for i, v in zip(ids, raw) if v is not None}
        ids.sort(key=lambda i: -free.get(i, -1.0))
        return jsonify({"destinations": ids})

    return app


def validate_only_app() -> Flask:
    app = Flask("validate_only")

    @app.post("/api/rank")
    def rank() -> Any:
        req = RankRequest.model_validate_json(request.get_data())
        return jsonify({"destinations": req.candidates().column("id")})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("app", choices=("prototype", "limit", "validate_only"))
    ap.add_argument("--bind", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--influx-url")
    ap.add_argument("--database")
    ap.add_argument("--redis-url")
    ap.add_argument("--key-prefix", default="tpv_broker")
    args = ap.parse_args()
    if args.app == "prototype":
        serve_app(lambda: prototype_app(args.influx_url, args.database), args.bind, args.workers)
    elif args.app == "limit":
        serve_app(lambda: limit_app(args.redis_url, args.key_prefix), args.bind, args.workers)
    else:
        serve_app(validate_only_app, args.bind, args.workers)


if __name__ == "__main__":
    main()
