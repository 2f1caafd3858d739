"""The example requests and answers shown in ``/openapi.json`` and ``/docs``,
taken from the API tests. The tests publish ``SNAPSHOT`` (as the collector
would), POST every request example in the served spec to the real app and
check the answer equals the documented one, so no example here can go out
of date.

Each answer example names the request example it answers (``x-request``)
and any query string (``x-query``); the ``413`` example is built from the
configured body limit (``answer_413``)."""

from __future__ import annotations

from typing import Any

from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta

FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0"

# -- the snapshot the answers below were computed on ------------------------------
# Its age when asked (created SNAPSHOT_AGE_S before the request), and the age
# of each destination's newest point (METRICS_AGE_S); in-flight accounting off.
SNAPSHOT_AGE_S = 10.0
METRICS_AGE_S = 20.0
SNAPSHOT: list[dict[str, Any]] = [
    {"id": "pulsar_de", "status": "online", "queued": 5, "running": 5, "cpus_free": 24, "mem_free_gb": 46.9},
    {"id": "pulsar_uk", "status": "online", "queued": 10, "running": 3, "cpus_free": 19, "mem_free_gb": 37.1},
    {"id": "pulsar_fr", "status": "online", "queued": 0, "running": 6, "cpus_free": 14, "mem_free_gb": 27.3},
    {"id": "pulsar_be", "status": "online", "queued": 5, "running": 5, "cpus_free": 2, "mem_free_gb": 1.9},
    {"id": "condor_us", "status": "offline", "queued": 0, "cpus_free": 16, "mem_free_gb": 31.25},
]


def _example(summary: str, value: Any, **extensions: Any) -> dict[str, Any]:
    return {"summary": summary, "value": value, **{f"x-{k}": v for k, v in extensions.items()}}


# -- POST /api/rank -----------------------------------------------------------------------
RANK_REQUESTS: dict[str, dict[str, Any]] = {
    "fastp_job": _example(
        "A 4-core 8 GB fastp job over six candidates, as the TPV client sends it",
        {
            "job": {"id": 4711, "tool_id": FASTP, "cores": 4, "mem": 8},
            "destinations": [
                {"id": "pulsar_xx"},
                {"id": "condor_us", "tpv_score": 1},
                {"id": "pulsar_be"},
                {"id": "pulsar_uk", "tpv_score": 0, "context": {"latitude": 51.5, "longitude": -0.13}},
                {"id": "pulsar_de", "tpv_score": 2, "context": {"latitude": 50.1, "longitude": 8.7}},
                {"id": "pulsar_fr"},
            ],
            "datasets": [{"object_store_id": "object_store_germany", "size": 2_000_000_000}],
            "object_stores": {"object_store_germany": {"latitude": 50.1, "longitude": 8.7}},
        },
    ),
    "minimal": _example(
        "Only the required fields: the tool id and the candidates",
        {"job": {"tool_id": "cat1"}, "destinations": [{"id": "pulsar_uk"}, {"id": "pulsar_fr"}]},
    ),
    "two_candidates": _example(
        "Two candidates, one of them reported offline (shown with ?explain=1)",
        {"job": {"tool_id": "cat1"}, "destinations": [{"id": "condor_us"}, {"id": "pulsar_fr"}]},
    ),
    "invalid_values": _example(
        "Rejected: negative cores, memory as a string (numbers are strict)",
        {"job": {"tool_id": "cat1", "cores": -4, "mem": "8"}, "destinations": [{"id": "pulsar_de"}]},
    ),
    "invalid_duplicate_id": _example(
        "Rejected: a destination id given twice",
        {"job": {"tool_id": "cat1"}, "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk"}, {"id": "pulsar_de"}]},
    ),
    "invalid_unknown_field": _example(
        "Rejected: a misspelt field (core) would otherwise rank on the default",
        {"job": {"tool_id": "cat1", "core": 4}, "destinations": [{"id": "pulsar_de"}]},
    ),
}

RANK_ANSWERS_200: dict[str, dict[str, Any]] = {
    "fastp_job": _example(
        "pulsar_de first (fits, short queue, next to the input); pulsar_xx has no metrics; condor_us is offline",
        {"destinations": ["pulsar_de", "pulsar_fr", "pulsar_uk", "pulsar_be", "pulsar_xx", "condor_us"],
         "snapshot_age_s": SNAPSHOT_AGE_S, "degraded": False},
        request="fastp_job"),
    "minimal": _example(
        "Equal scores: TPV's order (here the input order) breaks the tie",
        {"destinations": ["pulsar_uk", "pulsar_fr"], "snapshot_age_s": SNAPSHOT_AGE_S, "degraded": False},
        request="minimal"),
    "explained": _example(
        "With ?explain=1: per candidate its place, group, score, reason and per-term breakdown",
        {"destinations": ["pulsar_fr", "condor_us"], "snapshot_age_s": SNAPSHOT_AGE_S, "degraded": False,
         "explain": [
             {"position": 1, "id": "pulsar_fr", "group": "scored",
              "reason": "score 80.3: waits ~5 min (default), runs ~60 min (default), fits now", "score": 80.25,
              "terms": [
                  {"term": "queue_wait", "raw": {"expected_wait_s": 300.0, "median_queue_s": 300.0, "queued": 0.0,
                                                 "running": 6.0, "free_slots": 14.0, "typical_run_s": 3600.0,
                                                 "drain_s": 0.0},
                   "score": 0.8056, "weight": 3.0, "contribution": 24.17, "level": "default"},
                  {"term": "run_time", "raw": {"median_run_s": 3600.0},
                   "score": 0.5541, "weight": 2.0, "contribution": 11.08, "level": "default"},
                  {"term": "fit_now", "raw": {"cores_needed": 1.0, "cores_free": 14.0, "mem_gb_needed": 0.0,
                                              "mem_gb_free": 27.3, "fits": True},
                   "score": 1.0, "weight": 3.0, "contribution": 30.0, "level": None},
                  {"term": "data_locality", "raw": {"datasets": 0, "note": "no input with a known location: neutral"},
                   "score": 1.0, "weight": 1.0, "contribution": 10.0, "level": None},
                  {"term": "tpv_score", "raw": {"tpv_score": None},
                   "score": 0.5, "weight": 1.0, "contribution": 5.0, "level": None},
              ]},
             {"position": 2, "id": "condor_us", "group": "offline", "reason": "reported offline"},
         ]},
        request="two_candidates", query="explain=1"),
}
RANK_ANSWERS_400: dict[str, dict[str, Any]] = {
    "invalid_values": _example(
        "Every problem named, field first",
        {"error": "invalid request",
         "message": "job.cores: Input should be greater than 0 (got -4); "
                    "job.mem: Input should be a valid number (got '8')",
         "errors": [{"field": "job.cores", "problem": "Input should be greater than 0 (got -4)"},
                    {"field": "job.mem", "problem": "Input should be a valid number (got '8')"}]},
        request="invalid_values"),
    "invalid_duplicate_id": _example(
        "A duplicate id names both places",
        {"error": "invalid request",
         "message": "destinations[2].id: duplicate destination id 'pulsar_de' (also at destinations[0])",
         "errors": [{"field": "destinations[2].id",
                     "problem": "duplicate destination id 'pulsar_de' (also at destinations[0])"}]},
        request="invalid_duplicate_id"),
    "invalid_unknown_field": _example(
        "Unknown fields are rejected",
        {"error": "invalid request", "message": "job.core: Extra inputs are not permitted",
         "errors": [{"field": "job.core", "problem": "Extra inputs are not permitted"}]},
        request="invalid_unknown_field"),
}

# -- POST /process_data (the prototype's request, tests/data/prototype/example_request1.json) --
PROCESS_DATA_REQUESTS: dict[str, dict[str, Any]] = {
    "prototype": _example(
        "The prototype's own example request (extra keys such as queued_job_count are ignored)",
        {
            "objectstores": {
                "object_store_usa": {"latitude": 37.7749, "longitude": -122.4194},
                "object_store_europe": {"latitude": 48.8566, "longitude": 2.3522},
            },
            "datasets": {
                "0": {"object_store_id": "object_store_usa", "size": 50000000000.0},
                "1": {"object_store_id": "object_store_europe", "size": 200000000000.0},
            },
            "job_info": {"tool_id": "trinity", "mem": 16, "cores": 4, "gpus": 1},
            "destinations": [
                {"id": "pulsar_us01", "latitude": 37.7749, "longitude": -122.4194, "queued_job_count": 5},
                {"id": "pulsar_uk", "latitude": 51.5074, "longitude": -0.1278, "queued_job_count": 10},
                {"id": "pulsar_de", "latitude": 50.1109, "longitude": 8.6821, "queued_job_count": 5},
                {"id": "pulsar_fr", "latitude": 48.8566, "longitude": 2.3522, "queued_job_count": 0},
                {"id": "condor_us", "latitude": 34.0522, "longitude": -118.2437, "queued_job_count": 20},
            ],
        },
    ),
    "invalid_missing_tool_id": _example(
        "Rejected: job_info without tool_id",
        {"job_info": {"cores": 2}, "destinations": [{"id": "pulsar_de"}]},
    ),
}

PROCESS_DATA_ANSWERS_200: dict[str, dict[str, Any]] = {
    "prototype": _example(
        "Every candidate once (the prototype dropped some): pulsar_us01 has no metrics, condor_us is offline",
        {"sorted_destinations": ["pulsar_fr", "pulsar_de", "pulsar_uk", "pulsar_us01", "condor_us"]},
        request="prototype"),
}
PROCESS_DATA_ANSWERS_400: dict[str, dict[str, Any]] = {
    "invalid_missing_tool_id": _example(
        "The missing field named",
        {"error": "invalid request", "message": "job_info.tool_id: Field required",
         "errors": [{"field": "job_info.tool_id", "problem": "Field required"}]},
        request="invalid_missing_tool_id"),
}

# -- GET /health, GET /ready ---------------------------------------------------------------
HEALTH_ANSWERS = {"alive": _example("The process is up", {"status": "ok"})}
READY_ANSWERS_200 = {"ready": _example(
    "Redis answers and the snapshot is younger than api.max_snapshot_age_s",
    {"ready": True, "snapshot_age_s": SNAPSHOT_AGE_S, "max_snapshot_age_s": 300.0, "destinations": len(SNAPSHOT)})}
# Keyed by the situation the tests create for each.
READY_ANSWERS_503 = {
    "stale": _example("The collector has not published for longer than api.max_snapshot_age_s",
                      {"ready": False, "snapshot_age_s": 412.0, "max_snapshot_age_s": 300.0,
                       "destinations": len(SNAPSHOT), "reason": "snapshot is 412 s old (limit 300 s)"}),
    "no_snapshot": _example("Redis answers but holds no snapshot (collector never ran, or Redis was flushed)",
                            {"ready": False, "reason": "no snapshot in Redis yet"}),
    "redis_down": _example("Redis does not answer within redis.socket_timeout_s",
                           {"ready": False, "reason": "Redis unavailable"}),
}


# -- errors any endpoint can give ---------------------------------------------------------------
def answer_413(max_request_bytes: int) -> dict[str, Any]:
    problem = f"request body larger than {max_request_bytes} bytes"
    return _example(f"A body over api.max_request_bytes ({max_request_bytes})", {
        "error": "Request Entity Too Large", "message": f"body: {problem}",
        "errors": [{"field": "body", "problem": problem}]})


ANSWER_500 = _example("A bug (logged with its traceback in the API log, never sent)",
                      {"error": "internal error", "message": "internal error; see the API log"})


def example_snapshot(now: float) -> Snapshot:
    """``SNAPSHOT`` as the collector would publish it, seen at ``now``."""
    at = now - METRICS_AGE_S
    dests = {d["id"]: DestinationFigures(**d, metrics_at=at, live_at=at, sources={"queue_by_destination": at})
             for d in SNAPSHOT}
    meta = SnapshotMeta(created_at=now - SNAPSHOT_AGE_S, newest_point_at=at, destinations=len(dests),
                        collector="galaxy01", cycle_s=0.012)
    return Snapshot(meta=meta, destinations=dests)
