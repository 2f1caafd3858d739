"""The local demo (scripts/run-local.sh): its metric generator, and one full
run of the whole system on real servers."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest

from tpv_broker.devtools.demo_metrics import DEMO_SITES, DemoMetrics

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV_FILE = REPO_ROOT / ".local" / "demo" / "env"
START_TS = 1_700_000_000
ALIASES = {"pulsar_sk01_tpv": "galaxy_sk01", "pulsar_cz01_tpv": "galaxy_cz01"}

# -- a line protocol reader, independent of the generator's writer ----------
_MEASUREMENT = r"(?:[^ ,\\]|\\.)+"
_NAME = r"(?:[^ ,=\\]|\\.)+"  # tag keys and values, field keys
_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^,"\s]+)'
_FIELD = rf"{_NAME}={_VALUE}"
_LINE = re.compile(
    rf"^(?P<key>{_MEASUREMENT}(?:,{_NAME}={_NAME})*) (?P<fields>{_FIELD}(?:,{_FIELD})*) (?P<ts>\d+)$"
)
_FLOAT = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """(measurement, tags, fields, timestamp); numbers as float, strings as str."""
    m = _LINE.match(line)
    assert m, f"not line protocol with a timestamp: {line!r}"
    measurement, *tag_parts = re.split(r"(?<!\\),", m["key"])
    tags = dict(_unescape(p).split("=", 1) for p in tag_parts)
    fields: dict[str, Any] = {}
    for fm in re.finditer(rf"({_NAME})=({_VALUE})", m["fields"]):
        name, raw = _unescape(fm[1]), fm[2]
        if raw.startswith('"'):
            fields[name] = _unescape(raw[1:-1])
        else:
            # gxadmin and pulsar-util write floats only: no "i" suffix.
            assert _FLOAT.match(raw), f"{name}={raw} is not a float in {line!r}"
            fields[name] = float(raw)
    return _unescape(measurement), tags, fields, int(m["ts"])


def _run(seed: int, steps: int, aliases: dict[str, str] | None = None) -> list[list[str]]:
    gen = DemoMetrics(seed, reported_ids=aliases)
    return [gen.step(START_TS + 5 * i) for i in range(steps)]


# -- the generator -----------------------------------------------------------
def test_same_seed_gives_same_lines() -> None:
    assert _run(7, 40, ALIASES) == _run(7, 40, ALIASES)
    assert _run(7, 40, ALIASES) != _run(8, 40, ALIASES)


def test_lines_are_line_protocol_in_the_real_schemas() -> None:
    condor_ts: list[int] = []
    for i, lines in enumerate(_run(1, 40, ALIASES)):
        now = START_TS + 5 * i
        assert lines
        for line in lines:
            measurement, tags, fields, ts = parse_line(line)
            assert ts <= now, "a point in the future would hide newer ones"
            if measurement == "queue_by_destination":
                assert ts == now
                assert tags["state"] in ("queued", "running") and set(fields) == {"count"}
            elif measurement == "htcondor_cluster_usage":
                assert tags == {"classad": "machine"}
                assert fields["destination_status"] in ("online", "offline")
                assert isinstance(fields["destination_id"], str)
                assert fields["total_detected_cpus"] == fields["claimed_cpus"] + fields["unclaimed_cpus"]
                assert fields["total_memory"] == fields["claimed_memory"] + fields["unclaimed_memory"]
                condor_ts.append(ts)
            else:
                assert measurement == "destination-queue-run-time" and i == 0
                assert ts <= now - 3600
                for kind in ("queue", "run"):
                    assert fields[f"min_{kind}"] <= fields[f"median_{kind}"] <= fields[f"perc_95_{kind}"]
                    assert fields[f"perc_95_{kind}"] <= fields[f"perc_99_{kind}"] <= fields[f"max_{kind}"]
    # All sites share one htcondor_cluster_usage series: one second each.
    assert len(condor_ts) == len(set(condor_ts))


def test_zero_count_queue_groups_are_omitted() -> None:
    gen = DemoMetrics(1)
    zeros_seen = 0
    for i in range(80):
        lines = [parse_line(line) for line in gen.step(START_TS + 5 * i)]
        written = {(t["destination_id"], t["state"]) for m, t, _, _ in lines if m == "queue_by_destination"}
        counts = gen.queue_counts()
        assert written == {group for group, n in counts.items() if n > 0}
        assert all(f["count"] > 0 for m, _, f, _ in lines if m == "queue_by_destination")
        zeros_seen += sum(1 for n in counts.values() if n == 0)
    assert zeros_seen, "the demo should have empty queues for this test to mean anything"


def test_cluster_usage_reports_aliases_and_the_offline_site_comes_back() -> None:
    runs = _run(1, 60, ALIASES)
    status: dict[str, list[str]] = {}
    for lines in runs:
        for measurement, tags, fields, _ in map(parse_line, lines):
            if measurement == "htcondor_cluster_usage":
                status.setdefault(str(fields["destination_id"]), []).append(str(fields["destination_status"]))
            elif measurement == "queue_by_destination":
                assert tags["destination_id"] not in ALIASES.values(), "gxadmin reports TPV ids"
    assert "galaxy_sk01" in status and "pulsar_sk01_tpv" not in status
    offline_sites = [s.id for s in DEMO_SITES if s.offline]
    assert offline_sites
    for site in offline_sites:
        assert status[site][0] == "offline" and "online" in status[site]
    # Sites without pulsar-util write no cluster rows; all others do.
    assert set(status) == {ALIASES.get(s.id, s.id) for s in DEMO_SITES if s.cluster_usage}


# -- the whole system ----------------------------------------------------------
def _in_sessions(sessions: set[int]) -> list[int]:
    """Live processes in these sessions. The demo starts every server and
    child in a session of its own whose id is the pid it prints, and
    gunicorn's workers inherit the API's: this finds exactly what this run
    started, never a demo someone else runs next to the tests."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(session) in sessions:
            found.append(int(entry.name))
    return found


def _printed_pids(out: str) -> set[int]:
    return {int(p) for p in re.findall(r"^  \S+ +pid (\d+) ", out, re.MULTILINE)}


def _json_after(text: str, marker: str) -> Any:
    start = text.index("{", text.index(marker))
    return json.JSONDecoder().raw_decode(text, start)[0]


def _run_demo(*args: str) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpv_broker.devtools.demo", "--exit-after-sample", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the demo then stops its servers itself; SIGKILL
        # would orphan them.
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += "\n(the demo did not finish within 120 s)"
    return proc.returncode, out, err


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks for survivors through /proc")
def _leftovers(pids: set[int]) -> list[int]:
    """What still runs of these sessions once the demo has returned (after
    a moment for orphaned gunicorn workers), killed so that a failing run
    does not leave its servers to the next one."""
    deadline = time.monotonic() + 5
    while _in_sessions(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = _in_sessions(pids)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    return leftovers


def test_demo_runs_the_whole_system_and_leaves_nothing_behind() -> None:
    returncode, out, err = _run_demo("--json")
    pids = _printed_pids(out)
    leftovers = _leftovers(pids)

    report = f"stdout:\n{out}\nstderr:\n{err}"
    assert returncode == 0, report
    assert "Traceback" not in out + err, report
    assert len(pids) == 4, report  # redis-server, influxd, collector, API
    assert not leftovers, f"processes left running: {leftovers}\n{report}"
    assert "Stopped." in out

    request = _json_after(out, "Sample rank request")
    answer = _json_after(out, "\nAnswer (HTTP 200")
    candidates = [d["id"] for d in request["destinations"]]
    assert len(candidates) >= 8
    assert sorted(answer["destinations"]) == sorted(candidates), report
    assert len(answer["destinations"]) == len(set(answer["destinations"]))
    assert answer["degraded"] is False
    assert '"degraded": false' in out
    reasons = {e["id"]: e["reason"] for e in answer["explain"]}
    assert sorted(reasons) == sorted(candidates)
    assert "no metrics" in reasons["pulsar_au01"]
    assert "offline" in reasons["pulsar_be01"]  # reported offline for the first steps
    assert not ENV_FILE.exists(), "the settings of stopped servers must not stay to be sourced"


# -- the running demo, as a newcomer meets it --------------------------------------------
def _lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str | None], last: str, timeout_s: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {last!r} within {timeout_s:g} s:\n" + "\n".join(seen)) from None
        if line is None:
            raise AssertionError("the demo stopped early:\n" + "\n".join(seen))
        seen.append(line)
        if line == last:
            return seen


def _in_sourced_shell(command: str) -> subprocess.CompletedProcess[str]:
    """A command as a newcomer types it, in a new shell in the checkout,
    after the one line the demo says to source."""
    # Settings of the shell that would lead away from the demo: sourcing drops them.
    env = {**os.environ, "TPV_BROKER_REDIS_URL": "redis://127.0.0.1:1/0", "TPV_BROKER_REDIS_KEY_PREFIX": "elsewhere"}
    return subprocess.run(["bash", "-c", f"source {shlex.quote(str(ENV_FILE))} && {command}"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def _hints(out: list[str]) -> Iterator[str]:
    start = out.index("Try, in another shell, while this runs:")
    for line in out[start + 1:]:
        if not line.startswith("  "):
            return
        yield line.strip()


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks for survivors through /proc")
def test_the_running_demo_explains_its_answer_and_the_cli_finds_it() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tpv_broker.devtools.demo"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = _lines_of(proc.stdout)
    out: list[str] = []
    try:
        out = _until(lines, "Running. Ctrl-C stops everything.", 120)
        report = "\n".join(out)

        # The sample answer: a header, then one line per candidate.
        answer = next(i for i, line in enumerate(out) if line.startswith("Answer (HTTP 200, "))
        assert re.fullmatch(r"Answer \(HTTP 200, \d+ ms\): snapshot \d+\.\d s old, not degraded", out[answer])
        ranked = out[answer + 1:answer + 9]
        assert [line.split()[0] for line in ranked] == [str(n) for n in range(1, 9)], report
        assert re.fullmatch(r"  1 pulsar_\w+ +score \d+\.\d: waits .+", ranked[0]), report
        assert ranked[-2:] == ["  7 pulsar_au01      no metrics for this destination",
                               "  8 pulsar_be01      reported offline"], report
        assert out[answer + 9] == "" and not any(line.lstrip().startswith(("{", '"')) for line in out), report

        hints = list(_hints(out))
        assert hints[0].startswith("source .local/demo/env"), report
        rank = next(h for h in hints if h.startswith("tpv-broker rank --explain "))
        for expected in ("tpv-broker inspect", "curl -s -H 'Content-Type: application/json'", "/metrics"):
            assert any(h.startswith(expected) or expected in h for h in hints), (expected, report)
        assert re.search(r"http://127\.0\.0\.1:\d+/docs \(API docs\)", report)

        inspected = _in_sourced_shell("tpv-broker inspect")
        assert inspected.returncode == 0, inspected.stderr
        assert re.match(r"snapshot age \d+\.\d s .*, 12 destinations, ", inspected.stdout), inspected.stdout
        before = _in_sourced_shell('redis-cli -u "$TPV_BROKER_REDIS_URL" zcard tpv_broker:inflight').stdout
        ranked_here = _in_sourced_shell(rank)
        assert ranked_here.returncode == 0, ranked_here.stderr
        rows = [line for line in ranked_here.stdout.splitlines() if re.match(r"  \d ", line)]
        assert len(rows) == 8 and rows[-1] == "  8 pulsar_be01      reported offline", ranked_here.stdout
        assert "term" in ranked_here.stdout and "queue_wait" in ranked_here.stdout  # --explain
        after = _in_sourced_shell('redis-cli -u "$TPV_BROKER_REDIS_URL" zcard tpv_broker:inflight').stdout
        assert before.strip() and after == before, "the hint's rank command must charge nothing"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        leftovers = _leftovers(_printed_pids("\n".join(out)))
    rest = "\n".join(iter(lines.get, None))  # up to the end of its output
    proc.stdout.close()
    assert proc.returncode == 0, "\n".join(out) + rest
    assert rest.endswith("Stopped.") and not leftovers, rest
    assert not ENV_FILE.exists()
    stale = _in_sourced_shell("true")
    assert stale.returncode != 0  # nothing left to source once it stopped
