"""The metric presets: statements (fixed, GROUP BY, no user input) and how hand-built
InfluxDB series become snapshot figures."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tpv_broker.collector.influx import Series
from tpv_broker.collector.presets import (
    CONDOR_MEASUREMENT,
    PRESETS,
    QUEUE_MEASUREMENT,
    RUNTIME_MEASUREMENT,
    CycleData,
    strip_quotes,
)
from tpv_broker.config.collector_settings import ALL_PRESETS, CollectorSettings
from tpv_broker.config.preset_spec import BUILTIN_PRESETS

T = 1_700_000_000.0  # the newest batch's timestamp (epoch seconds, as the client asks with epoch=s)
S = CollectorSettings()  # batch_window_s = 30
ALIASES = {"galaxy_sk01": "pulsar_sk01_tpv", "machine": "pulsar_machine"}


def data(aliases: dict[str, str] | None = None) -> CycleData:
    return CycleData(aliases=dict(ALIASES if aliases is None else aliases))


def apply(preset: str, series: list[Series], d: CycleData | None = None, s: CollectorSettings = S) -> CycleData:
    d = d or data()
    PRESETS[preset].apply(series, d, s)
    return d


# -- statements ---------------------------------------------------------------------
ALLOWED_IDENTIFIERS = {
    QUEUE_MEASUREMENT, RUNTIME_MEASUREMENT, CONDOR_MEASUREMENT,
    "count", "median_queue", "median_run", "perc_95_run", "destination_id", "state", "tool_id",
    # pulsar-util's fields the capacity preset reads
    "total_detected_cpus", "unclaimed_cpus", "total_memory", "unclaimed_memory", "total_gpu_slots", "unclaimed_gpus",
    "destination_status",
}


def test_every_default_preset_is_registered() -> None:
    # The defaults are three of the built-in presets; the others are opt-in.
    assert set(ALL_PRESETS) <= set(PRESETS)
    assert set(PRESETS) == set(BUILTIN_PRESETS)
    assert all(p.name == name for name, p in PRESETS.items())


@pytest.mark.parametrize("name", ALL_PRESETS)
@pytest.mark.parametrize("settings", [CollectorSettings(), CollectorSettings(lookback_s=60, stats_lookback_s=3600)])
def test_statement_holds_only_preset_names(name: str, settings: CollectorSettings) -> None:
    stmt = PRESETS[name].statement(settings)
    # one statement, no string literals (so no ids compared in a WHERE), no statement separator
    assert ";" not in stmt and "'" not in stmt
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', stmt)
    assert quoted and set(quoted) <= ALLOWED_IDENTIFIERS, quoted
    assert stmt.startswith("SELECT ")
    # the only numbers come from the settings: the lookback windows, in whole seconds
    windows = {str(int(settings.lookback_s)), str(int(settings.stats_lookback_s))}
    assert set(re.findall(r"now\(\) - (\d+)s", stmt)) <= windows


@pytest.mark.parametrize(
    ("name", "group_by", "window"),
    [
        ("queue_by_destination", 'GROUP BY "destination_id", "state"', "now() - 900000ms"),  # lookback 900 s
        ("destination_queue_run_time", 'GROUP BY "destination_id", "tool_id"', "now() - 259200000ms"),  # 3 days
    ],
)
def test_grouped_statements(name: str, group_by: str, window: str) -> None:
    stmt = PRESETS[name].statement(S)
    assert group_by in stmt and window in stmt


@pytest.mark.parametrize("name", ["queue_by_destination", "htcondor_cluster_usage"])
def test_sub_second_lookback_does_not_become_zero(name: str) -> None:
    assert "now() - 500ms" in PRESETS[name].statement(CollectorSettings(lookback_s=0.5))


def test_condor_statement_reads_all_destinations_at_once() -> None:
    # destination_id is a string field in this format, so no GROUP BY is possible;
    # still one statement for every site, never a per-destination WHERE.
    stmt = PRESETS["htcondor_cluster_usage"].statement(S)
    # only the keys it reads: half the bytes of * for pulsar-util's lines
    assert stmt == ('SELECT "total_detected_cpus"::field, "unclaimed_cpus"::field, "total_memory"::field, '
                    '"unclaimed_memory"::field, "total_gpu_slots"::field, "unclaimed_gpus"::field, '
                    '"destination_status"::field, "destination_id"::field, "destination_id"::tag '
                    'FROM "htcondor_cluster_usage" WHERE time > now() - 900000ms AND time <= now() + 300000ms')


def test_a_read_since_the_last_one_is_not_grouped_and_names_its_tags() -> None:
    # GROUP BY over every series costs InfluxDB 1.6 seconds even for an
    # empty window; the newest point per (tool, destination) is chosen when
    # the rows are applied. Tags come back as columns.
    stmt = PRESETS["destination_queue_run_time"].recent(600).statement(S)
    assert stmt == ('SELECT "count", "median_queue", "median_run", "perc_95_run", "destination_id"::tag, '
                    '"tool_id"::tag FROM "destination-queue-run-time" '
                    "WHERE time > now() - 600000ms AND time <= now() + 300000ms")


# -- strip_quotes / canonical ids ------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"galaxy_sk01"', "galaxy_sk01"),
        ("'machine'", "machine"),
        ("galaxy_sk01", "galaxy_sk01"),
        ('  "galaxy_sk01" ', "galaxy_sk01"),
        ('"mismatched\'', '"mismatched\''),  # different quote characters: left alone
        ('"', '"'),  # a lone quote is not a quoted value
        ('""', ""),
        ('"a"b"', 'a"b'),
    ],
)
def test_strip_quotes(raw: str, expected: str) -> None:
    assert strip_quotes(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"galaxy_sk01"', "pulsar_sk01_tpv"),  # quotes stripped, then alias
        ("galaxy_sk01", "pulsar_sk01_tpv"),
        ("'machine'", "pulsar_machine"),
        ("pulsar_de", "pulsar_de"),  # no alias: kept
        ('"pulsar_de"', "pulsar_de"),
    ],
)
def test_canonical(raw: str, expected: str) -> None:
    assert data().canonical(raw) == expected


# -- gxadmin queue --by destination ----------------------------------------------------------
def q(dest: str, state: str, at: float, count: float) -> Series:
    return Series(QUEUE_MEASUREMENT, {"destination_id": dest, "state": state}, ["time", "count"], [[at, count]])


def test_queue_counts_not_swapped() -> None:
    d = apply("queue_by_destination", [q("pulsar_de", "queued", T, 5), q("pulsar_de", "running", T, 12)])
    fig = d.destinations["pulsar_de"]
    assert (fig.queued, fig.running) == (5.0, 12.0)
    assert fig.sources == {QUEUE_MEASUREMENT: T}
    assert d.rows_read == 2


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (T, 7.0),
        (T - 30, 7.0),  # 30 s behind the newest point: T - 30 >= T - 30 -> same batch
        (T - 30.5, 0.0),  # just outside the 30 s window: gxadmin no longer printed it -> 0
        (T - 600, 0.0),
    ],
)
def test_series_missing_from_newest_batch_counts_as_zero(at: float, expected: float) -> None:
    series = [q("pulsar_de", "queued", T, 3), q("pulsar_uk", "queued", at, 7)]
    d = apply("queue_by_destination", series)
    assert d.destinations["pulsar_uk"].queued == expected
    assert d.destinations["pulsar_de"].queued == 3.0


@pytest.mark.parametrize(("window", "expected"), [(0, 0.0), (59, 0.0), (60, 4.0), (600, 4.0)])
def test_batch_window_is_taken_from_settings(window: float, expected: float) -> None:
    # uk's point is 60 s older than the newest
    series = [q("pulsar_de", "running", T, 1), q("pulsar_uk", "queued", T - 60, 4)]
    d = apply("queue_by_destination", series, s=CollectorSettings(batch_window_s=window))
    assert d.destinations["pulsar_uk"].queued == expected


def test_missing_state_means_zero() -> None:
    # only a running series for uk: nothing queued there
    d = apply("queue_by_destination", [q("pulsar_uk", "running", T, 4)])
    assert (d.destinations["pulsar_uk"].queued, d.destinations["pulsar_uk"].running) == (0.0, 4.0)


def test_queue_aliases_and_quotes() -> None:
    d = apply("queue_by_destination", [q('"galaxy_sk01"', "queued", T, 2), q("galaxy_sk01", "running", T, 6)])
    assert set(d.destinations) == {"pulsar_sk01_tpv"}
    assert (d.destinations["pulsar_sk01_tpv"].queued, d.destinations["pulsar_sk01_tpv"].running) == (2.0, 6.0)


@pytest.mark.parametrize(
    "stale_first",
    [
        True,
        False,
    ],
)
def test_stale_alias_series_does_not_overwrite_fresh_count(stale_first: bool) -> None:
    # galaxy_sk01 -> pulsar_sk01_tpv; the alias series is 600 s behind the newest batch
    fresh = q("pulsar_sk01_tpv", "queued", T, 5)
    stale = q("galaxy_sk01", "queued", T - 600, 9)
    d = apply("queue_by_destination", [stale, fresh] if stale_first else [fresh, stale])
    assert d.destinations["pulsar_sk01_tpv"].queued == 5.0


@pytest.mark.parametrize(
    "series",
    [
        Series(QUEUE_MEASUREMENT, {"destination_id": "d", "state": "new"}, ["time", "count"], [[T, 3]]),
        Series(QUEUE_MEASUREMENT, {"state": "queued"}, ["time", "count"], [[T, 3]]),
        Series(QUEUE_MEASUREMENT, {"destination_id": "d", "state": "queued"}, ["time", "count"], [[T, None]]),
        Series(QUEUE_MEASUREMENT, {"destination_id": "d", "state": "queued"}, ["time", "count"], [[None, 3]]),
        Series(QUEUE_MEASUREMENT, {"destination_id": "d", "state": "queued"}, ["time", "count"], [[T, "many"]]),
    ],
    ids=["other-state", "no-destination", "null-count", "null-time", "non-numeric"],
)
def test_queue_rows_that_say_nothing_are_skipped(series: Series) -> None:
    d = apply("queue_by_destination", [series])
    assert d.destinations == {} and d.rows_read == 0


def test_queue_no_series() -> None:
    assert apply("queue_by_destination", []).destinations == {}


# -- gxadmin destination-queue-run-time ---------------------------------------------------------
RT_COLUMNS = ["time", "count", "median_queue", "median_run", "perc_95_run"]


def rt(dest: str, tool: str, count: Any, mq: Any, mr: Any, p95: Any = None, at: float = T) -> Series:
    tags = {"destination_id": dest, "tool_id": tool}
    return Series(RUNTIME_MEASUREMENT, tags, RT_COLUMNS, [[at, count, mq, mr, p95]])


def test_runtime_per_tool_figures() -> None:
    d = apply("destination_queue_run_time", [rt("pulsar_de", "fastp/0.23.4", 12, 38.5, 280, 700)])
    f = d.tool_stats["fastp/0.23.4"]["pulsar_de"]
    assert (f.count, f.median_queue_s, f.median_run_s, f.perc_95_run_s, f.at) == (12, 38.5, 280, 700, T)
    assert d.destinations["pulsar_de"].sources == {RUNTIME_MEASUREMENT: T}


@pytest.mark.parametrize(
    ("rows", "median_queue", "median_run"),
    [
        # one tool: its medians
        ([("a", 10, 30, 100)], 30.0, 100.0),
        # queue: (10*30 + 30*70) / (10+30) = (300 + 2100) / 40 = 60
        # run:   (10*100 + 30*300) / 40   = (1000 + 9000) / 40 = 250
        ([("a", 10, 30, 100), ("b", 30, 70, 300)], 60.0, 250.0),
        # a tool with count 0 carries no weight: same as above
        ([("a", 10, 30, 100), ("b", 30, 70, 300), ("c", 0, 9999, 9999)], 60.0, 250.0),
        # c has no median_queue: queue over a,b only = 60;
        # run: (1000 + 9000 + 5*50) / (10+30+5) = 10250 / 45 = 227.77...
        ([("a", 10, 30, 100), ("b", 30, 70, 300), ("c", 5, None, 50)], 60.0, 10250 / 45),
        # no counts at all -> unknown
        ([("a", 0, 30, 100)], None, None),
        # count missing (None) counts as 0
        ([("a", None, 30, 100)], None, None),
    ],
)
def test_runtime_count_weighted_destination_medians(rows, median_queue, median_run) -> None:
    d = apply("destination_queue_run_time", [rt("pulsar_de", tool, c, mq, mr) for tool, c, mq, mr in rows])
    fig = d.destinations["pulsar_de"]
    assert fig.median_queue_s == (None if median_queue is None else pytest.approx(median_queue))
    assert fig.median_run_s == (None if median_run is None else pytest.approx(median_run))
    assert set(d.tool_stats) == {tool for tool, *_ in rows}


def test_runtime_medians_are_per_destination() -> None:
    # de: (1*10 + 3*50)/4 = 160/4 = 40; uk: only 20
    series = [rt("pulsar_de", "a", 1, 10, 1), rt("pulsar_de", "b", 3, 50, 1), rt("pulsar_uk", "a", 2, 20, 1)]
    d = apply("destination_queue_run_time", series)
    assert d.destinations["pulsar_de"].median_queue_s == pytest.approx(40.0)
    assert d.destinations["pulsar_uk"].median_queue_s == pytest.approx(20.0)
    assert set(d.tool_stats["a"]) == {"pulsar_de", "pulsar_uk"}


def test_runtime_aliases_and_only_newest_row() -> None:
    # rows come newest first (ORDER BY time DESC LIMIT 1); only the first is used
    ser = Series(RUNTIME_MEASUREMENT, {"destination_id": '"galaxy_sk01"', "tool_id": "t"}, RT_COLUMNS,
                 [[T, 4, 10, 20, 30], [T - 86400, 100, 999, 999, 999]])
    d = apply("destination_queue_run_time", [ser])
    assert set(d.destinations) == {"pulsar_sk01_tpv"}
    assert d.tool_stats["t"]["pulsar_sk01_tpv"].count == 4
    assert d.destinations["pulsar_sk01_tpv"].median_run_s == 20.0
    assert d.rows_read == 1


def test_runtime_series_without_tags_are_skipped() -> None:
    ser = Series(RUNTIME_MEASUREMENT, {"destination_id": "d"}, RT_COLUMNS, [[T, 4, 10, 20, 30]])
    d = apply("destination_queue_run_time", [ser])
    assert d.destinations == {} and d.tool_stats == {}


# -- pulsar-util htcondor_cluster_usage ------------------------------------------------------------
CONDOR_COLUMNS = ["time", "classad", "destination_id", "destination_status", "total_detected_cpus",
                  "unclaimed_cpus", "total_memory", "unclaimed_memory", "total_gpu_slots", "unclaimed_gpus"]


def condor_row(dest: str, at: float = T, status: str = "online", cpus: Any = 32, free_cpus: Any = 16,
               mem: Any = 64000, free_mem: Any = 32000, gpus: Any = None, free_gpus: Any = None) -> list[Any]:
    return [at, "machine", dest, status, cpus, free_cpus, mem, free_mem, gpus, free_gpus]


def condor(*rows: list[Any], columns: list[str] = CONDOR_COLUMNS) -> list[Series]:
    # SELECT * without GROUP BY: one series, no tags
    return [Series(CONDOR_MEASUREMENT, {}, columns, list(rows))]


@pytest.mark.parametrize(
    ("mib", "gb"),
    [
        (32000, 31.25),  # 32000 / 1024 = 31.25
        (64000, 62.5),  # 64000 / 1024 = 62.5
        (1024, 1.0),
        (0, 0.0),
        (None, None),
    ],
)
def test_condor_memory_mib_to_gb(mib: Any, gb: float | None) -> None:
    d = apply("htcondor_cluster_usage", condor(condor_row("condor_us", mem=mib, free_mem=mib)))
    fig = d.destinations["condor_us"]
    assert (fig.mem_total_gb, fig.mem_free_gb) == (gb, gb)


def test_condor_figures() -> None:
    d = apply("htcondor_cluster_usage", condor(condor_row("condor_us", gpus=4, free_gpus=1)))
    fig = d.destinations["condor_us"]
    assert (fig.cpus_total, fig.cpus_free, fig.gpus_total, fig.gpus_free) == (32, 16, 4, 1)
    assert (fig.mem_total_gb, fig.mem_free_gb) == (62.5, 31.25)
    assert fig.status == "online"
    assert fig.sources == {CONDOR_MEASUREMENT: T}


@pytest.mark.parametrize("newest_first", [True, False])
def test_condor_newest_row_per_destination_wins(newest_first: bool) -> None:
    old = condor_row("condor_us", at=T - 60, free_cpus=2, status="offline")
    new = condor_row("condor_us", at=T, free_cpus=20, status="online")
    other = condor_row("pulsar_de", at=T - 30, free_cpus=5)
    rows = [new, other, old] if newest_first else [old, other, new]
    d = apply("htcondor_cluster_usage", condor(*rows))
    assert d.destinations["condor_us"].cpus_free == 20
    assert d.destinations["condor_us"].status == "online"
    assert d.destinations["pulsar_de"].cpus_free == 5
    assert d.rows_read == 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [("offline", "offline"), ("online", "online"), ('"offline"', "offline"), ("draining", "unknown"),
     (None, "unknown")],
)
def test_condor_status(status: Any, expected: str) -> None:
    d = apply("htcondor_cluster_usage", condor(condor_row("condor_us", status=status)))
    assert d.destinations["condor_us"].status == expected


def test_condor_aliases_and_quotes() -> None:
    d = apply("htcondor_cluster_usage", condor(condor_row('"galaxy_sk01"'), condor_row("'machine'", at=T - 1)))
    assert set(d.destinations) == {"pulsar_sk01_tpv", "pulsar_machine"}


def test_condor_alias_and_canonical_rows_merge_newest_wins() -> None:
    # the same site under its vhost and its TPV id: one destination, the newer row
    rows = [condor_row("galaxy_sk01", at=T, free_cpus=9), condor_row("pulsar_sk01_tpv", at=T - 60, free_cpus=1)]
    d = apply("htcondor_cluster_usage", condor(*rows))
    assert set(d.destinations) == {"pulsar_sk01_tpv"}
    assert d.destinations["pulsar_sk01_tpv"].cpus_free == 9


def test_condor_tag_and_field_of_same_name() -> None:
    # InfluxDB 1.x calls the later of two same-named columns <name>_1 (here the tag)
    columns = [*CONDOR_COLUMNS, "destination_id_1"]
    row = [*condor_row(None), "condor_us"]  # type: ignore[arg-type]
    d = apply("htcondor_cluster_usage", condor(row, columns=columns))
    assert set(d.destinations) == {"condor_us"}


@pytest.mark.parametrize(
    "row",
    [condor_row(None), [None, *condor_row("condor_us")[1:]]],  # type: ignore[arg-type]
    ids=["no-destination", "no-time"],
)
def test_condor_rows_without_essentials_are_skipped(row: list[Any]) -> None:
    assert apply("htcondor_cluster_usage", condor(row)).destinations == {}


def test_condor_row_without_totals_gives_status_only() -> None:
    d = apply("htcondor_cluster_usage", condor(condor_row("condor_us", cpus=None))).destinations["condor_us"]
    assert d.cpus_total is None and d.cpus_free is None and d.mem_free_gb is None
    assert d.status == "online"


def test_condor_new_format_row_is_read() -> None:
    columns = ["time", "count", "destination_id", "destination_status", "unclaimed_cpus", "unclaimed_memory",
               "unclaimed_tag"]
    rows = [[T, 3, '"galaxy_sk01"', "offline", 8, 16000, "8c_16000m"]]
    d = apply("htcondor_cluster_usage", condor(*rows, columns=columns))
    assert d.destinations["pulsar_sk01_tpv"].status == "offline"


# -- presets together --------------------------------------------------------------------
def test_presets_merge_into_one_destination() -> None:
    d = data()
    apply("queue_by_destination", [q("galaxy_sk01", "queued", T, 2)], d)
    apply("destination_queue_run_time", [rt("pulsar_sk01_tpv", "t", 1, 5, 6, at=T - 3600)], d)
    apply("htcondor_cluster_usage", condor(condor_row('"galaxy_sk01"', at=T - 10)), d)
    assert set(d.destinations) == {"pulsar_sk01_tpv"}
    fig = d.destinations["pulsar_sk01_tpv"]
    assert (fig.queued, fig.running, fig.cpus_free, fig.median_run_s) == (2.0, 0.0, 16.0, 6.0)
    assert fig.sources == {QUEUE_MEASUREMENT: T, RUNTIME_MEASUREMENT: T - 3600, CONDOR_MEASUREMENT: T - 10}


def test_a_destinations_freshness_is_its_newest_live_point_not_its_statistics() -> None:
    # live_at judges staleness and ends in-flight charges the figures show: a daily statistics point newer
    # than the queue's would hide a lagging exporter and end charges the queue cannot show yet.
    from tpv_broker.collector.cycle import build_snapshot
    from tpv_broker.collector.cycle_data import CycleData
    from tpv_broker.config.settings import BrokerConfig
    from tpv_broker.core.models import DestinationFigures

    sources = {"queue_by_destination": 100.0, "htcondor_cluster_usage": 90.0, "destination-queue-run-time": 200.0}
    data = CycleData(aliases={}, destinations={"d": DestinationFigures(id="d", sources=sources)})
    figures = build_snapshot(data, BrokerConfig(), now=210.0, cycle_s=0.1).destinations["d"]
    assert (figures.live_at, figures.metrics_at) == (100.0, 200.0)
