"""Every Redis key the key schema builds is in the key table of
docs/redis-keys.md, for the people reading Redis with redis-cli."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_key_of_the_schema_is_documented() -> None:
    source = (ROOT / "tpv_broker" / "store" / "keys.py").read_text()
    doc = (ROOT / "docs" / "redis-keys.md").read_text()
    table = doc[doc.index("## Keys"):doc.index("## How a snapshot is written and read")]
    templates = re.findall(r'f"\{self\.prefix\}:([^"]*)"', source)
    assert len(templates) >= 8
    for template in templates:
        literal = template.split("{", 1)[0]  # "inflight:job:{...}" -> "inflight:job:"
        assert f"`<p>:{literal}" in table, f"key <p>:{template} is not in the key table of docs/redis-keys.md"
