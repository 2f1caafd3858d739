"""The status page at /: what it shows (pure build_status, table-driven), that
its scores are the rank API's own, that it renders whatever state Redis is
in, that it escapes what the metrics put in ids, and what headless Chromium
shows when it loads the page from a running API on a real redis-server."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import redis

from tpv_broker.api import create_app
from tpv_broker.api import examples as ex
from tpv_broker.api.status_page import PAGE_CSP
from tpv_broker.api.status_view import PROBE_DESCRIPTION, build_status
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.models import DestinationFigures, RankView, Snapshot
from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

from .web_helpers import PageReader, dump_dom, serving

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
        assert cells[12] == e["reason"]
    in_flight = {d: int(c[7]) for d, c in rows.items()}
    assert sum(in_flight.values()) == 2
    for dest, n in in_flight.items():
        assert (f"({n} placed here since its figures)" in rows[dest][12]) == (n > 0), dest


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
    assert cells["pulsar_de"][8:10] == ["24 / –", "46.9 / –"]  # free / total cores, mem
    assert cells["condor_us"][2] == "offline"
    assert cells[EVIL_ID][1] == EVIL_ID and cells[EVIL_ID][11] == "17 min"
    # The id stayed text: Chromium built no element from it and ran nothing.
    assert not [t for t, _ in page.tags if t in ("img", "b")]
    assert "<title>TPV Broker status</title>" in dom  # the onerror would have set it


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
