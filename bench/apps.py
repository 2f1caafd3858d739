"""The comparison services, served under exactly the gunicorn settings of
``tpv-broker serve`` (``tpv_broker.api.server.serve_app``: same worker
count, same worker class). All take the same ``POST /api/rank`` body as
ours, so the load generator sends identical bytes to each.

* ``prototype``: the first prototype's design (bench/README.md),
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
* ``floor``: the least a rank service can do (issue 19): bare Flask,
  parse the body, one Redis ``MGET`` of one precomputed number per
  candidate (its free cores, written by ``write_floor_numbers`` from the
  snapshot the others read), a sort, the ids back as JSON. What ours is
  held against.
* ``floor_charged``: the floor that also records its placement, as ours
  writes its in-flight charge: after the answer has been sent, one awaited
  Redis write (``HINCRBY`` of the first destination's count). Not a target
  of its own: it shows what one write after the answer costs a service
  that does nothing else.
* ``limit``: a second reference, a Redis-backed ranker that reads what ours
  reads: bare Flask, parse the JSON, one Redis HMGET of the candidates'
  snapshot entries, each decoded from JSON, a sort by free cores, the ids
  back as JSON. No validation, no scoring, no explanation.

Run: ``python -m bench.apps {prototype,floor,floor_charged,limit} --bind H:P --workers N ...``
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import redis
import requests
from flask import Flask, jsonify, request

from tpv_broker.api.server import serve_app
from tpv_broker.core.models import DestinationFigures, Snapshot
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


def floor_key(key_prefix: str, destination_id: str) -> str:
    """The floor's key for one destination. Bench only, so built here and
    not in tpv_broker/store/keys.py; unlike the broker's keys it holds a
    destination id in its name: an MGET of one key per candidate needs it."""
    return f"{key_prefix}:bench:floor:{destination_id}"


def floor_number(figures: DestinationFigures) -> float:
    # Free cores, what the limit sorts by too; -1 puts a destination that
    # does not report them after every one that does.
    return figures.cpus_free if figures.cpus_free is not None else -1.0


def write_floor_numbers(client: redis.Redis, key_prefix: str, snapshot: Snapshot) -> dict[str, float]:
    """Precompute the floor's one number per destination of ``snapshot``
    (the one the other services read) into Redis; returns them."""
    numbers = {d: floor_number(f) for d, f in snapshot.destinations.items()}
    if numbers:
        client.mset({floor_key(key_prefix, d): repr(v) for d, v in numbers.items()})
    return numbers


def floor_order(ids: list[str], numbers: list[float]) -> list[str]:
    """Largest number first; ties keep the order they came in (``sorted``
    is stable, reversed too)."""
    return [i for i, _ in sorted(zip(ids, numbers, strict=True), key=itemgetter(1), reverse=True)]


def floor_app(redis_url: str, key_prefix: str, charged: bool = False) -> Flask:
    """The floor; ``charged``: it also records its placement, one awaited
    Redis write (``HINCRBY`` of the first destination's count) after the
    answer has been sent, as ours writes its in-flight charge."""
    app = Flask("floor_charged" if charged else "floor")
    client = redis.Redis.from_url(redis_url)
    head = floor_key(key_prefix, "")
    placements = floor_key(key_prefix, "placements")

    @app.post("/api/rank")
    def rank() -> Any:
        ids = [d["id"] for d in request.get_json()["destinations"]]
        raw = client.mget([head + i for i in ids])
        # A candidate the snapshot does not know has no key: last.
        response = jsonify({"destinations": floor_order(ids, [-math.inf if v is None else float(v) for v in raw])})
        if not charged:
            return response
        body, first = response.get_data(), response.get_json()["destinations"][:1]

        def chunks() -> Iterator[bytes]:  # as ours: the body first, the write before the response ends
            yield body
            if first:
                client.hincrby(placements, first[0], 1)

        response.response = chunks()
        response.headers["Content-Length"] = str(len(body))
        return response

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
        free = {i: json.loads(v).get("cpus_free") or 0.0 for i, v in zip(ids, raw, strict=True) if v is not None}
        ids.sort(key=lambda i: -free.get(i, -1.0))
        return jsonify({"destinations": ids})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("app", choices=("prototype", "floor", "floor_charged", "limit"))
    ap.add_argument("--bind", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--influx-url")
    ap.add_argument("--database")
    ap.add_argument("--redis-url")
    ap.add_argument("--key-prefix", default="tpv_broker")
    args = ap.parse_args()
    if args.app == "prototype":
        serve_app(lambda: prototype_app(args.influx_url, args.database), args.bind, args.workers)
    elif args.app in ("floor", "floor_charged"):
        charged = args.app == "floor_charged"
        serve_app(lambda: floor_app(args.redis_url, args.key_prefix, charged), args.bind, args.workers)
    else:
        serve_app(lambda: limit_app(args.redis_url, args.key_prefix), args.bind, args.workers)


if __name__ == "__main__":
    main()
