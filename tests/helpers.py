"""Small builders shared by several test modules."""

from __future__ import annotations

import pathlib
import time

from tpv_broker.devtools.servers import InfluxServer, influxql_inserts_to_lines

DATA = pathlib.Path(__file__).parent / "data" / "prototype"


def load_prototype_data(influx: InfluxServer, db: str, end_ts: int | None = None) -> int:
    """Write the prototype's test data with one timestamp per line, the last
    one ``end_ts`` (default: now). Returns the first timestamp."""
    text = (DATA / "test_data.influxql").read_text()
    n = sum(1 for line in text.splitlines() if line.startswith("INSERT"))
    end_ts = int(time.time()) if end_ts is None else end_ts
    start = end_ts - n + 1
    influx.write_lines(db, influxql_inserts_to_lines(text, start_ts=start))
    return start
