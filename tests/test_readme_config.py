"""Every setting is in the configuration table (docs/configuration.md): a
setting added without its row (what admins read first) fails here."""

from __future__ import annotations

import pathlib
import re

from pydantic import BaseModel

from tpv_broker.config.settings import BrokerConfig

CONFIG_DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
# Sections whose keys are ids (documented by their sub-keys) or a mapping of terms.
_MAPPINGS = {"destinations": "destinations.<id>", "object_stores": "object_stores.<id>", "sources": "sources.<name>"}


def _documented_keys() -> set[str]:
    text = CONFIG_DOC.read_text()
    table = text[text.index("## Keys"):]
    keys: set[str] = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", table, flags=re.MULTILINE):
        names = re.findall(r"`([^`]+)`", cell)
        # "`api.bind` / `api.workers`" and "`influxdb.username` / `password`" (same section)
        section = names[0].rsplit(".", 1)[0]
        for name in names:
            keys.add(name if "." in name else f"{section}.{name}")
    return keys


def _settings(model: type[BaseModel], prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in model.model_fields]


def test_every_setting_has_a_row() -> None:
    documented = _documented_keys()
    missing = []
    for section, field in BrokerConfig.model_fields.items():
        model = field.annotation
        if section in _MAPPINGS:
            continue
        assert isinstance(model, type) and issubclass(model, BaseModel), section
        missing += [key for key in _settings(model, section) if key not in documented]
    assert not missing, f"settings without a row in docs/configuration.md's table: {missing}"


def test_the_mapping_sections_have_rows() -> None:
    documented = _documented_keys()
    for prefix in _MAPPINGS.values():
        assert any(key.startswith(prefix) for key in documented), prefix
