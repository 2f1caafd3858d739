"""Demo metrics: a dozen made-up destinations in the schemas Galaxy sites
really produce (gxadmin's ``queue_by_destination`` and
``destination-queue-run-time``, pulsar-util's ``htcondor_cluster_usage`` in
its old format), changing over time as a deterministic function of a seed,
and the sample rank request the demo sends."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GALAXY_HOST = "galaxy-demo"  # Telegraf adds the host tag to everything gxadmin prints
FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0"


@dataclass(frozen=True)
class DemoSite:
    """One made-up destination. ``id`` is the TPV destination id, as gxadmin
    reports it; pulsar-util reports the config alias instead, if there is one."""

    id: str
    cores: int
    mem_gb_per_core: float
    load: float  # mean demand, as a fraction of the cores
    swing: float  # how far demand moves around the mean over a cycle
    period_steps: int  # feeder steps per busy/quiet cycle
    gpus: int = 0
    cluster_usage: bool = True  # runs pulsar-util (writes htcondor_cluster_usage)
    # Reported offline for the first n steps of every m (n, m): starting
    # offline makes the very first snapshot show it.
    offline: tuple[int, int] | None = None


@dataclass(frozen=True)
class DemoTool:
    id: str
    median_run_s: float


DEMO_SITES: tuple[DemoSite, ...] = (
    DemoSite("pulsar_de", 256, 4, load=0.95, swing=0.35, period_steps=40),
    DemoSite("condor_tpv", 192, 8, load=0.7, swing=0.3, period_steps=56),
    DemoSite("pulsar_uk", 128, 4, load=0.8, swing=0.3, period_steps=48, cluster_usage=False),
    DemoSite("pulsar_cz01_tpv", 96, 6, load=0.6, swing=0.4, period_steps=36),
    DemoSite("pulsar_pt01", 80, 4, load=0.5, swing=0.3, period_steps=44),
    DemoSite("pulsar_sk01_tpv", 64, 8, load=0.45, swing=0.4, period_steps=30),
    DemoSite("pulsar_pl01", 64, 6, load=0.75, swing=0.25, period_steps=52, gpus=8),
    DemoSite("pulsar_fr01_tpv", 48, 4, load=0.9, swing=0.4, period_steps=32),
    DemoSite("pulsar_es01", 40, 4, load=0.7, swing=0.5, period_steps=28),
    DemoSite("pulsar_be01", 32, 4, load=0.6, swing=0.3, period_steps=24, offline=(18, 60)),
    DemoSite("pulsar_no01", 24, 8, load=0.5, swing=0.5, period_steps=20),
    DemoSite("pulsar_it01", 16, 4, load=0.15, swing=0.3, period_steps=24),
)

DEMO_TOOLS: tuple[DemoTool, ...] = (
    DemoTool(FASTP, 280),
    DemoTool("toolshed.g2.bx.psu.edu/repos/devteam/fastqc/fastqc/0.74+galaxy0", 150),
    DemoTool("toolshed.g2.bx.psu.edu/repos/iuc/bwa_mem2/bwa_mem2/2.2.1+galaxy1", 1800),
    DemoTool("toolshed.g2.bx.psu.edu/repos/iuc/multiqc/multiqc/1.11+galaxy1", 60),
    DemoTool("upload1", 30),
)

# Demand is counted in jobs of this many cores; real jobs vary around it.
_JOB_CORES = 4
_JOB_SIZES = (1, 2, 4, 4, 8)
_MACHINE_CORES = 16


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_num(value: float) -> str:
    # No "i" suffix: gxadmin and pulsar-util write every number as a float,
    # and a field's type is fixed by its first point in a shard.
    value = round(float(value), 2)
    return str(int(value)) if value.is_integer() else repr(value)


def _line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | str], ts: int) -> str:
    tag_part = "".join(f",{_escape_tag(k)}={_escape_tag(v)}" for k, v in tags.items())
    field_part = ",".join(
        f"{k}={_field_str(v) if isinstance(v, str) else _field_num(v)}" for k, v in fields.items()
    )
    return f"{_escape_tag(measurement)}{tag_part} {field_part} {ts}"


@dataclass
class _SiteState:
    phase: float
    speed: float  # run-time factor against the tool's typical run time
    queued: int = 0
    running: int = 0
    claimed_cpus: int = 0
    claimed_mem_mib: int = 0
    claimed_gpus: int = 0
    offline: bool = False


class DemoMetrics:
    """Deterministic demo metrics: a pure function of the seed, the number
    of steps taken and the timestamps passed in.

    Each ``step(now)`` returns line protocol (timestamps in seconds) for one
    feeder tick: a gxadmin ``queue_by_destination`` batch stamped ``now``
    (groups with zero jobs left out, as gxadmin does) and pulsar-util
    ``htcondor_cluster_usage`` rows. The first step also writes two daily
    ``destination-queue-run-time`` runs.
    """

    def __init__(
        self,
        seed: int = 1,
        reported_ids: Mapping[str, str] | None = None,
        sites: Sequence[DemoSite] = DEMO_SITES,
        tools: Sequence[DemoTool] = DEMO_TOOLS,
    ) -> None:
        self._rng = random.Random(seed)
        self.sites = tuple(sites)
        self.tools = tuple(tools)
        # TPV destination id -> the id pulsar-util reports (its AMQP vhost).
        self.reported_ids = dict(reported_ids or {})
        self.steps = 0
        self._state = {
            s.id: _SiteState(phase=self._rng.random(), speed=self._rng.uniform(0.7, 1.5)) for s in self.sites
        }
        self._cluster_sites = [s for s in self.sites if s.cluster_usage]
        self._cursor = 0
        self._last_cluster_ts: int | None = None
        self._last_ts: int | None = None

    def step(self, now: float) -> list[str]:
        ts = int(now)
        if self._last_ts is not None and ts <= self._last_ts:
            # Same-timestamp points of one series overwrite each other.
            ts = self._last_ts + 1
        lines = self._run_time_lines(ts) if self.steps == 0 else []
        for site in self.sites:
            self._advance(site)
        lines += self._cluster_lines(ts)
        lines += self._queue_lines(ts)
        self.steps += 1
        self._last_ts = ts
        return lines

    def queue_counts(self) -> dict[tuple[str, str], int]:
        """(destination, state) -> jobs after the last step, zeros included."""
        out: dict[tuple[str, str], int] = {}
        for site in self.sites:
            st = self._state[site.id]
            out[(site.id, "queued")] = st.queued
            out[(site.id, "running")] = st.running
        return out

    def offline_sites(self) -> list[str]:
        return [s.id for s in self.sites if self._state[s.id].offline]

    def free_cpus(self) -> dict[str, int]:
        return {s.id: s.cores - self._state[s.id].claimed_cpus for s in self._cluster_sites}

    def _offline_at(self, site: DemoSite, step: int) -> bool:
        return site.offline is not None and step % site.offline[1] < site.offline[0]

    def _advance(self, site: DemoSite) -> None:
        st, rng, first = self._state[site.id], self._rng, self.steps == 0
        offline = self._offline_at(site, self.steps)
        if offline and not first:
            # Nothing starts or finishes out there while it is unreachable,
            # but Galaxy keeps sending jobs. pulsar-util repeats the last row.
            st.queued += rng.randint(0, 2)
            st.offline = True
            return
        wave = math.sin(2 * math.pi * (self.steps / site.period_steps + st.phase))
        load = max(0.0, site.load + site.swing * wave + rng.uniform(-0.08, 0.08))
        slots = max(1, site.cores // _JOB_CORES)
        wanted = round(load * slots)
        running = min(wanted, slots)
        backlog = wanted - running
        if first:
            st.queued = backlog
        else:
            # Queues follow the backlog a few jobs per step, so they visibly
            # grow and drain instead of jumping.
            pace = max(2, slots // 8)
            st.queued = max(0, st.queued + max(-pace, min(pace, backlog - st.queued)))
        st.running = running
        st.claimed_cpus = min(site.cores, sum(rng.choice(_JOB_SIZES) for _ in range(running)))
        total_mem = round(site.cores * site.mem_gb_per_core * 1024)
        # Jobs rarely use all the memory per core they could claim.
        mem_mib = st.claimed_cpus * site.mem_gb_per_core * 1024 * rng.uniform(0.4, 1.0)
        st.claimed_mem_mib = min(total_mem, round(mem_mib))
        gpus = site.gpus * min(1.0, load) * rng.uniform(0.6, 1.0)
        st.claimed_gpus = min(site.gpus, round(gpus))
        st.offline = offline

    def _cluster_lines(self, ts: int) -> list[str]:
        sites = self._cluster_sites
        if not sites:
            return []
        # destination_id is a field in this format, so every site writes to
        # the same series: each row needs a second of its own, never one in
        # the future (queries without an upper time bound would see it as
        # the newest). Sites take turns when there are fewer free seconds
        # than sites, as independent cron jobs would.
        last = self._last_cluster_ts if self._last_cluster_ts is not None else ts - len(sites)
        lines = []
        for row_ts in range(max(last + 1, ts - len(sites) + 1), ts + 1):
            site = sites[self._cursor]
            self._cursor = (self._cursor + 1) % len(sites)
            lines.append(self._cluster_line(site, row_ts))
        self._last_cluster_ts = max(last, ts)
        return lines

    def _cluster_line(self, site: DemoSite, ts: int) -> str:
        st = self._state[site.id]
        total_mem = round(site.cores * site.mem_gb_per_core * 1024)
        machines = max(1, site.cores // _MACHINE_CORES)
        busy = min(machines, math.ceil(st.claimed_cpus / _MACHINE_CORES))
        fields: dict[str, float | str] = {
            "total_detected_cpus": site.cores,
            "claimed_cpus": st.claimed_cpus,
            "unclaimed_cpus": site.cores - st.claimed_cpus,
            "total_memory": total_mem,
            "claimed_memory": st.claimed_mem_mib,
            "unclaimed_memory": total_mem - st.claimed_mem_mib,
            "total_slots": machines,
            "claimed_busy_slots": busy,
            "unclaimed_idle_slots": machines - busy,
            "total_gpu_slots": site.gpus,
            "claimed_gpus": st.claimed_gpus,
            "unclaimed_gpus": site.gpus - st.claimed_gpus,
            "querytime": ts,
            "destination_id": self.reported_ids.get(site.id, site.id),
            "destination_status": "offline" if st.offline else "online",
        }
        return _line("htcondor_cluster_usage", {"classad": "machine"}, fields, ts)

    def _queue_lines(self, ts: int) -> list[str]:
        lines = []
        for site in self.sites:
            st = self._state[site.id]
            for state, count in (("queued", st.queued), ("running", st.running)):
                if count > 0:  # gxadmin prints no line for an empty group
                    tags = {"destination_id": site.id, "state": state, "host": GALAXY_HOST}
                    lines.append(_line("queue_by_destination", tags, {"count": count}, ts))
        return lines

    def _run_time_lines(self, ts: int) -> list[str]:
        rng, lines = self._rng, []
        # gxadmin runs this once a day: yesterday's and this morning's run,
        # so the collector has to pick the newer one.
        runs = (ts - 86400 - 7200, ts - 7200)
        for site in self.sites:
            st = self._state[site.id]
            chosen = set(rng.sample(range(len(self.tools)), rng.randint(2, len(self.tools))))
            typical_queue_s = 20 + 600 * site.load**2
            for run_ts in runs:
                for i, tool in enumerate(self.tools):
                    if i not in chosen:
                        continue
                    fields: dict[str, float | str] = {"count": rng.randint(3, 400)}
                    fields.update(self._spread("queue", typical_queue_s * rng.uniform(0.7, 1.3)))
                    fields.update(self._spread("run", tool.median_run_s * st.speed * rng.uniform(0.85, 1.15)))
                    tags = {"destination_id": site.id, "tool_id": tool.id, "host": GALAXY_HOST}
                    lines.append(_line("destination-queue-run-time", tags, fields, run_ts))
        return lines

    def _spread(self, kind: str, median: float) -> dict[str, float | str]:
        rng = self._rng
        p95 = median * rng.uniform(2.0, 3.0)
        p99 = p95 * rng.uniform(1.1, 1.4)
        return {
            f"avg_{kind}": median * rng.uniform(1.05, 1.3),
            f"min_{kind}": median * rng.uniform(0.1, 0.4),
            f"median_{kind}": median,
            f"perc_95_{kind}": p95,
            f"perc_99_{kind}": p99,
            f"max_{kind}": p99 * rng.uniform(1.0, 1.3),
        }


def sample_request() -> dict[str, Any]:
    """What TPV would send for a fastp job: candidates in its own order, with
    its scores; one (pulsar_au01) the metrics know nothing about."""
    scores = [
        ("pulsar_de", 12),
        ("pulsar_uk", 10),
        ("pulsar_cz01_tpv", 9),
        ("pulsar_sk01_tpv", 8),
        ("pulsar_fr01_tpv", 8),
        ("pulsar_be01", 6),
        ("pulsar_it01", 5),
        ("pulsar_au01", 4),
    ]
    return {
        "job": {"id": 4242, "tool_id": FASTP, "cores": 4, "mem": 16},
        "destinations": [{"id": dest_id, "tpv_score": score} for dest_id, score in scores],
        "datasets": [
            {"object_store_id": "object_store_germany", "size": 2_147_483_648},
            {"object_store_id": "object_store_france", "size": 524_288_000},
        ],
    }
