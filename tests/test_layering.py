"""The import direction the design depends on: api/ and collector/ use the
shared core, never each other, and the core imports neither. In particular
nothing on the rank path can reach InfluxDB."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
