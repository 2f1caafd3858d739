"""The tpv-broker command line through click's CliRunner, against the real
redis-server and influxd started by conftest.py."""

from __future__ import annotations

import json
import logging
import pathlib
import re
import time
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from tpv_broker.cli import main
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, SourceStatus
from tpv_broker.devtools.servers import InfluxServer, free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

PREFIX = "clitest"


def run(args: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    # Unset anything from the developer's shell that would change the config.
    base: dict[str, str | None] = {
        "TPV_BROKER_CONFIG": None,
        "TPV_BROKER_REDIS_KEY_PREFIX": PREFIX,
    }
    return CliRunner().invoke(main, args, env={**base, **(env or {})})


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr


def publish(client: redis.Redis, created_at: float) -> Snapshot:
    dests = {
        "pulsar_de": DestinationFigures(id="pulsar_de", status="online", queued=5, running=2, cpus_free=16,
                                        cpus_total=32, mem_free_gb=31.25, mem_total_gb=62.5,
                                        metrics_at=created_at - 30, live_at=created_at - 30,
                                        sources={"queue_by_destination": created_at - 30}),
        "condor_us": DestinationFigures(id="condor_us", status="offline", queued=0),
    }
    snap = Snapshot(meta=SnapshotMeta(created_at=created_at, destinations=2, collector="collector-host"),
                    destinations=dests)
    SnapshotStore(client, KeySchema(PREFIX)).publish(snap)
    return snap


# -- help ----------------------------------------------------------------------------
def test_help_lists_commands() -> None:
    result = run(["--help"])
    assert result.exit_code == 0
    commands = re.findall(r"^\s{2}(\w+)\s", result.output.split("Commands:", 1)[1], re.MULTILINE)
    assert set(commands) == {"collect", "serve", "inspect", "rank", "simulate", "tenants", "health"}


@pytest.mark.parametrize("command", ["collect", "serve", "inspect"])
def test_subcommand_help(command: str) -> None:
    result = run([command, "--help"])
    assert result.exit_code == 0 and f"Usage: main {command}" in result.output


# -- inspect --------------------------------------------------------------------------
def test_inspect_shows_destinations_and_age(redis_client: redis.Redis, redis_url: str) -> None:
    publish(redis_client, time.time())
    result = run(["inspect"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(r"snapshot age \d+\.\d s \(by collector-host, cycle \d+ ms\), 2 destinations, 0 tools$", lines[0])
    assert lines[1].split()[0] == "destination" and lines[1].split()[-3:] == ["age", "s", "health"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"pulsar_de", "condor_us"}
    # the job-independent order: scored pulsar_de, then offline condor_us (no score)
    assert [line.split()[0] for line in lines[2:]] == ["pulsar_de", "condor_us"]
    assert re.fullmatch(r"\d+\.\d", rows["pulsar_de"][6])  # score, e.g. 71.3
    assert rows["condor_us"][6] == "no_metrics"  # offline with no figures at all
    assert rows["pulsar_de"][1:5] == ["online", "5", "2", "16/32"]
    assert rows["pulsar_de"][5] == "31.2/62.5"  # 31.25 GB shown with 1 decimal
    assert rows["condor_us"][1] == "offline"
    assert rows["condor_us"][-2:] == ["-", "-"]  # no metrics_at -> no age; no health judged
    assert re.fullmatch(r"\d+", rows["pulsar_de"][-2])  # age of the metrics, in whole seconds


def test_inspect_json(redis_client: redis.Redis, redis_url: str) -> None:
    snap = publish(redis_client, time.time())
    result = run(["inspect", "--json"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["destinations"]) == {"pulsar_de", "condor_us"}
    assert out["destinations"]["pulsar_de"]["queued"] == 5
    assert out["meta"]["created_at"] == snap.meta.created_at
    assert isinstance(out["meta"]["age_s"], (int, float)) and out["meta"]["age_s"] >= 0


EU_DOWN = "InfluxDB at http://influx.eu.example.org:8086 (database 'galaxy') is unreachable: connection refused"


def publish_with_sources(client: redis.Redis, now: float) -> None:
    """A snapshot of three sources: the network's answered, usegalaxy-eu's
    is down (its last good figures kept), usegalaxy-fr's never answered."""
    snap = publish(client, now)
    snap.meta.sources = {
        "network": SourceStatus(state="ok", answered_at=now - 3),
        "eu": SourceStatus(state="stale", answered_at=now - 125, problem=EU_DOWN, tenant="usegalaxy-eu"),
        "fr": SourceStatus(state="missing", tenant="usegalaxy-fr"),
    }
    SnapshotStore(client, KeySchema(PREFIX)).publish(snap)


def _age(line: str, pattern: str) -> int:
    match = re.fullmatch(pattern, line)
    assert match, line
    return int(match.group(1))


def test_inspect_shows_each_source(redis_client: redis.Redis, redis_url: str) -> None:
    publish_with_sources(redis_client, time.time())
    result = run(["inspect"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # After the snapshot's summary, before the table, by name.
    assert lines[0].startswith("snapshot age ") and lines[4].split()[0] == "destination"
    eu = rf"source eu: stale, answered (\d+) s ago, tenant usegalaxy-eu: {re.escape(EU_DOWN)}"
    assert 125 <= _age(lines[1], eu) <= 127
    assert lines[2] == "source fr: missing, no answer on record, tenant usegalaxy-fr"
    assert 3 <= _age(lines[3], r"source network: ok, answered (\d+) s ago, shared") <= 5


def test_inspect_json_carries_each_sources_state_and_age(redis_client: redis.Redis, redis_url: str) -> None:
    publish_with_sources(redis_client, time.time())
    result = run(["inspect", "--json"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    sources = json.loads(result.output)["meta"]["sources"]
    assert sorted(sources) == ["eu", "fr", "network"]
    eu = sources["eu"]
    assert (eu["state"], eu["problem"], eu["tenant"]) == ("stale", EU_DOWN, "usegalaxy-eu")
    assert 125 <= eu["age_s"] < 127
    assert sources["network"]["tenant"] is None and 3 <= sources["network"]["age_s"] < 5
    assert sources["fr"]["answered_at"] is None and sources["fr"]["age_s"] is None


def test_inspect_uses_the_configured_prefix(redis_client: redis.Redis, redis_url: str) -> None:
    publish(redis_client, time.time())
    result = run(["inspect"], env={"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_REDIS_KEY_PREFIX": "other"})
    assert result.exit_code == 1
    assert "prefix 'other'" in result.output


@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_without_snapshot(redis_client: redis.Redis, redis_url: str, as_json: bool) -> None:
    result = run(["inspect", *(["--json"] if as_json else [])], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 1
    if as_json:
        assert json.loads(result.output) == {"snapshot": None}
    else:
        assert result.output.strip() == (
            f"no snapshot in Redis at {redis_url} (prefix {PREFIX!r}): is the collector running, and is this its "
            f"Redis, database and key_prefix?")
    _no_traceback(result)


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--json"], ["rank", "--tool", "bwa", "pulsar_de"]])
def test_unreachable_redis_is_one_line_naming_the_url_and_what_to_do(command: list[str]) -> None:
    port = free_port()
    result = run(command, env={"TPV_BROKER_REDIS_URL": f"redis://:pw-secret@127.0.0.1:{port}/0"})
    assert result.exit_code == 1
    assert result.stdout == ""  # no degraded answer that looks like a ranking
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: Redis at redis://127.0.0.1:{port}/0 failed while reading the snapshot: ")
    assert "set TPV_BROKER_REDIS_URL" in lines[0] and "source .local/demo/env" in lines[0]
    assert "pw-secret" not in result.output + result.stderr
    _no_traceback(result)


def test_collect_once_with_redis_unreachable_says_what_to_do() -> None:
    port = free_port()
    result = run(["collect", "--once"], env={"TPV_BROKER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                                             "TPV_BROKER_REDIS_SOCKET_TIMEOUT_S": "0.3"})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert f"Redis at redis://127.0.0.1:{port}/0" in lines[0] and "source .local/demo/env" in lines[0]
    _no_traceback(result)


# -- bad configuration -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("collector:\n  interval_s: -1\n", "collector.interval_s"),
        ("api:\n  workerz: 2\n", "api.workerz"),
        ("collector:\n  presets: [nope]\n", "collector.presets.0"),
    ],
)
@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("command", ["inspect", "collect"])
def test_bad_config_file_exits_1_naming_the_key(tmp_path: pathlib.Path, text: str, key: str, how: str,
                                                command: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    args = ["--config", str(path), command] if how == "option" else [command]
    env = {"TPV_BROKER_CONFIG": str(path)} if how == "env" else {}
    args += ["--once"] if command == "collect" else []
    result = run(args, env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid configuration in ")
    assert key in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _no_traceback(result)


@pytest.mark.parametrize(("text", "where"), [("a: [1, 2\nb: 3\n", "(line 2, column 2)"),
                                            ("a: b: c\n", "(line 1, column 5)")])
def test_a_config_file_that_is_no_yaml_is_one_line(tmp_path: pathlib.Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run(["--config", str(path), "inspect"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: config file {path} is not valid YAML: ") and line.endswith(where), line
    _no_traceback(result)


def test_bad_env_value_exits_1_naming_env_var() -> None:
    result = run(["inspect"], env={"TPV_BROKER_API_WORKERS": "many"})
    assert result.exit_code == 1
    assert "api.workers (from TPV_BROKER_API_WORKERS)" in result.stderr
    _no_traceback(result)


def test_missing_config_file_exits_1(tmp_path: pathlib.Path) -> None:
    result = run(["--config", str(tmp_path / "nope.yaml"), "inspect"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: config file not found:")
    _no_traceback(result)


# -- collect --once -------------------------------------------------------------------------
def _lines(now: int) -> list[str]:
    return [
        f"queue_by_destination,destination_id=pulsar_de,state=queued count=5 {now}",
        f"queue_by_destination,destination_id=pulsar_de,state=running count=2 {now}",
        f"queue_by_destination,destination_id=pulsar_uk,state=queued count=7 {now}",
        # pulsar-util's old format: destination_id and destination_status are string fields,
        # destination_id is the AMQP vhost (aliased in the config file)
        ("htcondor_cluster_usage,classad=machine total_detected_cpus=32,unclaimed_cpus=16,total_memory=64000,"
         f'unclaimed_memory=32000,destination_id="galaxy_sk01",destination_status="offline" {now}'),
        ("destination-queue-run-time,destination_id=pulsar_de,tool_id=cat1 "
         f"count=4,median_queue=10,median_run=20,perc_95_run=30 {now - 3600}"),
    ]


def test_collect_once_publishes(tmp_path: pathlib.Path, influx_server: InfluxServer, influx_db: str,
                                redis_client: redis.Redis, redis_url: str) -> None:
    # timestamps near the present so they fall in the collector's lookback window
    now = int(time.time())
    influx_server.write_lines(influx_db, _lines(now))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("destinations:\n  pulsar_sk01_tpv:\n    aliases: [galaxy_sk01]\n  pulsar_cz01_tpv: {}\n")
    env = {"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_INFLUXDB_URL": influx_server.url,
           "TPV_BROKER_INFLUXDB_DATABASE": influx_db}
    result = run(["--config", str(cfg), "collect", "--once"], env=env)
    assert result.exit_code == 0, (result.output, result.stderr)
    # pulsar_de, pulsar_uk, pulsar_sk01_tpv (metrics) + pulsar_cz01_tpv (config only) = 4
    assert re.match(r"published: 4 destinations, 1 tools, newest point \d+ s old, \d+ rows in 3 queries",
                    result.output.strip()), result.output
    _no_traceback(result)

    snap = SnapshotStore(redis_client, KeySchema(PREFIX)).read_all()
    assert snap is not None
    assert set(snap.destinations) == {"pulsar_de", "pulsar_uk", "pulsar_sk01_tpv", "pulsar_cz01_tpv"}
    de, uk, sk = snap.destinations["pulsar_de"], snap.destinations["pulsar_uk"], snap.destinations["pulsar_sk01_tpv"]
    assert (de.queued, de.running) == (5, 2)
    assert (uk.queued, uk.running) == (7, 0)
    assert de.median_run_s == 20 and snap.tool_stats["tool:cat1"]["pulsar_de"].count == 4
    assert sk.status == "offline" and sk.cpus_free == 16 and sk.mem_free_gb == 31.25  # 32000 MiB / 1024
    assert sk.in_config and not uk.in_config
    assert snap.meta.newest_point_at == now

    # and inspect shows what collect published
    shown = run(["--config", str(cfg), "inspect"], env=env)
    assert shown.exit_code == 0
    assert {"pulsar_de", "pulsar_uk", "pulsar_sk01_tpv", "pulsar_cz01_tpv"} <= {
        line.split()[0] for line in shown.output.splitlines()[2:]
    }


def test_collect_once_with_influx_down_exits_1(redis_client: redis.Redis, redis_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    env = {"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_INFLUXDB_URL": f"http://127.0.0.1:{port}",
           "TPV_BROKER_INFLUXDB_DATABASE": "galaxy"}
    result = run(["collect", "--once"], env=env)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("NOT published")
    assert f"InfluxDB at http://127.0.0.1:{port} (database 'galaxy') is unreachable" in lines[0]
    _no_traceback(result)
    # nothing was published
    assert redis_client.keys("*") == []
    # and a run that ends here announces no next attempt
    [logged] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle NOT published")]
    assert "keeping the last snapshot" in logged and "next attempt" not in logged, logged


def test_collect_once_keeps_last_snapshot_when_influx_down(redis_client: redis.Redis, redis_url: str) -> None:
    publish(redis_client, 1_700_000_000.0)
    before: dict[Any, Any] = {k: redis_client.hgetall(k) for k in redis_client.keys("*")}
    env = {"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_INFLUXDB_URL": f"http://127.0.0.1:{free_port()}"}
    assert run(["collect", "--once"], env=env).exit_code == 1
    assert {k: redis_client.hgetall(k) for k in redis_client.keys("*")} == before


# -- rank ----------------------------------------------------------------------------------
RANKED = ["rank", "--tool", "cat1", "--cores", "2", "pulsar_de", "condor_us", "pulsar_nowhere"]


def _keys(client: redis.Redis) -> dict[Any, Any]:
    return {k: client.dump(k) for k in client.keys("*")}


def test_rank_prints_one_explained_line_per_candidate(redis_client: redis.Redis, redis_url: str) -> None:
    publish(redis_client, time.time())
    result = run(RANKED, env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output + result.stderr
    header, *lines = result.output.splitlines()
    assert re.fullmatch(r"snapshot \d+\.\d s old, not degraded", header), header
    assert re.fullmatch(r"  1 pulsar_de       score \d+\.\d: .+", lines[0]), lines[0]
    # condor_us is reported offline but has no figures at all; TPV's order within the group.
    assert lines[1:] == ["  2 condor_us       no metrics for this destination",
                         "  3 pulsar_nowhere  no metrics for this destination"]


def test_rank_is_read_only_by_default(redis_client: redis.Redis, redis_url: str) -> None:
    publish(redis_client, time.time())
    before = _keys(redis_client)
    for args in ([], ["--explain"], ["--json"]):
        result = run([*RANKED, *args], env={"TPV_BROKER_REDIS_URL": redis_url})
        assert result.exit_code == 0, result.output + result.stderr
        assert "charged" not in result.output
    assert _keys(redis_client) == before  # no in-flight charge, nothing else either


@pytest.mark.parametrize(("args", "job_key"), [(["--charge"], None), (["--job-id", "4711"], "4711")])
def test_rank_charges_when_asked(redis_client: redis.Redis, redis_url: str, args: list[str],
                                 job_key: str | None) -> None:
    publish(redis_client, time.time())
    before = set(redis_client.keys("*"))
    result = run([*RANKED, *args], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.splitlines()[-1] == (
        f"charged {'job ' + job_key if job_key else 'this job'} to pulsar_de (in-flight, as the API does)")
    added = set(redis_client.keys("*")) - before
    # The placement is counted for destination health, too.
    expected = {f"{PREFIX}:inflight".encode(), f"{PREFIX}:inflight:load".encode(),
                f"{PREFIX}:health:placements".encode()}
    if job_key:
        expected.add(f"{PREFIX}:inflight:job:default:{job_key}".encode())
    assert added == expected
    assert redis_client.zcard(f"{PREFIX}:inflight") == 1


@pytest.mark.parametrize(("env", "said"), [
    ({"TPV_BROKER_INFLIGHT_ENABLED": "false"}, "not charged: in-flight accounting is off (inflight.enabled: false)"),
    ({"TPV_BROKER_API_MAX_SNAPSHOT_AGE_S": "10"},
     "not charged: no candidate was ranked on live figures (the answer is in TPV's order)"),
])
def test_rank_says_why_it_charged_nothing_when_asked_to(redis_client: redis.Redis, redis_url: str,
                                                        env: dict[str, str], said: str) -> None:
    publish(redis_client, time.time() - 60)  # a minute old: too old under a 10 s limit
    before = _keys(redis_client)
    result = run([*RANKED, "--job-id", "4711"], env={"TPV_BROKER_REDIS_URL": redis_url, **env})
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.splitlines()[-1] == said
    assert _keys(redis_client) == before


def test_rank_by_hand_moves_a_placed_jobs_charge_without_counting_it_returned(redis_client: redis.Redis,
                                                                               redis_url: str) -> None:
    """Job 4711 went to pulsar_uk a minute ago (the API charged it); an
    admin places it by hand: its charge moves to pulsar_de, and that is
    no sign it failed on pulsar_uk (through the API it would count as
    returned: docs/health.md)."""
    from tpv_broker.core.charges import Charge
    from tpv_broker.store.inflight import InflightStore
    from tpv_broker.store.keys import KeySchema

    now = time.time()
    publish(redis_client, now)
    keys = KeySchema(PREFIX)
    # as many cores and as much memory as the CLI asks for (more would be a resize, never a return)
    InflightStore(redis_client, keys, max_age_s=600).charge(Charge("pulsar_uk", 2, 1000, now - 60, "4711"))
    result = run([*RANKED, "--job-id", "4711"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.splitlines()[-1] == "charged job 4711 to pulsar_de (in-flight, as the API does)"
    members = [json.loads(m) for m in redis_client.zrange(keys.inflight, 0, -1)]
    assert [(m["d"], m["j"]) for m in members] == [("pulsar_de", "4711")]
    assert not redis_client.exists(keys.health_returns)
    # placed on pulsar_uk, then on pulsar_de: both counted
    assert sorted(f.decode().rsplit(":", 1)[1] for f in redis_client.hkeys(keys.health_placements)) == [
        "pulsar_de", "pulsar_uk"]


# Values the API refuses, as JSON carries them and as typed after the option.
BAD_JOB_VALUES = [
    ("--cores", "-4", -4), ("--cores", "0", 0), ("--cores", "nan", float("nan")), ("--cores", "inf", float("inf")),
    ("--cores", "100001", 100_001), ("--mem", "-1", -1), ("--mem", "nan", float("nan")), ("--gpus", "-0.5", -0.5),
    ("--job-id", "4 2", "4 2"), ("--tool", "bwa*", "bwa*"),
]
JOB_FIELDS = {"--cores": "cores", "--mem": "mem", "--gpus": "gpus", "--job-id": "id", "--tool": "tool_id"}


@pytest.mark.parametrize(("option", "typed", "value"), BAD_JOB_VALUES)
def test_rank_refuses_what_the_api_refuses_in_the_same_words(redis_client: redis.Redis, option: str, typed: str,
                                                             value: Any) -> None:
    from tpv_broker.api import create_app
    from tpv_broker.config.settings import load_config

    field = JOB_FIELDS[option]
    job = {"tool_id": "bwa", field: value}
    app = create_app(load_config(environ={}), store=SnapshotStore(redis_client, KeySchema(PREFIX)))
    resp = app.test_client().post("/api/rank", json={"job": job, "destinations": [{"id": "pulsar_de"}]})
    assert resp.status_code == 400
    [error] = resp.get_json()["errors"]
    assert error["field"] == f"job.{field}"

    args = ["rank", "--tool", typed if option == "--tool" else "bwa", "pulsar_de"]
    if option != "--tool":
        args[1:1] = [option, typed]
    result = run(args, env={"TPV_BROKER_REDIS_URL": "redis://127.0.0.1:1/0"})  # never reached
    assert result.exit_code == 2, result.output
    assert f"Error: {option}: {error['problem']}" in result.output
    _no_traceback(result)


def test_rank_names_every_bad_option_and_argument_at_once() -> None:
    result = run(["rank", "--tool", "bwa", "--cores", "-4", "--mem", "x1", "pulsar_de"])
    assert result.exit_code == 2 and "'x1' is not a number" in result.output
    result = run(["rank", "--tool", "bwa", "--cores", "-4", "--gpus", "-1", "pulsar_de", "pulsar de"])
    assert result.exit_code == 2
    assert ("Error: --cores: Input should be greater than 0 (got -4); --gpus: Input should be greater than or "
            "equal to 0 (got -1); DESTINATIONS[1]: not a valid destination id") in result.output
    result = run(["rank", "--tool", "bwa", "pulsar_de", "pulsar_uk", "pulsar_de"])
    assert result.exit_code == 2
    assert "Error: DESTINATIONS[2]: duplicate destination id 'pulsar_de' (also at DESTINATIONS[0])" in result.output


def test_rank_takes_no_more_candidates_than_the_api() -> None:
    many = [f"d{i}" for i in range(11)]
    result = run(["rank", "--tool", "bwa", *many], env={"TPV_BROKER_API_MAX_CANDIDATES": "10",
                                                       "TPV_BROKER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 2
    assert "Error: DESTINATIONS: at most 10 candidates, got 11" in result.output
    _no_traceback(result)


@pytest.mark.parametrize(("args", "problem"), [
    (["simulate", "--quick", "--hours", "0"], "Invalid value for '--hours': 0 is not a finite number above 0"),
    (["simulate", "--quick", "--hours", "nan"], "'--hours': nan is not a finite number above 0"),
    (["simulate", "--quick", "--refresh", "inf"], "'--refresh': inf is not a finite number above 0"),
    (["simulate", "--quick", "--lag", "-1"], "'--lag': -1 is not a finite number of at least 0"),
    (["simulate", "--quick", "--plot", "/nonexistent/dir/x.png"], "'--plot': /nonexistent/dir/x.png: its "
                                                                  "directory does not exist"),
    (["serve", "--bind", "127.0.0.1:99999"], "'--bind': port '99999' is not a number from 0 to 65535"),
    # api.workers' bounds: 0 ran the config's 2, -1 reached gunicorn
    (["serve", "--workers", "0"], "'--workers': 0 is not in the range 1<=x<=64"),
    (["serve", "--workers", "-1"], "'--workers': -1 is not in the range 1<=x<=64"),
    (["serve", "--workers", "65"], "'--workers': 65 is not in the range 1<=x<=64"),
])
def test_options_that_would_hang_or_crash_later_are_refused_at_once(args: list[str], problem: str) -> None:
    # Each of these hung, divided by zero, or failed with a traceback (after a whole simulation, for --plot).
    result = run(args)
    assert result.exit_code == 2, result.output
    assert problem in " ".join(result.output.split()), result.output


def test_serve_takes_the_workers_the_config_takes() -> None:
    from pydantic import ValidationError

    from tpv_broker.config.api_settings import ApiSettings

    for workers in (1, 64):
        ApiSettings(workers=workers)
    for workers in (0, 65):
        with pytest.raises(ValidationError):
            ApiSettings(workers=workers)


@pytest.mark.parametrize(("body", "problem"), [
    (b"<html><body>Welcome to nginx!</body></html>", "not Prometheus text:"),
    # another exporter's metrics (InfluxDB's own): its zeros would read as the tenants' counts
    (b"# TYPE go_goroutines gauge\ngo_goroutines 12\n", "Prometheus text without tpv_broker_api_ metrics"),
])
def test_tenants_api_answering_something_else_than_metrics_says_so(tmp_path: pathlib.Path, body: bytes,
                                                                   problem: str) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run(["tenants", "--api", url])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert f"error: {url}/metrics is not the broker's /metrics ({problem}" in result.output
    assert "Traceback" not in result.output


def test_tenants_api_unreachable_names_the_cause() -> None:
    port = free_port()  # nothing listens there
    result = run(["tenants", "--api", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: cannot read http://127.0.0.1:{port}/metrics: ConnectionError: "
                                     "connection refused")


@pytest.mark.parametrize("url", ["", "127.0.0.1:8000", "ftp://host"])
def test_tenants_api_must_be_a_url(url: str) -> None:
    result = run(["tenants", "--api", url])
    assert result.exit_code == 2 and "expected the API's URL" in result.output, result.output


def test_a_command_warns_of_variables_nothing_reads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tpv_broker.cli")
    run(["inspect"], {"TPV_BROKER_SCORING_MAX_METRICS_AGE_S": "5",
                      "TPV_BROKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert "environment variables ignored, no such setting: TPV_BROKER_SCORING_MAX_METRICS_AGE_S (" in caplog.text
