"""docker-compose.yml and the Dockerfile stay in step with the CLI and the
config (no Docker engine runs on these machines, so this is what checks them)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from tpv_broker.cli import main
from tpv_broker.shared.config import env_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize("service", ["collector", "api"])
def test_compose_commands_are_valid_cli_calls(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "tpv-broker"
    # Resolving the sub-command and parsing its options is what would fail
    # first in a container if the CLI changed under the compose file.
    ctx = click.Context(main, info_name="tpv-broker")
    sub = main.get_command(ctx, command[1])
    assert isinstance(sub, click.Command), command[1]
    sub.make_context(command[1], list(command[2:]), parent=ctx)


@pytest.mark.parametrize("service", ["collector", "api"])
def test_compose_environment_names_real_settings(service):
    env = COMPOSE["services"][service]["environment"]
    parsed = env_overrides(env)
    # Every TPV_BROKER_* variable must land on a setting, none be ignored.
    assert sum(len(v) for v in parsed.values()) == len(env), env
    load_config(ROOT / "config.yaml", env)


def test_image_reads_the_mounted_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    configured = re.search(r"ENV TPV_BROKER_CONFIG=(\S+)", dockerfile).group(1)
    for service in ("collector", "api"):
        mounts = COMPOSE["services"][service]["volumes"]
        assert any(m.split(":")[1] == configured for m in mounts), (service, mounts)
