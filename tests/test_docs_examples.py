"""The request/answer examples in docs/api.md are real: each documented
request is sent to the app, and the answer must be the documented body,
byte for byte, so the documentation cannot drift from what the API says."""

from __future__ import annotations

import json
import pathlib
import re

import fakeredis
import pytest

from tpv_broker.api import create_app
from tpv_broker.config.settings import load_config
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

API_DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.md"
# <!-- doc-example: NAME request|answer --> followed by a fenced block
_EXAMPLE = re.compile(r"<!-- doc-example: (?P<name>[\w-]+) (?P<part>request|answer) -->\n```json\n(?P<body>.*?)\n```",
                      re.DOTALL)


def _documented_examples() -> dict[str, dict[str, str]]:
    examples: dict[str, dict[str, str]] = {}
    for m in _EXAMPLE.finditer(API_DOC.read_text()):
        examples.setdefault(m["name"], {})[m["part"]] = m["body"]
    return examples


EXAMPLES = _documented_examples()


def test_the_api_doc_has_its_error_examples() -> None:
    assert set(EXAMPLES) >= {"invalid-fields", "duplicate-id"}
    for name, parts in EXAMPLES.items():
        assert set(parts) == {"request", "answer"}, f"example {name} needs both a request and an answer"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_documented_request_gets_the_documented_answer(name: str) -> None:
    # Bad requests are refused before any Redis command, so an empty store will do.
    store = SnapshotStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()), KeySchema("tpv_broker"))
    client = create_app(load_config(environ={}), store=store, clock=lambda: 1_700_000_000.0).test_client()
    request = json.loads(EXAMPLES[name]["request"])
    resp = client.post("/api/rank", json=request)
    assert resp.status_code == 400
    assert resp.get_data(as_text=True).strip() == EXAMPLES[name]["answer"]
