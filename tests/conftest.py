"""Shared fixtures: one real redis-server and one real influxd per test session.

The servers run on free loopback ports in pytest's temporary directories, so
tests never touch a system Redis or InfluxDB. A missing binary fails the
tests with an install hint rather than skipping them: a silently skipped
integration tier looks exactly like a passing one.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import pytest
import redis

from tpv_broker.devtools.servers import InfluxServer, RedisServer, ServerError

# Helpers with asserts of their own, imported by several test modules:
# pytest's detailed failure messages there too.
pytest.register_assert_rewrite("tests.prometheus_scrape")

# Requesting any of these (directly or through another fixture) makes a test
# an integration test; see pytest_collection_modifyitems.
INTEGRATION_FIXTURES = frozenset(
    {"redis_server", "redis_url", "redis_client", "influx_server", "influx_db"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # fixturenames is the transitive closure, so a test asking only for
        # redis_client is marked too.
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    # A daemon's CycleRunner freezes the heap (collector/heap.py): no test
    # may leave it frozen for the next, whose garbage would never be collected.
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-server"))
    try:
        server.start()
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    # Flushing before as well as after keeps one test's leftovers (say, from
    # a test that crashed mid-teardown) from leaking into the next.
    client.flushall()
    try:
        yield client
    finally:
        client.flushall()
        client.close()


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    try:
        server.start()
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influx_server: InfluxServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    # A unique name per test, rather than drop-and-recreate of one name, so a
    # failed drop cannot hand stale points to the next test.
    db = f"test_{uuid.uuid4().hex[:12]}"
    influx_server.create_database(db)
    try:
        yield db
    finally:
        # A test that failed while the server was paused would otherwise make
        # this teardown, and every later influx test, time out.
        influx_server.resume()
        influx_server.query(f'DROP DATABASE "{db}"')
