"""Answers a real influxd will not give on demand: garbled, cut off,
partial, chunked, trickling, with per-statement errors and odd values.

A small HTTP server on loopback (a real socket server in a thread) replays
them. Its bodies start from an answer recorded from the real influxd for
the collector's own statements on the prototype's data, then are damaged.
Nothing here mocks the collector's HTTP client: it talks to the socket.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import requests

from tpv_broker.api.app import create_app
from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.presets import PRESETS
from tpv_broker.collector.state import RUNTIME_PRESET, CollectorState, StatsCache
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data

QUEUE, RUNTIME, CONDOR = 0, 1, 2  # statement ids, in the default preset order


class Replay:
    """What the fake InfluxDB answers next: status, content type, body, and
    how it is sent (``normal``; ``cut``: half the body, then the connection
    closes before the announced length; ``trickle``: a byte at a time)."""

    def __init__(self) -> None:
        self.status, self.content_type, self.body, self.mode = 200, "application/json", b"{}", "normal"
        self.requests = 0
        self.last_query = ""
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                replay.last_query = form.get("q", [""])[0]
                replay.requests += 1
                body, mode = replay.body, replay.mode
                self.send_response(replay.status)
                self.send_header("Content-Type", replay.content_type)
                # "short": the whole body, announced as longer than it is.
                self.send_header("Content-Length", str(len(body) + (100 if mode == "short" else 0)))
                self.end_headers()
                if mode == "cut":
                    body = body[: len(body) // 2]
                try:
                    if mode == "trickle":
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.02)
                    else:
                        self.wfile.write(body)
                except OSError:  # the client gave up: what the trickle test wants
                    pass
                if mode in ("cut", "short"):
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="influx-replay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: Any, status: int = 200, content_type: str = "application/json",
               mode: str = "normal") -> None:
        # json.dumps allows NaN: it goes out as the literal NaN.
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.body, self.status, self.content_type, self.mode = raw, status, content_type, mode


@pytest.fixture
def replay() -> Iterator[Replay]:
    r = Replay()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _config(url: str, prefix: str = "garbled") -> BrokerConfig:
    return BrokerConfig(influxdb=InfluxDBSettings(url=url, database="galaxy", timeout_s=0.5),
                        redis=RedisSettings(key_prefix=prefix))


@pytest.fixture
def recorded(influx_server, influx_db) -> dict[str, Any]:
    """The real influxd's answer to one cycle's statements on the prototype's data."""
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url)
    statements = [PRESETS[name].statement(config.collector) for name in config.collector.presets]
    resp = requests.post(f"{influx_server.url}/query", timeout=10,
                         data={"db": influx_db, "q": ";\n".join(statements), "epoch": "s"})
    body = resp.json()
    assert [r["statement_id"] for r in body["results"]] == [QUEUE, RUNTIME, CONDOR]
    assert all(r.get("series") for r in body["results"]), body
    return body


def _store(redis_client: redis.Redis, prefix: str = "garbled") -> SnapshotStore:
    return SnapshotStore(redis_client, KeySchema(prefix))


def _live(store: SnapshotStore) -> dict[bytes, Any]:
    return {k: store.client.hgetall(k) for k in store.keys.live_keys()}


def _bump(body: dict[str, Any], statement: int, column: str, by: float) -> dict[str, Any]:
    out = copy.deepcopy(body)
    for s in out["results"][statement]["series"]:
        i = s["columns"].index(column)
        for row in s["values"]:
            if isinstance(row[i], (int, float)):
                row[i] += by
    return out


def _cycle(url: str, store: SnapshotStore, state: CollectorState | None = None):
    config = _config(url, store.keys.prefix)
    return collect_once(config, InfluxQLClient(config.influxdb), store, time.time, state)


def _remembering() -> CollectorState:
    """A collector's state across cycles: each live preset's last good
    answer is remembered, and the run-time statistics are read every cycle
    (refresh_s 0), since each replayed answer holds every statement."""
    return CollectorState(lambda: StatsCache(refresh_s=0))


# -- the answer as a whole is unusable: nothing published, the snapshot stays --

HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
            b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")

WHOLE = {
    "proxy error page": (dict(body=HTML_502, status=502, content_type="text/html"),
                         ["HTTP 502 (text/html)", "not JSON", "502 Bad Gateway"]),
    "plain text": (dict(body=b"OK", content_type="text/plain"), ["HTTP 200 (text/plain)", "not JSON", "'OK'"]),
    "empty body": (dict(body=b""), ["not JSON (empty body)"]),
    "not UTF-8": (dict(body=b'{"results": "\xff\xfe"}'), ["not UTF-8 at byte"]),
    "a JSON list": (dict(body=[1, 2]), ["unexpected JSON: a list, not an object"]),
    "a JSON string": (dict(body="results"), ["unexpected JSON: a string, not an object"]),
    "a top-level error": (dict(body={"error": "timeout"}), ["answered an error: timeout"]),
    "results not a list": (dict(body={"results": {"0": {}}}), ["'results' is an object, not a list",
                                                               "no preset could be read"]),
    "no results at all": (dict(body={"results": []}), ["no result in the answer", "no preset could be read"]),
    "results of the wrong shape": (dict(body={"results": [1, "x", None, {"statement_id": "0"}]}),
                                   ["no result in the answer"]),
}


@pytest.mark.parametrize("case", sorted(WHOLE))
def test_a_garbled_answer_keeps_the_snapshot_and_says_what_is_wrong(case, replay, recorded, redis_client):
    store = _store(redis_client)
    replay.answer(recorded)
    assert _cycle(replay.url, store).published
    before = _live(store)
    answer, expected = WHOLE[case]
    replay.answer(**answer)
    report = _cycle(replay.url, store)
    assert not report.published and report.source_failed
    text = "; ".join(report.errors)
    for fragment in expected:
        assert fragment in text, text
    assert "Traceback" not in text
    assert _live(store) == before


def test_a_body_cut_off_mid_json_is_reported_as_such(replay, recorded, redis_client):
    store = _store(redis_client)
    raw = json.dumps(recorded).encode()
    replay.answer(raw[: len(raw) // 2])
    report = _cycle(replay.url, store)
    assert not report.published
    assert "not JSON (it ends early: cut off?)" in report.errors[0], report.errors


def test_a_connection_closed_before_the_announced_length_is_reported(replay, recorded, redis_client):
    store = _store(redis_client)
    replay.answer(recorded, mode="cut")
    report = _cycle(replay.url, store)
    assert not report.published
    assert "closed the connection after" in report.errors[0], report.errors


def test_a_trickling_answer_is_abandoned_at_the_time_limit(replay, recorded, redis_client):
    # About 3 KB at a byte every 20 ms: a minute if read to the end. Each
    # read gets a byte well within the 0.5 s socket timeout, so only a
    # limit on the whole answer stops it.
    store = _store(redis_client)
    replay.answer(recorded, mode="trickle")
    started = time.monotonic()
    report = _cycle(replay.url, store)
    took = time.monotonic() - started
    assert not report.published
    assert "did not finish its answer within 0.5 s" in report.errors[0], report.errors
    # The configured limit (0.5 s) plus one read timeout, and generous slack.
    assert took < 0.5 + 0.5 + 5.0, took


def test_statistics_too_slow_for_the_time_limit_do_not_hold_the_live_figures_hostage(replay, recorded,
                                                                                     redis_client, caplog):
    # A large site's first read of the 3-day statistics window took longer than influxdb.timeout_s, and
    # a daemon's cycles sent it with the live statements until it had them once: every cycle's request
    # timed out, and no live figure was ever published.
    store, state = _store(redis_client), CollectorState.new(_config(replay.url), background_stats=True)
    replay.answer(recorded, mode="trickle")
    report = _cycle(replay.url, store, state)
    assert not report.published and PRESETS[RUNTIME_PRESET].spec.measurement in replay.last_query
    assert "the run-time statistics are left to the refresh job" in caplog.text
    # The live statements alone, numbered as InfluxDB numbers them in a request of two.
    live = {"results": [{**recorded["results"][QUEUE], "statement_id": 0},
                        {**recorded["results"][CONDOR], "statement_id": 1}]}
    replay.answer(live)
    report = _cycle(replay.url, store, state)
    assert report.published and report.errors == [], report.errors
    assert PRESETS[RUNTIME_PRESET].spec.measurement not in replay.last_query
    assert store.read_all().destinations  # type: ignore[union-attr]


def test_influxdb_down_at_start_leaves_the_statistics_to_the_cycles(replay, recorded, redis_client, caplog):
    # Not a time-out: the next cycle reads them with the live figures, as before (the refresh job runs
    # only stats_refresh_s later, and the snapshots had none until then).
    store, state = _store(redis_client), CollectorState.new(_config(replay.url), background_stats=True)
    replay.answer(HTML_502, status=502, content_type="text/html")
    assert not _cycle(replay.url, store, state).published
    replay.answer(recorded)
    report = _cycle(replay.url, store, state)
    assert report.published and report.errors == [], report.errors
    assert PRESETS[RUNTIME_PRESET].spec.measurement in replay.last_query
    assert store.read_all().tool_stats  # type: ignore[union-attr]
    assert "left to the refresh job" not in caplog.text


# -- one statement fails: the others update, that preset keeps its last figures --

def _expected(replay: Replay, redis_client: redis.Redis, body: dict[str, Any]) -> dict[str, Any]:
    """The snapshot a clean answer ``body`` gives, under a prefix of its own."""
    store = _store(redis_client, "expected")
    replay.answer(body)
    assert _cycle(replay.url, store).published
    return store.read_all().destinations


STATEMENT_FAULTS = {
    # InfluxDB's per-statement error, as 1.x words a field type conflict.
    "statement error": lambda r: {"statement_id": CONDOR,
                                  "error": 'field type conflict: input field "unclaimed_cpus" '
                                           'on measurement "htcondor_cluster_usage" is type string, '
                                           'already exists as type float'},
    # Cut by max-row-limit: some rows, and "partial".
    "partial": lambda r: {**r, "series": r["series"][:1], "partial": True},
    "malformed series": lambda r: {**r, "series": [{**r["series"][0], "values": [[1]]}]},
    "series of the wrong type": lambda r: {**r, "series": {"name": "x"}},
    # A value that is no scalar, in the second row of the last column.
    "a value that is a list": lambda r: {**r, "series": [{**r["series"][0], "values": [
        r["series"][0]["values"][0], [*r["series"][0]["values"][1][:-1], [1, 2]]]}]},
}


@pytest.mark.parametrize("fault", sorted(STATEMENT_FAULTS))
def test_a_failing_statement_keeps_its_figures_while_the_others_update(fault, replay, recorded, redis_client):
    store = _store(redis_client)
    state = _remembering()
    replay.answer(recorded)
    assert _cycle(replay.url, store, state).published
    # Next cycle: new queue counts, and the capacity statement broken.
    newer = _bump(recorded, QUEUE, "count", 100)
    broken = copy.deepcopy(newer)
    broken["results"][CONDOR] = STATEMENT_FAULTS[fault](newer["results"][CONDOR])
    replay.answer(broken)
    report = _cycle(replay.url, store, state)
    assert report.published, report.errors
    (problem,) = [e for e in report.errors if e.startswith("htcondor_cluster_usage:")]
    assert problem.endswith("(its last good figures kept)"), problem
    expected = {"statement error": "field type conflict", "partial": '"partial": true',
                "malformed series": "series[0].values[0] has 1 values for",
                "a value that is a list": "series[0].values[1] holds a list",
                "series of the wrong type": "'series' is an object"}[fault]
    assert expected in problem
    assert report.kept.keys() == {"htcondor_cluster_usage"}
    # Exactly what the new queue counts with the earlier capacity give.
    assert store.read_all().destinations == _expected(replay, redis_client, newer)
    assert store.read_meta().problems == "; ".join(report.errors)


def test_without_earlier_figures_a_failing_statement_leaves_them_missing(replay, recorded, redis_client):
    store = _store(redis_client)
    broken = copy.deepcopy(recorded)
    broken["results"][CONDOR] = {"statement_id": CONDOR, "error": "shard 4: timeout"}
    replay.answer(broken)
    report = _cycle(replay.url, store, _remembering())
    assert report.published
    assert "htcondor_cluster_usage: shard 4: timeout (its figures are missing from this snapshot)" in report.errors
    d = store.read_all().destinations["condor_tpv"]
    assert (d.queued, d.cpus_free, d.status) == (8, None, "unknown")


def test_a_partial_queue_answer_is_never_read_as_zero_jobs(replay, recorded, redis_client):
    # Missing queue rows would mean "no jobs there": a partial answer must not be used.
    store = _store(redis_client)
    state = _remembering()
    replay.answer(recorded)
    assert _cycle(replay.url, store, state).published
    newer = _bump(recorded, CONDOR, "unclaimed_cpus", 1)
    partial = copy.deepcopy(newer)
    partial["results"][QUEUE]["series"] = partial["results"][QUEUE]["series"][:2]
    partial["results"][QUEUE]["partial"] = True
    replay.answer(partial)
    report = _cycle(replay.url, store, state)
    assert report.published and report.kept.keys() == {"queue_by_destination"}
    assert store.read_all().destinations == _expected(replay, redis_client, newer)
    assert store.read_all().destinations["pulsar_uk"].queued == 7


def test_a_chunked_answer_is_joined(replay, recorded, redis_client):
    # InfluxDB's chunked form: several JSON documents, a statement's series
    # split over them, "partial": true on all but its last chunk.
    chunks = []
    for result in recorded["results"]:
        series = result["series"]
        for i, s in enumerate(series):
            half = max(1, len(s["values"]) // 2)
            last = i == len(series) - 1
            for j, values in enumerate([s["values"][:half], s["values"][half:]]):
                if not values:
                    continue
                done = last and (j == 1 or half == len(s["values"]))
                chunk = {"statement_id": result["statement_id"], "series": [{**s, "values": values}]}
                if not done:
                    chunk["partial"] = True
                chunks.append(json.dumps({"results": [chunk]}))
    expected = _expected(replay, redis_client, recorded)
    store = _store(redis_client)
    replay.answer("\n".join(chunks).encode())
    report = _cycle(replay.url, store)
    assert report.published and not report.errors, report.errors
    assert store.read_all().destinations == expected


def test_odd_values_are_read_as_missing_and_reported(replay, recorded, redis_client):
    odd = copy.deepcopy(recorded)
    queue = odd["results"][QUEUE]["series"]
    queue[0]["values"][-1][1] = "abc"         # text where a number belongs
    queue[1]["values"][-1][1] = None          # null
    queue[2]["values"][-1][1] = float("nan")  # NaN: InfluxDB never stores one
    condor = odd["results"][CONDOR]["series"][0]
    cpus = condor["columns"].index("unclaimed_cpus")
    for row in condor["values"]:
        row[cpus] = float("inf")
    replay.answer(odd)
    assert b"NaN" in replay.body and b"Infinity" in replay.body
    store = _store(redis_client)
    config = _config(replay.url)
    report = _cycle(replay.url, store)
    assert report.published, report.errors
    text = "; ".join(report.errors)
    assert "queue_by_destination: 1 value(s) NaN or infinite, read as missing" in text, text
    assert "queue_by_destination: column 'count' mixes numbers and text" in text, text
    assert "htcondor_cluster_usage: " in text and "NaN or infinite" in text, text
    snapshot = store.read_all()
    assert all(d.cpus_free is None for d in snapshot.destinations.values())
    for d in snapshot.destinations.values():
        for value in d.model_dump().values():
            assert not (isinstance(value, float) and not math.isfinite(value)), d
    # The API ranks over it as over any snapshot.
    app = create_app(config, store=store)
    ids = sorted(snapshot.destinations)
    resp = app.test_client().post("/api/rank?explain=1", json={
        "job": {"tool_id": "bwa", "cores": 2, "mem": 4}, "destinations": [{"id": d} for d in ids]})
    assert resp.status_code == 200 and sorted(resp.get_json()["destinations"]) == ids
    assert resp.get_json()["degraded"] is False


def test_a_chunked_answer_cut_between_chunks_keeps_what_arrived(replay, recorded, redis_client):
    store = _store(redis_client)
    state = _remembering()
    replay.answer(recorded)
    assert _cycle(replay.url, store, state).published
    newer = _bump(recorded, QUEUE, "count", 100)
    # The queue and run-time chunks arrive, then the connection closes.
    chunks = [json.dumps({"results": [r]}) for r in newer["results"][:CONDOR]]
    replay.answer("\n".join(chunks).encode(), mode="short")
    report = _cycle(replay.url, store, state)
    assert report.published, report.errors
    assert report.errors == ["htcondor_cluster_usage: its answer was cut off before this statement "
                             "(its last good figures kept)"]
    assert store.read_all().destinations == _expected(replay, redis_client, newer)


def test_a_queue_answer_with_no_usable_row_is_not_read_as_zero_jobs(replay, recorded, redis_client):
    store = _store(redis_client)
    state = _remembering()
    replay.answer(recorded)
    assert _cycle(replay.url, store, state).published
    before = store.read_all().destinations
    garbled = copy.deepcopy(recorded)
    for s in garbled["results"][QUEUE]["series"]:
        for row in s["values"]:
            row[1] = "many"
    replay.answer(garbled)
    report = _cycle(replay.url, store, state)
    assert report.published and report.kept.keys() == {"queue_by_destination"}
    rows = sum(len(s["values"]) for s in garbled["results"][QUEUE]["series"])
    assert f"queue_by_destination: {rows} row(s), none usable (values of the wrong type?) " \
           "(its last good figures kept)" in report.errors, report.errors
    assert {d: f.queued for d, f in store.read_all().destinations.items()} == {d: f.queued for d, f in before.items()}


def _set_column(body: dict[str, Any], statement: int, column: str, value: Any, series: int | None = None) -> None:
    for i, s in enumerate(body["results"][statement]["series"]):
        if series is not None and i != series:
            continue
        at = s["columns"].index(column)
        for row in s["values"]:
            row[at] = value


def test_negative_and_implausibly_large_values_are_read_as_missing_and_reported(replay, recorded, redis_client):
    # Values a real influxd stores and returns: a writer's bug, not a garbled answer.
    odd = copy.deepcopy(recorded)
    _set_column(odd, QUEUE, "count", -50, series=0)
    _set_column(odd, QUEUE, "count", 1e300, series=1)
    _set_column(odd, QUEUE, "count", "NaN", series=2)
    _set_column(odd, CONDOR, "unclaimed_cpus", -8)
    # Counts of 1e308 overflowed the sums of a tool's versions: every cycle failed.
    _set_column(odd, RUNTIME, "count", 1e308)
    replay.answer(odd)
    store = _store(redis_client)
    state = _remembering()
    for _ in range(2):
        report = _cycle(replay.url, store, state)
        assert report.published, report.errors
    text = "; ".join(report.errors)
    for preset in ("queue_by_destination", "htcondor_cluster_usage", "destination_queue_run_time"):
        assert f"{preset}: " in text and "negative, not a number or implausibly large (at least 1e+12), read as " \
            "missing" in text.split(f"{preset}: ", 1)[1], text
    snapshot = store.read_all()
    assert snapshot is not None
    for d in snapshot.destinations.values():
        for name, value in d.model_dump().items():
            assert not (isinstance(value, float) and not 0 <= value < 1e12), (d.id, name, value)
    assert snapshot.tool_stats, "the tools are still there, without their counts"
