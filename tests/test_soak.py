"""Soak: the deployed processes under steady load for a minute.

``tpv-broker serve`` (gunicorn, its default workers) on a real Redis takes a
few hundred rank requests a second over keep-alive connections, while
``tpv-broker collect`` (interval 1 s) publishes a new snapshot every second
from a real influxd whose figures change every second.

What it proves:
* every answer is a 200 with every candidate exactly once, never degraded
  once the first snapshot is there;
* no answer mixes two snapshots: generation ``g`` of the metrics gives every
  destination ``queued = g``, and ``?explain=1`` shows each candidate's
  ``queued``: all candidates of one answer must show the same ``g``, and a
  client never sees ``g`` go backwards;
* the snapshots did change under the load (several generations were seen);
* memory stays bounded: RSS of the gunicorn master, its workers and the
  collector, sampled from /proc every second, stays under a fixed bound,
  and grows by less than a few MB from the first 10 s to the last 10 s.

The request rate is a target, not a claim: the achieved rate is printed
(always, past pytest's capture) and nothing asserts on it. ``-m "not soak"`` deselects it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tpv_broker.devtools.servers import free_port
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import CLI, wait_for
from .processes import clean_env as _env
from .processes import stop as _stop

pytestmark = pytest.mark.soak

SOAK_S = float(os.environ.get("TPV_BROKER_TEST_SOAK_S", "60"))
TARGET_RPS = 300
CLIENT_THREADS = 4
DESTINATIONS = [f"soak_{i:02d}" for i in range(20)]
CANDIDATES_PER_REQUEST = 8
TOOLS = ["bwa", "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0", "upload1"]
# One in-flight charge per job id: a bounded set keeps the charges a request
# reads bounded too, as TPV's real pace (one rank per job) would.
JOB_IDS = 64

# RSS bounds, from /proc/<pid>/status VmRSS. A worker is Python with Flask,
# pydantic and redis-py (about 50 MB after import) plus its parse cache
# (at most 20,000 entries, under 45 MB even if all were destinations); the
# collector about 50 MB at this size (70 MB at 13 destinations x 2,000
# tools, bench/README.md). Measured peaks here: about 60 MB. 200 MB per
# process leaves room for all of that and still fails runaway growth.
RSS_LIMIT_MB = 200.0
# From the mean of the first 10 s to the mean of the last 10 s, per
# process. A worker's parse cache (store._ParsedCache) grows by design until
# it holds 20,000 entries: here, per worker and minute, about 9,000 in-flight
# charge members (~0.5 KB each, one per rank answer) and 1,200 destination
# entries (20 a snapshot, ~2.2 KB each), about 7 MB; measured +11 MB of RSS.
# 25 MB leaves room for that, and a leak of 3 KB a request (checked: 7,500
# requests per worker between the two windows) crosses it.
RSS_GROWTH_LIMIT_MB = 25.0



def _queue_lines(generation: int, ts_ms: int) -> list[str]:
    return [
        line
        for dest in DESTINATIONS
        for line in (
            f"queue_by_destination,destination_id={dest},state=queued count={generation} {ts_ms}",
            f"queue_by_destination,destination_id={dest},state=running count=3 {ts_ms}",
        )
    ]


def _static_lines(now_s: int) -> list[str]:
    """Capacity and run-time statistics that stay put: capacity so large that
    in-flight charges (which take free cores when a job fits) never spill
    into ``queued``, the generation's figure."""
    lines = []
    for i, dest in enumerate(DESTINATIONS):
        # destination_id is a field here: one row per site, each its own second.
        ts = now_s - 60 + i
        lines.append(
            f'htcondor_cluster_usage total_detected_cpus=1000000,unclaimed_cpus=1000000,'
            f'total_memory=1000000000,unclaimed_memory=1000000000,total_gpu_slots=0,unclaimed_gpus=0,'
            f'destination_id="{dest}",destination_status="online" {ts * 1000}'
        )
        for tool in TOOLS:
            tag = tool.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")
            lines.append(
                f"destination-queue-run-time,destination_id={dest},tool_id={tag} "
                f"count={10 + i},median_queue={30 + i},median_run={300 + 7 * i},perc_95_run={900 + i} "
                f"{(now_s - 3600) * 1000}"
            )
    return lines


def _pids_of(master: int) -> list[int]:
    """The gunicorn master and its workers (children, by /proc/*/stat)."""
    pids = [master]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master:
            pids.append(int(entry.name))
    return pids


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class ClientTally:
    sent: int = 0
    ok: int = 0
    problems: list[str] = field(default_factory=list)
    generations: set[int] = field(default_factory=set)
    checked_consistent: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def _client(port: int, seed: int, start_at: float, stop_at: float, tally: ClientTally) -> None:
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    per_thread_rps = TARGET_RPS / CLIENT_THREADS
    last_generation = -1
    n = 0
    while True:
        due = start_at + n / per_thread_rps
        now = time.monotonic()
        # A busy machine gets fewer requests, not a longer test.
        if due >= stop_at or now >= stop_at:
            break
        if due > now:
            time.sleep(due - now)
        candidates = rnd.sample(DESTINATIONS, CANDIDATES_PER_REQUEST)
        body = json.dumps({
            "job": {"id": f"soak-{seed}-{n % (JOB_IDS // CLIENT_THREADS)}", "tool_id": rnd.choice(TOOLS),
                    "cores": 1, "mem": 1},
            "destinations": [{"id": d, "tpv_score": rnd.randint(0, 5)} for d in candidates],
        })
        explained = n % 4 != 3  # every fourth request takes the plain path
        n += 1
        tally.sent += 1
        try:
            conn.request("POST", "/api/rank?explain=1" if explained else "/api/rank", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            tally.problem(f"request {n}: {type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        if resp.status != 200:
            tally.problem(f"request {n}: HTTP {resp.status}: {raw[:200]!r}")
            continue
        answer = json.loads(raw)
        if answer.get("degraded") is not False:
            tally.problem(f"request {n}: degraded: {answer.get('degraded_reason')}")
            continue
        if sorted(answer["destinations"]) != sorted(candidates):
            tally.problem(f"request {n}: ids {answer['destinations']} are not the candidates {candidates}")
            continue
        if explained:
            seen = set()
            for entry in answer["explain"]:
                if entry["group"] != "scored":
                    tally.problem(f"request {n}: {entry['id']} not scored: {entry['reason']}")
                    continue
                (queue_term,) = [t for t in entry["terms"] if t["term"] == "queue_wait"]
                seen.add(queue_term["raw"]["queued"])
            if len(seen) != 1:
                tally.problem(f"request {n}: one answer mixes snapshots: queued values {sorted(seen)}")
                continue
            generation = int(seen.pop())
            if generation < last_generation:
                tally.problem(f"request {n}: generation went back from {last_generation} to {generation}")
                continue
            last_generation = generation
            tally.generations.add(generation)
            tally.checked_consistent += 1
        tally.ok += 1
    conn.close()


class MetricsWriter(threading.Thread):
    """Writes generation g+1 of the queue figures every second, half a
    cycle away from the collector's reads (its cycle phase is taken from
    the first snapshot), so a read never lands inside a write."""

    def __init__(self, influx, db: str, phase: float, first_generation: int) -> None:
        super().__init__(name="soak-metrics-writer", daemon=True)
        self.influx, self.db, self.phase = influx, db, phase
        self.generation = first_generation
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                now = time.time()
                target = int(now) + self.phase + 0.5
                while target <= now:
                    target += 1.0
                if self.stop.wait(target - now):
                    return
                self.generation += 1
                self.influx.write_lines(self.db, _queue_lines(self.generation, int(time.time() * 1000)),
                                        precision="ms")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e




def test_soak_rank_under_load_while_collector_publishes(influx_server, influx_db, redis_url, redis_client, tmp_path,
                                                        capsys):
    now_s = int(time.time())
    influx_server.write_lines(influx_db, _static_lines(now_s) + _queue_lines(1, now_s * 1000), precision="ms")
    env = _env(
        TPV_BROKER_REDIS_URL=redis_url,
        TPV_BROKER_INFLUXDB_URL=influx_server.url,
        TPV_BROKER_INFLUXDB_DATABASE=influx_db,
        TPV_BROKER_COLLECTOR_INTERVAL_S="1",
    )
    port = free_port()
    collector_log, api_log = tmp_path / "collector.log", tmp_path / "api.log"
    with open(collector_log, "w") as out:
        collector = subprocess.Popen([*CLI, "collect"], env=env, stdout=out, stderr=subprocess.STDOUT)
    with open(api_log, "w") as out:
        # No --workers: the deployed default (api.workers).
        api = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}"], env=env,
                               stdout=out, stderr=subprocess.STDOUT)
    store = SnapshotStore(redis_client, KeySchema("tpv_broker"))
    writer: MetricsWriter | None = None
    samples: list[tuple[float, dict[str, float]]] = []
    sampling = threading.Event()

    def sample_rss() -> None:
        while not sampling.wait(1.0):
            row = {("api master" if pid == api.pid else f"api worker {pid}"): _rss_mb(pid) for pid in _pids_of(api.pid)}
            row["collector"] = _rss_mb(collector.pid)
            samples.append((time.monotonic(), {k: v for k, v in row.items() if v is not None}))

    def api_up() -> bool:
        assert api.poll() is None, f"tpv-broker serve exited early:\n{api_log.read_text()}"
        assert collector.poll() is None, f"tpv-broker collect exited early:\n{collector_log.read_text()}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    tallies = [ClientTally() for _ in range(CLIENT_THREADS)]
    try:
        wait_for(lambda: store.read_meta() is not None, "the collector's first snapshot", limit_s=60)
        wait_for(api_up, "the API to be ready", limit_s=60)
        meta = store.read_meta()
        phase = (meta.created_at - meta.cycle_s) % 1.0
        writer = MetricsWriter(influx_server, influx_db, phase, first_generation=1)
        writer.start()
        sampler = threading.Thread(target=sample_rss, name="soak-rss", daemon=True)
        sampler.start()
        start = time.monotonic() + 0.1
        stop_at = start + SOAK_S
        clients = [threading.Thread(target=_client, args=(port, i, start, stop_at, tallies[i]), daemon=True)
                   for i in range(CLIENT_THREADS)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=SOAK_S + 120)
        elapsed = time.monotonic() - start
        sampling.set()
        sampler.join(timeout=5)
        assert not any(c.is_alive() for c in clients), "a client thread is stuck"
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(timeout=10)
        _stop(api)
        _stop(collector)

    sent = sum(t.sent for t in tallies)
    ok = sum(t.ok for t in tallies)
    consistent = sum(t.checked_consistent for t in tallies)
    generations = set().union(*(t.generations for t in tallies))
    problems = [p for t in tallies for p in t.problems]
    by_process: dict[str, list[tuple[float, float]]] = {}
    for at, row in samples:
        for name, mb in row.items():
            by_process.setdefault(name, []).append((at, mb))
    t0, t1 = samples[0][0], samples[-1][0]
    growth = {}
    for name, series in by_process.items():
        first = [mb for at, mb in series if at <= t0 + 10]
        last = [mb for at, mb in series if at >= t1 - 10]
        growth[name] = (sum(last) / len(last) - sum(first) / len(first)) if first and last else 0.0
    peak = {name: max(mb for _, mb in series) for name, series in by_process.items()}
    lines = [
        f"soak: {sent} requests in {elapsed:.1f} s ({sent / elapsed:.0f}/s, target {TARGET_RPS}/s), "
        f"{ok} answered correctly, {consistent} checked for one snapshot per answer, "
        f"{len(generations)} snapshot generations seen ({min(generations, default=0)}..{max(generations, default=0)}), "
        f"writer at generation {writer.generation if writer else '?'}",
        *(f"soak: RSS {name}: peak {peak[name]:.1f} MB, first->last 10 s {growth[name]:+.1f} MB"
          for name in sorted(by_process)),
    ]
    # Shown whatever pytest's capture setting: the figures are the point.
    with capsys.disabled():
        print("\n" + "\n".join(lines))

    assert writer is not None and writer.error is None, writer.error if writer else "no writer"
    assert not problems, f"{sent - ok} of {sent} requests failed; first problems:\n" + "\n".join(problems)
    assert ok == sent
    # The snapshots changed under the load: the check above had swaps to see.
    assert len(generations) >= 5, f"only {len(generations)} snapshot generations seen"
    assert len(by_process) >= 3, f"expected a gunicorn master, workers and the collector: {sorted(by_process)}"
    assert all(p <= RSS_LIMIT_MB for p in peak.values()), peak
    assert all(g <= RSS_GROWTH_LIMIT_MB for g in growth.values()), growth
    for log_path in (collector_log, api_log):
        text = log_path.read_text()
        assert "Traceback" not in text, text[-3000:]
    assert "cycle NOT published" not in collector_log.read_text()
