"""What the broker really exports to Prometheus, for the tests of the
files in deploy/grafana/ that query it (the dashboard, the alert rules): a
real API on the real Redis, with a snapshot that has an excluded and a
healthy destination, after a rank request and a job coming back, and the
collector's registry after one cycle with a health transition."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tpv_broker.api import create_app
from tpv_broker.collector.cycle import CycleReport
from tpv_broker.collector.health import Transition
from tpv_broker.collector.metrics import CollectorMetrics
from tpv_broker.config.settings import load_config
from tpv_broker.core.models import DestinationFigures, DestinationHealth, Snapshot, SnapshotMeta
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

NOW = 1_700_000_000.0
METRIC_NAME = re.compile(r"\btpv_broker_[a-z_]+\b")
# What Prometheus adds to every scraped series, and PromQL's own.
TARGET_LABELS = {"job", "instance"}


def labels_used(expr: str) -> set[str]:
    """Label names in matchers, by/without clauses and on/ignoring/group_x."""
    names: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in clause.split(",") if n.strip())
    for selector in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", selector))
    return names


def _figures(dest: str, health: DestinationHealth) -> DestinationFigures:
    return DestinationFigures(id=dest, status="online", cpus_free=8, mem_free_gb=32, queued=0, running=1,
                              metrics_at=NOW - 20, live_at=NOW - 20, sources={"queue_by_destination": NOW - 20},
                              health=health)


EXCLUDED = DestinationHealth(state="excluded", since=NOW - 600, counted_from=NOW - 3600, errors=40, placements=50,
                             share=0.8, network_share=0.02, reason="80% of its jobs failed")


def _families(text: str) -> list:
    return list(text_string_to_metric_families(text))


def scrape_broker(redis_url: str) -> dict[str, Any]:
    """The families a real API (on the real Redis) and collector export."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        store = SnapshotStore(client, KeySchema("grafana"))
        healthy = DestinationHealth(state="healthy", since=NOW - 7200)
        dests = {"pulsar_de": _figures("pulsar_de", EXCLUDED), "pulsar_uk": _figures("pulsar_uk", healthy)}
        store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW - 10, newest_point_at=NOW - 20,
                                                 destinations=len(dests), collector="c"), destinations=dests))
        app = create_app(load_config(environ={}), store=store, clock=lambda: NOW).test_client()
        rank = {"job": {"id": 7, "tool_id": "bwa", "cores": 1, "mem": 1},
                "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk"}]}
        answer = app.post("/api/rank", json=rank)
        assert answer.status_code == 200 and answer.json["degraded"] is False, answer.json
        # Health put the excluded destination last: the job was charged to the other.
        assert answer.json["destinations"][0] == "pulsar_uk", answer.json
        # It failed and Galaxy resubmitted it: ranked again 30 s later, it came back from there.
        later = create_app(load_config(environ={}), store=store, clock=lambda: NOW + 30).test_client()
        again = later.post("/api/rank", json=rank)
        # reading the answer runs the charge (it is sent first)
        assert again.status_code == 200 and again.json["destinations"][0] == "pulsar_uk"
        scrape = app.get("/metrics")
        assert scrape.status_code == 200
        api = _families(scrape.get_data(as_text=True))
    finally:
        client.flushall()
        client.close()

    collector = CollectorMetrics(clock=lambda: NOW)
    report = CycleReport(published=True, destinations=2, tools=1, rows_read=12, queries=3, newest_point_age_s=20,
                         duration_s=0.04, transitions=[Transition("pulsar_de", "healthy", EXCLUDED)])
    collector.observe_cycle(report, failures_in_a_row=0)
    coll = _families(generate_latest(collector.registry).decode())
    return {"families": api + coll, "api": api, "collector": coll}


def sample_labels(exported: dict[str, Any]) -> dict[str, set[str]]:
    """Sample name (as PromQL sees it: with _total, _bucket, ...) -> its label names."""
    out: dict[str, set[str]] = {}
    for family in exported["families"]:
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install the Debian package prometheus (apt-get install prometheus)",
                    pytrace=False)
    return found
