"""Each metric source's state (an InfluxDB of several, config ``sources``)
as the API shows it, on a real redis-server: ``/ready``, the explained
rank answer and the status page name a lagging source with its age, and a
Galaxy sees the shared sources and its own, never another Galaxy's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.api.responses import RankResponse, ReadyResponse
from tpv_broker.config.settings import load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, SourceStatus
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

NOW = 1_700_000_000.0
PREFIX = "sources"
EU, FR, OWN = "eu-token-0123456789abcdef", "fr-token-0123456789abcdef", "own-token-0123456789abcdef"
# Words only the problem of fr's own source holds: none of them may reach eu.
FR_SECRET_PROBLEM = "influxdb-fr.internal refused the credentials"

SOURCES = {
    "network": SourceStatus(state="ok", answered_at=NOW),
    "eu": SourceStatus(state="stale", answered_at=NOW - 120, problem="InfluxDB at eu did not answer within 5 s",
                       tenant="usegalaxy-eu"),
    "fr": SourceStatus(state="missing", answered_at=NOW - 4000, problem=FR_SECRET_PROBLEM, tenant="usegalaxy-fr"),
}


def _api(redis_client: redis.Redis, tmp_path: Path, sources: dict[str, SourceStatus],
         protected: str = "[/api/rank, /process_data, /]") -> FlaskClient:
    return _app(redis_client, tmp_path, sources, protected).test_client()


def _app(redis_client: redis.Redis, tmp_path: Path, sources: dict[str, SourceStatus], protected: str,
         clock: Callable[[], float] = lambda: NOW + 1) -> Flask:
    path = tmp_path / "config.yaml"
    path.write_text(f"redis:\n  key_prefix: {PREFIX}\napi:\n  max_snapshot_age_s: 1000000\n"
                    f"  auth_protected: {protected}\n  auth_tokens: [{OWN}]\n  tenants:\n"
                    f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n    usegalaxy-fr: {{auth_tokens: [{FR}]}}\n")
    config = load_config(path, environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    figures = {d: DestinationFigures(id=d, status="online", queued=q, running=2, cpus_total=16, cpus_free=8,
                                     live_at=NOW, sources={"queue_by_destination": NOW})
               for d, q in (("a", 1), ("b", 9))}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW, destinations=2, sources=sources), destinations=figures))
    return create_app(config, store=store, clock=clock)


def _explained(api: FlaskClient, token: str) -> dict[str, Any]:
    resp = api.post("/api/rank?explain=1", headers={"Authorization": f"Bearer {token}"},
                    json={"job": {"tool_id": "bwa", "cores": 1, "mem": 1},
                          "destinations": [{"id": "a"}, {"id": "b"}]})
    assert resp.status_code == 200
    body = resp.get_json()
    RankResponse.model_validate(body)
    return body


def test_the_snapshot_keeps_each_sources_state_readably(redis_client: redis.Redis, tmp_path: Path) -> None:
    _api(redis_client, tmp_path, SOURCES)
    # redis-cli HGET sources:snapshot sources: JSON with named fields.
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    meta = store.read_meta()
    assert meta is not None and meta.sources == SOURCES
    assert meta.lagging_sources().keys() == {"eu", "fr"}


def test_an_explained_answer_names_the_lagging_sources_a_galaxy_may_see(redis_client: redis.Redis,
                                                                         tmp_path: Path) -> None:
    api = _api(redis_client, tmp_path, SOURCES)
    eu = _explained(api, EU)
    # The shared source is fine, fr's is not eu's business.
    assert eu["sources"] == {"eu": {"state": "stale", "age_s": 121.0,
                                    "problem": "InfluxDB at eu did not answer within 5 s"}}
    fr = _explained(api, FR)
    assert fr["sources"] == {"fr": {"state": "missing", "age_s": 4001.0, "problem": FR_SECRET_PROBLEM}}
    # The operators see both.
    assert _explained(api, OWN)["sources"].keys() == {"eu", "fr"}
    # The order itself does not depend on who asks.
    assert eu["destinations"] == fr["destinations"] == ["a", "b"]


def test_without_explain_or_with_every_source_fine_the_answer_is_as_before(redis_client: redis.Redis,
                                                                           tmp_path: Path) -> None:
    api = _api(redis_client, tmp_path, SOURCES)
    plain = api.post("/api/rank", headers={"Authorization": f"Bearer {EU}"},
                     json={"job": {"tool_id": "bwa", "cores": 1, "mem": 1}, "destinations": [{"id": "a"}]})
    assert "sources" not in plain.get_json()
    fine = _api(redis_client, tmp_path, {"network": SourceStatus(state="ok", answered_at=NOW)})
    assert "sources" not in _explained(fine, EU)


def test_ready_with_a_valid_token_shows_that_galaxys_view(redis_client: redis.Redis, tmp_path: Path) -> None:
    # /ready stays open, but a token it is given says whose sources to list.
    api = _api(redis_client, tmp_path, SOURCES)

    def ready(token: str) -> set[str]:
        resp = api.get("/ready", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        return set(resp.get_json()["sources"])

    assert ready(EU) == {"network", "eu"}
    assert ready(FR) == {"network", "fr"}
    assert ready(OWN) == {"network", "eu", "fr"}
    # A wrong token on an open route: no refusal, and nobody's view.
    assert ready("wrong-token-0123456789abcdef") == {"network"}


def test_the_tenants_command_shows_every_sources_state_from_a_protected_api(redis_client: redis.Redis,
                                                                           tmp_path: Path) -> None:
    """The operators' command sends the broker's own token: it sees every
    Galaxy's sources on /ready, and /metrics even when that is protected."""
    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from tpv_broker.cli import main
    from tpv_broker.devtools.servers import free_port

    app = _app(redis_client, tmp_path, SOURCES, "[/api/rank, /process_data, /, /metrics]")
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text() + "sources:\n"
                      "  network: {url: 'http://127.0.0.1:1', presets: [htcondor_cluster_usage]}\n"
                      "  eu: {url: 'http://127.0.0.1:1', presets: [queue_by_destination], tenant: usegalaxy-eu}\n"
                      "  fr: {url: 'http://127.0.0.1:1', presets: [queue_by_destination], tenant: usegalaxy-fr}\n")
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        _explained(app.test_client(), EU)
        result = CliRunner().invoke(main, ["--config", str(config), "tenants", "--api", base])
    finally:
        server.shutdown()
        thread.join()
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "network (ok)" in rows["default"]
    assert "eu (stale 121 s)" in rows["usegalaxy-eu"]
    assert "fr (missing 4001 s)" in rows["usegalaxy-fr"]
    # /metrics answered the operators' token: eu's one request is counted.
    assert rows["usegalaxy-eu"].split()[-3:] == ["1", "0", "0"]
    assert OWN not in result.output


@pytest.mark.parametrize("protected", ["[/api/rank, /process_data]", "[/api/rank, /process_data, /]"])
def test_ready_lists_the_shared_sources_to_anyone(redis_client: redis.Redis, tmp_path: Path,
                                                   protected: str) -> None:
    # /ready carries no token (probes): with tenants it shows what every Galaxy shares.
    api = _api(redis_client, tmp_path, SOURCES, protected)
    resp = api.get("/ready")
    assert resp.status_code == 200
    body = resp.get_json()
    ReadyResponse.model_validate(body)
    assert body["ready"] is True
    assert body["sources"] == {"network": {"state": "ok", "age_s": 1.0}}


def test_the_status_page_shows_a_galaxy_its_own_and_the_shared_sources(redis_client: redis.Redis,
                                                                        tmp_path: Path) -> None:
    api = _api(redis_client, tmp_path, SOURCES)
    eu = api.get("/", headers={"Authorization": f"Bearer {EU}"}).get_data(as_text=True)
    assert 'data-source="network" data-state="ok"' in eu
    assert 'class="source stale lagging" data-source="eu" data-state="stale"' in eu
    assert "did not answer within 5 s" in eu
    assert 'data-source="fr"' not in eu and "influxdb-fr" not in eu
    own = api.get("/", headers={"Authorization": f"Bearer {OWN}"}).get_data(as_text=True)
    assert 'data-source="fr" data-state="missing"' in own and FR_SECRET_PROBLEM in own


def test_a_single_source_that_is_fine_adds_no_section(redis_client: redis.Redis, tmp_path: Path) -> None:
    api = _api(redis_client, tmp_path, {"influxdb": SourceStatus(state="ok", answered_at=NOW)},
               "[/api/rank, /process_data]")
    page = api.get("/").get_data(as_text=True)
    assert 'id="sources"' not in page
    lagging = _api(redis_client, tmp_path, {"influxdb": SourceStatus(state="partial", answered_at=NOW,
                                                                     problem="slurm_nodes: boom")},
                   "[/api/rank, /process_data]")
    assert 'data-source="influxdb" data-state="partial"' in lagging.get("/").get_data(as_text=True)


def test_a_stale_mark_with_several_sources_tells_each_galaxy_only_its_own(redis_client: redis.Redis,
                                                                          tmp_path: Path) -> None:
    """Every source failed: the collector marks the live snapshot stale
    with a reason naming no source, and each source's problem in its entry."""
    api = _api(redis_client, tmp_path, SOURCES)
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    failing = {"network": SourceStatus(state="missing", answered_at=NOW - 60, problem="InfluxDB at net is down"),
               "fr": SourceStatus(state="missing", answered_at=NOW - 60, problem=FR_SECRET_PROBLEM,
                                  tenant="usegalaxy-fr")}
    assert store.mark_stale(NOW - 30, 3, "no source could be read; keeping the last snapshot", NOW + 30,
                            sources=failing)
    anonymous = api.get("/ready").get_json()
    assert anonymous["stale"]["reason"] == "no source could be read; keeping the last snapshot"
    assert anonymous["sources"] == {"network": {"state": "missing", "age_s": 61.0}}
    assert "influxdb-fr" not in api.get("/ready", headers={"Authorization": f"Bearer {EU}"}).get_data(as_text=True)
    assert api.get("/ready", headers={"Authorization": f"Bearer {FR}"}).get_json()["sources"].keys() == {
        "network", "fr"}
