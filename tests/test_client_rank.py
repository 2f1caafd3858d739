"""The TPV-side client against a small HTTP server on loopback (real
sockets, real requests; no mocks of requests): the broker's order wins when
it answers; on every kind of failure the job gets TPV's default order, with
one warning, within the budget."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tpv_broker.devtools.servers import free_port
from tpv_broker_client import BrokerClient, rank

from . import fake_broker as fb

BUDGET_S = 0.3
# The issue's guarantee is "never blocks past the budget"; the margin only
# absorbs process noise on a loaded machine (thread start, GIL, scheduling).
# This is the one wall-clock assertion the tests make.
WITHIN_BUDGET_S = BUDGET_S + 1.0


@dataclass(eq=False)
class Dest:
    """What a rank clause's candidates offer: ``id``, ``context``, ``score``."""

    id: Any
    tag_score: int = 0
    context: dict[str, Any] = field(default_factory=dict)

    def score(self, entity: object) -> int:
        return self.tag_score


@dataclass
class Tool:
    id: str = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0"


@dataclass
class Job:
    id: Any = 4711
    input_datasets: list[Any] = field(default_factory=list)


class Helpers:
    def __init__(self, attributes: dict[int, dict[str, Any]] | None = None) -> None:
        self.attributes = attributes or {}

    def get_dataset_attributes(self, datasets: object) -> dict[int, dict[str, Any]]:
        return self.attributes


def candidates() -> list[Dest]:
    # TPV's default order (tag score, stable): de, uk, it
    return [Dest("pulsar_uk", 1), Dest("pulsar_de", 2), Dest("pulsar_it01", 0)]


def names(**extra: Any) -> dict[str, Any]:
    """A rank clause's globals(): no cores/mem/gpus unless given."""
    ns: dict[str, Any] = {"entity": object(), "tool": Tool(), "job": Job(), "user": None, "helpers": Helpers()}
    ns.update(extra)
    return ns


def ids(dests: list[Any]) -> list[str]:
    return [d.id for d in dests]


TPV_DEFAULT = ["pulsar_de", "pulsar_uk", "pulsar_it01"]


@pytest.fixture
def broker():
    with fb.FakeBroker() as b:
        yield b


def client(url: str, **kw: Any) -> BrokerClient:
    kw.setdefault("budget_s", BUDGET_S)
    return BrokerClient(url, **kw)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tpv_broker_client" and r.levelno >= logging.WARNING]


def test_the_brokers_order_wins_and_the_objects_are_the_candidates(broker, caplog):
    cands = candidates()
    broker.behaviour = fb.ranked(lambda got: ["pulsar_it01", "pulsar_uk", "pulsar_de"])
    out = client(broker.url).rank(cands, names())
    assert ids(out) == ["pulsar_it01", "pulsar_uk", "pulsar_de"]
    assert {id(d) for d in out} == {id(d) for d in cands} and len(out) == 3
    # Sent in TPV's default order, so the broker's ties keep TPV's preference.
    assert [d["id"] for d in broker.requests[0]["destinations"]] == TPV_DEFAULT
    assert warnings_of(caplog) == []


def test_candidates_the_broker_did_not_mention_follow_in_tpv_order(broker):
    broker.behaviour = fb.ranked(lambda got: ["pulsar_it01"])
    assert ids(client(broker.url).rank(candidates(), names())) == ["pulsar_it01", "pulsar_de", "pulsar_uk"]


def test_the_request_carries_the_job_its_inputs_and_each_candidates_score_and_context(broker):
    attributes = {
        1: {"object_store_id": "object_store_germany", "size": 2_000_000_000},
        2: {"object_store_id": "object_store_germany", "size": 1_000},
        3: {"object_store_id": "object_store_uk", "size": 5.0},
        4: {"object_store_id": None, "size": 7},  # Galaxy's default store: no id
        5: {"object_store_id": "object_store_uk", "size": float("nan")},
    }
    cands = [
        Dest("pulsar_de", 2, {"latitude": 50.1, "longitude": 8.7, "note": "x" * 2000,
                              "obj": object(), "nan": float("nan"), "n": 3, "flag": True, "none": None}),
        Dest("pulsar_uk", 1),
    ]
    client(broker.url, object_stores={"object_store_uk": {"latitude": 51.5, "longitude": -0.1},
                                      "bad": {"latitude": 91, "longitude": 0}}).rank(
        cands, names(cores=4, mem=15.2, helpers=Helpers(attributes)))
    (body,) = broker.requests
    assert body == {
        "job": {"tool_id": Tool().id, "id": "4711", "cores": 4.0, "mem": 15.2},
        "destinations": [
            # What the API reads of a context, no more.
            {"id": "pulsar_de", "tpv_score": 2, "context": {"latitude": 50.1, "longitude": 8.7}},
            {"id": "pulsar_uk", "tpv_score": 1},
        ],
        "datasets": [{"object_store_id": "object_store_germany", "size": 2_000_001_000.0},
                     {"object_store_id": "object_store_uk", "size": 5.0}],
        "object_stores": {"object_store_uk": {"latitude": 51.5, "longitude": -0.1}},
    }


@pytest.mark.parametrize(
    ("extra", "job"),
    [
        # What TPV may leave undefined, or odd, in a rank clause.
        ({"job": None, "user": None}, {}),
        ({"job": Job(id=None)}, {}),
        ({"job": Job(id="not an id!")}, {}),
        ({"cores": None, "mem": None, "gpus": None}, {"id": "4711"}),
        ({"cores": 0, "mem": -1, "gpus": float("inf")}, {"id": "4711"}),
        ({"cores": True, "mem": "16", "gpus": 1}, {"id": "4711", "gpus": 1.0}),
        ({"helpers": None}, {"id": "4711"}),
    ],
)
def test_undefined_or_odd_facts_are_left_out_and_the_job_is_still_ranked(broker, caplog, extra, job):
    ns = names(**extra)
    for key in ("cores", "mem", "gpus"):
        if extra.get(key, 0) is None:
            del ns[key]  # undefined, as TPV leaves them
    broker.behaviour = fb.ranked(lambda got: ["pulsar_it01", "pulsar_de", "pulsar_uk"])
    assert ids(client(broker.url).rank(candidates(), ns))[0] == "pulsar_it01"
    assert broker.requests[0]["job"] == {"tool_id": Tool().id, **job}
    assert warnings_of(caplog) == []


def test_an_unreadable_input_list_ranks_without_datasets_and_says_so_once(broker, caplog):
    class Broken:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_dataset_attributes(self, datasets: object) -> dict:
            # Each job's error names its own datasets: still one warning, and nothing kept per job.
            raise RuntimeError(f"DB went away reading dataset {self.n}")

    c = client(broker.url)
    for n in range(3):
        assert ids(c.rank(candidates(), names(helpers=Broken(n)))) == ["pulsar_it01", "pulsar_uk", "pulsar_de"]
    assert all("datasets" not in r for r in broker.requests) and len(broker.requests) == 3
    said = [w for w in warnings_of(caplog) if "input datasets could not be read" in w]
    assert said == ["tpv-broker: input datasets could not be read, ranking without them: RuntimeError"]
    assert len(c._warned) == 1


def test_inputs_that_take_the_budget_to_read_do_not_count_against_the_broker(broker, caplog):
    class Slow:
        def get_dataset_attributes(self, datasets: object) -> dict:
            time.sleep(BUDGET_S * 1.2)  # a big Galaxy database query
            return {}

    class NearlySlow:
        def get_dataset_attributes(self, datasets: object) -> dict:
            time.sleep(BUDGET_S * 0.95)  # leaves the broker 15 ms: a time-out, not the broker's fault
            return {}

    c = client(broker.url, failures_to_open=2)
    for helpers in (Slow(), NearlySlow(), Slow()):
        assert ids(c.rank(candidates(), names(helpers=helpers))) == TPV_DEFAULT
    assert broker.requests == [] and not c.breaker.is_open
    assert warnings_of(caplog) == ["tpv-broker not asked: reading the job's inputs took the 0.3 s budget; "
                                   "TPV's order used"] * 3
    # The next job with its inputs read in time is ranked by the broker.
    assert ids(c.rank(candidates(), names())) == ["pulsar_it01", "pulsar_uk", "pulsar_de"]
    assert len(broker.requests) == 1


def test_the_budget_bounds_the_inputs_and_the_broker_together(broker, caplog):
    # Inputs that take most of the budget leave the broker only the rest: the call never outlasts it.
    class Reading:
        def get_dataset_attributes(self, datasets: object) -> dict:
            time.sleep(BUDGET_S * 0.6)
            return {}

    def slow(h: Any, body: dict[str, Any]) -> None:
        time.sleep(BUDGET_S * 0.6)
        fb.ranked()(h, body)

    broker.behaviour = slow
    started = time.monotonic()
    assert ids(client(broker.url).rank(candidates(), names(helpers=Reading()))) == TPV_DEFAULT
    assert time.monotonic() - started <= WITHIN_BUDGET_S


def test_proxy_settings_in_the_environment_are_not_used(broker, monkeypatch):
    # Galaxy's environment may name a proxy for the outside world; the broker sits beside it.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert ids(client(broker.url).rank(candidates(), names())) == ["pulsar_it01", "pulsar_uk", "pulsar_de"]


def test_a_redirect_is_not_followed(broker, caplog):
    with fb.FakeBroker() as elsewhere:
        def redirect(h: Any, body: dict[str, Any]) -> None:
            h.send_response(307)
            h.send_header("Location", elsewhere.url + "/api/rank")
            h.send_header("Content-Length", "0")
            h.end_headers()

        broker.behaviour = redirect
        assert ids(client(broker.url).rank(candidates(), names())) == TPV_DEFAULT
        assert elsewhere.requests == []
    (warning,) = warnings_of(caplog)
    assert "HTTP 307" in warning


def test_a_tpv_context_of_any_size_is_sent_as_the_api_reads_it(broker):
    # A shared TPV config's contexts may hold hundreds of values: sent whole, six candidates made a
    # request over the API's 1 MiB limit, answered 413, and every job fell back.
    big = {**{f"k{i}": "x" * 900 for i in range(200)}, "latitude": 50.1, "longitude": 8.7}
    cands = [Dest(f"pulsar_{i}", 0, dict(big)) for i in range(6)]
    c = client(broker.url)
    assert len(c.rank(cands, names())) == 6
    (body,) = broker.requests
    assert [d["context"] for d in body["destinations"]] == [{"latitude": 50.1, "longitude": 8.7}] * 6


def _rank_in_child(url: str) -> None:
    out = rank(candidates(), names(), url=url, budget_s=BUDGET_S)
    os._exit(0 if ids(out) == ["pulsar_it01", "pulsar_uk", "pulsar_de"] else 1)


def _is_a_new_client(parent: int, url: str) -> None:
    from tpv_broker_client.client import client_for

    os._exit(0 if id(client_for(url=url, budget_s=BUDGET_S)) != parent else 1)


def test_a_forked_child_makes_its_own_client(broker):
    # A child sharing its parent's client would share its sockets: answers read by the wrong process.
    from tpv_broker_client.client import client_for

    rank(candidates(), names(), url=broker.url, budget_s=BUDGET_S)
    parent = client_for(url=broker.url, budget_s=BUDGET_S)
    child = multiprocessing.get_context("fork").Process(target=_is_a_new_client, args=(id(parent), broker.url))
    child.start()
    child.join(10)
    assert child.exitcode == 0


def test_a_child_forked_while_another_thread_makes_a_client_still_ranks(broker):
    import tpv_broker_client.client as module

    # Another thread of Galaxy's was making a client (reading a slow token file) at the fork.
    with module._clients_lock:
        child = multiprocessing.get_context("fork").Process(target=_rank_in_child, args=(broker.url,))
        child.start()
    child.join(10)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0


def test_ids_the_api_would_reject_are_not_sent_and_come_after_the_ranked_ones(broker, caplog):
    cands = [Dest("with space", 5), Dest("pulsar_de", 2), Dest(None, 9), Dest("pulsar_uk", 1)]
    broker.behaviour = fb.ranked(lambda got: ["pulsar_uk", "pulsar_de"])
    c = client(broker.url)
    out = c.rank(cands, names())
    assert [d["id"] for d in broker.requests[0]["destinations"]] == ["pulsar_de", "pulsar_uk"]
    assert ids(out) == ["pulsar_uk", "pulsar_de", None, "with space"]
    c.rank(cands, names())
    (warning,) = warnings_of(caplog)  # once per process, not per job
    assert "'with space'" in warning and "None" in warning


def test_a_tool_id_the_api_would_reject_means_no_call_and_tpv_order(broker, caplog):
    out = client(broker.url).rank(candidates(), names(tool=Tool(id="bad tool\n")))
    assert ids(out) == TPV_DEFAULT and broker.requests == []
    (warning,) = warnings_of(caplog)
    assert "tool id" in warning


def test_no_candidates_no_call(broker):
    assert client(broker.url).rank([], names()) == [] and broker.requests == []


def test_a_score_that_raises_keeps_tpvs_candidate_order(broker):
    class Odd(Dest):
        def score(self, entity: object) -> int:
            raise TypeError("no entity")

    cands = [Odd("a"), Odd("b")]
    broker.behaviour = fb.status(500)
    assert client(broker.url).rank(cands, names()) == cands
    assert "tpv_score" not in broker.requests[0]["destinations"][0]


def test_connections_are_reused(broker):
    c = client(broker.url)
    for _ in range(5):
        c.rank(candidates(), names())
    assert len(broker.requests) == 5 and len(broker.connections) == 1


# -- failures: TPV's order, one warning, within the budget ---------------
def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("behaviour", "expected_in_warning"),
    [
        (fb.hang, "no answer within the 0.3 s budget"),
        (fb.trickle(), "budget"),
        (fb.trickle(headers_too=True), "budget"),
        (fb.status(500), "HTTP 500"),
        (fb.status(400, b'{"error": "invalid request"}'), "HTTP 400"),
        # a Galaxy over its rate limit on a shared broker: like any failure
        (fb.status(429, b'{"error": "Too Many Requests", "message": "tenant: eu is over its rate limit"}'),
         "HTTP 429"),
        (fb.status(302, b""), "HTTP 302"),
        (fb.garbage(), "not JSON"),
        (fb.garbage(b"[1, 2]"), "not an object"),
        (fb.garbage(b'{"destinations": "pulsar_de", "degraded": false}'), "without a list"),
        (fb.garbage(b'{"destinations": ["pulsar_de"]}'), "degraded flag"),
        (fb.garbage(b"{" + b" " * (2 << 20) + b"}"), "larger than"),
        (fb.ranked(degraded=True), "degraded"),
        (fb.ranked(lambda got: [*got, "pulsar_elsewhere"]), "do not match"),
        (fb.ranked(lambda got: [got[0], got[0]]), "do not match"),
    ],
    ids=["hung", "trickling-body", "trickling-headers", "500", "400", "429", "redirect", "html", "json-list",
         "ids-not-list", "no-degraded-flag", "huge", "degraded", "foreign-id", "duplicate-id"],
)
def test_a_broker_that_gives_no_usable_answer_costs_tpv_order_and_one_warning(
    broker, caplog, behaviour, expected_in_warning
):
    broker.behaviour = behaviour
    cands = candidates()
    started = time.monotonic()
    out = client(broker.url).rank(cands, names())
    elapsed = time.monotonic() - started
    assert ids(out) == TPV_DEFAULT and {id(d) for d in out} == {id(d) for d in cands}
    assert elapsed <= WITHIN_BUDGET_S
    (warning,) = warnings_of(caplog)
    assert expected_in_warning in warning and "TPV's order used" in warning


@pytest.mark.parametrize("headers_too", [False, True], ids=["trickling-body", "trickling-headers"])
def test_the_worker_hangs_up_on_a_trickling_answer_it_gave_up_on(broker, headers_too):
    """rank() returns at the budget whoever notices it (the caller's wait or
    the worker's own checks); what tells them apart is the connection: the
    worker must close it then, not read on in the background until the
    broker has trickled the whole answer (seconds at a byte per 50 ms)."""
    broker.behaviour = fb.trickle(headers_too=headers_too)
    assert ids(client(broker.url).rank(candidates(), names())) == TPV_DEFAULT
    assert broker.trickle_ended.wait(fb.STALL_LIMIT_S), "the trickle never ended"
    (trickled,) = broker.trickled
    assert trickled.hung_up, f"the worker read all {trickled.total} bytes of an answer it had given up on"
    # The part that was still arriving at the budget must not have been read to its end.
    part, what = (trickled.head, "headers") if headers_too else (trickled.total, "answer")
    assert trickled.sent < part, (f"the worker hung up only after the whole {what} ({part} bytes) "
                                  f"had been trickled to it: it read on past its deadline")


def test_a_stopped_broker_costs_tpv_order_and_one_warning(caplog):
    out = client(_closed_port_url()).rank(candidates(), names())
    assert ids(out) == TPV_DEFAULT
    (warning,) = warnings_of(caplog)
    assert "Connection refused" in warning


def test_a_hung_name_lookup_does_not_outlast_the_budget(monkeypatch, caplog):
    # Resolution is outside requests' timeouts; the worker thread is what
    # bounds it. The resolver is the one thing replaced here (no DNS on
    # loopback to hang), released when the test ends.
    release = threading.Event()

    def slow_getaddrinfo(*args: Any, **kw: Any) -> Any:
        release.wait(10)
        # Then fail as an unknown name would, without asking any resolver.
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    try:
        started = time.monotonic()
        out = client("http://broker.invalid:8000").rank(candidates(), names())
        assert time.monotonic() - started <= WITHIN_BUDGET_S
        assert ids(out) == TPV_DEFAULT
        (warning,) = warnings_of(caplog)
        assert "budget" in warning
    finally:
        release.set()


# -- the breaker ---------------------------------------------------------
def test_the_breaker_opens_after_repeated_failures_and_closes_once_the_broker_is_back(broker, caplog):
    caplog.set_level(logging.INFO, logger="tpv_broker_client")
    broker.behaviour = fb.status(500)
    c = client(broker.url, failures_to_open=3, cooldown_s=0.2)
    for _ in range(3):
        assert ids(c.rank(candidates(), names())) == TPV_DEFAULT
    assert c.breaker.is_open and "3 failures in a row: not asking it again for 0.2 s" in warnings_of(caplog)[-1]
    caplog.clear()
    # Open: jobs cost nothing, not even a request, and log nothing.
    for _ in range(5):
        assert ids(c.rank(candidates(), names())) == TPV_DEFAULT
    assert len(broker.requests) == 3 and warnings_of(caplog) == []
    # After the cooldown one probe goes out; still failing: open again.
    time.sleep(0.3)
    c.rank(candidates(), names())
    c.rank(candidates(), names())
    assert len(broker.requests) == 4 and c.breaker.is_open
    # The broker is back: the next probe closes the breaker.
    broker.behaviour = fb.ranked(lambda got: ["pulsar_it01", *[i for i in got if i != "pulsar_it01"]])
    time.sleep(0.3)
    assert ids(c.rank(candidates(), names()))[0] == "pulsar_it01"
    assert not c.breaker.is_open
    assert ids(c.rank(candidates(), names()))[0] == "pulsar_it01"
    assert len(broker.requests) == 6
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_success_resets_the_failure_count(broker):
    c = client(broker.url, failures_to_open=2, cooldown_s=60)
    for behaviour in (fb.status(500), fb.ranked(), fb.status(500), fb.ranked()):
        broker.behaviour = behaviour
        c.rank(candidates(), names())
    assert not c.breaker.is_open and len(broker.requests) == 4


# -- the rank clause's entry point ---------------------------------------
def test_rank_keeps_one_client_per_settings_in_a_process(broker):
    broker.behaviour = fb.ranked(lambda got: ["pulsar_it01", "pulsar_de", "pulsar_uk"])
    for _ in range(3):
        out = rank(candidates(), names(), url=broker.url, budget_s=BUDGET_S)
        assert ids(out)[0] == "pulsar_it01"
    assert len(broker.connections) == 1


@pytest.mark.parametrize("settings", [{"budget_s": 0}, {"failures_to_open": 0}, {"cooldown_s": -1}, {"url": None},
                                      {"budget": 0.5}])
def test_rank_with_bad_settings_falls_back_with_a_warning(caplog, settings):
    out = rank(candidates(), names(), **{"url": _closed_port_url(), **settings})
    assert ids(out) == TPV_DEFAULT
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize("bad", [None, 42, [None, 3]])
def test_rank_never_raises_whatever_it_is_given(caplog, bad):
    rank(bad, {}, url=_closed_port_url())  # must not raise
    rank(bad, None, url=_closed_port_url(), budget_s=0)  # type: ignore[arg-type]
    assert ids(rank(candidates(), None, url=_closed_port_url())) == TPV_DEFAULT  # type: ignore[arg-type]
    rank(candidates(), {"tool": object(), "job": object(), "entity": None}, url=_closed_port_url())
