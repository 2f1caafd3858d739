"""Request limits and id checks happen before any Redis work: on a real
redis-server, a refused request leaves no command in Redis's own statistics
(INFO commandstats), while an accepted one does. Real Galaxy ids pass;
ids with key-injection characters are refused naming field and index."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.cli import main
from tpv_broker.config.settings import load_config
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.devtools.servers import free_port
from tpv_broker.ids import DEFAULT_TENANT, check_destination_id, check_job_id, check_tool_id
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import CLI, clean_env, stop, wait_until_serving

NOW = 1_700_000_000.0
MAX = 5
LIMIT_BYTES = 4096

# Real ids: toolshed ids with versions (+galaxy, +T, ~, a toolshed on a port), built-ins, the stock
# tools whose ids hold spaces; TPV destination ids from site configs and the prototype's data.
REAL_TOOL_IDS = [
    "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy1",
    "toolshed.g2.bx.psu.edu/repos/iuc/snpeff/snpEff/4.3+T.galaxy1",
    "toolshed.g2.bx.psu.edu/repos/devteam/column_maker/Add_a_column1/2.0",
    "toolshed.g2.bx.psu.edu/repos/bgruening/text_processing/tp_sed_tool/9.3+galaxy1",
    "testtoolshed.g2.bx.psu.edu/repos/me/tool/tool/1.0~beta2",
    "localhost:9009/repos/admin/bwa/bwa/0.7.17",
    "upload1", "Cut1", "Filter1", "sort1", "__SET_METADATA__", "__DATA_FETCH__", "CONVERTER_bam_to_bai",
    "interactive_tool_jupyter_notebook", "Show beginning1", "Remove beginning1", "Show tail1",
    "Convert characters1", "Extract genomic DNA 1", "trinity", "spades", "bwa",
]
REAL_DEST_IDS = ["pulsar_de", "pulsar_sk01_tpv", "condor_us", "pulsar_asia01", "slurm-gpu", "tpv.pulsar.it01",
                 "pulsar_eu:de01", "k8s/default", "tpv_dispatcher", "local"]
# (id, why it must not pass)
BAD_IDS = [("pulsar_*", "glob"), ("pulsar?", "glob"), ("pulsar[de]", "glob"), ("{pulsar}", "hash tag"),
           ("pulsar de", "space"), ("pulsar_de\n", "newline"), ("pulsar\r\nFLUSHALL", "CRLF"), ("a\tb", "tab"),
           ("a\x00b", "NUL"), ('a"b', "quote"), ("a'b", "quote"), ("a\\b", "backslash"), ("pülsar", "non-ASCII"),
           ("", "empty"), ("-pulsar", "leading dash"), ("x" * 256, "too long")]
BAD_TOOL_IDS = [("bwa*", "glob"), ("bwa\n", "newline"), (" bwa", "leading space"), ("bwa ", "trailing space"),
                ("Show  beginning1", "double space"), ("a\tb", "tab"), ("{bwa}", "brace"), ("x" * 513, "too long"),
                ("bwa\u2028", "line separator"), ("", "empty")]
BAD_JOB_IDS = [("1:2", "colon"), ("a*", "glob"), ("a b", "space"), ("7\n", "newline"), ("{7}", "brace"),
               ("x" * 129, "too long"), ("", "empty")]


@pytest.fixture
def real_redis(redis_client: redis.Redis) -> redis.Redis:
    store = SnapshotStore(redis_client, KeySchema("lim"))
    dests = {d: DestinationFigures(id=d, status="online", queued=1, running=1, cpus_free=8, mem_free_gb=16,
                                   metrics_at=NOW - 20, live_at=NOW - 20, sources={"queue_by_destination": NOW - 20})
             for d in REAL_DEST_IDS}
    stats = {f"tool:{t}": {"pulsar_de": ToolFigures(count=3, median_run_s=60)} for t in REAL_TOOL_IDS}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=NOW - 5, destinations=len(dests)), destinations=dests,
                           tool_stats=stats))
    return redis_client


@pytest.fixture
def api(real_redis: redis.Redis) -> FlaskClient:
    config = load_config(environ={"TPV_BROKER_API_MAX_CANDIDATES": str(MAX),
                                  "TPV_BROKER_API_MAX_REQUEST_BYTES": str(LIMIT_BYTES)})
    return create_app(config, store=SnapshotStore(real_redis, KeySchema("lim")), clock=lambda: NOW).test_client()


def redis_commands(client: redis.Redis) -> set[str]:
    """Commands Redis ran since the last CONFIG RESETSTAT, apart from our own bookkeeping."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_") for name in stats} - {"config|resetstat", "info", "config"}


def rank_body(n: int, tool_id: str = "bwa", **job: Any) -> dict[str, Any]:
    return {"job": {"tool_id": tool_id, **job}, "destinations": [{"id": f"pulsar_{i:03d}"} for i in range(n)]}


def legacy_body(n: int) -> dict[str, Any]:
    return {"job_info": {"tool_id": "bwa"}, "destinations": [{"id": f"pulsar_{i:03d}"} for i in range(n)]}


# -- number of candidates ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "build"), [("/api/rank", rank_body), ("/process_data", legacy_body)])
def test_one_candidate_over_the_limit_is_refused_before_redis(api: FlaskClient, real_redis: redis.Redis,
                                                              path: str, build: Any) -> None:
    real_redis.config_resetstat()
    resp = api.post(path, json=build(MAX + 1))
    assert resp.status_code == 400
    problem = f"at most {MAX} candidates, got {MAX + 1}"
    assert resp.get_json()["errors"] == [{"field": "destinations", "problem": problem}]
    assert redis_commands(real_redis) == set()
    # At the limit: answered, and Redis did work for it (so the check above can fail).
    resp = api.post(path, json=build(MAX))
    assert resp.status_code == 200
    assert {"multi", "exec", "hmget"} <= redis_commands(real_redis)


# -- request size -----------------------------------------------------------------------------------------
def _padded(size: int) -> bytes:
    raw = json.dumps(rank_body(2)).encode()
    return raw + b" " * (size - len(raw))


def test_request_size_at_and_over_the_limit(api: FlaskClient, real_redis: redis.Redis) -> None:
    real_redis.config_resetstat()
    over = api.post("/api/rank", data=_padded(LIMIT_BYTES + 1), content_type="application/json")
    assert over.status_code == 413
    assert over.get_json()["errors"] == [{"field": "body", "problem": f"request body larger than {LIMIT_BYTES} bytes"}]
    assert redis_commands(real_redis) == set()
    assert api.post("/api/rank", data=_padded(LIMIT_BYTES), content_type="application/json").status_code == 200


def _chunked(port: int, body: bytes, chunk: int = 1000) -> bytes:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length) over a raw socket."""
    head = (b"POST /api/rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    payload = head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        answer = b""
        while chunk_in := sock.recv(65536):
            answer += chunk_in
    return answer


def test_a_chunked_body_over_the_limit_is_refused_by_the_served_api(real_redis: redis.Redis, redis_url: str,
                                                                     tmp_path: Path) -> None:
    """Without a Content-Length the limit still holds (gunicorn, as deployed).
    It used to be cut at the limit, and the padded body below, valid JSON up
    to there, was served."""
    port = free_port()
    env = clean_env()
    env.update(TPV_BROKER_REDIS_URL=redis_url, TPV_BROKER_REDIS_KEY_PREFIX="lim",
               TPV_BROKER_API_MAX_REQUEST_BYTES=str(LIMIT_BYTES))
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}",
                                 "--workers", "1"], env=env, stdout=err, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base, tmp_path / "err.log")
        small = _chunked(port, _padded(LIMIT_BYTES))
        big = _chunked(port, _padded(LIMIT_BYTES * 4))
    finally:
        stop(proc)
    assert small.startswith(b"HTTP/1.1 200"), small[:300]
    assert big.startswith(b"HTTP/1.1 413"), big[:300]
    assert f"request body larger than {LIMIT_BYTES} bytes".encode() in big
    assert b"Traceback" not in (tmp_path / "err.log").read_bytes()


# -- ids ------------------------------------------------------------------------------------------------
def test_real_galaxy_ids_pass_and_find_their_figures(api: FlaskClient) -> None:
    for tool_id in REAL_TOOL_IDS:
        check_tool_id(tool_id)
        resp = api.post("/api/rank?explain=1", json={"job": {"tool_id": tool_id, "id": 4711},
                                                     "destinations": [{"id": "pulsar_de"}]})
        assert resp.status_code == 200, (tool_id, resp.get_json())
        (placement,) = resp.get_json()["explain"]
        levels = {t["level"] for t in placement["terms"] if t["term"] == "run_time"}
        assert levels == {"tool"}, (tool_id, placement)  # the exact id's own figures were found
    for i in range(0, len(REAL_DEST_IDS), MAX):
        chunk = REAL_DEST_IDS[i:i + MAX]
        for dest_id in chunk:
            check_destination_id(dest_id)
        resp = api.post("/api/rank", json={"job": {"tool_id": "bwa"}, "destinations": [{"id": d} for d in chunk]})
        assert resp.status_code == 200 and sorted(resp.get_json()["destinations"]) == sorted(chunk)
    for job_id in ("4711", "0", "f2db41e1fa331b3e", "job-7.retry_1"):
        check_job_id(job_id)


@pytest.mark.parametrize(("bad", "why"), BAD_IDS)
def test_destination_ids_with_odd_characters_are_refused_before_redis(api: FlaskClient, real_redis: redis.Redis,
                                                                      bad: str, why: str) -> None:
    real_redis.config_resetstat()
    body = {"job": {"tool_id": "bwa"}, "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_uk"}, {"id": bad}]}
    resp = api.post("/api/rank", json=body)
    assert resp.status_code == 400, why
    (error,) = resp.get_json()["errors"]
    assert error["field"] == "destinations[2].id"
    assert error["problem"].startswith("not a valid destination id: 1-255 of A-Z a-z 0-9 _ . : @ + - /") or \
        error["problem"].startswith("String should have at most 255 characters")
    assert redis_commands(real_redis) == set()


@pytest.mark.parametrize(("bad", "why"), BAD_TOOL_IDS)
def test_tool_ids_with_odd_characters_are_refused_before_redis(api: FlaskClient, real_redis: redis.Redis,
                                                               bad: str, why: str) -> None:
    real_redis.config_resetstat()
    for path, body, field in (
        ("/api/rank", {"job": {"tool_id": bad}, "destinations": [{"id": "a"}]}, "job.tool_id"),
        ("/process_data", {"job_info": {"tool_id": bad}, "destinations": []}, "job_info.tool_id"),
    ):
        resp = api.post(path, json=body)
        assert resp.status_code == 400, why
        assert [e["field"] for e in resp.get_json()["errors"]] == [field]
    assert redis_commands(real_redis) == set()


@pytest.mark.parametrize(("bad", "why"), BAD_JOB_IDS)
def test_job_ids_that_would_change_a_key_are_refused(
    api: FlaskClient, real_redis: redis.Redis, bad: str, why: str
) -> None:
    real_redis.config_resetstat()
    resp = api.post("/api/rank", json=rank_body(1, id=bad))
    assert resp.status_code == 400, why
    assert [e["field"] for e in resp.get_json()["errors"]] == ["job.id"]
    assert redis_commands(real_redis) == set()
    # ... and the key schema refuses to build a key from one, whoever asks.
    with pytest.raises(ValueError, match="not a valid job id"):
        KeySchema("lim").inflight_job(DEFAULT_TENANT, bad)
    # ... nor from a tenant id like it.
    with pytest.raises(ValueError, match="not a valid tenant id"):
        KeySchema("lim").inflight_job(bad, "4711")


def test_the_only_key_holding_request_data_is_the_jobs_charge(api: FlaskClient, real_redis: redis.Redis) -> None:
    before = set(real_redis.keys("*"))
    resp = api.post("/api/rank", json={"job": {"tool_id": "Show beginning1", "id": 4711},
                                       "destinations": [{"id": "pulsar_de"}, {"id": "pulsar_eu:de01"}]})
    resp.get_data()  # the in-flight charge is written once the answer has gone out
    assert resp.status_code == 200
    # (The load hash and the placement counts hold destination ids, which are already a hash's fields.)
    assert set(real_redis.keys("*")) - before == {b"lim:inflight", b"lim:inflight:load", b"lim:health:placements",
                                                  b"lim:inflight:job:default:4711"}


@pytest.mark.parametrize(("args", "hint"), [(["--tool", "bwa*", "pulsar_de"], "--tool"),
                                           (["--tool", "bwa", "pulsar de"], "DESTINATIONS"),
                                           (["--tool", "bwa", "ok", "pulsar_*"], "DESTINATIONS")])
def test_the_rank_command_checks_ids_too(args: list[str], hint: str) -> None:
    result = CliRunner().invoke(main, ["rank", *args], env={"TPV_BROKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.exit_code == 2
    assert hint in result.output and "not a valid" in result.output
