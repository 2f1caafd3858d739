"""The import direction the design depends on: api/ and collector/ use the
shared core, never each other, and the core imports neither. In particular
nothing on the rank path can reach InfluxDB."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .processes import clean_env

PACKAGE = Path(__file__).resolve().parents[1] / "tpv_broker"


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    module_parts = ["tpv_broker", *path.relative_to(PACKAGE).with_suffix("").parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                out.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                out.add(node.module)
    return out


@pytest.mark.parametrize(
    ("area", "forbidden"),
    [
        ("api", ("tpv_broker.collector", "tpv_broker.devtools")),
        ("collector", ("tpv_broker.api", "tpv_broker.devtools")),
        ("shared", ("tpv_broker.api", "tpv_broker.collector", "tpv_broker.devtools", "tpv_broker.cli")),
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


def test_the_rank_path_has_no_influxdb_client() -> None:
    for area in ("api", "shared"):
        for f in (PACKAGE / area).glob("*.py"):
            assert "influx" not in {n.split(".")[-1] for n in _imports(f)}, f


_SERVE_AND_LIST_MODULES = """
import json, sys
from tpv_broker.api import create_app
from tpv_broker.shared.config import load_config
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
