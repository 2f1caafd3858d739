"""The status page at /: what it shows (pure build_status, table-driven), that
its scores are the rank API's own, that it renders whatever state Redis is
in, that it escapes what the metrics put in ids, and what headless Chromium
shows when it loads the page from a running API on a real redis-server."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from tpv_broker.api import create_app
from tpv_broker.api import examples as ex
from tpv_broker.api.status_page import PAGE_CSP
from tpv_broker.api.status_view import CHART_HEIGHT, CHART_WIDTH, PROBE_DESCRIPTION, PlacementChart, build_status
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.models import DestinationFigures, DestinationHealth, RankView, Snapshot
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.inflight import placement_field
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

from .web_helpers import CHROMIUM_FLAGS, CHROMIUM_TIMEOUT_S, PageReader, chromium_binary, dump_dom, serving

NOW = 1_700_000_000.0
KEYS = KeySchema("sp")
# An id as a metric source could send it: the collector keeps any string.
EVIL_ID = 'evil"><img src=x onerror="document.title=\'pwned\'"><b>'


def _config(**env: str) -> BrokerConfig:
    return load_config(environ=env)


def _snapshot(age_s: float = ex.SNAPSHOT_AGE_S, extra: list[DestinationFigures] = ()) -> Snapshot:
    snap = ex.example_snapshot(NOW)
    snap.meta.created_at = NOW - age_s
    for d in extra:
        snap.destinations[d.id] = d
    return snap


def _view(snap: Snapshot | None) -> RankView | None:
    if snap is None:
        return RankView()
    return RankView(meta=snap.meta, destinations=snap.destinations)


def _row_tags(page: PageReader, dest: str) -> list[tuple[str, dict[str, str]]]:
    """The tags inside the destination row of ``dest``."""
    out: list[tuple[str, dict[str, str]]] = []
    inside = False
    for tag, attrs in page.tags:
        if tag == "tr":
            inside = attrs.get("data-dest") == dest
        elif inside:
            out.append((tag, attrs))
    return out


STALE_DEST = DestinationFigures(id="pulsar_old", status="online", queued=1, running=2, cpus_free=4, cpus_total=8,
                                mem_free_gb=8, mem_total_gb=32, gpus_free=1, gpus_total=2, live_at=NOW - 1000,
                                metrics_at=NOW - 1000, sources={"htcondor_cluster_usage": NOW - 1000})
CONFIG_ONLY = DestinationFigures(id="pulsar_cfg", in_config=True, cpus_total=16)


# -- what it shows (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("snap", "error", "env", "kind", "headline"),
    [
        # 10 s < 3 cycles of 15 s: fresh
        (_snapshot(10), None, {}, "fresh", "Snapshot 10.0 s old"),
        # 46 s > 3 x 15 s but < 300 s: late
        (_snapshot(46), None, {}, "late", "Snapshot 46 s old"),
        # with a 5 s collector interval, 16 s is over 3 cycles (15 s): late
        (_snapshot(16), None, {"TPV_BROKER_COLLECTOR_INTERVAL_S": "5"}, "late", "Snapshot 16 s old"),
        # 301 s > api.max_snapshot_age_s 300
        (_snapshot(301), None, {}, "stale", "Snapshot stale: 301 s old"),
        (_snapshot(100), None, {"TPV_BROKER_API_MAX_SNAPSHOT_AGE_S": "60"}, "stale", "Snapshot stale: 100 s old"),
        (None, None, {}, "none", "No snapshot in Redis"),
        (_snapshot(10), "Redis at redis://127.0.0.1:1/0 failed", {}, "redis_down", "Redis unreachable"),
    ],
)
def test_snapshot_state(snap: Snapshot | None, error: str | None, env: dict[str, str], kind: str,
                        headline: str) -> None:
    status = build_status(None if error else _view(snap), error, NOW, _config(**env))
    assert (status.snapshot.kind, status.snapshot.headline) == (kind, headline)
    if kind in ("stale", "none", "redis_down"):
        assert "degraded" in status.snapshot.detail
    if error:
        assert error in status.snapshot.detail and status.rows == []
    if kind == "none":
        assert status.rows == []


def test_rows_states_capacity_and_order() -> None:
    status = build_status(_view(_snapshot(extra=[STALE_DEST, CONFIG_ONLY])), None, NOW, _config())
    assert [(r.id, r.state) for r in status.rows] == [
        # scored, best first (the probe job fits everywhere but pulsar_be is busier)...
        ("pulsar_de", "scored"), ("pulsar_fr", "scored"), ("pulsar_uk", "scored"), ("pulsar_be", "scored"),
        # ... then no metrics and stale ones by id, then offline
        ("pulsar_cfg", "no_metrics"), ("pulsar_old", "stale"), ("condor_us", "offline"),
    ]
    old = status.rows[5]
    assert (old.cores_free, old.cores_total, old.mem_free_gb, old.mem_total_gb, old.gpus_free, old.gpus_total) == (
        4, 8, 8, 32, 1, 2)
    assert (old.queued, old.running, old.metrics_age_s) == (1, 2, 1000)
    assert old.reason == "metrics 1000 s old (limit 900 s)"
    assert old.sources == {"htcondor_cluster_usage": 1000}
    assert status.rows[0].metrics_age_s == ex.METRICS_AGE_S
    assert [r.score is None for r in status.rows] == [False] * 4 + [True] * 3
    assert status.probe == PROBE_DESCRIPTION
    assert (status.count("scored"), status.count("stale"), status.count("offline")) == (4, 1, 1)


def test_a_stale_snapshot_still_shows_its_figures() -> None:
    status = build_status(_view(_snapshot(age_s=1000)), None, NOW, _config())
    assert status.snapshot.kind == "stale"
    assert [r.state for r in status.rows][:4] == ["scored"] * 4


def test_unlisted_destinations_only_when_config_lists_some() -> None:
    snap = _view(_snapshot(extra=[CONFIG_ONLY]))
    assert build_status(snap, None, NOW, _config()).unmatched == []
    cfg = BrokerConfig.model_validate({"destinations": {"pulsar_cfg": {}}})
    assert build_status(snap, None, NOW, cfg).unmatched == sorted(d["id"] for d in ex.SNAPSHOT)


# -- the scores are the rank API's, charges included -------------------------------------------------------
def test_scores_and_order_are_the_rank_apis(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    store.publish(_snapshot(extra=[STALE_DEST, CONFIG_ONLY]))
    client = create_app(_config(), store=store, clock=lambda: NOW).test_client()
    everyone = {"job": {"tool_id": "tool_with_no_history", "cores": 1},
                "destinations": [{"id": d} for d in sorted(store.read_all().destinations)]}
    # Two placements charged (the API charges the first of each answer, once
    # the answer is read).
    for job_id in ("1", "2"):
        resp = client.post("/api/rank", json={**everyone, "job": {**everyone["job"], "id": job_id}})
        assert resp.status_code == 200 and resp.get_json()["degraded"] is False
    page = PageReader(client.get("/").get_data(as_text=True))
    rows = {r["id"]: r["cells"] for r in page.rows}
    explained = client.post("/api/rank?explain=1", json=everyone).get_json()["explain"]
    assert [r["id"] for r in page.rows] == [e["id"] for e in explained]
    for e in explained:
        cells = rows[e["id"]]
        # The page shows one decimal, explain two.
        assert (cells[4] == "–") if "score" not in e else abs(float(cells[4]) - e["score"]) <= 0.05 + 1e-9, e["id"]
        assert cells[13] == e["reason"]
    in_flight = {d: int(c[7]) for d, c in rows.items()}
    assert sum(in_flight.values()) == 2
    for dest, n in in_flight.items():
        assert (f"({n} placed here since its figures)" in rows[dest][13]) == (n > 0), dest
        # The charge script counted them: the last hour's chart shows them in its last bar.
        if n:
            bars = [a for t, a in _row_tags(page, dest) if t == "rect" and a.get("class") == "bar"]
            assert [(b["x"], b["data-count"]) for b in bars] == [("89", str(n))]
            assert rows[dest][8].endswith(f"{n} placed")
        else:
            assert rows[dest][8] == "–"


# -- the page (app factory) ---------------------------------------------------------------------------------
def _page(store: SnapshotStore, now: float = NOW, config: BrokerConfig | None = None) -> tuple[Any, PageReader]:
    resp = create_app(config or _config(), store=store, clock=lambda: now).test_client().get("/")
    return resp, PageReader(resp.get_data(as_text=True))


def test_page_escapes_ids_from_the_metrics(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    store.publish(_snapshot(extra=[STALE_DEST.model_copy(update={"id": EVIL_ID})]))
    resp, page = _page(store)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP
    assert "<img" not in html and "<b>" not in html
    assert EVIL_ID in [r["id"] for r in page.rows]
    assert [r["cells"][1] for r in page.rows if r["id"] == EVIL_ID] == [EVIL_ID]


@pytest.mark.parametrize("situation", ["redis_down", "no_snapshot", "stale"])
def test_page_renders_whatever_redis_holds(redis_client: redis.Redis, situation: str) -> None:
    store = SnapshotStore(redis_client, KEYS)
    expected = {"redis_down": "Redis unreachable", "no_snapshot": "No snapshot in Redis",
                "stale": "Snapshot stale: 400 s old"}[situation]
    if situation == "redis_down":
        store = SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)
    elif situation == "stale":
        store.publish(_snapshot(age_s=400))
    resp, page = _page(store)
    assert resp.status_code == 200
    assert page.attrs_by_id["snapshot"]["data-kind"] == situation.replace("no_snapshot", "none")
    assert page.text("snapshot-headline") == expected
    assert "TPV's own order" in page.text("snapshot-detail")
    assert bool(page.rows) == (situation == "stale")
    assert "Traceback" not in resp.get_data(as_text=True)


def test_page_assets_are_served_locally(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    client = create_app(_config(), store=store, clock=lambda: NOW).test_client()
    page = PageReader(client.get("/").get_data(as_text=True))
    assets = [a.get("src") or a.get("href") for t, a in page.tags if t in ("script", "link")]
    assert len(assets) == 2
    for ref in assets:
        assert ref.startswith("/status/static/")
        with client.get(ref) as asset:
            assert asset.status_code == 200 and asset.data


# -- the last hour's chart ------------------------------------------------------------------------------
# NOW is 10:13:20 into its hour (22:13:20 UTC): the current bucket began at
# NOW - 200, the chart's first one 11 buckets (55 min) before that.
CURRENT = NOW - 200
FIRST = CURRENT - 11 * 300
# pulsar_de: 4 jobs in the first bucket, 8 in the sixth, 2 in the current
# one; 99 before the chart (dropped). One error report 10 min ago of 24
# errors in the hour before it (2 per 5 min), one before the chart's hour.
PLACED = [(FIRST - 300, 99.0), (FIRST, 4.0), (FIRST + 5 * 300, 8.0), (CURRENT, 2.0)]
REPORTS = [(NOW - 3700, 50.0), (NOW - 600, 24.0)]


def _with_reports(d: DestinationFigures, reports: list[tuple[float, float]]) -> DestinationFigures:
    return d.model_copy(update={"health": DestinationHealth(state="healthy", since=NOW - 7200, reports=reports)})


def test_placement_chart_buckets_and_error_reports() -> None:
    chart = PlacementChart.build(PLACED, REPORTS, NOW)
    assert chart is not None
    assert chart.start == FIRST and chart.counts == (4, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 2)
    assert chart.reports == ((NOW - 600, 24),)
    # The largest bucket (8) tops the chart; the report's 24 errors over an
    # hour are 2 per 5 min, below it.
    assert chart.top == 8
    # A bar per bucket that holds placements (an empty one draws nothing),
    # 8 px a bucket, as high as its count over the top.
    bars = chart.bars
    assert [(b.start, b.count) for b in bars] == [(FIRST, 4), (FIRST + 1500, 8), (CURRENT, 2)]
    assert [b.height for b in bars] == [CHART_HEIGHT * n / 8 for n in (4, 8, 2)] == [12, 24, 6]
    assert [b.y + b.height for b in bars] == [CHART_HEIGHT] * 3  # standing on the baseline
    assert [b.x for b in bars] == [1 + 8 * i for i in (0, 5, 11)] and {b.width for b in bars} == {6}
    assert [b.title for b in bars] == ["21:15–21:20 UTC: 4 placed", "21:40–21:45 UTC: 8 placed",
                                       "22:10–now UTC: 2 placed"]
    (mark,) = chart.errors
    # From the chart's start (its hour began before it) to 10 min ago:
    # (NOW - 600 - FIRST) / 3600 of the width; at 2 / 8 of the height.
    assert mark.x_from == 0 and mark.x == round(2900 / 3600 * CHART_WIDTH, 2) == 77.33
    assert mark.y == CHART_HEIGHT - CHART_HEIGHT * 2 / 8 == 18
    assert mark.title == "24 failed in the hour to 22:03 UTC (2 per 5 min)"
    assert (chart.placed, chart.failed) == (14, 24)
    assert chart.label == "last hour: 14 placed, 24 failed"


@pytest.mark.parametrize(
    ("placed", "reports", "top", "label"),
    [
        # A black hole: 10 placed every 5 minutes, 120 failed in the hour
        # (10 per 5 min): the red line stands as high as the bars.
        ([(FIRST + 300 * i, 10.0) for i in range(12)], [(NOW - 60, 120.0)], 10,
         "last hour: 120 placed, 120 failed"),
        # Excluded, nothing placed, still failing jobs placed by other means:
        # the errors alone make the chart, their rate tops it.
        ([], [(NOW - 60, 36.0)], 3, "last hour: 0 placed, 36 failed"),
        ([(CURRENT, 3.0)], [], 3, "last hour: 3 placed, no errors reported"),
    ],
)
def test_placement_chart_scale(placed: list[tuple[float, float]], reports: list[tuple[float, float]],
                               top: float, label: str) -> None:
    chart = PlacementChart.build(placed, reports, NOW)
    assert chart is not None and (chart.top, chart.label) == (top, label)
    # Where errors are reported here, their rate reaches the top.
    assert [e.y for e in chart.errors] == [0.0] * len(reports)


def test_placement_chart_draws_the_jobs_that_came_back() -> None:
    # A black hole caught by its returns: 8 placed in the sixth bucket and 6 of them back, 3 back in the
    # current bucket (placed in the one before: no placement bar there, a red one only); no report yet.
    returns = [(FIRST - 300, 50.0), (FIRST + 5 * 300, 6.0), (CURRENT, 3.0)]
    chart = PlacementChart.build(PLACED, [], NOW, returns)
    assert chart is not None and chart.returned == (0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 3)
    assert chart.top == 8 and chart.came_back == 9
    bars = {b.start: b for b in chart.bars}
    six = bars[FIRST + 5 * 300]
    # red from the baseline, 6 / 8 of the height, inside the blue bar of 8
    assert (six.returned, six.returned_height, six.returned_y) == (6, 18, 6)
    assert six.title == "21:40–21:45 UTC: 8 placed, 6 came back"
    current = bars[CURRENT]
    assert (current.count, current.height, current.returned, current.returned_height) == (2, 6, 3, 9)
    assert bars[FIRST].returned == 0 and bars[FIRST].returned_height == 0
    assert chart.label == "last hour: 14 placed, 9 came back, no errors reported"
    # returns alone make a chart
    alone = PlacementChart.build([], [], NOW, [(CURRENT, 2.0)])
    assert alone is not None and [(b.count, b.returned) for b in alone.bars] == [(0, 2)]


def test_a_bucket_of_one_among_hundreds_stays_visible() -> None:
    chart = PlacementChart.build([(FIRST, 1.0), (CURRENT, 500.0)], [], NOW)
    assert chart is not None and [b.height for b in chart.bars] == [1, CHART_HEIGHT]


def test_nothing_in_the_last_hour_is_no_chart() -> None:
    assert PlacementChart.build([], [], NOW) is None
    assert PlacementChart.build([(FIRST - 300, 5.0)], [(FIRST - 1, 3.0)], NOW) is None


def test_rows_carry_their_charts() -> None:
    view = _view(_snapshot(extra=[_with_reports(STALE_DEST, REPORTS)]))
    placements = {"pulsar_de": PLACED, "nowhere": [(CURRENT, 5.0)]}
    charts = {r.id: r.chart for r in build_status(view, None, NOW, _config(), placements=placements).rows}
    assert charts["pulsar_de"] == PlacementChart.build(PLACED, [], NOW)
    assert charts["pulsar_old"] == PlacementChart.build([], REPORTS, NOW)
    assert [d for d, c in charts.items() if c is None] == ["pulsar_fr", "pulsar_uk", "pulsar_be", "condor_us"]
    # Not read, or failed: no charts at all.
    failed = build_status(view, None, NOW, _config(), placements=None, placements_error="Redis failed")
    assert [r.chart for r in failed.rows] == [None] * len(failed.rows) and failed.charts_problem == "Redis failed"


def _count_placements(client: redis.Redis, dest: str, placed: list[tuple[float, float]]) -> None:
    """As the charge script counts them."""
    for at, n in placed:
        client.hincrbyfloat(KEYS.health_placements, placement_field(at, "default", dest), n)


def _chart(page: PageReader, dest: str) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
    """The row's svg, its bars and its error marks."""
    tags = _row_tags(page, dest)
    (svg,) = [a for t, a in tags if t == "svg"]
    return (svg, [a for t, a in tags if t == "rect" and a.get("class") == "bar"],
            [a for t, a in tags if t == "g" and a.get("class") == "errors"])


def test_page_shows_the_last_hour_per_destination(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    snap = _snapshot()
    snap.destinations["pulsar_de"] = _with_reports(snap.destinations["pulsar_de"], REPORTS)
    store.publish(snap)
    _count_placements(redis_client, "pulsar_de", PLACED)
    resp, page = _page(store)
    assert resp.status_code == 200
    svg, bars, errors = _chart(page, "pulsar_de")
    assert svg["aria-label"] == "last hour: 14 placed, 24 failed" and svg["role"] == "img"
    # Three buckets hold placements: three bars, in their slots, as high as their counts over 8.
    assert [(b["x"], b["data-count"]) for b in bars] == [("1", "4"), ("41", "8"), ("89", "2")]
    assert [float(b["height"]) for b in bars] == [CHART_HEIGHT * n / 8 for n in (4, 8, 2)]
    assert [float(b["y"]) + float(b["height"]) for b in bars] == [CHART_HEIGHT] * 3
    assert [e["data-errors"] for e in errors] == ["24"]
    cells = {r["id"]: r["cells"] for r in page.rows}
    # The tooltips (<title>s: the chart's, each bar's, the report's), then the totals as text.
    text = cells["pulsar_de"][8]
    for title in ("last hour: 14 placed, 24 failed", "21:15–21:20 UTC: 4 placed", "21:40–21:45 UTC: 8 placed",
                  "22:10–now UTC: 2 placed", "24 failed in the hour to 22:03 UTC (2 per 5 min)"):
        assert title in text
    assert text.endswith("14 placed, 24 failed")
    # Nothing placed there, no error reported: a dash.
    assert cells["pulsar_fr"][8] == "–"
    assert [a for t, a in _row_tags(page, "pulsar_fr") if t == "svg"] == []
    # The page's CSP allows no inline style or script: the chart has none.
    assert not [t for t, a in page.tags if t == "style" or "style" in a or (t == "script" and "src" not in a)]
    assert not [a for _, a in page.tags if any(k.startswith("on") for k in a)]


def test_page_shows_the_jobs_that_came_back(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    store.publish(_snapshot())
    _count_placements(redis_client, "pulsar_de", PLACED)
    redis_client.hincrbyfloat(KEYS.health_returns, placement_field(FIRST + 5 * 300, "default", "pulsar_de"), 6)
    _, page = _page(store)
    svg, _, _ = _chart(page, "pulsar_de")
    assert svg["aria-label"] == "last hour: 14 placed, 6 came back, no errors reported"
    (back,) = [a for t, a in _row_tags(page, "pulsar_de") if t == "rect" and a.get("class") == "returned"]
    # in the sixth bucket's slot, from the baseline, 6 / 8 of the height
    assert (back["x"], back["data-returned"], float(back["height"]), float(back["y"])) == ("41", "6", 18, 6)
    text = {r["id"]: r["cells"] for r in page.rows}["pulsar_de"][8]
    assert "21:40–21:45 UTC: 8 placed, 6 came back" in text and text.endswith("14 placed, 6 came back")


def test_page_without_its_placements_still_renders(redis_client: redis.Redis) -> None:
    """Reading the placements fails (here: their key holds a string): the
    page is the same, without charts."""
    store = SnapshotStore(redis_client, KEYS)
    snap = _snapshot()
    snap.destinations["pulsar_de"] = _with_reports(snap.destinations["pulsar_de"], REPORTS)
    store.publish(snap)
    redis_client.set(KEYS.health_placements, b"not a hash")
    resp, page = _page(store)
    assert resp.status_code == 200
    assert page.attrs_by_id["snapshot"]["data-kind"] == "fresh" and len(page.rows) == len(ex.SNAPSHOT)
    assert [r["cells"][8] for r in page.rows] == ["–"] * len(ex.SNAPSHOT)
    assert not [t for t, _ in page.tags if t == "svg"]
    (title,) = {a["title"] for t, a in page.tags if t == "td" and a.get("class") == "chart none"}
    assert "reading placements" in title and "WRONGTYPE" in title


TENANT_EU, TENANT_FR, OPERATORS = "eu-token-0123456789abcdef", "fr-token-0123456789abcdef", "op-token-0123456789abcdef"


def test_another_tenants_private_endpoint_gets_no_chart(redis_client: redis.Redis) -> None:
    config = BrokerConfig.model_validate({"api": {
        "auth_tokens": [OPERATORS], "auth_protected": ["/api/rank", "/process_data", "/"],
        "tenants": {"usegalaxy-eu": {"auth_tokens": [TENANT_EU], "private": ["eu_cluster"]},
                    "usegalaxy-fr": {"auth_tokens": [TENANT_FR]}}}})
    store = SnapshotStore(redis_client, KEYS)
    eu = DestinationFigures(id="eu_cluster", status="online", cpus_free=8, cpus_total=8, live_at=NOW,
                            sources={"queue_by_destination": NOW})
    store.publish(_snapshot(extra=[_with_reports(eu, [(NOW - 60, 4321.0)])]))
    _count_placements(redis_client, "eu_cluster", [(CURRENT, 7777.0)])
    _count_placements(redis_client, "pulsar_de", [(CURRENT, 3.0)])
    client = create_app(config, store=store, clock=lambda: NOW).test_client()
    pages = {token: client.get("/", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
             for token in (TENANT_EU, TENANT_FR, OPERATORS)}
    for token, html in pages.items():
        page = PageReader(html)
        sees = token != TENANT_FR
        assert ("eu_cluster" in html, "7777" in html, "4321" in html) == (sees, sees, sees), token
        assert _chart(page, "pulsar_de")[0]["aria-label"] == "last hour: 3 placed, no errors reported"
        if sees:
            assert _chart(page, "eu_cluster")[0]["aria-label"] == "last hour: 7777 placed, 4321 failed"


# -- in headless Chromium, from a running API on a real redis-server --------------------------------------------
def test_chromium_shows_destinations_states_and_snapshot_age(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = SnapshotStore(redis_client, KEYS)
    store.publish(_snapshot(extra=[STALE_DEST.model_copy(update={"id": EVIL_ID}), CONFIG_ONLY]))
    with serving(create_app(_config(), store=store, clock=lambda: NOW)) as url:
        dom = dump_dom(f"{url}/", tmp_path / "profile")
    page = PageReader(dom)
    assert page.attrs_by_id["snapshot"]["data-kind"] == "fresh"
    assert page.text("snapshot-headline") == "Snapshot 10.0 s old"
    assert page.text("snapshot-age") == "10.0 s"
    assert page.text("collector-host") == "galaxy01"
    assert [(r["id"], r["state"]) for r in page.rows] == [
        ("pulsar_de", "scored"), ("pulsar_fr", "scored"), ("pulsar_uk", "scored"), ("pulsar_be", "scored"),
        (EVIL_ID, "stale"), ("pulsar_cfg", "no_metrics"), ("condor_us", "offline")]
    cells = {r["id"]: r["cells"] for r in page.rows}
    assert cells["pulsar_de"][2:5] == ["scored", "online", "80.3"]
    assert cells["pulsar_de"][5:7] == ["5", "5"]  # queued, running
    assert cells["pulsar_de"][9:11] == ["24 / –", "46.9 / –"]  # free / total cores, mem
    assert cells["condor_us"][2] == "offline"
    assert cells[EVIL_ID][1] == EVIL_ID and cells[EVIL_ID][12] == "17 min"
    # The id stayed text: Chromium built no element from it and ran nothing.
    assert not [t for t, _ in page.tags if t in ("img", "b")]
    assert "<title>TPV Broker status</title>" in dom  # the onerror would have set it


def test_chromium_draws_the_chart_within_the_csp(redis_client: redis.Redis, tmp_path: Path) -> None:
    """The chart is in the DOM Chromium built, and Chromium's console
    reports no Content-Security-Policy violation (an inline style or script
    would be one; SVG's geometry attributes are not)."""
    store = SnapshotStore(redis_client, KEYS)
    snap = _snapshot()
    snap.destinations["pulsar_de"] = _with_reports(snap.destinations["pulsar_de"], REPORTS)
    store.publish(snap)
    _count_placements(redis_client, "pulsar_de", PLACED)
    with serving(create_app(_config(), store=store, clock=lambda: NOW)) as url:
        proc = subprocess.run([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                               "--enable-logging=stderr", "--v=0", "--dump-dom", f"{url}/"],
                              capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = PageReader(proc.stdout)
    svg, bars, errors = _chart(page, "pulsar_de")
    assert svg["aria-label"] == "last hour: 14 placed, 24 failed"
    assert len(bars) == 3 and len(errors) == 1
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Content Security Policy" in line], console


def test_chromium_page_refreshes_itself(redis_client: redis.Redis, tmp_path: Path) -> None:
    """The page's script reloads the content every collector interval (here
    5 s): the first render sees a fresh snapshot, the reloads a stale one."""
    store = SnapshotStore(redis_client, KEYS)
    store.publish(_snapshot())
    times = itertools.chain([NOW], itertools.repeat(NOW + 400))
    app = create_app(_config(TPV_BROKER_COLLECTOR_INTERVAL_S="5"), store=store, clock=lambda: next(times))
    with serving(app) as url:
        dom = dump_dom(f"{url}/", tmp_path / "profile", virtual_time_ms=12_000)
    page = PageReader(dom)
    assert page.attrs_by_id["snapshot"]["data-kind"] == "stale"
    assert page.text("snapshot-headline") == "Snapshot stale: 410 s old"
    assert page.text("refresh-state").startswith("updated ")
    assert len(page.rows) == len(ex.SNAPSHOT)


def test_chromium_page_without_redis(tmp_path: Path) -> None:
    store = SnapshotStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2), KEYS)
    with serving(create_app(_config(), store=store, clock=lambda: NOW)) as url:
        page = PageReader(dump_dom(f"{url}/", tmp_path / "profile"))
    assert page.attrs_by_id["snapshot"]["data-kind"] == "redis_down"
    assert page.text("snapshot-headline") == "Redis unreachable"
    assert page.rows == []


def test_web_files_are_package_data() -> None:
    """Every template and static file is in the wheel (pyproject's package-data)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tpv_broker.api"]
    api_dir = root / "tpv_broker" / "api"
    files = [p.relative_to(api_dir).as_posix() for p in (api_dir / "web").rglob("*") if p.is_file()]
    assert {"web/templates/status.html", "web/templates/docs.html", "web/static/status.js"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
