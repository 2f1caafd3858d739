"""The Prometheus alert rules (deploy/grafana/alerts.yml), evaluated by the
real Prometheus engine (``promtool``, Debian's ``prometheus`` package):

* their unit tests (deploy/grafana/alerts-test.yml) pass, and every alert
  has a case where it fires and one where it does not yet;
* those tests can fail: a rule that fires too early, or a threshold moved,
  is caught;
* every metric and label the rules and their tests name is one the broker
  really exports (a real scrape of the API on the real Redis and of the
  collector's registry), so a rename fails here, not on an alert that
  never fires;
* the compose Prometheus loads them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tpv_broker.api.metrics import HEALTH_STATES, RANK_ENDPOINTS, outcome_of

from .prometheus_scrape import METRIC_NAME, TARGET_LABELS, labels_used, promtool, sample_labels, scrape_broker
from .test_markdown_links import heading_slugs

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
RULES_FILE = GRAFANA / "alerts.yml"
TESTS_FILE = GRAFANA / "alerts-test.yml"
RULES = yaml.safe_load(RULES_FILE.read_text())
UNIT_TESTS = yaml.safe_load(TESTS_FILE.read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def rules() -> list[dict[str, Any]]:
    return [r for group in RULES["groups"] for r in group["rules"]]


def alert_cases() -> list[dict[str, Any]]:
    return [case for t in UNIT_TESTS["tests"] for case in t.get("alert_rule_test", [])]


def promtool_test(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def samples(redis_url: str) -> dict[str, set[str]]:
    return sample_labels(scrape_broker(redis_url))


def test_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES_FILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_not_before() -> None:
    result = promtool_test(TESTS_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    firing = {c["alertname"] for c in alert_cases() if c["exp_alerts"]}
    quiet = {c["alertname"] for c in alert_cases() if not c["exp_alerts"]}
    assert firing == set(names) and quiet == set(names)
    for r in rules():
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert set(r["annotations"]) == {"summary", "description", "runbook"}, r["alert"]


def test_every_runbook_is_a_section_of_the_docs() -> None:
    anchors = heading_slugs((ROOT / "docs" / "observability.md").read_text())
    for r in rules():
        path, anchor = r["annotations"]["runbook"].split("#")
        assert path == "docs/observability.md" and anchor in anchors, r["alert"]


def _mutated(tmp_path: Path, alert: str, old: str, new: str) -> Path:
    """A copy of the rules and their tests with ``old`` in one rule's
    expression (or ``for``) replaced by ``new``."""
    changed = yaml.safe_load(RULES_FILE.read_text())
    (rule,) = [r for g in changed["groups"] for r in g["rules"] if r["alert"] == alert]
    field = "for" if old == rule["for"] else "expr"
    assert old in rule[field], (alert, old)
    rule[field] = rule[field].replace(old, new)
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump(changed, sort_keys=False))
    tests = tmp_path / TESTS_FILE.name
    tests.write_text(TESTS_FILE.read_text())
    return tests


RANK_ANSWERS = 'outcome=~"ok|degraded|unavailable"'


@pytest.mark.parametrize(("alert", "old", "new"), [
    # Fires at once: the quiet case (pending) catches it.
    ("TPVBrokerRedisUnreachable", "1m", "0m"),
    # The limit written in, not read from api.max_snapshot_age_s: a broker
    # that allows 600 s alerts at 300.
    ("TPVBrokerSnapshotStale", "> tpv_broker_api_max_snapshot_age_seconds", "> 300"),
    # Thresholds moved: too early for a quiet case, or too late for a firing one.
    ("TPVBrokerSnapshotAging", "0.5 *", "0.4 *"),
    ("TPVBrokerCollectorFailing", ">= 3", ">= 5"),
    ("TPVBrokerCollectorFailing", ">= 3", ">= 2"),
    ("TPVBrokerDegradedAnswers", "> 0.05", "> 0.02"),
    # Still firing once the snapshot is stale: two alerts for one cause.
    ("TPVBrokerSnapshotAging", "unless", "or"),
    # Health checks and refused requests counted as rank answers dilute the share.
    ("TPVBrokerDegradedAnswers", RANK_ANSWERS, 'outcome=~".+"'),
    # One degraded answer in ten minutes is an alarm without the volume floor.
    ("TPVBrokerDegradedAnswers", ">= 20", ">= 0"),
    # Per API instance: one destination, or one stale InfluxDB, alerts twice.
    ("TPVBrokerDestinationExcluded", "max by (job, destination) (", "("),
    ("TPVBrokerMetricsOld", "min by (job) (", "("),
])
def test_the_unit_tests_catch_a_wrong_rule(tmp_path: Path, alert: str, old: str, new: str) -> None:
    result = promtool_test(_mutated(tmp_path, alert, old, new))
    assert result.returncode != 0, result.stdout
    assert f"alertname: {alert}" in result.stdout + result.stderr


def test_names_exist_in_what_the_broker_exports(samples: dict[str, set[str]]) -> None:
    exprs = [(r["alert"], r["expr"]) for r in rules()]
    exprs += [(t["series"], t["series"]) for case in UNIT_TESTS["tests"] for t in case["input_series"]]
    for where, expr in exprs:
        names = set(METRIC_NAME.findall(expr))
        assert names, where
        missing = names - set(samples)
        assert not missing, f"{where}: not exported: {missing}"
        available = set().union(*(samples[n] for n in names)) | TARGET_LABELS
        unknown = labels_used(expr) - available
        # An input series names its labels without a clause: take them from its selector.
        unknown |= set(re.findall(r"(\w+)=\"", expr.split("{", 1)[1])) - available if "{" in expr else set()
        assert not unknown, f"{where}: labels {unknown} not on {names}"


def test_label_values_matched_are_the_brokers() -> None:
    # The rank endpoints, exactly (a new one would escape the share), the
    # outcomes of an answer, and a health state the API exports.
    by_name = {r["alert"]: r["expr"] for r in rules()}
    degraded = by_name["TPVBrokerDegradedAnswers"]
    endpoints = re.findall(r'endpoint=~"([^"]+)"', degraded)
    assert endpoints and all(set(e.split("|")) == set(RANK_ENDPOINTS) for e in endpoints)
    # The answers: normal, degraded as a 200, degraded as a 503 (api.degraded_status).
    outcomes = re.findall(r'outcome=~"([^"]+)"', degraded)
    answered = {outcome_of(200, False), outcome_of(200, True), outcome_of(503, True)}
    assert len(outcomes) == len(endpoints) and all(set(o.split("|")) == answered for o in outcomes)
    (state,) = re.findall(r'state="(\w+)"', by_name["TPVBrokerDestinationExcluded"])
    assert state in HEALTH_STATES


def test_the_compose_prometheus_loads_them() -> None:
    prom = COMPOSE["services"]["prometheus"]
    mounted = {target: source for source, target, *_ in (m.split(":") for m in prom["volumes"])}
    (config_flag,) = [a for a in prom["command"] if a.startswith("--config.file=")]
    config_path = Path(config_flag.split("=", 1)[1])
    config = yaml.safe_load((ROOT / mounted[str(config_path)].removeprefix("./")).read_text())
    # Relative to the config file, where compose mounts the rules.
    (rule_file,) = config["rule_files"]
    assert mounted[str(config_path.parent / rule_file)] == "./deploy/grafana/alerts.yml"
