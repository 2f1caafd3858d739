"""Bearer-token auth on the protected endpoints (api/auth.py), through the
app factory: what a client is told, what stays open, where tokens come
from, and that no token is ever echoed or logged."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner
from flask import Flask

from tpv_broker.api import auth, create_app
from tpv_broker.cli import main
from tpv_broker.config.settings import load_config
from tpv_broker.errors import ConfigError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import clean_env
from .test_api import GOOD, NOW, _closed_port_store, snapshot

TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_B = "tok/B+0123456789abcdef=="
FILE_TOKEN = "file.token_0123456789~xyz"
LEGACY = {"job_info": {"tool_id": "bwa"}, "destinations": [{"id": "pulsar_de"}]}


def _store() -> SnapshotStore:
    store = SnapshotStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()), KeySchema("t"))
    store.publish(snapshot())
    return store


def make_app(environ: dict[str, str] | None = None, store: SnapshotStore | None = None) -> Flask:
    return create_app(load_config(environ=environ or {}), store=store or _store(), clock=lambda: NOW)


def with_tokens(*tokens: str, **env: str) -> dict[str, str]:
    return {"TPV_BROKER_API_AUTH_TOKENS": ",".join(tokens), **env}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


# -- off by default ---------------------------------------------------------------------------------
def test_without_tokens_the_api_is_open() -> None:
    client = make_app().test_client()
    assert client.post("/api/rank", json=GOOD).status_code == 200
    assert client.post("/process_data", json=LEGACY).status_code == 200


# -- what a refused client sees ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "kind", "challenge"),
    [
        ({}, "missing", 'Bearer realm="tpv-broker"'),
        ({"Authorization": ""}, "missing", 'Bearer realm="tpv-broker"'),
        ({"Authorization": f"Basic {TOKEN_A}"}, "malformed", 'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": TOKEN_A}, "malformed", 'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": "Bearer"}, "malformed", 'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": "Bearer   "}, "malformed", 'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": f"Bearer {TOKEN_A} extra"}, "malformed",
         'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": "Bearer tök-0123456789abcdef"}, "malformed",
         'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": "Bearer a*b:{c}"}, "malformed", 'Bearer realm="tpv-broker", error="invalid_request"'),
        ({"Authorization": "Bearer wrong-0123456789abcdef"}, "wrong token",
         'Bearer realm="tpv-broker", error="invalid_token"'),
        ({"Authorization": f"Bearer {TOKEN_A}x"}, "wrong token", 'Bearer realm="tpv-broker", error="invalid_token"'),
        ({"Authorization": f"Bearer {TOKEN_A[:-1]}"}, "wrong token",
         'Bearer realm="tpv-broker", error="invalid_token"'),
    ],
)
@pytest.mark.parametrize("path,body", [("/api/rank", GOOD), ("/process_data", LEGACY)])
def test_refused_requests_get_401_naming_the_problem(headers: dict[str, str], kind: str, challenge: str,
                                                     path: str, body: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_app(with_tokens(TOKEN_A, TOKEN_B)).test_client()
    caplog.set_level(logging.DEBUG)
    resp = client.post(path, json=body, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == challenge
    payload = resp.get_json()
    assert payload["error"] == "unauthorized"
    (error,) = payload["errors"]
    assert error["field"] == "Authorization"
    assert error["problem"].startswith(kind), error
    assert payload["message"] == f"Authorization: {error['problem']}"
    # Neither the configured tokens nor what the client sent come back or reach the log.
    sent = headers.get("Authorization", "").split(" ")[-1]
    secrets = [TOKEN_A, TOKEN_B, *([sent] if len(sent) > 8 else [])]
    _assert_no_secret(resp.get_data(as_text=True) + str(resp.headers), *secrets)
    _assert_no_secret(caplog.text, *secrets)
    assert f"refused POST {path}" in caplog.text


def test_a_scheme_that_is_no_token_is_not_echoed() -> None:
    client = make_app(with_tokens(TOKEN_A)).test_client()
    payload = client.post("/api/rank", json=GOOD, headers={"Authorization": "<script>x</script> y"}).get_json()
    assert payload["errors"][0]["problem"] == "malformed: expected 'Bearer <token>', got something else (not shown)"
    payload = client.post("/api/rank", json=GOOD, headers={"Authorization": "Basic eA=="}).get_json()
    assert payload["errors"][0]["problem"] == "malformed: expected 'Bearer <token>', got the scheme 'Basic'"


# -- accepted tokens ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [TOKEN_A, TOKEN_B])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_every_configured_token_is_accepted(token: str, scheme: str) -> None:
    client = make_app(with_tokens(TOKEN_A, TOKEN_B)).test_client()
    resp = client.post("/api/rank", json=GOOD, headers={"Authorization": f"{scheme} {token}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["degraded"] is False
    assert client.post("/process_data", json=LEGACY, headers={"Authorization": f"{scheme} {token}"}).status_code == 200


def test_tokens_from_the_file_and_the_setting_are_all_accepted(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotated 2026-11-22\n\n  {FILE_TOKEN}  \n{TOKEN_B}\n")
    path.chmod(0o600)
    client = make_app(with_tokens(TOKEN_A, TPV_BROKER_API_AUTH_TOKENS_FILE=str(path))).test_client()
    for token in (TOKEN_A, TOKEN_B, FILE_TOKEN):
        assert client.post("/api/rank", json=GOOD, headers=bearer(token)).status_code == 200
    assert client.post("/api/rank", json=GOOD, headers=bearer("#" + "x" * 20)).status_code == 401


def test_rotation_through_the_file_takes_effect_when_workers_start(tmp_path: Path) -> None:
    # gunicorn workers build the app after each fork (kill -HUP starts new ones),
    # so a new app is what a rotated file reaches.
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN_A}\n")
    env = {"TPV_BROKER_API_AUTH_TOKENS_FILE": str(path)}
    old = make_app(env).test_client()
    path.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")  # step 1: add the new token; clients move over
    both = make_app(env).test_client()
    path.write_text(f"{TOKEN_B}\n")  # step 2: retire the old one
    new = make_app(env).test_client()
    status = lambda c, t: c.post("/api/rank", json=GOOD, headers=bearer(t)).status_code  # noqa: E731
    assert (status(old, TOKEN_A), status(old, TOKEN_B)) == (200, 401)
    assert (status(both, TOKEN_A), status(both, TOKEN_B)) == (200, 200)
    assert (status(new, TOKEN_A), status(new, TOKEN_B)) == (401, 200)


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Constant time across tokens: the first token matching does not end the loop.
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = auth.load_tokens(load_config(environ=with_tokens(TOKEN_A, TOKEN_B, FILE_TOKEN)).api)
    assert tokens is not None
    for presented, expected in ((TOKEN_A, True), (FILE_TOKEN, True), ("nope-0123456789abcdef", False)):
        calls.clear()
        assert tokens.tenant_of(presented) == ("default" if expected else None)
        assert len(calls) == 3


# -- what stays open, what can opt in -------------------------------------------------------------------
def test_health_and_ready_stay_open_by_default() -> None:
    client = make_app(with_tokens(TOKEN_A)).test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_another_route_opts_in_by_being_listed() -> None:
    client = make_app(with_tokens(TOKEN_A, TPV_BROKER_API_AUTH_PROTECTED="/api/rank,/ready")).test_client()
    assert client.get("/ready").status_code == 401
    assert client.get("/ready", headers=bearer(TOKEN_A)).status_code == 200
    assert client.post("/api/rank", json=GOOD).status_code == 401
    assert client.post("/process_data", json=LEGACY).status_code == 200  # no longer listed


def test_empty_token_variables_leave_auth_off() -> None:
    client = make_app({"TPV_BROKER_API_AUTH_TOKENS": "", "TPV_BROKER_API_AUTH_TOKENS_FILE": ""}).test_client()
    assert client.post("/api/rank", json=GOOD).status_code == 200


def test_health_cannot_be_protected() -> None:
    with pytest.raises(ConfigError, match=r"api\.auth_protected.*/health stays open"):
        load_config(environ={"TPV_BROKER_API_AUTH_PROTECTED": "/api/rank,/health"})


def test_a_protected_path_that_is_no_route_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"api.auth_protected: '/api/rnak' is not an endpoint of this API"):
        make_app(with_tokens(TOKEN_A, TPV_BROKER_API_AUTH_PROTECTED="/api/rnak"))


def test_unknown_paths_and_wrong_methods_are_not_turned_into_401() -> None:
    client = make_app(with_tokens(TOKEN_A)).test_client()
    assert client.post("/nope").status_code == 404
    assert client.get("/api/rank").status_code == 405


# -- refused before anything else happens ----------------------------------------------------------------
def test_refused_before_the_body_is_read_or_redis_is_asked() -> None:
    # Redis unreachable: an accepted request would answer degraded; a refused one never gets that far.
    config = with_tokens(TOKEN_A, TPV_BROKER_API_MAX_REQUEST_BYTES="1024")
    client = make_app(config, store=_closed_port_store()).test_client()
    big = "x" * 5000
    assert client.post("/api/rank", data=big, content_type="application/json").status_code == 401
    resp = client.post("/api/rank", data=big, content_type="application/json", headers=bearer(TOKEN_A))
    assert resp.status_code == 413
    resp = client.post("/api/rank", json=GOOD, headers=bearer(TOKEN_A))
    assert (resp.status_code, resp.get_json()["degraded"]) == (200, True)


# -- where tokens come from, and what a bad source says -----------------------------------------------------------
def test_short_or_odd_tokens_stop_start_up_without_echoing_them() -> None:
    for bad, problem in (("short-secret", "token #2 is too short (12 characters, at least 16)"),
                         ("fifteen-chars15", "token #2 is too short (15 characters, at least 16)"),
                         ("has space 0123456789", "token #2 holds a character other than"),
                         # '=' only as base64's padding, at the end (the client refuses it elsewhere)
                         ("abcdefgh=ijklmnopq", "token #2 holds a character other than")):
        with pytest.raises(ConfigError) as exc:
            load_config(environ={"TPV_BROKER_API_AUTH_TOKENS": f"{TOKEN_A},{bad}"})
        assert problem in str(exc.value)
        assert "(from TPV_BROKER_API_AUTH_TOKENS)" in str(exc.value)
        _assert_no_secret(str(exc.value), TOKEN_A, bad)
    # the shortest and the padded are tokens
    for good in ("sixteen-chars-16", "abcdefghijklmnop=="):
        tokens = load_config(environ={"TPV_BROKER_API_AUTH_TOKENS": good}).api.auth_tokens
        assert [t.get_secret_value() for t in tokens] == [good]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "holds no token"),
        ("# only a comment\n\n", "holds no token"),
        (f"{TOKEN_A}\nsecret-short\n", "line 2: the token is too short (12 characters"),
        (f"{TOKEN_A}\nsecret with spaces inside\n", "line 2: the token holds a character other than"),
    ],
)
def test_a_bad_tokens_file_stops_start_up_naming_it(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        make_app({"TPV_BROKER_API_AUTH_TOKENS_FILE": str(path)})
    assert str(exc.value).startswith("api.auth_tokens_file: ")
    assert str(path) in str(exc.value) and message in str(exc.value)
    _assert_no_secret(str(exc.value), TOKEN_A, "secret")


def test_a_world_readable_tokens_file_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN_A + "\n")
    settings = load_config(environ={"TPV_BROKER_API_AUTH_TOKENS_FILE": str(path)}).api
    path.chmod(0o644)
    warning = auth.file_warning(settings)
    assert warning is not None and "readable by every user (mode 644): chmod 600" in warning
    path.chmod(0o640)
    assert auth.file_warning(settings) is None


def test_describe_says_whether_auth_is_on_and_never_shows_a_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{FILE_TOKEN}\n")
    settings = load_config(environ=with_tokens(TOKEN_A, TOKEN_B, TPV_BROKER_API_AUTH_TOKENS_FILE=str(path))).api
    line = auth.describe(settings, auth.load_tokens(settings))
    assert line == f"API auth on for /api/rank, /process_data: 3 token(s) (2 from api.auth_tokens, 1 from {path})"
    off = load_config(environ={}).api
    assert auth.describe(off, auth.load_tokens(off)).startswith("API auth off")
    # ... nor does the config object's repr.
    assert TOKEN_A not in repr(settings) and TOKEN_A not in str(settings.model_dump())


def test_serve_refuses_to_start_with_a_bad_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN_A}\nsecret-short\n")
    env = clean_env()
    env["TPV_BROKER_API_AUTH_TOKENS_FILE"] = str(path)
    result = CliRunner().invoke(main, ["serve", "--bind", "127.0.0.1:1"], env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"error: api.auth_tokens_file: {path} line 2: the token is too short" in result.output
    _assert_no_secret(result.output, TOKEN_A, "secret-short")
