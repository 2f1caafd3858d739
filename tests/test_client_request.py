"""What the client sends always passes the API's validation, and the client
drops exactly what the API would reject. The client repeats the API's rules
(it must not import the service); these tests are what keeps the two in step."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tpv_broker.api.schemas import DEST_ID_PATTERN, JOB_ID_PATTERN, TOOL_ID_PATTERN, RankRequest
from tpv_broker.ids import TOOL_ID_MAX_CHARS
from tpv_broker_client import request as rq

from .test_client_rank import Dest, Helpers, Job, Tool


def api_accepts(body: dict[str, Any]) -> bool:
    # Through JSON, as the API gets it (NaN and Infinity survive json.dumps).
    try:
        RankRequest.model_validate(json.loads(json.dumps(body)))
    except ValidationError:
        return False
    return True


def base(**job: Any) -> dict[str, Any]:
    return {"job": {"tool_id": "bwa", **job}, "destinations": [{"id": "a"}]}


def test_the_id_patterns_are_the_apis():
    assert (rq.DEST_ID_PATTERN, rq.TOOL_ID_PATTERN, rq.JOB_ID_PATTERN, rq.TOOL_ID_MAX_CHARS) == (
        DEST_ID_PATTERN, TOOL_ID_PATTERN, JOB_ID_PATTERN, TOOL_ID_MAX_CHARS)


odd_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="ascii"), max_size=12),
    st.from_regex(DEST_ID_PATTERN, fullmatch=True),
    st.from_regex(TOOL_ID_PATTERN, fullmatch=True),
    st.sampled_from(["a\n", "\na", "a b", "a  b", " a", "a ", "Show beginning1", "", "x" * 255, "x" * 256,
                     "x" * 512, "x" * 513, "x " * 256, "x " * 255 + "xx", "x " * 300 + "x", "a\ud800", "é"]),
)
odd_number = st.one_of(
    st.floats(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.none(),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 100_000, 100_000.5, 1_000_000, 10_000, 10_001, 1e12, -1e12, 1e18, 1.5e18,
                     "4"]),
)


@settings(max_examples=300, deadline=None)
@given(value=odd_text)
def test_a_destination_id_is_sent_exactly_when_the_api_accepts_it(value):
    entry = rq.destination_entry(Dest(value), None)
    assert (entry is not None) == api_accepts({"job": {"tool_id": "bwa"}, "destinations": [{"id": value}]})


@settings(max_examples=300, deadline=None)
@given(value=odd_text)
def test_a_tool_id_is_sent_exactly_when_the_api_accepts_it(value):
    try:
        rq.job_section({"tool": Tool(id=value)})
        sent = True
    except rq.Unsendable:
        sent = False
    assert sent == api_accepts({"job": {"tool_id": value}, "destinations": [{"id": "a"}]})


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(odd_text, st.integers(min_value=-(10**40), max_value=10**40)))
def test_a_job_id_is_sent_exactly_when_the_api_accepts_it(value):
    sent = "id" in rq.job_section({"tool": Tool(id="bwa"), "job": Job(id=value)})
    assert sent == api_accepts(base(id=value))


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(["cores", "mem", "gpus"]), value=odd_number)
def test_a_job_number_is_sent_exactly_when_the_api_accepts_it(name, value):
    job = rq.job_section({"tool": Tool(id="bwa"), name: value})
    # gpus: null is accepted and means "not given", as leaving it out does.
    accepted = value is not None and api_accepts(base(**{name: value}))
    assert (name in job) == accepted
    if name in job:
        assert api_accepts(base(**{name: job[name]}))


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
odd_value = st.one_of(
    json_scalar,
    st.text(min_size=999, max_size=1001),
    st.lists(json_scalar, max_size=3),
    st.dictionaries(st.text(max_size=3), json_scalar, max_size=3),
    st.builds(object),
    st.sampled_from([{1, 2}, b"bytes", 1j, "a\udc80"]),
)
candidate = st.builds(
    Dest,
    id=odd_text,
    tag_score=st.one_of(st.integers(min_value=-(10**13), max_value=10**13), st.floats(), st.none()),
    context=st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), odd_value, max_size=5),
)
dataset = st.fixed_dictionaries({"object_store_id": st.one_of(odd_text, st.none(), st.integers()),
                                 "size": odd_number})


@settings(max_examples=300, deadline=None)
@given(
    cands=st.lists(candidate, max_size=6),
    facts=st.fixed_dictionaries({}, optional={"cores": odd_number, "mem": odd_number, "gpus": odd_number}),
    job_id=st.one_of(st.integers(), odd_text, st.none()),
    datasets=st.dictionaries(st.integers(), dataset, max_size=6),
    stores=st.dictionaries(odd_text, st.fixed_dictionaries({"latitude": odd_number, "longitude": odd_number}),
                           max_size=3),
)
def test_every_request_the_client_builds_passes_the_apis_validation(cands, facts, job_id, datasets, stores):
    ns = {"tool": Tool(id="toolshed.g2.bx.psu.edu/repos/iuc/bwa/bwa/0.7.17"), "job": Job(id=job_id),
          "helpers": Helpers(datasets), **facts}
    entries, _ = rq.destinations_section(cands, [d.tag_score for d in cands])
    body = {
        "job": rq.job_section(ns),
        "destinations": entries,
        "datasets": rq.datasets_section(ns),
        "object_stores": rq.object_stores_section(stores),
    }
    text = json.dumps(body, allow_nan=False)  # what the client does: NaN would raise here
    RankRequest.model_validate(json.loads(text))
    # Sizes are summed per store and stay in range.
    assert all(0 <= d["size"] <= rq.MAX_SIZE_BYTES and math.isfinite(d["size"]) for d in body["datasets"])
    assert len({d["object_store_id"] for d in body["datasets"]}) == len(body["datasets"])
