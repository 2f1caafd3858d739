"""InfluxDB and Redis credentials never show: not in logs, error messages,
answers or ``tpv-broker inspect``. Each test configures secrets (in URLs
and in separate settings), drives a failure path against real servers (a
redis-server with ``requirepass``, an influxd with auth on, closed ports)
and looks for the secrets in everything captured."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import ClassVar

import pytest
import redis
import requests
from click.testing import CliRunner, Result

from tpv_broker.api import create_app
from tpv_broker.cli import main
from tpv_broker.config.settings import load_config
from tpv_broker.config.urls import redact_url, scrub, url_secrets
from tpv_broker.devtools.servers import InfluxServer, RedisServer, ServerError, free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import CLI, clean_env, stop, wait_until_serving
from .test_api import GOOD, snapshot

REDIS_PASSWORD = "redis-Pw-7f3a9c2e51"
INFLUX_USER = "admin"
INFLUX_PASSWORD = "influx-Pw-0b8d4e6a27"
# Wrong ones are secrets too: an admin's typo is usually one character off.
WRONG = "wrong-Pw-c41d9e0f33"
# A password with an unescaped "/" or "#": URL parsers take its first part for a port.
AWKWARD = "Xq7/zz-awkward-Pw-55"
SECRETS = (REDIS_PASSWORD, INFLUX_PASSWORD, WRONG, AWKWARD, "Xq7", "zz-awkward-Pw-55")


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shows in: {text}"


# -- servers that want credentials -----------------------------------------------------------------------
@dataclasses.dataclass
class LockedRedis(RedisServer):
    """redis-server with ``requirepass``."""

    password: str = REDIS_PASSWORD

    def _prepare(self) -> None:
        super()._prepare()
        with open(self.workdir / "redis.conf", "a") as conf:
            conf.write(f"requirepass {self.password}\n")

    def _ready(self) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5,
                             socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def url_with(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"


@dataclasses.dataclass
class LockedInflux(InfluxServer):
    """influxd with HTTP auth on and one admin user."""

    _name: ClassVar[str] = "influxd"

    def _prepare(self) -> None:
        super()._prepare()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(conf.read_text().replace("auth-enabled = false", "auth-enabled = true"))

    def start(self, timeout: float = 30.0) -> LockedInflux:
        super().start(timeout)
        # With no user yet, influxd lets the first admin be created without credentials.
        for q in (f"CREATE USER {INFLUX_USER} WITH PASSWORD '{INFLUX_PASSWORD}' WITH ALL PRIVILEGES",
                  'CREATE DATABASE "galaxy"'):
            resp = requests.post(f"{self.url}/query", data={"q": q}, auth=(INFLUX_USER, INFLUX_PASSWORD), timeout=10)
            if resp.status_code != 200 or "error" in resp.text:
                raise ServerError(f"influxd set-up failed: {resp.text}")
        return self


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedRedis]:
    with LockedRedis(tmp_path_factory.mktemp("locked-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def locked_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedInflux]:
    server = LockedInflux(tmp_path_factory.mktemp("locked-influx"))
    try:
        yield server.start()
    finally:
        server.stop()


def run(args: list[str], env: dict[str, str], caplog: pytest.LogCaptureFixture) -> tuple[Result, str]:
    caplog.set_level(logging.DEBUG)
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TPV_BROKER_")}
    result = CliRunner().invoke(main, args, env={**clean, **env})
    everything = result.output + result.stderr + caplog.text + repr(result.exception or "")
    assert_hidden(everything)
    assert "Traceback" not in result.output
    return result, everything


# -- the servers really want the credentials (else the tests below prove little) ----------------------
def test_the_locked_servers_refuse_without_credentials(locked_redis: LockedRedis, locked_influx: LockedInflux) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"redis://127.0.0.1:{locked_redis.port}/0").ping()
    assert redis.Redis.from_url(locked_redis.url_with(REDIS_PASSWORD)).ping()
    assert requests.post(f"{locked_influx.url}/query", data={"q": "SHOW DATABASES"}, timeout=10).status_code == 401


# -- Redis -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["in-url", "query-parameter"])
def test_inspect_with_a_wrong_redis_password(locked_redis: LockedRedis, how: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    url = locked_redis.url_with(WRONG) if how == "in-url" else f"{locked_redis.url}?password={WRONG}"
    result, out = run(["inspect"], {"TPV_BROKER_REDIS_URL": url}, caplog)
    assert result.exit_code == 1
    assert f"Redis at redis://127.0.0.1:{locked_redis.port}/0 failed while reading the snapshot" in out
    assert "invalid username-password pair" in out
    # Redis answered: the hint is where the credentials go, not where Redis runs.
    assert "put the user and password into redis.url" in out and "running Redis" not in out


@pytest.mark.parametrize("command", [["inspect"], ["collect", "--once"], ["rank", "--tool", "bwa", "pulsar_de"]])
def test_a_refused_redis_password_says_where_the_credentials_go(locked_redis: LockedRedis, command: list[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    for url in (locked_redis.url_with(WRONG), locked_redis.url):  # wrong, and none
        result, out = run(command, {"TPV_BROKER_REDIS_URL": url}, caplog)
        assert result.exit_code == 1, out
        assert "redis://USER:PASSWORD@host:6379/0" in out and "running Redis" not in out, out


# (`rank` answers in TPV's order instead, saying why in its log line.)
@pytest.mark.parametrize("command", [["inspect"], ["collect", "--once"]])
def test_a_redis_user_without_the_keys_is_told_which_keys_it_needs(locked_redis: LockedRedis, command: list[str],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    admin = redis.Redis.from_url(locked_redis.url_with(REDIS_PASSWORD))
    # Allowed in, and to every command, but on other keys only.
    admin.acl_setuser("elsewhere", enabled=True, passwords=[f"+{WRONG}"], keys=["other:*"], commands=["+@all"])
    url = f"redis://elsewhere:{WRONG}@127.0.0.1:{locked_redis.port}/0"
    try:
        result, out = run(command, {"TPV_BROKER_REDIS_URL": url}, caplog)
    finally:
        admin.acl_deluser("elsewhere")
    assert result.exit_code == 1, out
    assert "the Redis user needs read and write on ~tpv_broker:*" in out and "running Redis" not in out, out


def test_inspect_with_the_right_password_shows_no_password(locked_redis: LockedRedis,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    url = locked_redis.url_with(REDIS_PASSWORD)
    client = redis.Redis.from_url(url)
    client.flushall()
    env = {"TPV_BROKER_REDIS_URL": url}
    result, _ = run(["inspect"], env, caplog)
    assert result.exit_code == 1
    assert f"no snapshot in Redis at redis://***@127.0.0.1:{locked_redis.port}/0" in result.output
    SnapshotStore(client, KeySchema("tpv_broker")).publish(snapshot())
    for args in (["inspect"], ["inspect", "--json"], ["rank", "--tool", "bwa", "pulsar_de", "pulsar_uk"]):
        result, _ = run(args, env, caplog)
        assert result.exit_code == 0, result.output
    client.flushall()


@pytest.mark.parametrize(("command", "action"), [
    (["inspect"], "failed while reading the snapshot"),
    # collect takes the collector lease before anything else
    (["collect", "--once"], "the collector lease cannot be checked"),
    (["rank", "--tool", "bwa", "pulsar_de"], "failed while reading the snapshot"),
])
def test_unreachable_redis_with_a_password(command: list[str], action: str, influx_server: InfluxServer,
                                           influx_db: str, caplog: pytest.LogCaptureFixture) -> None:
    load_prototype_data(influx_server, influx_db)  # so that collect gets as far as Redis
    port = free_port()
    env = {"TPV_BROKER_REDIS_URL": f"redis://user:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
           "TPV_BROKER_REDIS_SOCKET_TIMEOUT_S": "0.3", "TPV_BROKER_INFLUXDB_URL": influx_server.url,
           "TPV_BROKER_INFLUXDB_DATABASE": influx_db}
    _, out = run(command, env, caplog)
    if command[0] == "collect":
        assert f"{action}, Redis at redis://127.0.0.1:{port}/0" in out, out
    else:
        assert f"Redis at redis://127.0.0.1:{port}/0 {action}" in out, out


@pytest.mark.parametrize("command", [["inspect"], ["collect", "--once"], ["serve", "--bind", "127.0.0.1:1"]])
def test_an_unparseable_redis_url_is_reported_without_its_password(command: list[str],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    env = {"TPV_BROKER_REDIS_URL": f"redis://:{AWKWARD}@127.0.0.1:6379/0"}
    result, out = run(command, env, caplog)
    assert result.exit_code == 1
    # Refused with the config, before anything runs.
    assert ("redis.url (from TPV_BROKER_REDIS_URL): 'redis://***@127.0.0.1:6379/0': "
            "cannot be parsed (%-encode / # ? @ and % in a password)") in out


@pytest.mark.parametrize(("variable", "value", "shown"), [
    ("TPV_BROKER_REDIS_URL", f"http://:{REDIS_PASSWORD}@h:6379", "got 'http://***@h:6379'"),
    ("TPV_BROKER_INFLUXDB_URL", f"ftp://{INFLUX_USER}:{INFLUX_PASSWORD}@h", "got 'ftp://***@h'"),
    ("TPV_BROKER_INFLUXDB_TIMEOUT_S", INFLUX_PASSWORD, "TPV_BROKER_INFLUXDB_TIMEOUT_S"),
])
def test_config_errors_do_not_echo_secrets(variable: str, value: str, shown: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    result, out = run(["inspect"], {variable: value, "TPV_BROKER_INFLUXDB_PASSWORD": WRONG}, caplog)
    assert result.exit_code == 1 and shown in out


def test_the_api_with_a_wrong_redis_password(locked_redis: LockedRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_config(environ={"TPV_BROKER_REDIS_URL": locked_redis.url_with(WRONG)})
    client = create_app(config).test_client()
    resp = client.post("/api/rank", json=GOOD)
    assert resp.status_code == 200 and resp.get_json()["degraded"] is True
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "invalid username-password pair" in caplog.text  # the admin learns why ...
    assert_hidden(resp.get_data(as_text=True), ready.get_data(as_text=True), caplog.text)  # ... never the password


def test_serve_logs_no_password(locked_redis: LockedRedis, tmp_path: pathlib.Path) -> None:
    """The deployed process (gunicorn workers) with a wrong Redis password."""
    port = free_port()
    env = clean_env()
    env.update(TPV_BROKER_REDIS_URL=locked_redis.url_with(WRONG), TPV_BROKER_INFLUXDB_PASSWORD=INFLUX_PASSWORD,
               TPV_BROKER_API_AUTH_TOKENS=f"api-token-{REDIS_PASSWORD}")
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "--log-level", "DEBUG", "serve", "--bind",
                                 f"127.0.0.1:{port}", "--workers", "1"], env=env, stdout=err, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        answers = [
            requests.post(f"{base}/api/rank", json=GOOD, timeout=5,
                          headers={"Authorization": f"Bearer api-token-{REDIS_PASSWORD}"}),
            requests.post(f"{base}/api/rank", json=GOOD, timeout=5, headers={"Authorization": f"Bearer {WRONG}-x"}),
            requests.get(f"{base}/ready", timeout=5),
        ]
    finally:
        stop(proc)
    log = (tmp_path / "err.log").read_text()
    assert [a.status_code for a in answers] == [200, 401, 503]
    assert answers[0].json()["degraded"] is True
    assert "API auth on for /api/rank, /process_data: 1 token(s)" in log
    assert "answering in TPV order: Redis at" in log and "refused POST /api/rank" in log
    assert_hidden(log, *(a.text + str(a.headers) for a in answers))


# -- InfluxDB ----------------------------------------------------------------------------------------------
def _influx_env(locked_influx: LockedInflux, redis_url: str, **extra: str) -> dict[str, str]:
    return {"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_INFLUXDB_URL": locked_influx.url, **extra}


def test_collect_with_the_right_influx_credentials_publishes(locked_influx: LockedInflux, redis_url: str,
                                                             redis_client: redis.Redis,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    env = _influx_env(locked_influx, redis_url, TPV_BROKER_INFLUXDB_USERNAME=INFLUX_USER,
                      TPV_BROKER_INFLUXDB_PASSWORD=INFLUX_PASSWORD)
    result, _ = run(["collect", "--once"], env, caplog)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("published")


@pytest.mark.parametrize("where", ["settings", "url"])
def test_collect_with_a_wrong_influx_password(locked_influx: LockedInflux, redis_url: str, where: str,
                                              redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    host = locked_influx.url.removeprefix("http://")
    env = {
        "settings": _influx_env(locked_influx, redis_url, TPV_BROKER_INFLUXDB_USERNAME=INFLUX_USER,
                                TPV_BROKER_INFLUXDB_PASSWORD=WRONG),
        "url": _influx_env(locked_influx, redis_url, TPV_BROKER_INFLUXDB_URL=f"http://{INFLUX_USER}:{WRONG}@{host}"),
    }[where]
    result, out = run(["collect", "--once"], env, caplog)
    assert result.exit_code == 1
    assert "refused the credentials (HTTP 401)" in out


def test_collect_with_an_influx_token_it_cannot_send(redis_url: str, tmp_path: pathlib.Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # A token pasted with its line break: requests refuses the header and quotes it.
    config = tmp_path / "config.yaml"
    config.write_text(f'influxdb:\n  url: http://127.0.0.1:{free_port()}\n  token: "{INFLUX_PASSWORD}\\n"\n')
    result, out = run(["--config", str(config), "collect", "--once"], {"TPV_BROKER_REDIS_URL": redis_url}, caplog)
    assert result.exit_code == 1
    assert "request failed" in out


@pytest.mark.parametrize("url", [f"http://{INFLUX_USER}:{INFLUX_PASSWORD}@127.0.0.1:{{port}}",
                                 f"http://{INFLUX_USER}:{AWKWARD}@127.0.0.1:{{port}}"])
def test_collect_with_influx_unreachable_or_its_url_unparseable(url: str, redis_url: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    result, out = run(["collect", "--once"], {"TPV_BROKER_REDIS_URL": redis_url,
                                              "TPV_BROKER_INFLUXDB_URL": url.format(port=port),
                                              "TPV_BROKER_INFLUXDB_PASSWORD": WRONG}, caplog)
    assert result.exit_code == 1
    assert f"InfluxDB at http://***@127.0.0.1:{port} (database 'galaxy')" in out


# -- the helpers, table-driven -------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw-secret@h:6379/0", "redis://***@h:6379/0"),
    ("redis://user:pw-secret@h:6379/0", "redis://***@h:6379/0"),
    ("redis://:Xq7/zz-awkward@h:6379/0", "redis://***@h:6379/0"),     # urlsplit ends the netloc at "/"
    ("redis://:Xq7#zz-awkward@h:6379/0", "redis://***@h:6379/0"),     # ... and at "#"
    ("redis://h:6379/0?password=pw-secret", "redis://h:6379/0?password=***"),
    ("http://h:8086/?u=admin&p=pw-secret", "http://h:8086/?u=admin&p=***"),
    ("http://h:8086", "http://h:8086"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_replaces_every_form_of_a_secret() -> None:
    secrets = [*url_secrets("redis://:p%40ss-word@h/0"), "tok-secret"]
    text = "a p@ss-word b p%40ss-word c 'Token tok-secret\\n' d"
    assert scrub(text, secrets) == "a *** b *** c 'Token ***\\n' d"


# -- what InfluxDB (or the API) could not be asked with, in every message ------------------------------------
# A token pasted with a Windows line break: requests and urllib3 refuse the
# header and quote it, and a message cut before it is scrubbed holds a piece.
LONG_TOKEN = "tok-" + "5e1f0a9c2b7d4e83" * 8


def _no_piece_of_the_token(text: str) -> None:
    for i in range(len(LONG_TOKEN) - 12):
        assert LONG_TOKEN[i:i + 12] not in text, f"a piece of the token shows in: {text}"


@pytest.mark.parametrize("api", ["influxql", "flux"])
@pytest.mark.parametrize("command", [["check-config"], ["collect", "--once"]])
def test_an_influx_url_or_token_that_cannot_be_used_shows_no_piece_of_it(
        api: str, command: list[str], redis_url: str, tmp_path: pathlib.Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import yaml

    port = free_port()
    flux = {"api": "flux", "org": "galaxy", "bucket": "galaxy"} if api == "flux" else {}
    for influx in ({"url": f"http://{INFLUX_USER}:{AWKWARD}@127.0.0.1:{port}", "token": "t0k-fine-0123456789"},
                   {"url": f"http://127.0.0.1:{port}", "token": LONG_TOKEN + "\r"}):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"influxdb": {**influx, **flux}}))
        result, out = run(["--config", str(config), *command], {"TPV_BROKER_REDIS_URL": redis_url}, caplog)
        caplog.clear()
        assert result.exit_code == 1, out
        _no_piece_of_the_token(out)


def test_tenants_api_shows_no_credential_of_its_url(caplog: pytest.LogCaptureFixture) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotHere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotHere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for url in (f"http://op:{INFLUX_PASSWORD}@127.0.0.1:{server.server_port}/nothere",
                    f"http://op:{AWKWARD}@127.0.0.1:{server.server_port}"):
            result, out = run(["tenants", "--api", url], {}, caplog)
            assert result.exit_code == 1 and "cannot read http://***@127.0.0.1" in out, out
    finally:
        server.shutdown()
        server.server_close()
