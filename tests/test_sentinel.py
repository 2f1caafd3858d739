"""Redis Sentinel for real: a password-protected master and replica and a
``redis-server --sentinel``; the API (``tpv-broker serve``) and the
collector (``tpv-broker collect``) both reach Redis through a
``redis+sentinel://`` URL. After ``SENTINEL FAILOVER`` (and the old master
stopped, so nothing can be served from it) both carry on on the new
master by themselves. The password never shows in their logs or answers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tpv_broker.config.settings import load_config
from tpv_broker.devtools.servers import free_port
from tpv_broker.errors import ConfigError, StoreError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, store_from_config

from .helpers import load_prototype_data
from .processes import CLI, wait_for
from .processes import clean_env as _env
from .sentinel_servers import MASTER_NAME, DataNode, SentinelNode, sentinel_group
from .test_processes import _stop

PASSWORD = "s3cret-pw"
KEYS = KeySchema("tpv_broker")
REQUEST = {"job": {"tool_id": "bwa", "cores": 30, "mem": 8},
           "destinations": [{"id": "pulsar_be01"}, {"id": "unknown_site"}, {"id": "condor_tpv"}]}
# As in test_processes: fit first, no metrics last.
RANKED = ["condor_tpv", "pulsar_be01", "unknown_site"]


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[DataNode, DataNode, SentinelNode]]:
    with sentinel_group(tmp_path, PASSWORD) as nodes:
        yield nodes


def test_api_and_collector_follow_a_sentinel_failover(sentinel_setup, influx_server, influx_db,
                                                      tmp_path: Path) -> None:
    master, replica, sentinel = sentinel_setup
    load_prototype_data(influx_server, influx_db)
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/{MASTER_NAME}/0"
    env = _env(TPV_BROKER_REDIS_URL=url, TPV_BROKER_INFLUXDB_URL=influx_server.url,
               TPV_BROKER_INFLUXDB_DATABASE=influx_db, TPV_BROKER_COLLECTOR_INTERVAL_S="0.5")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "api").mkdir()
    (tmp_path / "collector").mkdir()
    with open(tmp_path / "collector" / "err.log", "w") as err:
        collector = subprocess.Popen([*CLI, "collect"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    with open(tmp_path / "api" / "err.log", "w") as err:
        api = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], env=env,
                               stdout=subprocess.DEVNULL, stderr=err)
    answers: list[str] = []

    def published_on(node: DataNode, after: float) -> bool:
        meta = SnapshotStore(node.client(), KEYS).read_meta()
        return meta is not None and meta.created_at > after

    def ranks_fresh() -> bool:
        assert api.poll() is None and collector.poll() is None
        try:
            r = requests.post(f"{base}/api/rank", json=REQUEST, timeout=5)
        except requests.ConnectionError:
            return False
        answers.append(r.text)
        body = r.json()
        return r.status_code == 200 and not body["degraded"] and body["destinations"] == RANKED \
            and body["snapshot_age_s"] < 5

    try:
        wait_for(lambda: published_on(master, 0), "a snapshot on the master")
        wait_for(ranks_fresh, "the API to rank through the sentinel")

        failover_at = time.time()
        with sentinel.client() as s:
            assert s.execute_command("SENTINEL FAILOVER", MASTER_NAME)
        wait_for(lambda: sentinel.master_port_now() == replica.port, "the sentinel to promote the replica")
        wait_for(lambda: replica.client().info("replication")["role"] == "master", "the replica to be master")
        # Nothing can be read from or written to the old master any more.
        master.stop()
        stopped_at = time.time()
        wait_for(lambda: published_on(replica, stopped_at), "the collector to publish on the new master",
                 limit_s=30)
        answers.clear()
        wait_for(ranks_fresh, "the API to rank from the new master", limit_s=30)
        ready = requests.get(f"{base}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert failover_at < SnapshotStore(replica.client(), KEYS).read_meta().created_at
    finally:
        collector_log = _stop(collector, tmp_path / "collector")
        api_log = _stop(api, tmp_path / "api")
    for log in (collector_log, api_log):
        assert "Traceback" not in log, log
        assert PASSWORD not in log, log
    assert not any(PASSWORD in a for a in answers)


def test_sentinel_urls_are_checked_at_start_up_without_showing_the_password() -> None:
    for url, problem in [
        (f"redis+sentinel://:{PASSWORD}@host:26379", "no master name"),
        (f"redis+sentinel://:{PASSWORD}@host:x/mymaster", "sentinel port 'x' is not a number"),
        (f"redis+sentinel://:{PASSWORD}@host/mymaster/zero", "database 'zero' is not a number"),
        (f"redis+sentinel://:{PASSWORD}@,host/mymaster", "a sentinel address is empty"),
        (f"redis+sentinel://:{PASSWORD}@host:70000/mymaster", "out of range"),
    ]:
        with pytest.raises(ConfigError) as exc:
            load_config(environ={"TPV_BROKER_REDIS_URL": url})
        message = str(exc.value)
        assert "redis.url (from TPV_BROKER_REDIS_URL)" in message and problem in message, message
        assert PASSWORD not in message and "***@" in message, message
    config = load_config(environ={"TPV_BROKER_REDIS_URL": "redis+sentinel://a:1,[::1]:2,c/m/3"})
    assert config.redis.url.startswith("redis+sentinel://")


def test_no_reachable_sentinel_is_one_clear_line_without_the_password() -> None:
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()}/{MASTER_NAME}/0"
    store = store_from_config(url, "t", 0.3, 0.3)
    with pytest.raises(StoreError) as exc:
        store.read_meta()
    message = str(exc.value)
    assert message == (f"Redis at redis+sentinel://***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/{MASTER_NAME}/0 "
                       f"failed while reading the snapshot metadata: No master found for '{MASTER_NAME}' "
                       "(no sentinel reachable, or none knows it)"), message
