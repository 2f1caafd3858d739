"""Presets as data: the description's validation (a bad preset fails
start-up naming the key), units, the reducers on hand-built rows, and site
presets (examples/site-presets.yaml) and the new built-ins read from a real
influxd."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest
import redis

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.cycle_data import CycleData
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.presets import PRESETS, Preset
from tpv_broker.collector.reducers import REDUCERS
from tpv_broker.collector.rows import Row
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import BUILTIN_PRESETS, Combine, FieldMap, PresetSpec
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.errors import ConfigError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

ROOT = pathlib.Path(__file__).resolve().parent.parent
SITE_PRESETS = ROOT / "examples" / "site-presets.yaml"
T = 1_700_000_000.0
S = CollectorSettings()  # batch_window_s 30


def test_every_named_combine_has_a_reducer() -> None:
    assert set(REDUCERS) == set(Combine.__args__)  # type: ignore[attr-defined]


# -- units ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("figure", "unit", "factor"),
    [
        # snapshot memory is GB as TPV counts it: 1 GB = 1024 MiB = 2**30 bytes
        ("mem_free", "MiB", 1 / 1024),  # 32768 MiB -> 32 GB
        ("mem_free", "GiB", 1.0),
        ("mem_free", "bytes", 1 / 1073741824),
        ("mem_free", "KiB", 1 / 1048576),
        ("mem_free", "MB", 1e6 / 1073741824),  # 1 MB = 0.000931... GB
        ("mem_free", "GB", 1e9 / 1073741824),  # 1 GB (decimal) = 0.931... TPV GB
        ("mem_free", "kB", 1e3 / 1073741824),
        ("median_run", "seconds", 1.0),
        ("median_run", "minutes", 60.0),
        ("median_run", "hours", 3600.0),
        ("median_run", "days", 86400.0),
        ("median_run", "ms", 0.001),
        ("median_run", None, 1.0),  # times default to seconds
        ("queued", None, 1.0),
        ("cpus_free", "cores", 1.0),
    ],
)
def test_unit_factors(figure: str, unit: str | None, factor: float) -> None:
    assert FieldMap(field="f", figure=figure, unit=unit).factor() == pytest.approx(factor)  # type: ignore[arg-type]


# -- validation: a bad preset fails start-up, naming the key -----------------------------
GOOD = """
    measurement: m
    destination: {tag: d}
    fields: [{field: c, figure: queued}]
    combine: sum_newest_batch
"""


def _load(tmp_path: pathlib.Path, text: str) -> BrokerConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def _custom(body: str, presets: str = "[mine]") -> str:
    indented = "\n".join("      " + line.strip() if line.strip() else "" for line in body.strip().splitlines())
    return f"collector:\n  custom_presets:\n    mine:\n{indented}\n  presets: {presets}\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD.replace("figure: queued", "figure: mem_free"),
         "collector.custom_presets.mine.fields.0.unit: mem_free needs one of bytes, kB"),
        (GOOD.replace("figure: queued", "figure: mem_free, unit: seconds"),
         "collector.custom_presets.mine.fields.0.unit: mem_free needs one of"),
        (GOOD.replace("figure: queued", "figure: median_run, unit: minutes"),
         "collector.custom_presets.mine.fields.0.figure: combine sum_newest_batch cannot feed median_run"),
        (GOOD.replace("figure: queued", "figure: queue_length"), "collector.custom_presets.mine.fields.0.figure"),
        (GOOD.replace("sum_newest_batch", "average"), "collector.custom_presets.mine.combine"),
        (GOOD.replace("{tag: d}", "{tag: d, field: e}"),
         "collector.custom_presets.mine.destination.tag: give exactly one"),
        (GOOD.replace("{tag: d}", "{field: e}"),
         "collector.custom_presets.mine.read: a destination id held in a field"),
        (GOOD.replace("fields:", "feilds:"), "collector.custom_presets.mine.feilds"),
        (GOOD.replace("figure: queued", "figure: job_count").replace("sum_newest_batch", "tool_stats"),
         "collector.custom_presets.mine.tool_tag: combine tool_stats needs"),
        (GOOD + "    unavailable_states: [down]\n",
         "collector.custom_presets.mine.unavailable_states: no field feeds node_state"),
        (GOOD.replace("{tag: d}", "{tag: d, groups: {x: {}}}"),
         "collector.custom_presets.mine.destination.groups.x.values"),
        (GOOD.replace("fields: [{field: c, figure: queued}]", "fields: []"), "collector.custom_presets.mine.fields"),
    ],
    ids=["mem-without-unit", "mem-in-seconds", "figure-vs-combine", "unknown-figure", "unknown-combine",
         "tag-and-field", "field-id-grouped", "typo", "tool-stats-without-tool-tag", "states-without-node-state",
         "empty-group", "no-fields"],
)
def test_a_bad_preset_fails_start_up_naming_the_key(tmp_path: pathlib.Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _custom(body))
    assert expected in str(err.value)
    # the one problem, not a second one about the preset list naming it
    assert "unknown preset" not in str(err.value)


def test_a_good_custom_preset_loads(tmp_path: pathlib.Path) -> None:
    config = _load(tmp_path, _custom(GOOD, "[queue_by_destination, mine]"))
    specs = config.collector.preset_specs()
    assert list(specs) == ["queue_by_destination", "mine"]
    assert specs["mine"].measurement == "m"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("collector:\n  presets: [queue_by_destination, mine]\n", "collector.presets.1: unknown preset 'mine'"),
        ("collector:\n  custom_presets:\n    slurm_nodes:" + GOOD.replace("\n    ", "\n      "),
         "collector.custom_presets.slurm_nodes: is a built-in preset"),
        ("influxdb:\n  api: flux\n  org: o\n", "influxdb.bucket: required when api is flux; influxdb.token: required"),
        ("influxdb:\n  api: flux2\n", "influxdb.api"),
    ],
    ids=["unknown-name", "builtin-name", "flux-incomplete", "unknown-api"],
)
def test_preset_list_and_api_are_checked(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert expected in str(err.value)


def test_flux_settings_from_the_environment(tmp_path: pathlib.Path) -> None:
    env = {"TPV_BROKER_INFLUXDB_API": "flux", "TPV_BROKER_INFLUXDB_ORG": "o", "TPV_BROKER_INFLUXDB_BUCKET": "b",
           "TPV_BROKER_INFLUXDB_TOKEN": "t0ken"}
    config = load_config(None, environ=env)
    assert (config.influxdb.api, config.influxdb.org, config.influxdb.bucket) == ("flux", "o", "b")
    assert config.influxdb.token is not None and config.influxdb.token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(config)


def test_the_site_example_loads() -> None:
    config = load_config(SITE_PRESETS, environ={})
    assert config.collector.presets == ["au_queue_totals", "au_sinfo", "slurm_partitions"]


# -- reducers on rows ---------------------------------------------------------------------
def apply(name_or_spec: str | PresetSpec, rows: list[Row], aliases: dict[str, str] | None = None,
          s: CollectorSettings = S) -> CycleData:
    preset = PRESETS[name_or_spec] if isinstance(name_or_spec, str) else Preset("custom", name_or_spec)
    data = CycleData(aliases=aliases or {})
    preset.apply_rows(rows, data, s)
    return data


def node(name: str, state: str, cpus: int = 36, alloc: int = 0, mem: int = 1024, alloc_mem: int = 0,
         at: float = T, source: str = "slurm.example.org") -> Row:
    return Row(at=at, tags={"name": name, "source": source, "host": "hoth"},
               values={"cpus": cpus, "alloc_cpu": alloc, "real_memory": mem, "alloc_memory": alloc_mem, "state": state,
                       "free_memory": 1})


@pytest.mark.parametrize(
    ("state", "free_cpus"),
    [
        ("idle", 36), ("mixed", 36), ("allocated", 36), ("IDLE", 36),
        ("down", 0), ("drained", 0), ("draining", 0), ("idle+drain", 0), ("MIXED+DRAIN", 0),
        ("idle*", 0),  # "*": not responding
        ("maint", 0), ("reserved", 0), ("future", 0), ("unknown", 0), ("fail", 0),
        ("idle+completing", 36), ("mixed|planned", 36),
    ],
)
def test_slurm_node_states(state: str, free_cpus: float) -> None:
    # one node, 36 cpus, none allocated: all free unless its state takes it out
    d = apply("slurm_nodes", [node("n1", state)]).destinations["slurm.example.org"]
    assert d.cpus_free == free_cpus and d.cpus_total == 36
    assert d.status == ("online" if free_cpus else "offline")


def test_slurm_sums_the_newest_batch_per_cluster() -> None:
    rows = [
        # cluster a: two current nodes; n_old left the cluster 120 s before a's newest batch
        node("n1", "mixed", cpus=36, alloc=18, mem=2048, alloc_mem=1024, source="a"),
        node("n2", "idle", cpus=16, mem=1024, source="a", at=T - 5),
        node("n_old", "idle", cpus=64, mem=4096, source="a", at=T - 120),
        # cluster b reports a minute later than a: its own batch still counts
        node("m1", "allocated", cpus=8, alloc=8, mem=512, alloc_mem=512, source="b", at=T - 600),
    ]
    d = apply("slurm_nodes", rows, aliases={"a": "slurm_a"}).destinations
    a, b = d["slurm_a"], d["b"]
    # a: total 36 + 16 = 52; free (36-18) + 16 = 34; memory (2048 + 1024)/1024 = 3 GB, free (1024 + 1024)/1024 = 2 GB
    assert (a.cpus_total, a.cpus_free, a.mem_total_gb, a.mem_free_gb) == (52, 34, 3, 2)
    # b: 8 of 8 allocated: nothing free, but online
    assert (b.cpus_total, b.cpus_free, b.mem_free_gb, b.status) == (8, 0, 0, "online")


def test_slurm_groups_by_node_name_patterns() -> None:
    spec = load_config(SITE_PRESETS, environ={}).collector.custom_presets["slurm_partitions"]
    rows = [
        node("bignode1", "idle", cpus=128),
        node("bignode2", "idle", cpus=128, source="other.example.org"),  # source must match
        node("node03", "mixed", cpus=16, alloc=4),
        node("node12", "idle", cpus=16),
        node("node07", "idle", cpus=16),  # matches no pattern: in no destination
    ]
    d = apply(spec, rows).destinations
    assert set(d) == {"slurm_big", "slurm_small"}
    assert (d["slurm_big"].cpus_total, d["slurm_big"].cpus_free) == (128, 128)
    # node03 + node12: total 32, free (16-4) + 16 = 28
    assert (d["slurm_small"].cpus_total, d["slurm_small"].cpus_free) == (32, 28)


def shape(dest: str, tag: str, count: Any, cpus: Any, mem: Any, at: float = T, status: str = "online") -> Row:
    return Row(at=at, tags={"destination_id": dest, "unclaimed_tag": tag},
               values={"count": count, "unclaimed_cpus": cpus, "unclaimed_memory": mem, "destination_status": status})


def test_slot_shapes_newest_batch_per_destination() -> None:
    rows = [
        shape('"galaxy_sk01"', "8c", 3, 8, 16000),
        shape('"galaxy_sk01"', "2c", 10, 2, 4000, at=T - 1),
        shape('"galaxy_sk01"', "32c", 1, 32, 128000, at=T - 400),  # an older batch: no longer free
        shape('"galaxy_cz01"', "4c", 0, 4, 8000, at=T - 3000, status="offline"),  # none free, offline
    ]
    d = apply("htcondor_slot_shapes", rows, aliases={"galaxy_sk01": "pulsar_sk01_tpv"}).destinations
    sk, cz = d["pulsar_sk01_tpv"], d["galaxy_cz01"]
    assert [(s.count, s.cpus, s.mem_gb) for s in sk.slot_shapes] == [(3, 8, 15.625), (10, 2, 3.90625)]
    # 3*8 + 10*2 = 44 cores; 3*15.625 + 10*3.90625 = 85.9375 GB
    assert (sk.cpus_free, sk.mem_free_gb, sk.gpus_free, sk.status) == (44, 85.9375, None, "online")
    assert (cz.slot_shapes, cz.cpus_free, cz.status) == ([], 0, "offline")


def test_slot_shapes_in_the_snapshot_json_are_readable() -> None:
    d = apply("htcondor_slot_shapes", [shape("s", "8c", 3, 8, 16000)]).destinations["s"]
    assert d.model_dump_json(exclude_none=True).count('"slot_shapes":[{"count":3.0,"cpus":8.0,"mem_gb":15.625}]') == 1


def overview(dest: str, state: str, tool: str, count: float, at: float = T, user: str = "0") -> Row:
    return Row(at=at, tags={"destination_id": dest, "state": state, "tool_id": tool, "tool_version": "1",
                            "handler": "h1", "job_runner_name": dest, "user_id": user}, values={"count": count})


def test_queue_overview_sums_over_tools_in_the_newest_batch() -> None:
    rows = [
        overview("pulsar_fr", "queued", "fastp", 2),
        overview("pulsar_fr", "queued", "fastp", 1, user="7"),
        overview("pulsar_fr", "queued", "bwa", 4, at=T - 2),
        overview("pulsar_fr", "running", "fastp", 3),
        overview("pulsar_fr", "new", "fastp", 50),  # no destination yet in Galaxy: not counted
        overview("pulsar_es", "queued", "bwa", 9, at=T - 300),  # an older batch: those jobs left the queue
    ]
    d = apply("queue_overview", rows).destinations
    # fr: queued 2 + 1 + 4 = 7, running 3; es: 0
    assert (d["pulsar_fr"].queued, d["pulsar_fr"].running) == (7, 3)
    assert (d["pulsar_es"].queued, d["pulsar_es"].running) == (0, 0)


def test_builtins_are_data() -> None:
    # every built-in is a PresetSpec and round-trips through its own YAML-able form
    for name, spec in BUILTIN_PRESETS.items():
        assert PresetSpec.model_validate(spec.model_dump()) == spec, name


# -- real influxd ------------------------------------------------------------------------
@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KeySchema("ps"))


def test_site_presets_on_real_influxd(influx_server, influx_db, store: SnapshotStore) -> None:
    now = int(time.time())
    influx_server.write_lines(influx_db, [
        # Galaxy Australia's own measurements
        f"queue_totals,destination=pulsar_mel,state=queued value=7 {now - 5}",
        f"queue_totals,destination=pulsar_mel,state=running value=30 {now - 5}",
        f"queue_totals,destination=pulsar_syd,state=running value=2 {now - 5}",
        f"queue_totals,destination=pulsar_syd,state=queued value=8 {now - 400}",  # older batch
        f"sinfo,cluster=pulsar_mel total_cpus=480,cpus_allocated=400,percent_allocated=83.3 {now - 10}",
        # Telegraf slurm, grouped by node names
        'slurm_nodes,host=hoth,name=bignode1,source=slurm.example.org '
        f'alloc_cpu=64i,alloc_memory=0i,cpus=128i,real_memory=515000i,state="mixed" {now - 7}',
        'slurm_nodes,host=hoth,name=node03,source=slurm.example.org '
        f'alloc_cpu=0i,alloc_memory=0i,cpus=16i,real_memory=64000i,state="idle" {now - 7}',
        'slurm_nodes,host=hoth,name=node12,source=slurm.example.org '
        f'alloc_cpu=0i,alloc_memory=0i,cpus=16i,real_memory=64000i,state="down*" {now - 7}',
    ])
    site = load_config(SITE_PRESETS, environ={})
    config = BrokerConfig(influxdb=InfluxDBSettings(url=influx_server.url, database=influx_db, timeout_s=5),
                          redis=RedisSettings(key_prefix="ps"), collector=site.collector)
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published and not report.errors, report.errors
    assert report.queries == 3
    d = store.read_all().destinations  # type: ignore[union-attr]
    assert (d["pulsar_mel"].queued, d["pulsar_mel"].running) == (7, 30)
    assert (d["pulsar_syd"].queued, d["pulsar_syd"].running) == (0, 2)
    # 480 - 400 = 80 free cores
    assert (d["pulsar_mel"].cpus_total, d["pulsar_mel"].cpus_free) == (480, 80)
    assert (d["slurm_big"].cpus_total, d["slurm_big"].cpus_free) == (128, 64)
    # node12 is down and not responding: 16 + 16 cores in total, 16 free
    assert (d["slurm_small"].cpus_total, d["slurm_small"].cpus_free, d["slurm_small"].status) == (32, 16, "online")
    # live figures: judged fresh
    assert d["pulsar_mel"].live_at is not None


def test_new_builtins_on_real_influxd(influx_server, influx_db, store: SnapshotStore) -> None:
    now = int(time.time())
    influx_server.write_lines(influx_db, [
        # new pulsar-util format: the quotes are part of the tag value
        'htcondor_cluster_usage,destination_id="galaxy_sk01",unclaimed_tag=8c_16000m '
        f'count=3,unclaimed_cpus=8,unclaimed_memory=16000,destination_status="online" {now - 3}',
        'htcondor_cluster_usage,destination_id="galaxy_sk01",unclaimed_tag=2c_4000m '
        f'count=10,unclaimed_cpus=2,unclaimed_memory=4000,destination_status="online" {now - 3}',
        # old format for another site, same measurement: not a shape
        'htcondor_cluster_usage,classad=machine total_detected_cpus=16,unclaimed_cpus=16,total_memory=32768,'
        f'unclaimed_memory=32768,destination_id="pulsar_it",destination_status="online" {now - 2}',
        "queue-overview,destination_id=pulsar_fr,handler=h1,job_runner_name=pulsar_fr,state=queued,"
        f"tool_id=a,tool_version=1,user_id=0 count=2 {now - 1}",
        "queue-overview,destination_id=pulsar_fr,handler=h2,job_runner_name=pulsar_fr,state=queued,"
        f"tool_id=b,tool_version=1,user_id=0 count=5 {now - 1}",
        "queue-overview,destination_id=pulsar_fr,handler=h1,job_runner_name=pulsar_fr,state=running,"
        f"tool_id=a,tool_version=1,user_id=0 count=1 {now - 1}",
        'slurm_nodes,host=hoth,name=node1,source=slurm.example.org '
        f'alloc_cpu=8i,alloc_memory=2048i,cpus=36i,real_memory=8192i,free_memory=100i,state="mixed" {now - 4}',
    ])
    config = BrokerConfig(
        influxdb=InfluxDBSettings(url=influx_server.url, database=influx_db, timeout_s=5),
        redis=RedisSettings(key_prefix="ps"),
        collector=CollectorSettings(
            presets=["htcondor_cluster_usage", "htcondor_slot_shapes", "queue_overview", "slurm_nodes"]),
        destinations={"pulsar_sk01_tpv": {"aliases": ["galaxy_sk01"]},
                      "slurm_cluster": {"aliases": ["slurm.example.org"]}},
    )
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published and not report.errors, report.errors
    d = store.read_all().destinations  # type: ignore[union-attr]
    sk = d["pulsar_sk01_tpv"]
    assert [(s.count, s.cpus) for s in sk.slot_shapes] == [(3, 8), (10, 2)]
    assert (sk.cpus_free, sk.status) == (44, "online")  # 3*8 + 10*2
    assert d["pulsar_it"].slot_shapes is None and d["pulsar_it"].cpus_free == 16
    assert (d["pulsar_fr"].queued, d["pulsar_fr"].running) == (7, 1)  # 2 + 5 queued over two tools
    # slurm: 36 - 8 = 28 cores free; (8192 - 2048) / 1024 = 6 GB (free_memory, the OS's, is not used)
    assert (d["slurm_cluster"].cpus_free, d["slurm_cluster"].mem_free_gb) == (28, 6)
    # pulsar_fr was seen by a preset feeding the queue: destinations it did not mention have no jobs
    assert (d["pulsar_it"].queued, d["pulsar_it"].running) == (0, 0)
