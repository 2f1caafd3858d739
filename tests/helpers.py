"""Small builders shared by several test modules."""

from __future__ import annotations

import math
import pathlib
import time

import numpy as np

from tpv_broker.core.charges import ChargeLoad
from tpv_broker.core.inflight import LoadColumns, charged_columns
from tpv_broker.core.models import DestinationFigures
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


def charged(d: DestinationFigures, load: ChargeLoad, by_work: bool = False) -> tuple[float | None, ...]:
    """``inflight.charged_columns`` on one destination, None for NaN:
    (free cores, free memory, queued) once the charged jobs show."""
    def col(v: float | None) -> np.ndarray:
        return np.array([math.nan if v is None else v], dtype=np.float64)

    out = charged_columns(col(d.cpus_free), col(d.mem_free_gb), col(d.queued), col(d.running), col(d.cpus_total),
                          col(d.median_run_s), LoadColumns.of([load]), by_work)
    return tuple(None if math.isnan(a[0]) else float(a[0]) for a in out)
