"""The layers the design depends on, from the bottom: ``core/`` (pure: the
rank core, terms, payload models), ``config/`` and ``store/`` (Redis), then
``collector/`` and ``api/``, which never import each other, and the CLI on
top. The core imports neither Redis nor config; config does not import the
core. No import cycles anywhere. Nothing on the rank path can reach InfluxDB."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .processes import clean_env

PACKAGE = Path(__file__).resolve().parents[1] / "tpv_broker"


def _imports(path: Path, with_names: bool = False) -> set[str]:
    """Absolute module names a file imports (relative imports resolved).
    ``with_names``: ``module.name`` for each name of ``from module import
    name`` instead of ``module`` (the name may be a module)."""
    module_parts = ["tpv_broker", *path.relative_to(PACKAGE).with_suffix("").parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                module = ".".join([*base, node.module] if node.module else base)
            elif node.module:
                module = node.module
            else:
                continue
            if with_names:
                out.update(f"{module}.{a.name}" for a in node.names)
            else:
                out.add(module)
    return out


@pytest.mark.parametrize(
    ("area", "forbidden"),
    [
        ("api", ("tpv_broker.collector", "tpv_broker.devtools", "tpv_broker.cli", "tpv_broker.simulator")),
        ("collector", ("tpv_broker.api", "tpv_broker.devtools", "tpv_broker.cli", "tpv_broker.simulator")),
        ("core", ("tpv_broker.api", "tpv_broker.collector", "tpv_broker.devtools", "tpv_broker.cli",
                  "tpv_broker.store", "tpv_broker.config", "tpv_broker.simulator", "redis")),
        ("config", ("tpv_broker.core", "tpv_broker.store", "tpv_broker.api", "tpv_broker.collector",
                    "tpv_broker.devtools", "tpv_broker.cli", "tpv_broker.simulator")),
        ("store", ("tpv_broker.api", "tpv_broker.collector", "tpv_broker.devtools", "tpv_broker.cli",
                   "tpv_broker.simulator")),
    ],
)
def test_import_direction(area: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((PACKAGE / area).glob("*.py"))
    assert files
    offenders = {
        f"{f.name} imports {name}"
        for f in files
        for name in _imports(f)
        if name.startswith(forbidden)
    }
    assert not offenders


def _module_name(path: Path) -> str:
    parts = ["tpv_broker", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles() -> None:
    """Between the package's modules, imports under ``TYPE_CHECKING`` included:
    a cycle means two modules are one concept, or one is in the wrong layer."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        edges = set()
        for name in _imports(f, with_names=True):
            # "from module import name" also reads as "module.name": keep the
            # longest part that is one of the package's modules.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != _module_name(f):
                edges.add(name)
        graph[_module_name(f)] = edges
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append(" -> ".join([*stack[stack.index(n):], n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "\n".join(cycles)


def test_the_rank_path_has_no_influxdb_client() -> None:
    for area in ("api", "core", "store", "config"):
        for f in (PACKAGE / area).glob("*.py"):
            assert "influx" not in {n.split(".")[-1] for n in _imports(f)}, f


_SERVE_AND_LIST_MODULES = """
import json, sys
from tpv_broker.api import create_app
from tpv_broker.config.settings import load_config
app = create_app(load_config()).test_client()
hostile = "bwa' OR 1=1; DROP MEASUREMENT x; --"
for body in ({"job": {"tool_id": "bwa", "id": 1}, "destinations": [{"id": "pulsar_de"}]},
             {"job": {"tool_id": hostile}, "destinations": [{"id": "a\\" OR \\"1\\"=\\"1"}]}):
    app.post("/api/rank", json=body).get_data()
app.post("/process_data", json={"job_info": {"tool_id": "bwa"}, "destinations": [{"id": "x"}]}).get_data()
app.get("/ready").get_data()
print(json.dumps(sorted(sys.modules)))
"""


def test_serving_rank_requests_loads_no_influxdb_or_http_client_code(redis_url: str) -> None:
    """At run time, not only by imports written in the files: after rank
    requests (some carrying InfluxQL in their ids), no collector module and
    no HTTP client library has been loaded, so no request can reach InfluxDB."""
    import json
    import subprocess
    import sys

    env = clean_env()
    env["TPV_BROKER_REDIS_URL"] = redis_url
    out = subprocess.run([sys.executable, "-c", _SERVE_AND_LIST_MODULES], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tpv_broker.api.routes" in modules  # the app really served
    loaded = [m for m in modules if m.startswith("tpv_broker.collector") or m.split(".")[0] in
              ("requests", "urllib3", "httpx", "aiohttp", "influxdb", "influxdb_client")]
    assert loaded == []
