"""The client is its own light distribution: admins install it into Galaxy's
environment, so it must need nothing but requests and never pull in the
service (Flask, Redis, pydantic)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[1] / "client"


def test_the_distribution_declares_requests_only():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["requests>=2"]
    assert "optional-dependencies" not in project
    # And so does what is installed (bootstrap installs client/ editable).
    assert importlib.metadata.requires("tpv-broker-client") == ["requests>=2"]


def test_importing_it_loads_none_of_the_services_packages(tmp_path):
    # A fresh interpreter, outside the repository, so nothing else imported
    # them first.
    probe = ("import json, sys, tpv_broker_client; "
             "print(json.dumps([m for m in ('flask', 'redis', 'pydantic', 'tpv_broker') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_its_modules_import_only_the_standard_library_requests_and_urllib3():
    allowed = set(sys.stdlib_module_names) | {"requests", "urllib3", "tpv_broker_client"}
    found = set()
    for path in (CLIENT / "tpv_broker_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    assert found and found <= allowed, found - allowed
