"""The deployment files stay in step with the CLI and the config:
docker-compose.yml and the Dockerfile (no Docker engine runs on these
machines, so this is what checks them), the systemd units (also through
systemd-analyze) and the nginx example (run for real in
tests/test_nginx_proxy.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from tpv_broker.cli import main
from tpv_broker.config.settings import env_overrides, load_config, source_env_name

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


BROKER_SERVICES = ["collector", "api", "check-config"]


@pytest.mark.parametrize("service", BROKER_SERVICES)
def test_compose_commands_are_valid_cli_calls(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "tpv-broker"
    # Resolving the sub-command and parsing its options is what would fail
    # first in a container if the CLI changed under the compose file.
    ctx = click.Context(main, info_name="tpv-broker")
    sub = main.get_command(ctx, command[1])
    assert isinstance(sub, click.Command), command[1]
    sub.make_context(command[1], list(command[2:]), parent=ctx)


@pytest.mark.parametrize("service", BROKER_SERVICES)
def test_compose_environment_names_real_settings(service):
    env = COMPOSE["services"][service]["environment"]
    parsed = env_overrides(env)
    # Every TPV_BROKER_* variable must land on a setting, none be ignored.
    assert sum(len(v) for v in parsed.values()) == len(env), env
    load_config(ROOT / "config.yaml", env)


def test_image_reads_the_mounted_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    configured = re.search(r"ENV TPV_BROKER_CONFIG=(\S+)", dockerfile).group(1)
    for service in BROKER_SERVICES:
        mounts = COMPOSE["services"][service]["volumes"]
        assert any(m.split(":")[1] == configured for m in mounts), (service, mounts)



def _dockerfile_instruction(name: str) -> list[str]:
    return re.findall(rf"^{name} (.+)$", (ROOT / "Dockerfile").read_text(), re.M)


def test_image_default_command_is_a_valid_cli_call():
    (cmd,) = _dockerfile_instruction("CMD")
    argv = json.loads(cmd)
    assert argv[0] == "tpv-broker"
    result = CliRunner().invoke(main, [*argv[1:], "--help"])
    assert result.exit_code == 0 and f"Usage: main {argv[1]}" in result.output, result.output


def test_compose_api_port_is_the_one_it_binds_and_probes():
    api = COMPOSE["services"]["api"]
    bind = api["command"][api["command"].index("--bind") + 1]
    port = bind.rsplit(":", 1)[1]
    assert any(p.rsplit(":", 1)[1] == port for p in api["ports"]), api["ports"]
    assert f"http://127.0.0.1:{port}/health" in " ".join(api["healthcheck"]["test"])


def test_compose_and_units_agree():
    # Same user in the image as on bare metal, same stop grace periods.
    assert _dockerfile_instruction("USER") == [unit_value(UNITS["api"], "Service", "User")]
    for service in ("collector", "api"):
        grace = COMPOSE["services"][service]["stop_grace_period"]
        assert grace == unit_value(UNITS[service], "Service", "TimeoutStopSec") + "s", service
        assert COMPOSE["services"][service]["stop_signal"] == unit_value(UNITS[service], "Service", "KillSignal")

# -- systemd ---------------------------------------------------------------------------
SYSTEMD = ROOT / "deploy" / "systemd"
UNITS = {"collector": SYSTEMD / "tpv-broker-collector.service", "api": SYSTEMD / "tpv-broker-api.service"}
INSTALLED_BINARY = "/opt/tpv-broker/venv/bin/tpv-broker"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; systemd allows a key more than once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in parse_unit(path)[section] if k == key]


def unit_value(path: Path, section: str, key: str) -> str:
    values = unit_values(path, section, key)
    assert len(values) == 1, (path.name, key, values)
    return values[0]


def systemd_tool(name: str) -> str:
    import shutil

    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")
    if found is None:
        pytest.fail(f"{name} not found: install the Debian package systemd (scripts/bootstrap.sh --tests does)",
                    pytrace=False)
    return found


@pytest.mark.parametrize("service", ["collector", "api"])
def test_unit_exec_start_is_a_valid_cli_call(service):
    argv = shlex.split(unit_value(UNITS[service], "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BINARY
    assert argv[1] == {"collector": "collect", "api": "serve"}[service]
    ctx = click.Context(main, info_name="tpv-broker")
    sub = main.get_command(ctx, argv[1])
    assert isinstance(sub, click.Command), argv[1]
    sub.make_context(argv[1], list(argv[2:]), parent=ctx)
    # And the real command line answers with its usage.
    result = CliRunner().invoke(main, [*argv[1:], "--help"])
    assert result.exit_code == 0 and f"Usage: main {argv[1]}" in result.output, result.output


@pytest.mark.parametrize("service", ["collector", "api"])
def test_unit_environment_names_real_settings(service):
    env = dict(v.split("=", 1) for v in unit_values(UNITS[service], "Service", "Environment"))
    # The config file comes from TPV_BROKER_CONFIG, as the CLI reads it.
    assert env == {"TPV_BROKER_CONFIG": "/etc/tpv-broker/config.yaml"}
    assert main.params[0].envvar == "TPV_BROKER_CONFIG"
    # Secrets come from the EnvironmentFile, optional ("-") so a site
    # without secrets needs none.
    assert unit_value(UNITS[service], "Service", "EnvironmentFile") == "-/etc/tpv-broker/secrets.env"


def _secrets_example() -> dict[str, str]:
    lines = (SYSTEMD / "secrets.env.example").read_text().splitlines()
    pairs = [line.lstrip("#").split("=", 1) for line in lines if re.match(r"^#?TPV_BROKER_\w+=", line)]
    return dict(pairs)


def test_secrets_example_names_real_settings():
    every = _secrets_example()
    per_source = {k: v for k, v in every.items() if k.startswith("TPV_BROKER_SOURCES_")}
    env = {k: v for k, v in every.items() if k not in per_source}
    assert {"TPV_BROKER_INFLUXDB_PASSWORD", "TPV_BROKER_INFLUXDB_TOKEN", "TPV_BROKER_REDIS_URL"} <= set(env)
    parsed = env_overrides(env)
    assert sum(len(v) for v in parsed.values()) == len(env), env
    # The values are valid, too (a token or a password: either is accepted).
    config = load_config(ROOT / "config.yaml", env)
    assert config.influxdb.password is not None and config.redis.url.startswith("redis://")
    # The per-source ones reach the sources of the multi-Galaxy example.
    multi = load_config(ROOT / "examples" / "multi-galaxy.yaml", per_source)
    secrets = {source_env_name(name, key): value.get_secret_value() for name, source in multi.sources.items()
               for key, value in (("password", source.password), ("token", source.token)) if value is not None}
    assert per_source and per_source.items() <= secrets.items()


@pytest.mark.parametrize("service", ["collector", "api"])
def test_unit_runs_hardened_as_its_own_user(service):
    unit = UNITS[service]
    service_settings = dict(parse_unit(unit)["Service"])
    assert service_settings["User"] == service_settings["Group"] == "tpv-broker"
    expected = {
        "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "SystemCallFilter": "@system-service",
    }
    assert {k: service_settings.get(k) for k in expected} == expected
    after = " ".join(unit_values(unit, "Unit", "After")).split()
    assert "network-online.target" in after and "redis-server.service" in after
    assert "network-online.target" in unit_value(unit, "Unit", "Wants").split()
    assert unit_value(unit, "Install", "WantedBy") == "multi-user.target"


def test_stop_timeouts_cover_a_graceful_stop():
    from tpv_broker.api.server import gunicorn_options
    from tpv_broker.config.server_settings import InfluxDBSettings

    api, collector = UNITS["api"], UNITS["collector"]
    # gunicorn lets each worker finish for graceful_timeout; systemd must wait longer.
    assert unit_value(api, "Service", "KillMode") == "mixed"
    assert unit_value(api, "Service", "KillSignal") == "SIGTERM"
    assert int(unit_value(api, "Service", "TimeoutStopSec")) > gunicorn_options("x", 1)["graceful_timeout"]
    # A cycle in progress finishes its publish; its InfluxDB query is bounded by timeout_s.
    assert unit_value(collector, "Service", "KillSignal") == "SIGTERM"
    assert int(unit_value(collector, "Service", "TimeoutStopSec")) > 2 * InfluxDBSettings().timeout_s
    # gunicorn sends READY=1 once it listens (tests/test_nginx_proxy.py receives it).
    assert unit_value(api, "Service", "Type") == "notify"


def test_sysusers_creates_the_units_user(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run([systemd_tool("systemd-sysusers"), f"--root={root}",
                             str(SYSTEMD / "tpv-broker.sysusers.conf")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    assert users["tpv-broker"][6] == "/usr/sbin/nologin"
    assert "tpv-broker" in {line.split(":")[0] for line in (root / "etc" / "group").read_text().splitlines()}


def _installed_copies(tmp_path: Path, edit=lambda text: text) -> list[Path]:
    # The units as shipped, but pointing at this checkout's tpv-broker:
    # systemd-analyze checks that ExecStart's binary exists and is executable.
    binary = Path(sys.executable).parent / "tpv-broker"
    assert os.access(binary, os.X_OK), binary
    out = []
    for unit in UNITS.values():
        text = unit.read_text()
        assert text.count(INSTALLED_BINARY) == 1
        copy = tmp_path / unit.name
        copy.write_text(edit(text.replace(INSTALLED_BINARY, str(binary))))
        out.append(copy)
    return out


def _verify(units: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_tool("systemd-analyze"), "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=120)


def test_systemd_analyze_verify(tmp_path):
    units = _installed_copies(tmp_path)
    result = _verify(units)
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings (status 0): none is allowed.
    assert not [line for line in (result.stdout + result.stderr).splitlines()
                if any(u.name in line for u in units)], result.stderr


def test_systemd_analyze_verify_sees_a_typo(tmp_path):
    units = _installed_copies(tmp_path, lambda text: text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = _verify(units)
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


@pytest.mark.parametrize("service", ["collector", "api"])
def test_systemd_analyze_security_exposure(tmp_path, service):
    unit = {u.name: u for u in _installed_copies(tmp_path)}[UNITS[service].name]
    result = subprocess.run([systemd_tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=120)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert score, result.stdout + result.stderr
    # systemd rates 0-10; below 2 is its "OK" band (the hardening above).
    assert float(score.group(1)) < 2.0, result.stdout


# -- nginx (static; tests/test_nginx_proxy.py runs it) ----------------------------------------
NGINX = (ROOT / "deploy" / "nginx" / "tpv-broker.conf").read_text()


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s)?", value)
    assert m, value
    return int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_nginx_timeouts_fit_the_clients_budget():
    from tpv_broker_client import DEFAULT_BUDGET_S

    timeouts = {k: _seconds(v) for k, v in re.findall(r"^\s*(proxy_\w+_timeout) (\S+);", NGINX, re.M)}
    assert set(timeouts) == {"proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"}
    # A connect over loopback is immediate; waiting for one must not eat the budget.
    assert timeouts["proxy_connect_timeout"] < DEFAULT_BUDGET_S
    # Never cut an answer the client would still take; let go soon after it gave up.
    for key in ("proxy_send_timeout", "proxy_read_timeout"):
        assert DEFAULT_BUDGET_S <= timeouts[key] <= 4 * DEFAULT_BUDGET_S, key


def test_nginx_upstream_is_the_apis_bind():
    from tpv_broker.config.api_settings import ApiSettings

    upstream = re.search(r"upstream tpv_broker_api \{(.*?)\}", NGINX, re.S).group(1)
    assert re.findall(r"^\s*server (\S+);", upstream, re.M) == [ApiSettings().bind]
    # The API unit binds where config says (api.bind), not elsewhere.
    assert "--bind" not in unit_value(UNITS["api"], "Service", "ExecStart")
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)
    assert re.search(r'^\s*proxy_http_version 1\.1;', NGINX, re.M)
    assert re.search(r'^\s*proxy_set_header Connection "";', NGINX, re.M)


def test_nginx_body_limit_is_max_request_bytes():
    from tpv_broker.config.api_settings import ApiSettings

    size = re.search(r"^\s*client_max_body_size (\d+)([km]?);", NGINX, re.M)
    assert size
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2)]
    assert int(size.group(1)) * factor == ApiSettings().max_request_bytes
    assert f"larger than {ApiSettings().max_request_bytes} bytes" in NGINX
