"""The Grafana dashboard (deploy/grafana/) against the metrics the broker
really exports, and its provisioning against docker-compose.yml.

No Grafana package is installable here (Debian has none), so the dashboard
is not loaded into a real Grafana. What stands in for it:

* every PromQL expression of the dashboard is evaluated by the real
  Prometheus engine (``promtool test rules``, Debian's ``prometheus``
  package) over series made from a real scrape of the API's ``/metrics``
  (an app on the real Redis, a snapshot with a judged destination, one rank
  request) and of the collector's registry (one observed cycle with a
  health transition); each must return something, and the health timeline
  the exact state code;
* metric and label names in the expressions, legends and the destination
  variable are checked against the same scrape (so a rename in
  api/metrics.py or collector/metrics.py fails here, not on an empty panel);
* the panel layout (ids, gridPos) and the data source variable;
* the provisioning files against the compose mounts, and the Prometheus
  scrape config (``promtool check config``) against the ports the API and
  the collector listen on.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tpv_broker.api.metrics import HEALTH_STATES
from tpv_broker.config.settings import env_overrides, load_config

from .prometheus_scrape import METRIC_NAME, TARGET_LABELS, labels_used, promtool, sample_labels, scrape_broker

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "tpv-broker.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

# Grafana's variables, as promtool's test evaluates them: series one
# minute apart, evaluated after 30 minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "30m", "$__interval": "1m", "$destination": ".*"}


# -- the dashboard's queries ------------------------------------------------------------
def panels() -> list[dict[str, Any]]:
    out = []
    for panel in DASHBOARD["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def queries() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [(p["title"], t) for p in panels() for t in p.get("targets", [])]


def variable(name: str) -> dict[str, Any]:
    (var,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == name]
    return var


def destination_query() -> str:
    query = variable("destination")["query"]
    return query["query"] if isinstance(query, dict) else query


def promql(expr: str) -> str:
    """The expression as Grafana sends it, with our values for its variables."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


# -- what the broker really exports -----------------------------------------------------
@pytest.fixture(scope="module")
def exported(redis_url: str) -> dict[str, Any]:
    """The families a real API (on the real Redis) and collector export."""
    return scrape_broker(redis_url)


@pytest.fixture(scope="module")
def samples(exported: dict[str, Any]) -> dict[str, set[str]]:
    return sample_labels(exported)


def test_the_scrape_has_what_the_dashboard_is_about(samples: dict[str, set[str]], exported) -> None:
    # The fixture really exercised every family the panels are about, with
    # its labels: a panel over a family without samples checks nothing.
    api = {s.name: s for f in exported["api"] for s in f.samples}
    health = {(s.labels["destination"], s.labels["state"]): s.value for f in exported["api"] for s in f.samples
              if s.name == "tpv_broker_destination_health"}
    assert health[("pulsar_de", "excluded")] == 1 and health[("pulsar_uk", "healthy")] == 1
    assert sum(health.values()) == 2
    placed = {s.labels["destination"]: s.value for f in exported["api"] for s in f.samples
              if s.name == "tpv_broker_destination_placements_last_hour"}
    assert placed == {"pulsar_uk": 1}
    back = {s.labels["destination"]: s.value for f in exported["api"] for s in f.samples
            if s.name == "tpv_broker_destination_returns_last_hour"}
    assert back == {"pulsar_uk": 1}
    assert "tpv_broker_api_request_duration_seconds_bucket" in api and "tpv_broker_inflight_charges" in api
    assert samples["tpv_broker_collector_health_transitions_total"] >= {"destination", "before", "after"}


# -- layout -----------------------------------------------------------------------------
def test_dashboard_loads_with_unique_ids_and_a_layout() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36  # Grafana 9.x+ JSON model
    all_panels = panels()
    ids = [p["id"] for p in all_panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], int] = {}
    for p in all_panels:
        grid = p["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in grid.values()), p["title"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24 and grid["h"] >= 1, p["title"]
        # No two panels on one cell of the 24-column grid.
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (p["title"], cells.get((x, y)))
                cells[(x, y)] = p["id"]
        if p["type"] != "row":
            assert p["title"] and p.get("targets"), p["id"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]


def test_data_source_is_a_variable_defaulting_to_the_provisioned_one() -> None:
    ds = variable("DS_PROMETHEUS")
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and ds["current"]["value"] == source["uid"]
    # No import-time ${DS_...} inputs: Grafana's file provisioning does not fill them in.
    assert "__inputs" not in DASHBOARD
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(DASHBOARD)))
    defined = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert used - defined <= {"__rate_interval", "__range", "__interval", "__all"}, used - defined


def test_panels_cover_the_issue() -> None:
    # Issue 22 item 5: placements per destination, health states and
    # transitions, rank latency, snapshot age, degraded answers; and the
    # rest of the brief.
    by_metric: dict[str, list[str]] = {}
    for title, t in queries():
        for name in METRIC_NAME.findall(t["expr"]):
            by_metric.setdefault(name, []).append(title)
    for name in ("tpv_broker_api_requests_total", "tpv_broker_api_request_duration_seconds_bucket",
                 "tpv_broker_api_degraded_answers_total", "tpv_broker_snapshot_age_seconds",
                 "tpv_broker_collector_snapshot_age_seconds", "tpv_broker_inflight_charges",
                 "tpv_broker_destination_placements_last_hour", "tpv_broker_destination_returns_last_hour",
                 "tpv_broker_destination_health",
                 "tpv_broker_collector_health_transitions_total", "tpv_broker_collector_cycles_total",
                 "tpv_broker_collector_cycle_duration_seconds_bucket"):
        assert name in by_metric, name
    latency = [t["expr"] for title, t in queries() if "tpv_broker_api_request_duration_seconds_bucket" in t["expr"]]
    assert {re.match(r"histogram_quantile\(([\d.]+),", e).group(1) for e in latency} == {"0.5", "0.95", "0.99"}
    # The snapshot age panel draws api.max_snapshot_age_s (300) as a threshold.
    (age,) = [p for p in panels() if p["title"] == "Snapshot age"]
    steps = age["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["color"] == "red"] == [load_config(environ={}).api.max_snapshot_age_s]
    assert age["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_health_timeline_codes_match_its_value_mappings() -> None:
    (timeline,) = [p for p in panels() if p["type"] == "state-timeline"]
    (target,) = timeline["targets"]
    codes = {state: int(n) for state, n in re.findall(r'state="(\w+)"[^)]*== 1\) \* (\d+)', target["expr"])}
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    assert {int(k): v["text"] for k, v in mapping["options"].items()} == {n: s for s, n in codes.items()}
    # Every state the API exports, each its own code.
    assert set(codes) == set(HEALTH_STATES) and len(set(codes.values())) == len(codes)


# -- names against the real scrape ------------------------------------------------------
def test_metric_and_label_names_exist(samples: dict[str, set[str]]) -> None:
    checked = 0
    exprs = [(title, t["expr"], t.get("legendFormat", "")) for title, t in queries()]
    exprs.append(("$destination", destination_query(), ""))
    for title, expr, legend in exprs:
        names = set(METRIC_NAME.findall(expr))
        assert names, (title, expr)
        missing = names - set(samples)
        assert not missing, f"{title}: not exported: {missing}"
        available = set().union(*(samples[n] for n in names)) | TARGET_LABELS
        unknown = (labels_used(expr) - {"__name__"}) - available
        assert not unknown, f"{title}: labels {unknown} not on {names}"
        in_legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert in_legend <= available, f"{title}: legend labels {in_legend - available}"
        checked += 1
    assert checked == len(queries()) + 1
    var = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", destination_query())
    assert var and all("destination" in samples[n] for n in METRIC_NAME.findall(var.group(1)))
    assert var.group(2) == "destination"


def test_the_name_checks_catch_a_rename(samples: dict[str, set[str]]) -> None:
    # What the test above would say of a dashboard left behind by a rename.
    assert "tpv_broker_api_request_duration_seconds_bucket" in samples
    assert "tpv_broker_api_request_seconds_bucket" not in samples
    assert labels_used('sum by (tenant, outcome) (rate(x{endpoint=~"/a"}[5m]))') == {"tenant", "outcome", "endpoint"}
    assert "destination" not in samples["tpv_broker_api_degraded_answers_total"]


# -- evaluated by the real Prometheus engine --------------------------------------------
def _series(exported: dict[str, Any]) -> list[dict[str, str]]:
    """The scraped samples as promtool input series, one a minute for 30
    minutes: counters and histograms grow by their scraped value each
    minute, gauges stay."""
    out = []
    for family in exported["families"]:
        growing = family.type in ("counter", "histogram")
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
            step = repr(float(s.value)) if growing else "0"
            out.append({"series": f"{s.name}{{{labels}}}", "values": f"{float(s.value)!r}+{step}x30"})
    return out


def _promtool_test(tmp_path: Path, exported, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    spec = {"rule_files": [], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": _series(exported), "promql_expr_test": tests}]}
    path = tmp_path / "dashboard-test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_every_query_returns_data_in_prometheus(tmp_path: Path, exported) -> None:
    # absent(expr) is empty exactly when expr returns at least one series.
    tests = [{"expr": f"absent({promql(t['expr'])})", "eval_time": "30m", "exp_samples": []}
             for _, t in queries()]
    result = _promtool_test(tmp_path, exported, tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_health_timeline_shows_the_state_in_prometheus(tmp_path: Path, exported) -> None:
    (timeline,) = [p for p in panels() if p["type"] == "state-timeline"]
    mapping = {v["text"]: int(k) for k, v in timeline["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    tests = [{"expr": promql(timeline["targets"][0]["expr"]), "eval_time": "30m",
              "exp_samples": [{"labels": '{destination="pulsar_de"}', "value": mapping["excluded"]},
                              {"labels": '{destination="pulsar_uk"}', "value": mapping["healthy"]}]}]
    result = _promtool_test(tmp_path, exported, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_sees_a_wrong_query(tmp_path: Path, exported) -> None:
    # The check above can fail: a query over a renamed metric returns nothing.
    tests = [{"expr": "absent(max(tpv_broker_snapshot_age))", "eval_time": "30m", "exp_samples": []}]
    result = _promtool_test(tmp_path, exported, tests)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


# -- provisioning and compose -----------------------------------------------------------
def mounts(service: str) -> dict[str, tuple[str, str]]:
    """Container path -> (host path or volume, mode) of a compose service."""
    out = {}
    for m in COMPOSE["services"][service]["volumes"]:
        source, target, *mode = m.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def host_file(source: str) -> Path:
    assert source.startswith("./"), source
    return ROOT / source[2:]


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_compose_images_are_pinned_and_files_mounted_read_only(service):
    image = COMPOSE["services"][service]["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image
    for target, (source, mode) in mounts(service).items():
        if source.startswith("./"):
            assert host_file(source).exists() and mode == "ro", (target, source)
        else:
            assert source in COMPOSE["volumes"], source  # a named volume for its data
    assert all(p.startswith("127.0.0.1:") for p in COMPOSE["services"][service]["ports"])


def test_grafana_provisioning_paths_match_the_compose_mounts():
    grafana = mounts("grafana")
    provisioning = "/etc/grafana/provisioning"
    for kind in ("datasources", "dashboards"):
        source, _ = grafana[f"{provisioning}/{kind}"]
        assert host_file(source) == GRAFANA / "provisioning" / kind
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tpv-broker.yaml").read_text())[
        "providers"]
    assert provider["type"] == "file"
    source, _ = grafana[provider["options"]["path"]]
    assert (host_file(source) / DASHBOARD_FILE.name).read_text() == DASHBOARD_FILE.read_text()
    home = COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD_FILE.name}"
    # The data source is the compose prometheus, on the port it listens on.
    (source_def,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"]
    assert source_def["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in COMPOSE["services"]["prometheus"]["ports"])
    assert "prometheus" in COMPOSE["services"]["grafana"]["depends_on"]


def test_prometheus_scrapes_the_api_and_the_collector_where_they_listen():
    prom = COMPOSE["services"]["prometheus"]
    (config_flag,) = [a for a in prom["command"] if a.startswith("--config.file=")]
    source, _ = mounts("prometheus")[config_flag.split("=", 1)[1]]
    config_file = host_file(source)
    result = subprocess.run([promtool(), "check", "config", str(config_file)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_file.read_text())
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    api_bind = COMPOSE["services"]["api"]["command"][COMPOSE["services"]["api"]["command"].index("--bind") + 1]
    assert api_bind.startswith("0.0.0.0:")
    assert targets["tpv-broker-api"] == [f"api:{api_bind.rsplit(':', 1)[1]}"]
    # The compose collector serves its metrics on the compose network.
    collector = load_config(ROOT / "config.yaml", COMPOSE["services"]["collector"]["environment"]).collector
    assert collector.metrics_host == "0.0.0.0" and collector.metrics_port is not None
    assert targets["tpv-broker-collector"] == [f"collector:{collector.metrics_port}"]
    assert "ports" not in COMPOSE["services"]["collector"]
    # Its other settings are the ones every broker service shares.
    shared = COMPOSE["services"]["api"]["environment"]
    assert COMPOSE["services"]["collector"]["environment"].items() >= shared.items()
    assert len(env_overrides(COMPOSE["services"]["collector"]["environment"])["collector"]) == 2
