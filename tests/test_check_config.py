"""``tpv-broker check-config`` through click's CliRunner, against the real
redis-server and influxd of conftest.py (and, for authentication, a
redis ACL user and an influxd with authentication on)."""

from __future__ import annotations

import os
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import yaml
from click.testing import CliRunner, Result

from tpv_broker.cli import main
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import InfluxServer, RedisServer, free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore
from tpv_broker.wording import counted

from .helpers import load_prototype_data

SECRET = "s3cret-Pa55word"


def run(args: list[str], **env: str) -> Result:
    # Nothing from the developer's shell may change the config under test.
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TPV_BROKER_")}
    return CliRunner().invoke(main, ["check-config", *args], env={**clean, **env})


def lines(result: Result) -> dict[str, list[str]]:
    """check name -> the lines of that check ("OK   redis: ..." -> key "redis")."""
    out: dict[str, list[str]] = {}
    for line in result.output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("OK", "WARN", "FAIL"):
            name = rest.strip().split(":", 1)[0]
            out.setdefault(name, []).append(f"{status} {rest.strip()}")
    return out


def statuses(result: Result) -> list[str]:
    return [line.split()[0] for line in result.output.splitlines() if line.split()[:1] in (["OK"], ["WARN"], ["FAIL"])]


def _clean(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert SECRET not in result.output


@pytest.fixture
def live_env(influx_server: InfluxServer, influx_db: str, redis_url: str, redis_client: redis.Redis) -> dict[str, str]:
    load_prototype_data(influx_server, influx_db)
    return {
        "TPV_BROKER_INFLUXDB_URL": influx_server.url,
        "TPV_BROKER_INFLUXDB_DATABASE": influx_db,
        "TPV_BROKER_REDIS_URL": redis_url,
    }


def _publish(client: redis.Redis, created_at: float) -> None:
    SnapshotStore(client, KeySchema("tpv_broker")).publish(
        Snapshot(meta=SnapshotMeta(created_at=created_at, destinations=0, collector="collector-host"), destinations={}))


# -- all well ---------------------------------------------------------------------
def test_all_checks_pass_against_real_servers(live_env: dict[str, str], redis_client: redis.Redis) -> None:
    _publish(redis_client, time.time())
    result = run([], **live_env)
    _clean(result)
    assert result.exit_code == 0, result.output
    checks = lines(result)
    assert checks["config"] == [
        "OK config: no file (no --config, TPV_BROKER_CONFIG unset): the built-in defaults; overridden from the "
        "environment: TPV_BROKER_INFLUXDB_DATABASE, TPV_BROKER_INFLUXDB_URL, TPV_BROKER_REDIS_URL"]
    influx = checks["influxdb"][0]
    assert influx.startswith("OK influxdb: http://127.0.0.1:") and "(InfluxDB 1." in influx
    assert checks["influxdb auth"] == ["OK influxdb auth: no credentials configured, none required"]
    assert checks["influxdb database"] == [f"OK influxdb database: '{live_env['TPV_BROKER_INFLUXDB_DATABASE']}' exists"]
    data = checks["influxdb data"]
    assert [d.split(":")[1].strip() for d in data] == [
        "queue_by_destination",
        "destination-queue-run-time (preset destination_queue_run_time)",
        "htcondor_cluster_usage",
    ]
    assert all(d.startswith("OK") and "newest point" in d for d in data), data
    assert checks["redis"][0].startswith("OK redis: redis://127.0.0.1:") and "(Redis 7." in checks["redis"][0]
    assert checks["redis write"] == ["OK redis write: can write under 'tpv_broker:'"]
    assert checks["redis snapshot"][0].startswith("OK redis snapshot: 0 s old, 0 destinations, by collector-host")
    assert result.output.splitlines()[-1] == "10 checks passed"
    # The probe key is gone again: check-config leaves nothing behind but the snapshot.
    assert not [k for k in redis_client.keys("*") if b":check:" in k]


def test_config_file_and_option_placement(live_env: dict[str, str], tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "broker.yaml"
    cfg.write_text("collector:\n  presets: [queue_by_destination]\n")
    # Both spellings read the file: after the sub-command and before it.
    for args in (["--config", str(cfg)], ):
        result = run(args, **live_env)
        assert result.exit_code == 0, result.output
        assert f"OK   config: {cfg}: valid" in result.output
        assert len(lines(result)["influxdb data"]) == 1
    result = CliRunner().invoke(main, ["--config", str(cfg), "check-config"],
                                env={**{k: None for k in os.environ if k.startswith("TPV_BROKER_")}, **live_env})
    assert result.exit_code == 0 and len(lines(result)["influxdb data"]) == 1, result.output
    result = run([], TPV_BROKER_CONFIG=str(cfg), **live_env)
    assert result.exit_code == 0 and f"OK   config: {cfg}: valid" in result.output, result.output


def test_stale_snapshot_warns_but_passes(live_env: dict[str, str], redis_client: redis.Redis) -> None:
    _publish(redis_client, time.time() - 1000)
    result = run([], **live_env)
    assert result.exit_code == 0, result.output
    snap = lines(result)["redis snapshot"][0]
    assert snap.startswith("WARN redis snapshot: 1000 s old") and "api.max_snapshot_age_s (300 s)" in snap


def test_no_snapshot_warns(live_env: dict[str, str]) -> None:
    result = run([], **live_env)
    assert result.exit_code == 0
    assert lines(result)["redis snapshot"][0].startswith("WARN redis snapshot: none under 'tpv_broker:' yet")


# -- config only ------------------------------------------------------------------------
def test_no_connect_validates_only(tmp_path: pathlib.Path) -> None:
    closed = free_port()
    result = run(["--no-connect"], TPV_BROKER_REDIS_URL=f"redis://127.0.0.1:{closed}/0",
                 TPV_BROKER_INFLUXDB_URL=f"http://127.0.0.1:{closed}")
    _clean(result)
    assert result.exit_code == 0, result.output
    assert statuses(result) == ["OK"]
    assert result.output.splitlines()[-1] == "1 check passed (connections not tested: --no-connect)"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("collector:\n  interval_s: -5\n", "collector.interval_s: Input should be greater than 0"),
        ("redis:\n  urll: redis://x\n", "redis.urll: Extra inputs are not permitted"),
        ("influxdb:\n  url: ftp://influx\n", "influxdb.url: must start with http:// or https://"),
        ("scoring:\n  terms:\n    queue_wait: {weight: 1}\n", "scoring.terms.queue_wait.scale_s: Field required"),
        ("collector: [\n", "is not valid YAML"),
    ],
)
@pytest.mark.parametrize("connect", [True, False])
def test_bad_config_file_names_the_key(tmp_path: pathlib.Path, text: str, named: str, connect: bool) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    result = run(["--config", str(cfg)] + ([] if connect else ["--no-connect"]))
    _clean(result)
    assert result.exit_code == 1
    assert statuses(result) == ["FAIL"], result.output
    line = lines(result)["config"][0]
    assert line.startswith("FAIL config: ") and named in line and str(cfg) in line, line
    assert result.output.splitlines()[-1].startswith("1 check, 1 failed")


@pytest.mark.parametrize(("text", "named"), [
    ("api:\n  auth_protected: [/nope]\n", "FAIL api: api.auth_protected: '/nope' is not an endpoint of this API"),
    ("api:\n  auth_tokens_file: {tmp}\n", "FAIL api: api.auth_tokens_file: cannot read {tmp}: Is a directory"),
])
def test_what_serve_refuses_at_start_up_fails_the_check(tmp_path: pathlib.Path, text: str, named: str) -> None:
    # A valid config that serve refuses (said "valid" before: only tenants' tokens were read).
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text.format(tmp=tmp_path))
    result = run(["--config", str(cfg), "--no-connect"])
    assert result.exit_code == 1, result.output
    assert named.format(tmp=tmp_path) in result.output
    assert result.output.splitlines()[-1].startswith("2 checks, 1 failed")


def test_variables_nothing_reads_are_named(tmp_path: pathlib.Path) -> None:
    # The docs said every scalar key could be set so: scoring.* and collector.health.* were ignored in silence.
    result = run(["--no-connect"], TPV_BROKER_SCORING_MAX_METRICS_AGE_S="5", TPV_BROKER_INFLIGHT_MAX_AGE_S="7",
                 TPV_BROKER_COLLECTOR_HEALTH_WINDOW_S="60", TPV_BROKER_SOURCES_EU_PASSWORD="x",
                 TPV_BROKER_TOKEN="client-token-0123456789")
    assert result.exit_code == 0, result.output
    assert statuses(result) == ["OK", "WARN"]
    (line,) = lines(result)["environment"]
    assert line.startswith("WARN environment: ignored, no such setting: TPV_BROKER_COLLECTOR_HEALTH_WINDOW_S, "
                           "TPV_BROKER_SCORING_MAX_METRICS_AGE_S, TPV_BROKER_SOURCES_EU_PASSWORD (hint: "), line
    assert "overridden from the environment: TPV_BROKER_INFLIGHT_MAX_AGE_S" in lines(result)["config"][0]


def test_bad_environment_override_names_the_variable(tmp_path: pathlib.Path) -> None:
    result = run(["--no-connect"], TPV_BROKER_API_WORKERS="many")
    assert result.exit_code == 1
    assert "api.workers (from TPV_BROKER_API_WORKERS): Input should be a valid integer" in result.output


def test_missing_config_file(tmp_path: pathlib.Path) -> None:
    result = run(["--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert lines(result)["config"] == [f"FAIL config: config file not found: {tmp_path / 'nope.yaml'}"]


# -- unreachable, wrong names ------------------------------------------------------------
def test_closed_ports_fail_with_redacted_urls() -> None:
    closed = free_port()
    result = run([], TPV_BROKER_INFLUXDB_URL=f"http://reader:{SECRET}@127.0.0.1:{closed}",
                 TPV_BROKER_INFLUXDB_PASSWORD=SECRET,
                 TPV_BROKER_REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{closed}/0")
    _clean(result)
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["influxdb"] == [
        f"FAIL influxdb: http://***@127.0.0.1:{closed} is unreachable: connection refused "
        "(hint: check influxdb.url (TPV_BROKER_INFLUXDB_URL) and that InfluxDB runs there)"]
    assert checks["redis"] == [
        f"FAIL redis: redis://***@127.0.0.1:{closed}/0 is unreachable: connection refused "
        "(hint: check redis.url (TPV_BROKER_REDIS_URL) and that redis-server runs there)"]
    # Nothing is checked behind a connection that failed.
    assert set(checks) == {"config", "influxdb", "redis"}
    assert result.output.splitlines()[-1] == "3 checks, 2 failed"


def test_hung_redis_fails_within_its_timeout(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path / "redis") as hung:
        hung.pause()
        try:
            result = run([], TPV_BROKER_REDIS_URL=hung.url, TPV_BROKER_REDIS_SOCKET_TIMEOUT_S="0.3",
                         TPV_BROKER_INFLUXDB_URL=f"http://127.0.0.1:{free_port()}")
        finally:
            hung.resume()
    assert result.exit_code == 1
    assert lines(result)["redis"][0].startswith(
        f"FAIL redis: {hung.url} did not answer within 0.3 s (redis.socket_timeout_s)")


def test_wrong_database_lists_the_existing_ones(live_env: dict[str, str]) -> None:
    result = run([], **{**live_env, "TPV_BROKER_INFLUXDB_DATABASE": "galaxy_typo"})
    _clean(result)
    assert result.exit_code == 1
    (line,) = lines(result)["influxdb database"]
    assert line.startswith("FAIL influxdb database: database 'galaxy_typo' does not exist on http://127.0.0.1:")
    assert live_env["TPV_BROKER_INFLUXDB_DATABASE"] in line.split("databases there:")[1]
    assert line.endswith("(hint: set influxdb.database (TPV_BROKER_INFLUXDB_DATABASE))")
    assert "influxdb data" not in lines(result)
    # Redis is still checked.
    assert lines(result)["redis write"][0].startswith("OK")


def test_measurements_missing_or_stale(influx_server: InfluxServer, influx_db: str, redis_url: str,
                                       redis_client: redis.Redis) -> None:
    now = int(time.time())
    # Queue counts an hour old (older than lookback_s), run-time statistics
    # of yesterday (within stats_lookback_s), no HTCondor measurement at all.
    influx_server.write_lines(influx_db, [
        f"queue_by_destination,destination_id=pulsar_de,state=queued count=3 {now - 3600}",
        f"destination-queue-run-time,destination_id=pulsar_de,tool_id=bwa count=2,median_queue=5,median_run=60 "
        f"{now - 86400}",
    ])
    result = run([], TPV_BROKER_INFLUXDB_URL=influx_server.url, TPV_BROKER_INFLUXDB_DATABASE=influx_db,
                 TPV_BROKER_REDIS_URL=redis_url)
    _clean(result)
    assert result.exit_code == 1
    queue, runtime, condor = lines(result)["influxdb data"]
    assert queue == ("FAIL influxdb data: queue_by_destination: no point in the last 900 s (collector.lookback_s) "
                     "(hint: has gxadmin's `iquery queue --by destination` (every minute) stopped?)")
    assert runtime.startswith("OK influxdb data: destination-queue-run-time (preset destination_queue_run_time): "
                              "newest point 8640")
    assert condor.startswith(f"FAIL influxdb data: htcondor_cluster_usage: no such measurement in database "
                             f"'{influx_db}' (hint: is pulsar-util's HTCondor exporter")
    assert "Or drop htcondor_cluster_usage from collector.presets" in condor
    assert result.output.splitlines()[-1] == "10 checks, 2 failed"


# -- credentials ------------------------------------------------------------------------------
@pytest.fixture
def acl_user(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis user who may use only keys under tpv_broker:."""
    redis_client.execute_command("ACL", "SETUSER", "broker", "on", f">{SECRET}", "~tpv_broker:*", "+@all")
    try:
        yield "broker"
    finally:
        redis_client.execute_command("ACL", "DELUSER", "broker")


def test_redis_acl_user(redis_server: RedisServer, acl_user: str, tmp_path: pathlib.Path) -> None:
    base = f"127.0.0.1:{redis_server.port}/0"
    closed_influx = {"TPV_BROKER_INFLUXDB_URL": f"http://127.0.0.1:{free_port()}"}
    good = run([], TPV_BROKER_REDIS_URL=f"redis://{acl_user}:{SECRET}@{base}", **closed_influx)
    _clean(good)
    assert lines(good)["redis write"] == ["OK redis write: can write under 'tpv_broker:'"]

    other_prefix = run([], TPV_BROKER_REDIS_URL=f"redis://{acl_user}:{SECRET}@{base}",
                       TPV_BROKER_REDIS_KEY_PREFIX="elsewhere", **closed_influx)
    _clean(other_prefix)
    (line,) = lines(other_prefix)["redis write"]
    assert line.startswith("FAIL redis write: cannot write under 'elsewhere:': ") and "permissions" in line, line
    assert "~elsewhere:*" in line

    wrong = run([], TPV_BROKER_REDIS_URL=f"redis://{acl_user}:wrong-{SECRET}@{base}", **closed_influx)
    _clean(wrong)
    (line,) = lines(wrong)["redis"]
    assert line.startswith(f"FAIL redis: redis://***@{base} refused the credentials: "), line
    assert "redis write" not in lines(wrong)


class _AuthInfluxServer(InfluxServer):
    """influxd with authentication on (the fixtures' one has it off)."""

    def _prepare(self) -> None:
        super()._prepare()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(conf.read_text().replace("auth-enabled = false", "auth-enabled = true"))


@pytest.fixture(scope="module")
def auth_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = _AuthInfluxServer(tmp_path_factory.mktemp("influxd-auth"))
    server.start()
    try:
        # With no user yet, influxd lets the first admin be created unauthenticated.
        for q in (f"CREATE USER admin WITH PASSWORD '{SECRET}' WITH ALL PRIVILEGES",):
            requests.post(f"{server.url}/query", data={"q": q}, timeout=10).raise_for_status()
        for q in ("CREATE DATABASE galaxy", f"CREATE USER reader WITH PASSWORD '{SECRET}'",
                  'GRANT READ ON "galaxy" TO "reader"'):
            requests.post(f"{server.url}/query", data={"q": q}, auth=("admin", SECRET), timeout=10).raise_for_status()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("reader", SECRET, "OK influxdb auth: user 'reader' accepted"),
        ("reader", "wrong", "FAIL influxdb auth: {url} refused user 'reader' (HTTP 401) (hint: check "
                            "influxdb.username / TPV_BROKER_INFLUXDB_PASSWORD, or TPV_BROKER_INFLUXDB_TOKEN)"),
        ("token", "not-the-token", "FAIL influxdb auth: {url} refused the token (HTTP 401) (hint: check "
                                   "influxdb.username / TPV_BROKER_INFLUXDB_PASSWORD, or TPV_BROKER_INFLUXDB_TOKEN)"),
        (None, None, "FAIL influxdb auth: {url} requires credentials (HTTP 401) (hint: set influxdb.username "
                     "and TPV_BROKER_INFLUXDB_PASSWORD (or TPV_BROKER_INFLUXDB_TOKEN))"),
    ],
)
def test_influxdb_credentials(auth_influx: InfluxServer, redis_url: str, user: str | None, password: str | None,
                              expected: str) -> None:
    env = {"TPV_BROKER_INFLUXDB_URL": auth_influx.url, "TPV_BROKER_REDIS_URL": redis_url}
    if user == "token":
        env["TPV_BROKER_INFLUXDB_TOKEN"] = password
    elif user:
        env["TPV_BROKER_INFLUXDB_USERNAME"] = user
        env["TPV_BROKER_INFLUXDB_PASSWORD"] = password
    result = run([], **env)
    _clean(result)
    assert password is None or password not in result.output
    assert lines(result)["influxdb auth"] == [expected.format(url=auth_influx.url)]
    if expected.startswith("OK"):
        # The reader sees its database; the (empty) measurements fail.
        assert lines(result)["influxdb database"] == ["OK influxdb database: 'galaxy' exists"]
        assert all(d.startswith("FAIL") and "no such measurement" in d for d in lines(result)["influxdb data"])


def test_credentials_on_a_server_without_auth_are_not_called_correct(live_env: dict[str, str]) -> None:
    result = run([], TPV_BROKER_INFLUXDB_USERNAME="anyone", TPV_BROKER_INFLUXDB_PASSWORD=SECRET, **live_env)
    _clean(result)
    assert lines(result)["influxdb auth"] == [
        "OK influxdb auth: authentication is off on the server: user 'anyone' not checked"]


def test_help_lists_check_config() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "check-config" in result.output
    result = run(["--help"])
    assert result.exit_code == 0 and "--no-connect" in result.output


def test_an_http_server_that_is_not_influxdb(redis_url: str) -> None:
    import http.server
    import threading

    class NotInflux(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotInflux)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run([], TPV_BROKER_INFLUXDB_URL=url, TPV_BROKER_REDIS_URL=redis_url)
    finally:
        server.shutdown()
        server.server_close()
    _clean(result)
    assert result.exit_code == 1
    assert lines(result)["influxdb"] == [
        f"FAIL influxdb: {url} answered /ping with HTTP 404, not as InfluxDB does (hint: influxdb.url must be "
        "InfluxDB's HTTP API (for 2.x/3.x: its v1-compatible endpoint))"]


def test_redis_user_without_info_still_passes(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    # The services never use INFO, so a user denied it is fine; the version is just unknown.
    redis_client.execute_command("ACL", "SETUSER", "noinfo", "on", f">{SECRET}", "~tpv_broker:*", "+@all", "-info")
    try:
        result = run([], TPV_BROKER_REDIS_URL=f"redis://noinfo:{SECRET}@127.0.0.1:{redis_server.port}/0",
                     TPV_BROKER_INFLUXDB_URL=f"http://127.0.0.1:{free_port()}")
    finally:
        redis_client.execute_command("ACL", "DELUSER", "noinfo")
    _clean(result)
    (line,) = lines(result)["redis"]
    assert line.startswith(
        f"OK redis: redis://***@127.0.0.1:{redis_server.port}/0 answers (Redis unknown, INFO refused: "
    )
    assert lines(result)["redis write"][0].startswith("OK")


# -- InfluxDB 2.x natively (influxdb.api: flux), through the recorded-answer stub --
def _flux_env(url: str, redis_url: str) -> dict[str, str]:
    from .test_collector_flux import ALL, TOKEN

    return {
        "TPV_BROKER_INFLUXDB_URL": url, "TPV_BROKER_INFLUXDB_API": "flux",
        "TPV_BROKER_INFLUXDB_ORG": "galaxy-org", "TPV_BROKER_INFLUXDB_BUCKET": "galaxy",
        "TPV_BROKER_INFLUXDB_TOKEN": TOKEN, "TPV_BROKER_REDIS_URL": redis_url,
        "TPV_BROKER_COLLECTOR_PRESETS": ",".join(ALL),
    }


def test_flux_source_is_checked_with_the_collectors_own_query(redis_url: str, redis_client: redis.Redis) -> None:
    from .flux_stub import FluxStub
    from .test_collector_flux import ANCHOR, DATA, TOKEN

    stub = FluxStub(body=(DATA / "flux_all_presets.csv").read_text(), shift_s=int(time.time()) - ANCHOR)
    url = stub.start()
    try:
        result = run([], **_flux_env(url, redis_url))
        # every preset has rows in the recorded answer: one OK line each
        data = lines(result)["influxdb data"]
        assert len(data) == 6 and all(line.startswith("OK") for line in data), result.output
        assert lines(result)["influxdb"][0].startswith("OK") and "Flux" in lines(result)["influxdb"][0]
        assert len(stub.requests) == 1 and "yield(" in stub.requests[0].body["query"]

        # a refused token fails the check, never printing the token
        stub.status, stub.body = 401, '{"code":"unauthorized","message":"unauthorized access"}'
        stub.content_type = "application/json"
        refused = run([], **_flux_env(url, redis_url))
        assert refused.exit_code == 1
        assert lines(refused)["influxdb"][0].startswith("FAIL") and "refused the token" in refused.output
        assert TOKEN not in refused.output and "Traceback" not in refused.output
    finally:
        stub.stop()


@pytest.mark.parametrize(("n", "text"), [(0, "0 checks"), (1, "1 check"), (2, "2 checks"), (1.0, "1 check"),
                                         (2.5, "2.5 checks"), (1_000_000, "1000000 checks")])
def test_counts_are_printed_in_the_singular_for_one(n: float, text: str) -> None:
    assert counted(n, "check") == text


# -- several InfluxDBs (config sources) --------------------------------------------------------
OWN, EU = "own-token-0123456789abcdef", "eu-token-0123456789abcdef"


@pytest.fixture(scope="module")
def second_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A second influxd: a Galaxy's own InfluxDB beside the network's (the session one)."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd-second")).start()
    try:
        yield server
    finally:
        server.stop()


def _sources_config(tmp_path: pathlib.Path, redis_url: str, network: dict[str, object],
                    eu: dict[str, object]) -> pathlib.Path:
    """The network's shared source and usegalaxy-eu's own, whose tenant
    has an alias to an endpoint nobody reports."""
    config = {
        "redis": {"url": redis_url},
        "api": {"auth_tokens": [OWN], "tenants": {"usegalaxy-eu": {
            "auth_tokens": [EU], "aliases": {"eu_de": "pulsar_de", "eu_x": "nowhere"}}}},
        "sources": {"network": {**network, "presets": ["htcondor_cluster_usage"]},
                    "eu": {**eu, "presets": ["queue_by_destination", "destination_queue_run_time"],
                           "tenant": "usegalaxy-eu"}},
    }
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _publish_pulsar_de(client: redis.Redis) -> None:
    SnapshotStore(client, KeySchema("tpv_broker")).publish(Snapshot(
        meta=SnapshotMeta(created_at=time.time(), destinations=1, collector="collector-host"),
        destinations={"pulsar_de": DestinationFigures(id="pulsar_de", status="online")}))


@pytest.fixture
def network(influx_server: InfluxServer, influx_db: str) -> dict[str, object]:
    load_prototype_data(influx_server, influx_db)
    return {"url": influx_server.url, "database": influx_db}


def test_each_source_is_checked_under_its_own_name(tmp_path: pathlib.Path, network: dict[str, object],
                                                   second_influx: InfluxServer, redis_url: str,
                                                   redis_client: redis.Redis) -> None:
    _publish_pulsar_de(redis_client)
    config = _sources_config(tmp_path, redis_url, network, {"url": second_influx.url, "database": "galaxy_eu"})
    result = run(["--config", str(config)])
    _clean(result)
    assert result.exit_code == 1, result.output
    checks = lines(result)
    assert not [name for name in checks if name.startswith("influxdb")], result.output
    assert checks["source network"][0].startswith(f"OK source network: {network['url']} answers (InfluxDB 1.")
    assert checks["source network auth"] == ["OK source network auth: no credentials configured, none required"]
    assert checks["source network database"] == [f"OK source network database: '{network['database']}' exists"]
    (data,) = checks["source network data"]
    assert data.startswith("OK source network data: htcondor_cluster_usage: newest point "), data
    assert checks["source eu"][0].startswith(f"OK source eu: {second_influx.url} answers (InfluxDB 1.")
    (database,) = checks["source eu database"]
    assert database.startswith(f"FAIL source eu database: database 'galaxy_eu' does not exist on {second_influx.url}")
    assert database.endswith("(hint: set sources.eu.database (TPV_BROKER_SOURCES_EU_DATABASE))")
    assert "source eu data" not in checks  # nothing behind the missing database
    # Redis, then the tenant's alias to an endpoint neither source reports (pulsar_de is in the snapshot).
    assert checks["redis snapshot"][0].startswith("OK redis snapshot:")
    assert checks["tenant usegalaxy-eu"][1] == (
        "WARN tenant usegalaxy-eu: names endpoints no source reports in config or in the snapshot: nowhere "
        "(hint: check its aliases and private lists against `tpv-broker inspect`)")
    assert result.output.splitlines()[-1] == "13 checks, 1 failed"


def test_an_unreachable_source_is_named_with_its_keys_and_variables(
        tmp_path: pathlib.Path, network: dict[str, object], redis_url: str) -> None:
    closed = free_port()
    config = _sources_config(tmp_path, redis_url, network,
                             {"url": f"http://127.0.0.1:{closed}", "username": "reader"})
    result = run(["--config", str(config)], TPV_BROKER_SOURCES_EU_PASSWORD=SECRET)
    _clean(result)
    assert result.exit_code == 1
    checks = lines(result)
    # The variable counts (it is the source's password) and is named, never its value.
    assert checks["config"] == [f"OK config: {config}: valid; overridden from the environment: "
                                "TPV_BROKER_SOURCES_EU_PASSWORD"]
    assert checks["source eu"] == [
        f"FAIL source eu: http://127.0.0.1:{closed} is unreachable: connection refused "
        "(hint: check sources.eu.url (TPV_BROKER_SOURCES_EU_URL) and that InfluxDB runs there)"]
    assert not [name for name in checks if name.startswith("source eu ")]
    # The other source is checked all the same.
    assert checks["source network data"][0].startswith("OK source network data: htcondor_cluster_usage")


def test_a_sources_missing_measurement_names_its_presets(tmp_path: pathlib.Path, network: dict[str, object],
                                                         second_influx: InfluxServer, redis_url: str) -> None:
    db = f"eu_{uuid.uuid4().hex[:8]}"
    second_influx.create_database(db)
    try:
        second_influx.write_lines(db, [f"queue_by_destination,destination_id=eu_de,state=queued count=3 "
                                       f"{int(time.time())}"])
        config = _sources_config(tmp_path, redis_url, network, {"url": second_influx.url, "database": db})
        result = run(["--config", str(config)])
    finally:
        second_influx.query(f'DROP DATABASE "{db}"')
    _clean(result)
    queue, runtime = lines(result)["source eu data"]
    assert queue.startswith("OK source eu data: queue_by_destination: newest point ")
    assert runtime.startswith(f"FAIL source eu data: destination-queue-run-time (preset destination_queue_run_time): "
                              f"no such measurement in database '{db}'")
    assert runtime.endswith("Or drop destination_queue_run_time from sources.eu.presets)")


def test_a_sources_refused_credentials_name_its_variables(tmp_path: pathlib.Path, network: dict[str, object],
                                                          auth_influx: InfluxServer, redis_url: str) -> None:
    config = _sources_config(tmp_path, redis_url, network,
                             {"url": auth_influx.url, "database": "galaxy", "username": "reader"})
    result = run(["--config", str(config)], TPV_BROKER_SOURCES_EU_PASSWORD="wrong")
    _clean(result)
    assert lines(result)["source eu auth"] == [
        f"FAIL source eu auth: {auth_influx.url} refused user 'reader' (HTTP 401) (hint: check "
        "sources.eu.username / TPV_BROKER_SOURCES_EU_PASSWORD, or TPV_BROKER_SOURCES_EU_TOKEN)"]
    good = run(["--config", str(config)], TPV_BROKER_SOURCES_EU_PASSWORD=SECRET)
    _clean(good)
    assert lines(good)["source eu auth"] == ["OK source eu auth: user 'reader' accepted"]


def test_one_request_per_source_for_its_measurements(tmp_path: pathlib.Path, network: dict[str, object],
                                                     second_influx: InfluxServer, redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"eu_{uuid.uuid4().hex[:8]}"
    second_influx.create_database(db)
    queries: list[str] = []
    request = requests.Session.request

    def counting(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if url.endswith("/query"):
            queries.append(url.removesuffix("/query"))
        return request(self, method, url, *args, **kwargs)

    config = _sources_config(tmp_path, redis_url, network, {"url": second_influx.url, "database": db})
    try:
        with monkeypatch.context() as patch:
            patch.setattr(requests.Session, "request", counting)
            result = run(["--config", str(config)])
    finally:
        second_influx.query(f'DROP DATABASE "{db}"')
    assert len(lines(result)["source eu data"]) == 2, result.output
    # SHOW DATABASES, then every preset's probe in one request.
    assert sorted(queries) == sorted([network["url"]] * 2 + [second_influx.url] * 2)


def test_error_counts_with_no_error_in_the_window_are_fine(influx_server: InfluxServer, influx_db: str,
                                                             redis_url: str, redis_client: redis.Redis) -> None:
    """gxadmin's errored-jobs writes no line for a destination without
    errors: an empty window is good news. A measurement never written is
    still a failure (is the cron job there?)."""
    now = int(time.time())
    influx_server.write_lines(influx_db, [
        f"queue_by_destination,destination_id=pulsar_de,state=queued count=3 {now - 10}",
        # Yesterday's errors: outside the 3 h health window.
        f"errored_jobs_by_destination,destination_id=pulsar_de,state=errored count=4 {now - 86400}",
    ])
    env = dict(TPV_BROKER_INFLUXDB_URL=influx_server.url, TPV_BROKER_INFLUXDB_DATABASE=influx_db,
               TPV_BROKER_REDIS_URL=redis_url)
    result = run([], TPV_BROKER_COLLECTOR_PRESETS="queue_by_destination,errored_jobs_by_destination", **env)
    _clean(result)
    queue, errors = lines(result)["influxdb data"]
    assert queue.startswith("OK influxdb data: queue_by_destination: newest point")
    assert errors == ("OK influxdb data: errored_jobs_by_destination: no error reported in the last 10800 s "
                      "(collector.health.window_s)")
    influx_server.query('DROP MEASUREMENT "errored_jobs_by_destination"', db=influx_db)
    never = run([], TPV_BROKER_COLLECTOR_PRESETS="queue_by_destination,errored_jobs_by_destination", **env)
    assert lines(never)["influxdb data"][1].startswith(
        "FAIL influxdb data: errored_jobs_by_destination: no such measurement")
