"""The resilience settings: redis.connect_timeout_s, api.degraded_status,
collector.lease_s and collector.instance_id, from the file and the environment."""

from __future__ import annotations

import pytest

from tpv_broker.config.settings import load_config
from tpv_broker.errors import ConfigError


def test_defaults() -> None:
    config = load_config(environ={})
    assert config.redis.connect_timeout_s == 0.5
    assert config.api.degraded_status == 200
    assert config.collector.lease_s is None and config.collector.instance_id is None
    assert config.collector.effective_lease_s == config.collector.interval_s == 15


def test_from_the_environment() -> None:
    config = load_config(environ={"TPV_BROKER_API_DEGRADED_STATUS": "503", "TPV_BROKER_COLLECTOR_LEASE_S": "40",
                                  "TPV_BROKER_COLLECTOR_INSTANCE_ID": "collector-2.example.org:1",
                                  "TPV_BROKER_REDIS_CONNECT_TIMEOUT_S": "0.2"})
    assert config.api.degraded_status == 503
    assert config.collector.effective_lease_s == 40
    assert config.collector.instance_id == "collector-2.example.org:1"
    assert config.redis.connect_timeout_s == 0.2


@pytest.mark.parametrize(("env", "problem"), [
    ({"TPV_BROKER_API_DEGRADED_STATUS": "500"},
     "api.degraded_status (from TPV_BROKER_API_DEGRADED_STATUS): must be 200 or 503, got 500"),
    ({"TPV_BROKER_COLLECTOR_LEASE_S": "0"},
     "collector.lease_s (from TPV_BROKER_COLLECTOR_LEASE_S): Input should be greater than 0"),
    ({"TPV_BROKER_COLLECTOR_INSTANCE_ID": "a b"}, "collector.instance_id (from TPV_BROKER_COLLECTOR_INSTANCE_ID)"),
    ({"TPV_BROKER_REDIS_CONNECT_TIMEOUT_S": "-1"}, "redis.connect_timeout_s"),
    ({"TPV_BROKER_REDIS_URL": "http://x"}, "must start with redis://, rediss://, unix:// or redis+sentinel://"),
])
def test_bad_values_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as exc:
        load_config(environ=env)
    assert problem in str(exc.value)
