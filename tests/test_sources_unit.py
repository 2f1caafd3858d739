"""Several metric sources, without servers: how one cycle's sources are
combined (``cycle._combine``: queues summed, None meaning "not reported",
any other figure from the source with the newest points there whatever the
sources' order, a figure only one source sets kept), run-time statistics
combined count-weighted (``RunTimeStats.combined``) and the combination
cached while its parts stay the same objects (``CollectorState.combined_stats``),
and the config of ``sources``: what is refused and why, the names the
environment's secrets go by, and where the sources' aliases come from."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tpv_broker.collector.cycle import _combine
from tpv_broker.collector.cycle_data import CycleData
from tpv_broker.collector.source import as_sources, sources_for
from tpv_broker.collector.state import CollectorState, RunTimeStats
from tpv_broker.config.settings import SINGLE_SOURCE, BrokerConfig, load_config, source_env_name
from tpv_broker.core.models import DestinationFigures, SlotShape, ToolFigures
from tpv_broker.errors import ConfigError

TENANTS = {
    "usegalaxy-eu": {"auth_tokens": ["eu-token-0123456789abcdef"]},
    "usegalaxy-fr": {"auth_tokens": ["fr-token-0123456789abcdef"], "aliases": {"pulsar-it": "pulsar_it01"}},
}


def _part(measurement: str, at: float, rows: int = 1, **figures: Any) -> CycleData:
    """One source's figures for destination d, its points of ``measurement`` at ``at``."""
    d = DestinationFigures(id="d", **figures)
    d.sources[measurement] = at
    return CycleData(aliases={}, destinations={"d": d}, rows_read=rows, read_ok={measurement})


def _each_order(*make: Any) -> list[DestinationFigures]:
    """d as combined from the parts in every order (fresh parts each time)."""
    return [_combine([m() for m in order]).destinations["d"] for order in itertools.permutations(make)]


# -- _combine --------------------------------------------------------------------------------------------


def test_queues_add_up_over_the_sources():
    for d in _each_order(lambda: _part("queue", 100, queued=3, running=1),
                         lambda: _part("queue", 90, queued=4, running=2)):
        assert (d.queued, d.running) == (7, 3)


def test_a_source_without_a_queue_figure_adds_nothing():
    # None is "not reported", not zero; and a source that reports neither keeps them None.
    for d in _each_order(lambda: _part("queue", 100, queued=3, running=None),
                         lambda: _part("queue", 90, queued=None, running=2),
                         lambda: _part("condor", 80, cpus_free=8)):
        assert (d.queued, d.running) == (3, 2)
    for d in _each_order(lambda: _part("queue", 100, queued=None), lambda: _part("condor", 80, cpus_free=8)):
        assert (d.queued, d.running) == (None, None)


def test_other_figures_come_from_the_source_with_the_newest_points():
    for d in _each_order(lambda: _part("condor", 100, cpus_free=10, status="offline"),
                         lambda: _part("condor", 200, cpus_free=20, status="online")):
        assert (d.cpus_free, d.status) == (20, "online")


def test_a_figure_only_an_older_source_sets_is_kept():
    shapes = [SlotShape(count=2, cpus=4, mem_gb=8)]
    for d in _each_order(lambda: _part("condor", 200, cpus_free=10),
                         lambda: _part("slots", 100, mem_free_gb=5, slot_shapes=shapes)):
        assert (d.cpus_free, d.mem_free_gb, d.slot_shapes) == (10, 5, shapes)


def test_a_newer_source_without_the_figure_does_not_decide_who_has_it():
    # Two sources with capacity (at 100 and at 50) and a Galaxy's queue,
    # newer than both: the capacity is the one at 100, whatever the order.
    # (It was not: with the queue's source before the newer capacity's, the
    # older capacity stayed.)
    winners = {d.cpus_free for d in _each_order(lambda: _part("condor", 100, cpus_free=10),
                                                lambda: _part("slurm", 50, cpus_free=99),
                                                lambda: _part("queue", 200, queued=3, running=1))}
    assert winners == {10}


def test_point_times_rows_and_presets_read_are_combined():
    a = _part("queue", 100, rows=3, queued=1)
    a.destinations["only_a"] = DestinationFigures(id="only_a", cpus_free=4)
    b = _part("queue", 150, rows=4, queued=2)
    b.destinations["d"].sources["condor"] = 120
    out = _combine([a, _part("condor", 130, rows=5, cpus_free=8), b])
    assert out.destinations["d"].sources == {"queue": 150, "condor": 130}
    assert out.destinations["only_a"].cpus_free == 4
    assert (out.rows_read, out.read_ok) == (12, {"queue", "condor"})
    one = _part("queue", 100)
    assert _combine([one]) is one


# -- RunTimeStats.combined and its cache -----------------------------------------------------------------


def _fig(count: float, queue: float | None, run: float | None, at: float, p95: float | None = None) -> ToolFigures:
    return ToolFigures(count=count, median_queue_s=queue, median_run_s=run, perc_95_run_s=p95, at=at)


def _stats(tool_stats: dict[str, dict[str, ToolFigures]], read_at: float = 1000.0, rows: int = 1) -> RunTimeStats:
    return RunTimeStats.from_tool_stats(tool_stats, read_at, rows)


def test_run_time_statistics_combine_count_weighted():
    eu = _stats({"bwa": {"d1": _fig(3, 10, 100, 500, p95=1000)}, "cut": {"d2": _fig(2, 7, 70, 400)}}, 1000, 3)
    fr = _stats({"bwa": {"d1": _fig(1, 50, None, 600)}}, 900, 2)
    combined = RunTimeStats.combined([eu, fr])
    # queue (3 x 10 + 1 x 50) / 4 = 20; run and p95 from eu's 3 jobs only (fr has none); the newer point's time.
    assert combined.tool_stats == {"bwa": {"d1": _fig(4, 20, 100, 600, p95=1000)}, "cut": {"d2": _fig(2, 7, 70, 400)}}
    assert combined.per_destination == {"d1": (20, 100, 600), "d2": (7, 70, 400)}
    # As old as the older part; every part's rows.
    assert (combined.read_at, combined.rows_read) == (900, 5)
    # The parts are kept by other cycles: never changed in place.
    assert eu.tool_stats["bwa"]["d1"] == _fig(3, 10, 100, 500, p95=1000)
    assert fr.tool_stats["bwa"]["d1"] == _fig(1, 50, None, 600)


def test_the_combination_is_reused_while_its_parts_are_the_same_objects():
    state = CollectorState.new(BrokerConfig())
    eu, fr = _stats({"bwa": {"d1": _fig(3, 10, 100, 500)}}), _stats({"bwa": {"d1": _fig(1, 50, 500, 600)}})
    assert state.combined_stats([]) is None
    assert state.combined_stats([eu]) is eu
    first = state.combined_stats([eu, fr])
    assert first is not None and first.tool_stats["bwa"]["d1"].count == 4
    assert state.combined_stats([eu, fr]) is first
    # Equal figures in a new object (a refresh) make a new combination, then that one is reused.
    fr_again = _stats({"bwa": {"d1": _fig(1, 50, 500, 600)}})
    second = state.combined_stats([eu, fr_again])
    assert second is not first and second == first
    assert state.combined_stats([eu, fr_again]) is second
    third = state.combined_stats([eu, fr_again, _stats({"bwa": {"d1": _fig(4, 1, 1, 700)}})])
    assert third is not None and third is not second and third.tool_stats["bwa"]["d1"].count == 8


# -- config ----------------------------------------------------------------------------------------------


def _sources(**extra: Any) -> dict[str, Any]:
    return {"sources": {"eu": {"url": "http://eu:8086", "presets": ["queue_by_destination"]}}, **extra}


@pytest.mark.parametrize(("raw", "problem"), [
    (_sources(influxdb={"url": "http://old:8086"}), "influxdb: not used with sources"),
    (_sources(collector={"presets": ["queue_by_destination"]}), "collector.presets: not used with sources"),
    ({"sources": {"eu": {"presets": ["queue_by_destination", "nope"]}}},
     "sources.eu.presets: unknown preset 'nope' (known: queue_by_destination, "),
    ({"sources": {"eu": {"presets": ["queue_by_destination"], "tenant": "usegalaxy-xx"}}, "api": {"tenants": TENANTS}},
     "sources.eu.tenant: 'usegalaxy-xx' is not in api.tenants (known: usegalaxy-eu, usegalaxy-fr)"),
    ({"sources": {"eu west": {"presets": ["queue_by_destination"]}}},
     "sources.eu west: not a valid source name: 1-64 of A-Z a-z 0-9 _ . -"),
    ({"sources": {"eu": {"presets": []}}}, "sources.eu.presets: empty: a source needs at least one preset"),
    ({"sources": {"eu-2": {"presets": ["queue_by_destination"]}, "eu_2": {"presets": ["queue_by_destination"]}}},
     "sources.eu_2: its environment variables would be 'eu-2''s (TPV_BROKER_SOURCES_EU_2_PASSWORD)"),
], ids=["influxdb", "collector.presets", "unknown preset", "unknown tenant", "bad name", "no presets",
        "one variable for two"])
def test_sources_config_is_checked(raw: dict[str, Any], problem: str):
    with pytest.raises(ValidationError) as info:
        BrokerConfig.model_validate(raw)
    assert problem in str(info.value)


def test_a_custom_preset_and_a_known_tenant_are_accepted():
    config = BrokerConfig.model_validate({
        "sources": {"eu": {"presets": ["queue_by_destination", "mine"], "tenant": "usegalaxy-eu"}},
        "collector": {"custom_presets": {"mine": {"measurement": "m", "destination": {"tag": "destination_id"},
                                                  "fields": [{"field": "count", "figure": "queued"}],
                                                  "combine": "newest"}}},
        "api": {"tenants": TENANTS},
    })
    assert [p.name for p in sources_for(config, {"eu": object()})[0].presets] == [  # type: ignore[dict-item]
        "queue_by_destination", "mine"]


def test_an_influxdb_variable_with_sources_is_refused(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("sources:\n  eu:\n    presets: [queue_by_destination]\n")
    with pytest.raises(ConfigError, match="influxdb: not used with sources") as info:
        load_config(path, environ={"TPV_BROKER_INFLUXDB_URL": "http://old:8086"})
    # The key leads the message, as for any other setting.
    assert f"{path}: influxdb: not used" in str(info.value) and "(top level)" not in str(info.value)


def test_source_secrets_come_from_the_environment_and_are_never_logged(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("sources:\n"
                    "  eu-2:\n    url: http://eu:8086\n    username: reader\n    presets: [queue_by_destination]\n"
                    "  network:\n    url: http://net:8086\n    password: net-password-in-file\n"
                    "    presets: [htcondor_cluster_usage]\n"
                    "  fr:\n    url: http://fr:8086\n    presets: [queue_by_destination]\n")
    assert source_env_name("eu-2", "password") == "TPV_BROKER_SOURCES_EU_2_PASSWORD"
    config = load_config(path, environ={"TPV_BROKER_SOURCES_EU_2_PASSWORD": "eu-password-from-env",
                                        "TPV_BROKER_SOURCES_FR_TOKEN": "fr-token-from-env",
                                        "TPV_BROKER_SOURCES_NETWORK_TIMEOUT_S": "3"})
    eu = config.sources["eu-2"]
    assert eu.password is not None and eu.password.get_secret_value() == "eu-password-from-env"
    assert eu.username == "reader"
    fr = config.sources["fr"]
    assert fr.token is not None and fr.token.get_secret_value() == "fr-token-from-env"
    assert config.sources["network"].timeout_s == 3
    assert {"eu-password-from-env", "net-password-in-file", "fr-token-from-env"} <= set(config.secrets())


def test_without_sources_the_one_source_is_influxdb_with_collector_presets():
    config = BrokerConfig.model_validate({"influxdb": {"url": "http://old:8086", "database": "gx", "timeout_s": 4},
                                          "collector": {"presets": ["queue_by_destination"]}})
    (name, settings), = config.metric_sources().items()
    assert name == SINGLE_SOURCE == "influxdb"
    assert (settings.url, settings.database, settings.timeout_s, settings.presets, settings.tenant) == (
        "http://old:8086", "gx", 4, ["queue_by_destination"], None)


def test_a_galaxys_ids_go_through_its_tenants_aliases_then_the_destinations():
    config = BrokerConfig.model_validate({
        "sources": {"fr": {"presets": ["queue_by_destination"], "tenant": "usegalaxy-fr"},
                    "network": {"presets": ["htcondor_cluster_usage"]}},
        "api": {"tenants": {**TENANTS, "usegalaxy-fr": {**TENANTS["usegalaxy-fr"],
                                                        "aliases": {"pulsar-it": "galaxy_it", "own": "pulsar_de"}}}},
        "destinations": {"pulsar_it01": {"aliases": ["galaxy_it"]}},
    })
    assert config.source_aliases("fr") == {"galaxy_it": "pulsar_it01", "pulsar-it": "pulsar_it01", "own": "pulsar_de"}
    # Another source's ids are not the tenant's.
    assert config.source_aliases("network") == {"galaxy_it": "pulsar_it01"}


def test_a_bare_reader_stands_only_for_a_single_source():
    config = BrokerConfig.model_validate({"sources": {"eu": {"presets": ["queue_by_destination"]},
                                                      "fr": {"presets": ["queue_by_destination"]}}})
    with pytest.raises(ValueError, match=r"this config reads 2 sources \(eu, fr\): pass one reader each"):
        as_sources(config, object())  # type: ignore[arg-type]
    reader = object()
    (only,) = as_sources(BrokerConfig(), reader)  # type: ignore[arg-type]
    assert (only.name, only.reader) == (SINGLE_SOURCE, reader)


def test_a_source_with_nothing_to_read_this_cycle_is_not_backed_off():
    """A Galaxy source of run-time statistics only, kept by their own job:
    a cycle has nothing to ask it, so a retry pending from an earlier
    failure neither skips it nor counts it failed again."""
    from tpv_broker.collector.cycle import _read_source
    from tpv_broker.collector.state import SourceMemory, StatsCache

    config = BrokerConfig.model_validate({"sources": {
        "eu": {"presets": ["destination_queue_run_time"]}, "net": {"presets": ["queue_by_destination"]}}})
    cache = StatsCache(300, background=True)
    cache.keep_full_read(RunTimeStats.from_tool_stats({"bwa": {"d1": ToolFigures(count=1, at=50.0)}}, 50.0, 1))
    memory = SourceMemory(cache, failures_in_a_row=2, retry_at=200.0)

    class Unreadable:
        where = "nowhere"

        def read(self, *_: object) -> list[object]:
            raise AssertionError("nothing was to be read")

        def database_problem(self) -> None:
            return None

    (eu, _net) = sources_for(config, {"eu": Unreadable(), "net": Unreadable()})  # type: ignore[dict-item]
    read = _read_source(eu, memory, config, 100.0, several=True)
    assert (read.answered, read.errors, read.queries) == (True, [], 0)
    assert read.stats is cache.current
    assert (memory.failures_in_a_row, memory.retry_at) == (0, None)


def test_the_stale_mark_names_no_source_when_there_are_several():
    """Every tenant reads the stale mark (/ready, degraded answers): with
    several sources each one's problem stays in its own entry."""
    from tpv_broker.collector.cycle import CycleReport
    from tpv_broker.core.models import SourceStatus

    errors = ["source fr: InfluxDB at http://fr.internal:8086 (database 'frdb') is unreachable",
              "no source could be read; keeping the last snapshot"]
    several = CycleReport(published=False, errors=errors, source_problems=errors[:1], sources={
        "fr": SourceStatus(state="missing", tenant="fr"), "net": SourceStatus(state="missing")})
    assert several.stale_reason() == "no source could be read; keeping the last snapshot"
    one = CycleReport(published=False, errors=["InfluxDB at x is unreachable"],
                      sources={"influxdb": SourceStatus(state="missing")})
    assert one.stale_reason() == "InfluxDB at x is unreachable"
