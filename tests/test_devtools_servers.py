"""The development servers and fixtures in conftest.py work against real daemons."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import redis
import requests

from tpv_broker.devtools.servers import InfluxServer, influxql_inserts_to_lines

PROTOTYPE_DATA = pathlib.Path(__file__).parent / "data" / "prototype" / "test_data.influxql"
# 13 htcondor_cluster_usage + 26 queue_by_destination + 13 destination-queue-run-time
PROTOTYPE_INSERTS = 52
START_TS = 1_700_000_000


def _series_value(result: dict[str, Any], column: str) -> object:
    series = result["results"][0]["series"][0]
    return series["values"][0][series["columns"].index(column)]


def test_redis_set_get(redis_client: redis.Redis) -> None:
    redis_client.set(b"tpv:test", b"value")
    assert redis_client.get(b"tpv:test") == b"value"


def test_redis_client_starts_empty(redis_client: redis.Redis) -> None:
    # Relies on the flush around each test, whatever ran before.
    assert redis_client.dbsize() == 0


def test_influx_write_and_query(influx_server: InfluxServer, influx_db: str) -> None:
    influx_server.write_lines(influx_db, f"cpu,host=a value=1.5 {START_TS}")
    result = influx_server.query('SELECT "value" FROM "cpu"', db=influx_db)
    series = result["results"][0]["series"][0]
    assert series["columns"] == ["time", "value"]
    assert series["values"] == [["2023-11-14T22:13:20Z", 1.5]]


def test_influxql_inserts_to_lines_gives_each_line_its_own_timestamp() -> None:
    lines = influxql_inserts_to_lines(PROTOTYPE_DATA.read_text(), start_ts=START_TS)
    assert len(lines) == PROTOTYPE_INSERTS
    timestamps = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert timestamps == list(range(START_TS, START_TS + PROTOTYPE_INSERTS))
    assert not any(line.startswith("INSERT") for line in lines)


def test_influxql_inserts_to_lines_step_and_comments() -> None:
    text = "-- a comment\n\nINSERT m,t=x f=1\n  insert m,t=x f=2  \n"
    assert influxql_inserts_to_lines(text, start_ts=100, step_s=60) == [
        "m,t=x f=1 100",
        "m,t=x f=2 160",
    ]


def test_influxql_inserts_to_lines_rejects_other_statements() -> None:
    with pytest.raises(ValueError, match="line 2"):
        influxql_inserts_to_lines("INSERT m f=1\nSELECT * FROM m\n", start_ts=0)


def test_prototype_data_keeps_every_point(influx_server: InfluxServer, influx_db: str) -> None:
    lines = influxql_inserts_to_lines(PROTOTYPE_DATA.read_text(), start_ts=START_TS)
    influx_server.write_lines(influx_db, lines)

    queue = influx_server.query('SELECT count("count") FROM "queue_by_destination"', db=influx_db)
    usage = influx_server.query(
        'SELECT count("unclaimed_cpus") FROM "htcondor_cluster_usage"', db=influx_db
    )
    assert _series_value(queue, "count") == 26
    assert _series_value(usage, "count") == 13


def test_pause_makes_influx_hang_and_resume_recovers(influx_server: InfluxServer) -> None:
    ping = f"{influx_server.url}/ping"
    influx_server.pause()
    try:
        # The kernel still accepts the connection; only the answer never comes.
        with pytest.raises(requests.Timeout):
            requests.get(ping, timeout=0.5)
    finally:
        influx_server.resume()
    assert requests.get(ping, timeout=5).status_code == 204
