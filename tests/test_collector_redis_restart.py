"""Redis stopped under a running collector daemon (``tpv-broker collect``,
a real process) and restarted empty, as a Redis without persistence comes
back: the daemon survives, says so in a few lines (not one per cycle, no
traceback), and its next cycle publishes the whole snapshot again, the tool
statistics included, although its cycles otherwise reuse them and leave
them untouched in Redis."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tpv_broker.devtools.servers import RedisServer
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import CLI, wait_for
from .processes import clean_env as _env
from .test_processes import _stop
from .test_redis_outage_api import own_redis  # noqa: F401 - fixture

INTERVAL_S = 0.3
OUTAGE_CYCLES = 15


def test_collector_republishes_everything_after_redis_restarts_empty(influx_server, influx_db,
                                                                     own_redis: RedisServer,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    load_prototype_data(influx_server, influx_db)
    env = _env(TPV_BROKER_REDIS_URL=own_redis.url, TPV_BROKER_INFLUXDB_URL=influx_server.url,
               TPV_BROKER_INFLUXDB_DATABASE=influx_db, TPV_BROKER_COLLECTOR_INTERVAL_S=str(INTERVAL_S),
               TPV_BROKER_REDIS_SOCKET_TIMEOUT_S="0.3", TPV_BROKER_REDIS_CONNECT_TIMEOUT_S="0.3")
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "collect"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    client = redis.Redis.from_url(own_redis.url)
    store = SnapshotStore(client, KeySchema("tpv_broker"))

    def published_after(t: float) -> bool:
        try:
            meta = store.read_meta()
        except Exception:  # noqa: BLE001 - Redis starting
            return False
        return meta is not None and meta.created_at > t

    try:
        wait_for(lambda: published_after(0), "the daemon's first snapshot")
        # A few cycles that reuse the run-time statistics (refreshed every 300 s).
        later = time.time() + 3 * INTERVAL_S
        wait_for(lambda: published_after(later), "later cycles")
        before = store.read_all()
        assert before is not None and before.tool_stats, "the prototype data has run-time statistics"

        own_redis.stop()
        down_at = time.time()
        time.sleep(OUTAGE_CYCLES * INTERVAL_S)
        assert proc.poll() is None, "the collector died while Redis was down"
        during = (tmp_path / "err.log").read_text()
        own_redis.start()  # same port, nothing in it
        client.close()
        wait_for(lambda: published_after(down_at), "a snapshot in the restarted Redis")
        after = store.read_all()
    finally:
        log = _stop(proc, tmp_path)
        client.close()
    assert proc.returncode == 0, log
    assert after is not None
    # The whole snapshot, not only what changed since the last cycle.
    assert after.tool_stats == before.tool_stats
    assert after.destinations.keys() == before.destinations.keys()
    assert after.meta.tools == before.meta.tools
    # Clearly, and not once per cycle: at most one failed cycle before the
    # lease lapsed, one line from the lease, no tracebacks.
    assert "Traceback" not in log
    redis_lines = [line for line in during.splitlines() if "Connection refused" in line or "unreachable" in line]
    assert 1 <= len(redis_lines) <= 3, "\n".join(redis_lines)
    assert sum("collector lease: Redis unreachable" in line for line in redis_lines) == 1, during
    assert "collector lease acquired" in log[len(during):], log[len(during):]
