"""The client's token option against the real API with auth on (the app
factory served on loopback, a real redis-server): with the token the
broker's order is applied; without it, or with a wrong one, TPV's order and
one warning naming the problem; the token never reaches a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tpv_broker.api import create_app
from tpv_broker.config.settings import load_config
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore
from tpv_broker_client import BrokerClient, rank

from .test_api import CANDIDATES, EXPECTED, NOW, snapshot
from .test_client_rank import Dest, names, warnings_of
from .web_helpers import serving

TOKEN = "client-token-0123456789abcdef"
OTHER = "other-token-0123456789abcdef"


@pytest.fixture
def api(redis_client: redis.Redis) -> Iterator[str]:
    store = SnapshotStore(redis_client, KeySchema("t"))
    store.publish(snapshot())
    config = load_config(environ={"TPV_BROKER_API_AUTH_TOKENS": f"{OTHER},{TOKEN}"})
    with serving(create_app(config, store=store, clock=lambda: NOW)) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TPV_BROKER_TOKEN", raising=False)
    monkeypatch.delenv("TPV_BROKER_TOKEN_FILE", raising=False)


def _ask(client: BrokerClient) -> list[str]:
    return [d.id for d in client.rank([Dest(i) for i in CANDIDATES], names(cores=4, mem=8))]


def test_with_the_token_the_brokers_order_is_applied(api: str, caplog: pytest.LogCaptureFixture) -> None:
    assert _ask(BrokerClient(api, token=TOKEN)) == EXPECTED
    assert warnings_of(caplog) == []


def test_token_from_a_file(api: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text(f"# the broker's token\n{TOKEN}\n")
    assert _ask(BrokerClient(api, token_file=str(path))) == EXPECTED
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("variable", ["TPV_BROKER_TOKEN", "TPV_BROKER_TOKEN_FILE"])
def test_token_from_the_environment(api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    monkeypatch.setenv(variable, TOKEN if variable == "TPV_BROKER_TOKEN" else str(path))
    assert _ask(BrokerClient(api)) == EXPECTED


def test_the_token_given_wins_over_a_file_and_the_variable_over_its_file(
        api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As client/README says: token, else token_file, else $TPV_BROKER_TOKEN, else $TPV_BROKER_TOKEN_FILE.
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-token-0123456789abcdef\n")
    assert _ask(BrokerClient(api, token=TOKEN, token_file=str(wrong))) == EXPECTED
    monkeypatch.setenv("TPV_BROKER_TOKEN", TOKEN)
    monkeypatch.setenv("TPV_BROKER_TOKEN_FILE", str(wrong))
    assert _ask(BrokerClient(api)) == EXPECTED


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
def test_without_the_right_token_tpv_order_and_one_warning(api: str, token: str | None,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert _ask(BrokerClient(api, token=token)) == CANDIDATES  # equal tag scores: input order
    (warning,) = warnings_of(caplog)
    assert "answered HTTP 401" in warning
    assert ("missing" if token is None else "wrong token") in warning
    assert TOKEN not in caplog.text and OTHER not in caplog.text and (token is None or token not in caplog.text)


@pytest.mark.parametrize("setting", [{"token": "has a space 0123456789"}, {"token": "tok\nen-0123456789abcdef"},
                                     {"token_file": "/nonexistent/token"}])
def test_an_unusable_token_setting_falls_back_with_a_warning_that_hides_it(setting: dict[str, str],
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    cands = [Dest(i) for i in CANDIDATES]
    assert rank(cands, names(), url="http://127.0.0.1:9", **setting) == cands
    assert "settings rejected" in caplog.text
    assert "token" in caplog.text  # the traceback's message says what is wrong with it ...
    if "token" in setting:
        assert setting["token"] not in caplog.text and "0123456789" not in caplog.text  # ... never what it is


def test_a_token_over_plain_http_to_another_host_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    BrokerClient("http://broker.example.org:8000", token=TOKEN)
    (warning,) = warnings_of(caplog)
    assert "the API token goes to broker.example.org over plain http" in warning and TOKEN not in warning
    caplog.clear()
    BrokerClient("https://broker.example.org", token=TOKEN)
    BrokerClient("http://127.0.0.1:8000", token=TOKEN)
    BrokerClient("http://broker.example.org:8000")
    assert warnings_of(caplog) == []
