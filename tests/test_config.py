"""load_config: zero-config defaults, the repo's config.yaml, TPV_BROKER_*
environment overrides, and a ConfigError naming the key for every bad input."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from pydantic import SecretStr

from tpv_broker.config.collector_settings import ALL_PRESETS
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.errors import ConfigError

REPO_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "config.yaml"
SECRET = "s3cr3t-Pa55w0rd"


def _write(tmp_path: pathlib.Path, text: str, name: str = "config.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- zero-config and the shipped file -----------------------------------------
def test_defaults_load_with_no_file_and_empty_environment() -> None:
    config = load_config(environ={})
    assert isinstance(config, BrokerConfig)
    assert config.influxdb.url == "http://127.0.0.1:8086"
    assert config.influxdb.database == "galaxy"
    assert config.influxdb.password is None
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.redis.key_prefix == "tpv_broker"
    assert config.collector.presets == list(ALL_PRESETS)
    assert config.collector.interval_s == 15.0
    assert config.api.max_snapshot_age_s == 300.0
    assert config.destinations == {}
    assert config.alias_map() == {}


def test_empty_file_is_the_defaults(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "# nothing but a comment\n")
    assert load_config(path, environ={}) == load_config(environ={})


def test_repo_config_yaml_loads() -> None:
    config = load_config(REPO_CONFIG, environ={})
    assert config.collector.presets == list(ALL_PRESETS)
    assert config.collector.stats_lookback_s == 259200
    assert set(config.destinations) == {
        "pulsar_sk01_tpv", "pulsar_cz01_tpv", "pulsar_fr01_tpv", "pulsar_de", "pulsar_be01", "pulsar_uk",
    }
    assert config.alias_map() == {
        "galaxy_sk01": "pulsar_sk01_tpv",
        "galaxy_cz01": "pulsar_cz01_tpv",
        "galaxy_fr01": "pulsar_fr01_tpv",
    }
    assert config.destinations["pulsar_uk"].longitude == pytest.approx(-0.1278)
    assert set(config.object_stores) >= {"object_store_germany", "object_store_australia"}


def test_object_store_extra_keys_are_ignored(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """\
        object_stores:
          os1: {latitude: 1.5, longitude: 2.5, other_key: whatever}
        """)
    assert load_config(path, environ={}).object_stores["os1"].latitude == 1.5


# -- environment overrides ------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "getter", "expected"),
    [
        ({"TPV_BROKER_REDIS_URL": "redis://cache:6380/2"}, lambda c: c.redis.url, "redis://cache:6380/2"),
        ({"TPV_BROKER_INFLUXDB_URL": "https://influx.example:8086"}, lambda c: c.influxdb.url,
         "https://influx.example:8086"),
        ({"TPV_BROKER_INFLUXDB_DATABASE": "telegraf"}, lambda c: c.influxdb.database, "telegraf"),
        ({"TPV_BROKER_INFLUXDB_PASSWORD": SECRET}, lambda c: c.influxdb.password.get_secret_value(), SECRET),
        # comma list, blanks and empty items dropped
        ({"TPV_BROKER_COLLECTOR_PRESETS": " queue_by_destination, ,htcondor_cluster_usage "},
         lambda c: c.collector.presets, ["queue_by_destination", "htcondor_cluster_usage"]),
        # a string from the environment is coerced to the field's type: "60" -> 60.0
        ({"TPV_BROKER_COLLECTOR_INTERVAL_S": "60"}, lambda c: c.collector.interval_s, 60.0),
        ({"TPV_BROKER_API_MAX_CANDIDATES": "7"}, lambda c: c.api.max_candidates, 7),
        ({"TPV_BROKER_REDIS_KEY_PREFIX": "other"}, lambda c: c.redis.key_prefix, "other"),
        ({"TPV_BROKER_INFLUXDB_VERIFY_TLS": "false"}, lambda c: c.influxdb.verify_tls, False),
    ],
)
def test_env_override_without_file(env: dict[str, str], getter, expected) -> None:
    assert getter(load_config(environ=env)) == expected


def test_env_overrides_file_value_and_keeps_the_rest_of_the_section(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """\
        influxdb:
          url: http://file-host:8086
          database: from_file
          timeout_s: 3
        """)
    config = load_config(path, environ={"TPV_BROKER_INFLUXDB_DATABASE": "from_env"})
    assert config.influxdb.database == "from_env"
    assert config.influxdb.url == "http://file-host:8086"
    assert config.influxdb.timeout_s == 3


def test_env_override_into_a_null_section(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "redis:\n")
    assert load_config(path, environ={"TPV_BROKER_REDIS_URL": "redis://x:1/0"}).redis.url == "redis://x:1/0"


def test_unrelated_env_vars_are_ignored() -> None:
    env = {"TPV_BROKER_NOT_A_SECTION_URL": "ftp://nope", "REDIS_URL": "ftp://nope", "TPV_BROKER_REDIS": "x"}
    assert load_config(environ=env) == load_config(environ={})


def test_tpv_broker_config_env_picks_the_file(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "collector:\n  interval_s: 42\n")
    assert load_config(environ={"TPV_BROKER_CONFIG": str(path)}).collector.interval_s == 42


def test_explicit_path_wins_over_tpv_broker_config(tmp_path: pathlib.Path) -> None:
    a = _write(tmp_path, "collector:\n  interval_s: 1\n", "a.yaml")
    b = _write(tmp_path, "collector:\n  interval_s: 2\n", "b.yaml")
    assert load_config(a, environ={"TPV_BROKER_CONFIG": str(b)}).collector.interval_s == 1


def test_empty_tpv_broker_config_means_defaults() -> None:
    assert load_config(environ={"TPV_BROKER_CONFIG": ""}) == load_config(environ={})


# -- bad configuration: ConfigError naming the key ------------------------------
BAD_FILES = [
    # (id, yaml text, strings the message must contain)
    ("unknown-top-level-key", "colector:\n  interval_s: 5\n", ["colector"]),
    ("unknown-section-key", "influxdb:\n  databse: x\n", ["influxdb.databse"]),
    ("unknown-destination-key", "destinations:\n  d1:\n    core: 4\n", ["destinations.d1.core"]),
    ("negative-interval", "collector:\n  interval_s: -5\n", ["collector.interval_s"]),
    ("zero-interval", "collector:\n  interval_s: 0\n", ["collector.interval_s"]),
    ("interval-not-a-number", "collector:\n  interval_s: often\n", ["collector.interval_s"]),
    ("bad-preset-name", "collector:\n  presets: [queue_by_destination, slurm]\n", ["collector.presets.1"]),
    ("bad-key-prefix", "redis:\n  key_prefix: 'a b'\n", ["redis.key_prefix"]),
    ("latitude-out-of-range", "destinations:\n  d1:\n    latitude: 91\n", ["destinations.d1.latitude"]),
    ("section-not-a-mapping", "redis: just-a-string\n", ["redis"]),
    ("duplicate-alias",
     "destinations:\n  d1:\n    aliases: [vhost]\n  d2:\n    aliases: [vhost]\n",
     ["destinations.d2.aliases", "'vhost'", "'d1'"]),
    ("alias-is-another-destination",
     "destinations:\n  d1:\n    aliases: [d2]\n  d2: {}\n",
     ["destinations.d1.aliases", "'d2'"]),
    ("non-mapping-top-level-list", "- a\n- b\n", ["top level", "list"]),
    ("non-mapping-top-level-scalar", "hello\n", ["top level", "str"]),
    ("invalid-yaml", "collector: [unclosed\n", ["not valid YAML"]),
    ("health-excluded-below-degraded", "collector:\n  health:\n    degraded_excess: 0.3\n    excluded_excess: 0.2\n",
     ["collector.health", "excluded_excess: must be at least degraded_excess"]),
    ("health-recent-beyond-window", "collector:\n  health:\n    window_s: 1200\n    recent_s: 1800\n",
     ["collector.health", "recent_s: must be at most window_s"]),
    # No setting means infinity: each of these passed, then failed every rank answer or collector cycle.
    ("infinite-term-scale", "scoring:\n  terms:\n    queue_wait: {weight: 1, scale_s: .inf, cap_s: 604800}\n",
     ["scoring.terms.queue_wait.scale_s"]),
    ("port-out-of-range", "api:\n  bind: 127.0.0.1:99999\n", ["api.bind", "port '99999' is not a number"]),
    ("infinite-charge-age", "inflight:\n  max_age_s: .inf\n", ["inflight.max_age_s"]),
    ("infinite-lookback", "collector:\n  lookback_s: .inf\n", ["collector.lookback_s"]),
    ("nan-snapshot-age", "api:\n  max_snapshot_age_s: .nan\n", ["api.max_snapshot_age_s"]),
    ("infinite-tenant-rate", "api:\n  tenants:\n    eu: {auth_tokens: [eu-token-0123456789abcdef], "
     "rate_per_s: .inf}\n", ["api.tenants.eu.rate_per_s"]),
]

@pytest.mark.parametrize(("url", "problem"), [
    # redis-py takes both, and fails only when connecting: outside its own errors, so every command
    # ended in a traceback and every API request in a 500.
    ("redis://127.0.0.1:6379/0?socket_timout=1", "unknown option 'socket_timout' in the query"),
    ("redis://redis..local:6379/0", "the host name is not a valid one (an empty or over-long label)"),
    ("redis://127.0.0.1:63x9/0", "Port could not be cast to integer value as '63x9'"),
    ("redis://127.0.0.1:6379/0?protocol=4", "protocol must be either 2 or 3"),
    ("redis+sentinel://a..b:26379/mymaster/0", "sentinel 'a..b': the host name is not a valid one"),
])
def test_a_redis_url_redis_py_would_trip_on_is_refused_with_the_config(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"TPV_BROKER_REDIS_URL": url})
    assert f"redis.url (from TPV_BROKER_REDIS_URL): {url!r}: {problem}" in str(info.value)


def test_redis_urls_redis_py_takes_pass() -> None:
    for url in ("redis://127.0.0.1:6379/0?socket_timeout=1", "rediss://:pw@redis.example.org:6380/1?ssl_cert_reqs=none",
                "unix:///run/redis.sock?db=2", "redis://[::1]:6379/0"):
        assert load_config(environ={"TPV_BROKER_REDIS_URL": url}).redis.url == url


BAD_URL_FILES = [
    pytest.param("influxdb:\n  url: ftp://influx:8086\n", "influxdb.url", id="influx-ftp"),
    pytest.param("redis:\n  url: http://redis:6379\n", "redis.url", id="redis-http"),
]


@pytest.mark.parametrize(("text", "needles"), [pytest.param(t, n, id=i) for i, t, n in BAD_FILES])
def test_bad_config_file_names_the_key(tmp_path: pathlib.Path, text: str, needles: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert str(path) in message
    # A clean one-liner for the CLI, not a chained traceback.
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_bad_url_scheme_is_rejected(tmp_path: pathlib.Path) -> None:
    for text, needle in [("influxdb:\n  url: ftp://x\n", "influxdb.url"), ("redis:\n  url: http://x\n", "redis.url")]:
        with pytest.raises(ConfigError, match=needle + r": must start with"):
            load_config(_write(tmp_path, text), environ={})


@pytest.mark.parametrize(("text", "key"), BAD_URL_FILES)
def test_bad_url_scheme_names_the_dotted_key(tmp_path: pathlib.Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert key in str(info.value)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing, environ={})
    assert str(missing) in str(info.value)


def test_missing_file_from_tpv_broker_config(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(environ={"TPV_BROKER_CONFIG": str(missing)})
    assert str(missing) in str(info.value)


def test_a_config_file_that_is_not_utf8_says_so(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes('redis:\n  key_prefix: "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 25: invalid continuation") as info:
        load_config(path, environ={})
    assert info.value.__cause__ is None


def test_config_path_is_a_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        pytest.param({"TPV_BROKER_COLLECTOR_INTERVAL_S": "-1"},
                     ["collector.interval_s", "TPV_BROKER_COLLECTOR_INTERVAL_S"], id="negative-interval"),
        pytest.param({"TPV_BROKER_COLLECTOR_PRESETS": "queue_by_destination,bogus"},
                     ["collector.presets.1", "TPV_BROKER_COLLECTOR_PRESETS"], id="bad-preset"),
        pytest.param({"TPV_BROKER_API_MAX_CANDIDATES": "lots"},
                     ["api.max_candidates", "TPV_BROKER_API_MAX_CANDIDATES"], id="not-an-int"),
        pytest.param({"TPV_BROKER_REDIS_KEY_PREFIX": "has space"},
                     ["redis.key_prefix", "TPV_BROKER_REDIS_KEY_PREFIX"], id="bad-prefix"),
        pytest.param({"TPV_BROKER_INFLUXDB_URL": "ftp://influx"},
                     ["influxdb.url", "TPV_BROKER_INFLUXDB_URL"], id="influx-url-scheme"),
        pytest.param({"TPV_BROKER_REDIS_URL": "http://redis"},
                     ["redis.url", "TPV_BROKER_REDIS_URL"], id="redis-url-scheme"),
    ],
)
def test_bad_env_value_names_key_and_env_var(env: dict[str, str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_file_value_is_not_blamed_on_env(tmp_path: pathlib.Path) -> None:
    # interval_s comes from the file; only database comes from the environment.
    path = _write(tmp_path, "collector:\n  interval_s: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"TPV_BROKER_INFLUXDB_DATABASE": "x"})
    assert "collector.interval_s" in str(info.value)
    assert "TPV_BROKER_" not in str(info.value)


def test_env_section_override_onto_non_mapping_section(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "redis: [1, 2]\n")
    with pytest.raises(ConfigError, match="redis: must be a mapping"):
        load_config(path, environ={"TPV_BROKER_REDIS_URL": "redis://x:1/0"})


# -- secrets ------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["env", "file"])
def test_password_is_secret_and_never_printed(tmp_path: pathlib.Path, source: str) -> None:
    if source == "env":
        config = load_config(environ={"TPV_BROKER_INFLUXDB_PASSWORD": SECRET})
    else:
        path = _write(tmp_path, f"influxdb:\n  username: u\n  password: {SECRET}\n")
        config = load_config(path, environ={})
    assert isinstance(config.influxdb.password, SecretStr)
    assert config.influxdb.password.get_secret_value() == SECRET
    for text in (repr(config), str(config), repr(config.influxdb), str(config.influxdb),
                 config.model_dump_json(), str(config.model_dump())):
        assert SECRET not in text


def test_token_is_secret_too() -> None:
    config = load_config(environ={"TPV_BROKER_INFLUXDB_TOKEN": SECRET})
    assert config.influxdb.token is not None and config.influxdb.token.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
