"""Several Galaxy servers on one broker (``api.tenants``), through the API on
a real redis-server: the token says which Galaxy asks, job ids are per
Galaxy while every Galaxy's charges count for all, and requests are
counted per tenant. Config that could mix tenants up stops start-up."""

from __future__ import annotations

import concurrent.futures
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient

from tpv_broker.api import auth, create_app
from tpv_broker.config.settings import load_config
from tpv_broker.core.charges import Charge
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import free_port
from tpv_broker.errors import ConfigError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.rate_limit import Limit, RateLimiter
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

from .processes import CLI, clean_env, stop, wait_until_serving
from .test_api_metrics import scrape, value

NOW = 1_700_000_000.0
PREFIX = "tenants"
EU, FR, OWN = "eu-token-0123456789abcdef", "fr-token-0123456789abcdef", "own-token-0123456789abcdef"


def _write(path: Path, *tokens: str) -> Path:
    path.write_text("".join(f"{t}\n" for t in tokens))
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def _config_yaml(tmp_path: Path, tenants: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"redis:\n  key_prefix: {PREFIX}\napi:\n  max_snapshot_age_s: 1000000\n"
                    f"  auth_tokens: [{OWN}]\n  tenants:\n{tenants}")
    return path


@pytest.fixture
def api(redis_client: redis.Redis, tmp_path: Path) -> FlaskClient:
    fr_file = _write(tmp_path / "fr-tokens", FR)
    config = load_config(_config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n"
                                                f"    usegalaxy-fr: {{auth_tokens_file: {fr_file}}}\n"), environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    figures = {d: DestinationFigures(id=d, status="online", queued=0, running=2, cpus_total=16, cpus_free=8,
                                     mem_total_gb=64, mem_free_gb=32, median_queue_s=q, live_at=NOW,
                                     sources={"queue_by_destination": NOW}) for d, q in (("a", 10), ("b", 60))}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW, destinations=2), destinations=figures),
                  charges=store.inflight(config.inflight))
    return create_app(config, store=store, clock=lambda: NOW + 1).test_client()


def _rank(api: FlaskClient, token: str, job_id: int, cores: int = 4) -> tuple[int, list[str]]:
    resp = api.post("/api/rank", headers={"Authorization": f"Bearer {token}"},
                    json={"job": {"tool_id": "bwa", "cores": cores, "mem": 8, "id": job_id},
                          "destinations": [{"id": "a"}, {"id": "b"}]})
    body = resp.get_json()  # the charge is written once the answer is read
    return resp.status_code, body.get("destinations", [])


def _charges(client: redis.Redis) -> list[Charge]:
    return [c for m in client.zrange(f"{PREFIX}:inflight", 0, -1) if (c := Charge.from_member(m)) is not None]


def test_job_ids_are_per_tenant_and_charges_count_for_all(api: FlaskClient, redis_client: redis.Redis) -> None:
    # a has 8 free cores: job 4711 of each Galaxy takes 4 of them
    assert _rank(api, EU, 4711) == (200, ["a", "b"])
    assert _rank(api, FR, 4711) == (200, ["a", "b"])
    assert sorted((c.tenant, c.job_id) for c in _charges(redis_client)) == [
        ("usegalaxy-eu", "4711"), ("usegalaxy-fr", "4711")]
    job_keys = [f"{PREFIX}:inflight:job:{tenant}:4711" for tenant in ("usegalaxy-eu", "usegalaxy-fr")]
    assert redis_client.exists(*job_keys) == 2
    # ranked again, each moves its own charge and does not see it: a's 4 cores left are its own
    assert _rank(api, EU, 4711) == (200, ["a", "b"])
    assert len(_charges(redis_client)) == 2
    # ... but a third Galaxy's job (the broker's own) sees both: a is full, b wins
    assert _rank(api, OWN, 4711) == (200, ["b", "a"])
    assert sorted(c.tenant for c in _charges(redis_client)) == ["default", "usegalaxy-eu", "usegalaxy-fr"]


def test_requests_are_counted_per_tenant(api: FlaskClient) -> None:
    _rank(api, EU, 1)
    _rank(api, EU, 2)
    _rank(api, FR, 3)
    assert _rank(api, "wrong-token-0123456789abcdef", 4)[0] == 401
    s = scrape(api)
    for tenant, n in (("usegalaxy-eu", 2), ("usegalaxy-fr", 1), ("default", 0)):
        assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="ok", tenant=tenant) == n
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="unauthorized",
                 tenant="none") == 1


def test_one_token_for_two_tenants_stops_start_up(tmp_path: Path) -> None:
    fr_file = _write(tmp_path / "fr-tokens", EU)
    config = load_config(_config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n"
                                                f"    usegalaxy-fr: {{auth_tokens_file: {fr_file}}}\n"), environ={})
    with pytest.raises(ConfigError) as info:
        auth.load_tokens(config.api)
    assert str(info.value) == ("api.tenants.usegalaxy-fr: a token of tenant 'usegalaxy-fr' is also one of tenant "
                               "'usegalaxy-eu': a token must say which Galaxy is asking")
    assert EU not in str(info.value)


def test_tenants_need_tokens_on_both_rank_routes(tmp_path: Path) -> None:
    """Else a request without a token would rank as the broker's own
    tenant, which sees every private endpoint."""
    path = _config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}], private: [x]}}\n")
    path.write_text(path.read_text() + "  auth_protected: [/api/rank]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert ("api: with api.tenants, api.auth_protected must hold /process_data: a request's tenant comes from "
            "its token") in str(info.value)


@pytest.mark.parametrize(("tenants", "problem"), [
    ("    default: {auth_tokens: [" + EU + "]}\n", "api.tenants: 'default' is the broker's own tenant"),
    ("    'usegalaxy eu': {auth_tokens: [" + EU + "]}\n", "api.tenants: not a valid tenant id"),
    ("    usegalaxy-eu: {}\n", "api.tenants.usegalaxy-eu: a tenant needs auth_tokens or auth_tokens_file"),
    ("    usegalaxy-eu: {auth_tokens: [short]}\n", "api.tenants.usegalaxy-eu.auth_tokens: token #1 is too short"),
    ("    usegalaxy-eu: {auth_tokens: [" + EU + "], burst: 5}\n", "burst without rate_per_s limits nothing"),
])
def test_tenant_settings_are_checked(tmp_path: Path, tenants: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_config(_config_yaml(tmp_path, tenants), environ={})
    assert problem in str(info.value)
    assert EU not in str(info.value) and "short" not in str(info.value).split("too short")[0]


def test_start_up_names_the_tenants_and_warns_of_a_readable_tokens_file(tmp_path: Path) -> None:
    fr_file = _write(tmp_path / "fr-tokens", FR)
    config = load_config(_config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n"
                                                f"    usegalaxy-fr: {{auth_tokens_file: {fr_file}}}\n"), environ={})
    line = auth.describe(config.api, auth.load_tokens(config.api))
    assert line == (f"API auth on for /api/rank, /process_data: 3 token(s) (1 from api.auth_tokens, "
                    f"1 from api.tenants.usegalaxy-eu.auth_tokens, 1 from {fr_file}); "
                    f"tenants: default, usegalaxy-eu, usegalaxy-fr")
    assert auth.file_warning(config.api) is None
    os.chmod(fr_file, 0o644)
    warning = auth.file_warning(config.api)
    assert warning is not None and warning.startswith(
        f"api.tenants.usegalaxy-fr.auth_tokens_file {fr_file} is readable by every user (mode 644)")


# -- fair use: per-tenant rate limits --------------------------------------------------------------
def test_retry_after_rounds_up_so_a_client_never_comes_back_too_early() -> None:
    from tpv_broker.store.rate_limit import retry_after

    assert [retry_after(w) for w in (0.01, 1.0, 1.2, 2.5)] == ["1", "1", "2", "3"]


def test_a_token_bucket_shared_by_workers(redis_client: redis.Redis) -> None:
    """2 requests a second, 3 at once: two limiters (two workers) on one
    Redis share the bucket; it refills at the rate."""
    limits = {"eu": Limit(2.0, 3)}
    workers = [RateLimiter(redis_client, KeySchema("rl"), limits) for _ in range(2)]
    # the burst: 3 admitted, whichever worker asks; the 4th waits half a second (the interval)
    assert [workers[k % 2].wait_s("eu", NOW) for k in range(3)] == [None, None, None]
    assert workers[1].wait_s("eu", NOW) == pytest.approx(0.5)
    assert workers[0].wait_s("eu", NOW + 0.25) == pytest.approx(0.25)
    # a refused request does not count: half a second later exactly one more goes through
    assert workers[0].wait_s("eu", NOW + 0.5) is None
    assert workers[1].wait_s("eu", NOW + 0.5) == pytest.approx(0.5)
    # idle long enough, the whole burst again; a tenant without a limit is never held
    assert [workers[0].wait_s("eu", NOW + 10) for _ in range(3)] == [None, None, None]
    assert all(workers[0].wait_s("fr", NOW) is None for _ in range(100))
    assert redis_client.exists("rl:ratelimit:fr") == 0
    assert 0 < redis_client.pttl("rl:ratelimit:eu") <= 2500


def test_redis_trouble_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    # The API's own client (its timeouts and retry policy), on a port nobody listens on.
    dead = connect_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2)
    limiter = RateLimiter(dead, KeySchema("rl"), {"eu": Limit(1.0, 1)})
    assert [limiter.wait_s("eu", NOW) for _ in range(3)] == [None, None, None]
    assert sum("rate limits not applied while Redis fails" in r.message for r in caplog.records) == 1


@pytest.fixture
def limited_api(redis_client: redis.Redis, tmp_path: Path) -> FlaskClient:
    config = load_config(_config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}], rate_per_s: 1, burst: 2}}\n"
                                                f"    usegalaxy-fr: {{auth_tokens: [{FR}]}}\n"), environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    figures = {d: DestinationFigures(id=d, status="online", queued=0, running=2, cpus_total=16, cpus_free=8,
                                     mem_free_gb=32, live_at=NOW, sources={"queue_by_destination": NOW})
               for d in ("a", "b")}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW, destinations=2), destinations=figures))
    return create_app(config, store=store, clock=lambda: NOW + 1).test_client()


def test_over_its_limit_a_tenant_gets_429_and_others_do_not(limited_api: FlaskClient,
                                                           redis_client: redis.Redis) -> None:
    assert [_rank(limited_api, EU, k)[0] for k in range(2)] == [200, 200]
    charged = len(_charges(redis_client))
    resp = limited_api.post("/api/rank", headers={"Authorization": f"Bearer {EU}"},
                            json={"job": {"tool_id": "bwa", "id": 99}, "destinations": [{"id": "a"}]})
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.get_json()["errors"] == [{
        "field": "tenant",
        "problem": "usegalaxy-eu is over its rate limit (1 requests/s, burst 2): retry in 1.000 s"}]
    # refused before any work: nothing charged; the legacy endpoint is limited alike
    assert len(_charges(redis_client)) == charged
    legacy = limited_api.post("/process_data", headers={"Authorization": f"Bearer {EU}"},
                              json={"job_info": {"tool_id": "bwa"}, "destinations": [{"id": "a"}]})
    assert legacy.status_code == 429
    # another Galaxy is not held
    assert [_rank(limited_api, FR, k)[0] for k in range(5)] == [200] * 5
    s = scrape(limited_api)
    assert value(s, "tpv_broker_api_requests_total", endpoint="/api/rank", outcome="too_many_requests",
                 tenant="usegalaxy-eu") == 1


def test_under_load_one_galaxy_over_its_limit_does_not_hold_the_others(redis_url: str, redis_client: redis.Redis,
                                                                       tmp_path: Path) -> None:
    """gunicorn, two workers: usegalaxy-eu floods with 6 threads at 20
    requests/s allowed (burst 5), usegalaxy-fr sends its jobs meanwhile.
    fr gets every answer; eu gets 429s past its rate, never a 5xx, and no
    more answers than the bucket allows, across both workers."""
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    now = time.time()
    figures = {d: DestinationFigures(id=d, status="online", queued=0, running=2, cpus_total=16, cpus_free=8,
                                     mem_free_gb=32, live_at=now, sources={"queue_by_destination": now})
               for d in ("a", "b")}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=now, destinations=2), destinations=figures))
    config = tmp_path / "config.yaml"
    config.write_text(f"redis:\n  url: {redis_url}\n  key_prefix: {PREFIX}\napi:\n  tenants:\n"
                      f"    usegalaxy-eu: {{auth_tokens: [{EU}], rate_per_s: 20, burst: 5}}\n"
                      f"    usegalaxy-fr: {{auth_tokens: [{FR}]}}\n")
    port = free_port()
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "--config", str(config), "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "2"], env=clean_env(), stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"

    def post(token: str) -> int:
        body = {"job": {"tool_id": "bwa", "cores": 1}, "destinations": [{"id": "a"}, {"id": "b"}]}
        return requests.post(f"{base}/api/rank", json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=5).status_code

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            flood = [pool.submit(post, EU) for _ in range(300)]
            fr = []
            for _ in range(20):
                fr.append(post(FR))
                time.sleep(0.02)
            eu = [f.result() for f in flood]
        elapsed = time.monotonic() - started
    finally:
        stop(proc)
    assert fr == [200] * 20
    assert set(eu) == {200, 429}
    # the bucket, whichever worker answered: at most the burst plus the rate over the time taken
    assert eu.count(200) <= 5 + 20 * elapsed + 1, (eu.count(200), elapsed)


# -- each Galaxy's own names for the network's endpoints ------------------------------------------
def test_a_tenant_ranks_and_is_answered_in_its_own_names(redis_client: redis.Redis, tmp_path: Path) -> None:
    config = load_config(_config_yaml(
        tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n"
                  f"    usegalaxy-fr: {{auth_tokens: [{FR}], aliases: {{fr_a: a, fr_b: b, fr_gone: nowhere}}}}\n"),
        environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    figures = {d: DestinationFigures(id=d, status="online", queued=0, running=2, cpus_total=16, cpus_free=8,
                                     mem_total_gb=64, mem_free_gb=32, median_queue_s=q, live_at=NOW,
                                     sources={"queue_by_destination": NOW}) for d, q in (("a", 10), ("b", 60))}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW, destinations=2), destinations=figures))
    api = create_app(config, store=store, clock=lambda: NOW + 1).test_client()

    def rank(token: str, ids: list[str], job_id: int, explain: bool = False) -> dict:  # type: ignore[type-arg]
        resp = api.post(f"/api/rank{'?explain=1' if explain else ''}", headers={"Authorization": f"Bearer {token}"},
                        json={"job": {"tool_id": "bwa", "cores": 8, "mem": 8, "id": job_id},
                              "destinations": [{"id": i} for i in ids]})
        assert resp.status_code == 200
        answer: dict = resp.get_json()  # type: ignore[type-arg]
        return answer

    # fr's names for a and b, in its own order: answered in its names, a (shorter queue) first
    first = rank(FR, ["fr_gone", "fr_b", "fr_a"], 1, explain=True)
    assert first["destinations"] == ["fr_a", "fr_b", "fr_gone"]
    assert [e["id"] for e in first["explain"]] == ["fr_a", "fr_b", "fr_gone"]
    assert first["explain"][2]["reason"] == "no metrics for this destination"
    # charged under the network's name, so eu's next job sees a full: b first
    assert [(c.destination, c.tenant) for c in _charges(redis_client)] == [("a", "usegalaxy-fr")]
    assert rank(EU, ["a", "b"], 1)["destinations"] == ["b", "a"]
    # fr's job ranked again does not see its own charge on a
    assert rank(FR, ["fr_b", "fr_a"], 1)["destinations"] == ["fr_a", "fr_b"]
    # an unaliased id means itself: "a" and "fr_b" each carry one charge (fr's job 1, eu's job 1)
    reasons = {e["id"]: e["reason"] for e in rank(FR, ["a", "fr_b"], 2, explain=True)["explain"]}
    assert sorted(reasons) == ["a", "fr_b"]
    assert all(r.endswith("(1 placed here since its figures)") for r in reasons.values()), reasons


def test_an_alias_that_is_no_destination_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config_yaml(tmp_path, f"    usegalaxy-fr: {{auth_tokens: [{FR}], aliases: {{fr_a: 'a b'}}}}\n"),
                    environ={})
    assert "api.tenants.usegalaxy-fr.aliases.fr_a: not a valid destination id" in str(info.value)


# -- private endpoints -----------------------------------------------------------------------------
# Figures no other destination has: if one shows up in an answer, it leaked.
PRIVATE = {"eu_cluster": (7771, 7772, 7773), "fr_box": (8881, 8882, 8883)}


def _private_api(redis_client: redis.Redis, tmp_path: Path, status_protected: bool) -> FlaskClient:
    protected = "  auth_protected: [/api/rank, /process_data, /]\n" if status_protected else ""
    config = load_config(_config_yaml(
        tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}], private: [eu_cluster]}}\n"
                  f"    usegalaxy-fr: {{auth_tokens: [{FR}], private: [fr_box], aliases: {{my_eu: eu_cluster}}}}\n"
                  + protected), environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    figures = {"a": DestinationFigures(id="a", status="online", queued=1, running=2, cpus_total=16, cpus_free=2,
                                       mem_free_gb=32, live_at=NOW, sources={"queue_by_destination": NOW})}
    for d, (total, free, queued) in PRIVATE.items():
        figures[d] = DestinationFigures(id=d, status="online", queued=queued, running=5, cpus_total=total,
                                        cpus_free=free, mem_free_gb=9999, live_at=NOW,
                                        sources={"queue_by_destination": NOW})
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW, destinations=3), destinations=figures))
    return create_app(config, store=store, clock=lambda: NOW + 1).test_client()


def _leaks(text: str, endpoint: str) -> bool:
    # As a number of its own: 7771 inside 0.0077713 (a latency sum) is no leak.
    return any(re.search(rf"(?<![\d.]){v}(?:\.0+)?(?![\d.])", text) for v in PRIVATE[endpoint])


def test_no_tenant_sees_another_tenants_private_endpoint(redis_client: redis.Redis, tmp_path: Path) -> None:
    api = _private_api(redis_client, tmp_path, status_protected=True)
    ids = ["a", "eu_cluster", "fr_box", "my_eu", "nowhere"]
    for token, tenant, own in ((EU, "usegalaxy-eu", "eu_cluster"), (FR, "usegalaxy-fr", "fr_box"),
                               (OWN, "default", None)):
        headers = {"Authorization": f"Bearer {token}"}
        for job_id, dest in enumerate(ids):
            resp = api.post("/api/rank?explain=1", headers=headers,
                            json={"job": {"tool_id": "bwa", "cores": 1, "id": job_id},
                                  "destinations": [{"id": d} for d in dict.fromkeys([dest, "a"])]})
            assert resp.status_code == 200
            text = resp.get_data(as_text=True)
            explained = {e["id"]: e for e in resp.get_json()["explain"]}
            for endpoint in PRIVATE:
                # the operators (default) see everything; a tenant its own only
                seen = tenant == "default" or endpoint == own
                if not seen:
                    assert not _leaks(text, endpoint), (tenant, dest, text)
            if dest in PRIVATE and tenant != "default" and dest != own:
                assert explained[dest]["reason"] == "no metrics for this destination"
                assert "score" not in explained[dest] and explained[dest]["group"] == "no_metrics"
        page = api.get("/", headers=headers).get_data(as_text=True)
        for endpoint in PRIVATE:
            visible = tenant == "default" or endpoint == own
            assert (endpoint in page) is visible, (tenant, endpoint)
            assert _leaks(page, endpoint) is visible, (tenant, endpoint)
    # fr's alias to eu's private endpoint does not open it
    fr = api.post("/api/rank?explain=1", headers={"Authorization": f"Bearer {FR}"},
                  json={"job": {"tool_id": "bwa"}, "destinations": [{"id": "my_eu"}, {"id": "a"}]}).get_json()
    assert fr["destinations"] == ["a", "my_eu"]
    # /metrics carries no destination's figures at all
    metrics = api.get("/metrics").get_data(as_text=True)
    assert not any(_leaks(metrics, e) or e in metrics for e in PRIVATE)
    # nothing was charged to a private endpoint by another tenant
    for c in _charges(redis_client):
        assert c.destination not in PRIVATE or (PRIVATE and (c.tenant, c.destination) in {
            ("usegalaxy-eu", "eu_cluster"), ("usegalaxy-fr", "fr_box"), ("default", "eu_cluster"),
            ("default", "fr_box")}), c


def test_a_status_page_without_a_token_shows_shared_endpoints_only(redis_client: redis.Redis,
                                                                  tmp_path: Path) -> None:
    page = _private_api(redis_client, tmp_path, status_protected=False).get("/").get_data(as_text=True)
    assert ">a<" in page or "a</" in page
    assert not any(e in page or _leaks(page, e) for e in PRIVATE)


def test_an_endpoint_has_one_owner(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config_yaml(tmp_path, f"    usegalaxy-eu: {{auth_tokens: [{EU}], private: [x]}}\n"
                                           f"    usegalaxy-fr: {{auth_tokens: [{FR}], private: [x]}}\n"), environ={})
    assert "'x' is private to both 'usegalaxy-eu' and 'usegalaxy-fr': an endpoint has one owner" in str(info.value)


# -- operations: the tenants command and check-config ----------------------------------------------
def _multi_config(tmp_path: Path, redis_url: str = "redis://127.0.0.1:1/0") -> Path:
    fr_file = _write(tmp_path / "fr-tokens", FR)
    path = tmp_path / "multi.yaml"
    path.write_text(f"redis:\n  url: {redis_url}\n  key_prefix: {PREFIX}\ndestinations:\n  a: {{}}\n"
                    f"api:\n  auth_tokens: [{OWN}]\n  tenants:\n"
                    f"    usegalaxy-eu: {{auth_tokens: [{EU}], rate_per_s: 5, private: [a]}}\n"
                    f"    usegalaxy-fr: {{auth_tokens_file: {fr_file}, aliases: {{fr_a: a, fr_x: nowhere}}}}\n")
    return path


def test_the_tenants_command_lists_them_and_their_requests(redis_client: redis.Redis, redis_url: str,
                                                           tmp_path: Path) -> None:
    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from tpv_broker.cli import main

    config_path = _multi_config(tmp_path, redis_url)
    config = load_config(config_path, environ={})
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    store.publish(Snapshot(meta=SnapshotMeta(created_at=time.time(), destinations=1), destinations={
        "a": DestinationFigures(id="a", status="online", cpus_free=8, live_at=time.time(),
                                sources={"queue_by_destination": time.time()})}))
    server = make_server("127.0.0.1", free_port(), create_app(config, store=store), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for token, n in ((EU, 3), (FR, 1)):
            for _ in range(n):
                requests.post(f"{base}/api/rank", headers={"Authorization": f"Bearer {token}"}, timeout=5,
                              json={"job": {"tool_id": "bwa"}, "destinations": [{"id": "a"}]}).raise_for_status()
        result = CliRunner().invoke(main, ["--config", str(config_path), "tenants", "--api", base])
    finally:
        server.shutdown()
        thread.join()
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert sorted(lines) == ["default", "usegalaxy-eu", "usegalaxy-fr"]
    assert lines["usegalaxy-eu"][-3:] == ["3", "0", "0"] and lines["usegalaxy-fr"][-3:] == ["1", "0", "0"]
    assert "5/s," in lines["usegalaxy-eu"] and "a" in lines["usegalaxy-eu"]
    # The one source of a config without sources is shared; this snapshot says nothing of its state.
    assert "influxdb" in lines["default"] and "influxdb" not in lines["usegalaxy-eu"]
    assert EU not in result.output and FR not in result.output and OWN not in result.output


def test_check_config_checks_each_tenant(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tpv_broker.cli import main

    result = CliRunner().invoke(main, ["check-config", "--config", str(_multi_config(tmp_path)), "--no-connect"])
    assert result.exit_code == 0, result.output
    assert "OK   tenant usegalaxy-eu: 0 aliases, 1 private, at most 5 requests/s (burst 5)" in result.output
    assert ("WARN tenant usegalaxy-fr: names endpoints no source reports in config (Redis not read): nowhere"
            in result.output)
    # a tenant's tokens file that cannot be read fails the check, as it would fail start-up
    (tmp_path / "fr-tokens").unlink()
    result = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "multi.yaml"), "--no-connect"])
    assert result.exit_code == 1
    assert "FAIL tenants: api.tenants.usegalaxy-fr.auth_tokens_file: cannot read" in result.output


def test_check_config_says_when_redis_was_read_but_holds_no_snapshot(tmp_path: Path, redis_client: redis.Redis,
                                                                     redis_url: str) -> None:
    from click.testing import CliRunner

    from tpv_broker.cli import main

    result = CliRunner().invoke(main, ["check-config", "--config", str(_multi_config(tmp_path))],
                                env={"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_INFLUXDB_TIMEOUT_S": "1"})
    assert "OK   redis write" in result.output, result.output
    assert ("WARN tenant usegalaxy-fr: names endpoints no source reports in config (no snapshot in Redis yet): "
            "nowhere" in result.output), result.output


def test_the_multi_galaxy_example_is_a_valid_config() -> None:
    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "multi-galaxy.yaml", environ={})
    assert sorted(config.api.tenants) == ["usegalaxy-be", "usegalaxy-eu", "usegalaxy-fr"]
    assert config.api.hidden_from("usegalaxy-fr") == {"eu_cluster"}
    assert config.api.hidden_from("default") == set()


def _sources_config(tmp_path: Path) -> Path:
    """The multi config reading the network's InfluxDB (shared) and
    usegalaxy-eu's own; usegalaxy-fr has none."""
    path = _multi_config(tmp_path)
    path.write_text(path.read_text() + "sources:\n"
                    "  network: {url: 'http://influx.network:8086', presets: [htcondor_cluster_usage]}\n"
                    "  eu: {url: 'http://influx.eu:8086', presets: [queue_by_destination], tenant: usegalaxy-eu}\n")
    return path


def _cells(output: str) -> dict[str, dict[str, str]]:
    """tenant -> column -> cell of the tenants table (cells may hold spaces)."""
    header, *rows = output.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    starts = [header.index(n) for n in names]
    ends = [*starts[1:], None]
    return {row.split()[0]: {n: row[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)}
            for row in rows}


class _ApiStub:
    """An API's /metrics and /ready as the tenants command reads them."""

    METRICS = ("# TYPE tpv_broker_api_requests_total counter\n"
               'tpv_broker_api_requests_total{endpoint="/api/rank",outcome="ok",tenant="usegalaxy-eu"} 3.0\n')

    def __init__(self, ready_status: int, ready_body: str) -> None:
        import http.server

        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = (200, stub.METRICS) if self.path == "/metrics" else (ready_status, ready_body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_tenants_command_lists_each_tenants_sources(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tpv_broker.cli import main

    result = CliRunner().invoke(main, ["--config", str(_sources_config(tmp_path)), "tenants"])
    assert result.exit_code == 0, result.output
    cells = _cells(result.output)
    # Shared sources report the snapshot's own ids: the broker's own tenant's row.
    assert {t: c["sources"] for t, c in cells.items()} == {
        "default": "network", "usegalaxy-eu": "eu", "usegalaxy-fr": "-"}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, '{"ready": true, "sources": {"network": {"state": "ok", "age_s": 2.5}, '
          '"eu": {"state": "stale", "age_s": 120.4}}}',
     {"default": "network (ok)", "usegalaxy-eu": "eu (stale 120 s)"}),
    (503, '{"ready": false, "sources": {"eu": {"state": "missing", "age_s": null}}}',
     {"default": "network", "usegalaxy-eu": "eu (missing)"}),
    # An API that does not say (older, or /ready protected): the names only.
    (200, '{"ready": true}', {"default": "network", "usegalaxy-eu": "eu"}),
    (401, "Unauthorized", {"default": "network", "usegalaxy-eu": "eu"}),
])
def test_with_api_the_tenants_command_shows_each_sources_state(tmp_path: Path, status: int, body: str,
                                                               expected: dict[str, str]) -> None:
    from click.testing import CliRunner

    from tpv_broker.cli import main

    with _ApiStub(status, body) as base:
        result = CliRunner().invoke(main, ["--config", str(_sources_config(tmp_path)), "tenants", "--api", base])
    assert result.exit_code == 0, result.output
    cells = _cells(result.output)
    assert {t: cells[t]["sources"] for t in expected} == expected
    assert cells["usegalaxy-fr"]["sources"] == "-"
    assert cells["usegalaxy-eu"]["requests ok"] == "3"
